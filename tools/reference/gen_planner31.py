"""Parity fixtures for the SAM 3.1 video planner, from the OFFICIAL 3.1 code (release 9f22cb9).

Run from the repository root with the 3.1 reference interpreter::

    ~/.cache/sam3-reference-31/bin/python tools/reference/gen_planner31.py

The official ``Sam3MultiplexTracking`` (built with the 3.1 builder's video settings,
``official_builders_31.VIDEO_DEFAULTS_31``) gets a stand-in detector and a recording stand-in
tracker (no network runs). Three of its methods are replaced by synthetic sources:
``run_backbone_and_detection`` (queries of a synthetic world through the OFFICIAL ``nms_masks``
and the official border rule, as the real method does after the detector),
``run_tracker_propagation`` (tracks of the synthetic world) and nothing else: the official
``_run_single_frame_inference`` (add_prompt's frame), ``propagate_in_video`` (forward from the
prompt frame, then backward: hotstart buffer, confirmation look-ahead, batched outputs),
``_det_track_one_frame`` (kept-first sort), the planning phase, the execution phase (best-fit
placement, removal, on stand-in states) and ``build_outputs`` all run as released.

The world: moving discs seen by the detector as queries (all queries, sometimes halves, partial
duplicates for the IoM NMS, blobs, some at the image border, low-score junk) with scores around
0.4 / 0.5 / 0.65 / 0.8, and tracks that follow what gave them birth (sometimes empty, sometimes
shifted) with object-score logits around sigmoid 0.8. Logits are int8 x 0.5.

Writes ``tests/fixtures/planner31_scenarios.pt`` (per processing step: the queries, the
official post-NMS scores and keep mask, tracks, plan, metadata, final track logits, frame masks;
per pass: the yielded outputs) and ``planner31_ops.pt`` (NMS, IoM and association on hand-made
cases).
"""

from __future__ import annotations

from types import SimpleNamespace

import _common31  # noqa: F401  (first: 3.1 overlay on sys.path, CPU patches)
import numpy as np
import torch
from _common import guard_empty_connected_components, save_fixture
from gen_planner import World, boxes_of, packbits
from official_builders_31 import VIDEO_DEFAULTS_31
from sam3.model.sam3_multiplex_base import Sam3MultiplexTrackerPredictor
from sam3.model.sam3_multiplex_detector import Sam3MultiplexDetector
from sam3.model.sam3_multiplex_detector_utils import nms_masks
from sam3.model.sam3_multiplex_tracking import Sam3MultiplexTracking
from sam3.model.sam3_video_base import realize_adt_result
from sam3.model.video_tracking_multiplex_demo import Sam3VideoTrackingMultiplexDemo
from sam3.train.masks_ops import mask_iom as official_mask_iom
from torch import nn

guard_empty_connected_components()

_NOT_HEURISTICS = set(
    "image_mean image_std compile_model postprocess_batch_size use_batched_grounding "
    "batched_grounding_batch_size max_num_kboxes sprinkle_removal_area is_multiplex "
    "reconstruction_bbox_iou_thresh reconstruction_bbox_det_score".split()
)
DEFAULTS = dict(VIDEO_DEFAULTS_31)
SCORES = [0.3, 0.4, 0.41, 0.5, 0.6, 0.65, 0.66, 0.7, 0.79, 0.8, 0.81, 0.9, 0.97]
TRK_LOGITS = [-3.0, 0.0, 0.5, 1.2, 1.386, 1.39, 2.0, 4.0]
MEM_SIZE = 32  # memory-encoder input size of the stand-in tracker (1152 in the real model)
VIDEO_SIZE = (30, 40)
CAPACITY = 16  # slots per bucket


