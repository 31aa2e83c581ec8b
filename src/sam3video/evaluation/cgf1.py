"""cgF1: SAM 3's concept-grounded F1 on videos (micro average over IoU 0.50:0.05:0.95).

Definitions (the SA-Co video evaluator's, as SAM 3's paper states them):

  * Each video-phrase pair is one sample: the pairs with objects or detections, then the
    ground truth's negative pairs (``video_np_pairs`` without objects). Detections count when
    their score is >= 0.5; ``iscrowd`` ground truth is left out.
  * In a sample with both ground truth and detections, detections and objects are matched
    one to one by the Hungarian algorithm on video IoU (scipy's `linear_sum_assignment`,
    maximising the summed IoU); at threshold t a match with IoU >= t is a true positive, the
    other detections false positives, the other objects false negatives.
  * Image level: a sample is an IL true positive (objects and detections), false positive
    (detections only), false negative (objects only) or true negative (neither).
  * positive micro F1 (per threshold): precision = TP / (TP + FP + 1e-4) with the FPs of the
    samples that have objects only, recall = TP / (TP + FN + 1e-4), F1 = 2PR / (P + R + 1e-4);
    the epsilons are the evaluator's, so a perfect prediction scores slightly below 1.
  * IL_MCC: Matthews correlation of the image-level counts (1e-6 in the denominator).
  * cgF1 = positive micro F1 x IL_MCC, per threshold; ``cgF1`` is its mean over the ten.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sam3video.evaluation.data import pair_ids
from sam3video.evaluation.masklets import best_matching, iou_matrix, rles

__all__ = ["IOU_THRESHOLDS", "CgF1", "cgf1"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_T = len(IOU_THRESHOLDS)


@dataclass
class CgF1:
    """Dataset-level numbers; arrays are per IoU threshold, ``pairs`` per (video, category)."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    positive_micro_f1: np.ndarray
    il_mcc: float
    pairs: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)

    @property
    def per_threshold(self) -> np.ndarray:
        return self.positive_micro_f1 * self.il_mcc

    @property
    def cgf1(self) -> float:
        """Mean over the IoU thresholds (``video_mask_demo_cgf1_micro_50_95``)."""
        return float(np.mean(self.per_threshold))

    def at(self, threshold: float) -> float:
        """cgF1 at one IoU threshold (0.5, 0.55, ..., 0.95)."""
        return float(self.per_threshold[_index(threshold)])

    def positive_f1_at(self, threshold: float) -> float:
        return float(self.positive_micro_f1[_index(threshold)])


def cgf1(
    gt: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]], threshold: float = 0.5
) -> CgF1:
    """cgF1 of ``predictions`` (aligned to ``gt``, see `sam3video.evaluation.data.align`)."""
    ids = pair_ids(gt, predictions, negatives="video_np_pairs" in gt)
    objects: dict[int, list] = defaultdict(list)
    detections: dict[int, list] = defaultdict(list)
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            objects[ids[ann["video_id"], ann["category_id"]]].append(rles(ann["segmentations"]))
    for pred in predictions:
        if pred["score"] >= threshold:
            pair = ids[pred["video_id"], pred["category_id"]]
            detections[pair].append(rles(pred["segmentations"]))

    tp, fp, fn, positive_fp = (np.zeros(_T, np.int64) for _ in range(4))
    il = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    pairs = {}
    for pair, number in ids.items():
        gts, dts = objects[number], detections[number]
        il[_image_level(bool(gts), bool(dts))] += 1
        counts = _match_counts(gts, dts)
        tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
        if gts:
            positive_fp += counts[1]
        pairs[pair] = _pair_numbers(*counts)

    precision = tp / (tp + positive_fp + 1e-4)
    recall = tp / (tp + fn + 1e-4)
    f1 = 2 * precision * recall / (precision + recall + 1e-4)
    return CgF1(tp, fp, fn, f1, _mcc(**il), pairs)


def _image_level(has_objects: bool, has_detections: bool) -> str:
    if has_objects:
        return "tp" if has_detections else "fn"
    return "fp" if has_detections else "tn"


def _match_counts(gts: list, dts: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TP, FP, FN) per threshold of one sample (all 0 for a true negative)."""
    matched = np.zeros(0)
    if gts and dts:
        ious = iou_matrix(dts, gts)
        rows, cols = best_matching(ious)
        matched = ious[rows, cols]
    tp = np.array([(matched >= t).sum() for t in IOU_THRESHOLDS], np.int64)
    return tp, len(dts) - tp, len(gts) - tp


def _pair_numbers(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, float]:
    """The evaluator's per-pair numbers: mean TP/FP/FN and F1 over thresholds, F1 at 0.5/0.75
    (F1 = 2TP / (2TP + FP + FN), 1 when nothing is there)."""
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)
    return {
        "TP": float(tp.mean()),
        "FP": float(fp.mean()),
        "FN": float(fn.mean()),
        "F1": float(f1.mean()),
        "F1@50": float(f1[_index(0.5)]),
        "F1@75": float(f1[_index(0.75)]),
    }


def _mcc(tp: int, fp: int, fn: int, tn: int) -> float:
    denominator = (float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn)) ** 0.5
    return float(tp * tn - fp * fn) / (denominator + 1e-6)


def _index(threshold: float) -> int:
    hits = np.flatnonzero(np.isclose(IOU_THRESHOLDS, threshold))
    if hits.size != 1:
        raise ValueError(f"IoU threshold {threshold} is not one of 0.5, 0.55, ..., 0.95")
    return int(hits[0])
