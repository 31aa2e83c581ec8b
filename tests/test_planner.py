"""Video planner against the OFFICIAL planning code, frame by frame.

Fixtures (``tools/reference/gen_planner.py``, official sam3 0.1.4 with a recording tracker
stand-in): ``planner_scenarios_{a,b}.pt`` hold synthetic detector/tracker outputs of whole
sessions (prompt frame, forward pass, backward pass) under several heuristics, with the
official plan, metadata, memory-update decisions and outputs after every frame;
``planner_ops.pt`` holds the official mask rules on hand-made cases.

Everything must match EXACTLY: ids, lists, sets, counters, scores (float equality), boxes and
masks (bit-exact).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam3video.errors import ConfigError, InvalidInputError, UnknownIdError
from sam3video.video.metadata import TrackerMetadata
from sam3video.video.planner import (
    VideoHeuristics,
    associate,
    build_frame_masks,
    object_wise_non_overlap,
    pixelwise_non_overlap,
    plan_frame,
    postprocess_frame,
    prepare_memory_update,
    suppress_recently_occluded,
    suppress_shrinkage,
)
from tests._manifest import FIXTURES
from tests._packed import unpack_bits

SCENARIO_FILES = {
    "planner_scenarios_a": ["default", "cap", "image"],
    "planner_scenarios_b": ["ablation", "sizes", "sizes_det_small", "keepalive"],
}
HEURISTIC_FIELDS = {f.name for f in dataclasses.fields(VideoHeuristics)}


# Hundreds of tiny ops: thread hand-offs cost more than they bring, so one thread.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scenario_files():
    return {name: torch.load(FIXTURES / f"{name}.pt") for name in SCENARIO_FILES}


@pytest.fixture(scope="module")
def ops_fx():
    return torch.load(FIXTURES / "planner_ops.pt")["tensors"]


def _heuristics(spec: dict) -> VideoHeuristics:
    kwargs = {k: v for k, v in spec.items() if k in HEURISTIC_FIELDS}
    return VideoHeuristics(**kwargs)


def _snapshot(meta: TrackerMetadata, frame: int) -> dict:
    """Our metadata in the fixture's format (official lists of frames -> their lengths)."""
    return {
        "obj_ids": list(meta.obj_ids),
        "max_obj_id": meta.max_obj_id,
        "obj_id_to_score": sorted(meta.obj_id_to_score.items()),
        "frame_scores": sorted(meta.frame_tracker_scores(frame).items()),
        "last_occluded": sorted(meta.last_occluded.items()),
        "first_frame": sorted(meta.first_frame.items()),
        "unmatched_count": sorted(meta.unmatched_count.items()),
        "keep_alive": sorted(meta.keep_alive.items()),
        "duplicate_count": sorted((a, b, n) for (a, b), n in meta.duplicate_count.items()),
        "removed_ids": sorted(meta.removed_ids),
        "suppressed": sorted(meta.suppressed_at(frame)),
    }


