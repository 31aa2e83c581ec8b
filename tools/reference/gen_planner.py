"""Parity fixtures for the video planner, from the OFFICIAL planning code (sam3 0.1.4).

Run from the repository root with the reference venv::

    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_planner.py

The official ``Sam3VideoInferenceWithInstanceInteractivity`` is built with a dummy detector
and a recording stand-in for the tracker (no network runs), and its own methods are driven
frame by frame, as ``_det_track_one_frame`` does after the detector and the tracker step:

- ``run_tracker_update_planning_phase`` (association, cap, ids, hotstart, reconditioning,
  occlusion suppression, the memory update ``_tracker_update_memories`` with its area-shrink
  suppression, metadata update), then the frame-wise tracker-score update;
- ``build_outputs`` (video-resolution masks, hole-filled newborns) and ``_postprocess_output``
  (hiding, boxes, object-wise non-overlap);
- the execution phase is emulated on plain lists (a new state for newborns, removals).

The detector and tracker outputs are synthetic: moving discs ("entities") seen by the detector
(sometimes split in halves, sometimes missed, plus spurious blobs) with scores around the
thresholds 0.5 / 0.7 / 0.8, and tracks that follow the entity (or half, or blob) that gave
them birth, sometimes empty, with object-score logits around 0.8. Logits are int8 x 0.5 so
the fixture stays small. Scenarios play the session's order: a prompt frame, then forward,
then backward from the prompt frame.

Writes ``tests/fixtures/planner_scenarios.pt`` (per frame: inputs, the official plan, the
metadata after the frame, memory-update decisions, outputs) and ``planner_ops.pt`` (the
official shrink suppression and object-wise non-overlap on hand-made cases).
"""

from __future__ import annotations

from types import SimpleNamespace

import _common  # CPU patches, src/ on sys.path
import numpy as np
import torch
from _common import save_fixture
from official_builders import VIDEO_DEFAULTS
from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
from sam3.model.sam3_video_inference import Sam3VideoInferenceWithInstanceInteractivity
from torch import nn

_common.guard_empty_connected_components()

# The heuristics of ``build_sam3_video_model`` (``official_builders.VIDEO_DEFAULTS``); the image
# normalisation and compile switches are left at the class defaults (no network runs here).
_NOT_HEURISTICS = ("image_mean", "image_std", "compile_model")
DEFAULTS = {k: v for k, v in VIDEO_DEFAULTS.items() if k not in _NOT_HEURISTICS}
ABLATION = dict(
    DEFAULTS,
    hotstart_delay=0,
    hotstart_unmatch_thresh=0,
    hotstart_dup_thresh=0,
    recondition_every_nth_frame=0,
)

SCORES = [0.55, 0.62, 0.69, 0.7, 0.71, 0.75, 0.79, 0.8, 0.81, 0.85, 0.9, 0.97]
TRK_LOGITS = [-3.0, 0.0, 0.5, 0.79, 0.8, 0.81, 1.2, 4.0]
MEM_SIZE = 48  # memory-encoder input size of the stand-in tracker (1152 in the real model)
VIDEO_SIZE = (30, 40)  # output resolution (H, W)

# name -> heuristics overrides, mask sizes (det, trk), processing (prompt frame, num frames),
# number of entities, extra switches.
SCENARIOS = {
    "default": dict(heur=DEFAULTS, det=24, trk=24, prompt=10, frames=40, entities=5, seed=1),
    "cap": dict(
        heur=dict(DEFAULTS, max_num_objects=4), det=24, trk=24, prompt=0, frames=20,
        entities=5, seed=2, tie_scores=True,
    ),
    "ablation": dict(heur=ABLATION, det=24, trk=24, prompt=6, frames=24, entities=4, seed=3),
    "sizes": dict(heur=DEFAULTS, det=24, trk=16, prompt=5, frames=22, entities=4, seed=4),
    "sizes_det_small": dict(
        heur=dict(DEFAULTS, recondition_every_nth_frame=1),
        det=16, trk=24, prompt=0, frames=18, entities=4, seed=5,
    ),
    "keepalive": dict(
        heur=dict(
            DEFAULTS,
            suppress_unmatched_only_within_hotstart=False,
            decrease_trk_keep_alive_for_empty_masklets=True,
            suppress_det_close_to_boundary=True,
            init_trk_keep_alive=2,
            max_trk_keep_alive=3,
            min_trk_keep_alive=-1,
            hotstart_delay=6,
            hotstart_unmatch_thresh=3,
            hotstart_dup_thresh=3,
            recondition_every_nth_frame=4,
        ),
        det=24, trk=24, prompt=8, frames=30, entities=5, seed=6,
    ),
    "image": dict(
        heur=dict(DEFAULTS, max_num_objects=2), det=24, trk=24, prompt=0, frames=1,
        entities=5, seed=7, image=True,
    ),
}


