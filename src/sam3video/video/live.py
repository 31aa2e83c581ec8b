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
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sam3video.errors import InvalidInputError
from sam3video.io.live import LiveFrames
from sam3video.model.build import Sam3VideoModel
from sam3video.video.planner import VideoHeuristics
from sam3video.video.session import Outputs, VideoSession

# Tracker states of a live session are made for an open-ended number of frames.
LIVE_HORIZON = 2**31 - 1


class LiveSession(VideoSession):
    """A session fed frame by frame (see the module doc)."""

    def __init__(
        self,
        session_id: str,
        model: Sam3VideoModel,
        frames: LiveFrames,
        *,
        heuristics: VideoHeuristics | None = None,
        **kwargs,
    ) -> None:
        heuristics = dataclasses.replace(heuristics or VideoHeuristics(), hotstart_delay=0)
        self._cursor = -1  # the last frame stepped since the latest prompt
        super().__init__(session_id, model, frames, heuristics=heuristics, **kwargs)

    @property
    def tracker_horizon(self) -> int:
        return LIVE_HORIZON

    def reset(self) -> None:
        super().reset()
        self._cursor = len(self.frames) - 1 if hasattr(self, "frames") else -1

    def add_frame(self, frame: np.ndarray) -> tuple[int, Outputs]:
        """Append a frame (checked first: uint8 ``(H, W, 3)``, the stream's size) and track
        it; returns its index and outputs."""
        checked = self.frames.check(frame)
        self.generation += 1
        index = self.frames.append(checked)
        if self.video_size[0] is None:  # the first frame sets the stream's size
            self.video_size = checked.shape[:2]
            self.ledger.shape = self.video_size
        outputs: Outputs = {}
        for f in range(max(self._cursor + 1, index - self.frames.window + 1), index + 1):
            fetched: set[int] = set()
            self._step(f, reverse=False, fetched=fetched)
            outputs = self._release(f, f in fetched)
        self._cursor = index
        self._forget_before(index - self.frames.window + 1)
        return index, outputs

    def add_concepts(self, frame_idx, prompts, tokens=None, mode="replace") -> Outputs:
        outputs = super().add_concepts(frame_idx, prompts, tokens, mode)
        self._cursor = min(self._cursor, frame_idx - 1)  # re-step from the prompted frame
        return outputs

    def add_points(self, frame_idx, points, labels, obj_id):
        out = super().add_points(frame_idx, points, labels, obj_id)
        self._cursor = min(self._cursor, frame_idx - 1)
        return out

    def propagate(self, start, max_frames, directions):
        raise InvalidInputError(
            "propagate_in_video: a live session tracks each frame as it arrives (add_frame); "
            "there is nothing to propagate"
        )

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
