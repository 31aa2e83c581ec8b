"""Object labels on the overlay: their text, their size for a frame, and where they go.

Decisions
  * The text is ``#<id> <score>`` (``#2 0.59``): the ``#`` and the gap keep the id and the
    score apart (``2 0.59`` read as ``20.59``). Without a score it is ``#<id>``.
  * The font scales with the frame: its cap height is about 2.2% of the frame's diagonal
    (16 px on 640x272, 44 px on 1920x1080), at least 11 px so that small frames stay legible.
  * Placement (`place_labels`): each label tries, in order, above its object's box, inside
    its top edge, below it, then the same three right-aligned; the first spot inside the frame
    that overlaps no label placed before wins. When all six collide, the label slides up or
    down from the first spot to the nearest free row; when no row is free it takes the first
    spot. Labels are placed in ascending id order, so an object keeps its spot from frame to
    frame while the scene is stable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2

__all__ = ["LabelStyle", "Rect", "label_style", "label_text", "place_labels"]

FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_TEXT_HEIGHT = 11  # px
TEXT_HEIGHT_PER_DIAGONAL = 0.022

# (x0, y0, x1, y1) with x1/y1 exclusive.
Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class LabelStyle:
    """Font scale, stroke and padding of the labels of one frame size."""

    scale: float
    thickness: int
    pad: int
    line: int  # contour width

    def size(self, text: str) -> tuple[int, int]:
        """``(width, height)`` of the filled label holding ``text``."""
        (width, height), baseline = cv2.getTextSize(text, FONT, self.scale, self.thickness)
        return width + 2 * self.pad, height + baseline + 2 * self.pad


def label_text(obj_id: int, score: float | None) -> str:
    """``"#2 0.59"`` (or ``"#2"`` without a score)."""
    return f"#{obj_id}" if score is None else f"#{obj_id} {score:.2f}"


def label_style(height: int, width: int) -> LabelStyle:
    """The label font for a ``height`` x ``width`` frame (see the module notes)."""
    diagonal = math.hypot(height, width)
    text_height = max(MIN_TEXT_HEIGHT, round(TEXT_HEIGHT_PER_DIAGONAL * diagonal))
    thickness = max(1, round(text_height / 12))
    scale = cv2.getFontScaleFromHeight(FONT, text_height, thickness)
    pad = max(2, round(text_height * 0.25))
    line = max(1, round(min(height, width) / 360))
    return LabelStyle(scale=scale, thickness=thickness, pad=pad, line=line)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _clamp(x: int, y: int, w: int, h: int, height: int, width: int) -> Rect:
    x = min(max(x, 0), max(width - w, 0))
    y = min(max(y, 0), max(height - h, 0))
    return x, y, x + w, y + h


def _candidates(box: Rect, w: int, h: int) -> list[tuple[int, int]]:
    x0, y0, x1, y1 = box
    spots = []
    for x in (x0, x1 - w):  # left-aligned, then right-aligned
        spots += [(x, y0 - h), (x, y0), (x, y1)]  # above, inside the top edge, below
    return spots


def place_labels(
    boxes: Sequence[Rect], sizes: Sequence[tuple[int, int]], height: int, width: int
) -> list[Rect]:
    """Where each label goes: ``boxes[k]`` is object k's box, ``sizes[k]`` its label's
    ``(w, h)``; returns one rectangle per label, inside the frame where it fits."""
    placed: list[Rect] = []
    for box, (w, h) in zip(boxes, sizes):
        spots = [_clamp(x, y, w, h, height, width) for x, y in _candidates(box, w, h)]
        free = [r for r in spots if not any(_overlaps(r, other) for other in placed)]
        if free:
            placed.append(free[0])
            continue
        placed.append(_slide(spots[0], placed, height, width))
    return placed


def _slide(first: Rect, placed: Sequence[Rect], height: int, width: int) -> Rect:
    """The free rectangle nearest to ``first`` in its column, or ``first`` when none is."""
    x0, y0, x1, y1 = first
    h = y1 - y0
    # The nearest free row touches a placed label: just above or just below one.
    rows = {o[3] for o in placed} | {o[1] - h for o in placed}
    for y in sorted((y for y in rows if 0 <= y <= height - h), key=lambda y: abs(y - y0)):
        rect = (x0, y, x1, y + h)
        if not any(_overlaps(rect, other) for other in placed):
            return rect
    return first
