"""Reading ground truth and predictions, and lining the predictions up with the ground truth.

Ground truth: a YTVIS / SA-Co dict (``videos``, ``annotations``, ``categories`` and, for the
image-level metrics of cgF1, ``video_np_pairs``), as SA-Co/VEval ships it.

Predictions: either a SAM 3 prediction list (records with ``video_id``, ``category_id``,
``score``, ``segmentations``, ``bboxes``, ``areas``; ids are the ground truth's), or a whole
YTVIS file as ``sam3video track`` and ``sam3video batch`` write it. A whole file is lined up
with the ground truth (`align`):

  * videos by ``video_name`` (else the folder of the first file name), categories by name
    (``name``, else an annotation's ``noun_phrase``). A category the ground truth lacks gets
    a fresh id: its detections are false positives of a video-phrase pair without objects.
    Predictions for videos the ground truth lacks are dropped (and counted in ``dropped``).
  * frames by file name: SA-V annotates every 4th frame (``00000.jpg, 00004.jpg, ...``)
    while a prediction file has every frame, so each ground-truth frame takes the predicted
    frame of the same number. Files of equal length with no file names line up by position.
  * mask sizes must match the ground truth's (`EvalInputError` otherwise).

Files may be gzipped (``.gz``). Nothing here changes its inputs: records are copied.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sam3video.errors import InvalidInputError, SourceNotFoundError

__all__ = ["Aligned", "EvalInputError", "align", "load_json", "pair_ids"]

_FRAME_NUMBER = re.compile(r"(\d+)(?!.*\d)")


class EvalInputError(InvalidInputError):
    """A ground-truth or prediction file that cannot be evaluated (layout, ids, sizes)."""


def load_json(path: str | os.PathLike[str]) -> Any:
    """The JSON content of ``path`` (gzipped when it ends in ``.gz``)."""
    source = Path(os.fspath(path)).expanduser()
    if not source.is_file():
        raise SourceNotFoundError(f"{str(source)!r} does not exist or is not a file")
    try:
        raw = source.read_bytes()
        if source.suffix == ".gz":
            raw = gzip.decompress(raw)
        return json.loads(raw)
    except (OSError, ValueError) as error:  # gzip, UTF-8 and JSON errors are ValueErrors
        raise EvalInputError(f"{str(source)!r} is not valid (gzipped) JSON: {error}") from None


def check_ground_truth(gt: Any) -> dict:
    """``gt`` if it has the YTVIS layout; `EvalInputError` naming what is missing otherwise."""
    if not isinstance(gt, Mapping):
        raise EvalInputError(f"ground truth: expected a YTVIS object, got {type(gt).__name__}")
    for key in ("videos", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise EvalInputError(f"ground truth: expected a {key!r} list")
    for i, ann in enumerate(gt["annotations"]):
        missing = {"video_id", "category_id", "segmentations"} - set(ann)
        if missing:
            raise EvalInputError(f"ground truth: annotation {i} lacks {sorted(missing)}")
    return dict(gt)


@dataclass
class Aligned:
    """Predictions in the ground truth's ids and frames; ``dropped``: records left out."""

    predictions: list[dict]
    dropped: int = 0


def align(gt: Mapping[str, Any], pred: Any) -> Aligned:
    """Predictions (a list, or a YTVIS dict) in the ground truth's ids and frames."""
    gt = check_ground_truth(gt)
    videos = {v["id"]: v for v in gt["videos"]}
    if isinstance(pred, Mapping) and isinstance(pred.get("annotations"), list):
        return _align_file(gt, pred)
    if not isinstance(pred, list):
        raise EvalInputError(
            "predictions: expected a list of prediction records or a YTVIS object with "
            f"'annotations', got {type(pred).__name__}"
        )
    records = []
    for i, record in enumerate(pred):
        _check_record(record, i)
        video = videos.get(record["video_id"])
        if video is None:
            raise EvalInputError(
                f"predictions[{i}]: video_id {record['video_id']!r} is not a ground-truth video"
            )
        if len(record["segmentations"]) != _length(video, gt):
            raise EvalInputError(
                f"predictions[{i}]: {len(record['segmentations'])} segmentations, the "
                f"ground-truth video {video['id']} has {_length(video, gt)} frames"
            )
        records.append(dict(record))
    return Aligned(records)


