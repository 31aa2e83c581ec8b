"""Propagation steps: the frames a pass visits (`processing_order`) and what each step
reports to observers (`StepEvent`, timed by `StageClock`).

A session calls its ``observers`` with one `StepEvent` per propagated frame (progress bars,
benchmarks); the stage times come from a `StageClock`, which costs nothing when no one
listens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
    detect step when observers are set: ``backbone`` (decode, ViT and necks), ``detector``
    (the concept heads, mask NMS), ``tracker`` (every state's step, the deferred memory
    update, reconditioning and newborn states), ``plan`` (`plan_frame`: association,
    hotstart, suppression) and ``post`` (the frame's masks at video size, the ledger).
    ``seconds`` is the whole step; outputs are formatted later, when the frame is released.
    """

    frame_index: int
    reverse: bool
    kind: str
    seconds: float
    stages: dict[str, float]


class StageClock:
    """Seconds per stage into ``stages`` (a no-op when ``stages`` is None).

    ``listeners`` are called with ``""`` when the step begins and with a stage's name when it
    ends (e.g. a benchmark reading a FLOP counter per stage); their own time is not charged
    to any stage.
    """

    def __init__(
        self,
        stages: dict[str, float] | None,
        listeners: Sequence[Callable[[str], None]] = (),
    ) -> None:
        self.stages = stages
        self.listeners = list(listeners) if stages is not None else []
        for listener in self.listeners:
            listener("")
        self.start = self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.stages is not None:
            now = time.perf_counter()
            self.stages[name] = self.stages.get(name, 0.0) + now - self.last
            for listener in self.listeners:
                listener(name)
            self.last = time.perf_counter()

    def total(self) -> float:
        return time.perf_counter() - self.start