def _play(fx: dict, name: str) -> dict:
    """Run our planner through one recorded scenario, asserting every frame. Returns counts."""
    tensors, spec = fx["tensors"], fx["meta"]["scenarios"][name]
    mem_size, video_size = fx["meta"]["mem_size"], tuple(fx["meta"]["video_size"])
    h = _heuristics(spec["heuristics"])
    det_all = tensors[f"{name}/det_masks"].float() * 0.5
    trk_all = tensors[f"{name}/trk_masks"].float() * 0.5
    frame_masks_all = unpack_bits(tensors, f"{name}/frame_masks")
    out_masks_all = unpack_bits(tensors, f"{name}/out_masks")
    od = ot = of = oo = 0
    meta = TrackerMetadata()
    seen = {"recondition": 0, "occlusion": 0, "removed": 0, "dropped": 0, "shrunk": 0}
    for step, rec in enumerate(spec["frames"]):
        where = f"{name} step {step} (frame {rec['frame']}, reverse={rec['reverse']})"
        nd, nt = rec["num_det"], rec["num_trk"]
        det_masks = det_all[od : od + nd]
        det_scores = tensors[f"{name}/det_scores"][od : od + nd]
        det_boxes = tensors[f"{name}/det_boxes"][od : od + nd]
        trk_masks = trk_all[ot : ot + nt]
        trk_logits = tensors[f"{name}/trk_logits"][ot : ot + nt]
        od, ot = od + nd, ot + nt
        prev_ids = list(meta.obj_ids)

        plan = plan_frame(
            det_masks, det_scores, trk_masks, trk_logits, meta, rec["frame"],
            reverse=rec["reverse"], is_image_only=rec["image"], det_boxes=det_boxes,
            heuristics=h,
        )
        a = plan.association
        assert plan.new_det_inds == rec["new_det_inds"], where
        assert plan.new_obj_ids == rec["new_obj_ids"], where
        assert a.unmatched_trk_ids == rec["unmatched"], where
        assert a.empty_trk_ids == rec["empty"], where
        assert a.det_to_trk_ids == rec["det_to_trk"], where
        assert [[k, v] for k, v in a.high_conf_pairs.items()] == rec["high_conf"], where
        assert plan.removed_obj_ids == rec["removed"], where
        assert plan.num_dropped == rec["dropped"], where
        assert list(plan.recondition) == rec["recondition"], where
        assert all(plan.recondition[o] == a.high_conf_pairs[o] for o in plan.recondition)
        assert plan.suppressed_obj_ids == rec["occl_suppressed"], where
        assert _snapshot(plan.metadata, rec["frame"]) == rec["meta"], where

        # Memory update: shrink decisions (the masks are then fixed) and score logits.
        if nt > 0:
            masks, score_logits = prepare_memory_update(plan.trk_masks, mem_size)
            interp = F.interpolate(
                plan.trk_masks[:, None], size=(mem_size, mem_size), mode="bilinear",
                align_corners=False,
            )
            shrunk = (masks != interp).flatten(1).any(dim=1)
            assert shrunk.tolist() == rec["mem_shrunk"], where
            assert torch.equal(
                masks, torch.where(shrunk[:, None, None, None], interp.clamp(max=-10), interp)
            )
            assert score_logits.reshape(-1).tolist() == rec["mem_scores"], where
        else:
            assert rec["mem_shrunk"] == [], where

        # Outputs: video-resolution masks, then the post-processed frame.
        frame_masks = build_frame_masks(
            plan.trk_masks, prev_ids, det_masks, plan.new_det_inds, plan.new_obj_ids,
            video_size, h.fill_hole_area,
        )
        assert list(frame_masks) == rec["frame_mask_ids"], where
        n = len(frame_masks)
        if n:
            ours = torch.cat(list(frame_masks.values()))
            assert torch.equal(ours, frame_masks_all[of : of + n]), where
        of += n
        new_meta = plan.metadata
        hidden = new_meta.removed_ids | new_meta.suppressed_at(rec["frame"])
        assert sorted(hidden) == rec["hidden"], where
        out = postprocess_frame(
            frame_masks, new_meta.obj_id_to_score,
            new_meta.frame_tracker_scores(rec["frame"]), video_size, hidden,
        )
        k = len(rec["out_ids"])
        assert out.obj_ids.tolist() == rec["out_ids"], where
        assert torch.equal(out.probs, tensors[f"{name}/out_probs"][oo : oo + k]), where
        assert torch.equal(out.boxes_xywh, tensors[f"{name}/out_boxes"][oo : oo + k]), where
        assert torch.equal(out.masks, out_masks_all[oo : oo + k]), where
        oo += k

        seen["recondition"] += len(plan.recondition)
        seen["occlusion"] += len(plan.suppressed_obj_ids)
        seen["removed"] += len(plan.removed_obj_ids)
        seen["dropped"] += plan.num_dropped
        seen["shrunk"] += sum(rec["mem_shrunk"])
        meta = new_meta
    assert od == det_all.shape[0] and ot == trk_all.shape[0] and oo == out_masks_all.shape[0]
    return seen


@pytest.mark.parametrize(
    "file,name", [(f, n) for f, names in SCENARIO_FILES.items() for n in names]
)
def test_scenario_matches_official(scenario_files, file, name):
    seen = _play(scenario_files[file], name)
    # The scenarios exercise the rules they are meant for.
    if name in ("default", "keepalive", "sizes_det_small"):
        assert seen["recondition"] > 0
    if name in ("default", "ablation", "sizes", "keepalive"):
        assert seen["occlusion"] > 0
    if name in ("default", "cap", "sizes", "keepalive"):
        assert seen["removed"] > 0
    if name == "cap":
        assert seen["dropped"] > 0


