"""Behaviour of `TrackingState` beyond parity: bad input, bounded memory, bookkeeping, helpers.

Parity with the official predictor is in ``test_tracker.py``. Here the tiny tracker (synthetic
weights) runs on the tracker-neck features of the 10 fixture frames (computed once by our tiny
backbone), cycled to make longer videos.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import pytest
import torch
from test_tracker import fixture, fixture_frames_u8, loader_frames, tiny_neck, tiny_tracker

from sam3video.errors import FrameIndexError, InvalidInputError, UnknownIdError
from sam3video.model.config import tiny_config
from sam3video.model.tracker import build_tracker
from sam3video.model.weights import synthetic_state_dict
from sam3video.video.postprocess import (
    apply_non_overlapping_constraints,
    apply_object_wise_non_overlapping_constraints,
    component_areas,
    fill_holes_in_mask_scores,
    suppress_object_pw_area_shrinkage,
)
from sam3video.video.tracking import TrackingState

H, W = 136, 320


pytestmark = pytest.mark.usefixtures("one_thread", "no_grad")  # tests/conftest.py


@lru_cache(maxsize=1)
def base_features() -> tuple:
    frames = loader_frames(fixture_frames_u8())
    neck = tiny_neck()
    out = []
    with torch.inference_mode():
        for i in range(frames.shape[0]):
            res = neck(frames[i : i + 1].float(), need_detector=False)
            out.append((res.tracker_feats, res.tracker_pos))
    return tuple(out)


class Features:
    """``get_features`` over a video of cycled fixture frames, counting backbone calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, frame_idx: int):
        self.calls.append(frame_idx)
        return base_features()[frame_idx % 10]


@pytest.fixture(scope="module")
def tracker():
    return tiny_tracker()


