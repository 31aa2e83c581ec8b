"""A propagation streamed as NDJSON, one line per frame, flushed as each frame is tracked.

The predictor's generator is blocking, so a producer task advances it one frame at a time in
the model pool (`ModelPool`) and queues each encoded line; the response reads the queue. The
producer runs at most ``buffer`` frames ahead of the client (a semaphore the reader releases
as it takes a line), so a slow client costs memory for a few lines and never holds a worker
thread. Between frames the producer checks for a cancel (``POST .../cancel`` or the client
going away) and then closes the generator, which keeps every frame already tracked: the work
stops within one frame. An error raised by a later frame (a stale stream, a closed session)
ends the stream with one line ``{"error": ..., "field": ..., "message": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from sam3video.server.pool import ModelPool
from sam3video.server.rle import encode_outputs

_END = object()

FrameCallback = Callable[[int, dict[str, Any], float], None]


class Stream:
    """One running propagation of one session (made on the event loop).

    Args:
        pool: where the generator advances.
        buffer: frames the producer may compute ahead of the reader.
        on_frame: called in the worker thread with ``(frame_index, encoded outputs, seconds)``
            for every frame, before the line is queued.
        on_end: called on the event loop once the generator is closed.
        error_line: the NDJSON line that reports an exception raised mid-stream.
    """

    def __init__(
        self,
        pool: ModelPool,
        *,
        buffer: int,
        on_frame: FrameCallback,
        on_end: Callable[[Stream], None],
        error_line: Callable[[BaseException], bytes],
    ) -> None:
        self._pool = pool
        self._buffer = buffer
        self._on_frame = on_frame
        self._on_end = on_end
        self._error_line = error_line
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._space = asyncio.Semaphore(buffer)
        self._frames: Iterator[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.status = "starting"  # running, then done / cancelled / disconnected / error
        self.frames = 0  # frames the generator yielded
        self._stop_reason: str | None = None
        self.ended = threading.Event()  # set once the generator is closed

    @property
    def active(self) -> bool:
        return self.status in ("starting", "running")

    def start(self, frames: Iterator[dict[str, Any]]) -> None:
        """Begin advancing the predictor's generator (on the running event loop)."""
        self._frames = frames
        self.status = "running"
        self._task = asyncio.get_running_loop().create_task(self._produce())

    def cancel(self, reason: str = "cancelled") -> bool:
        """Stop after the frame being tracked; True if the stream was still running.
        Safe to call from any thread."""
        if not self.active or self._stop_reason is not None:
            return False
        self._stop_reason = reason
        self._loop.call_soon_threadsafe(self._wake_producer)
        return True

    def _wake_producer(self) -> None:
        for _ in range(self._buffer + 1):  # a producer waiting for buffer space
            self._space.release()

    async def lines(self) -> AsyncIterator[bytes]:
        """The NDJSON lines, as the producer makes them."""
        while True:
            line = await self._queue.get()
            if line is _END:
                return
            self._space.release()
            yield line  # type: ignore[misc]

    def summary(self) -> dict[str, Any]:
        return {"status": self.status, "frames": self.frames}

    async def _produce(self) -> None:
        assert self._frames is not None
        try:
            while True:
                await self._space.acquire()
                if self._stop_reason is not None:
                    break
                line = await self._pool.run(self._step)
                if line is None:
                    break
                self._queue.put_nowait(line)
            self.status = self._stop_reason or "done"
        except Exception as exc:  # noqa: BLE001 - reported to the client as the last line
            self.status = "error"
            self._queue.put_nowait(self._error_line(exc))
        finally:
            if self.status in ("starting", "running"):  # the task itself was cancelled
                self.status = "cancelled"
            await self._pool.run(self._frames.close)  # keeps the frames already tracked
            self._queue.put_nowait(_END)
            self._on_end(self)
            self.ended.set()

    def _step(self) -> bytes | None:
        """Track one frame (in a worker thread); None when the propagation is complete."""
        start = time.perf_counter()
        item = next(self._frames, None)  # type: ignore[arg-type]
        if item is None:
            return None
        frame_index = int(item["frame_index"])
        outputs = encode_outputs(item["outputs"])
        self.frames += 1
        self._on_frame(frame_index, outputs, time.perf_counter() - start)
        line = json.dumps({"frame_index": frame_index, "outputs": outputs}, separators=(",", ":"))
        return line.encode() + b"\n"


class NdjsonStreamResponse(StreamingResponse):
    """Streams a `Stream`; the stream is cancelled when the response ends early (the client
    disconnected or the server is shutting down)."""

    media_type = "application/x-ndjson"

    def __init__(self, stream: Stream) -> None:
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # no proxy buffering
        super().__init__(stream.lines(), headers=headers)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.cancel("disconnected")
