"""`evaluate`: every metric of a prediction file against a ground-truth file, as one report.

The report is a plain dict (JSON-ready):

``summary``
    ``J&F``, ``J``, ``F`` (DAVIS, [0, 1]); ``cgF1`` (micro, mean over IoU 0.50:0.95),
    ``cgF1@50``, ``cgF1@75``, ``IL_MCC``, ``pmF1`` (positive micro F1, mean over IoUs);
    ``pHOTA``, ``pDetA``, ``pAssA``; ``mAP`` (YT-VIS class mask mAP@[.5:.95]) and
    ``phrase_AP``, ``phrase_AP@50``, ``phrase_AP@75``. `OFFICIAL_NAMES` gives the name of
    each in the SA-Co evaluator's output (SAM 2's evaluator prints J&F x 100).
``pairs``
    per (video, category): cgF1's TP/FP/FN/F1 and pHOTA's HOTA/DetA/AssA.
``objects``
    per ground-truth object: J, F, J&F and the prediction it was scored against.
``info``
    what was compared: counts, the J&F match rule, dropped prediction records.

Metrics that cannot be defined on the input (no objects for J&F) are ``NaN`` in Python and
``null`` in JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sam3video.evaluation.ap import mask_map, phrase_ap
from sam3video.evaluation.cgf1 import cgf1
from sam3video.evaluation.data import EvalInputError, align, check_ground_truth
from sam3video.evaluation.hota import phrase_hota
from sam3video.evaluation.jf import j_and_f

__all__ = ["METRICS", "OFFICIAL_NAMES", "evaluate"]

METRICS = ("jf", "cgf1", "phota", "map")
OFFICIAL_NAMES = {
    "cgF1": "video_mask_demo_cgf1_micro_50_95",
    "cgF1@50": "video_mask_demo_cgf1_micro_50",
    "cgF1@75": "video_mask_demo_cgf1_micro_75",
    "IL_MCC": "video_mask_demo_ilmcc_50_95",
    "pmF1": "video_mask_demo_positive_micro_f1_50_95",
    "pHOTA": "video_mask_all_phrase_HOTA",
    "pDetA": "video_mask_all_phrase_DetA",
    "pAssA": "video_mask_all_phrase_AssA",
    "mAP": "video_mask_mAP_50_95",
    "phrase_AP": "video_mask_phrase_ap_50_95",
    "phrase_AP@50": "video_mask_phrase_ap_50",
    "phrase_AP@75": "video_mask_phrase_ap_75",
}


def evaluate(
    gt: Mapping[str, Any],
    pred: Any,
    metrics: Iterable[str] = METRICS,
    jf_match: str = "iou",
    skip_first_last: bool = True,
) -> dict[str, Any]:
    """Evaluate ``pred`` (a prediction list or YTVIS dict) against the YTVIS dict ``gt``.

    Args:
        metrics: any of ``jf``, ``cgf1``, ``phota``, ``map`` (``map`` includes phrase AP).
        jf_match: ``iou`` (Hungarian on video IoU) or ``id`` (same ``obj_id``), see
            `sam3video.evaluation.jf`.
        skip_first_last: J&F leaves out the first and the last annotated frame.
    """
    chosen = tuple(dict.fromkeys(metrics))
    unknown = [m for m in chosen if m not in METRICS]
    if unknown:
        raise EvalInputError(f"metrics: unknown {unknown}; expected some of {list(METRICS)}")
    gt = check_ground_truth(gt)
    aligned = align(gt, pred)
    predictions = aligned.predictions
    summary: dict[str, float] = {}
    pairs: dict[tuple[int, int], dict[str, float]] = {}
    objects: list[dict[str, Any]] = []

    if "jf" in chosen:
        result = j_and_f(gt, predictions, match=jf_match, skip_first_last=skip_first_last)
        summary.update({"J&F": result.jf, "J": result.j, "F": result.f})
        objects = [
            {
                "video_id": o.video_id,
                "category_id": o.category_id,
                "obj_id": o.key,
                "pred_obj_id": o.pred_key,
                "J": o.j,
                "F": o.f,
                "J&F": (o.j + o.f) / 2,
                "frames": o.frames,
            }
            for o in result.objects
        ]
    if "cgf1" in chosen:
        result = cgf1(gt, predictions)
        summary.update(
            {
                "cgF1": result.cgf1,
                "cgF1@50": result.at(0.5),
                "cgF1@75": result.at(0.75),
                "IL_MCC": result.il_mcc,
                "pmF1": float(result.positive_micro_f1.mean()),
            }
        )
        _merge(pairs, result.pairs)
    if "phota" in chosen:
        result = phrase_hota(gt, predictions)
        values = result.summary()
        summary.update({"pHOTA": values["HOTA"], "pDetA": values["DetA"], "pAssA": values["AssA"]})
        per_pair = {
            pair: {k: v[k] for k in ("HOTA", "DetA", "AssA")} for pair, v in result.pairs.items()
        }
        _merge(pairs, per_pair)
    if "map" in chosen:
        ap, ap50, ap75 = phrase_ap(gt, predictions)
        summary.update(
            {
                "mAP": mask_map(gt, predictions),
                "phrase_AP": ap,
                "phrase_AP@50": ap50,
                "phrase_AP@75": ap75,
            }  # fmt: skip
        )

    names = _phrases(gt)
    return {
        "summary": summary,
        "pairs": [
            {"video_id": v, "category_id": c, "noun_phrase": names.get(c), **values}
            for (v, c), values in sorted(pairs.items())
        ],
        "objects": objects,
        "info": {
            "videos": len(gt["videos"]),
            "objects": len(gt["annotations"]),
            "predictions": len(predictions),
            "dropped_predictions": aligned.dropped,
            "jf_match": jf_match,
            "jf_skip_first_last": skip_first_last,
            "metrics": list(chosen),
        },
    }


def _merge(pairs: dict, values: Mapping[tuple[int, int], Mapping[str, float]]) -> None:
    for pair, numbers in values.items():
        pairs.setdefault(pair, {}).update(numbers)


def _phrases(gt: Mapping[str, Any]) -> dict[int, str]:
    names = {c["id"]: c.get("name") for c in gt["categories"]}
    for vnp in gt.get("video_np_pairs", []):
        names.setdefault(vnp["category_id"], vnp.get("noun_phrase"))
    return names
