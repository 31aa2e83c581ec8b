"""SAM 3.1 video planning: the detection–tracking decisions of one frame (pure functions).

The SAM 3.1 ("Object Multiplex") video model keeps SAM 3's loop (detector -> every tracker
state advances one frame -> PLAN -> execute -> outputs) but re-implements the planning with
vectorised tensors and other settings (`VideoHeuristics31`). This module reproduces the
official 3.1 planning (``Sam3MultiplexBase.run_tracker_update_planning_phase`` and the helpers
it calls, facebookresearch/sam3 at the 3.1 release 9f22cb9), including its regressions; it
reuses the SAM 3 planner's pieces where the official 3.1 code reuses SAM 3 logic (border rule,
object cap, occlusion suppression, mask resizing; memory-update and output helpers stay in
`sam3video.video.planner`). Every tensor op takes its device from its inputs; decisions are
made on the host after one small transfer, as in the SAM 3 planner.

Per frame, the session calls (see docs/sam31_video_logic.md section 7 item 4):

1. `select_detections31` on ALL detector queries of the frame: score > 0.4, IoM NMS (0.1) among
   them, border rule -> post-NMS probabilities and a keep mask (NOT a filtered list);
2. `plan_frame31` with all queries, their keep mask, the tracks' low-res logits and object
   score logits in ``metadata.obj_ids`` order -> `FramePlan31`;
3. execution as in SAM 3 (reconditioning, memory update from ``plan.trk_masks``, births,
   removals), then outputs from ``plan.trk_masks`` and the newborns' detection masks;
4. at yield time, hide ``hidden_ids31(...)`` (unconfirmed objects, two frames ahead).

Differences from SAM 3 (our `sam3video.video.planner`), all official 3.1 behaviour:

- association, births and reconditioning use IoM (intersection over the smaller mask) when
  ``use_iom`` (default); detections come as all queries plus a keep mask; the non-kept ones
  have their masks zeroed and can never match, be born or recondition, EXCEPT on a frame
  without tracks, where every query with score >= ``new_det_thresh`` is born, kept or not
  (official regression: in practice a detection dropped by the border rule is born when
  nothing is tracked yet);
- ambiguity rule: a detection reaching ``iom_thresh_recondition`` (0.5) with 2+ tracks, or a
  track reaching it with 2+ detections, has those rows/columns zeroed before the "matched"
  mask: such tracks count as matched for the unmatched counter (computed before) but NOT for
  keep-alive, duplicate counting, masklet confirmation or reconditioning;
- keep-alive: +1 matched, -1 for every other track, empty ones too (SAM 3: only non-empty
  unmatched ones), clamp [-4, 8], newborns start at 0; it only feeds a suppression that the
  official computes and never applies, so nothing is suppressed by keep-alive;
- duplicates: on each detection matched by 2+ tracks, EVERY pair of them (earlier, later in
  the global order) counts one frame; an object is removed within hotstart when its count with
  an object born STRICTLY earlier (later frame going backward) reaches ``hotstart_dup_thresh``
  (SAM 3: only (first-born, other) pairs; same-frame births could remove each other);
- only tracked objects are examined by hotstart, and a removed object's counters are dropped
  (SAM 3 kept examining every object ever unmatched);
- removed objects are never added to ``metadata.removed_ids`` and ``metadata.suppressed`` is
  never filled: the official 3.1 active path never fills the sets that SAM 3 uses to hide
  objects on frames buffered before their removal, so those frames keep showing them;
- occlusion suppression: a track removed on this frame counts as occluded at frame 100000
  even if it has an entry (SAM 3: only without one);
- reconditioning (every 16th frame): sigmoid(object score) > 0.8 (SAM 3: logit > 0.8); the
  track's low-res logits become the detection's where the two binary masks disagree (then
  hole filling), and these edited logits feed occlusion suppression, memory and outputs;
- masklet confirmation: a per-object streak of frames on which it was born or matched (after
  the ambiguity rule); confirmed for good at 3; the output of frame t hides objects still
  unconfirmed at frame t+2 (t-2 backward, clamped to the video) if that frame was processed
  in the same propagation call, and only when ``hotstart_delay > 0``.

Ties (documented choices): the official orders queries with ``keep.argsort(descending=True)``
and NMS candidates with ``probs.argsort(descending=True)``, both unstable sorts; we make the
SAME calls, so the order equals the official one on the same device and torch version (on CPU
with more than 16 queries the kept queries are NOT in query order). The object cap orders new
detections with numpy's unstable ``argsort``; we use `_keep_top_scoring` (stable, ties: later
index first), which can differ from the official only between exactly equal scores.

Where the official crashes or cannot get (not reproduced): objects created by clicks during a
full propagation (the official GPU hotstart metadata is not extended by clicks: assertion;
here such objects are never removed by hotstart and are the earlier one of every pair, as in
SAM 3); more tracked objects than the cap (official assertion; here no births); a frame whose
detector returned no query at all (then every track, empty ones too, is unmatched, as the
official branch for it says; the real detector always returns all its queries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sam3video.errors import ConfigError, InvalidInputError
from sam3video.video.metadata import REMOVED_SCORE, TrackerMetadata
from sam3video.video.planner import (
    ALWAYS_OCCLUDED,
    HIGH_CONF_SCORE,
    NEVER_OCCLUDED,
    VideoHeuristics,
    _as_logits,
    _away_from_border,
    _binary_iou,
    _check_stack,
    _check_vector,
    _keep_top_scoring,
    _resize,
    suppress_recently_occluded,
)
from sam3video.video.postprocess import fill_holes_in_mask_scores

__all__ = [
    "Association31",
    "FramePlan31",
    "TrackerMetadata31",
    "VideoHeuristics31",
    "associate31",
    "hidden_ids31",
    "hotstart31",
    "mask_iom",
    "nms_keep31",
    "plan_frame31",
    "recondition31",
    "register_click31",
    "select_detections31",
    "unconfirmed_status_frame",
    "update_confirmation31",
]

RECONDITION_MIN_PROB = 0.8  # sigmoid(tracker object score) above which a track is reconditioned
NMS_SUPPRESSED_LOGIT_SHIFT = 1e4  # subtracted from the logits of queries removed by NMS


# ----------------------------------------------------------------------------------------------
# Heuristics
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoHeuristics31(VideoHeuristics):
    """The 3.1 settings (``build_sam3_multiplex_video_predictor``); defaults are the preset.

    Inherits SAM 3's fields (so session code reading ``hotstart_delay``, ``fill_hole_area``,
    ``max_num_objects``... works unchanged) with the 3.1 values, plus: ``det_nms_use_iom``
    (NMS on IoM), ``image_only_det_thresh`` (birth threshold of single images), ``use_iom``
    (the official ``use_iom_recondition``: IoM for matching, births, ambiguity and
    reconditioning), ``iom_thresh_recondition`` / ``iou_thresh_recondition`` (reconditioning and
    ambiguity threshold for IoM / IoU), masklet confirmation switch and streak length.
    Unset by the 3.1 builder, hence class defaults: ``trk_assoc_iou_thresh`` 0.5,
    keep-alive init 0 / max 8 / min -4, no empty-track keep-alive decrease.
    ``max_num_objects`` is 16 (the builder's argument; pass a larger one for crowded videos).
    The official ``sprinkle_removal_area`` is not a field: with ``fill_hole_area`` 0 the
    official hole filling returns early and never reads it.
    """

    score_threshold_detection: float = 0.4
    new_det_thresh: float = 0.65
    suppress_unmatched_only_within_hotstart: bool = False
    init_trk_keep_alive: int = 0
    max_trk_keep_alive: int = 8
    min_trk_keep_alive: int = -4
    suppress_det_close_to_boundary: bool = True
    fill_hole_area: int = 0
    max_num_objects: int = 16
    det_nms_use_iom: bool = True
    image_only_det_thresh: float = 0.5
    use_iom: bool = True
    iom_thresh_recondition: float = 0.5
    iou_thresh_recondition: float = 0.8
    masklet_confirmation_enable: bool = True
    masklet_confirmation_consecutive_det_thresh: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.masklet_confirmation_consecutive_det_thresh < 1:
            raise ConfigError(
                "masklet_confirmation_consecutive_det_thresh: expected >= 1, got "
                f"{self.masklet_confirmation_consecutive_det_thresh}"
            )

    @property
    def recondition_thresh(self) -> float:
        """Threshold of reconditioning and of the ambiguity rule, in the association metric."""
        return self.iom_thresh_recondition if self.use_iom else self.iou_thresh_recondition


# ----------------------------------------------------------------------------------------------
# Metadata: SAM 3's plus masklet confirmation
# ----------------------------------------------------------------------------------------------
@dataclass
class TrackerMetadata31(TrackerMetadata):
    """`TrackerMetadata` plus the 3.1 masklet confirmation (see module doc for field use).

    det_streak: obj_id -> consecutive processed frames on which it was born or matched by a
    detection. confirmed: ids whose streak reached the threshold once (sticky).
    ``duplicate_count`` keys are (earlier, later) in the global order (every pair, 3.1 rule);
    ``removed_ids`` and ``suppressed`` stay empty (see module doc).
    """

    det_streak: dict[int, int] = field(default_factory=dict)
    confirmed: set[int] = field(default_factory=set)

    def copy(self) -> TrackerMetadata31:
        base = TrackerMetadata.copy(self)
        return TrackerMetadata31(
            **vars(base), det_streak=dict(self.det_streak), confirmed=set(self.confirmed)
        )

    def unconfirmed_ids(self) -> list[int]:
        """Tracked ids not confirmed yet, in the global order."""
        return [i for i in self.obj_ids if i not in self.confirmed]

    def forget(self, obj_ids: Sequence[int]) -> None:
        """Drop the per-object planning data of ``obj_ids`` (the official compaction)."""
        gone = set(obj_ids)
        for table in (
            self.first_frame,
            self.unmatched_count,
            self.keep_alive,
            self.last_occluded,
            self.det_streak,
        ):
            for i in gone:
                table.pop(i, None)
        self.confirmed -= gone
        self.duplicate_count = {
            k: v for k, v in self.duplicate_count.items() if k[0] not in gone and k[1] not in gone
        }


def register_click31(
    meta: TrackerMetadata31, obj_id: int, frame_idx: int, heuristics: VideoHeuristics31
) -> bool:
    """A click on ``obj_id`` (read in the official ``add_sam2_new_points``, not run).

    SAM 3's bookkeeping (`TrackerMetadata.register_click`), then for an id that was already
    tracked: streak = threshold and status UNCONFIRMED (the official writes status value 1,
    which is UNCONFIRMED: a click does NOT confirm, it un-confirms; the next matched frame
    confirms). A new id gets no confirmation entry (streak 0). Returns True if the id is new.
    """
    is_new = meta.register_click(obj_id, frame_idx)
    if not is_new:
        meta.det_streak[int(obj_id)] = heuristics.masklet_confirmation_consecutive_det_thresh
        meta.confirmed.discard(int(obj_id))
    return is_new


# ----------------------------------------------------------------------------------------------
# Detections: IoM, NMS, border
# ----------------------------------------------------------------------------------------------
def mask_iom(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over the smaller area of bool masks ``(N, H, W)`` x ``(M, H, W)`` ->
    float32 ``(N, M)``; 0 where either mask is empty. Same arithmetic as the official
    (exact integer counts, ``inter / (min_area + 1e-8)`` in float32)."""
    with torch.autocast(device_type=a.device.type, enabled=False):
        fa, fb = a.flatten(1).float(), b.flatten(1).float()
        inter = fa @ fb.T  # exact for < 2**24 pixels
        min_area = torch.minimum(fa.sum(1)[:, None], fb.sum(1)[None, :])
        return inter / (min_area + 1e-8)


def _overlaps(a: Tensor, b: Tensor, use_iom: bool) -> Tensor:
    return mask_iom(a, b) if use_iom else _binary_iou(a, b)


def nms_keep31(
    probs: Tensor, masks: Tensor, prob_threshold: float, threshold: float, use_iom: bool = True
) -> Tensor:
    """Greedy mask NMS over all queries, as the official batched ``nms_masks`` for one frame.

    probs ``(Q,)``, masks ``(Q, H, W)`` logits -> keep ``(Q,)`` bool: queries with prob >
    ``prob_threshold`` visited by ``probs.argsort(descending=True)`` (the official's unstable
    call, see module doc); a kept one drops every later one whose IoM (or IoU) with it is >
    ``threshold``.
    """
    _check_stack("masks", masks)
    probs = _check_vector("probs", probs, masks.shape[0], "masks")
    valid = probs > prob_threshold
    if masks.shape[0] == 0:
        return valid
    # The official visits ALL queries in this (unstable) order; invalid ones are never kept and
    # never suppress, so only the valid ones, in that order, need overlaps.
    order = probs.argsort(descending=True)
    cand = order[valid[order]]
    binary = masks[cand] > 0
    over_l = (_overlaps(binary, binary, use_iom) > threshold).tolist()
    n = len(over_l)
    keep = [True] * n
    for i in range(n):  # sequential by nature
        if keep[i]:
            row = over_l[i]
            for j in range(i + 1, n):
                if row[j]:
                    keep[j] = False
    out = torch.zeros_like(valid)
    out[cand] = torch.tensor(keep, dtype=torch.bool, device=valid.device)
    return out


def select_detections31(
    logits: Tensor, masks: Tensor, boxes: Tensor, heuristics: VideoHeuristics31
) -> tuple[Tensor, Tensor]:
    """The official 3.1 detector post-processing of one frame's queries.

    logits ``(Q,)`` (or ``(Q, 1)``) score logits, masks ``(Q, h, w)`` mask logits, boxes
    ``(Q, 4)`` normalized xyxy. NMS (`nms_keep31`, only when ``det_nms_thresh > 0``) subtracts
    1e4 from the logits of the queries it drops; then probs = sigmoid, keep = probs >
    ``score_threshold_detection`` and, with ``suppress_det_close_to_boundary``, box centre
    outside the 2.5 % border. Returns ``(probs (Q,) float32, keep (Q,) bool)`` for ALL
    queries: `plan_frame31` needs the non-kept ones too.
    """
    h = heuristics
    _check_stack("masks", masks)
    logits = _check_vector("logits", logits, masks.shape[0], "masks").float()
    if h.det_nms_thresh > 0.0:
        nms = nms_keep31(
            logits.sigmoid(),
            masks,
            h.score_threshold_detection,
            h.det_nms_thresh,
            h.det_nms_use_iom,
        )
        logits = logits - NMS_SUPPRESSED_LOGIT_SHIFT * (~nms).float()
    probs = logits.sigmoid()
    keep = probs > h.score_threshold_detection
    if h.suppress_det_close_to_boundary and masks.shape[0] > 0:
        if not isinstance(boxes, Tensor) or boxes.shape != (masks.shape[0], 4):
            given = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise InvalidInputError(
                f"boxes: expected ({masks.shape[0]}, 4) normalized xyxy boxes, got {given}"
            )
        away = torch.tensor(_away_from_border(boxes.float()), dtype=torch.bool)
        keep = keep & away.to(keep.device)
    return probs, keep


# ----------------------------------------------------------------------------------------------
# Association
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Association31:
    """Queries (``Q``, caller's order) against tracks (global order); see `associate31`.

    new_det_inds: queries that start an object, in the official order (kept-first sort).
    unmatched_trk_ids: non-empty tracks without a query at metric >= ``trk_assoc_iou_thresh``
    (before the ambiguity rule). empty_trk_ids: tracks with an empty mask.
    det_to_trk_ids: kept query -> tracks at metric >= ``assoc_iou_thresh`` after the ambiguity
    rule (track order; insertion in the official order). matched_trk_ids: union of those.
    high_conf_pairs: track id -> query of a high-confidence unambiguous pair (official dict
    order: first insertion, a later query overwrites the value). ambiguous_det_inds /
    ambiguous_trk_ids: rows / columns zeroed by the ambiguity rule.
    """

    new_det_inds: list[int]
    unmatched_trk_ids: list[int]
    empty_trk_ids: list[int]
    det_to_trk_ids: dict[int, list[int]]
    matched_trk_ids: list[int]
    high_conf_pairs: dict[int, int]
    ambiguous_det_inds: list[int]
    ambiguous_trk_ids: list[int]


def associate31(
    det_masks: Tensor,
    det_scores: Tensor,
    det_keep: Tensor,
    trk_masks: Tensor,
    trk_ids: Sequence[int],
    heuristics: VideoHeuristics31,
    new_det_thresh: float | None = None,
) -> Association31:
    """The official ``_associate_det_trk`` + ``_associate_det_trk_compilable`` (3.1).

    det_masks ``(Q, h, w)`` logits, det_scores ``(Q,)`` post-NMS probabilities, det_keep
    ``(Q,)`` bool (`select_detections31`), trk_masks ``(T, h', w')`` logits with ids
    ``trk_ids``. Sizes differ: compared at the smaller one (bilinear). ``new_det_thresh``
    overrides the heuristics' (single images use ``image_only_det_thresh``).
    """
    h = heuristics
    _check_stack("det_masks", det_masks)
    _check_stack("trk_masks", trk_masks)
    num_det, num_trk = det_masks.shape[0], trk_masks.shape[0]
    scores = _check_vector("det_scores", det_scores, num_det, "det_masks").float()
    keep = _check_vector("det_keep", det_keep, num_det, "det_masks").bool()
    trk_ids = [int(i) for i in trk_ids]
    if len(trk_ids) != num_trk:
        raise InvalidInputError(
            f"trk_ids: expected {num_trk} ids like trk_masks, got {len(trk_ids)}"
        )
    thresh = h.new_det_thresh if new_det_thresh is None else new_det_thresh
    # The official moves kept queries to the front with this (unstable) sort; same call here.
    order = keep.argsort(descending=True)
    order_l = order.tolist()
    scores, keep = scores[order], keep[order]
    keep_l = keep.tolist()

    if num_trk == 0:  # no track: the keep mask is NOT applied to births (official)
        is_new = (scores >= thresh).tolist()
        return Association31(
            new_det_inds=[order_l[p] for p in range(num_det) if is_new[p]],
            unmatched_trk_ids=[],
            empty_trk_ids=[],
            det_to_trk_ids={order_l[p]: [] for p in range(num_det) if keep_l[p]},
            matched_trk_ids=[],
            high_conf_pairs={},
            ambiguous_det_inds=[],
            ambiguous_trk_ids=[],
        )
    if num_det == 0:  # official branch: every track unmatched, empty ones too
        nonempty = (trk_masks > 0).flatten(1).any(dim=1).tolist()
        return Association31(
            new_det_inds=[],
            unmatched_trk_ids=list(trk_ids),
            empty_trk_ids=[i for i, ne in zip(trk_ids, nonempty) if not ne],
            det_to_trk_ids={},
            matched_trk_ids=[],
            high_conf_pairs={},
            ambiguous_det_inds=[],
            ambiguous_trk_ids=[],
        )

    # Non-kept queries have their masks zeroed officially, so their rows are 0: only the kept
    # ones (the first positions of the kept-first order) are compared.
    pos = torch.nonzero(keep).squeeze(1)
    kept_masks = _as_logits(det_masks[order[pos].to(det_masks.device)])
    trk_masks = _as_logits(trk_masks)
    if det_masks.shape[-2:] != trk_masks.shape[-2:]:
        if det_masks.shape[-2:].numel() < trk_masks.shape[-2:].numel():
            trk_masks = _resize(trk_masks, det_masks.shape[-2:])
        elif kept_masks.shape[0] > 0:
            kept_masks = _resize(kept_masks, trk_masks.shape[-2:])
    trk_binary = trk_masks > 0
    metric = trk_masks.new_zeros(num_det, num_trk, dtype=torch.float32)
    if pos.numel() > 0:
        metric[pos.to(metric.device)] = _overlaps(kept_masks > 0, trk_binary, h.use_iom)
    keep, scores = keep.to(metric.device), scores.to(metric.device)

    trk_nonempty = trk_binary.flatten(1).any(dim=1)
    trk_unmatched = trk_nonempty & ~(metric >= h.trk_assoc_iou_thresh).any(dim=0)
    is_new = (scores >= thresh) & keep & ~(metric >= h.assoc_iou_thresh).any(dim=1)
    strong = metric >= h.recondition_thresh
    det_many, trk_many = strong.sum(dim=1) > 1, strong.sum(dim=0) > 1
    metric = torch.where(trk_many[None, :] | det_many[:, None], 0.0, metric)
    best = metric.argmax(dim=1)  # first maximum
    high = (
        (scores >= HIGH_CONF_SCORE) & keep & ~is_new & (metric.amax(dim=1) >= h.recondition_thresh)
    )
    links = metric >= h.assoc_iou_thresh

    # One transfer of the decisions to the host.
    link_pairs = links.nonzero().tolist()
    is_new_l, high_l, best_l = is_new.tolist(), high.tolist(), best.tolist()
    nonempty_l, unmatched_l = trk_nonempty.tolist(), trk_unmatched.tolist()
    det_many_l, trk_many_l = det_many.tolist(), trk_many.tolist()

    det_to_trk: dict[int, list[int]] = {order_l[p]: [] for p in range(num_det) if keep_l[p]}
    for p, t in link_pairs:  # row-major: track order within a query; only kept rows link
        det_to_trk[order_l[p]].append(trk_ids[t])
    pairs: dict[int, int] = {}
    for p in range(num_det):
        if high_l[p]:
            pairs[trk_ids[best_l[p]]] = order_l[p]
    matched = {t for _, t in link_pairs}
    return Association31(
        new_det_inds=[order_l[p] for p in range(num_det) if is_new_l[p]],
        unmatched_trk_ids=[i for i, u in zip(trk_ids, unmatched_l) if u],
        empty_trk_ids=[i for i, ne in zip(trk_ids, nonempty_l) if not ne],
        det_to_trk_ids=det_to_trk,
        matched_trk_ids=[trk_ids[t] for t in sorted(matched)],
        high_conf_pairs=pairs,
        ambiguous_det_inds=sorted(order_l[p] for p in range(num_det) if det_many_l[p]),
        ambiguous_trk_ids=[i for i, a in zip(trk_ids, trk_many_l) if a],
    )


# ----------------------------------------------------------------------------------------------
# Hotstart
# ----------------------------------------------------------------------------------------------
def hotstart31(
    meta: TrackerMetadata31,
    assoc: Association31,
    trk_ids: Sequence[int],
    frame_idx: int,
    reverse: bool,
    heuristics: VideoHeuristics31,
) -> list[int]:
    """The official ``_process_hotstart_gpu``: update the counters of the tracks ``trk_ids``
    (global order) in ``meta`` in place; return the ids to remove (global order).

    Keep-alive +1 if matched else -1 (clamped; then -1 more for empty tracks if
    ``decrease_trk_keep_alive_for_empty_masklets``); unmatched count +1 if unmatched (never
    reset); each matched pair of a multi-track query +1. Removal within ``hotstart_delay``
    frames of the birth: unmatched count >= ``hotstart_unmatch_thresh``, or count with a
    strictly earlier-born object >= ``hotstart_dup_thresh`` (see module doc for clicks).
    """
    h = heuristics
    matched = set(assoc.matched_trk_ids)
    unmatched = set(assoc.unmatched_trk_ids)
    empty = set(assoc.empty_trk_ids)
    for i in trk_ids:
        ka = meta.keep_alive.get(i, 0) + (1 if i in matched else -1)
        ka = min(max(ka, h.min_trk_keep_alive), h.max_trk_keep_alive)
        if h.decrease_trk_keep_alive_for_empty_masklets and i in empty:
            ka = max(ka - 1, h.min_trk_keep_alive)
        meta.keep_alive[i] = ka
        if i in unmatched:
            meta.unmatched_count[i] = meta.unmatched_count.get(i, 0) + 1
    for ids in assoc.det_to_trk_ids.values():
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                key = (ids[a], ids[b])
                meta.duplicate_count[key] = meta.duplicate_count.get(key, 0) + 1

    inf = float("inf")
    unborn = inf if reverse else -inf  # clicked objects: earlier than everyone (as SAM 3)

    def first(i: int) -> float:
        f = meta.first_frame.get(i)
        return unborn if f is None else float(f)

    limit = frame_idx + h.hotstart_delay if reverse else frame_idx - h.hotstart_delay
    removed = []
    for pos, j in enumerate(trk_ids):
        if j not in meta.first_frame:
            continue  # clicked object: never within hotstart
        fj = first(j)
        if not (fj < limit if reverse else fj > limit):
            continue
        earlier = [
            meta.duplicate_count.get((i, j), 0)
            for i in trk_ids[:pos]
            if (first(i) > fj if reverse else first(i) < fj)
        ]
        if (
            meta.unmatched_count.get(j, 0) >= h.hotstart_unmatch_thresh
            or max(earlier, default=0) >= h.hotstart_dup_thresh
        ):
            removed.append(j)
    return removed


# ----------------------------------------------------------------------------------------------
# Reconditioning and confirmation
# ----------------------------------------------------------------------------------------------
def recondition31(
    assoc: Association31,
    det_masks: Tensor,
    trk_masks: Tensor,
    trk_score_logits: Tensor,
    trk_ids: Sequence[int],
    heuristics: VideoHeuristics31,
) -> tuple[dict[int, int], Tensor]:
    """The official ``_recondition_masklets`` (planner side), on a reconditioning frame.

    Pairs of ``assoc.high_conf_pairs`` whose track has sigmoid(score logit) > 0.8 (dict
    order kept). Their track logits ``trk_masks (T, h, w)`` become the detection logits
    ``det_masks (Q, h, w)`` (same size required, as officially) where the binary masks
    disagree, then hole filling (``fill_hole_area``). Returns ``({obj_id: query}, masks)``
    (a new tensor; ``trk_masks`` is not changed).
    """
    trk_ids = [int(i) for i in trk_ids]
    if not assoc.high_conf_pairs:
        return {}, trk_masks
    confident = (trk_score_logits.sigmoid() > RECONDITION_MIN_PROB).tolist()
    pairs = {o: d for o, d in assoc.high_conf_pairs.items() if confident[trk_ids.index(o)]}
    if not pairs:
        return {}, trk_masks
    if det_masks.shape[-2:] != trk_masks.shape[-2:]:
        raise InvalidInputError(
            f"det_masks: expected the tracks' mask size {tuple(trk_masks.shape[-2:])} on a "
            f"reconditioning frame, got {tuple(det_masks.shape[-2:])}"
        )
    device = trk_masks.device
    rows = torch.tensor([trk_ids.index(o) for o in pairs], dtype=torch.long, device=device)
    dets = torch.tensor(list(pairs.values()), dtype=torch.long, device=det_masks.device)
    old, new = trk_masks[rows], det_masks[dets].to(trk_masks.dtype)
    edited = torch.where((new > 0) == (old > 0), old, new)
    edited = fill_holes_in_mask_scores(edited[:, None], max_area=heuristics.fill_hole_area)[:, 0]
    out = trk_masks.clone()
    out[rows] = edited
    return pairs, out


def update_confirmation31(
    meta: TrackerMetadata31,
    det_to_trk_ids: Mapping[int, Sequence[int]],
    new_obj_ids: Sequence[int],
    heuristics: VideoHeuristics31,
) -> None:
    """The official ``update_masklet_confirmation_status`` over ``meta.obj_ids`` (after births
    and removals): streak +1 for newborns and tracks matched by a kept query (after the
    ambiguity rule), else 0; confirmed once the streak reaches the threshold."""
    matched = set(int(i) for i in new_obj_ids)
    for ids in det_to_trk_ids.values():
        matched.update(ids)
    thresh = heuristics.masklet_confirmation_consecutive_det_thresh
    streak = {}
    for i in meta.obj_ids:
        streak[i] = meta.det_streak.get(i, 0) + 1 if i in matched else 0
        if streak[i] >= thresh:
            meta.confirmed.add(i)
    meta.det_streak = streak


def unconfirmed_status_frame(
    frame_idx: int, reverse: bool, num_frames: int, heuristics: VideoHeuristics31
) -> int:
    """Frame whose confirmation status decides the output of ``frame_idx``: threshold - 1
    frames later in processing order, clamped to ``[0, num_frames - 1]``."""
    delay = heuristics.masklet_confirmation_consecutive_det_thresh - 1
    t = frame_idx - delay if reverse else frame_idx + delay
    return max(0, min(t, num_frames - 1))


def hidden_ids31(
    frame_idx: int,
    reverse: bool,
    num_frames: int,
    unconfirmed_by_frame: Mapping[int, Sequence[int]],
    heuristics: VideoHeuristics31,
) -> frozenset[int]:
    """Ids to hide in the output of ``frame_idx`` (official ``propagate_in_video``).

    ``unconfirmed_by_frame``: ``plan.unconfirmed_obj_ids`` of each frame processed in THIS
    propagation call (the official table is local to one call). Empty when confirmation is
    off, when ``hotstart_delay`` is 0 (the official table is only filled with the buffer) or
    when the status frame was not processed in this call.
    """
    h = heuristics
    if not h.masklet_confirmation_enable or h.hotstart_delay <= 0:
        return frozenset()
    status = unconfirmed_status_frame(frame_idx, reverse, num_frames, h)
    return frozenset(int(i) for i in unconfirmed_by_frame.get(status, ()))


# ----------------------------------------------------------------------------------------------
# The plan of one frame
# ----------------------------------------------------------------------------------------------
@dataclass
class FramePlan31:
    """Result of `plan_frame31`.

    new_obj_ids / new_det_inds: newborn ids and their query (same order). removed_obj_ids:
    ids removed by hotstart (ascending). num_dropped: births dropped by the object cap.
    recondition: obj_id -> query whose (binary, input-size) mask re-prompts the track in place
    on this frame. suppressed_obj_ids: tracks hidden by occlusion suppression (their logits
    are -10 in ``trk_masks``). trk_masks ``(T, h, w)``: the tracks' logits after
    reconditioning and occlusion suppression (memory update and outputs). unconfirmed_obj_ids:
    tracked ids (after this frame) not confirmed yet (global order; empty when confirmation is
    off). metadata: the metadata after this frame.
    """

    new_obj_ids: list[int]
    new_det_inds: list[int]
    removed_obj_ids: list[int]
    num_dropped: int
    association: Association31
    recondition: dict[int, int]
    suppressed_obj_ids: list[int]
    unconfirmed_obj_ids: list[int]
    trk_masks: Tensor
    metadata: TrackerMetadata31 = field(repr=False)


def plan_frame31(
    det_masks: Tensor,
    det_scores: Tensor,
    det_keep: Tensor,
    trk_masks: Tensor,
    trk_score_logits: Tensor,
    metadata: TrackerMetadata31,
    frame_idx: int,
    reverse: bool = False,
    is_image_only: bool = False,
    heuristics: VideoHeuristics31 | None = None,
) -> FramePlan31:
    """Plan one frame as the official 3.1 ``run_tracker_update_planning_phase`` (module doc).

    det_masks ``(Q, h, w)``, det_scores ``(Q,)``, det_keep ``(Q,)``: ALL queries of the frame
    from `select_detections31`. trk_masks ``(T, h', w')`` low-res logits and
    trk_score_logits ``(T,)`` (or ``(T, 1)``) object-score logits of ``metadata.obj_ids``.
    ``metadata`` is not changed; the plan carries the new one.
    """
    h = heuristics if heuristics is not None else VideoHeuristics31()
    if isinstance(frame_idx, bool) or not isinstance(frame_idx, int) or frame_idx < 0:
        raise InvalidInputError(f"frame_idx: expected an integer >= 0, got {frame_idx!r}")
    if not isinstance(metadata, TrackerMetadata31):
        raise InvalidInputError(
            f"metadata: expected a TrackerMetadata31, got {type(metadata).__name__}"
        )
    _check_stack("trk_masks", trk_masks)
    metadata.check_consistent(trk_masks.shape[0], "trk_masks")
    num_trk = trk_masks.shape[0]
    trk_score_logits = _check_vector("trk_score_logits", trk_score_logits, num_trk, "trk_masks")
    prev_ids = list(metadata.obj_ids)
    meta = metadata.copy()

    assoc = associate31(
        det_masks,
        det_scores,
        det_keep,
        trk_masks,
        prev_ids,
        h,
        new_det_thresh=h.image_only_det_thresh if is_image_only else None,
    )
    removed = hotstart31(meta, assoc, prev_ids, frame_idx, reverse, h) if num_trk else []

    recondition: dict[int, int] = {}
    masks_out = trk_masks
    n = h.recondition_every_nth_frame
    if n > 0 and frame_idx % n == 0 and num_trk > 0:
        recondition, masks_out = recondition31(
            assoc, det_masks, trk_masks, trk_score_logits, prev_ids, h
        )

    suppressed: list[int] = []
    threshold = h.suppress_overlapping_based_on_recent_occlusion_threshold
    if num_trk > 0 and threshold > 0.0:
        last = {i: meta.last_occluded.get(i, NEVER_OCCLUDED) for i in prev_ids}
        last.update(dict.fromkeys(removed, ALWAYS_OCCLUDED))
        masks_out, flags, meta.last_occluded = suppress_recently_occluded(
            masks_out, prev_ids, last, removed, frame_idx, reverse, threshold
        )
        suppressed = [i for i, s in zip(prev_ids, flags.tolist()) if s]

    # Births: object cap (tracks removed on this frame still count), then ids.
    new_inds = list(assoc.new_det_inds)
    num_dropped = 0
    scores = det_scores.reshape(-1).float()
    if not is_image_only and num_trk + len(new_inds) > h.max_num_objects:
        num_to_keep = max(h.max_num_objects - num_trk, 0)
        num_dropped = len(new_inds) - num_to_keep
        new_inds = _keep_top_scoring(new_inds, scores, num_to_keep)
    new_ids = list(range(metadata.max_obj_id + 1, metadata.max_obj_id + 1 + len(new_inds)))

    # Metadata for the next frame.
    meta.obj_ids = [i for i in prev_ids + new_ids if i not in set(removed)]
    if new_ids:
        born = dict(zip(new_ids, scores[new_inds].tolist()))
        meta.obj_id_to_score.update(born)
        meta.set_frame_scores(frame_idx, born)  # the tracker has no score for them yet
        meta.max_obj_id = max(meta.max_obj_id, new_ids[-1])
        for i in new_ids:
            meta.first_frame[i] = frame_idx
            meta.unmatched_count[i] = 0
            meta.keep_alive[i] = h.init_trk_keep_alive
    for obj_id in removed:
        meta.obj_id_to_score[obj_id] = REMOVED_SCORE
    meta.set_frame_scores(frame_idx, dict.fromkeys(removed, REMOVED_SCORE))
    meta.forget(removed)
    if num_trk > 0:
        # Overwrites the -1e4 of tracks removed on this very frame, as officially.
        meta.set_frame_scores(frame_idx, dict(zip(prev_ids, trk_score_logits.sigmoid().tolist())))

    unconfirmed: list[int] = []
    if h.masklet_confirmation_enable:
        update_confirmation31(meta, assoc.det_to_trk_ids, new_ids, h)
        unconfirmed = meta.unconfirmed_ids()

    return FramePlan31(
        new_obj_ids=new_ids,
        new_det_inds=list(new_inds),
        removed_obj_ids=sorted(removed),
        num_dropped=num_dropped,
        association=assoc,
        recondition=recondition,
        suppressed_obj_ids=suppressed,
        unconfirmed_obj_ids=unconfirmed,
        trk_masks=masks_out,
        metadata=meta,
    )
