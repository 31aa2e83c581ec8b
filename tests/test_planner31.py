"""SAM 3.1 video planner against the OFFICIAL 3.1 code, step by step.

Fixtures (``tools/reference/gen_planner31.py``, official release 9f22cb9 with a stand-in
detector and a recording stand-in tracker): ``planner31_scenarios_{a,b}.pt`` hold synthetic
queries and tracks of whole sessions (add_prompt's frame, the official ``propagate_in_video``
forward then backward) under several heuristics, with the official post-NMS scores and keep
masks, plan, metadata, final track logits, memory-update decisions and frame masks after every
processing step, and every yielded output; ``planner31_ops.pt`` holds the official NMS, IoM,
association and border rule on hand-made cases.

Everything must match EXACTLY (ids, lists, counters, float scores, logits, masks, boxes).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sam3video.errors import InvalidInputError
from sam3video.video.planner import build_frame_masks, postprocess_frame, prepare_memory_update
from sam3video.video.planner31 import (
    TrackerMetadata31,
    VideoHeuristics31,
    associate31,
    hidden_ids31,
    mask_iom,
    nms_keep31,
    plan_frame31,
    register_click31,
    select_detections31,
    unconfirmed_status_frame,
)
from tests._manifest import FIXTURES
from tests._packed import unpack_bits

SCENARIO_FILES = {
    "planner31_scenarios_a": ["default", "image", "duplicates", "sizes"],
    "planner31_scenarios_b": ["crowd", "short", "iou", "no_delay"],
}
FIELDS = {f.name for f in dataclasses.fields(VideoHeuristics31)}
RENAMED = {"use_iom_recondition": "use_iom"}


# Hundreds of tiny ops: thread hand-offs cost more than they bring, so one thread.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scenario_files():
    return {name: torch.load(FIXTURES / f"{name}.pt") for name in SCENARIO_FILES}


@pytest.fixture(scope="module")
def ops_fx():
    return torch.load(FIXTURES / "planner31_ops.pt")["tensors"]


def _heuristics(spec: dict) -> VideoHeuristics31:
    kwargs = {RENAMED.get(k, k): v for k, v in spec.items()}
    return VideoHeuristics31(**{k: v for k, v in kwargs.items() if k in FIELDS})


def _snapshot(meta: TrackerMetadata31, frame: int) -> dict:
    """Our metadata in the fixture's format (official position-indexed tensors -> per id)."""
    ids = list(meta.obj_ids)
    return {
        "obj_ids": ids,
        "max_obj_id": meta.max_obj_id,
        "obj_id_to_score": sorted(meta.obj_id_to_score.items()),
        "frame_scores": sorted(meta.frame_tracker_scores(frame).items()),
        "first_frame": sorted((i, meta.first_frame[i]) for i in ids),
        "unmatched_count": sorted((i, meta.unmatched_count.get(i, 0)) for i in ids),
        "keep_alive": sorted((i, meta.keep_alive[i]) for i in ids),
        "last_occluded": sorted((i, meta.last_occluded.get(i, -1)) for i in ids),
        "duplicate_count": sorted(
            (a, b, n) for (a, b), n in meta.duplicate_count.items() if n and a in ids and b in ids
        ),
        "removed_ids": sorted(meta.removed_ids),
        "suppressed": sorted(meta.suppressed_at(frame)),
        "det_streak": sorted((i, meta.det_streak.get(i, 0)) for i in ids),
        "confirmed": sorted(meta.confirmed),
    }


def _passes(spec: dict) -> list[tuple[str, int, int]]:
    """(pass, first step, end frame) of add_prompt's frame, forward and backward passes."""
    prompt, n = spec["prompt"], spec["num_frames"]
    out = [("prompt", 0, prompt)]
    if n > 1:
        out.append(("forward", 1, n - 1))
        if prompt > 0:
            out.append(("backward", 1 + n - prompt, 0))
    return out


