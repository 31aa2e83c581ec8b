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
import torch.nn.functional as F

from sam3video.errors import InvalidInputError
from sam3video.video.multiplex_memory import multiplex_memory_plan, tpos_row
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


# ------------------------------------------------------------------------------------------
# The state's memory bank on the tiny SAM 3.1 tracker (synthetic weights)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    from sam3video.model import tracker_31
    from sam3video.model.config import get_config
    from sam3video.model.weights import synthetic_state_dict

    module = tracker_31.build_multiplex_tracker(get_config("sam3.1-tiny")).model
    module.load_state_dict(synthetic_state_dict(module, prefix="tracker.model."))
    return module.eval()


def _features(model):
    """Seeded random tracker pyramids per frame, prepared once (shared by all states)."""
    cache = {}
    c, h = model.hidden_dim, model.feat_size

    def get(frame_idx):
        if frame_idx not in cache:
            g = torch.Generator().manual_seed(1000 + frame_idx)
            levels = [(1, c, 4 * h, 4 * h), (1, c, 2 * h, 2 * h), (1, c, h, h)]
            pyramids = []
            for _ in range(2):
                feats = [torch.randn(s, generator=g) for s in levels]
                pos = [torch.randn(s, generator=g) for s in levels]
                pyramids.append((feats, pos))
            cache[frame_idx] = (
                model.prepare_interactive(*pyramids[0]),
                model.prepare_propagation(*pyramids[1]),
            )
        return cache[frame_idx]

    return get


def _masks(ids, size=256):
    """Disjoint rectangles, far enough apart that non-overlap between them is a no-op."""
    masks = torch.zeros(len(ids), size, size)
    for k, obj_id in enumerate(ids):
        masks[k, 10 : 60 + 20 * (obj_id % 5), obj_id * 40 + 4 : obj_id * 40 + 30] = 1
    return masks


def _state(model, get, ids, num_frames=40, **kw):
    from sam3video.video.multiplex_tracking import MultiplexTrackingState

    state = MultiplexTrackingState(model, get, num_frames, **kw)
    state.add_masks(0, ids, _masks(ids))
    state.preflight()
    return state


