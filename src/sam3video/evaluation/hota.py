"""Phrase HOTA (pHOTA): HOTA over video-phrase pairs, as the SA-Co video evaluator runs it.

HOTA (Luiten et al., IJCV 2020) scores detection and association together. The phrase
variant treats each (video, category) pair with objects or detections as one sequence of one
class, so objects of different phrases are never matched. The definitions used here:

  * Detections count when their score is > 0.5 (strictly; scores play no other part). A
    detection's frame counts when its mask is there, its area is not 0 and its box is not
    all zeros.
  * Per frame, similarity = mask IoU between objects and detections (pycocotools).
  * Per sequence, a global alignment score between each object id and detection id (the
    Jaccard of their per-frame IoU-normalised co-occurrences) weights the similarities; the
    Hungarian algorithm on ``alignment x similarity`` matches each frame, and a match counts
    at alpha when its similarity is >= alpha, for alpha = 0.05, 0.10, ..., 0.95.
  * DetA = TP / (TP + FN + FP); AssA = mean over true positives of the Jaccard of their
    two tracks' match counts; HOTA = sqrt(DetA x AssA), per alpha.
  * Sequences combine by summing TP/FN/FP and averaging AssA (and AssRe, AssPr, LocA)
    weighted by TP; ``pHOTA`` is the mean of HOTA over the 19 alphas.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_util

from sam3video.evaluation.data import pair_ids
from sam3video.evaluation.masklets import best_matching, rles

__all__ = ["ALPHAS", "Hota", "phrase_hota"]

ALPHAS = np.arange(0.05, 0.99, 0.05)
_EPS = np.finfo(float).eps


@dataclass
class Hota:
    """Per-alpha arrays of one sequence or of the whole set."""

    tp: np.ndarray
    fn: np.ndarray
    fp: np.ndarray
    ass_a: np.ndarray
    ass_re: np.ndarray
    ass_pr: np.ndarray
    loc_a: np.ndarray
    pairs: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)

    @property
    def det_re(self) -> np.ndarray:
        return self.tp / np.maximum(1, self.tp + self.fn)

    @property
    def det_pr(self) -> np.ndarray:
        return self.tp / np.maximum(1, self.tp + self.fp)

    @property
    def det_a(self) -> np.ndarray:
        return self.tp / np.maximum(1, self.tp + self.fn + self.fp)

    @property
    def hota(self) -> np.ndarray:
        return np.sqrt(self.det_a * self.ass_a)

    @property
    def owta(self) -> np.ndarray:
        return np.sqrt(self.det_re * self.ass_a)

    def summary(self) -> dict[str, float]:
        """Means over the alphas: HOTA, DetA, AssA, DetRe, DetPr, AssRe, AssPr, LocA, OWTA."""
        values = {
            "HOTA": self.hota,
            "DetA": self.det_a,
            "AssA": self.ass_a,
            "DetRe": self.det_re,
            "DetPr": self.det_pr,
            "AssRe": self.ass_re,
            "AssPr": self.ass_pr,
            "LocA": self.loc_a,
            "OWTA": self.owta,
        }
        return {name: float(np.mean(array)) for name, array in values.items()}


def phrase_hota(
    gt: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]], threshold: float = 0.5
) -> Hota:
    """pHOTA of ``predictions`` (aligned to ``gt``, see `sam3video.evaluation.data.align`)."""
    kept = [_visible_frames(p) for p in predictions if p["score"] > threshold]
    ids = pair_ids(gt, kept, negatives=False)
    objects: dict[int, list] = defaultdict(list)
    detections: dict[int, list] = defaultdict(list)
    for ann in gt["annotations"]:
        objects[ids[ann["video_id"], ann["category_id"]]].append(rles(ann["segmentations"]))
    for pred in kept:
        detections[ids[pred["video_id"], pred["category_id"]]].append(pred["segmentations"])
    lengths = {v["id"]: _num_frames(v, gt) for v in gt["videos"]}
    results = {
        pair: _sequence(objects[number], detections[number], lengths[pair[0]])
        for pair, number in ids.items()
    }
    total = _combine(list(results.values()))
    total.pairs = {pair: result.summary() for pair, result in results.items()}
    return total


def _visible_frames(pred: Mapping[str, Any]) -> dict:
    """The prediction with ``None`` where a frame has no mask, area 0 or an all-zero box."""
    masks = rles(pred["segmentations"])
    boxes = pred.get("bboxes")
    areas = pred.get("areas")
    kept = []
    for t, rle in enumerate(masks):
        box = boxes[t] if boxes is not None else _box(rle)
        size = areas[t] if areas is not None else (0 if rle is None else mask_util.area(rle))
        empty = size == 0 or box is None or all(v == 0 for v in box)
        kept.append(None if empty else rle)
    return dict(pred, segmentations=kept)


def _box(rle: dict | None) -> list[float] | None:
    return None if rle is None else [float(v) for v in mask_util.toBbox(rle)]


def _num_frames(video: Mapping[str, Any], gt: Mapping[str, Any]) -> int:
    if video.get("file_names"):
        return len(video["file_names"])
    lengths = [len(a["segmentations"]) for a in gt["annotations"] if a["video_id"] == video["id"]]
    return int(video.get("length") or max(lengths, default=0))


def _present(tracks: list, t: int) -> list[int]:
    return [k for k, track in enumerate(tracks) if t < len(track) and track[t] is not None]


def _sequence(objects: list, detections: list, length: int) -> Hota:
    """HOTA of one sequence (see the module notes)."""
    n = len(ALPHAS)
    zero = np.zeros(n)
    frames = [(_present(objects, t), _present(detections, t)) for t in range(length)]
    num_gt = sum(len(g) for g, _ in frames)
    num_dt = sum(len(d) for _, d in frames)
    if num_gt == 0 or num_dt == 0:
        return Hota(zero, zero + num_gt, zero + num_dt, zero, zero, zero, np.ones(n))

    # Index only the tracks that have a frame (ids contiguous, in track order).
    gt_index = {k: i for i, k in enumerate(sorted({k for g, _ in frames for k in g}))}
    dt_index = {k: i for i, k in enumerate(sorted({k for _, d in frames for k in d}))}
    similarity = []
    potential = np.zeros((len(gt_index), len(dt_index)))
    gt_count = np.zeros((len(gt_index), 1))
    dt_count = np.zeros((1, len(dt_index)))
    for t, (g, d) in enumerate(frames):
        sim = _frame_ious([objects[k][t] for k in g], [detections[k][t] for k in d])
        similarity.append(sim)
        gi = np.array([gt_index[k] for k in g], int)
        di = np.array([dt_index[k] for k in d], int)
        denominator = sim.sum(0)[np.newaxis, :] + sim.sum(1)[:, np.newaxis] - sim
        normalised = np.zeros_like(sim)
        ok = denominator > _EPS
        normalised[ok] = sim[ok] / denominator[ok]
        potential[gi[:, np.newaxis], di[np.newaxis, :]] += normalised
        gt_count[gi] += 1
        dt_count[0, di] += 1
    alignment = potential / (gt_count + dt_count - potential)

    tp, fn, fp, loc = (np.zeros(n) for _ in range(4))
    matches = np.zeros((n, len(gt_index), len(dt_index)))
    for t, (g, d) in enumerate(frames):
        if not g or not d:
            fp += len(d)
            fn += len(g)
            continue
        gi = np.array([gt_index[k] for k in g], int)
        di = np.array([dt_index[k] for k in d], int)
        sim = similarity[t]
        rows, cols = best_matching(alignment[gi[:, np.newaxis], di] * sim)
        for a, alpha in enumerate(ALPHAS):
            ok = sim[rows, cols] >= alpha - _EPS
            count = int(ok.sum())
            tp[a] += count
            fn[a] += len(g) - count
            fp[a] += len(d) - count
            if count:
                loc[a] += sim[rows[ok], cols[ok]].sum()
                matches[a][gi[rows[ok]], di[cols[ok]]] += 1

    weight = np.maximum(1, tp)
    ass_a = np.array([np.sum(m * m / np.maximum(1, gt_count + dt_count - m)) for m in matches])
    ass_re = np.array([np.sum(m * m / np.maximum(1, gt_count)) for m in matches])
    ass_pr = np.array([np.sum(m * m / np.maximum(1, dt_count)) for m in matches])
    loc_a = np.maximum(1e-10, loc) / np.maximum(1e-10, tp)
    return Hota(tp, fn, fp, ass_a / weight, ass_re / weight, ass_pr / weight, loc_a)


def _frame_ious(objects: list, detections: list) -> np.ndarray:
    """(objects, detections) mask IoUs of one frame."""
    if not objects or not detections:
        return np.zeros((len(objects), len(detections)))
    ious = mask_util.iou(objects, detections, [0] * len(detections))
    return np.asarray(ious, float).reshape(len(objects), len(detections))


def _combine(sequences: list[Hota]) -> Hota:
    """Sum the counts; average the association and localisation scores weighted by TP."""
    zero = np.zeros(len(ALPHAS))
    tp = sum((s.tp for s in sequences), zero)
    fn = sum((s.fn for s in sequences), zero)
    fp = sum((s.fp for s in sequences), zero)
    weight = np.maximum(1.0, tp)

    def weighted(name: str) -> np.ndarray:
        return sum((getattr(s, name) * s.tp for s in sequences), zero) / weight

    loc = sum((s.loc_a * s.tp for s in sequences), zero)
    loc_a = np.maximum(1e-10, loc) / np.maximum(1e-10, tp)
    return Hota(tp, fn, fp, weighted("ass_a"), weighted("ass_re"), weighted("ass_pr"), loc_a)
