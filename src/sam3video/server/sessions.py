"""The server's sessions: which exist, their limits, their idle expiry and running streams.

The sessions themselves live in the one shared `Sam3VideoPredictor`; the registry keeps what
the server adds to each: where its video came from (as clients name it), when it was last
used, the running propagation (one at a time: a second one is a `SessionBusyError`, 409), the
last concept text, and the results tracked so far as RLE, last write per frame, for the YTVIS
export (a few kB per object and frame at 1080p; dropped with the session).

Only ids of this registry reach the predictor, so an unknown id is answered here with a
message that names no other session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from sam3video.errors import SessionBusyError, UnknownIdError
from sam3video.io import FrameSource, open_frames
from sam3video.predictor import Sam3VideoPredictor
from sam3video.requests import check_frame_index
from sam3video.server.errors import TooManySessionsError
from sam3video.server.streams import Stream

EncodedOutputs = dict[str, dict[str, Any]]
_STREAM_STOP_TIMEOUT = 600.0  # seconds: a full-size frame on a CPU takes minutes


@dataclass(eq=False)
class SessionEntry:
    """What the server knows about one predictor session."""

    session_id: str
    resource_path: str  # the real path the predictor reads
    name: str  # the path as clients name it (relative to the media root, or the upload name)
    uploaded: bool
    last_used: float
    fps: float | None = None
    text: str | None = None
    stream: Stream | None = None
    last_stream: dict[str, Any] | None = None
    results: dict[int, EncodedOutputs] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _frames: FrameSource | None = None

    # -- results tracked so far (any thread) ---------------------------------------------

    def record(self, frame_index: int, outputs: EncodedOutputs) -> None:
        """A frame's full outputs: the last write of a frame wins (as the exporters)."""
        with self.lock:
            self.results[frame_index] = outputs

    def new_concept(self, text: str | None) -> None:
        """A text or box prompt in ``"replace"`` mode (the default) replaces the concepts and
        resets the objects. ``text``: the session's concepts, comma-separated."""
        with self.lock:
            self.results.clear()
            self.text = text

    def drop_concept(self, text: str) -> None:
        """A removed concept takes the objects it found with it."""
        with self.lock:
            for outputs in self.results.values():
                for key in [k for k, o in outputs.items() if o.get("concept") == text]:
                    del outputs[key]

    def drop_object(self, obj_id: int) -> None:
        key = str(obj_id)
        with self.lock:
            for outputs in self.results.values():
                outputs.pop(key, None)

    def snapshot(self) -> dict[int, EncodedOutputs]:
        with self.lock:
            return {t: dict(outputs) for t, outputs in self.results.items()}

    # -- frames for the page (any thread) ------------------------------------------------

    def frames(self, loader: str) -> FrameSource:
        """The server's own lazy reader of the video (the page's frames, fps)."""
        with self.lock:
            if self._frames is None:
                self._frames = open_frames(self.resource_path, loader=loader, cache_size=4)
            return self._frames

    def frame_jpeg(self, index: int, loader: str, quality: int = 90) -> bytes:
        source = self.frames(loader)
        index = check_frame_index(index, len(source), "frame_index")
        with self.lock:  # a FrameSource is read by one thread at a time
            rgb = source[index]
        ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok, "cv2 failed to encode a decoded frame"
        return np.asarray(data).tobytes()

    def close_frames(self) -> None:
        with self.lock:
            if self._frames is not None:
                self._frames.close()
                self._frames = None


class SessionRegistry:
    """Open sessions, the session limit and idle expiry.

    ``clock`` is injectable for tests. The registry is used from the event loop and from
    worker threads, behind one lock.
    """

    def __init__(
        self,
        predictor: Sam3VideoPredictor,
        *,
        max_sessions: int,
        ttl: float,
        on_close: Callable[[SessionEntry], None] = lambda entry: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.predictor = predictor
        self.max_sessions = max_sessions
        self.ttl = ttl
        self._on_close = on_close
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, SessionEntry] = {}
        self._pending = 0  # sessions being opened

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def entries(self) -> list[SessionEntry]:
        with self._lock:
            return list(self._entries.values())

    def streaming(self) -> int:
        return sum(1 for e in self.entries() if e.stream is not None and e.stream.active)

    @contextmanager
    def reserve(self) -> Iterator[None]:
        """Hold a place for a session being opened; 429 when none is left."""
        with self._lock:
            if len(self._entries) + self._pending >= self.max_sessions:
                raise TooManySessionsError(
                    f"The server holds its maximum of {self.max_sessions} open sessions; close "
                    "one (or wait for idle ones to expire) and retry"
                )
            self._pending += 1
        try:
            yield
        finally:
            with self._lock:
                self._pending -= 1

    def add(self, entry: SessionEntry) -> None:
        with self._lock:
            self._entries[entry.session_id] = entry

    def get(self, session_id: object) -> SessionEntry:
        """The entry of a live session, marked as used now.

        Raises:
            UnknownIdError: not open here, or idle past the TTL (then closed by `expire`).
        """
        now = self._clock()
        with self._lock:
            entry = self._entries.get(session_id) if isinstance(session_id, str) else None
            if entry is not None and not self._is_expired(entry, now):
                entry.last_used = now
                return entry
        raise UnknownIdError(f"session_id: unknown session {session_id!r} (closed or expired?)")

    def touch(self, entry: SessionEntry) -> None:
        entry.last_used = self._clock()

    def begin_stream(self, entry: SessionEntry, stream: Stream) -> None:
        """Make ``stream`` the session's propagation, or raise `SessionBusyError` (409)."""
        with self._lock:
            if entry.stream is not None and entry.stream.active:
                raise SessionBusyError(
                    "session_id: a propagation is already running on this session; cancel it "
                    "(POST /v1/sessions/{id}/cancel) or wait for it to end"
                )
            entry.stream = stream

    def end_stream(self, entry: SessionEntry, stream: Stream, *, record: bool = True) -> None:
        """The stream is over (``record=False``: it never started)."""
        with self._lock:
            if entry.stream is stream:
                entry.stream = None
                if record:
                    entry.last_stream = stream.summary()
                entry.last_used = self._clock()

    def idle_seconds(self, entry: SessionEntry) -> float:
        return max(0.0, self._clock() - entry.last_used)

    def close(self, session_id: str) -> bool:
        """Close a session: its stream, the predictor's state, its frames, its upload.
        Blocking (waits for the frame being tracked); False if it was not open."""
        with self._lock:
            entry = self._entries.pop(session_id, None)
        if entry is None:
            return False
        stream = entry.stream
        if stream is not None and stream.cancel("closed"):
            stream.ended.wait(timeout=_STREAM_STOP_TIMEOUT)  # the frame being tracked
        self.predictor.handle_request({"type": "close_session", "session_id": session_id})
        entry.close_frames()
        self._on_close(entry)
        return True

    def expire(self) -> list[str]:
        """Close the sessions idle for longer than the TTL; their ids. Blocking."""
        now = self._clock()
        with self._lock:
            idle = [sid for sid, e in self._entries.items() if self._is_expired(e, now)]
        return [sid for sid in idle if self.close(sid)]

    def close_all(self) -> None:
        for session_id in self.ids():
            self.close(session_id)

    def _is_expired(self, entry: SessionEntry, now: float) -> bool:
        streaming = entry.stream is not None and entry.stream.active
        return not streaming and now - entry.last_used > self.ttl
