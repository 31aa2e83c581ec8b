"""Live sessions: frames arrive one by one and each is tracked as it comes.

A `LiveSession` is a `VideoSession` over `sam3video.io.live.LiveFrames`. ``add_frame``
appends a frame and runs the session's per-frame step on it at once (detection and tracking
of every concept, re-tracking of clicked objects) — the same step an offline propagation runs,
forward — and returns that frame's outputs. Prompts (text, boxes, clicks, removals) work on
any frame still held, normally the latest; the next ``add_frame`` first re-runs the steps
from the prompted frame on, exactly as an offline forward propagation from that frame does.

Trade-off, written down: online means **no lookahead**, so the hotstart buffer is off
(``hotstart_delay = 0``, as Hugging Face's streaming mode): each frame's outputs are final
when returned, and the hotstart rule that hides spurious objects born in the last 15 frames
cannot act (it would have to rewrite frames already returned). Spurious detections may
therefore show for a few frames where an offline run would hide them; offline propagation
with the same setting gives exactly the live outputs (tested).

Memory stays constant on an unbounded stream: the frames, the committed outputs and the
per-frame planner tables are kept for the last ``window`` frames only, and the tracker keeps
its bounded memory bank (conditioning frames and the memories its attention can still use).

**Stream sessions** own a `sam3video.io.streams.StreamReader` (a camera or a network stream,
decoded on a thread). Its first frame is taken in when the session opens (not yet tracked),
so prompts can go on frame 0 before anything runs. ``propagate`` then *follows* the stream:
it yields ``(frame_index, outputs)`` for each frame as it is read and tracked (first the frames
taken in but not yet returned), until the stream ends, ``max_frames + 1`` frames were yielded
(the count of an offline forward pass: the first frame and ``max_frames`` more), or the run is
cancelled. While it waits for the next frame it releases the session lock, so requests from
other threads are not held up by a slow stream. Prompts, removals and resets between frames
do **not** end the run: the following frames are tracked with them, exactly as ``add_frame``
after a prompt does (a live user clicks on what they see and expects tracking to go on).
Another propagation or closing the session makes the run stale (`StaleStreamError`), and
``cancel`` ends it cleanly; frames it read stay in the session. ``add_frame`` is refused:
the stream is the only source of frames.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import numpy as np

from sam3video.errors import DecodeError, InvalidInputError, StaleStreamError
from sam3video.io.live import LiveFrames
from sam3video.io.streams import StreamReader
from sam3video.model.build import Sam3VideoModel
from sam3video.video.planner import VideoHeuristics
from sam3video.video.session import Outputs, VideoSession

# Tracker states of a live session are made for an open-ended number of frames.
LIVE_HORIZON = 2**31 - 1
# Seconds a following run waits, lock released, between looks at the stream's queue.
STREAM_POLL = 0.01


class LiveSession(VideoSession):
    """A session fed frame by frame (see the module doc)."""

    def __init__(
        self,
        session_id: str,
        model: Sam3VideoModel,
        frames: LiveFrames,
        *,
        heuristics: VideoHeuristics | None = None,
        reader: StreamReader | None = None,
        **kwargs,
    ) -> None:
        heuristics = dataclasses.replace(heuristics or VideoHeuristics(), hotstart_delay=0)
        self._cursor = -1  # the last frame stepped since the latest prompt
        self._returned = -1  # the last frame whose outputs were returned
        self.reader = reader
        self._run = 0  # the stream run allowed to read (the latest propagate)
        self._cancelled_run = -1
        super().__init__(session_id, model, frames, heuristics=heuristics, **kwargs)
        self._idle = threading.Condition(self.lock)  # waits with the lock released
        if reader is not None:
            try:  # the first frame (queued when the reader opened): prompts can go on it now
                first = reader.read(timeout=1.0)
                if first is None:
                    raise DecodeError(f"resource_path: {reader.shown!r} sent no frame")
                self._append(first)
            except BaseException:
                reader.close()
                raise

    @property
    def tracker_horizon(self) -> int:
        return LIVE_HORIZON

    def reset(self) -> None:
        super().reset()
        self._cursor = len(self.frames) - 1 if hasattr(self, "frames") else -1

    def close(self) -> None:
        super().close()
        if self.reader is not None:
            self.reader.close()

    def cancel(self) -> None:
        super().cancel()
        self._cancelled_run = self._run  # a prompt may bump the generation: mark the run

    def add_frame(self, frame: np.ndarray) -> tuple[int, Outputs]:
        """Append a frame (checked first: uint8 ``(H, W, 3)``, the stream's size) and track
        it; returns its index and outputs."""
        if self.reader is not None:
            raise InvalidInputError(
                "add_frame: this session reads a stream (resource_path); its frames come from "
                "the stream (propagate_in_video follows it)"
            )
        index = self._append(frame)
        return index, self._track(index)

    def _append(self, frame: np.ndarray) -> int:
        """Check and append a frame, untracked; returns its index."""
        checked = self.frames.check(frame)
        self.generation += 1
        index = self.frames.append(checked)
        if self.video_size[0] is None:  # the first frame sets the stream's size
            self.video_size = checked.shape[:2]
            self.ledger.shape = self.video_size
        return index

    def _track(self, index: int) -> Outputs:
        """Step every frame since the cursor through ``index`` (the newest); its outputs."""
        outputs: Outputs = {}
        for f in range(max(self._cursor + 1, index - self.frames.window + 1), index + 1):
            fetched: set[int] = set()
            self._step(f, reverse=False, fetched=fetched)
            outputs = self._release(f, f in fetched)
        self._cursor = self._returned = index
        self._forget_before(index - self.frames.window + 1)
        return outputs

    def add_concepts(self, frame_idx, prompts, tokens=None, mode="replace") -> Outputs:
        outputs = super().add_concepts(frame_idx, prompts, tokens, mode)
        self._cursor = min(self._cursor, frame_idx - 1)  # re-step from the prompted frame
        return outputs

    def add_points(self, frame_idx, points, labels, obj_id):
        out = super().add_points(frame_idx, points, labels, obj_id)
        self._cursor = min(self._cursor, frame_idx - 1)
        return out

    def propagate(self, start, max_frames, directions):
        """Follow the stream (stream sessions only; see the module doc): forward, from the
        first frame not yet returned; ``"both"`` is forward (every earlier frame was tracked
        as it arrived)."""
        if self.reader is None:
            raise InvalidInputError(
                "propagate_in_video: a live session tracks each frame as it arrives "
                "(add_frame); there is nothing to propagate"
            )
        if start is not None:
            raise InvalidInputError(
                "start_frame_index: a stream session goes on from its first frame not yet "
                f"returned ({self._returned + 1}); leave start_frame_index out, got {start}"
            )
        if not directions or directions[0]:
            raise InvalidInputError(
                "propagation_direction: a stream session tracks forward as frames arrive; "
                "expected 'forward' or 'both', got 'backward'"
            )
        self.generation += 1
        self._run += 1
        return self._follow(self._run, max_frames)

    def _follow(self, run: int, max_frames: int | None) -> Iterator[tuple[int, Outputs]]:
        limit = None if max_frames is None else max_frames + 1
        count = 0
        while limit is None or count < limit:
            if self._run_stops(run):
                return
            if self._returned + 1 >= len(self.frames):  # nothing taken in is waiting: read
                frame = self._next_frame(run)
                if frame is None:
                    return
                self._append(frame)  # kept even if the run stops now: the next one tracks it
                if self._run_stops(run):
                    return
            index = self._returned + 1
            outputs = self._track(index)
            count += 1
            yield index, outputs

    def _next_frame(self, run: int) -> np.ndarray | None:
        """The stream's next frame; None at its end or when the run stops meanwhile. Waits
        with the session lock released (the predictor holds it around each step)."""
        while True:
            try:
                return self.reader.read(timeout=0)
            except TimeoutError:
                pass
            with self._idle:  # fully releases the (re-entrant) lock while waiting
                self._idle.wait(STREAM_POLL)
            if self._run_stops(run):
                return None

    def _run_stops(self, run: int) -> bool:
        """At a frame boundary of a following run: True when it was cancelled; raises
        `StaleStreamError` when the session was closed or another propagation started."""
        if self.closed:
            raise StaleStreamError("propagate_in_video: this session was closed while streaming")
        if run != self._run:
            raise StaleStreamError(
                "propagate_in_video: this stream is stale: another propagation started on this "
                "stream session; frames already received stay valid"
            )
        return self._cancelled_run == run

    def _forget_before(self, oldest: int) -> None:
        """Drop what is kept per frame for frames that left the window."""
        if oldest <= 0:
            return
        ledger = self.ledger
        for table in (ledger.masks, ledger.stamps, ledger.pending):
            for f in [f for f in table if f < oldest]:
                del table[f]
        for frames in ledger.detected.values():
            frames.difference_update([f for f in frames if f < oldest])
        meta = self.metadata
        if any(f < oldest for f in meta.frame_scores):
            meta.frame_scores = {f: v for f, v in meta.frame_scores.items() if f >= oldest}
        if any(f < oldest for f in meta.suppressed):
            meta.suppressed = {f: v for f, v in meta.suppressed.items() if f >= oldest}