def test_scenario_fails_on_a_changed_rule(scenario_files):
    """The replay notices a different threshold (the comparison can fail)."""
    fx = scenario_files["planner_scenarios_a"]
    spec = fx["meta"]["scenarios"]["default"]
    changed = dict(fx["meta"], scenarios={"default": dict(spec)})
    changed["scenarios"]["default"]["heuristics"] = dict(
        spec["heuristics"], hotstart_unmatch_thresh=7
    )
    with pytest.raises(AssertionError):
        _play({"tensors": fx["tensors"], "meta": changed}, "default")


def test_plan_frame_leaves_its_metadata_alone(scenario_files):
    fx = scenario_files["planner_scenarios_a"]
    tensors = fx["tensors"]
    meta = TrackerMetadata(obj_ids=[3, 5], max_obj_id=5, last_occluded={3: 2})
    meta.set_frame_scores(7, {3: 0.5})
    before = meta.copy()
    trk = tensors["default/trk_masks"][:2].float()
    det = tensors["default/det_masks"][:3].float()
    plan = plan_frame(det, torch.tensor([0.9, 0.75, 0.6]), trk, torch.zeros(2), meta, 7)
    assert meta == before
    assert plan.metadata.frame_tracker_scores(7)[3] == 0.5  # sigmoid(0)
    assert before.frame_tracker_scores(7) == {3: 0.5}


# ----------------------------------------------------------------------------------------------
# Mask rules
# ----------------------------------------------------------------------------------------------
def test_suppress_shrinkage_bit_exact(ops_fx):
    out = suppress_shrinkage(ops_fx["shrink_in"])
    assert torch.equal(out, ops_fx["shrink_out"])
    assert not torch.equal(out, ops_fx["shrink_in"])  # the case suppresses something
    assert torch.equal(suppress_shrinkage(ops_fx["shrink_single_in"]), ops_fx["shrink_single_out"])


def test_pixelwise_non_overlap_ties(ops_fx):
    assert torch.equal(pixelwise_non_overlap(ops_fx["pixelwise_in"]), ops_fx["pixelwise_out"])


@pytest.mark.parametrize("case", ["distinct", "ties", "nonpositive"])
def test_object_wise_non_overlap(ops_fx, case):
    masks = ops_fx["objectwise_masks"]
    out = object_wise_non_overlap(masks, ops_fx[f"objectwise_{case}_scores"])
    assert torch.equal(out, ops_fx[f"objectwise_{case}_out"])
    assert not torch.equal(out, masks)


def test_object_wise_non_positive_score_loses_everything():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, 2:] = True  # no overlap at all
    out = object_wise_non_overlap(masks, torch.tensor([0.0, 0.3]))
    assert not out[0].any() and torch.equal(out[1], masks[1])
    single = object_wise_non_overlap(masks[:1], torch.tensor([-1.0]))
    assert torch.equal(single, masks[:1])  # one object: unchanged


def test_memory_update_empty_mask_is_pushed_to_minus_ten():
    low = torch.full((1, 4, 4), -2.0)
    masks, logits = prepare_memory_update(low, 8)
    assert masks.shape == (1, 1, 8, 8) and torch.all(masks == -10.0)
    assert logits.tolist() == [[-10.0]]


@pytest.mark.parametrize("case", ["exact", "ties", "det_larger", "trk_larger"])
def test_associate_matches_official_at_thresholds(ops_fx, case):
    """IoU exactly 0.8 / 0.5 / 0.1, score exactly 0.8 / 0.7, IoU ties, size mismatch."""
    t = {k[len(f"assoc_{case}_") :]: v for k, v in ops_fx.items() if k.startswith(f"assoc_{case}_")}
    ids = t["ids"].tolist()
    a = associate(t["det"], t["scores"], t["trk"], ids, VideoHeuristics())
    assert a.new_det_inds == t["new"].tolist()
    assert a.unmatched_trk_ids == t["unmatched"].tolist()
    assert a.empty_trk_ids == t["empty"].tolist()
    assert [[d, o] for d, objs in enumerate(a.det_to_trk_ids) for o in objs] == t["links"].tolist()
    assert [[k, v] for k, v in a.high_conf_pairs.items()] == t["pairs"].tolist()