def _close(a, b):
    return torch.allclose(a, b, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_buckets_are_independent_and_batched_states_match(model):
    from sam3video.video.multiplex_tracking import track_multiplex_states

    get = _features(model)
    whole = _state(model, get, [0, 1, 2, 3, 4, 5])  # 2 buckets of 4 slots
    first, second = _state(model, get, [0, 1, 2, 3]), _state(model, get, [4, 5])
    assert (whole.num_buckets, first.num_buckets, second.num_buckets) == (2, 1, 1)
    for t in range(1, 4):
        (a,) = track_multiplex_states([whole], t, False, run_mem_encoder=True)
        b, c = track_multiplex_states([first, second], t, False, run_mem_encoder=True)
        assert _close(a.low_res_masks, torch.cat([b.low_res_masks, c.low_res_masks]))
        assert _close(
            a.object_score_logits, torch.cat([b.object_score_logits, c.object_score_logits])
        )
        sw, s1, s2 = whole.stored(t), first.stored(t), second.stored(t)
        assert _close(sw.maskmem_features, torch.cat([s1.maskmem_features, s2.maskmem_features]))
        assert _close(sw.obj_ptr, torch.cat([s1.obj_ptr, s2.obj_ptr]))
    assert whole.cond_frames == [0] and whole.stored_frames() == [0, 1, 2, 3]


@torch.inference_mode()
def test_removal_drops_emptied_buckets_from_every_memory(model):
    from sam3video.video.multiplex_state import REMOVED
    from sam3video.video.multiplex_tracking import track_multiplex_states

    get = _features(model)
    whole, first = _state(model, get, [0, 1, 2, 3, 4, 5]), _state(model, get, [0, 1, 2, 3])
    for t in (1, 2):
        track_multiplex_states([whole, first], t, False, run_mem_encoder=True)
    before = {t: whole.stored(t).obj_ptr.clone() for t in (0, 1, 2)}
    assert whole.remove_objects([4, 5])
    assert whole.num_buckets == 1 and whole.obj_ids == [0, 1, 2, 3]
    for t in (0, 1, 2):
        frame = whole.stored(t)
        assert torch.equal(frame.obj_ptr, before[t][:1])
        assert frame.maskmem_features.shape[0] == 1 and frame.obj_ids == (0, 1, 2, 3)
        assert frame.pred_masks.shape[0] == 4
    # what is left is bucket 0, which never saw the others: it tracks on like `first`
    (a,) = track_multiplex_states([whole], 3, False, run_mem_encoder=True)
    (b,) = track_multiplex_states([first], 3, False, run_mem_encoder=True)
    assert _close(a.low_res_masks, b.low_res_masks)
    # a removed slot stays taken; the last object's removal empties the state
    assert whole.remove_objects([1])
    assert whole.multiplex.assignments == [[0, REMOVED, 1, 2]] and whole.free_slots == 0
    assert whole.stored(3).obj_ids == (0, 2, 3) and whole.stored(3).obj_ptr.shape[0] == 1
    assert not whole.remove_objects([0, 2, 3])
    whole.reset()
    assert whole.num_objects == 0 and whole.stored_frames() == [] and whole.num_buckets == 0


@torch.inference_mode()
def test_backfill_takes_free_slots_on_a_tracked_frame(model):
    from sam3video.video.multiplex_tracking import track_multiplex_states

    get = _features(model)
    state = _state(model, get, [0, 1, 2])
    track_multiplex_states([state], 1, False)
    state.update_memory(1, torch.zeros(3, 1, 256, 256), torch.ones(3, 1))
    assert state.free_slots == 1
    state.add_masks(1, [7], _masks([3]))
    assert state.num_buckets == 1 and state.obj_ids == [0, 1, 2, 7]
    assert not state.is_cond_frame(1) and state.cond_frames == [0]
    frame = state.stored(1)
    assert frame.conditioning == {7} and frame.maskmem_features is None
    inter, _ = get(1)
    alone = model.use_mask_as_output(
        model.interactive_features(inter.vision), inter.high_res, _masks([3])[:, None]
    )
    assert torch.equal(frame.obj_ptr[0, 3], alone.obj_ptr[0])
    assert frame.pred_masks.shape[0] == 4 and frame.object_score_logits[3].item() == 10.0
    state.preflight()
    assert state.stored(1).maskmem_features.shape[0] == 1
    (out,) = track_multiplex_states([state], 2, False)
    assert out.obj_ids == [0, 1, 2, 7] and out.low_res_masks.shape[0] == 4
    # no free slot left: a new bucket, and every stored frame gains it
    state.update_memory(2, torch.zeros(4, 1, 256, 256), torch.ones(4, 1))
    state.add_masks(2, [8], _masks([4]))
    assert state.num_buckets == 2
    assert all(state.stored(t).obj_ptr.shape[0] == 2 for t in state.stored_frames())


@torch.inference_mode()
def test_update_memory_encodes_the_given_masks(model):
    from sam3video.video.multiplex_tracking import track_multiplex_states

    get = _features(model)
    state = _state(model, get, [0, 1])
    track_multiplex_states([state], 1, False)
    assert state.stored(1).maskmem_features is None  # deferred
    masks = torch.randn(2, 1, 256, 256, generator=torch.Generator().manual_seed(3))
    scores = torch.tensor([[10.0], [-10.0]])
    state.update_memory(1, masks, scores)
    _, prop = get(1)
    expected, _ = model.encode_memory(
        prop.vision, masks, scores, state.multiplex.slots(), torch.zeros(2, dtype=torch.bool)
    )
    assert torch.equal(state.stored(1).maskmem_features, expected)
    with pytest.raises(InvalidInputError, match="high_res_masks"):
        state.update_memory(1, masks[:1], scores)


@torch.inference_mode()
def test_bounded_memory_keeps_what_later_steps_read(model):
    from sam3video.video.multiplex_tracking import MultiplexTrackingState, track_multiplex_states

    get = _features(model)
    k = model.max_obj_ptrs_in_encoder - 1
    for reverse, start, frames in ((False, 0, range(1, 45)), (True, 59, range(58, 14, -1))):
        state = MultiplexTrackingState(model, get, 60)
        state.add_masks(start, [0], _masks([0]))
        state.preflight()
        first = frames[0]
        track_multiplex_states([state], first, reverse, run_mem_encoder=True)
        tracked = state.stored(first)
        everything = {first}  # what an unbounded state would hold
        for t in frames[1:]:
            # the bookkeeping of a tracked frame (its tensors do not matter here)
            state._non_cond[t] = tracked
            state._tracked.add(t)
            state._last = (t, reverse)
            state._trim()
            everything.add(t)
            # the next step, and new passes from the prompted frame either way, read the
            # same frames as they would with nothing dropped
            for nxt, rev in ((t - 1 if reverse else t + 1, reverse), (start + 1, False)):
                if 0 <= nxt < 60 and nxt != start:
                    full = multiplex_memory_plan(nxt, [start], everything, 60, rev)
                    assert state.memory_plan(nxt, rev) == full, (t, nxt, rev)
            if start > 0:
                full = multiplex_memory_plan(start - 1, [start], everything, 60, True)
                assert state.memory_plan(start - 1, True) == full
        step = -1 if reverse else 1
        last = frames[-1]
        near_start = {t for t in frames if abs(t - start) <= k}
        near_last = {t for t in frames if 0 <= (last - t) * step <= k}
        assert set(state.stored_frames()) == {start} | near_start | near_last


@torch.inference_mode()
def test_place_births_is_the_official_best_fit(model):
    from sam3video.video.multiplex_tracking import place_births

    get = _features(model)
    # free slots (4 per bucket): 1, 3, 2, 3
    states = [_state(model, get, ids) for ids in ([0, 1, 2], [0], [0, 1], [3])]
    assert [s.free_slots for s in states] == [1, 3, 2, 3]
    assert place_births(states, 1) == 0
    assert place_births(states, 2) == 2
    assert place_births(states, 3) == 1  # the first of the equals
    assert place_births(states, 4) is None
    states[0].remove_objects([1])  # a removed slot stays taken
    assert states[0].free_slots == 1 and place_births(states, 1) == 0


@torch.inference_mode()
def test_extract_object_moves_its_rows_and_drops_its_memories(model):
    """The official extraction of a shared object (docs/sam31_video_logic.md 2.2.1): its rows
    of every stored frame move to a new one-object state (pointers re-muxed to slot 0), its
    slot in the old state becomes REMOVED, its memories are dropped (read for pointers only
    until the frame is tracked again, never re-encoded by preflight), and the new state has
    tracked nothing. States whose memories differ that way are not batched together."""
    from sam3video.errors import UnsupportedModelError
    from sam3video.video.multiplex_state import REMOVED
    from sam3video.video.multiplex_tracking import MultiplexTrackingState, track_multiplex_states

    get = _features(model)
    shared = _state(model, get, [0, 1, 2])
    for t in (1, 2):
        track_multiplex_states([shared], t, False, run_mem_encoder=True)
    before = {t: shared.stored(t) for t in (0, 1, 2)}
    rows = {t: before[t].rows([1])[0] for t in before}
    ptrs = {t: shared.multiplex.demux(before[t].obj_ptr)[1].clone() for t in before}
    masks = {t: before[t].pred_masks[rows[t]].clone() for t in before}
    images = {t: before[t].image_features for t in before}
    memories = {t: before[t].maskmem_features.clone() for t in before}
    pts, lab = torch.tensor([[30.0, 40.0]]), torch.tensor([1])
    with pytest.raises(UnsupportedModelError, match="shared with 2 other"):
        shared.refine_points(2, 1, pts, lab)
    single = shared.extract_object(1)
    assert shared.obj_ids == [0, 2] and shared.multiplex.assignments[0][:3] == [0, REMOVED, 1]
    assert all(torch.equal(shared.stored(t).maskmem_features, memories[t]) for t in before)
    assert single.obj_ids == [1] and single.cond_frames == [0]
    assert single.stored_frames() == [0, 1, 2] and single._already == set()
    for t, frame in ((t, single.stored(t)) for t in before):
        assert frame.obj_ids == (1,) and frame.memory_dropped and frame.maskmem_features is None
        assert torch.equal(frame.pred_masks[0], masks[t])
        assert torch.equal(frame.obj_ptr[0, 0], ptrs[t]) and not frame.obj_ptr[0, 1:].any()
        assert frame.image_features is images[t]
    assert single.stored(0).conditioning == {1} and single.stored(1).conditioning == set()
    single.preflight()  # dropped memories stay dropped
    assert all(single.stored(t).maskmem_features is None for t in before)
    # The next step reads the pointers only, and a state with the same plan but encoded
    # memories is not batched with it.
    twin = _state(model, get, [5])
    for t in (1, 2):
        track_multiplex_states([twin], t, False, run_mem_encoder=True)
    alone = MultiplexTrackingState(model, get, 40)
    alone.multiplex, alone._cond, alone._non_cond = single.multiplex, single._cond, single._non_cond
    (ref,) = track_multiplex_states([alone], 3, False)
    single._cond, single._non_cond = dict(single._cond), dict(single._non_cond)
    out_single, out_twin = track_multiplex_states([single, twin], 3, False)
    assert _close(out_single.low_res_masks, ref.low_res_masks)
    (twin_alone,) = track_multiplex_states([_copy_state(twin, model, get)], 3, False)
    assert _close(out_twin.low_res_masks, twin_alone.low_res_masks)
    with pytest.raises(InvalidInputError, match="shared state"):
        single.extract_object(1)


def _copy_state(state, model, get):
    from sam3video.video.multiplex_tracking import MultiplexTrackingState

    copy = MultiplexTrackingState(model, get, state.num_frames)
    copy.multiplex = state.multiplex.copy()
    copy._cond, copy._non_cond = dict(state._cond), dict(state._non_cond)
    return copy


@torch.inference_mode()
def test_state_errors(model):
    from sam3video.errors import UnknownIdError
    from sam3video.video.multiplex_tracking import MultiplexTrackingState

    get = _features(model)
    state = _state(model, get, [0, 1])
    with pytest.raises(InvalidInputError, match="frame_idx"):
        state.add_masks(5, [9], _masks([2]))  # frame 5 not tracked by this state
    with pytest.raises(InvalidInputError, match="obj_ids"):
        state.add_masks(0, [1], _masks([1]))
    with pytest.raises(UnknownIdError):
        state.remove_objects([4])
    with pytest.raises(InvalidInputError, match="num_frames"):
        MultiplexTrackingState(model, get, 0)


# ------------------------------------------------------------------------------------------
# Parity of the tracker state with the official one (fixture ``track/``)
# ------------------------------------------------------------------------------------------

TRACK = {
    k[len("track/") :]: v
    for k, v in torch.load(FIXTURES / "multiplex_state.pt", weights_only=False)["tensors"].items()
    if k.startswith("track/")
}
TRACK_META = torch.load(FIXTURES / "multiplex_state.pt", weights_only=False)["meta"]


def _official_pyramids(model):
    """The generator's seeded raw pyramids (same draws), prepared by our model."""
    cache = {}
    c, h = model.hidden_dim, model.feat_size
    sizes = [(1, c, 4 * h, 4 * h), (1, c, 2 * h, 2 * h), (1, c, h, h)]

    def get(frame_idx):
        if frame_idx not in cache:
            g = torch.Generator().manual_seed(2000 + frame_idx)
            pyramids = []
            for _ in range(2):
                levels = [torch.randn(s, generator=g) for s in sizes]
                pos = [torch.randn(s, generator=g) for s in sizes]
                pyramids.append((levels, pos))
            cache[frame_idx] = (
                model.prepare_interactive(*pyramids[0]),
                model.prepare_propagation(*pyramids[1]),
            )
        return cache[frame_idx]

    return get


def _report(name, ours, theirs):
    diff = (ours.float() - theirs.float()).abs().max().item()
    return f"{name}: max abs diff {diff:.3g}"


@torch.inference_mode()
def test_tracking_matches_official_state(model):
    """Births, tracked frames with deferred memory, a backfill into free slots, an in-place
    reconditioning and a removal that drops a bucket, as the official state records them."""
    from sam3video.video.multiplex_state import REMOVED
    from sam3video.video.multiplex_tracking import MultiplexTrackingState, track_multiplex_states
    from sam3video.video.planner import suppress_shrinkage

    get = _official_pyramids(model)
    video_size = tuple(TRACK_META["track_video_size"])
    state = MultiplexTrackingState(model, get, TRACK_META["track_frames"], video_size=video_size)
    masks = TRACK["masks"]
    bad: list[str] = []

    def check(tag: str, t: int) -> None:
        frame = state.stored(t)
        conditioning = torch.tensor(sorted(frame.rows(sorted(frame.conditioning))))
        ours = {
            "pred_masks": frame.pred_masks,
            "object_score_logits": frame.object_score_logits,
            "obj_ptr": frame.obj_ptr,
            "maskmem_features": frame.maskmem_features,
        }
        for k, value in ours.items():
            theirs = TRACK[f"{tag}/{k}"]
            if value.shape != theirs.shape or not torch.allclose(
                value.float(), theirs.float(), atol=1e-4, rtol=1e-4
            ):
                bad.append(f"{tag}/{k}: " + _report(k, value, theirs))
        if not torch.equal(conditioning, TRACK[f"{tag}/conditioning"].long()):
            bad.append(f"{tag}/conditioning: {conditioning} != {TRACK[f'{tag}/conditioning']}")

    state.add_masks(0, [1, 2, 3, 4, 5], masks[:5])
    state.preflight()
    check("0", 0)
    for t in range(1, TRACK_META["track_frames"]):
        (out,) = track_multiplex_states([state], t, False)
        if not _close(out.low_res_masks, TRACK[f"{t}/tracked_masks"]):
            bad.append(
                _report(f"{t}/tracked_masks", out.low_res_masks, TRACK[f"{t}/tracked_masks"])
            )
        if not _close(out.object_score_logits, TRACK[f"{t}/tracked_scores"]):
            bad.append(f"{t}/tracked_scores")
        if t == 3:
            state.recondition(3, [3], masks[5:6])
            state.preflight()
            check("3/reconditioned", 3)
        high = F.interpolate(state.stored(t).pred_masks, size=(256, 256), mode="bilinear")
        high = suppress_shrinkage(high)
        proxy = torch.where((high > 0).any(dim=(-1, -2)), 10.0, -10.0)
        assert torch.equal(proxy, TRACK[f"{t}/update_scores"]), t
        state.update_memory(t, high, proxy)
        check(str(t), t)
        if t == 2:
            state.add_masks(2, [6, 7], masks[6:8])
            assert state.num_buckets == 2
            state.preflight()
            check("2/backfilled", 2)
        if t == 3:
            assert state.remove_objects([2, 5, 6, 7])
            assert state.multiplex.assignments == [[0, REMOVED, 1, 2]]
            for f in range(4):
                check(f"removed/{f}", f)
    assert not bad, "\n".join(bad)

    # Clicks on new objects (each in a state of its own), then tracked with memory encoding.
    for tag, obj_id in (("click1", 9), ("click2", 10)):
        state = MultiplexTrackingState(
            model, get, TRACK_META["track_frames"], video_size=video_size
        )
        state.add_points(1, obj_id, TRACK[f"{tag}/points"], TRACK[f"{tag}/labels"])
        state.preflight()
        check(f"{tag}/1", 1)
        for t in (2, 3):
            track_multiplex_states([state], t, False, run_mem_encoder=True)
            check(f"{tag}/{t}", t)
    assert not bad, "\n".join(bad)
