"""SAM 3.1 multiplex tracking state: the memory read against the OFFICIAL tracker.

Fixture ``multiplex_state.pt``, ``meta["plans"]`` (``tools/reference/gen_multiplex_state.py``):
the official ``VideoTrackingMultiplex._prepare_memory_conditioned_features`` with SAM 3.1's
settings ran on stored frames whose values name them; recorded per scenario are the spatial
memories it read, in order, as ``(frame, temporal-encoding row)`` and the pointer frames, in
order, as ``(frame, distance)``. Our plan must give exactly the same sequences.
"""

from __future__ import annotations

import pytest
import torch

from sam3video.errors import InvalidInputError
from sam3video.video.multiplex_tracking import multiplex_memory_plan, tpos_row
from tests._manifest import FIXTURES

PLANS = torch.load(FIXTURES / "multiplex_state.pt", weights_only=False)["meta"]["plans"]


@pytest.mark.parametrize("name", sorted(PLANS))
def test_memory_plan_matches_official(name):
    for i, case in enumerate(PLANS[name]):
        plan = multiplex_memory_plan(
            case["frame_idx"],
            case["cond_frames"],
            case["tracked_frames"],
            case["num_frames"],
            case["reverse"],
            stride=case["stride"],
        )
        spatial = [[ref.frame, tpos_row(ref.pos)] for ref in plan.spatial]
        pointers = [[ref.frame, ref.pos] for ref in plan.pointers]
        assert spatial == case["spatial"], f"{name}[{i}] spatial"
        assert pointers == case["pointers"], f"{name}[{i}] pointers"
        for ref in plan.spatial + plan.pointers:
            assert ref.from_cond == (ref.frame in case["cond_frames"])


def test_fixture_exercises_the_rules():
    cases = [c for v in PLANS.values() for c in v]
    # more prompted frames than the 4 attended to; future prompted frames as pointers;
    # prompted frames 1..6 frames away (distance rows) and reverse tracking
    assert any(len(c["cond_frames"]) > 4 for c in cases)
    assert any(
        any((f > c["frame_idx"]) != c["reverse"] for f, _ in c["pointers"] if f in c["cond_frames"])
        for c in cases
    )
    assert any(any(f in c["cond_frames"] and row < 6 for f, row in c["spatial"]) for c in cases)
    assert any(c["reverse"] for c in cases) and any(not c["reverse"] for c in cases)


def test_memory_plan_switches_give_sam3_pointer_rules():
    # SAM 3's pointers: past prompted frames only, signed distance
    plan = multiplex_memory_plan(5, [2, 9], [3, 4], 12, only_past_pointers=True)
    assert [(r.frame, r.pos) for r in plan.pointers] == [(2, 3), (4, 1), (3, 2)]
    plan = multiplex_memory_plan(5, [2, 9], [], 12, signed_pointer_distance=True)
    assert [(r.frame, r.pos) for r in plan.pointers] == [(2, 3), (9, -4)]
    with pytest.raises(InvalidInputError, match="cond_frames"):
        multiplex_memory_plan(5, [], [3], 12)
