"""J&F: region similarity J (Jaccard) and boundary accuracy F, the DAVIS / SA-V definition.

Per object and frame (DAVIS 2017; SAM 2's SA-V evaluator computes the same):

  * J = |pred AND gt| / |pred OR gt|, 1 when both are empty.
  * F: the boundary of a mask is the DAVIS ``seg2bmap`` map (a pixel is on it when it differs
    from its right, lower or lower-right neighbour; on the last row only the right neighbour
    counts, on the last column only the lower one, the corner never). Each boundary is
    dilated by a disk of radius ``ceil(0.008 x image diagonal)`` pixels (12 at 1280x720);
    precision = the share of predicted boundary pixels within the dilated true boundary,
    recall = the reverse; F = 2PR / (P + R), 0 when both are 0. An empty predicted boundary
    against a non-empty true one gives P = 1, R = 0; the reverse P = 0, R = 1; two empty
    boundaries P = R = 1.

Per object: the mean over the evaluated frames, i.e. the annotated frames without the first
and the last (the semi-supervised convention of DAVIS and SA-V; ``skip_first_last=False``
keeps them), **counted from the first of them where the object or its prediction is
visible** (the frames before do not exist for that object, as in the SA-V evaluator). An
object never visible in the evaluated frames is not scored. J&F of a set = (mean J over all
scored objects + mean F) / 2.

Which prediction is an object's: ``match="id"`` takes the prediction of the same ``obj_id``
(its ``id`` when it has none) in the same (video, category) pair, for predictions from the
objects' own prompts; ``match="iou"`` (concept prompts) matches objects and predictions with
score >= 0.5 one to one by the Hungarian algorithm on video IoU within each pair. An object
without a prediction is scored against empty masks.

Masks are decoded one frame at a time and cropped around both masks (with a margin wider
than the disk), which gives the same numbers as the whole frame at a fraction of the cost.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_util

from sam3video.evaluation.masklets import best_matching, iou_matrix, rles

__all__ = ["BOUND_TH", "JF", "ObjectJF", "boundary_f", "boundary_map", "disk", "j_and_f"]

BOUND_TH = 0.008  # boundary tolerance, as a fraction of the image diagonal


@dataclass(frozen=True)
class ObjectJF:
    """One ground-truth object's scores (``pred_key``: its prediction, None when unmatched)."""

    video_id: int
    category_id: int
    key: int
    pred_key: int | None
    j: float
    f: float
    frames: int


@dataclass
class JF:
    objects: list[ObjectJF]

    @property
    def j(self) -> float:
        return float(np.mean([o.j for o in self.objects])) if self.objects else math.nan

    @property
    def f(self) -> float:
        return float(np.mean([o.f for o in self.objects])) if self.objects else math.nan

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


# ----------------------------------------------------------------------------- per frame


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """The DAVIS one-pixel boundary of a 2-D mask (see the module notes)."""
    seg = np.asarray(mask, bool)
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    diagonal = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    diagonal[:-1, :-1] = seg[1:, 1:]
    edge = (seg ^ right) | (seg ^ below) | (seg ^ diagonal)
    edge[-1, :] = seg[-1, :] ^ right[-1, :]
    edge[:, -1] = seg[:, -1] ^ below[:, -1]
    edge[-1, -1] = False
    return edge


def disk(radius: int) -> np.ndarray:
    """uint8 disk structuring element: offsets with dx^2 + dy^2 <= radius^2."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)


def boundary_radius(height: int, width: int) -> int:
    return int(math.ceil(BOUND_TH * math.hypot(height, width)))


def boundary_f(pred: np.ndarray, gt: np.ndarray, kernel: np.ndarray) -> float:
    """The boundary F-measure of two same-size masks with dilation ``kernel``."""
    pred_edge, gt_edge = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = int(pred_edge.sum()), int(gt_edge.sum())
    if n_pred == 0 or n_gt == 0:
        precision = 0.0 if n_gt == 0 and n_pred > 0 else 1.0
        recall = 0.0 if n_pred == 0 and n_gt > 0 else 1.0
    else:
        pred_near = cv2.dilate(pred_edge.astype(np.uint8), kernel).astype(bool)
        gt_near = cv2.dilate(gt_edge.astype(np.uint8), kernel).astype(bool)
        precision = float((pred_edge & gt_near).sum()) / n_pred
        recall = float((gt_edge & pred_near).sum()) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def frame_jf(pred: dict | None, gt: dict | None, size: tuple[int, int]) -> tuple[float, float]:
    """(J, F) of one frame's RLEs (``None``: empty) at image ``size`` = (height, width)."""
    if _empty(pred) and _empty(gt):
        return 1.0, 1.0
    radius = boundary_radius(*size)
    pred_mask, gt_mask = _cropped([pred, gt], size, margin=radius + 2)
    union = int((pred_mask | gt_mask).sum())
    j = int((pred_mask & gt_mask).sum()) / union if union else 1.0
    return j, boundary_f(pred_mask, gt_mask, disk(radius))


