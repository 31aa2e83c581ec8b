"""Masklets: one object's per-frame RLE masks, and the video IoU between two of them.

A masklet is a list with one entry per annotated frame: a COCO RLE (compressed, with ``str``
or ``bytes`` counts, or uncompressed with a ``counts`` list) or ``None`` where the object is
not visible. `rles` turns it into pycocotools-ready compressed RLEs once; the arithmetic is
pycocotools' (exact integer areas), so every metric sees the same pixel counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_util

from sam3video.errors import Sam3VideoError

__all__ = ["MissingDependencyError", "area", "best_matching", "iou_matrix", "rles", "video_iou"]

Masklet = list  # list[dict | None]


def rles(segmentations: Sequence[Any]) -> Masklet:
    """Compressed RLEs with ``bytes`` counts (``None`` kept)."""
    out: Masklet = []
    for rle in segmentations:
        if rle is None:
            out.append(None)
        elif isinstance(rle["counts"], list):
            out.append(mask_util.frPyObjects(rle, *rle["size"]))
        elif isinstance(rle["counts"], str):
            out.append({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
        else:
            out.append(rle)
    return out


def area(rle: dict | None) -> int:
    return 0 if rle is None else int(mask_util.area(rle))


def video_iou(a: Masklet, b: Masklet) -> float:
    """Pixels both masklets cover over pixels either covers, summed over frames; 1 when both
    are empty throughout. Frames beyond the shorter masklet are not counted."""
    inter = union = 0
    for x, y in zip(a, b):
        if x is not None and y is not None:
            both = int(mask_util.area(mask_util.merge([x, y], intersect=True)))
            inter += both
            union += int(mask_util.area(x)) + int(mask_util.area(y)) - both
        elif x is not None or y is not None:
            union += area(x if x is not None else y)
    return inter / union if union > 0 else 1.0


def iou_matrix(rows: Sequence[Masklet], cols: Sequence[Masklet]) -> np.ndarray:
    """(len(rows), len(cols)) video IoUs."""
    out = np.zeros((len(rows), len(cols)))
    for i, a in enumerate(rows):
        for j, b in enumerate(cols):
            out[i, j] = video_iou(a, b)
    return out


class MissingDependencyError(Sam3VideoError, ImportError):
    """An optional package the evaluation needs is not installed."""


def best_matching(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the one-to-one matching with the largest total score (the
    Hungarian algorithm, scipy's, as the official evaluators use: ties resolve the same)."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as error:
        raise MissingDependencyError(
            f"the evaluation needs scipy ({error}); pip install 'sam3video[eval]'"
        ) from None
    return linear_sum_assignment(-scores)
