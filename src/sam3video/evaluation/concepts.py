"""Concept precision and recall at one mask-IoU threshold (video level).

The counts are cgF1's (`sam3video.evaluation.cgf1`): in each video-phrase pair, detections
with score >= ``score_threshold`` and ground-truth objects are matched one to one by the
Hungarian algorithm on video IoU; a match with IoU >= ``iou_threshold`` is a true positive,
the other detections false positives (those of phrases absent from the video included), the
other objects false negatives. Then precision = TP / (TP + FP) and recall = TP / (TP + FN),
without cgF1's epsilons; ``NaN`` when the denominator is 0 (no detection / no object).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sam3video.evaluation.cgf1 import _index, cgf1

__all__ = ["concept_precision_recall"]


def concept_precision_recall(
    gt: Mapping[str, Any],
    predictions: Sequence[Mapping[str, Any]],
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
) -> dict[str, float]:
    """``{"precision", "recall", "TP", "FP", "FN"}`` of ``predictions`` (aligned to ``gt``,
    `sam3video.evaluation.align`) at ``iou_threshold`` (one of 0.5, 0.55, ..., 0.95)."""
    result = cgf1(gt, predictions, threshold=score_threshold)
    k = _index(iou_threshold)
    tp, fp, fn = int(result.tp[k]), int(result.fp[k]), int(result.fn[k])
    return {
        "precision": tp / (tp + fp) if tp + fp else math.nan,
        "recall": tp / (tp + fn) if tp + fn else math.nan,
        "TP": tp,
        "FP": fp,
        "FN": fn,
    }
