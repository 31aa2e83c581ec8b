"""One processing order for the session and the tracker-only API, and the stage clock's
listeners (what benchmarks hook into instead of patching the session)."""

from __future__ import annotations

from sam3video.video.steps import StageClock, processing_order


def test_processing_order_contracts():
    # forward: start .. start + max, clipped to the video
    assert processing_order(3, None, 8, False) == [3, 4, 5, 6, 7]
    assert processing_order(3, 2, 8, False) == [3, 4, 5]
    # backward, the tracker-only API: the start frame is visited (from frame 0: [0])
    assert processing_order(3, None, 8, True) == [3, 2, 1, 0]
    assert processing_order(0, None, 8, True) == [0]
    assert processing_order(5, 0, 8, True) == [5]
    # backward, the session's "both": the start frame was the forward pass's
    assert processing_order(3, None, 8, True, include_start=False) == [2, 1, 0]
    assert processing_order(0, None, 8, True, include_start=False) == []
    assert processing_order(5, 2, 8, True, include_start=False) == [4, 3]


def test_stage_clock_tells_its_listeners_each_boundary():
    heard: list[str] = []
    stages: dict[str, float] = {}
    clock = StageClock(stages, [heard.append])
    clock.lap("backbone")
    clock.lap("tracker")
    clock.lap("tracker")  # stages accumulate
    assert heard == ["", "backbone", "tracker", "tracker"]
    assert set(stages) == {"backbone", "tracker"} and all(v >= 0 for v in stages.values())
    # without stages (no observer) nothing is timed and no listener is called
    quiet: list[str] = []
    StageClock(None, [quiet.append]).lap("backbone")
    assert quiet == []