def _play(fx: dict, name: str) -> dict:
    """Run our planner through one recorded scenario, asserting every step and every yield."""
    tensors, spec = fx["tensors"], fx["meta"]["scenarios"][name]
    mem_size, video_size = fx["meta"]["mem_size"], tuple(fx["meta"]["video_size"])
    h = _heuristics(spec["heuristics"])
    t = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{name}/")}
    frame_masks_all = unpack_bits(t, "frame_masks")
    out_masks_all = unpack_bits(t, "out_masks")
    steps = spec["steps"]
    passes = _passes(spec)
    meta = TrackerMetadata31()
    oq = ot = of = 0
    results = []  # per step: (frame, reverse, frame masks, scores, tracker scores, unconfirmed)
    seen = {"births": 0, "removed": 0, "recondition": 0, "ambiguous": 0, "dropped": 0}
    seen.update(hidden=0, shown_then_removed=0)
    for step, rec in enumerate(steps):
        where = f"{name} step {step} (frame {rec['frame']}, reverse={rec['reverse']})"
        nq, nt = rec["num_q"], rec["num_trk"]
        q_masks = t["q_masks"][oq : oq + nq].float() * 0.5
        logits, boxes = t["q_logits"][oq : oq + nq], t["q_boxes"][oq : oq + nq]
        probs, keep = select_detections31(logits, q_masks, boxes, h)
        assert torch.equal(probs, t["q_probs"][oq : oq + nq]), where
        assert torch.equal(keep, t["q_keep"][oq : oq + nq]), where
        trk_masks = t["trk_masks"][ot : ot + nt].float() * 0.5
        trk_logits = t["trk_logits"][ot : ot + nt]
        final = t["trk_final"][ot : ot + nt].float() * 0.5
        oq, ot = oq + nq, ot + nt
        prev_ids = list(meta.obj_ids)

        plan = plan_frame31(
            q_masks,
            probs,
            keep,
            trk_masks,
            trk_logits,
            meta,
            rec["frame"],
            reverse=rec["reverse"],
            is_image_only=rec["image"],
            heuristics=h,
        )
        a = plan.association
        assert plan.new_det_inds == rec["new_det_inds"], where
        assert plan.new_obj_ids == rec["new_obj_ids"], where
        assert a.unmatched_trk_ids == rec["unmatched"], where
        assert a.empty_trk_ids == rec["empty"], where
        assert [[d, ids] for d, ids in a.det_to_trk_ids.items()] == rec["det_to_trk"], where
        assert [[k, v] for k, v in a.high_conf_pairs.items()] == rec["high_conf"], where
        assert plan.removed_obj_ids == rec["removed"], where
        assert plan.num_dropped == rec["dropped"], where
        assert sorted(plan.recondition) == sorted(i for ids in rec["recondition"] for i in ids)
        assert plan.suppressed_obj_ids == rec["occl_suppressed"], where
        assert torch.equal(plan.trk_masks, final), where
        assert plan.unconfirmed_obj_ids == rec["unconfirmed"], where
        assert _snapshot(plan.metadata, rec["frame"]) == rec["meta"], where
        assert [ids for ids in rec["births"]] == ([plan.new_obj_ids] if plan.new_obj_ids else [])

        # Memory update: score logits and shrink decisions per object.
        if nt > 0:
            masks, score_logits = prepare_memory_update(plan.trk_masks, mem_size)
            interp = torch.nn.functional.interpolate(
                plan.trk_masks[:, None],
                size=(mem_size, mem_size),
                mode="bilinear",
                align_corners=False,
            )
            shrunk = (masks != interp).flatten(1).any(dim=1).tolist()
            ours = {
                i: [s, k] for i, s, k in zip(prev_ids, score_logits.reshape(-1).tolist(), shrunk)
            }
            assert {i: [s, k] for i, s, k in rec["mem"]} == ours, where
        else:
            assert rec["mem"] == [], where

        # The frame's masks (unfiltered), as the official build_outputs.
        frame_masks = build_frame_masks(
            plan.trk_masks,
            prev_ids,
            q_masks,
            plan.new_det_inds,
            plan.new_obj_ids,
            video_size,
            h.fill_hole_area,
        )
        n_out = len(rec["frame_mask_ids"])
        expected = frame_masks_all[of : of + n_out]
        of += n_out
        assert list(frame_masks) == rec["frame_mask_ids"], where
        for k, obj_id in enumerate(rec["frame_mask_ids"]):
            assert torch.equal(frame_masks[obj_id][0], expected[k]), (where, obj_id)
        results.append(
            (
                rec["frame"],
                rec["reverse"],
                frame_masks,
                dict(plan.metadata.obj_id_to_score),
                plan.metadata.frame_tracker_scores(rec["frame"]),
                plan.unconfirmed_obj_ids,
            )
        )
        seen["births"] += len(plan.new_obj_ids)
        seen["removed"] += len(plan.removed_obj_ids)
        seen["recondition"] += len(plan.recondition)
        seen["ambiguous"] += len(a.ambiguous_det_inds) + len(a.ambiguous_trk_ids)
        seen["dropped"] += plan.num_dropped
        meta = plan.metadata

    # Yields: hotstart buffer, confirmation look-ahead within one pass, outputs.
    yields = spec["yields"]
    order = []  # (pass, frame, step) in yield order, emulating the official generator
    for k, (pass_name, first, end) in enumerate(passes):
        last = passes[k + 1][1] if k + 1 < len(passes) else len(steps)
        if pass_name == "prompt":
            order.append((pass_name, 0))
            continue
        buffer = []
        for s in range(first, last):
            buffer.append(s)
            if results[s][0] == end:
                order += [(pass_name, b) for b in buffer]
                buffer = []
            elif len(buffer) >= max(h.hotstart_delay, 1):
                order.append((pass_name, buffer.pop(0)))
    assert [(p, results[s][0]) for p, s in order] == [(y["pass"], y["frame"]) for y in yields]
    ob = 0
    num_frames = spec["num_frames"]
    for (pass_name, s), y in zip(order, yields):
        frame, reverse, masks, scores, trk_scores, _ = results[s]
        hidden = frozenset()
        if pass_name != "prompt":
            table = {
                results[u][0]: results[u][5]
                for u in range(len(results))
                if _pass_of(passes, u, len(steps)) == pass_name
            }
            hidden = hidden_ids31(frame, reverse, num_frames, table, h)
        out = postprocess_frame(masks, scores, trk_scores, video_size, hidden)
        present = {i for i, m in masks.items() if m.any()}
        seen["hidden"] += len(hidden & present)
        later = {i for _, _, _, sc, _, _ in results for i, v in sc.items() if v == -1e4}
        seen["shown_then_removed"] += len(set(out.obj_ids.tolist()) & later)
        n = len(y["out_ids"])
        where = f"{name} yield {pass_name} frame {frame}"
        assert out.obj_ids.tolist() == y["out_ids"], where
        assert torch.equal(out.probs, t["out_probs"][ob : ob + n]), where
        assert torch.equal(out.boxes_xywh, t["out_boxes"][ob : ob + n]), where
        assert torch.equal(out.masks, out_masks_all[ob : ob + n]), where
        ob += n
    return seen


