"""Propagation steps: the frames a pass visits (`processing_order`) and what each step
reports to observers (`StepEvent`, timed by `StageClock`).

A session calls its ``observers`` with one `StepEvent` per propagated frame (progress bars,
benchmarks); the stage times come from a `StageClock`, which costs nothing when no one
listens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["StageClock", "StepEvent", "processing_order"]


def processing_order(
    start: int,
    max_frames: int | None,
    num_frames: int,
    reverse: bool,
    *,
    include_start: bool = True,
) -> list[int]:
    """The frames one pass visits, in order: forward ``start`` .. ``start + max_frames``,
    backward ``start`` down to ``start - max_frames`` (clipped to the video; ``max_frames``
    None: to its end).

    ``include_start=False`` leaves the start frame out of a backward pass: the session's
    ``"both"`` runs forward from the start first (the official video predictor's order);
    the tracker-only API (`TrackingState.propagate`) visits it in both directions.
    """
    n = num_frames if max_frames is None else max_frames
    if reverse:
        end = max(start - n, 0)
        first = start if include_start else start - 1
        return list(range(first, end - 1, -1))
    end = min(start + n, num_frames - 1)
    return list(range(start, end + 1))


@dataclass
class StepEvent:
    """What one propagation step did, for observers (progress bars, benchmarks).

    ``kind``: ``"detect"`` (detection + tracking of every object), ``"retrack"`` (clicked
    objects re-tracked), ``"fetch"`` (nothing to compute). ``stages``: seconds per stage of a
    detect step (``backbone``, ``detector``, ``tracker``, ``plan``) when observers are set.
    """

    frame_index: int
    reverse: bool
    kind: str
    seconds: float
    stages: dict[str, float]


class StageClock:
    """Seconds per stage into ``stages`` (a no-op when ``stages`` is None)."""

    def __init__(self, stages: dict[str, float] | None) -> None:
        self.stages = stages
        self.start = self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.stages is not None:
            now = time.perf_counter()
            self.stages[name] = self.stages.get(name, 0.0) + now - self.last
            self.last = now

    def total(self) -> float:
        return time.perf_counter() - self.start