@pytest.mark.parametrize("case", ["fwd", "bwd", "fwd_removed", "bwd_removed"])
def test_occlusion_matches_official(ops_fx, case):
    reverse = case.startswith("bwd")
    removed = {"fwd": set(), "bwd": set(), "fwd_removed": {8, 6}, "bwd_removed": {8}}[case]
    masks = ops_fx["occl_masks"]
    ids = list(range(masks.shape[0]))
    prev = {i: v for i, v in zip(ids, ops_fx["occl_prev"].tolist()) if v != -99}
    out, suppressed, last = suppress_recently_occluded(
        masks, ids, prev, removed, 9, reverse, VideoHeuristics().
        suppress_overlapping_based_on_recent_occlusion_threshold,
    )
    assert torch.equal(out, ops_fx[f"occl_{case}_out"])
    assert [last[i] for i in ids] == ops_fx[f"occl_{case}_last"].tolist()
    assert suppressed.any()


def test_shrinkage_at_exactly_the_ratio(ops_fx):
    out = suppress_shrinkage(ops_fx["shrink_exact_in"])
    assert torch.equal(out, ops_fx["shrink_exact_out"])
    assert out[0].amax() > 0 and out[2].amax() == -10  # 0.3 kept, 0.2 suppressed


def test_border_rule_matches_official(ops_fx):
    boxes = ops_fx["border_boxes"]
    n = boxes.shape[0]
    h = VideoHeuristics(suppress_det_close_to_boundary=True)
    masks = torch.zeros(n, 4, 4)
    masks[:, 0, 0] = 1.0
    plan = plan_frame(
        masks, torch.full((n,), 0.9), torch.zeros(0, 4, 4), torch.zeros(0), TrackerMetadata(),
        0, det_boxes=boxes, heuristics=h,
    )
    expected = [i for i, k in enumerate(ops_fx["border_keep"].tolist()) if k]
    assert plan.new_det_inds == expected and 0 < len(expected) < n


@pytest.mark.parametrize("case", ["default", "suppress"])
def test_hotstart_reaches_untracked_objects(case):
    """Official quirk: an object removed by the user (7, no longer tracked) but with 8
    unmatched frames inside its hotstart window is removed again (score -1e4); and keep-alive
    suppression (off by default) hides a tracked object whose counter fell to 0."""
    official = torch.load(FIXTURES / "planner_ops.pt")["meta"]["ghost"][case]
    meta = TrackerMetadata(
        obj_ids=[3], max_obj_id=7, obj_id_to_score={3: float(np.float32(0.9))},
        first_frame={3: 0, 7: 10}, unmatched_count={7: 8, 3: 1}, keep_alive={3: 1, 7: 5},
    )
    h = VideoHeuristics(suppress_unmatched_only_within_hotstart=case == "default")
    trk = -torch.ones(1, 4, 10)
    trk[0, 0, :6] = 1.0
    plan = plan_frame(torch.zeros(0, 4, 10), torch.zeros(0), trk, torch.tensor([2.0]), meta, 18,
                      heuristics=h)
    assert plan.removed_obj_ids == official["removed"] == [7]
    assert _snapshot(plan.metadata, 18) == official["meta"]


def test_last_occluded_is_rebuilt_every_frame():
    """Officially the new metadata starts with an empty table; occlusion suppression refills
    it for the tracks of the frame, so with the rule off (threshold 0) it stays empty."""
    meta = TrackerMetadata(obj_ids=[3], max_obj_id=3, last_occluded={3: 2, 9: 1})
    trk = torch.full((1, 4, 4), -1.0)
    off = VideoHeuristics(suppress_overlapping_based_on_recent_occlusion_threshold=0.0)
    plan = plan_frame(torch.zeros(0, 4, 4), torch.zeros(0), trk, torch.zeros(1), meta, 5,
                      heuristics=off)
    assert plan.metadata.last_occluded == {}
    plan = plan_frame(torch.zeros(0, 4, 4), torch.zeros(0), trk, torch.zeros(1), meta, 5)
    assert plan.metadata.last_occluded == {3: 5}  # empty mask: occluded now; 9 dropped