def _pass_of(passes, step: int, num_steps: int) -> str:
    for k, (name, first, _) in enumerate(passes):
        last = passes[k + 1][1] if k + 1 < len(passes) else num_steps
        if first <= step < last:
            return name
    raise AssertionError(step)


@pytest.mark.parametrize(
    "file,name", [(f, n) for f, names in SCENARIO_FILES.items() for n in names]
)
def test_scenario_matches_official(scenario_files, file, name):
    seen = _play(scenario_files[file], name)
    cov = scenario_files[file]["meta"]["scenarios"][name]["coverage"]
    assert seen["births"] == cov["births"] and seen["removed"] == cov["removals"]
    assert seen["dropped"] == cov["dropped"]


def test_scenarios_exercise_the_rules(scenario_files):
    """The recorded sessions hit every rule at least once (else parity proves little)."""
    total: dict[str, int] = {}
    for file, fx in scenario_files.items():
        assert sorted(fx["meta"]["scenarios"]) == sorted(SCENARIO_FILES[file])  # all replayed
        for spec in fx["meta"]["scenarios"].values():
            for k, v in spec["coverage"].items():
                total[k] = total.get(k, 0) + v
    for key in (
        "births",
        "removals",
        "dropped",
        "recondition",
        "occlusion",
        "unmatched",
        "empty",
        "multi",
        "pairs",
        "border_births",
        "unconfirmed",
        "confirmed",
    ):
        assert total[key] > 0, key
    # Outputs: the look-ahead hides objects, and objects removed later stay visible before.
    seen = _play(scenario_files["planner31_scenarios_a"], "default")
    assert seen["hidden"] > 0 and seen["shown_then_removed"] > 0 and seen["ambiguous"] > 0