# ----------------------------------------------------------------------------------------------
# The official model with a recording tracker stand-in
# ----------------------------------------------------------------------------------------------
SHELL = object.__new__(Sam3TrackerPredictor)  # an empty instance, for its pure mask methods


class RecordingTracker(nn.Module):
    """Answers the calls that the official planning makes on ``self.tracker``."""

    def __init__(self) -> None:
        super().__init__()
        self.input_mask_size = MEM_SIZE
        self.low_res_mask_size = None
        self.maskmem_backbone = SimpleNamespace(
            mask_downsampler=SimpleNamespace(interpol_size=(MEM_SIZE, MEM_SIZE))
        )
        self.reset()

    def reset(self) -> None:
        self.recondition_calls = []  # (obj_id, mask area)
        self.preflights = 0
        self.memory_calls = []  # (masks, object-score logits) per state

    def add_new_mask(self, inference_state, frame_idx, obj_id, mask, **kw):
        self.recondition_calls.append((int(obj_id), int(mask.sum())))

    def propagate_in_video_preflight(self, inference_state, run_mem_encoder=True):
        self.preflights += 1

    def _run_memory_encoder(self, state, frame_idx, bs, masks, scores, is_mask_from_pts):
        self.memory_calls.append((masks.clone(), scores.clone()))
        return torch.zeros(1), [torch.zeros(1)]

    def _add_output_per_object(self, **kw):
        pass

    def _suppress_object_pw_area_shrinkage(self, masks):
        return Sam3TrackerPredictor._suppress_object_pw_area_shrinkage(SHELL, masks)

    def _apply_object_wise_non_overlapping_constraints(self, masks, scores, background_value):
        return Sam3TrackerPredictor._apply_object_wise_non_overlapping_constraints(
            SHELL, masks, scores, background_value=background_value
        )


def build_model(heur: dict):
    model = Sam3VideoInferenceWithInstanceInteractivity(
        detector=nn.Identity(), tracker=RecordingTracker(), **heur
    )
    # Record the association and the occlusion decisions on their way out.
    model.rec = {}
    assoc = model._associate_det_trk
    occl = model._get_objects_to_suppress_based_on_most_recently_occluded

    def associate(**kw):
        out = assoc(**kw)
        model.rec["empty"] = [int(i) for i in out[4]]
        return out

    def occlusion(*args, **kw):
        out = occl(*args, **kw)
        model.rec["occl"] = out.clone()
        return out

    model._associate_det_trk = associate
    model._get_objects_to_suppress_based_on_most_recently_occluded = occlusion
    return model