class ScriptedDuplicates:
    """Hand-written frames on 4 x 10 maps: objects 0 and 1 born on frame 0 (rows 0 and 1),
    object 2 on frame 1 (row 2). From frame 1 (2 for F) on, query D (row 0 + one pixel of
    row 1) matches object 0 strongly and object 1 at IoM exactly 0.1, query F (row 2 + one
    pixel of row 1) matches 2 strongly and 1 at 0.1, query E matches 1: every frame counts
    the pairs (0, 1) and (1, 2); no ambiguity, and D, F survive the IoM NMS at 0.1."""

    def __init__(self) -> None:
        self.calls = 0

    def queries(self, frame: int, size: int, num: int):
        self.calls += 1
        full = lambda r: (r, 0, 10)  # noqa: E731
        if self.calls == 1:  # add_prompt's frame 0
            spec, srcs = [full(0), full(1)], [("row", 0), ("row", 1)]
        elif frame == 0:
            spec, srcs = [full(0), full(1)], [("row", 0), ("row", 1)]
        else:
            spec, srcs = [full(0), full(1), full(2)], [("row", 0), ("row", 1), ("row", 2)]
        masks = rows(spec)
        if frame >= 1 and self.calls > 1:
            masks[0, 1, 0] = 1.0  # D: one pixel of row 1
        if frame >= 2 and self.calls > 1:
            masks[2, 1, 9] = 1.0  # F: one pixel of row 1 (not on object 2's birth frame)
        scores = [0.9] * len(spec)
        while masks.shape[0] < num:
            masks = torch.cat([masks, -torch.ones(1, 4, 10)])
            scores.append(0.1)
            srcs.append(None)
        probs = torch.tensor(scores, dtype=torch.float32)
        return (
            (masks * 2).to(torch.int8),
            torch.log(probs / (1 - probs)),
            boxes_of(masks > 0),
            srcs,
        )

    def tracks(self, frame, size, sources):
        if not sources:
            return torch.zeros(0, 4, 10, dtype=torch.int8), torch.zeros(0)
        masks = rows([(src[1], 0, 10) for src in sources])
        return (masks * 2).to(torch.int8), torch.full((len(sources),), 4.0)


SCENARIOS = {
    "default": dict(heur=DEFAULTS, size=16, queries=16, prompt=10, frames=40, entities=5, seed=1),
    "crowd": dict(
        heur=DEFAULTS,
        size=16,
        queries=28,
        prompt=3,
        frames=14,
        entities=22,
        seed=2,
        radius=0.07,
        continuous=True,
    ),
    "short": dict(
        heur=dict(
            DEFAULTS,
            hotstart_delay=6,
            hotstart_unmatch_thresh=3,
            hotstart_dup_thresh=2,
            recondition_every_nth_frame=4,
            decrease_trk_keep_alive_for_empty_masklets=True,
            max_num_objects=24,
        ),
        size=16,
        queries=18,
        prompt=8,
        frames=30,
        entities=6,
        seed=3,
        shift=0.25,
        border_first=True,
    ),
    "iou": dict(
        heur=dict(
            DEFAULTS,
            use_iom_recondition=False,
            det_nms_use_iom=False,
            iou_thresh_recondition=0.8,
            suppress_det_close_to_boundary=False,
            hotstart_delay=5,
            hotstart_unmatch_thresh=2,
            hotstart_dup_thresh=2,
            recondition_every_nth_frame=3,
            masklet_confirmation_consecutive_det_thresh=2,
        ),
        size=16,
        queries=16,
        prompt=4,
        frames=20,
        entities=5,
        seed=4,
        shift=0.25,
    ),
    "no_delay": dict(
        heur=dict(DEFAULTS, hotstart_delay=0, hotstart_unmatch_thresh=0, hotstart_dup_thresh=0),
        size=16,
        queries=16,
        prompt=2,
        frames=12,
        entities=4,
        seed=5,
        border_first=True,
    ),
    "image": dict(
        heur=dict(DEFAULTS, max_num_objects=2),
        size=16,
        queries=16,
        prompt=0,
        frames=1,
        entities=5,
        seed=6,
        image=True,
    ),
    "sizes": dict(
        heur=dict(DEFAULTS, recondition_every_nth_frame=0),
        size=16,
        trk_size=20,
        queries=16,
        prompt=3,
        frames=16,
        entities=5,
        seed=7,
    ),
    "duplicates": dict(
        heur=DEFAULTS, size=10, queries=6, prompt=0, frames=12, world=ScriptedDuplicates
    ),
}


# ----------------------------------------------------------------------------------------------
# Stand-ins
# ----------------------------------------------------------------------------------------------
SHELL = object.__new__(Sam3VideoTrackingMultiplexDemo)  # for its pure mask methods
PAD, REMOVED = -1, -1116