# ----------------------------------------------------------------------------------------------
# Hand-made cases
# ----------------------------------------------------------------------------------------------
def test_mask_iom_matches_official(ops_fx):
    out = mask_iom(ops_fx["iom_a"], ops_fx["iom_b"])
    assert torch.equal(out, ops_fx["iom_out"])
    assert out[0].eq(0).all() and out[:, 1].eq(0).all()  # empty masks


@pytest.mark.parametrize("use_iom", [True, False])
@pytest.mark.parametrize("thr", [0.1, 0.5])
def test_nms_matches_official(ops_fx, use_iom, thr):
    probs, masks = ops_fx["nms_probs"], ops_fx["nms_masks"]
    expected = ops_fx[f"nms_{'iom' if use_iom else 'iou'}_{thr}"]
    for row in range(probs.shape[0]):
        assert torch.equal(nms_keep31(probs[row], masks[row], 0.4, thr, use_iom), expected[row])


@pytest.mark.parametrize("mode", ["iom", "iou"])
@pytest.mark.parametrize("suffix", ["", "_notrk"])
def test_association_hand_cases(ops_fx, mode, suffix):
    h = VideoHeuristics31(use_iom=mode == "iom")
    trk = ops_fx["assoc_trk"] if not suffix else ops_fx["assoc_trk"][:0]
    ids = list(range(10, 10 + trk.shape[0]))
    a = associate31(ops_fx["assoc_det"], ops_fx["assoc_scores"], ops_fx["assoc_keep"], trk, ids, h)
    key = f"assoc_{mode}{suffix}"
    assert a.new_det_inds == ops_fx[f"{key}_new"].tolist()
    assert a.unmatched_trk_ids == ops_fx[f"{key}_unmatched"].tolist()
    assert a.empty_trk_ids == ops_fx[f"{key}_empty"].tolist()
    assert [[d, o] for d, v in a.det_to_trk_ids.items() for o in v] == ops_fx[
        f"{key}_links"
    ].tolist()
    assert [[k, v] for k, v in a.high_conf_pairs.items()] == ops_fx[f"{key}_pairs"].tolist()
    matched = [i for i, m in zip(ids, ops_fx[f"{key}_matched"].tolist()) if m]
    assert a.matched_trk_ids == matched
    if not suffix and mode == "iom":
        # The case is built so the rule bites: a query covering two tracks, a track covered
        # by two queries; the ambiguous tracks stay "matched" for the unmatched counter.
        assert a.ambiguous_det_inds and a.ambiguous_trk_ids
        assert not set(a.ambiguous_trk_ids) & set(a.unmatched_trk_ids)
    if suffix:
        # No track: a non-kept query above the birth threshold is born (official regression).
        keep = ops_fx["assoc_keep"]
        assert any(not keep[d] for d in a.new_det_inds)


def test_border_rule_matches_official(ops_fx):
    boxes = ops_fx["border_boxes"]
    h = VideoHeuristics31(det_nms_thresh=0.0)
    logits = torch.full((boxes.shape[0],), 3.0)
    _, keep = select_detections31(logits, torch.ones(boxes.shape[0], 4, 4), boxes, h)
    assert torch.equal(keep, ops_fx["border_keep"])


