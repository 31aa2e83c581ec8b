"""Validation of request fields: one place that decides what a valid value is.

`sam3video.requests.parse_request` checks every field of a request dict with the checks here
(``FIELD_CHECKS``); the checks that need a session (a frame index below the number of frames,
a known id, a point inside the frame) are the public helpers `check_frame_index`,
`check_known` and `check_points_in_frame`, used by the predictor. Prompts given to the
tracker directly (`sam3video.video.tracking.TrackingState`) go through the same checks
(`check_clicks`, `check_pixel_box`): this module is the one place that validates prompts.
The rules themselves are written in the `sam3video.requests` module docstring.

Every error is a typed `sam3video.errors` exception whose message names the field, what was
expected and what was given (user input quoted cut to 100 characters, `shorten`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from typing import Any

import numpy as np

from sam3video.errors import FrameIndexError, InvalidInputError, UnknownIdError

__all__ = [
    "CONCEPT_MODES",
    "FIELD_CHECKS",
    "MAX_ECHO",
    "MAX_OBJ_ID",
    "PROPAGATION_DIRECTIONS",
    "check_clicks",
    "check_frame_index",
    "check_known",
    "check_pixel_box",
    "check_points_in_frame",
    "check_prompt_combination",
    "describe",
    "quoted",
    "read_only",
    "shorten",
]

PROPAGATION_DIRECTIONS = ("forward", "backward", "both")
CONCEPT_MODES = ("replace", "add")
_INT64_MAX = int(np.iinfo(np.int64).max)
_BOX_TOLERANCE = 1e-6  # float rounding of cx +/- w/2 must not reject a box touching the border
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Object ids are int32-sized: the tracker and exports store them as int32/int64 tensors and the
# next automatic id is max + 1, which must stay representable.
MAX_OBJ_ID = 2**31 - 1
MAX_ECHO = 100  # characters of user input a message may quote


# -- field checks ------------------------------------------------------------------------------


def _check_session_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{field}: expected a non-empty str, got {describe(value)}")
    return value


def _check_resource_path(value: object, field: str) -> str:
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(path, str) or not path:
        raise InvalidInputError(
            f"{field}: expected a non-empty str or os.PathLike path to a video, a frame folder "
            f"or an image, got {describe(value)}"
        )
    return path


def _check_frame(value: object, field: str) -> int:
    return _check_int(value, field, error=FrameIndexError, what="a frame index")


def _check_count(value: object, field: str) -> int:
    return _check_int(value, field, error=InvalidInputError, what="a number of frames")


def _check_obj_id(value: object, field: str) -> int:
    return _check_int(value, field, error=InvalidInputError, what="an object id", upper=MAX_OBJ_ID)


def _check_int(
    value: object,
    field: str,
    *,
    error: type[InvalidInputError],
    what: str,
    upper: int = _INT64_MAX,
) -> int:
    if not _is_int(value):
        raise error(
            f"{field}: expected {what}, an int >= 0 (bool and float are not accepted), "
            f"got {describe(value)}"
        )
    number = int(value)  # type: ignore[arg-type]
    if not 0 <= number <= upper:
        bound = "that fits in int64" if upper == _INT64_MAX else f"below {upper + 1}"
        raise error(f"{field}: expected {what}, an int >= 0 {bound}, got {shorten(number)}")
    return number


def _check_direction(value: object, field: str) -> str:
    if not isinstance(value, str) or value not in PROPAGATION_DIRECTIONS:
        raise InvalidInputError(
            f"{field}: expected one of {quoted(PROPAGATION_DIRECTIONS)}, got {describe(value)}"
        )
    return value


def _check_bool(value: object, field: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{field}: expected a bool, got {describe(value)}")
    return bool(value)


def _check_texts(value: object, field: str) -> str | tuple[str, ...]:
    """One noun phrase (the seed) or a non-empty list of distinct ones (several concepts)."""
    if isinstance(value, str):
        return _check_text(value, field)
    if not isinstance(value, (list, tuple)):
        raise InvalidInputError(
            f"{field}: expected a str (a noun phrase) or a list of them, got {describe(value)}"
        )
    if not value:
        raise InvalidInputError(f"{field}: expected at least one noun phrase, got an empty list")
    texts = tuple(_check_text(t, f"{field}[{i}]") for i, t in enumerate(value))
    seen: set[str] = set()
    for i, t in enumerate(texts):
        if t in seen:
            raise InvalidInputError(
                f"{field}[{i}]: expected distinct noun phrases, got {shorten(t)} twice"
            )
        seen.add(t)
    return texts


def _check_concept_mode(value: object, field: str) -> str:
    if not isinstance(value, str) or value not in CONCEPT_MODES:
        raise InvalidInputError(
            f"{field}: expected one of {quoted(CONCEPT_MODES)}, got {describe(value)}"
        )
    return value


def _check_frame_array(value: object, field: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 3:
        raise InvalidInputError(
            f"{field}: expected an np.ndarray uint8 (H, W, 3) RGB frame, got {describe(value)}"
        )
    if value.shape[2] != 3 or min(value.shape[:2]) < 1:
        raise InvalidInputError(
            f"{field}: expected an np.ndarray uint8 (H, W, 3) RGB frame, got shape {value.shape}"
        )
    return value


def _check_text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{field}: expected a str (a noun phrase), got {describe(value)}")
    if not value.strip():
        raise InvalidInputError(
            f"{field}: expected a non-empty noun phrase such as 'person', got "
            f"{shorten(value)}; leave 'text' out for a box or point prompt"
        )
    return value


def _check_points(value: object, field: str, dtype: type = np.float32) -> np.ndarray:
    rows = _rows(value, field, 2, "[x, y] in pixels", "[[x, y], ...]")
    return _coordinates(rows, field, "[x, y] in pixels", dtype)


def _check_boxes(value: object, field: str) -> np.ndarray:
    what = "[cx, cy, w, h] normalized to [0, 1]"
    rows = _rows(value, field, 4, what, "[[cx, cy, w, h], ...]")
    boxes = _coordinates(rows, field, what)
    for i, (cx, cy, w, h) in enumerate(rows):  # Python floats: the check ignores float32 rounding
        problem = _box_problem(float(cx), float(cy), float(w), float(h))
        if problem:
            raise InvalidInputError(
                f"{field}[{i}]: expected a box {what} lying inside the image (w > 0, h > 0, "
                f"corners cx -/+ w/2 and cy -/+ h/2 within [0, 1]), got {shorten(rows[i])} "
                f"({problem})"
            )
    return boxes


def _box_problem(cx: float, cy: float, w: float, h: float) -> str:
    if not w > 0:
        return f"w = {w} is not > 0"
    if not h > 0:
        return f"h = {h} is not > 0"
    for name, value in (("cx - w/2", cx - w / 2), ("cy - h/2", cy - h / 2)):
        if value < -_BOX_TOLERANCE:
            return f"{name} = {value:.6g} < 0"
    for name, value in (("cx + w/2", cx + w / 2), ("cy + h/2", cy + h / 2)):
        if value > 1 + _BOX_TOLERANCE:
            return f"{name} = {value:.6g} > 1"
    return ""


def _check_labels(value: object, field: str) -> np.ndarray:
    items = _as_list(value)
    if items is None or len(items) == 0:
        raise InvalidInputError(
            f"{field}: expected a non-empty list of labels, each the int 1 or 0, "
            f"got {describe(value)}"
        )
    for i, label in enumerate(items):
        if not _is_int(label) or int(label) not in (0, 1):
            raise InvalidInputError(
                f"{field}[{i}]: expected the int 1 (positive) or 0 (negative); bools and "
                f"floats are not accepted, got {describe(label)}"
            )
    return read_only(np.array([int(label) for label in items], dtype=np.int64))


FIELD_CHECKS = {
    "resource_path": _check_resource_path,
    "session_id": _check_session_id,
    "frame_index": _check_frame,
    "text": _check_texts,
    "concept_mode": _check_concept_mode,
    "points": _check_points,
    "point_labels": _check_labels,
    "bounding_boxes": _check_boxes,
    "bounding_box_labels": _check_labels,
    "obj_id": _check_obj_id,
    "propagation_direction": _check_direction,
    "start_frame_index": _check_frame,
    "max_frame_num_to_track": _check_count,
    "is_user_action": _check_bool,
    "live": _check_bool,
    "frame": _check_frame_array,
}


def check_prompt_combination(values: dict[str, Any]) -> None:
    text = values.get("text")
    points = values.get("points")
    boxes = values.get("bounding_boxes")
    if text is None and points is None and boxes is None:
        raise InvalidInputError(
            "add_prompt: expected at least one prompt among 'text', 'points' and "
            "'bounding_boxes', got none"
        )
    for labels, owner in (("point_labels", "points"), ("bounding_box_labels", "bounding_boxes")):
        if labels in values and owner not in values:
            raise InvalidInputError(f"{labels}: given without {owner!r}; expected both or neither")
    if points is not None:
        if text is not None:
            raise InvalidInputError(
                "points: cannot be combined with 'text' in one add_prompt; send the text "
                "prompt first, then click objects in a separate request"
            )
        if boxes is not None:
            raise InvalidInputError(
                "points: cannot be combined with 'bounding_boxes' in one add_prompt; boxes are "
                "concept exemplars and points click one object, send them separately"
            )
        labels = values.get("point_labels")
        if labels is None:
            raise InvalidInputError(
                f"point_labels: required with 'points', expected {len(points)} labels "
                f"(1 foreground, 0 background), got none"
            )
        _check_one_label_each(labels, len(points), "point_labels", "point")
        if "concept_mode" in values:
            raise InvalidInputError(
                "concept_mode: only allowed with 'text' or 'bounding_boxes' (it says whether a "
                "concept replaces or joins the session's concepts), got it with 'points'"
            )
    elif "obj_id" in values:
        raise InvalidInputError(
            f"obj_id: only allowed with 'points' (it names the clicked object), got "
            f"obj_id={values['obj_id']} with a {'text' if text is not None else 'box'} prompt; "
            f"leave it out"
        )
    if boxes is not None and isinstance(text, tuple) and len(text) > 1:
        raise InvalidInputError(
            f"bounding_boxes: boxes belong to one concept, got them with {len(text)} noun "
            "phrases; send each concept's boxes with its own text"
        )
    box_labels = values.get("bounding_box_labels")
    if boxes is not None and box_labels is not None:
        _check_one_label_each(box_labels, len(boxes), "bounding_box_labels", "box")


def _check_one_label_each(labels: np.ndarray, n: int, field: str, item: str) -> None:
    if len(labels) != n:
        raise InvalidInputError(f"{field}: expected one label per {item} ({n}), got {len(labels)}")


# -- helpers for the predictor (need session state) --------------------------------------------


def check_frame_index(value: object, num_frames: int, field: str = "frame_index") -> int:
    """Return ``value`` as an int if it is a frame index in ``[0, num_frames)``.

    Raises:
        FrameIndexError: naming ``field``, the valid range and the value.
    """
    if not _is_int(value):
        raise FrameIndexError(
            f"{field}: expected an int in [0, {num_frames}) (bool and float are not accepted), "
            f"got {describe(value)}"
        )
    index = int(value)  # type: ignore[arg-type]
    if not 0 <= index < num_frames:
        raise FrameIndexError(
            f"{field}: expected an int in [0, {num_frames}), got {index} "
            f"(the session has {num_frames} frame{'s' if num_frames != 1 else ''})"
        )
    return index


def check_known(
    value: object, known: Collection[Any], field: str, *, list_known: bool = True
) -> None:
    """Raise `UnknownIdError` naming ``field`` if ``value`` is not in ``known``.

    With ``list_known`` the message lists the known ids (the first 10, sorted), which is right
    for a session's own object ids. Session ids are never listed nor suggested
    (``list_known=False``): in a shared predictor or a server they belong to other users.
    """
    try:
        if value in known:
            return
    except TypeError:  # an unhashable value cannot be a known id
        pass
    if not list_known:
        raise UnknownIdError(f"{field}: unknown {field} {shorten(value)}")
    ordered = sorted(known, key=lambda k: (0, int(k), "") if _is_int(k) else (1, 0, str(k)))
    listed = ", ".join(repr(k) for k in ordered[:10]) + (", ..." if len(ordered) > 10 else "")
    raise UnknownIdError(
        f"{field}: unknown {field} {shorten(value)}; known: [{listed}]"
        if known
        else f"{field}: unknown {field} {shorten(value)}; there are none"
    )


def check_points_in_frame(
    points: np.ndarray, width: int, height: int, field: str = "points"
) -> None:
    """Raise `InvalidInputError` if a pixel point ``(N, 2)`` lies outside ``[0, W] x [0, H]``."""
    for i, (x, y) in enumerate(np.asarray(points, dtype=np.float64).reshape(-1, 2)):
        if not (0 <= x <= width and 0 <= y <= height):
            raise InvalidInputError(
                f"{field}[{i}]: expected a pixel [x, y] inside the {width}x{height} frame "
                f"(0 <= x <= {width}, 0 <= y <= {height}), got [{x:g}, {y:g}]"
            )


def check_clicks(
    points: object,
    labels: object,
    width: int,
    height: int,
    *,
    fields: tuple[str, str] = ("points", "point_labels"),
    dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Clicks on a ``width x height`` frame, checked as a request's: ``points`` ``[[x, y],
    ...]`` in pixels inside the frame (finite numbers), ``labels`` one int 1 or 0 per point.
    Returns read-only ``points (N, 2)`` in ``dtype`` and ``labels (N,)`` int64. ``fields``:
    the names the messages use (a caller's own argument names)."""
    points_field, labels_field = fields
    xy = _check_points(points, points_field, dtype)
    lab = _check_labels(labels, labels_field)
    _check_one_label_each(lab, len(xy), labels_field, "point")
    check_points_in_frame(xy, width, height, points_field)
    return xy, lab