# ----------------------------------------------------------------------------------------------
# Synthetic detector and tracker outputs
# ----------------------------------------------------------------------------------------------
class World:
    """Moving discs; detections and tracks derived from them (all draws from one generator)."""

    def __init__(self, num_entities: int, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.num_entities = num_entities
        u = self.rand(num_entities, 5)
        self.pos0 = 0.15 + 0.7 * u[:, :2]  # normalized centres
        self.vel = (u[:, 2:4] - 0.5) * 0.06
        self.radius = 0.15 + 0.15 * u[:, 4]
        self.blobs: dict[int, tuple[float, float, float]] = {}

    def rand(self, *shape):
        return torch.rand(*shape, generator=self.g)

    def randint(self, lo, hi, shape=()):
        return torch.randint(lo, hi, shape, generator=self.g)

    def choice(self, values):
        return values[int(self.randint(0, len(values)))]

    def centre(self, e: int, frame: int) -> tuple[float, float]:
        p = self.pos0[e] + self.vel[e] * frame
        p = torch.remainder(p, 2.0)
        p = torch.where(p > 1.0, 2.0 - p, p)  # bounce
        return float(p[0]), float(p[1])

    def disc(self, size, cx, cy, r, part="full", jitter=0.0):
        ys, xs = torch.meshgrid(
            (torch.arange(size) + 0.5) / size, (torch.arange(size) + 0.5) / size, indexing="ij"
        )
        if jitter:
            cx += float(self.rand(1) - 0.5) * jitter
            cy += float(self.rand(1) - 0.5) * jitter
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
        if part == "left":
            inside &= xs <= cx
        elif part == "right":
            inside &= xs > cx
        return inside

    def logits(self, inside: torch.Tensor, empty: bool = False, flips: float = 0.0):
        """int8 logits (x 0.5 later): positive inside, negative outside, a few flipped pixels."""
        pos = self.randint(1, 21, inside.shape)
        neg = -self.randint(1, 21, inside.shape)
        flip = self.rand(*inside.shape) < flips
        fg = (inside ^ flip) & ~torch.tensor(empty)
        return torch.where(fg, pos, neg).to(torch.int8)

    def source_mask(self, source, size, frame, jitter=0.0):
        kind, key, part = source
        if kind == "entity":
            cx, cy = self.centre(key, frame)
            return self.disc(size, cx, cy, float(self.radius[key]), part, jitter)
        cx, cy, r = self.blobs[key]
        return self.disc(size, cx, cy, r, "full", jitter)

    def detections(self, frame, size, tie_scores=False):
        """Kept detections of a frame: int8 logits (D, s, s), scores, xyxy boxes, sources."""
        if self.rand(1) < 0.1:
            return torch.zeros(0, size, size, dtype=torch.int8), [], torch.zeros(0, 4), []
        masks, scores, sources = [], [], []
        tie = self.choice(SCORES)
        for e in range(self.num_entities):
            if self.rand(1) > 0.75:
                continue
            parts = ["left", "right"] if self.rand(1) < 0.15 else ["full"]
            for part in parts:
                src = ("entity", e, part)
                masks.append(self.logits(self.source_mask(src, size, frame, 0.03), flips=0.01))
                scores.append(tie if tie_scores and self.rand(1) < 0.5 else self.choice(SCORES))
                sources.append(src)
        if self.rand(1) < 0.35:
            key = len(self.blobs)
            u = self.rand(3)
            self.blobs[key] = (float(0.05 + 0.9 * u[0]), float(0.05 + 0.9 * u[1]), 0.08)
            src = ("blob", key, "full")
            masks.append(self.logits(self.source_mask(src, size, frame)))
            scores.append(self.choice(SCORES))
            sources.append(src)
        order = torch.randperm(len(masks), generator=self.g).tolist()  # query order
        masks = torch.stack([masks[i] for i in order]) if masks else torch.zeros(0, size, size)
        scores = [scores[i] for i in order]
        sources = [sources[i] for i in order]
        boxes = boxes_of(masks.to(torch.int8) > 0)
        return masks.to(torch.int8), scores, boxes, sources

    def tracks(self, frame, size, sources):
        """Tracker outputs for objects following ``sources``: int8 logits, score logits."""
        masks, logits = [], []
        for src in sources:
            empty = bool(self.rand(1) < 0.1)
            jitter = 0.03 if self.rand(1) < 0.7 else 0.0  # unjittered twins tie in IoU
            masks.append(self.logits(self.source_mask(src, size, frame, jitter), empty))
            logits.append(self.choice(TRK_LOGITS))
        if not masks:
            return torch.zeros(0, size, size, dtype=torch.int8), torch.zeros(0)
        return torch.stack(masks), torch.tensor(logits, dtype=torch.float32)


def boxes_of(binary: torch.Tensor) -> torch.Tensor:
    n, h, w = binary.shape
    out = torch.zeros(n, 4)
    for i in range(n):
        ys, xs = torch.nonzero(binary[i], as_tuple=True)
        if len(xs):
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            out[i] = torch.tensor([x0 / w, y0 / h, x1 / w, y1 / h])
    return out


# ----------------------------------------------------------------------------------------------
# Recording helpers
# ----------------------------------------------------------------------------------------------
def ints(values) -> list[int]:
    return [int(v) for v in values]


def snapshot(meta: dict, frame: int) -> dict:
    r0 = meta["rank0_metadata"]
    return {
        "obj_ids": ints(meta["obj_ids_all_gpu"]),
        "max_obj_id": int(meta["max_obj_id"]),
        "obj_id_to_score": sorted((int(k), float(v)) for k, v in meta["obj_id_to_score"].items()),
        "frame_scores": sorted(
            (int(k), float(v))
            for k, v in meta["obj_id_to_tracker_score_frame_wise"].get(frame, {}).items()
        ),
        "last_occluded": sorted(
            (int(k), int(v.item())) for k, v in meta["obj_id_to_last_occluded"].items()
        ),
        "first_frame": sorted((int(k), int(v)) for k, v in r0["obj_first_frame_idx"].items()),
        "unmatched_count": sorted((int(k), len(v)) for k, v in r0["unmatched_frame_inds"].items()),
        "keep_alive": sorted((int(k), int(v)) for k, v in r0["trk_keep_alive"].items()),
        "duplicate_count": sorted(
            (int(a), int(b), len(v)) for (a, b), v in r0["overlap_pair_to_frame_inds"].items()
        ),
        "removed_ids": sorted(ints(r0["removed_obj_ids"])),
        "suppressed": sorted(ints(r0["suppressed_obj_ids"].get(frame, set()))),
    }


def packbits(masks: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(masks.numpy().astype(bool).reshape(-1)))


def run_scenario(name: str, spec: dict):
    heur = spec["heur"]
    model = build_model(heur)
    tracker: RecordingTracker = model.tracker
    world = World(spec["entities"], spec["seed"])
    prompt, num_frames = spec["prompt"], spec["frames"]
    image = spec.get("image", False)
    order = [(prompt, False)]  # add_prompt
    if not image:
        order += [(f, False) for f in range(prompt, num_frames)]
        order += [(f, True) for f in range(prompt - 1, -1, -1)]

    meta = model._initialize_metadata()
    states: list[dict] = []  # emulated tracker states: {"obj_ids": [...]}
    sources: dict[int, tuple] = {}  # obj_id -> what its track follows
    removed_so_far: set[int] = set()
    frames = []
    series: dict[str, list[torch.Tensor]] = {}  # per-frame tensors, concatenated at the end
    for frame, reverse in order:
        det_i8, det_scores, det_boxes, det_sources = world.detections(
            frame, spec["det"], spec.get("tie_scores", False)
        )
        prev_ids = ints(meta["obj_ids_all_gpu"])
        trk_i8, trk_logits = world.tracks(frame, spec["trk"], [sources[i] for i in prev_ids])
        det_masks = det_i8.float() * 0.5
        trk_masks = trk_i8.float() * 0.5
        det_out = {
            "mask": det_masks,
            "scores": torch.tensor(det_scores, dtype=torch.float32),
            "bbox": det_boxes,
        }
        tracker.reset()
        model.rec = {}
        work = trk_masks.clone()  # modified in place by the official occlusion suppression
        plan, meta_new = model.run_tracker_update_planning_phase(
            frame_idx=frame,
            num_frames=num_frames,
            reverse=reverse,
            det_out=det_out,
            tracker_low_res_masks_global=work,
            tracker_obj_scores_global=trk_logits,
            tracker_metadata_prev=meta,
            tracker_states_local=[
                {"obj_ids": list(s["obj_ids"]),
                 "output_dict": {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}}
                for s in states
            ],
            is_image_only=image,
        )
        obj_id_to_mask = model.build_outputs(
            frame_idx=frame,
            num_frames=num_frames,
            reverse=reverse,
            det_out=det_out,
            tracker_low_res_masks_global=work,
            tracker_obj_scores_global=trk_logits,
            tracker_metadata_prev=meta,
            tracker_update_plan=plan,
            orig_vid_height=VIDEO_SIZE[0],
            orig_vid_width=VIDEO_SIZE[1],
            reconditioned_obj_ids=plan["reconditioned_obj_ids"],
            det_to_matched_trk_obj_ids=plan["det_to_matched_trk_obj_ids"],
        )
        if trk_logits.shape[0] > 0:  # as _det_track_one_frame, after planning
            meta_new["obj_id_to_tracker_score_frame_wise"][frame].update(
                dict(zip(prev_ids, trk_logits.sigmoid().tolist()))
            )

        # Execution, emulated: newborns in one new state, removals.
        new_ids = ints(plan["new_det_obj_ids"])
        for obj_id, d in zip(new_ids, ints(plan["new_det_fa_inds"])):
            sources[obj_id] = det_sources[d]
        if new_ids:
            states.append({"obj_ids": list(new_ids)})
        for obj_id in plan["obj_ids_newly_removed"]:
            for s in states:
                if obj_id in s["obj_ids"]:
                    s["obj_ids"].remove(obj_id)
        states = [s for s in states if s["obj_ids"]]
        assert [i for s in states for i in s["obj_ids"]] == ints(meta_new["obj_ids_all_gpu"])

        removed_so_far |= set(ints(meta_new["rank0_metadata"]["removed_obj_ids"]))
        suppressed = meta_new["rank0_metadata"]["suppressed_obj_ids"][frame]
        out = model._postprocess_output(
            {"orig_height": VIDEO_SIZE[0], "orig_width": VIDEO_SIZE[1]},
            {
                "obj_id_to_mask": obj_id_to_mask,
                "obj_id_to_score": meta_new["obj_id_to_score"],
                "obj_id_to_tracker_score": meta_new["obj_id_to_tracker_score_frame_wise"][frame],
            },
            removed_so_far,
            suppressed,
        )

        mem = tracker.memory_calls
        mem_masks = torch.cat([m for m, _ in mem]) if mem else torch.zeros(0, 1, 1, 1)
        mem_scores = torch.cat([s for _, s in mem]) if mem else torch.zeros(0, 1)
        interp = torch.nn.functional.interpolate(
            work[:, None], size=(MEM_SIZE, MEM_SIZE), mode="bilinear", align_corners=False
        )
        if mem:
            shrunk = (mem_masks != interp).flatten(1).any(dim=1)
            assert torch.equal(mem_masks, torch.where(shrunk[:, None, None, None],
                                                      interp.clamp(max=-10.0), interp))
        else:
            shrunk = torch.zeros(0, dtype=torch.bool)

        out_ids = ints(obj_id_to_mask)
        frame_masks = torch.cat([obj_id_to_mask[i] for i in out_ids]) if out_ids else None
        parts = {
            "det_masks": det_i8,
            "trk_masks": trk_i8,
            "trk_logits": trk_logits,
            "det_scores": det_out["scores"],
            "det_boxes": det_boxes,
            "frame_masks": torch.zeros(0, *VIDEO_SIZE, dtype=torch.bool)
            if frame_masks is None else frame_masks,
            "out_masks": torch.from_numpy(out["out_binary_masks"]),
            "out_boxes": torch.from_numpy(out["out_boxes_xywh"]),
            "out_probs": torch.from_numpy(out["out_probs"]).float(),
        }
        for k, v in parts.items():
            series.setdefault(k, []).append(v)
        occl = model.rec.get("occl")
        frames.append(
            {
                "frame": frame,
                "reverse": reverse,
                "image": image,
                "num_det": len(det_scores),
                "num_trk": len(prev_ids),
                "new_det_inds": ints(plan["new_det_fa_inds"]),
                "new_obj_ids": new_ids,
                "unmatched": ints(plan["unmatched_trk_obj_ids"]),
                "empty": model.rec.get("empty", []),
                "det_to_trk": [
                    ints(plan["det_to_matched_trk_obj_ids"].get(d, []))
                    for d in range(len(det_scores))
                ],
                "high_conf": [[int(k), int(v)] for k, v in
                              plan["trk_id_to_max_iou_high_conf_det"].items()],
                "removed": sorted(ints(plan["obj_ids_newly_removed"])),
                "dropped": int(plan["num_obj_dropped_due_to_limit"]),
                "recondition": [obj for obj, _ in tracker.recondition_calls],
                "recondition_areas": [a for _, a in tracker.recondition_calls],
                "occl_suppressed": [] if occl is None else
                [i for i, s in zip(prev_ids, occl.tolist()) if s],
                "mem_shrunk": shrunk.tolist(),
                "mem_scores": mem_scores.reshape(-1).tolist(),
                "frame_mask_ids": out_ids,
                "out_ids": ints(out["out_obj_ids"]),
                "hidden": sorted(removed_so_far | set(ints(suppressed))),
                "meta": snapshot(meta_new, frame),
            }
        )
        meta = meta_new
    # One tensor per kind (frames concatenated along dim 0; per-frame counts are in `frames`).
    tensors = {}
    for k, values in series.items():
        cat = torch.cat(values)
        if cat.dtype == torch.bool:  # bit-packed, shape kept in the name's "_shape" entry
            tensors[f"{name}/{k}_shape"] = torch.tensor(cat.shape)
            cat = packbits(cat)
        tensors[f"{name}/{k}"] = cat
    return tensors, frames


def coverage(frames: list[dict]) -> dict:
    """Counts of the events each scenario exercises (printed, and kept in the fixture)."""
    c = dict(frames=len(frames), births=0, removals=0, dropped=0, recondition=0, high_conf=0,
             occlusion=0, shrunk=0, unmatched=0, empty=0, duplicates=0, suppressed=0,
             no_det=0, no_trk=0, hidden_out=0)
    for f in frames:
        c["births"] += len(f["new_obj_ids"])
        c["removals"] += len(f["removed"])
        c["dropped"] += f["dropped"]
        c["recondition"] += len(f["recondition"])
        c["high_conf"] += len(f["high_conf"])
        c["occlusion"] += len(f["occl_suppressed"])
        c["shrunk"] += sum(f["mem_shrunk"])
        c["unmatched"] += len(f["unmatched"])
        c["empty"] += len(f["empty"])
        c["duplicates"] += sum(len(t) >= 2 for t in f["det_to_trk"])
        c["suppressed"] += len(f["meta"]["suppressed"])
        c["no_det"] += len(f["det_to_trk"]) == 0
        c["no_trk"] += len(f["mem_shrunk"]) == 0
        c["hidden_out"] += len(set(f["frame_mask_ids"]) & set(f["hidden"]))
    return c


# ----------------------------------------------------------------------------------------------
# Hand-made cases for the mask rules
# ----------------------------------------------------------------------------------------------
def ops_cases():
    shell = SHELL
    g = torch.Generator().manual_seed(11)
    tensors = {}
    # Shrink suppression: overlapping discs of several sizes, an empty mask, a single mask.
    size = 32
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    discs = []
    for cx, cy, r in [(10, 10, 8), (14, 12, 4), (22, 22, 7), (24, 20, 7), (4, 28, 2)]:
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
        mag = torch.randint(1, 40, (size, size), generator=g).float() / 4
        discs.append(torch.where(inside, mag, -mag))
    discs.append(-torch.rand(size, size, generator=g) * 5)  # empty
    shrink_in = torch.stack(discs)[:, None]
    tensors["shrink_in"] = shrink_in
    tensors["shrink_out"] = Sam3TrackerPredictor._suppress_object_pw_area_shrinkage(
        shell, shrink_in.clone()
    )
    tensors["shrink_single_in"] = shrink_in[5:6]
    tensors["shrink_single_out"] = Sam3TrackerPredictor._suppress_object_pw_area_shrinkage(
        shell, shrink_in[5:6].clone()
    )
    # Pixel-wise non-overlap with exact ties.
    tie_in = torch.randint(-3, 4, (4, 1, 8, 8), generator=g).float()
    tensors["pixelwise_in"] = tie_in
    tensors["pixelwise_out"] = Sam3TrackerPredictor._apply_non_overlapping_constraints(
        shell, tie_in.clone()
    )
    # Object-wise non-overlap on bool masks (as _postprocess_output calls it), with tied,
    # zero and negative scores.
    noise = torch.rand(6, size, size, generator=g) < 0.05
    masks = torch.stack([d[0] > 0 for d in shrink_in]) | noise
    for name, scores in {
        "distinct": [0.9, 0.3, 0.7, 0.71, 0.2, 0.5],
        "ties": [0.5, 0.5, 0.8, 0.8, 0.5, 0.1],
        "nonpositive": [0.9, 0.0, -3.0, 0.4, -1e4, 0.6],
    }.items():
        s = torch.tensor(scores, dtype=torch.float32)
        out = Sam3TrackerPredictor._apply_object_wise_non_overlapping_constraints(
            shell, masks[:, None], s[:, None], background_value=0
        ).squeeze(1) > 0
        tensors[f"objectwise_{name}_scores"] = s
        tensors[f"objectwise_{name}_out"] = out
    tensors["objectwise_masks"] = masks
    tensors.update(threshold_cases())
    return tensors


def rows(spec: list[tuple[int, int, int]], shape=(4, 10), value=1.0) -> torch.Tensor:
    """Logit maps (N, H, W): object k is +value on row r, columns [c0, c1), -1 elsewhere."""
    out = -torch.ones(len(spec), *shape)
    for k, (r, c0, c1) in enumerate(spec):
        out[k, r, c0:c1] = value
    return out


def threshold_cases() -> dict:
    """Official association, occlusion, shrink and border rules at their exact thresholds."""
    model = build_model(DEFAULTS)
    t = {}
    # Association: IoU exactly 0.8 (high-conf), 0.5 (matched), 0.1 (linked); two high-conf
    # detections of one track (the later wins); a new detection; an empty track.
    trk = rows([(0, 0, 10), (1, 0, 10), (2, 0, 10), (3, 0, 10), (0, 0, 0)])
    det = rows([(0, 0, 8), (1, 0, 5), (2, 0, 1), (3, 0, 9), (3, 0, 10), (0, 0, 0)])
    cases = {
        "exact": (det, [0.8, 0.7, 0.9, 0.85, 0.95, 0.75], trk, [10, 11, 12, 13, 14]),
        # identical tracks: IoU ties go to the first track
        "ties": (rows([(0, 0, 6), (1, 0, 3)]), [0.9, 0.69], rows([(0, 0, 6), (0, 0, 6)]), [4, 2]),
    }
    g = torch.Generator().manual_seed(5)
    big = torch.randn(4, 12, 12, generator=g)
    small = torch.randn(3, 6, 6, generator=g)
    cases["det_larger"] = (big, [0.9, 0.8, 0.7, 0.6], small, [0, 1, 2])
    cases["trk_larger"] = (small, [0.9, 0.8, 0.7], big, [0, 1, 2, 3])
    for name, (d, s, tr, ids) in cases.items():
        out = model._associate_det_trk(
            det_masks=d, det_scores_np=np.array(s, dtype=np.float32), trk_masks=tr,
            trk_obj_ids=np.array(ids, dtype=np.int64),
        )
        new, unmatched, links, pairs, empty = out
        t[f"assoc_{name}_det"] = d
        t[f"assoc_{name}_scores"] = torch.tensor(s, dtype=torch.float32)
        t[f"assoc_{name}_trk"] = tr
        t[f"assoc_{name}_ids"] = torch.tensor(ids)
        t[f"assoc_{name}_new"] = torch.tensor(ints(new), dtype=torch.long)
        t[f"assoc_{name}_unmatched"] = torch.tensor(ints(unmatched), dtype=torch.long)
        t[f"assoc_{name}_empty"] = torch.tensor(ints(empty), dtype=torch.long)
        t[f"assoc_{name}_links"] = torch.tensor(
            [[d_, int(o)] for d_ in range(len(s)) for o in links.get(d_, [])], dtype=torch.long
        ).reshape(-1, 2)
        t[f"assoc_{name}_pairs"] = torch.tensor(
            [[int(k), int(v)] for k, v in pairs.items()], dtype=torch.long
        ).reshape(-1, 2)

    # Occlusion: IoU exactly 0.7 (0/1) and 0.6 (2/3), an empty mask; with the last-occluded
    # table of the previous frame (3 has no entry: never occluded, or always if removed now).
    masks = rows(
        [(0, 0, 10), (0, 0, 7), (1, 0, 10), (1, 0, 6), (0, 0, 0), (2, 0, 5), (2, 0, 5),
         (3, 0, 10), (3, 0, 9)]
    )
    ids = list(range(9))
    prev = {0: 5, 1: 3, 2: -1, 3: 8, 4: 2, 5: -1, 6: 7, 7: 4}  # 8: no entry
    for name, (reverse, removed) in {
        "fwd": (False, set()), "bwd": (True, set()), "fwd_removed": (False, {8, 6}),
        "bwd_removed": (True, {8}),
    }.items():
        meta_prev = {
            "obj_ids_all_gpu": np.array(ids, dtype=np.int64),
            "obj_id_to_last_occluded": {k: torch.tensor([v]) for k, v in prev.items()},
        }
        meta_new = {}
        out = model._suppress_overlapping_based_on_recent_occlusion(
            9, masks.clone(), meta_prev, meta_new, removed, reverse
        )
        t[f"occl_{name}_out"] = out
        t[f"occl_{name}_last"] = torch.tensor(
            [int(meta_new["obj_id_to_last_occluded"][i].item()) for i in ids]
        )
    t["occl_masks"] = masks
    t["occl_prev"] = torch.tensor([prev.get(i, -99) for i in ids])  # -99: no entry

    # Shrink suppression at exactly 0.3 kept area (object 0) and 0.2 (object 2).
    shrink = rows([(0, 0, 10), (0, 0, 7), (1, 0, 10), (1, 0, 8)])[:, None]
    shrink[1] *= 2.0
    shrink[3] *= 2.0
    t["shrink_exact_in"] = shrink
    t["shrink_exact_out"] = SHELL._suppress_object_pw_area_shrinkage(shrink.clone())

    # Border rule: box centres at, inside and outside the 0.025 margin.
    boxes = torch.tensor(
        [[0.0, 0.4, 0.05, 0.6], [0.0, 0.4, 0.0502, 0.6], [0.4, 0.95, 0.6, 1.0],
         [0.4, 0.9, 0.6, 1.0], [0.2, 0.2, 0.4, 0.4], [0.96, 0.5, 0.99, 0.6]]
    )
    t["border_boxes"] = boxes
    t["border_keep"] = model._suppress_detections_close_to_boundary(boxes)
    return t


def ghost_case() -> dict:
    """Hotstart acts on every object with unmatched counts, tracked or not: a user-removed
    object (7) is "removed" again (score -1e4), a tracked one (3) is kept (outside hotstart)
    but its keep-alive suppression applies when switched on."""
    out = {}
    for name, heur in {
        "default": DEFAULTS,
        "suppress": dict(DEFAULTS, suppress_unmatched_only_within_hotstart=False),
    }.items():
        model = build_model(heur)
        meta = model._initialize_metadata()
        meta["obj_ids_per_gpu"][0] = np.array([3], dtype=np.int64)
        meta["obj_ids_all_gpu"] = np.array([3], dtype=np.int64)
        meta["num_obj_per_gpu"][0] = 1
        meta["max_obj_id"] = 7
        meta["obj_id_to_score"] = {3: np.float32(0.9)}
        r0 = meta["rank0_metadata"]
        r0["obj_first_frame_idx"].update({3: 0, 7: 10})
        r0["unmatched_frame_inds"][7] = [10, 11, 12, 13, 14, 15, 16, 17]
        r0["unmatched_frame_inds"][3] = [1]
        r0["trk_keep_alive"].update({3: 1, 7: 5})
        trk = rows([(0, 0, 6)])
        plan, meta_new = model.run_tracker_update_planning_phase(
            frame_idx=18, num_frames=30, reverse=False,
            det_out={"mask": torch.zeros(0, 4, 10), "scores": torch.zeros(0),
                     "bbox": torch.zeros(0, 4)},
            tracker_low_res_masks_global=trk.clone(),
            tracker_obj_scores_global=torch.tensor([2.0]),
            tracker_metadata_prev=meta,
            tracker_states_local=[{"obj_ids": [3], "output_dict": {
                "cond_frame_outputs": {}, "non_cond_frame_outputs": {}}}],
        )
        meta_new["obj_id_to_tracker_score_frame_wise"][18].update(
            {3: float(torch.tensor(2.0).sigmoid())}
        )
        out[name] = {
            "removed": sorted(ints(plan["obj_ids_newly_removed"])),
            "meta": snapshot(meta_new, 18),
        }
    return out


# Two files of similar size (each well under 1 MB).
FILES = {
    "planner_scenarios_a": ["default", "cap", "image"],
    "planner_scenarios_b": ["ablation", "sizes", "sizes_det_small", "keepalive"],
}


def main() -> None:
    for file, names in FILES.items():
        tensors = {}
        meta = {"scenarios": {}, "mem_size": MEM_SIZE, "video_size": list(VIDEO_SIZE)}
        for name in names:
            spec = SCENARIOS[name]
            t, frames = run_scenario(name, spec)
            tensors.update(t)
            heur = {k: v for k, v in spec["heur"].items() if k != "masklet_confirmation_enable"}
            cov = coverage(frames)
            print(name, cov)
            meta["scenarios"][name] = {"heuristics": heur, "frames": frames, "coverage": cov}
        save_fixture(file, tensors, meta)
    save_fixture("planner_ops", ops_cases(), {"ghost": ghost_case()})


if __name__ == "__main__":
    main()