def short_memory(threshold: float | None = None):
    """The tiny tracker with 6 pointer frames (memory selection keeps 5): the bounded state
    then saturates after a dozen frames, so long-video behaviour shows on short clips."""
    cfg = tiny_config()
    changes = {"max_obj_ptrs_in_encoder": 6}
    if threshold is not None:
        changes["memory_selection_threshold"] = threshold
    cfg = cfg.replace(tracker=dataclasses.replace(cfg.tracker, **changes))
    model = build_tracker(cfg)
    model.load_state_dict(synthetic_state_dict(model, prefix="tracker."), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def short_memory_tracker():
    return short_memory()  # every frame qualifies for memory selection (scores ~0.014)


@pytest.fixture(scope="module")
def selective_tracker():
    # threshold at about the median frame score: memory selection skips some frames
    return short_memory(threshold=0.0145)


def new_state(tracker, num_frames=10, **kwargs) -> TrackingState:
    return TrackingState(tracker, Features(), num_frames, (H, W), **kwargs)


def snapshot(state: TrackingState) -> tuple:
    objs = [
        (
            {f: (c.clone(), lab.clone()) for f, (c, lab) in o.points.items()},
            set(o.mask_frames),
            set(o.pending),
        )
        for o in state._objects
    ]
    return (
        state.obj_ids,
        state.cond_frames,
        state.stored_frames,
        set(state._hidden),
        state.tracking_has_started,
        objs,
    )


def same(a: tuple, b: tuple) -> bool:
    if a[:5] != b[:5] or len(a[5]) != len(b[5]):
        return False
    for (pa, ma, qa), (pb, mb, qb) in zip(a[5], b[5]):
        if ma != mb or qa != qb or pa.keys() != pb.keys():
            return False
        for f in pa:
            if not (torch.equal(pa[f][0], pb[f][0]) and torch.equal(pa[f][1], pb[f][1])):
                return False
    return True


# ---------------------------------------------------------------------------------------------
# bad input: typed errors, state unchanged


@pytest.fixture(scope="module")
def tracked_state(tracker):
    state = new_state(tracker)
    state.add_points(0, 1, [[35.0, 125.0]], [1])
    state.add_points(0, 2, [[250.0, 110.0], [50.0, 20.0]], [1, 0])
    for _ in state.propagate(0, 3):
        pass
    return state


BAD_CALLS = [
    ("click outside", lambda s: s.add_points(1, 1, [[W + 1.0, 5.0]], [1]), InvalidInputError),
    ("negative click", lambda s: s.add_points(1, 1, [[-0.5, 5.0]], [1]), InvalidInputError),
    ("nan click", lambda s: s.add_points(1, 1, [[float("nan"), 5.0]], [1]), InvalidInputError),
    ("label 2", lambda s: s.add_points(1, 1, [[5.0, 5.0]], [2]), InvalidInputError),
    ("label -1", lambda s: s.add_points(1, 1, [[5.0, 5.0]], [-1]), InvalidInputError),
    ("points no labels", lambda s: s.add_points(1, 1, [[5.0, 5.0]], None), InvalidInputError),
    ("labels no points", lambda s: s.add_points(1, 1, None, [1]), InvalidInputError),
    ("lengths differ", lambda s: s.add_points(1, 1, [[5.0, 5.0]], [1, 0]), InvalidInputError),
    ("points shape", lambda s: s.add_points(1, 1, [5.0, 5.0], [1]), InvalidInputError),
    ("nothing", lambda s: s.add_points(1, 1), InvalidInputError),
    ("empty box", lambda s: s.add_box(1, 1, [50.0, 20.0, 50.0, 80.0]), InvalidInputError),
    ("flipped box", lambda s: s.add_box(1, 1, [60.0, 80.0, 50.0, 20.0]), InvalidInputError),
    ("box outside", lambda s: s.add_box(1, 1, [0.0, 0.0, W + 5.0, 10.0]), InvalidInputError),
    ("box shape", lambda s: s.add_box(1, 1, [0.0, 0.0, 10.0]), InvalidInputError),
    (
        "box, keep points",
        lambda s: s.add_points(1, 1, box=[1.0, 1.0, 9.0, 9.0], clear_old_points=False),
        InvalidInputError,
    ),
    ("mask size", lambda s: s.add_mask(1, 1, np.ones((W, H))), InvalidInputError),
    ("mask ndim", lambda s: s.add_mask(1, 1, np.ones((1, H, W))), InvalidInputError),
    ("frame too big", lambda s: s.add_points(10, 1, [[5.0, 5.0]], [1]), FrameIndexError),
    ("frame negative", lambda s: s.add_points(-1, 1, [[5.0, 5.0]], [1]), FrameIndexError),
    ("frame float", lambda s: s.add_mask(1.0, 1, np.ones((H, W))), FrameIndexError),
    ("new id after start", lambda s: s.add_points(1, 9, [[5.0, 5.0]], [1]), InvalidInputError),
    ("remove unknown", lambda s: s.remove_object(9), UnknownIdError),
    ("clear unknown", lambda s: s.clear_frame_prompts(0, 9), UnknownIdError),
    ("propagate frame", lambda s: s.propagate(start_frame_idx=12), FrameIndexError),
    ("propagate max", lambda s: s.propagate(max_frame_num_to_track=-1), InvalidInputError),
]


@pytest.mark.parametrize("call,error", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_typed_error_and_keeps_state(tracked_state, call, error):
    before = snapshot(tracked_state)
    footprint = tracked_state.memory_footprint()
    with pytest.raises(error):
        call(tracked_state)
    assert same(snapshot(tracked_state), before)
    assert tracked_state.memory_footprint() == footprint


def test_error_messages_name_field_and_values(tracked_state):
    # the request layer's messages (sam3video.validation), under the state's argument names
    with pytest.raises(InvalidInputError, match=r"points\[0\]: .*inside the 320x136 frame.*\[321"):
        tracked_state.add_points(1, 1, [[321.0, 5.0]], [1])
    with pytest.raises(InvalidInputError, match=r"labels\[0\]: expected the int 1.*got int 3"):
        tracked_state.add_points(1, 1, [[5.0, 5.0]], [3])
    with pytest.raises(InvalidInputError, match=r"mask: expected shape \(136, 320\).*\(10, 10\)"):
        tracked_state.add_mask(1, 1, np.zeros((10, 10)))


def test_propagate_without_prompts_is_an_error(tracker):
    with pytest.raises(InvalidInputError, match="at least one prompt"):
        new_state(tracker).propagate()


# ---------------------------------------------------------------------------------------------
# bounded memory


def run_flow(tracker, num_frames: int, bounded: bool, plans: list | None = None):
    """Prompt, forward, backward, a correction and a second forward pass; all outputs."""
    state = new_state(tracker, num_frames=num_frames, bounded_memory=bounded)
    if plans is not None:
        original = tracker.plan_memory

        def recording(*args, **kwargs):
            plan = original(*args, **kwargs)
            plans.append((args[0], plan))
            return plan

        tracker.plan_memory = recording
    try:
        outs = [state.add_points(12, 1, [[35.0, 125.0]], [1])]
        outs += list(state.propagate(reverse=False))
        outs += list(state.propagate(reverse=True))
        outs.append(state.add_points(16, 1, [[250.0, 110.0]], [0]))
        outs += list(state.propagate(12, reverse=False))
        outs += list(state.propagate(16, reverse=True))
    finally:
        if plans is not None:
            del tracker.plan_memory
    return state, outs


def test_bounded_memory_gives_the_same_results_and_reads_the_same_memories(selective_tracker):
    """Memories dropped by the bounded state are never read by the unbounded one either."""
    plans_bounded, plans_full = [], []
    state, bounded = run_flow(selective_tracker, 32, True, plans_bounded)
    full_state, full = run_flow(selective_tracker, 32, False, plans_full)
    assert len(state.stored_frames) < len(full_state.stored_frames)  # something was dropped
    assert plans_bounded == plans_full
    assert len(bounded) == len(full)
    for a, b in zip(bounded, full):
        assert a.frame_idx == b.frame_idx
        assert torch.equal(a.low_res_masks, b.low_res_masks)
        assert torch.equal(a.object_score_logits, b.object_score_logits)
    # the memory bank reached back over more than the retained window at some point
    assert max(len(p.pointers) for _, p in plans_full) >= 5


def forward_state(tracker, num_frames: int) -> TrackingState:
    state = new_state(tracker, num_frames=num_frames)
    state.add_points(0, 1, [[35.0, 125.0]], [1])
    for _ in state.propagate():
        pass
    return state


def test_memory_does_not_grow_with_the_number_of_frames(short_memory_tracker):
    short = forward_state(short_memory_tracker, 20)
    long = forward_state(short_memory_tracker, 80)
    assert short.memory_footprint() == long.memory_footprint()
    k = short_memory_tracker.max_obj_ptrs_in_encoder
    assert len(long.stored_frames) <= 2 * k + 1
    # without the bound, every tracked frame stays
    full = new_state(short_memory_tracker, num_frames=30, bounded_memory=False)
    full.add_points(0, 1, [[35.0, 125.0]], [1])
    for _ in full.propagate():
        pass
    assert len(full.stored_frames) == 29


# ---------------------------------------------------------------------------------------------
# bookkeeping


def test_backbone_runs_once_per_frame_for_all_objects(tracker):
    state = new_state(tracker)
    for obj, x in ((1, 35.0), (2, 250.0), (3, 150.0)):
        state.add_points(2, obj, [[x, 100.0]], [1])
    state.get_features.calls.clear()
    outs = list(state.propagate(2, 4))
    assert [o.frame_idx for o in outs] == [2, 3, 4, 5, 6]
    assert all(o.low_res_masks.shape == (3, 1, 64, 64) for o in outs)
    assert all(o.masks.shape == (3, 1, H, W) and o.masks.dtype == torch.bool for o in outs)
    # frame 2's features are still cached from the prompts (preflight encodes its memory
    # with them); then exactly one backbone call per tracked frame, whatever B
    assert state.get_features.calls == [3, 4, 5, 6]


def test_refinement_accumulates_clicks_and_caps_them(tracker):
    state = new_state(tracker)
    state.add_points(1, 1, [[10.0, 10.0]], [1])
    state.add_points(1, 1, [[20.0, 20.0], [30.0, 30.0]], [0, 1], clear_old_points=False)
    coords, labels = state._objects[0].points[1]
    assert labels.tolist() == [[1, 0, 1]]
    assert torch.allclose(coords[0, :, 0], torch.tensor([10.0, 20.0, 30.0]) / W * 224)
    many = [[float(i), float(i)] for i in range(1, 21)]
    state.add_points(1, 1, many, [1] * 20, clear_old_points=False)
    coords, labels = state._objects[0].points[1]
    assert coords.shape == (1, 16, 2)  # first 8 and last 8
    expected = [10.0, 20.0, 30.0, 1.0, 2.0, 3.0, 4.0, 5.0] + [float(i) for i in range(13, 21)]
    assert torch.allclose(coords[0, :, 0], torch.tensor(expected) / W * 224)
    state.add_points(1, 1, [[40.0, 40.0]], [1])  # cleared
    assert state._objects[0].points[1][1].tolist() == [[1]]
    state.add_box(1, 1, [5.0, 6.0, 50.0, 60.0], [[7.0, 8.0]], [0])
    assert state._objects[0].points[1][1].tolist() == [[2, 3, 0]]


def test_mask_prompt_output_and_overlap_removal(tracker):
    state = new_state(tracker)
    left = np.zeros((H, W), np.float32)
    left[20:80, 30:150] = 1.0
    wide = np.zeros((H, W), np.float32)
    wide[40:100, 100:250] = 1.0
    state.add_mask(3, 1, wide)
    out = state.add_mask(3, 2, left)
    # the newer mask wins where they overlap; masks are exactly the prompts at video res
    assert torch.equal(out.masks[1, 0], torch.from_numpy(left > 0.5))
    assert torch.equal(out.masks[0, 0], torch.from_numpy((wide > 0.5) & ~(left > 0.5)))
    assert out.object_score_logits.flatten().tolist() == [10.0, 10.0]


def test_clearing_prompts_downgrades_and_resets(tracker):
    state = new_state(tracker)
    state.add_points(0, 1, [[35.0, 125.0]], [1])
    state.add_points(5, 1, [[35.0, 125.0]], [1])
    for _ in state.propagate(0, 6):
        pass
    assert state.cond_frames == [0, 5]
    state.clear_frame_prompts(5, 1)
    assert state.cond_frames == [0] and 5 in state.stored_frames
    state.clear_frame_prompts(0, 1)  # no prompt left: tracking results are reset
    assert state.cond_frames == [] and state.stored_frames == []
    assert not state.tracking_has_started and state.obj_ids == [1]


def test_remove_object_slices_memories_and_last_one_resets(tracker):
    state = new_state(tracker)
    state.add_points(0, 1, [[35.0, 125.0]], [1])
    state.add_points(0, 2, [[250.0, 110.0]], [1])
    both = list(state.propagate(0, 3))
    assert state.remove_object(1) == [2]
    assert all(m.obj_ptr.shape[0] == 1 for m in state.non_cond_memories.values())
    # recomputed for every frame, as officially
    assert state.cond_memories[0].eff_iou_score is not None
    again = state.add_points(2, 2, [[250.0, 110.0]], [1])
    assert again.obj_ids == [2]
    assert torch.equal(state.cond_memories[0].pred_masks, both[0].low_res_masks[1:])
    assert state.remove_object(2) == []
    assert state.obj_ids == [] and state.cond_frames == [] and not state.tracking_has_started


def test_reset_forgets_everything(tracked_state, tracker):
    state = new_state(tracker)
    state.add_points(0, 1, [[35.0, 125.0]], [1])
    for _ in state.propagate(0, 2):
        pass
    state.reset()
    assert state.obj_ids == [] and state.memory_footprint()["tensors"] == 0
    state.add_points(0, 7, [[35.0, 125.0]], [1])  # new ids allowed again
    assert state.obj_ids == [7]


def test_bfloat16_memory_storage(tracker):
    state = new_state(tracker, storage_dtype=torch.bfloat16)
    state.add_points(0, 1, [[35.0, 125.0]], [1])
    outs = list(state.propagate(0, 3))
    assert all(m.maskmem_features.dtype == torch.bfloat16 for m in state.non_cond_memories.values())
    assert outs[-1].low_res_masks.dtype == torch.float32


def test_deferred_memory_encoding_equals_in_step_encoding(tracker):
    """propagate(run_mem_encoder=False) + update_memory with the step's own masks (sigmoid)
    stores the same memories as encoding inside the step."""
    size = tracker.image_size
    inline = new_state(tracker)
    inline.add_points(0, 1, [[35.0, 125.0]], [1])
    inline.add_points(0, 2, [[250.0, 110.0]], [1])
    expected = [o.low_res_masks for o in inline.propagate(0, 4)]
    deferred = new_state(tracker)
    deferred.add_points(0, 1, [[35.0, 125.0]], [1])
    deferred.add_points(0, 2, [[250.0, 110.0]], [1])
    got = []
    for out in deferred.propagate(0, 4, run_mem_encoder=False):
        got.append(out.low_res_masks)
        if out.frame_idx in deferred.stored_frames:
            assert deferred._non_cond[out.frame_idx].maskmem_features is None
            high_res = torch.nn.functional.interpolate(
                out.low_res_masks, size=(size, size), mode="bilinear", align_corners=False
            )
            deferred.update_memory(out.frame_idx, high_res, out.object_score_logits)
    for a, b in zip(expected, got):
        assert torch.allclose(a, b, atol=1e-5)
    for t in inline.stored_frames:
        a = inline._non_cond[t].maskmem_features
        assert (a - deferred._non_cond[t].maskmem_features).abs().max() < 1e-4
    with pytest.raises(InvalidInputError, match="high_res_masks"):
        deferred.update_memory(1, torch.zeros(3, 1, 8, 8), torch.zeros(3, 1))
    with pytest.raises(InvalidInputError, match="no stored output"):
        deferred.update_memory(9, torch.zeros(2, 1, 8, 8), torch.zeros(2, 1))


# ---------------------------------------------------------------------------------------------
# post-processing


@pytest.mark.parametrize("area", [0, 4, 16])
def test_fill_holes_matches_official(area):
    tensors, _ = fixture()
    ours = fill_holes_in_mask_scores(tensors["fill_holes/input"], area)
    assert torch.equal(ours, tensors[f"fill_holes/output_{area}"])


def test_fill_holes_changes_something():
    tensors, _ = fixture()
    x = tensors["fill_holes/input"]
    out = fill_holes_in_mask_scores(x, 16)
    assert (out != x).any()
    assert out[2, 0, 14:16, 15:17].eq(0.1).all()  # the 4-pixel hole is filled


def test_component_areas_are_8_connected_and_per_mask():
    m = torch.zeros(2, 1, 5, 6, dtype=torch.bool)
    m[0, 0, 0, 0] = m[0, 0, 1, 1] = True  # diagonal neighbours: one component
    m[0, 0, 4, 5] = True  # touches mask 1's first column only across the separator
    m[1, 0, 4, 0] = m[1, 0, 3, 0] = True
    areas = component_areas(m)
    assert areas[0, 0, 0, 0] == 2 and areas[0, 0, 1, 1] == 2 and areas[0, 0, 4, 5] == 1
    assert areas[1, 0, 4, 0] == 2 and areas[0, 0, 2, 2] == 0


def test_non_overlap_keeps_the_best_object_and_breaks_ties_low():
    x = torch.tensor([[[[1.0, 3.0, 2.0]]], [[[2.0, -1.0, 2.0]]]])
    out = apply_non_overlapping_constraints(x)
    assert out[:, 0, 0].tolist() == [[-10.0, 3.0, 2.0], [2.0, -10.0, -10.0]]
    assert torch.equal(apply_non_overlapping_constraints(x[:1]), x[:1])


def test_area_shrinkage_suppression():
    a = torch.full((2, 1, 4, 4), -5.0)
    a[0, 0, :, :2] = 2.0  # object 0: 8 pixels
    a[1, 0, :, 1:] = 3.0  # object 1: 12 pixels, wins the overlap (column 1)
    out = suppress_object_pw_area_shrinkage(a)
    assert torch.equal(out, a)  # object 0 keeps 4/8 >= 0.3 of its area: nothing changes
    a[1, 0, :, :] = 3.0  # object 1 now covers everything: object 0 keeps 0 %
    out = suppress_object_pw_area_shrinkage(a)
    assert (out[0] <= -10).all() and torch.equal(out[1], a[1])


def test_object_wise_non_overlap_uses_object_scores():
    m = torch.full((2, 1, 1, 3), -1.0)
    m[0, 0, 0, :2] = 5.0
    m[1, 0, 0, 1:] = 1.0
    out = apply_object_wise_non_overlapping_constraints(m, torch.tensor([[0.2], [0.9]]))
    # the overlap (pixel 1) goes to object 1 (higher score) despite its lower logit
    assert out[:, 0, 0].tolist() == [[5.0, -10.0, -10.0], [-10.0, 1.0, 1.0]]


# ----------------------------------------------------------------------- batched states


def _states(tracker, features, prompts):
    """One state per entry of ``prompts``: ``[(frame, obj_id, [x, y]), ...]`` clicks."""
    states = []
    for clicks in prompts:
        state = TrackingState(tracker, features, 12, (H, W))
        for frame, obj_id, xy in clicks:
            state.add_points(frame, obj_id, [xy], [1])
        state.preflight()
        states.append(state)
    return states


@pytest.mark.parametrize("mem_encoder", [True, False])
def test_track_states_batches_states_and_matches_tracking_alone(tracker, monkeypatch, mem_encoder):
    """Objects of states that read the same memories run as one batch; every state's outputs
    and stored memories equal those of tracking it alone (float rounding aside)."""
    from sam3video.video.tracking import track_states

    prompts = [
        [(0, 1, [60, 40])],
        [(0, 2, [200, 90]), (0, 3, [150, 60])],  # two objects in one state
        [(0, 4, [250, 30])],
        [(2, 5, [100, 100])],  # prompted later: another plan until frame 2's memories age
    ]
    alone = _states(tracker, Features(), prompts)
    together = _states(tracker, Features(), prompts)
    calls = []
    original = type(tracker).track_step

    def counting(self, frame_idx, features, *args, **kwargs):
        calls.append((frame_idx, features.batch_size))
        return original(self, frame_idx, features, *args, **kwargs)

    monkeypatch.setattr(type(tracker), "track_step", counting)
    for frame_idx in range(1, 6):
        for state in together:
            state.preflight()
        batched = track_states(together, frame_idx, False, run_mem_encoder=mem_encoder)
        for state, out in zip(alone, batched):
            ref = track_states([state], frame_idx, False, run_mem_encoder=mem_encoder)[0]
            assert out.obj_ids == ref.obj_ids
            torch.testing.assert_close(out.low_res_masks, ref.low_res_masks, atol=1e-4, rtol=0)
            torch.testing.assert_close(out.object_score_logits, ref.object_score_logits)
            mine, theirs = together[alone.index(state)]._non_cond, state._non_cond
            if frame_idx in theirs:
                a, b = mine[frame_idx], theirs[frame_idx]
                assert a.eff_iou_score == pytest.approx(b.eff_iou_score, abs=1e-5)
                torch.testing.assert_close(a.obj_ptr, b.obj_ptr, atol=1e-4, rtol=0)
                if mem_encoder:
                    torch.testing.assert_close(
                        a.maskmem_features, b.maskmem_features, atol=1e-4, rtol=0
                    )
                else:  # deferred encoding (the session's), from the same masks for both
                    for st in (state, together[alone.index(state)]):
                        st.update_memory(frame_idx, ref.low_res_masks, ref.object_score_logits)
    # Frame 1: states 0-2 (4 objects) read frame 0 and run as one batch of 4 (then each alone:
    # batches of 1 and 2); state 3, prompted on frame 2, reads other memories.
    assert calls[:2] == [(1, 4), (1, 1)], calls


def test_track_states_keeps_conditioning_frames_per_state(tracker):
    """A state prompted on the frame yields its prompt output; the others are tracked."""
    from sam3video.video.tracking import track_states

    states = _states(tracker, Features(), [[(0, 1, [60, 40])], [(1, 2, [200, 90])]])
    merged = states[1]._cond[1].pred_masks
    outs = track_states(states, 1, False, run_mem_encoder=True)
    assert torch.equal(outs[1].low_res_masks, merged.to(outs[1].low_res_masks.device))
    assert 1 in states[0]._non_cond and 1 not in states[1]._non_cond