def check_pixel_box(
    box: object, width: int, height: int, field: str = "box", dtype: type = np.float64
) -> np.ndarray:
    """A box ``[x0, y0, x1, y1]`` in pixels of a ``width x height`` frame: finite numbers,
    corners inside the frame, ``x1 > x0`` and ``y1 > y0``. Returns a read-only ``(4,)``."""
    items = _as_list(box)
    if items is None or len(items) != 4 or not all(_is_real(v) for v in items):
        raise InvalidInputError(
            f"{field}: expected [x0, y0, x1, y1], four numbers in pixels, got {describe(box)}"
        )
    (b,) = _coordinates([items], field, "[x0, y0, x1, y1] in pixels", dtype)
    check_points_in_frame(b.reshape(2, 2), width, height, field)
    if not (b[2] > b[0] and b[3] > b[1]):
        raise InvalidInputError(
            f"{field}: expected x1 > x0 and y1 > y0 (a non-empty box), got {b.tolist()}"
        )
    return b


# -- small utilities ---------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _as_list(value: object) -> list | None:
    """A list/tuple/ndarray as a Python list (numpy scalars become Python ones), else None."""
    if isinstance(value, np.ndarray):
        return value.tolist() if value.ndim > 0 else None
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def _rows(value: object, field: str, width: int, what: str, form: str) -> list[list]:
    rows = _as_list(value)
    if rows is None or len(rows) == 0:
        raise InvalidInputError(
            f"{field}: expected a non-empty list {form} (list, tuple or numpy array), "
            f"got {describe(value)}"
        )
    if all(_is_real(v) for v in rows) and len(rows) == width:
        raise InvalidInputError(
            f"{field}: expected a list of {what} such as {form}, got one flat entry "
            f"{shorten(rows)}; wrap it in a list"
        )
    out = []
    for i, row in enumerate(rows):
        items = _as_list(row)
        if items is None or len(items) != width:
            raise InvalidInputError(f"{field}[{i}]: expected {what}, got {describe(row)}")
        out.append(items)
    return out


def _coordinates(rows: list[list], field: str, what: str, dtype: type = np.float32) -> np.ndarray:
    for i, row in enumerate(rows):
        for v in row:
            if not _is_real(v) or not abs(_float_or_inf(v)) <= _FLOAT32_MAX:  # also rejects nan
                raise InvalidInputError(
                    f"{field}[{i}]: expected {what}, finite real numbers (not bool), "
                    f"got {shorten(row)}"
                )
    return read_only(np.array([[float(v) for v in row] for row in rows], dtype=dtype))


def _float_or_inf(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except OverflowError:  # a huge Python int
        return math.inf


def read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def quoted(items: Collection[str]) -> str:
    return ", ".join(repr(n) for n in items)


def shorten(value: object, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages never echo input in full."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__} {shorten(value)}"