# ----------------------------------------------------------------------------------------------
# Rules that need no official run
# ----------------------------------------------------------------------------------------------
def test_heuristics_preset_values():
    h = VideoHeuristics31()
    assert (h.score_threshold_detection, h.new_det_thresh, h.max_num_objects) == (0.4, 0.65, 16)
    assert h.det_nms_use_iom and h.use_iom and h.suppress_det_close_to_boundary
    assert h.recondition_thresh == 0.5
    assert VideoHeuristics31(use_iom=False).recondition_thresh == 0.8
    assert VideoHeuristics31(max_num_objects=0).max_num_objects == 10000


def test_confirmation_look_ahead():
    h = VideoHeuristics31()
    assert unconfirmed_status_frame(5, False, 10, h) == 7
    assert unconfirmed_status_frame(9, False, 10, h) == 9
    assert unconfirmed_status_frame(1, True, 10, h) == 0
    table = {7: [3, 4]}
    assert hidden_ids31(5, False, 10, table, h) == {3, 4}
    assert hidden_ids31(6, False, 10, table, h) == frozenset()  # frame 8 not processed
    assert (
        hidden_ids31(
            5,
            False,
            10,
            table,
            VideoHeuristics31(hotstart_delay=0, hotstart_unmatch_thresh=0, hotstart_dup_thresh=0),
        )
        == frozenset()
    )


def test_click_unconfirms_existing_object():
    h = VideoHeuristics31()
    meta = TrackerMetadata31(obj_ids=[3], max_obj_id=3, confirmed={3}, det_streak={3: 5})
    assert register_click31(meta, 3, 0, h) is False
    assert 3 not in meta.confirmed and meta.det_streak[3] == 3
    assert register_click31(meta, 8, 0, h) is True and 8 not in meta.det_streak


def test_clicked_objects_in_hotstart_follow_sam3_choice():
    """Objects without a birth frame (clicks; the official asserts here): never removed by
    hotstart, and the earlier object of every pair, so a later-born duplicate is removed."""
    h = VideoHeuristics31(hotstart_dup_thresh=2)  # unmatched counts stay below 8
    meta = TrackerMetadata31(obj_ids=[5, 6], max_obj_id=6, first_frame={6: 3})
    trk = torch.full((2, 4, 10), -1.0)
    trk[0, 0, :] = 1.0  # clicked object 5: row 0
    trk[1, 0, :5] = 1.0  # object 6: half of row 0
    keep, score, logits = torch.tensor([True]), torch.tensor([0.9]), torch.zeros(2)
    det = torch.full((1, 4, 10), -1.0)
    det[0, :2, :] = 1.0  # IoM 1 with both tracks: ambiguous, neither matched, no pair
    plan = plan_frame31(det, score, keep, trk, logits, meta, 4, heuristics=h)
    assert plan.association.ambiguous_det_inds == [0] and plan.metadata.duplicate_count == {}
    det[0, :2, :] = -1.0
    det[0, 0, 4:] = 1.0  # IoM 1 with 5 and 1/5 with 6: not ambiguous, pair (5, 6) counted
    plan = plan_frame31(det, score, keep, trk, logits, plan.metadata, 5, heuristics=h)
    assert plan.metadata.duplicate_count == {(5, 6): 1} and plan.removed_obj_ids == []
    plan = plan_frame31(det, score, keep, trk, logits, plan.metadata, 6, heuristics=h)
    assert plan.removed_obj_ids == [6]  # the clicked object is the earlier one
    assert plan.metadata.obj_ids == [5] and plan.metadata.duplicate_count == {}
    assert meta.duplicate_count == {}  # the input metadata is not changed


def test_plan_rejects_sam3_metadata():
    from sam3video.video.metadata import TrackerMetadata

    with pytest.raises(InvalidInputError, match="TrackerMetadata31"):
        plan_frame31(
            torch.zeros(0, 4, 4),
            torch.zeros(0),
            torch.zeros(0, dtype=torch.bool),
            torch.zeros(0, 4, 4),
            torch.zeros(0),
            TrackerMetadata(),
            0,
        )
