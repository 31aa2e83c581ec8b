"""SAM 3 video planning: what to do with the tracks and detections of one frame.

Per frame the video pipeline runs the detector, advances every tracker state one frame, then
PLANS (this module); `sam3video.video.actions` carries the plan out on the tracker states
(births, reconditioning, memory update, removals) and the session forms the outputs.
Everything here is a pure function of tensors and a `TrackerMetadata`; the device of every
tensor op comes from the inputs. The decisions (ids, sets, counters) are made on the host,
as the official code does, after one small transfer of the per-object results.

`plan_frame` follows the official planning phase step by step (sam3 0.1.4):

1. association of detections with tracks (`associate`), mask IoU on binarized logits;
2. (off by default) drop new detections whose box centre is near the image border;
3. object cap: keep the top-scoring new detections (not for single images);
4. ids ``max_obj_id + 1, ...`` for the new detections, in candidate order;
5. hotstart: first frames and keep-alive of newborns, keep-alive / unmatched counts, removal of
   tracks unmatched for ``hotstart_unmatch_thresh`` frames or duplicating an older track for
   ``hotstart_dup_thresh`` frames while within ``hotstart_delay`` frames of their birth;
6. reconditioning selection (absolute frame index divisible by ``recondition_every_nth_frame``):
   high-confidence (detection, track) pairs whose tracker object-score logit is > 0.8;
7. occlusion suppression of overlapping tracks by last-occluded frame
   (`suppress_recently_occluded`), which also rebuilds the last-occluded table;
8. metadata update: global order (newborns appended, removed ids dropped), stored scores,
   ``max_obj_id``, -1e4 for removed ids, and this frame's tracker scores: detection score for
   newborns, then sigmoid(object-score logit) for every track that entered the frame.

What is done with a `FramePlan`, in this order (as the official code); a-c are
`actions.plan_actions` / `actions.apply_actions`, d-e the session:

a. for each ``(obj_id, det_idx)`` of ``plan.recondition``: add the detection mask (bilinear to
   the input-mask size, > 0) as a mask prompt of ``obj_id`` on this frame in its tracker state,
   then preflight (encode memory of) each state that got one;
b. memory update of the tracks that entered the frame, when there are any:
   `prepare_memory_update` (``plan.trk_masks`` -> 1152, shrink suppression, score logits),
   then the memory encoder per state; this also overwrites a reconditioned frame's memory;
c. add the newborns (``plan.new_obj_ids`` from detections ``plan.new_det_inds``) as ONE new
   tracker state; remove ``plan.removed_obj_ids`` from every state (an id may be absent:
   ignore it), dropping states left empty;
d. outputs: `build_frame_masks`, cached unfiltered; yield through `postprocess_frame`
   hiding ``metadata.removed_ids`` (as of yield time) and ``metadata.suppressed_at(frame)``;
e. keep ``plan.metadata`` for the next frame.

Outside full propagation the session edits the metadata directly: `TrackerMetadata.
register_click` / `remove_object` for user actions, and ``set_frame_scores(frame, {obj_id:
raw logit})`` for objects re-tracked by partial propagation.

Differences from the official code, on purpose:
- an object without a birth frame (created by clicks) is never "within hotstart" and is the
  reference of a duplicate pair; the official code raises a KeyError there (a path that the
  official request flow never reaches: clicked objects only go through partial propagation).
- the IoU-triggered reconditioning, Hungarian matching and masklet confirmation (all off in
  the official video model) are not implemented.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.errors import ConfigError, InvalidInputError, UnknownIdError
from sam3video.model.ops import mask_iou, masks_to_boxes
from sam3video.video.metadata import REMOVED_SCORE, TrackerMetadata
from sam3video.video.postprocess import (
    SUPPRESSED_LOGIT,
    apply_non_overlapping_constraints,
    apply_object_wise_non_overlapping_constraints,
    fill_holes_in_mask_scores,
    suppress_object_pw_area_shrinkage,
)

__all__ = [
    "Association",
    "FrameOutput",
    "FramePlan",
    "VideoHeuristics",
    "associate",
    "build_frame_masks",
    "object_wise_non_overlap",
    "pixelwise_non_overlap",
    "plan_frame",
    "postprocess_frame",
    "prepare_memory_update",
    "suppress_recently_occluded",
    "suppress_shrinkage",
    "tracked_inputs",
]

# Constants written inline in the official code.
HIGH_CONF_SCORE = 0.8  # detection probability of a high-confidence pair
HIGH_CONF_IOU = 0.8  # its IoU with the track
RECONDITION_MIN_LOGIT = 0.8  # tracker object-score LOGIT above which a track is reconditioned
NEVER_OCCLUDED = -1
ALWAYS_OCCLUDED = 100000  # last-occluded of a just-removed track without an entry
SHRINK_RATIO = 0.3  # area kept after pixel-wise non-overlap below which a mask is suppressed
BORDER_MARGIN = 0.025  # box-centre margin of the (off by default) border suppression
MEMORY_SCORE_LOGIT = 10.0  # +-10 object-score logits fed to the memory encoder
NO_OBJECT_LIMIT = 10000  # what the official code uses for "no cap"


# ----------------------------------------------------------------------------------------------
# Heuristics
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoHeuristics:
    """Thresholds and switches of the video logic.

    Defaults are those of ``build_sam3_video_model(apply_temporal_disambiguation=True)``;
    `ablation()` gives the ``apply_temporal_disambiguation=False`` variant. A
    ``max_num_objects`` <= 0 means no cap (stored as 10000, as officially).
    ``score_threshold_detection`` / ``det_nms_thresh`` are for the detector's post-processing
    and ``hotstart_delay`` also sets the session's output buffer; the planner reads the rest.
    """

    score_threshold_detection: float = 0.5
    det_nms_thresh: float = 0.1
    assoc_iou_thresh: float = 0.1
    trk_assoc_iou_thresh: float = 0.5
    new_det_thresh: float = 0.7
    hotstart_delay: int = 15
    hotstart_unmatch_thresh: int = 8
    hotstart_dup_thresh: int = 8
    suppress_unmatched_only_within_hotstart: bool = True
    init_trk_keep_alive: int = 30
    max_trk_keep_alive: int = 30
    min_trk_keep_alive: int = -1
    decrease_trk_keep_alive_for_empty_masklets: bool = False
    suppress_overlapping_based_on_recent_occlusion_threshold: float = 0.7
    suppress_det_close_to_boundary: bool = False
    fill_hole_area: int = 16
    max_num_objects: int = NO_OBJECT_LIMIT
    recondition_every_nth_frame: int = 16

    def __post_init__(self) -> None:
        if self.max_num_objects <= 0:
            object.__setattr__(self, "max_num_objects", NO_OBJECT_LIMIT)
        if self.hotstart_delay < 0:
            raise ConfigError(f"hotstart_delay: expected >= 0, got {self.hotstart_delay}")
        if self.hotstart_delay > 0:
            for name in ("hotstart_unmatch_thresh", "hotstart_dup_thresh"):
                value = getattr(self, name)
                if value > self.hotstart_delay:
                    raise ConfigError(
                        f"{name}: expected <= hotstart_delay ({self.hotstart_delay}), got {value}"
                    )
        if self.min_trk_keep_alive > self.max_trk_keep_alive:
            raise ConfigError(
                f"min_trk_keep_alive: expected <= max_trk_keep_alive "
                f"({self.max_trk_keep_alive}), got {self.min_trk_keep_alive}"
            )

    @classmethod
    def ablation(cls) -> VideoHeuristics:
        """``apply_temporal_disambiguation=False``: no hotstart, no reconditioning."""
        return cls(
            hotstart_delay=0,
            hotstart_unmatch_thresh=0,
            hotstart_dup_thresh=0,
            recondition_every_nth_frame=0,
        )


# ----------------------------------------------------------------------------------------------
# Association
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Association:
    """Detections (``D``, kept after NMS, ascending query order) against tracks (global order).

    new_det_inds: detections that start a new object (ascending). unmatched_trk_ids: non-empty
    tracks without a detection at IoU >= ``trk_assoc_iou_thresh``. empty_trk_ids: tracks with
    an empty mask. det_to_trk_ids: per detection, the tracks at IoU >= ``assoc_iou_thresh``
    (track order; ``D`` lists). high_conf_pairs: track id -> detection index of a
    high-confidence pair (insertion order of the official dict).
    """

    new_det_inds: list[int]
    unmatched_trk_ids: list[int]
    empty_trk_ids: list[int]
    det_to_trk_ids: list[list[int]]
    high_conf_pairs: dict[int, int]


def _as_logits(masks: Tensor) -> Tensor:
    # Binary masks act as logits 1/0 (same "> 0" decision); resizing them is then approximate.
    return masks.float() if masks.dtype == torch.bool else masks


def _binary_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of bool masks ``(N, H, W)`` x ``(M, H, W)`` -> float32 ``(N, M)``, exact counts."""
    # Counts come from a float matmul: keep autocast out so sums of 0/1 stay exact integers.
    with torch.autocast(device_type=a.device.type, enabled=False):
        return mask_iou(a, b)