class FakeMux:
    """Slot bookkeeping with the official rules that the planner can see (free slots, buckets)."""

    def __init__(self) -> None:
        self.buckets: list[list[int]] = []

    @property
    def available_slots(self) -> int:
        return sum(s == PAD for b in self.buckets for s in b)

    @property
    def total_valid_entries(self) -> int:
        return sum(s == 1 for b in self.buckets for s in b)

    @property
    def num_buckets(self) -> int:
        return len(self.buckets)

    def add(self, n: int) -> None:
        free = [
            (b, s)
            for b in range(len(self.buckets))
            for s in range(CAPACITY)
            if self.buckets[b][s] == PAD
        ]
        for b, s in free[:n]:
            self.buckets[b][s] = 1
        for _ in range(max(n - len(free), 0)):
            if not self.buckets or all(x != PAD for x in self.buckets[-1]):
                self.buckets.append([PAD] * CAPACITY)
            b = self.buckets[-1]
            b[b.index(PAD)] = 1

    def remove(self, slots: list[tuple[int, int]]) -> None:
        for b, s in slots:
            self.buckets[b][s] = REMOVED
        self.buckets = [b for b in self.buckets if any(x == 1 for x in b)]


class RecordingTracker(Sam3MultiplexTrackerPredictor):
    """Answers the calls that the official planning and execution make on ``self.tracker``."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.model = nn.Module()
        self.is_multiplex = True
        self.is_multiplex_dynamic = True
        self.per_obj_inference = False
        self.multiplex_controller = SimpleNamespace(
            allowed_bucket_capacity=CAPACITY, training=False
        )
        self.input_mask_size = MEM_SIZE
        self.maskmem_backbone = SimpleNamespace(
            mask_downsampler=SimpleNamespace(interpol_size=(MEM_SIZE, MEM_SIZE))
        )
        self.object_score_logit_threshold = 0.0
        self.reset()

    def reset(self) -> None:
        self.recondition_calls = []  # per state: (obj_ids, mask areas)
        self.births = []  # (state index, obj_ids)
        self.memory_calls = []

    def init_state(self, **kw):
        return {
            "obj_ids": [],
            "obj_idx_to_id": {},
            "multiplex_state": FakeMux(),
            "output_dict": {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
            "slots": {},
        }

    def add_new_masks(self, inference_state, frame_idx, obj_ids, masks, reconditioning=False, **kw):
        ids = [int(i) for i in obj_ids]
        if reconditioning:
            self.recondition_calls.append((ids, [int(m.sum()) for m in masks]))
            return
        mux = inference_state["multiplex_state"]
        before = {
            (b, s)
            for b in range(mux.num_buckets)
            for s in range(CAPACITY)
            if mux.buckets[b][s] == 1
        }
        mux.add(len(ids))
        after = sorted(
            (b, s)
            for b in range(mux.num_buckets)
            for s in range(CAPACITY)
            if mux.buckets[b][s] == 1 and (b, s) not in before
        )
        for i, slot in zip(ids, after):
            inference_state["slots"][i] = slot
        inference_state["obj_ids"].extend(ids)
        inference_state["obj_idx_to_id"] = dict(enumerate(inference_state["obj_ids"]))
        self.births.append((id(inference_state), ids, [int(m.sum()) for m in masks]))

    def propagate_in_video_preflight(self, inference_state, run_mem_encoder=True):
        pass

    def remove_objects(self, inference_state, obj_ids, strict=False, need_output=False):
        gone = [int(i) for i in obj_ids if int(i) in inference_state["obj_ids"]]
        if gone:
            inference_state["multiplex_state"].remove(
                [inference_state["slots"].pop(i) for i in gone]
            )
            inference_state["obj_ids"] = [i for i in inference_state["obj_ids"] if i not in gone]
            inference_state["obj_idx_to_id"] = dict(enumerate(inference_state["obj_ids"]))
        return inference_state["obj_ids"], None

    def _run_memory_encoder(self, state, frame_idx, bs, masks, scores, is_mask_from_pts):
        self.memory_calls.append((sorted(state["obj_ids"]), masks.clone(), scores.clone()))
        z = torch.zeros(1)
        return z, [z], z, z

    def add_output_per_object(self, **kw):
        pass

    def _suppress_object_pw_area_shrinkage(self, masks):
        return Sam3VideoTrackingMultiplexDemo._suppress_object_pw_area_shrinkage(masks)

    def _apply_object_wise_non_overlapping_constraints(self, masks, scores, background_value):
        return Sam3VideoTrackingMultiplexDemo._apply_object_wise_non_overlapping_constraints(
            SHELL, masks, scores, background_value=background_value
        )


class StandInDetector(Sam3MultiplexDetector):
    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.is_multiplex = True


def build_model(heur: dict) -> Sam3MultiplexTracking:
    return Sam3MultiplexTracking(tracker=RecordingTracker(), detector=StandInDetector(), **heur)


# ----------------------------------------------------------------------------------------------
# Synthetic world: all queries of a frame
# ----------------------------------------------------------------------------------------------
class World31(World):
    def __init__(self, spec: dict) -> None:
        super().__init__(spec["entities"], spec["seed"])
        if "radius" in spec:
            self.radius = torch.full_like(self.radius, spec["radius"])
        self.continuous = spec.get("continuous", False)
        self.shift = spec.get("shift", 0.0)
        self.force_border = spec.get("border_first", False)
        self.edge_blobs: set[int] = set()

    def score(self) -> float:
        if self.continuous or self.rand(1) < 0.3:
            return float(0.42 + 0.57 * self.rand(1))
        return self.choice(SCORES)

    def queries(self, frame: int, size: int, num: int):
        """int8 mask logits (Q, s, s), score logits (Q,), xyxy boxes, sources (Q,)."""
        masks, scores, sources = [], [], []
        for e in range(self.num_entities):
            if self.rand(1) > 0.8:
                continue
            parts = ["left", "right"] if self.rand(1) < 0.15 else ["full"]
            if parts == ["full"] and self.rand(1) < 0.2:
                parts.append(self.choice(["left", "right"]))  # a part: IoM 1 with the whole
            for part in parts:
                src = ("entity", e, part)
                masks.append(self.logits(self.source_mask(src, size, frame, 0.03), flips=0.01))
                scores.append(self.score())
                sources.append(src)
        if self.rand(1) < 0.4 or self.force_border:
            key = len(self.blobs)
            u = self.rand(3)
            # a blob whose (predicted) box centre is at the left edge: dropped by the border rule
            edge = bool(self.rand(1) < 0.5) or self.force_border
            cx = 0.05 if edge else float(0.1 + 0.8 * u[0])
            self.blobs[key] = (cx, float(0.1 + 0.8 * u[1]), 0.12)
            if edge:
                self.edge_blobs.add(key)
            src = ("blob", key, "full")
            masks.insert(0, self.logits(self.source_mask(src, size, frame)))
            scores.insert(0, 0.9 if self.force_border else self.choice([0.5, 0.7, 0.9]))
            sources.insert(0, src)
            self.force_border = False
        masks, scores, sources = masks[:num], scores[:num], sources[:num]
        while len(masks) < num:  # junk queries: small blobs or nothing, low scores
            u = self.rand(3)
            inside = self.disc(size, float(u[0]), float(u[1]), 0.1)
            masks.append(self.logits(inside, empty=bool(self.rand(1) < 0.5)))
            scores.append(float(0.05 + 0.3 * self.rand(1)))
            sources.append(None)
        order = torch.randperm(num, generator=self.g).tolist()
        masks = torch.stack([masks[i] for i in order])
        probs = torch.tensor([scores[i] for i in order], dtype=torch.float32)
        logits = torch.log(probs / (1 - probs))
        sources = [sources[i] for i in order]
        boxes = boxes_of(masks > 0)
        for k, src in enumerate(sources):
            if src is not None and src[0] == "blob" and src[1] in self.edge_blobs:
                cy = self.blobs[src[1]][1]
                boxes[k] = torch.tensor([0.0, cy - 0.1, 0.04, cy + 0.1])
        return masks, logits, boxes, sources

    def tracks(self, frame, size, sources):
        masks, logits = [], []
        for src in sources:
            empty = bool(self.rand(1) < 0.1)
            jitter = self.choice([0.0, 0.03, 0.03, self.shift or 0.03])
            masks.append(self.logits(self.source_mask(src, size, frame, jitter), empty))
            logits.append(self.choice(TRK_LOGITS))
        if not masks:
            return torch.zeros(0, size, size, dtype=torch.int8), torch.zeros(0)
        return torch.stack(masks), torch.tensor(logits, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# Recording
# ----------------------------------------------------------------------------------------------
def ints(values) -> list[int]:
    return [int(v) for v in values]


def snapshot(meta: dict, frame: int) -> dict:
    ids = ints(meta["obj_ids_all_gpu"])
    g = meta["gpu_metadata"]
    n = int(g.get("N_obj", 0))
    assert n == len(ids), (n, ids)
    per = {}
    for key, name in [
        ("obj_first_frame", "first_frame"),
        ("consecutive_unmatch_count", "unmatched_count"),
        ("trk_keep_alive", "keep_alive"),
        ("last_occluded_tensor", "last_occluded"),
    ]:
        per[name] = sorted(zip(ids, ints(g[key]))) if n else []
    pairs = []
    if n:
        counts = g["overlap_pair_counts"]
        for i, j in counts.nonzero().tolist():
            pairs.append((ids[i], ids[j], int(counts[i, j])))
    r0 = meta["rank0_metadata"]
    conf = r0.get("masklet_confirmation")
    return {
        "obj_ids": ids,
        "max_obj_id": int(meta["max_obj_id"]),
        "obj_id_to_score": sorted((int(k), float(v)) for k, v in meta["obj_id_to_score"].items()),
        "frame_scores": sorted(
            (int(k), float(v))
            for k, v in meta["obj_id_to_sam2_score_frame_wise"].get(frame, {}).items()
        ),
        **per,
        "duplicate_count": sorted(pairs),
        "removed_ids": sorted(ints(r0["removed_obj_ids"])),
        "suppressed": sorted(ints(r0["suppressed_obj_ids"].get(frame, set()))),
        "det_streak": sorted(zip(ids, ints(conf["consecutive_det_num"]))) if conf else [],
        "confirmed": sorted(i for i, s in zip(ids, ints(conf["status"])) if s == 2) if conf else [],
    }


def half_int8(x: torch.Tensor) -> torch.Tensor:
    """Logits that are multiples of 0.5 in [-63.5, 63.5] stored exactly as int8 (x 2)."""
    y = (x * 2).round()
    assert torch.equal(y / 2, x) and y.abs().max() <= 127 if y.numel() else True
    return y.to(torch.int8)


def run_scenario(name: str, spec: dict):
    model = build_model(spec["heur"])
    tracker: RecordingTracker = model.tracker
    world = spec["world"]() if "world" in spec else World31(spec)
    size, num_q = spec["size"], spec["queries"]
    num_frames, prompt, image = spec["frames"], spec["prompt"], spec.get("image", False)
    steps: list[dict] = []
    series: dict[str, list[torch.Tensor]] = {}
    sources: dict[int, tuple] = {}
    cur: dict = {}

    def add(kind, value):
        series.setdefault(kind, []).append(value)

    def detection(frame_idx, **kw):
        masks_i8, logits, boxes, srcs = world.queries(frame_idx, size, num_q)
        masks = masks_i8.float() * 0.5
        keep_nms = nms_masks(
            pred_probs=logits.sigmoid()[None],
            pred_masks=masks[None],
            prob_threshold=model.score_threshold_detection,
            iou_threshold=model.det_nms_thresh,
            nms_use_iom=model.det_nms_use_iom,
        )[0]
        shifted = logits - 1e4 * (~keep_nms).float()
        probs = shifted.sigmoid()
        pos = probs > model.score_threshold_detection
        if model.suppress_det_close_to_boundary:
            pos = pos & model._suppress_detections_close_to_boundary(boxes)
        cur.update(perm=pos.argsort(descending=True), sources=srcs, probs=probs, pos=pos)
        add("q_masks", masks_i8)
        add("q_logits", logits)
        add("q_boxes", boxes)
        add("q_probs", probs)
        add("q_keep", pos)
        det_out = {"bbox": boxes[None], "mask": masks[None], "scores": probs[None]}
        return det_out, pos[None]

    def propagation(frame_idx, num_frames, reverse, tracker_states_local, tracker_metadata_prev):
        ids = ints(tracker_metadata_prev["obj_ids_all_gpu"])
        trk_size = spec.get("trk_size", size)
        trk_i8, logits = world.tracks(frame_idx, trk_size, [sources[i] for i in ids])
        cur["work"] = trk_i8.float() * 0.5
        cur["num_trk"] = len(ids)
        add("trk_masks", trk_i8)
        add("trk_logits", logits)
        return cur["work"], logits

    model.run_backbone_and_detection = detection
    model.run_tracker_propagation = propagation
    plan_fn, assoc_fn = model.run_tracker_update_planning_phase, model._associate_det_trk
    occl_fn = model._get_objects_to_suppress_based_on_most_recently_occluded

    def planning(**kw):
        assert torch.equal(kw["det_out"]["scores"], cur["probs"][cur["perm"]])
        plan, meta_new = plan_fn(**kw)
        cur["plan"] = plan
        return plan, meta_new

    def associate(**kw):
        out = assoc_fn(**kw)
        cur["nonempty"] = out.trk_is_nonempty.tolist()
        return out

    def occlusion(*args, **kw):
        out = occl_fn(*args, **kw)
        cur["occl"] = out.tolist()
        return out

    model.run_tracker_update_planning_phase = planning
    model._associate_det_trk = associate
    model._get_objects_to_suppress_based_on_most_recently_occluded = occlusion

    det_track = model._det_track_one_frame

    def det_track_one_frame(**kw):
        frame, reverse = kw["frame_idx"], kw["reverse"]
        tracker.reset()
        cur.clear()
        prev_ids = ints(kw["tracker_metadata_prev"].get("obj_ids_all_gpu", []))
        out = det_track(**kw)
        obj_id_to_mask, _, _, meta_new, _, _ = out
        plan, perm = cur["plan"], cur["perm"].tolist()
        q = lambda d: perm[int(d)]  # noqa: E731  official (kept-first) index -> query index
        new_ids = ints(plan["new_det_obj_ids"])
        for obj_id, d in zip(new_ids, ints(plan["new_det_fa_inds"])):
            sources[obj_id] = cur["sources"][q(d)]
        empty = [i for i, ne in zip(prev_ids, cur.get("nonempty", [])) if not ne]
        work = cur["work"]
        interp = torch.nn.functional.interpolate(
            work[:, None], size=(MEM_SIZE, MEM_SIZE), mode="bilinear", align_corners=False
        )
        pos_of = {i: k for k, i in enumerate(prev_ids)}
        mem = []  # (obj_id, memory score logit, shrunk) in call order
        for ids_, masks_, scores_ in tracker.memory_calls:
            for i, m, sc in zip(ids_, masks_, scores_.reshape(-1).tolist()):
                ref = interp[pos_of[i]]
                shrunk = not torch.equal(m, ref)
                if shrunk:
                    assert torch.equal(m, ref.clamp(max=-10.0))
                mem.append([i, sc, shrunk])
        add("trk_final", half_int8(work))
        ids = ints(obj_id_to_mask)
        add(
            "frame_masks",
            torch.cat([obj_id_to_mask[i] for i in ids])
            if ids
            else torch.zeros(0, *VIDEO_SIZE, dtype=torch.bool),
        )
        status = meta_new["rank0_metadata"].get("masklet_confirmation")
        steps.append(
            {
                "frame": frame,
                "reverse": reverse,
                "image": image,
                "num_q": num_q,
                "num_trk": len(prev_ids),
                "new_det_inds": [q(d) for d in plan["new_det_fa_inds"]],
                "new_obj_ids": new_ids,
                "unmatched": ints(plan["unmatched_trk_obj_ids"]),
                "empty": empty,
                "det_to_trk": [
                    [q(d), ints(v)] for d, v in plan["det_to_matched_trk_obj_ids"].items()
                ],
                "high_conf": [
                    [int(k), q(v)] for k, v in plan["trk_id_to_max_iou_high_conf_det"].items()
                ],
                "removed": sorted(ints(plan["obj_ids_newly_removed"])),
                "dropped": int(plan["num_obj_dropped_due_to_limit"]),
                "recondition": [ids_ for ids_, _ in tracker.recondition_calls],
                "births": [ids_ for _, ids_, _ in tracker.births],
                "occl_suppressed": [i for i, s in zip(prev_ids, cur.get("occl", [])) if s],
                "mem": mem,
                "border_births": sum(not bool(cur["pos"][q(d)]) for d in plan["new_det_fa_inds"]),
                "frame_mask_ids": ids,
                "unconfirmed": []
                if status is None
                else [
                    i
                    for i, s in zip(ints(meta_new["obj_ids_all_gpu"]), ints(status["status"]))
                    if s == 1
                ],
                "meta": snapshot(meta_new, frame),
            }
        )
        return out

    model._det_track_one_frame = det_track_one_frame

    state = dict(
        input_batch=SimpleNamespace(find_text_batch=["thing"]), sam2_inference_states=[],
        tracker_metadata={}, feature_cache={}, per_frame_geometric_prompt=[None] * num_frames,
        constants={"empty_geometric_prompt": None}, previous_stages_out=[None] * num_frames,
        backbone_out={"language_features": None, "language_mask": None}, num_frames=num_frames,
        orig_height=VIDEO_SIZE[0], orig_width=VIDEO_SIZE[1], is_image_only=image,
        cached_frame_outputs={},
    )  # fmt: skip
    yields = []

    def record_yield(pass_name, frame, out):
        yields.append({"pass": pass_name, "frame": int(frame), "out_ids": ints(out["out_obj_ids"])})
        add("out_masks", torch.from_numpy(out["out_binary_masks"]))
        add("out_boxes", torch.from_numpy(out["out_boxes_xywh"]).float())
        add("out_probs", torch.from_numpy(np.asarray(out["out_probs"], dtype=np.float32)))

    # add_prompt's frame: one inference, outputs without any hiding.
    out = model._run_single_frame_inference(state, prompt, False)
    record_yield("prompt", prompt, model._postprocess_output(state, out))
    if not image:
        for f, o in Sam3MultiplexTracking.propagate_in_video(model, state, prompt, reverse=False):
            record_yield("forward", f, o)
        if prompt > 0:
            for f, o in Sam3MultiplexTracking.propagate_in_video(
                model, state, prompt, reverse=True
            ):
                record_yield("backward", f, o)

    tensors = {}
    for k, values in series.items():
        cat = torch.cat(values) if values[0].dim() > 0 else torch.stack(values)
        if cat.dtype == torch.bool and cat.dim() > 1:
            tensors[f"{name}/{k}_shape"] = torch.tensor(cat.shape)
            cat = packbits(cat)
        tensors[f"{name}/{k}"] = cat
    return tensors, steps, yields


def coverage(steps: list[dict], yields: list[dict]) -> dict:
    counts = {  # event -> what one step contributes
        "births": lambda s: len(s["new_obj_ids"]),
        "removals": lambda s: len(s["removed"]),
        "dropped": lambda s: s["dropped"],
        "recondition": lambda s: sum(len(r) for r in s["recondition"]),
        "high_conf": lambda s: len(s["high_conf"]),
        "occlusion": lambda s: len(s["occl_suppressed"]),
        "unmatched": lambda s: len(s["unmatched"]),
        "empty": lambda s: len(s["empty"]),
        "multi": lambda s: sum(len(v) >= 2 for _, v in s["det_to_trk"]),
        "pairs": lambda s: len(s["meta"]["duplicate_count"]),
        "border_births": lambda s: s["border_births"],
        "unconfirmed": lambda s: len(s["unconfirmed"]),
        "confirmed": lambda s: len(s["meta"]["confirmed"]),
        "no_trk": lambda s: int(s["num_trk"] == 0),
    }
    c = {k: sum(f(s) for s in steps) for k, f in counts.items()}
    c.update(steps=len(steps), yields=len(yields))
    return c


# ----------------------------------------------------------------------------------------------
# Hand-made cases
# ----------------------------------------------------------------------------------------------
def rows(spec: list[tuple[int, int, int]], shape=(4, 10)) -> torch.Tensor:
    """Logit maps (N, H, W): object k is +1 on row r, columns [c0, c1), -1 elsewhere."""
    out = -torch.ones(len(spec), *shape)
    for k, (r, c0, c1) in enumerate(spec):
        out[k, r, c0:c1] = 1.0
    return out


def ops_cases() -> dict:
    t = {}
    g = torch.Generator().manual_seed(7)
    # IoM: random masks, empty ones, exact ratios.
    a = torch.rand(6, 9, 11, generator=g) < 0.4
    b = torch.rand(5, 9, 11, generator=g) < 0.2
    a[0] = False
    b[1] = False
    t["iom_a"], t["iom_b"], t["iom_out"] = a, b, official_mask_iom(a, b)
    # Batched NMS (3 frames x 20 queries) with tied scores, IoM and IoU, exact thresholds.
    probs = torch.tensor(
        np.random.RandomState(3).choice(np.float32([0.2, 0.45, 0.6, 0.6, 0.8, 0.8, 0.95]), (3, 20))
    )
    masks = torch.randn(3, 20, 8, 8, generator=g)
    masks[:, :4] = rows([(0, 0, 10), (0, 0, 1), (1, 0, 10), (1, 0, 9)], (8, 10))[:, :8, :8]
    t["nms_probs"], t["nms_masks"] = probs, masks
    for use_iom in (True, False):
        for thr in (0.1, 0.5):
            key = f"nms_{'iom' if use_iom else 'iou'}_{thr}"
            t[key] = nms_masks(
                pred_probs=probs.clone(),
                pred_masks=masks.clone(),
                prob_threshold=0.4,
                iou_threshold=thr,
                nms_use_iom=use_iom,
            )
    # Association: ambiguity both ways, exact 0.5 / 0.1, a non-kept query, more than 16 queries
    # (unstable kept-first sort), and the same with no track (border query born).
    trk = rows([(0, 0, 4), (0, 6, 10), (1, 0, 10), (2, 0, 10), (3, 0, 0), (3, 0, 8)])
    det = rows(
        [(0, 0, 10), (1, 0, 4), (1, 5, 10), (2, 0, 2), (3, 0, 4), (3, 4, 8), (2, 0, 10), (3, 0, 8)]
    )
    det_scores = torch.tensor([0.9, 0.85, 0.82, 0.7, 0.66, 0.9, 0.95, 0.81])
    det_keep = torch.tensor([True, True, True, True, True, True, False, True])
    extra = 14  # junk queries, not kept, to exceed 16
    det = torch.cat([det, -torch.ones(extra, 4, 10)])
    det_scores = torch.cat([det_scores, torch.full((extra,), 0.3)])
    det_keep = torch.cat([det_keep, torch.zeros(extra, dtype=torch.bool)])
    perm = torch.randperm(det.shape[0], generator=g)
    det, det_scores, det_keep = det[perm], det_scores[perm], det_keep[perm]
    for name, heur in {"iom": DEFAULTS, "iou": dict(DEFAULTS, use_iom_recondition=False)}.items():
        model = build_model(heur)
        for tracks, suffix in ((trk, ""), (trk[:0], "_notrk")):
            # sorted kept-first, as _det_track_one_frame hands the queries over
            order = det_keep.argsort(descending=True)
            lazy = model._associate_det_trk(
                det_masks=det[order],
                det_scores=det_scores[order],
                det_keep=det_keep[order],
                trk_masks=tracks,
                trk_obj_ids=np.arange(10, 10 + tracks.shape[0], dtype=np.int64),
            )
            im = lazy.im_mask.clone()
            real = realize_adt_result(
                lazy,
                {"obj_ids_all_gpu": np.arange(10, 10 + tracks.shape[0], dtype=np.int64)},
                det[order],
            )
            q = order.tolist()
            key = f"assoc_{name}{suffix}"
            t[f"{key}_new"] = torch.tensor([q[d] for d in real.new_det_fa_inds], dtype=torch.long)
            t[f"{key}_unmatched"] = torch.tensor(ints(real.unmatched_trk_obj_ids))
            t[f"{key}_empty"] = torch.tensor(ints(real.empty_trk_obj_ids))
            t[f"{key}_links"] = torch.tensor(
                [[q[d], int(o)] for d, v in real.det_to_matched_trk_obj_ids.items() for o in v],
                dtype=torch.long,
            ).reshape(-1, 2)
            t[f"{key}_pairs"] = torch.tensor(
                [[int(k), q[v]] for k, v in real.trk_id_to_max_iou_high_conf_det.items()],
                dtype=torch.long,
            ).reshape(-1, 2)
            t[f"{key}_matched"] = im.any(dim=0)
    t["assoc_det"], t["assoc_scores"], t["assoc_keep"], t["assoc_trk"] = (
        det,
        det_scores,
        det_keep,
        trk,
    )
    # Border rule at the margin.
    boxes = torch.tensor([0, 0.4, 0.05, 0.6, 0, 0.4, 0.0502, 0.6, 0.4, 0.95, 0.6, 1.0, 0.4, 0.9])
    boxes = torch.cat([boxes, torch.tensor([0.6, 1.0, 0.2, 0.2, 0.4, 0.4, 0.96, 0.5, 0.99, 0.6])])
    boxes = boxes.reshape(6, 4)
    t["border_boxes"] = boxes
    t["border_keep"] = build_model(DEFAULTS)._suppress_detections_close_to_boundary(boxes)
    return t


FILES = {
    "planner31_scenarios_a": ["default", "image", "duplicates", "sizes"],
    "planner31_scenarios_b": ["crowd", "short", "iou", "no_delay"],
}


def main() -> None:
    torch.set_num_threads(1)
    for file, names in FILES.items():
        tensors, meta = {}, {"scenarios": {}, "mem_size": MEM_SIZE, "video_size": list(VIDEO_SIZE)}
        for name in names:
            spec = SCENARIOS[name]
            t, steps, yields = run_scenario(name, spec)
            tensors.update(t)
            cov = coverage(steps, yields)
            print(name, cov)
            heur = {k: v for k, v in spec["heur"].items() if k not in _NOT_HEURISTICS}
            meta["scenarios"][name] = {
                "heuristics": heur,
                "steps": steps,
                "yields": yields,
                "coverage": cov,
                "num_frames": spec["frames"],
                "prompt": spec["prompt"],
            }
        save_fixture(file, tensors, meta)
    save_fixture("planner31_ops", ops_cases(), {"thresholds": [0.1, 0.5]})


if __name__ == "__main__":
    main()
