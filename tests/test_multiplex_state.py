"""SAM 3.1 bucket bookkeeping against the OFFICIAL ``MultiplexState``.

Fixture ``multiplex_state.pt`` (``tools/reference/gen_multiplex_state.py``, official
``sam3/model/multiplex_utils.py`` of SAM 3.1): seeded random add/remove sequences from the
official controller's inference layout, with the official assignments, object ids, kept buckets,
mux/demux results and valid-slot masks after every operation. Our state replays the same
operations; everything must match exactly.
"""

from __future__ import annotations

import pytest
import torch

from sam3video.errors import InvalidInputError
from sam3video.video.multiplex_state import PADDING, REMOVED, MultiplexState
from tests._manifest import FIXTURES

FIXTURE = torch.load(FIXTURES / "multiplex_state.pt", weights_only=False)
CASES = FIXTURE["meta"]["cases"]


def _assignments(state: MultiplexState) -> torch.Tensor:
    return torch.tensor(state.assignments, dtype=torch.long).view(-1, state.multiplex_count)


@pytest.mark.parametrize("name", sorted(CASES))
def test_replay_matches_official(name):
    case, tensors = CASES[name], FIXTURE["tensors"]
    mc, cap = case["multiplex_count"], case["capacity"]
    steps = case["steps"]
    assert steps[0]["op"] == "init"
    next_id = 100
    state = MultiplexState.for_objects(
        steps[0]["count"], mc, cap, object_ids=list(range(next_id, next_id + steps[0]["count"]))
    )
    next_id += steps[0]["count"]
    for i, step in enumerate(steps):
        if step["op"] == "add":
            n = state.num_objects
            new = state.add_objects(
                step["count"],
                object_ids=list(range(next_id, next_id + step["count"])),
                allow_new_buckets=step["allow"],
                prefer_new_buckets=step["prefer"],
            )
            next_id += step["count"]
            assert new == list(range(n, n + step["count"]))
        elif step["op"] == "remove":
            assert state.remove_objects(step["indices"]) == step["kept"], f"step {i}"
        key = f"{name}/{i}/"
        assert torch.equal(_assignments(state), tensors[key + "assignments"]), f"step {i}"
        assert state.object_ids == step["object_ids"], f"step {i}"
        assert state.num_objects == len(step["object_ids"])
        assert torch.equal(state.mux(tensors[key + "x"]), tensors[key + "mux"]), f"step {i}"
        assert torch.equal(state.demux(tensors[key + "y"]), tensors[key + "demux"]), f"step {i}"
        assert torch.equal(state.valid_mask(), tensors[key + "valid"]), f"step {i}"
        slots = state.slots()
        assert torch.equal(slots >= 0, tensors[key + "valid"]), f"step {i}"
        assert torch.equal(slots[slots >= 0], tensors[key + "assignments"][slots >= 0])


def test_fixture_covers_the_interesting_paths():
    ops = [s for c in CASES.values() for s in c["steps"]]
    assert any(s["op"] == "add" and s["prefer"] for s in ops)
    assert any(s["op"] == "add" and not s["allow"] for s in ops)
    assert any(s["op"] == "remove" and len(s["kept"]) == 0 for s in ops)  # drained
    # a removal that drops a bucket while others stay
    assert any(
        s["op"] == "remove" and 0 < len(s["kept"]) and s["kept"] != list(range(len(s["kept"])))
        for s in ops
    )
    removed_left = [
        (FIXTURE["tensors"][f"{n}/{i}/assignments"] == REMOVED).any()
        for n, c in CASES.items()
        for i in range(len(c["steps"]))
    ]
    assert any(removed_left)


def test_mux_demux_roundtrip_any_dtype_and_isolated_nonfinite():
    state = MultiplexState.for_objects(5, 4)
    state.remove_objects([1])
    state.add_objects(3)
    n = state.num_objects
    for x in (
        torch.arange(n * 2, dtype=torch.int32).view(n, 2),
        torch.rand(n, 2, 3) > 0.5,
        torch.randn(n, 3, dtype=torch.float64),
    ):
        m = state.mux(x)
        assert m.shape == (state.num_buckets, 4, *x.shape[1:]) and m.dtype == x.dtype
        assert torch.equal(state.demux(m), x)
        assert not m[~state.valid_mask()].any()
    x = torch.zeros(n, 2)
    x[0, 0] = float("inf")
    x[1, 1] = float("nan")
    m = state.mux(x)
    assert torch.isfinite(m).sum() == m.numel() - 2


def test_removed_slots_are_not_refilled_and_empty_state_accepts_objects():
    state = MultiplexState.for_objects(3, 4)
    state.remove_objects([1])
    assert state.assignments == [[0, REMOVED, 1, PADDING]]
    assert state.available_slots == 1
    state.add_objects(2)
    assert state.assignments == [[0, REMOVED, 1, 2], [3, PADDING, PADDING, PADDING]]
    assert state.position(3) == (1, 0)
    assert state.remove_objects([0, 1, 2, 3]) == []
    assert state.num_buckets == 0 and state.num_objects == 0
    assert state.mux(torch.zeros(0, 2)).shape == (0, 4, 2)
    assert state.add_objects(2) == [0, 1]
    assert state.assignments == [[0, 1, PADDING, PADDING]]


def test_errors_leave_the_state_unchanged():
    state = MultiplexState.for_objects(3, 4, object_ids=[7, 8, 9])
    before = (state.assignments, state.object_ids)
    with pytest.raises(InvalidInputError, match="indices"):
        state.remove_objects([1, 5])
    with pytest.raises(InvalidInputError, match="count"):
        state.add_objects(2, object_ids=[1, 2], allow_new_buckets=False)
    with pytest.raises(InvalidInputError, match="object_ids"):
        state.add_objects(1)
    with pytest.raises(InvalidInputError, match="x"):
        state.mux(torch.zeros(2, 1))
    with pytest.raises(InvalidInputError, match="x"):
        state.demux(torch.zeros(2, 4))
    assert (state.assignments, state.object_ids) == before
    assert state.remove_objects([1, 5], strict=False) == [0]
    assert state.object_ids == [7, 9]
    with pytest.raises(InvalidInputError, match="assignments"):
        MultiplexState([[0, 0, PADDING]])
    with pytest.raises(InvalidInputError, match="capacity"):
        MultiplexState([[0, 1, 2]], capacity=2)
    with pytest.raises(InvalidInputError, match="assignments"):
        MultiplexState([[0, 2, PADDING]])


def test_index_tables_follow_the_input_device():
    state = MultiplexState.for_objects(3, 2)
    x = torch.randn(3, 2, device="meta")
    assert state.mux(x).device.type == "meta"
    assert state.demux(torch.zeros(2, 2, 5, device="meta")).shape == (3, 5)