# ----------------------------------------------------------------------------------------------
# Association edge cases, heuristics, metadata
# ----------------------------------------------------------------------------------------------
def _disc(size: int, cx: float, cy: float, r: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.where((xs - cx) ** 2 + (ys - cy) ** 2 <= r * r, 4.0, -4.0)


def test_associate_edge_cases():
    h = VideoHeuristics()
    dets = torch.stack([_disc(16, 4, 4, 3), _disc(16, 11, 11, 3)])
    # No tracks: every detection is new, even below new_det_thresh.
    a = associate(dets, torch.tensor([0.55, 0.9]), torch.zeros(0, 16, 16), [], h)
    assert a.new_det_inds == [0, 1] and a.det_to_trk_ids == [[], []]
    # No detections: non-empty tracks are unmatched, empty ones are empty.
    trks = torch.stack([_disc(16, 4, 4, 3), torch.full((16, 16), -1.0)])
    a = associate(torch.zeros(0, 16, 16), torch.zeros(0), trks, [7, 9], h)
    assert a.unmatched_trk_ids == [7] and a.empty_trk_ids == [9] and a.new_det_inds == []
    # Both: det 0 matches track 7 exactly (high confidence), det 1 is new (score >= 0.7).
    a = associate(dets, torch.tensor([0.85, 0.7]), trks, [7, 9], h)
    assert a.new_det_inds == [1] and a.det_to_trk_ids == [[7], []]
    assert a.high_conf_pairs == {7: 0} and a.unmatched_trk_ids == [] and a.empty_trk_ids == [9]
    # Bool masks are accepted (same decisions as their logits).
    b = associate(dets > 0, torch.tensor([0.85, 0.7]), trks > 0, [7, 9], h)
    assert b == a


def test_heuristics_presets_and_validation(scenario_files):
    official = scenario_files["planner_scenarios_a"]["meta"]["scenarios"]["default"]
    assert _heuristics(official["heuristics"]) == VideoHeuristics()
    ablation = scenario_files["planner_scenarios_b"]["meta"]["scenarios"]["ablation"]
    assert _heuristics(ablation["heuristics"]) == VideoHeuristics.ablation()
    assert VideoHeuristics(max_num_objects=-1).max_num_objects == 10000
    with pytest.raises(ConfigError, match="hotstart_unmatch_thresh"):
        VideoHeuristics(hotstart_delay=4)
    VideoHeuristics(hotstart_delay=0, hotstart_unmatch_thresh=8)  # no delay: no check


def test_input_errors():
    meta = TrackerMetadata(obj_ids=[0], max_obj_id=0)
    det = torch.zeros(1, 8, 8)
    with pytest.raises(InvalidInputError, match="trk_masks"):
        plan_frame(det, torch.ones(1), torch.zeros(2, 8, 8), torch.zeros(2), meta, 0)
    with pytest.raises(InvalidInputError, match="det_scores"):
        plan_frame(det, torch.ones(2), torch.zeros(1, 8, 8), torch.zeros(1), meta, 0)
    with pytest.raises(InvalidInputError, match="frame_idx"):
        plan_frame(det, torch.ones(1), torch.zeros(1, 8, 8), torch.zeros(1), meta, -1)
    with pytest.raises(InvalidInputError, match="det_boxes"):
        plan_frame(
            det, torch.ones(1), torch.zeros(0, 8, 8), torch.zeros(0), TrackerMetadata(), 0,
            heuristics=VideoHeuristics(suppress_det_close_to_boundary=True),
        )
    with pytest.raises(UnknownIdError):
        postprocess_frame({4: torch.ones(1, 2, 2, dtype=torch.bool)}, {}, {}, (2, 2))


def test_metadata_click_and_removal():
    meta = TrackerMetadata(obj_ids=[0, 2], max_obj_id=2, obj_id_to_score={0: 0.9, 2: 0.8})
    meta.removed_ids.add(5)
    meta.add_suppressed(3, [5, 2])
    assert meta.register_click(5, 3) is True  # new id, re-using a removed one
    assert meta.obj_ids == [0, 2, 5] and meta.max_obj_id == 5
    assert meta.obj_id_to_score[5] == 1.0 and meta.frame_tracker_scores(3) == {5: 1.0}
    assert 5 not in meta.removed_ids and meta.suppressed_at(3) == {2}
    assert meta.register_click(0, 4) is False and meta.obj_id_to_score[0] == 1.0
    meta.remove_object(2)
    assert meta.obj_ids == [0, 5] and 2 not in meta.obj_id_to_score and meta.max_obj_id == 5
    with pytest.raises(UnknownIdError):
        meta.remove_object(2)
    assert meta.can_add_object(3) and not meta.can_add_object(2)