def pair_ids(
    gt: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]], negatives: bool
) -> dict[tuple[int, int], int]:
    """Each (video_id, category_id) pair -> a new id 1, 2, ... (the official remapping).

    Pairs that have predictions or annotations are numbered in sorted order; with
    ``negatives``, the ground truth's other ``video_np_pairs`` (phrases without objects)
    follow in file order. The evaluators treat each pair as one "image".
    """
    seen = {(p["video_id"], p["category_id"]) for p in predictions}
    seen |= {(a["video_id"], a["category_id"]) for a in gt["annotations"]}
    ids = {pair: i + 1 for i, pair in enumerate(sorted(seen))}
    if negatives:
        for vnp in gt.get("video_np_pairs", []):
            ids.setdefault((vnp["video_id"], vnp["category_id"]), len(ids) + 1)
    return ids


# ----------------------------------------------------------------------------- a whole file


def _align_file(gt: dict, pred: Mapping[str, Any]) -> Aligned:
    gt_videos = {_video_name(v): v for v in gt["videos"]}
    categories = {c["id"]: c.get("name") for c in gt["categories"]}
    by_name = {name: cid for cid, name in categories.items() if name is not None}
    next_id = max([c for c in categories if isinstance(c, int)], default=0) + 1
    pred_names = {c["id"]: c.get("name") for c in pred.get("categories", [])}
    pred_videos = {v["id"]: v for v in pred.get("videos", [])}
    records, dropped = [], 0
    for i, record in enumerate(pred["annotations"]):
        _check_record(record, i)
        source = pred_videos.get(record["video_id"])
        target = gt_videos.get(_video_name(source)) if source is not None else None
        if target is None:
            dropped += 1
            continue
        name = pred_names.get(record["category_id"]) or record.get("noun_phrase")
        if name not in by_name:
            by_name[name] = next_id
            next_id += 1
        _check_size(source, target, i)
        frames = _frame_map(source, target, gt)
        out = dict(record, video_id=target["id"], category_id=by_name[name])
        for key in ("segmentations", "bboxes", "areas"):
            if key in record:
                values = record[key]
                out[key] = [values[t] if t is not None and t < len(values) else None
                            for t in frames]  # fmt: skip
        records.append(out)
    return Aligned(records, dropped)


def _video_name(video: Mapping[str, Any]) -> str | None:
    if video.get("video_name"):
        return str(video["video_name"])
    names = video.get("file_names") or []
    return str(names[0]).split("/")[0] if names else None


def _length(video: Mapping[str, Any], gt: Mapping[str, Any]) -> int:
    if video.get("file_names"):
        return len(video["file_names"])
    if video.get("length") is not None:
        return int(video["length"])
    lengths = [len(a["segmentations"]) for a in gt["annotations"] if a["video_id"] == video["id"]]
    return max(lengths, default=0)


def _frame_map(source: Mapping[str, Any], target: Mapping[str, Any], gt: Mapping) -> list:
    """For each ground-truth frame, the index of the predicted frame of the same number."""
    length = _length(target, gt)
    gt_names, pred_names = target.get("file_names"), source.get("file_names")
    if not gt_names or not pred_names:
        return list(range(length))
    position = {_frame_number(name): t for t, name in enumerate(pred_names)}
    return [position.get(_frame_number(name)) for name in gt_names]


def _frame_number(name: str) -> int | str:
    stem = Path(str(name)).stem
    match = _FRAME_NUMBER.search(stem)
    return int(match.group(1)) if match else stem


def _check_size(source: Mapping[str, Any], target: Mapping[str, Any], index: int) -> None:
    size = (source.get("height"), source.get("width"))
    if None not in size and size != (target.get("height"), target.get("width")):
        raise EvalInputError(
            f"predictions: video {_video_name(source)!r} is {size[1]}x{size[0]}, the ground "
            f"truth's is {target.get('width')}x{target.get('height')} (annotation {index})"
        )


def _check_record(record: Any, index: int) -> None:
    if not isinstance(record, Mapping):
        raise EvalInputError(f"predictions[{index}]: expected an object, got {record!r:.60}")
    missing = {"video_id", "category_id", "score", "segmentations"} - set(record)
    if missing:
        raise EvalInputError(f"predictions[{index}]: lacks {sorted(missing)}")
