"""YT-VIS mask mAP and phrase AP: COCO average precision with video IoU between masklets.

pycocotools' `COCOeval` does the matching, the precision-recall curves and the averaging;
this module only feeds it videos instead of images and masklets instead of masks (the
SA-Co evaluator does the same):

  * an "image" is a video (mAP: per category, ``useCats``) or a video-phrase pair (phrase
    AP: categories ignored, each pair its own image, see `pair_ids`);
  * the IoU of a detection and a ground-truth object is their video IoU
    (`sam3video.evaluation.masklets.video_iou`), detections sorted by score (stable) and cut
    to the 100 best per image, as COCO does;
  * a ground-truth object is ignored when it is ``iscrowd``; areas (mean over frames, ``null``
    as 0: ground truth from ``areas``, detections from their boxes) only decide the area range,
    and every number here uses the "all" range;
  * AP is the mean of the 101-point interpolated precision over IoU thresholds 0.50:0.05:0.95
    (and categories, for mAP), skipping the undefined ones (-1 when none is defined).
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sam3video.evaluation.data import pair_ids
from sam3video.evaluation.masklets import iou_matrix, rles

__all__ = ["mask_map", "phrase_ap"]

_ALL_AREAS = [0.0, 1e5**2]
_MAX_DETS = 100


def mask_map(gt: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]]) -> float:
    """YT-VIS class mask mAP@[.5:.95] (SA-Co's ``video_mask_mAP_50_95``)."""
    videos = [{"id": v["id"]} for v in gt["videos"]]
    categories = [c["id"] for c in gt["categories"]]
    gts = [_gt_record(a, a["video_id"], a["category_id"]) for a in gt["annotations"]]
    dts = [_dt_record(p, p["video_id"], p["category_id"]) for p in predictions]
    return _average_precision(videos, categories, gts, dts, use_categories=True)[0]


def phrase_ap(
    gt: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]]
) -> tuple[float, float, float]:
    """Phrase mask AP at IoU 0.50:0.95, 0.50 and 0.75 (``video_mask_phrase_ap_*``)."""
    ids = pair_ids(gt, predictions, negatives=False)
    images = [{"id": i} for i in ids.values()]
    gts = [_gt_record(a, ids[a["video_id"], a["category_id"]], -1) for a in gt["annotations"]]
    dts = [_dt_record(p, ids[p["video_id"], p["category_id"]], -1) for p in predictions]
    return _average_precision(images, [-1], gts, dts, use_categories=False)


# ----------------------------------------------------------------------------- records


def _gt_record(ann: Mapping[str, Any], image: int, category: int) -> dict:
    areas = [a if a is not None else 0 for a in ann.get("areas", [])]
    return {
        "image_id": image,
        "category_id": category,
        "iscrowd": int(bool(ann.get("iscrowd", 0))),
        "area": float(np.mean(areas)) if areas else 0.0,
        "masklet": rles(ann["segmentations"]),
    }


def _dt_record(pred: Mapping[str, Any], image: int, category: int) -> dict:
    boxes = pred.get("bboxes") or [None] * len(pred["segmentations"])
    areas = [0.0 if b is None else b[2] * b[3] for b in boxes]
    return {
        "image_id": image,
        "category_id": category,
        "score": float(pred["score"]),
        "area": float(np.mean(areas)) if areas else 0.0,
        "masklet": rles(pred["segmentations"]),
    }


# ----------------------------------------------------------------------------- COCOeval


class _MaskletEval(COCOeval):
    """`COCOeval` over videos: ground truth and detections come grouped per (video,
    category) in file order, and IoUs are video IoUs."""

    def _prepare(self) -> None:
        p = self.params
        self._gts = defaultdict(list)
        self._dts = defaultdict(list)
        for ann in self.cocoGt.dataset["annotations"]:
            ann["ignore"] = ann["iscrowd"]
            self._gts[ann["image_id"], ann["category_id"]].append(ann)
        for ann in self.cocoDt.dataset["annotations"]:
            self._dts[ann["image_id"], ann["category_id"]].append(ann)
        self.evalImgs = defaultdict(list)
        self.eval = {}
        assert p.iouType == "segm"

    def computeIoU(self, imgId: int, catId: int) -> Any:  # noqa: N802 (pycocotools' name)
        p = self.params
        categories = [catId] if p.useCats else p.catIds
        gt = [g for c in categories for g in self._gts[imgId, c]]
        dt = [d for c in categories for d in self._dts[imgId, c]]
        if not gt or not dt:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: p.maxDets[-1]]
        return iou_matrix([dt[i]["masklet"] for i in order], [g["masklet"] for g in gt])


def _coco(images: list[dict], categories: list[int], annotations: list[dict]) -> COCO:
    coco = COCO()
    for number, ann in enumerate(annotations, start=1):
        ann["id"] = number  # COCOeval counts a match by a non-zero id
    coco.dataset = {
        "images": images,
        "categories": [{"id": c} for c in categories],
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _average_precision(
    images: list[dict],
    categories: list[int],
    gts: list[dict],
    dts: list[dict],
    use_categories: bool,
) -> tuple[float, float, float]:
    """AP at IoU 0.50:0.95, 0.50 and 0.75, "all" areas, 100 detections."""
    evaluator = _MaskletEval(_coco(images, categories, gts), _coco(images, categories, dts))
    params = evaluator.params
    params.useCats = use_categories
    params.areaRng, params.areaRngLbl = [_ALL_AREAS], ["all"]
    params.maxDets = [_MAX_DETS]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, 0]  # (iou, recall, category)
    thresholds = params.iouThrs
    return (
        _mean_defined(precision),
        _mean_defined(precision[np.isclose(thresholds, 0.5)]),
        _mean_defined(precision[np.isclose(thresholds, 0.75)]),
    )


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0