def _check_stack(name: str, masks: Tensor) -> None:
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise InvalidInputError(f"{name}: expected a (N, H, W) tensor, got {shape}")


def _check_vector(name: str, values: Tensor, n: int, other: str) -> Tensor:
    if not isinstance(values, Tensor):
        raise InvalidInputError(f"{name}: expected a tensor, got {type(values).__name__}")
    values = values.reshape(-1) if values.dim() == 2 and values.shape[-1] == 1 else values
    if values.dim() != 1 or values.shape[0] != n:
        raise InvalidInputError(
            f"{name}: expected shape ({n},) like {other}, got {tuple(values.shape)}"
        )
    return values


def associate(
    det_masks: Tensor,
    det_scores: Tensor,
    trk_masks: Tensor,
    trk_ids: Sequence[int],
    heuristics: VideoHeuristics,
) -> Association:
    """Match detections with tracks as the official ``_associate_det_trk``.

    det_masks ``(D, h, w)`` logits (or bool), det_scores ``(D,)`` probabilities, trk_masks
    ``(T, H', W')`` logits (or bool), trk_ids ``T`` ids. Masks of different sizes are
    compared at the smaller one (bilinear, ``align_corners=False``). With no tracks every
    detection is new (no score check); with no detections every non-empty track is unmatched.
    """
    _check_stack("det_masks", det_masks)
    _check_stack("trk_masks", trk_masks)
    num_det, num_trk = det_masks.shape[0], trk_masks.shape[0]
    # Scores are compared in float32, as the official numpy arrays are.
    scores = _check_vector("det_scores", det_scores, num_det, "det_masks").float()
    trk_ids = [int(i) for i in trk_ids]
    if len(trk_ids) != num_trk:
        raise InvalidInputError(
            f"trk_ids: expected {num_trk} ids like trk_masks, got {len(trk_ids)}"
        )
    if num_trk == 0:
        return Association(list(range(num_det)), [], [], [[] for _ in range(num_det)], {})
    if num_det == 0:
        nonempty = (trk_masks > 0).flatten(1).any(dim=1).tolist()
        return Association(
            new_det_inds=[],
            unmatched_trk_ids=[i for i, ne in zip(trk_ids, nonempty) if ne],
            empty_trk_ids=[i for i, ne in zip(trk_ids, nonempty) if not ne],
            det_to_trk_ids=[],
            high_conf_pairs={},
        )

    det_masks, trk_masks = _as_logits(det_masks), _as_logits(trk_masks)
    if det_masks.shape[-2:] != trk_masks.shape[-2:]:
        if det_masks.shape[-2:].numel() < trk_masks.shape[-2:].numel():
            trk_masks = _resize(trk_masks, det_masks.shape[-2:])
        else:
            det_masks = _resize(det_masks, trk_masks.shape[-2:])
    trk_binary = trk_masks > 0
    ious = _binary_iou(det_masks > 0, trk_binary)  # (D, T)

    trk_nonempty = trk_binary.flatten(1).any(dim=1)
    trk_unmatched = trk_nonempty & ~(ious >= heuristics.trk_assoc_iou_thresh).any(dim=0)
    links = ious >= heuristics.assoc_iou_thresh  # (D, T) many-to-many
    is_new = (scores >= heuristics.new_det_thresh) & ~links.any(dim=1)
    best_trk = ious.argmax(dim=1)  # first maximum, as numpy
    high_conf = (scores >= HIGH_CONF_SCORE) & ~is_new & (ious.amax(dim=1) >= HIGH_CONF_IOU)

    # One transfer of the per-object decisions to the host.
    link_pairs = links.nonzero().tolist()
    is_new_l, high_l, best_l = is_new.tolist(), high_conf.tolist(), best_trk.tolist()
    nonempty_l, unmatched_l = trk_nonempty.tolist(), trk_unmatched.tolist()

    det_to_trk: list[list[int]] = [[] for _ in range(num_det)]
    for d, t in link_pairs:  # row-major: each list stays in track order
        det_to_trk[d].append(trk_ids[t])
    pairs: dict[int, int] = {}
    for d in range(num_det):
        if high_l[d]:
            pairs[trk_ids[best_l[d]]] = d  # a later detection overwrites an earlier one
    return Association(
        new_det_inds=[d for d in range(num_det) if is_new_l[d]],
        unmatched_trk_ids=[i for i, u in zip(trk_ids, unmatched_l) if u],
        empty_trk_ids=[i for i, ne in zip(trk_ids, nonempty_l) if not ne],
        det_to_trk_ids=det_to_trk,
        high_conf_pairs=pairs,
    )