def _empty(rle: dict | None) -> bool:
    return rle is None or int(mask_util.area(rle)) == 0


def _cropped(masks: list, size: tuple[int, int], margin: int) -> list[np.ndarray]:
    """The masks cut to the box around all of them plus ``margin`` (inside the image).

    Far from the image border the cut leaves at least two empty rows and columns on each
    side, where the boundary map is empty either way; at the border the cut is the border.
    """
    height, width = size
    boxes = [mask_util.toBbox(m) for m in masks if not _empty(m)]
    x0 = min(int(b[0]) for b in boxes)
    y0 = min(int(b[1]) for b in boxes)
    x1 = max(int(b[0] + b[2]) for b in boxes)
    y1 = max(int(b[1] + b[3]) for b in boxes)
    top, left = max(0, y0 - margin), max(0, x0 - margin)
    bottom, right = min(height, y1 + margin), min(width, x1 + margin)
    out = []
    for m in masks:
        if _empty(m):
            out.append(np.zeros((bottom - top, right - left), bool))
        else:
            out.append(mask_util.decode(m)[top:bottom, left:right].astype(bool))
    return out


# ----------------------------------------------------------------------------- per object


def object_jf(
    pred: Sequence[dict | None], gt: Sequence[dict | None], size: tuple[int, int], skip: bool
) -> tuple[float, float, int] | None:
    """Mean (J, F) and the frame count of one object (None when it is never visible)."""
    frames = range(1, len(gt) - 1) if skip else range(len(gt))
    js, fs, seen_gt, started = [], [], False, False
    for t in frames:
        p = pred[t] if t < len(pred) else None
        g = gt[t]
        started = started or not _empty(p) or not _empty(g)
        if not started:
            continue
        seen_gt = seen_gt or not _empty(g)
        j, f = frame_jf(p, g, size)
        js.append(j)
        fs.append(f)
    if not seen_gt:
        return None
    return float(np.mean(js)), float(np.mean(fs)), len(js)


def j_and_f(
    gt: Mapping[str, Any],
    predictions: Sequence[Mapping[str, Any]],
    match: str = "iou",
    skip_first_last: bool = True,
    threshold: float = 0.5,
) -> JF:
    """J&F of ``predictions`` (aligned to ``gt``) per ground-truth object (module notes)."""
    if match not in ("iou", "id"):
        raise ValueError(f"match: expected 'iou' or 'id', got {match!r}")
    sizes = {v["id"]: (int(v["height"]), int(v["width"])) for v in gt["videos"]}
    objects: dict[tuple[int, int], list[Mapping[str, Any]]] = defaultdict(list)
    candidates: dict[tuple[int, int], list[Mapping[str, Any]]] = defaultdict(list)
    for ann in gt["annotations"]:
        objects[ann["video_id"], ann["category_id"]].append(ann)
    for pred in predictions:
        if match == "id" or pred["score"] >= threshold:
            candidates[pred["video_id"], pred["category_id"]].append(pred)
    scored = []
    for (video_id, category_id), anns in objects.items():
        size = sizes[video_id]
        gt_masks = [rles(a["segmentations"]) for a in anns]
        pairs = candidates[video_id, category_id]
        pred_masks = [rles(p["segmentations"]) for p in pairs]
        chosen = _choose(anns, pairs, gt_masks, pred_masks, match)
        for ann, masks, k in zip(anns, gt_masks, chosen):
            pred = pred_masks[k] if k is not None else []
            result = object_jf(pred, masks, size, skip_first_last)
            if result is None:
                continue
            pred_key = _key(pairs[k]) if k is not None else None
            scored.append(ObjectJF(video_id, category_id, _key(ann), pred_key, *result))
    return JF(scored)


def _key(record: Mapping[str, Any]) -> int:
    return int(record["obj_id"] if record.get("obj_id") is not None else record.get("id", -1))


def _choose(
    anns: list, preds: list, gt_masks: list, pred_masks: list, match: str
) -> list[int | None]:
    """For each object, the index of its prediction in ``preds`` (None: none)."""
    if match == "id":
        by_key = {}
        for k, pred in enumerate(preds):
            by_key.setdefault(_key(pred), k)
        return [by_key.get(_key(ann)) for ann in anns]
    chosen: list[int | None] = [None] * len(anns)
    if not anns or not preds:
        return chosen
    ious = iou_matrix(gt_masks, pred_masks)
    for row, col in zip(*best_matching(ious)):
        if ious[row, col] > 0:
            chosen[row] = int(col)
    return chosen