def _resize(masks: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of ``(N, H, W)`` logits (``align_corners=False``)."""
    return F.interpolate(masks[:, None], size=tuple(size), mode="bilinear", align_corners=False)[
        :, 0
    ]


# ----------------------------------------------------------------------------------------------
# Cap, border, hotstart
# ----------------------------------------------------------------------------------------------
def _keep_top_scoring(inds: list[int], scores: Tensor, num_to_keep: int) -> list[int]:
    """The ``num_to_keep`` best of ``inds`` by score, best first (ties: larger index first)."""
    if num_to_keep <= 0:
        return []
    if num_to_keep >= len(inds):
        return inds
    # The official code reverses an ascending numpy argsort, which is stable at these sizes.
    order = torch.argsort(scores[inds].float(), stable=True).flip(0)[:num_to_keep].tolist()
    return [inds[i] for i in order]


def _away_from_border(boxes: Tensor) -> list[bool]:
    """Normalized xyxy boxes ``(N, 4)`` whose centre lies inside the border margin."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    xc, yc = (x0 + x1) / 2, (y0 + y1) / 2
    keep = (
        (xc > BORDER_MARGIN)
        & (xc < 1.0 - BORDER_MARGIN)
        & (yc > BORDER_MARGIN)
        & (yc < 1.0 - BORDER_MARGIN)
    )
    return keep.tolist()


def _hotstart(
    meta: TrackerMetadata,
    assoc: Association,
    new_obj_ids: list[int],
    frame_idx: int,
    reverse: bool,
    h: VideoHeuristics,
) -> set[int]:
    """Update the hotstart data of ``meta`` in place; return the ids removed on this frame."""
    for obj_id in new_obj_ids:
        meta.first_frame.setdefault(obj_id, frame_idx)
        meta.keep_alive[obj_id] = h.init_trk_keep_alive
    keep_alive = meta.keep_alive
    matched = {obj_id for ids in assoc.det_to_trk_ids for obj_id in ids}
    for obj_id in matched:
        keep_alive[obj_id] = min(h.max_trk_keep_alive, keep_alive.get(obj_id, 0) + 1)
    for obj_id in assoc.unmatched_trk_ids:
        meta.unmatched_count[obj_id] = meta.unmatched_count.get(obj_id, 0) + 1
        keep_alive[obj_id] = max(h.min_trk_keep_alive, keep_alive.get(obj_id, 0) - 1)
    if h.decrease_trk_keep_alive_for_empty_masklets:
        for obj_id in assoc.empty_trk_ids:
            keep_alive[obj_id] = max(h.min_trk_keep_alive, keep_alive.get(obj_id, 0) - 1)

    # Born within the last `hotstart_delay` frames, in the direction of travel.
    limit = frame_idx + h.hotstart_delay if reverse else frame_idx - h.hotstart_delay

    def within_hotstart(obj_id: int) -> bool:
        first = meta.first_frame.get(obj_id)
        if first is None:  # clicked object (see module doc)
            return False
        return first < limit if reverse else first > limit

    removed = meta.removed_ids
    newly_removed: set[int] = set()
    suppressed: set[int] = set()
    # Every object ever unmatched, tracked or not (the counts are cumulative).
    for obj_id, count in meta.unmatched_count.items():
        if obj_id in removed or obj_id in newly_removed:
            continue
        if count >= h.hotstart_unmatch_thresh and within_hotstart(obj_id):
            newly_removed.add(obj_id)
        if (
            keep_alive.get(obj_id, 0) <= 0
            and not h.suppress_unmatched_only_within_hotstart
            and obj_id not in newly_removed
        ):
            suppressed.add(obj_id)

    def birth_key(obj_id: int) -> float:
        first = meta.first_frame.get(obj_id)
        if first is None:  # clicked objects are the reference of a pair
            return float("inf") if reverse else float("-inf")
        return float(first)

    for ids in assoc.det_to_trk_ids:
        if len(ids) < 2:
            continue
        # Earliest-born track (latest going backward) is the reference; ties: track order.
        reference = max(ids, key=birth_key) if reverse else min(ids, key=birth_key)
        for obj_id in ids:
            if obj_id != reference:
                key = (reference, obj_id)
                meta.duplicate_count[key] = meta.duplicate_count.get(key, 0) + 1
    for (_, obj_id), count in meta.duplicate_count.items():
        if obj_id in removed or obj_id in newly_removed:
            continue
        if within_hotstart(obj_id) and count >= h.hotstart_dup_thresh:
            newly_removed.add(obj_id)

    removed.update(newly_removed)
    meta.add_suppressed(frame_idx, suppressed)
    return newly_removed


# ----------------------------------------------------------------------------------------------
# Occlusion suppression
# ----------------------------------------------------------------------------------------------
def suppress_recently_occluded(
    trk_masks: Tensor,
    obj_ids: Sequence[int],
    last_occluded: Mapping[int, int],
    newly_removed: Iterable[int],
    frame_idx: int,
    reverse: bool,
    iou_threshold: float,
) -> tuple[Tensor, Tensor, dict[int, int]]:
    """Hide the more recently occluded track of each strongly overlapping pair.

    trk_masks ``(T, h, w)`` logits in the order of ``obj_ids``; last_occluded: the previous
    frame's table (a missing id counts as never occluded, or as always occluded if it is in
    ``newly_removed``). For each pair i < j with mask IoU >= ``iou_threshold``: going forward
    i is suppressed if last[i] > last[j] > -1 (and j symmetrically); going backward if
    last[i] < last[j] and last[j] > -1. Returns the masks with suppressed tracks set to -10
    (new tensor), the suppressed flags ``(T,)`` and the new table (ids of ``obj_ids`` only;
    empty or suppressed tracks get ``frame_idx``).
    """
    _check_stack("trk_masks", trk_masks)
    obj_ids = [int(i) for i in obj_ids]
    if len(obj_ids) != trk_masks.shape[0]:
        raise InvalidInputError(
            f"obj_ids: expected {trk_masks.shape[0]} ids like trk_masks, got {len(obj_ids)}"
        )
    removed = set(newly_removed)
    device = trk_masks.device
    last = torch.tensor(
        [
            last_occluded.get(i, ALWAYS_OCCLUDED if i in removed else NEVER_OCCLUDED)
            for i in obj_ids
        ],
        dtype=torch.long,
        device=device,
    )
    binary = trk_masks > 0
    suppress = torch.zeros(len(obj_ids), dtype=torch.bool, device=device)
    if len(obj_ids) > 1:
        iou = _binary_iou(binary, binary)
        pairs = torch.triu(iou >= iou_threshold, diagonal=1)  # (T, T), i < j
        li, lj = last[:, None], last[None, :]
        later = torch.gt if not reverse else torch.lt
        # Only a track that has been occluded before can be the one that stays.
        suppress_i = pairs & later(li, lj) & (lj > NEVER_OCCLUDED)
        suppress_j = pairs & later(lj, li) & (li > NEVER_OCCLUDED)
        suppress = suppress_i.any(dim=1) | suppress_j.any(dim=0)
    occluded = ~binary.flatten(1).any(dim=1)
    last_new = torch.where(occluded | suppress, frame_idx, last)
    masks = torch.where(suppress[:, None, None], SUPPRESSED_LOGIT, trk_masks)
    return masks, suppress, dict(zip(obj_ids, last_new.tolist()))


# ----------------------------------------------------------------------------------------------
# The plan of one frame
# ----------------------------------------------------------------------------------------------
@dataclass
class FramePlan:
    """Result of `plan_frame` (see module doc for how the session executes it).

    new_obj_ids / new_det_inds: newborn ids and the detection each comes from (same order).
    removed_obj_ids: ids removed by hotstart on this frame (ascending; may include ids no
    longer tracked). num_dropped: new detections dropped by the object cap. recondition:
    obj_id -> detection index to re-prompt the track with on this frame. suppressed_obj_ids:
    tracks hidden by occlusion suppression on this frame. trk_masks ``(T, h, w)``: the tracks'
    logits after occlusion suppression (for the memory update and the outputs). metadata:
    the metadata after this frame.
    """

    new_obj_ids: list[int]
    new_det_inds: list[int]
    removed_obj_ids: list[int]
    num_dropped: int
    association: Association
    recondition: dict[int, int]
    suppressed_obj_ids: list[int]
    trk_masks: Tensor
    metadata: TrackerMetadata = field(repr=False)


def plan_frame(
    det_masks: Tensor,
    det_scores: Tensor,
    trk_masks: Tensor,
    trk_score_logits: Tensor,
    metadata: TrackerMetadata,
    frame_idx: int,
    reverse: bool = False,
    is_image_only: bool = False,
    det_boxes: Tensor | None = None,
    heuristics: VideoHeuristics | None = None,
) -> FramePlan:
    """Plan one frame as the official ``run_tracker_update_planning_phase`` (see module doc).

    det_masks ``(D, h, w)`` logits, det_scores ``(D,)`` probabilities, det_boxes ``(D, 4)``
    normalized xyxy (only read by the border rule): the detections kept after NMS, in
    ascending query order. trk_masks ``(T, h', w')`` hole-filled low-res logits and
    trk_score_logits ``(T,)`` (or ``(T, 1)``) object-score logits of the tracks in
    ``metadata.obj_ids`` order. ``metadata`` is not changed; the plan carries the new one.
    """
    h = heuristics if heuristics is not None else VideoHeuristics()
    if isinstance(frame_idx, bool) or not isinstance(frame_idx, int) or frame_idx < 0:
        raise InvalidInputError(f"frame_idx: expected an integer >= 0, got {frame_idx!r}")
    _check_stack("trk_masks", trk_masks)
    metadata.check_consistent(trk_masks.shape[0], "trk_masks")
    num_trk = trk_masks.shape[0]
    trk_score_logits = _check_vector("trk_score_logits", trk_score_logits, num_trk, "trk_masks")
    prev_ids = list(metadata.obj_ids)

    meta = metadata.copy()
    meta.last_occluded = {}  # rebuilt by occlusion suppression (left empty when it is off)

    assoc = associate(det_masks, det_scores, trk_masks, prev_ids, h)
    new_inds = assoc.new_det_inds
    if h.suppress_det_close_to_boundary and new_inds:
        if det_boxes is None or det_boxes.shape != (det_masks.shape[0], 4):
            given = None if det_boxes is None else tuple(det_boxes.shape)
            raise InvalidInputError(
                f"det_boxes: expected ({det_masks.shape[0]}, 4) normalized xyxy boxes "
                f"(suppress_det_close_to_boundary is on), got {given}"
            )
        keep = _away_from_border(det_boxes[new_inds])
        new_inds = [d for d, k in zip(new_inds, keep) if k]

    num_dropped = 0
    if not is_image_only and num_trk + len(new_inds) > h.max_num_objects:
        num_to_keep = max(h.max_num_objects - num_trk, 0)
        num_dropped = len(new_inds) - num_to_keep
        new_inds = _keep_top_scoring(new_inds, det_scores, num_to_keep)
    new_ids = list(range(metadata.max_obj_id + 1, metadata.max_obj_id + 1 + len(new_inds)))

    newly_removed = _hotstart(meta, assoc, new_ids, frame_idx, reverse, h)

    recondition: dict[int, int] = {}
    n = h.recondition_every_nth_frame
    if n > 0 and frame_idx % n == 0 and assoc.high_conf_pairs:
        # Compared in the logits' own dtype, as the official tensor comparison.
        confident = (trk_score_logits > RECONDITION_MIN_LOGIT).tolist()
        recondition = {
            obj_id: d
            for obj_id, d in assoc.high_conf_pairs.items()
            if confident[prev_ids.index(obj_id)]
        }

    masks_out = trk_masks
    suppressed_ids: list[int] = []
    threshold = h.suppress_overlapping_based_on_recent_occlusion_threshold
    if num_trk > 0 and threshold > 0.0:
        masks_out, suppress, meta.last_occluded = suppress_recently_occluded(
            trk_masks,
            prev_ids,
            metadata.last_occluded,
            newly_removed,
            frame_idx,
            reverse,
            threshold,
        )
        suppressed_ids = [i for i, s in zip(prev_ids, suppress.tolist()) if s]

    # Metadata for the next frame.
    meta.obj_ids = [i for i in prev_ids + new_ids if i not in newly_removed]
    if new_ids:
        new_scores = det_scores.float()[new_inds].tolist()
        born = dict(zip(new_ids, new_scores))
        meta.obj_id_to_score.update(born)
        meta.set_frame_scores(frame_idx, born)  # the tracker has no score for them yet
        meta.max_obj_id = max(meta.max_obj_id, new_ids[-1])
    for obj_id in newly_removed:
        meta.obj_id_to_score[obj_id] = REMOVED_SCORE
        meta.last_occluded.pop(obj_id, None)
    meta.set_frame_scores(frame_idx, dict.fromkeys(newly_removed, REMOVED_SCORE))
    if num_trk > 0:
        # Overwrites the -1e4 of tracks removed on this very frame, as officially.
        meta.set_frame_scores(frame_idx, dict(zip(prev_ids, trk_score_logits.sigmoid().tolist())))

    return FramePlan(
        new_obj_ids=new_ids,
        new_det_inds=list(new_inds),
        removed_obj_ids=sorted(newly_removed),
        num_dropped=num_dropped,
        association=assoc,
        recondition=recondition,
        suppressed_obj_ids=suppressed_ids,
        trk_masks=masks_out,
        metadata=meta,
    )


# ----------------------------------------------------------------------------------------------
# Memory update: non-overlap and shrink suppression
# ----------------------------------------------------------------------------------------------
def pixelwise_non_overlap(masks: Tensor) -> Tensor:
    """``(N, 1, H, W)`` logits: at each pixel the highest object keeps its logit, the others
    get ``min(logit, -10)`` (ties: lowest index). One object is returned unchanged."""
    return apply_non_overlapping_constraints(masks)


def suppress_shrinkage(masks: Tensor) -> Tensor:
    """Suppress objects that pixel-wise non-overlap would shrink below 0.3 of their area.

    ``masks (N, 1, H, W)`` logits -> same shape. An object whose foreground area after
    `pixelwise_non_overlap` is < 0.3 x its area before (an empty mask counts as area 1, so it
    is always suppressed) gets ``min(logit, -10)`` everywhere; the others keep their ORIGINAL
    logits (overlaps remain).
    """
    if masks.dim() != 4 or masks.shape[1] != 1:
        raise InvalidInputError(f"masks: expected (N, 1, H, W) logits, got {tuple(masks.shape)}")
    return suppress_object_pw_area_shrinkage(masks, SHRINK_RATIO)


def prepare_memory_update(
    low_res_masks: Tensor, size: int | tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Masks and object-score logits that the memory encoder gets for the tracked objects.

    ``low_res_masks (T, h, w)`` logits (after occlusion suppression) -> bilinear resize to
    ``size`` (1152), `suppress_shrinkage` over all objects together, and object-score logits
    ``(T, 1)`` = +10 where any pixel is positive, else -10. Returns ``(T, 1, S, S)`` and
    ``(T, 1)``.
    """
    _check_stack("low_res_masks", low_res_masks)
    size = (size, size) if isinstance(size, int) else tuple(size)
    masks = F.interpolate(low_res_masks[:, None], size=size, mode="bilinear", align_corners=False)
    if masks.shape[0] > 0:
        masks = suppress_shrinkage(masks)
    present = (masks > 0).any(dim=(-1, -2))
    return masks, torch.where(present, MEMORY_SCORE_LOGIT, -MEMORY_SCORE_LOGIT)


def tracked_inputs(
    obj_ids: list[int],
    low_res: dict[int, Tensor],
    scores: dict[int, Tensor],
    side: int,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """The planner's track inputs for ``obj_ids``: their low-resolution mask logits
    ``(N, side, side)`` and object scores ``(N,)``, stacked in id order (empty tensors on
    ``device`` when there is no track)."""
    if not obj_ids:
        return torch.zeros(0, side, side, device=device), torch.zeros(0, device=device)
    return torch.stack([low_res[i] for i in obj_ids]), torch.stack([scores[i] for i in obj_ids])


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------
def build_frame_masks(
    trk_masks: Tensor,
    trk_ids: Sequence[int],
    det_masks: Tensor,
    new_det_inds: Sequence[int],
    new_obj_ids: Sequence[int],
    video_size: tuple[int, int],
    fill_hole_area: int,
) -> dict[int, Tensor]:
    """The frame's ``obj_id -> (1, H, W)`` bool masks at video resolution (unfiltered).

    Tracks: ``trk_masks (T, h, w)`` (after occlusion suppression) resized bilinearly and
    thresholded at > 0. Newborns: their detection logits ``det_masks[new_det_inds]``,
    hole-filled (``fill_hole_area``), resized and thresholded the same way.
    """
    _check_stack("trk_masks", trk_masks)
    _check_stack("det_masks", det_masks)
    if len(trk_ids) != trk_masks.shape[0] or len(new_det_inds) != len(new_obj_ids):
        raise InvalidInputError(
            f"trk_ids / new_obj_ids: expected {trk_masks.shape[0]} / {len(new_det_inds)} ids, "
            f"got {len(trk_ids)} / {len(new_obj_ids)}"
        )
    size = tuple(video_size)
    out: dict[int, Tensor] = {}
    if trk_masks.shape[0] > 0:
        video = F.interpolate(trk_masks[:, None], size=size, mode="bilinear", align_corners=False)
        out.update(zip((int(i) for i in trk_ids), video > 0))
    if len(new_det_inds) > 0:
        index = torch.as_tensor(list(new_det_inds), dtype=torch.long, device=det_masks.device)
        born = fill_holes_in_mask_scores(det_masks[index][:, None], max_area=fill_hole_area)
        video = F.interpolate(born, size=size, mode="bilinear", align_corners=False)
        out.update(zip((int(i) for i in new_obj_ids), video > 0))
    return out


def object_wise_non_overlap(masks: Tensor, scores: Tensor) -> Tensor:
    """Give each contested pixel to one object, by object score (official output rule).

    ``masks (N, H, W)`` bool, ``scores (N,)`` -> ``(N, H, W)`` bool. At each pixel the
    object with the highest score among those covering it wins (objects not covering it count
    as 0; ties: lowest index); everyone else loses the pixel, and so does the winner if its
    score is <= 0. So with several objects, an object with score <= 0 ends empty. A single
    object is returned unchanged.
    """
    _check_stack("masks", masks)
    if masks.dtype != torch.bool:
        raise InvalidInputError(f"masks: expected dtype torch.bool, got {masks.dtype}")
    scores = _check_vector("scores", scores, masks.shape[0], "masks").float()
    if masks.shape[0] <= 1:
        return masks
    # The logit rule on 1/0 masks with background 0: winners keep 1 only if their score > 0.
    kept = apply_object_wise_non_overlapping_constraints(
        masks[:, None].float(), scores.to(masks.device)[:, None], background_value=0.0
    )
    return kept[:, 0] > 0


class FrameOutput(NamedTuple):
    """Post-processed output of one frame (ascending ids).

    obj_ids ``(N,)`` int64, probs ``(N,)`` float32 (stored object scores), boxes_xywh
    ``(N, 4)`` float32 normalized ``[x0/W, y0/H, (x1-x0)/W, (y1-y0)/H]`` with inclusive pixel
    maxima, computed BEFORE the object-wise non-overlap, masks ``(N, H, W)`` bool.
    """

    obj_ids: Tensor
    probs: Tensor
    boxes_xywh: Tensor
    masks: Tensor


def postprocess_frame(
    obj_id_to_mask: Mapping[int, Tensor],
    obj_id_to_score: Mapping[int, float],
    tracker_scores: Mapping[int, float],
    video_size: tuple[int, int],
    hidden_ids: Iterable[int] = (),
) -> FrameOutput:
    """The official ``_postprocess_output`` of a frame's ``obj_id -> (1, H, W) or (H, W)`` masks.

    1. ids ascending; 2. drop empty masks and ``hidden_ids``; 3. boxes; 4. with more than one
    object left, `object_wise_non_overlap` with each object's tracker score on this frame
    (``tracker_scores``, 0.0 when absent). An object may end with an empty mask and its box.
    """
    height, width = video_size
    ids = sorted(int(i) for i in obj_id_to_mask)
    if not ids:
        return FrameOutput(
            torch.zeros(0, dtype=torch.int64),
            torch.zeros(0, dtype=torch.float32),
            torch.zeros(0, 4, dtype=torch.float32),
            torch.zeros(0, height, width, dtype=torch.bool),
        )
    missing = [i for i in ids if i not in obj_id_to_score]
    if missing:
        raise UnknownIdError(f"obj_id_to_score: expected a score for ids {missing}, got none")
    masks = torch.stack([obj_id_to_mask[i].reshape(height, width) for i in ids])
    if masks.dtype != torch.bool:
        raise InvalidInputError(f"obj_id_to_mask: expected bool masks, got {masks.dtype}")
    device = masks.device
    hidden = set(int(i) for i in hidden_ids)
    keep = masks.flatten(1).any(dim=1).tolist()
    rows = [k for k, i in enumerate(ids) if keep[k] and i not in hidden]

    obj_ids = torch.tensor([ids[k] for k in rows], dtype=torch.int64, device=device)
    probs = torch.tensor([float(obj_id_to_score[ids[k]]) for k in rows], dtype=torch.float32)
    trk = torch.tensor([float(tracker_scores.get(ids[k], 0.0)) for k in rows], dtype=torch.float32)
    masks = masks[torch.tensor(rows, dtype=torch.long, device=device)]
    boxes = masks_to_boxes(masks, inclusive=True)
    boxes = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
    boxes = boxes / torch.tensor([width, height, width, height], dtype=boxes.dtype, device=device)
    masks = object_wise_non_overlap(masks, trk.to(device))
    return FrameOutput(obj_ids, probs.to(device), boxes, masks)
