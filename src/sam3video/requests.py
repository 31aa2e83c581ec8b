"""The request layer of `Sam3VideoPredictor`: request dicts parsed into typed, validated requests.

``parse_request(request, stream=...)`` turns one request dict (the public API of the
predictor, see the README) into one frozen dataclass: `StartSession`, `AddPrompt`,
`PropagateInVideo`, `RemoveObject`, `ResetSession` or `CloseSession`. Everything that can be
checked without a session is checked here, before the predictor touches any state, so a bad
request never changes a session. The checks that need a session (a frame index below the
number of frames, a known session or object id) are the predictor's, through the helpers
`check_frame_index` and `check_known` at the end of this module.

Every error is a typed `sam3video.errors` exception whose message names the field, what was
expected and what was given. Nothing else escapes `parse_request`.

Decisions
---------
The request
  * ``request`` must be a ``Mapping`` (a dict) holding a ``"type"`` that is one of the six
    request type names (exact, case-sensitive). An unknown type suggests the closest name.
  * ``propagate_in_video`` is the only streaming request: it must go to
    ``handle_stream_request`` (``stream=True``) and every other type to ``handle_request``
    (``stream=False``). The message of the mismatch names the right method.
  * A field that is not a field of that request type is an error, never silently ignored (the
    official code ignores it), and the message suggests the closest valid field, including the
    official internal names: ``frame_idx`` -> ``frame_index``, ``boxes_xywh`` ->
    ``bounding_boxes``, ``text_str`` -> ``text``, ...
  * A missing required field is an error. ``None`` given to an optional field whose default is
    ``None`` means "not given". ``None`` given to a required field, to
    ``propagation_direction`` or to ``is_user_action`` is an error (as upstream, which would
    fail or misbehave on it).

Scalars
  * Integers are Python ``int`` or numpy integer scalars. ``bool`` (and ``numpy.bool_``) is
    *not* an integer here, and neither is a whole float such as ``3.0``. Integers must fit in
    int64.
  * ``frame_index`` and ``start_frame_index`` are ints >= 0 (errors: `FrameIndexError`);
    whether they are below the number of frames is checked by the predictor.
    ``max_frame_num_to_track`` is ``None`` (all frames) or an int >= 0.
  * ``obj_id`` is an int in ``[0, 2**31)`` (the ids the predictor hands out start at 0).
  * ``session_id`` is a non-empty str. In ``start_session`` it may be left out or ``None``, and
    the predictor then generates one; an empty string is an error (upstream would silently
    generate a new id instead).
  * ``resource_path`` is a non-empty ``str`` or ``os.PathLike`` (converted to ``str``).
  * ``propagation_direction`` is one of ``"forward"``, ``"backward"``, ``"both"`` (default
    ``"both"``). ``is_user_action`` is a bool (or ``numpy.bool_``), default ``True``.
  * Messages quote user input cut to 100 characters, and an unknown ``session_id`` is never
    answered with other sessions' ids.
  * ``text`` is a str with at least one non-space character. Its content is kept as given:
    the tokenizer cleans it.

Points and boxes
  * Lists of points or boxes may be lists, tuples or numpy arrays (nested or 2-D), with at
    least one entry. Coordinates are finite real numbers (int, float or numpy scalars; not
    bool) that stay finite in float32.
  * ``points``: ``[[x, y], ...]`` in pixels of the original frame, stored as float32 ``(N, 2)``.
    A flat ``[x, y]`` is an error (wrap one point as ``[[x, y]]``). Whether points lie inside
    the frame needs the frame size and is left to the predictor (`check_points_in_frame`).
  * ``point_labels`` are required with ``points`` (upstream raises too), one per point, each
    the int 1 (foreground) or 0 (background); bools and floats are rejected. Stored as int64
    ``(N,)``.
  * ``bounding_boxes``: ``[[cx, cy, w, h], ...]`` normalized to [0, 1], stored as float32
    ``(N, 4)``. Each box needs ``w > 0``, ``h > 0`` and must lie inside the image: its corners
    ``cx -/+ w/2`` and ``cy -/+ h/2`` within [0, 1] up to 1e-6. Values are stored as given
    (not clipped). Several boxes per request are allowed (visual exemplars).
  * ``bounding_box_labels`` are optional (default: all 1, positive), one per box, each the int
    1 (positive) or 0 (negative). A request of negative boxes only is allowed.
  * Labels without their points or boxes are an error.

Combinations in ``add_prompt``
  * At least one of ``text``, ``points``, ``bounding_boxes`` is required.
  * ``text`` and/or ``bounding_boxes`` set the concept (detector path); ``points`` click one
    object (tracker path). Points therefore cannot be combined with text (as upstream) nor
    with boxes (upstream also refuses this).
  * ``obj_id`` goes with ``points`` only: without it the points create a new object with a
    fresh id; with it they refine that object (or create it under that id). ``obj_id`` with a
    text or box prompt is an error (upstream silently ignores it).

The dataclasses are frozen and their arrays are read-only copies (never views of the
caller's arrays). Building them directly skips validation; `parse_request` is the checked
way in.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Collection, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

import numpy as np

from sam3video.errors import FrameIndexError, InvalidInputError, UnknownIdError

__all__ = [
    "CONCEPT_MODES",
    "PROPAGATION_DIRECTIONS",
    "REQUEST_TYPES",
    "AddFrame",
    "AddPrompt",
    "CancelPropagation",
    "CloseSession",
    "PropagateInVideo",
    "RemoveConcept",
    "RemoveObject",
    "Request",
    "ResetSession",
    "StartSession",
    "check_frame_index",
    "check_known",
    "check_points_in_frame",
    "parse_request",
]

PROPAGATION_DIRECTIONS = ("forward", "backward", "both")
CONCEPT_MODES = ("replace", "add")
_INT64_MAX = int(np.iinfo(np.int64).max)
_BOX_TOLERANCE = 1e-6  # float rounding of cx +/- w/2 must not reject a box touching the border
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Object ids are int32-sized: the tracker and exports store them as int32/int64 tensors and the
# next automatic id is max + 1, which must stay representable.
MAX_OBJ_ID = 2**31 - 1
_MAX_ECHO = 100  # characters of user input a message may quote


# -- the typed requests ------------------------------------------------------------------------


@dataclass(frozen=True)
class StartSession:
    """Open a session on a video file, a frame folder or an image.

    ``session_id=None`` asks the predictor to generate one.
    """

    request_type: ClassVar[str] = "start_session"
    stream: ClassVar[bool] = False

    resource_path: str | None = None  # required unless live
    session_id: str | None = None
    live: bool = False


@dataclass(frozen=True, eq=False)  # numpy fields: equality by identity, no hashing of arrays
class AddPrompt:
    """A text, box-exemplar or click prompt on one frame.

    Arrays (read-only): ``points`` float32 ``(N, 2)`` pixels ``[x, y]``; ``point_labels`` int64
    ``(N,)`` in {0, 1}; ``bounding_boxes`` float32 ``(M, 4)`` normalized ``[cx, cy, w, h]``;
    ``bounding_box_labels`` int64 ``(M,)`` in {0, 1} (all 1 when the request gave none).
    """

    request_type: ClassVar[str] = "add_prompt"
    stream: ClassVar[bool] = False

    session_id: str
    frame_index: int
    text: str | tuple[str, ...] | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    bounding_boxes: np.ndarray | None = None
    bounding_box_labels: np.ndarray | None = None
    obj_id: int | None = None
    concept_mode: str = "replace"

    @property
    def texts(self) -> list[str] | None:
        """The concept noun phrases as a list (``text`` may be one str or several)."""
        if self.text is None:
            return None
        return [self.text] if isinstance(self.text, str) else list(self.text)


@dataclass(frozen=True)
class PropagateInVideo:
    """Track the session's objects through the video (a streaming request).

    ``start_frame_index=None``: start at the first prompted frame; ``max_frame_num_to_track=None``:
    go to the end of the video in each direction.
    """

    request_type: ClassVar[str] = "propagate_in_video"
    stream: ClassVar[bool] = True

    session_id: str
    propagation_direction: str = "both"
    start_frame_index: int | None = None
    max_frame_num_to_track: int | None = None


@dataclass(frozen=True)
class RemoveObject:
    """Stop tracking one object and delete it from every frame's results."""

    request_type: ClassVar[str] = "remove_object"
    stream: ClassVar[bool] = False

    session_id: str
    obj_id: int
    is_user_action: bool = True


@dataclass(frozen=True)
class ResetSession:
    """Drop every prompt and object of a session; its frames stay loaded."""

    request_type: ClassVar[str] = "reset_session"
    stream: ClassVar[bool] = False

    session_id: str


@dataclass(frozen=True)
class CloseSession:
    """Close a session and free its memory."""

    request_type: ClassVar[str] = "close_session"
    stream: ClassVar[bool] = False

    session_id: str


@dataclass(frozen=True)
class RemoveConcept:
    """Stop tracking one concept: the noun phrase and every object it found (their results
    are deleted from every frame, as `RemoveObject`). Other concepts and clicked objects stay.
    A box-only concept is named ``"visual"`` (the word the detector reads for it)."""

    request_type: ClassVar[str] = "remove_concept"
    stream: ClassVar[bool] = False

    session_id: str
    text: str


@dataclass(frozen=True, eq=False)
class AddFrame:
    """Append the next frame to a live session and track it at once (``frame``: a read-only
    copy, ``uint8 (H, W, 3)`` RGB; its size is checked against the stream's by the session)."""

    request_type: ClassVar[str] = "add_frame"
    stream: ClassVar[bool] = False

    session_id: str
    frame: np.ndarray


@dataclass(frozen=True)
class CancelPropagation:
    """Stop the session's running propagation at the next frame boundary (from any thread).

    The frames it finished keep their results and its stream ends cleanly; without a running
    propagation this does nothing. (SAM 3.1's predictor has the same request.)
    """

    request_type: ClassVar[str] = "cancel_propagation"
    stream: ClassVar[bool] = False

    session_id: str


Request = (
    StartSession
    | AddPrompt
    | PropagateInVideo
    | RemoveObject
    | ResetSession
    | CloseSession
    | CancelPropagation
    | RemoveConcept
    | AddFrame
)

REQUEST_TYPES: dict[str, type] = {
    cls.request_type: cls
    for cls in (
        StartSession,
        AddPrompt,
        PropagateInVideo,
        RemoveObject,
        ResetSession,
        CloseSession,
        CancelPropagation,
        RemoveConcept,
        AddFrame,
    )
}

# Names a caller may reach for (the official model's own parameter names, short forms) that
# difflib alone would not map to the right field.
_ALIASES = {
    "frame_idx": "frame_index",
    "start_frame_idx": "start_frame_index",
    "text_str": "text",
    "prompt": "text",
    "boxes": "bounding_boxes",
    "boxes_xywh": "bounding_boxes",
    "boxes_cxcywh": "bounding_boxes",
    "box": "bounding_boxes",
    "bbox": "bounding_boxes",
    "box_labels": "bounding_box_labels",
    "labels": "point_labels",
    "object_id": "obj_id",
    "direction": "propagation_direction",
    "reverse": "propagation_direction",
    "path": "resource_path",
    "video_path": "resource_path",
}


# -- parsing -----------------------------------------------------------------------------------


def parse_request(request: Mapping[str, Any], *, stream: bool) -> Request:
    """Validate a request dict and return its typed request.

    Args:
        request: ``{"type": <name>, <field>: <value>, ...}`` as documented for
            ``Sam3VideoPredictor.handle_request`` / ``handle_stream_request``.
        stream: True when called from ``handle_stream_request`` (only ``propagate_in_video``
            is accepted), False from ``handle_request`` (every other type).

    Returns:
        A `StartSession`, `AddPrompt`, `PropagateInVideo`, `RemoveObject`, `ResetSession` or
        `CloseSession` holding normalized values (see the module docstring).

    Raises:
        InvalidInputError: a malformed request (the message names the field).
        FrameIndexError: ``frame_index`` / ``start_frame_index`` not an int >= 0.
    """
    if not isinstance(stream, (bool, np.bool_)):
        raise InvalidInputError(f"stream: expected a bool, got {_describe(stream)}")
    if not isinstance(request, Mapping):
        raise InvalidInputError(
            f"request: expected a Mapping (a dict with a 'type' key), got {_describe(request)}"
        )
    cls = _request_class(request, bool(stream))
    name = cls.request_type
    specs = {f.name: f for f in fields(cls)}

    unknown = [key for key in request if key != "type" and key not in specs]
    if unknown:
        raise InvalidInputError(_unknown_fields_message(name, unknown, list(specs)))
    missing = [f for f, spec in specs.items() if spec.default is MISSING and f not in request]
    if missing:
        listed = ", ".join(repr(f) for f in missing)
        raise InvalidInputError(
            f"{name}: missing required field{'s' if len(missing) > 1 else ''} {listed}"
        )

    values: dict[str, Any] = {}
    for field_name, spec in specs.items():
        if field_name not in request:
            continue
        value = request[field_name]
        if value is None and spec.default is None:
            continue  # an optional field given as None means "not given"
        values[field_name] = _FIELD_CHECKS[field_name](value, field_name)
    if cls is StartSession:
        if values.get("live"):
            if "resource_path" in values:
                raise InvalidInputError(
                    "resource_path: a live session receives its frames (add_frame); leave "
                    "resource_path out with live=True"
                )
        elif "resource_path" not in values:
            if "resource_path" not in request:
                raise InvalidInputError(
                    "start_session: missing required field 'resource_path' (a path to a video, "
                    "a frame folder or an image; or live=True for a session fed frame by frame)"
                )
            raise InvalidInputError(
                "resource_path: expected a non-empty str or os.PathLike path to a video, a "
                "frame folder or an image (or live=True for a session fed frame by frame), "
                "got None"
            )
    if cls is AddPrompt:
        _check_prompt_combination(values)
        if "bounding_boxes" in values and "bounding_box_labels" not in values:
            values["bounding_box_labels"] = _read_only(
                np.ones(len(values["bounding_boxes"]), dtype=np.int64)
            )
    return cls(**values)


def _request_class(request: Mapping[str, Any], stream: bool) -> type:
    if "type" not in request:
        raise InvalidInputError(
            f"type: missing; expected one of {_names(REQUEST_TYPES)}, got a request with keys "
            f"{_shorten(sorted(map(repr, request)))}"
        )
    request_type = request["type"]
    if not isinstance(request_type, str):
        raise InvalidInputError(
            f"type: expected a str, one of {_names(REQUEST_TYPES)}, got {_describe(request_type)}"
        )
    if request_type not in REQUEST_TYPES:
        hint = _suggest(request_type, list(REQUEST_TYPES))
        raise InvalidInputError(
            f"type: unknown request type {_shorten(request_type)}{hint}; expected one of "
            f"{_names(REQUEST_TYPES)}"
        )
    cls = REQUEST_TYPES[request_type]
    if cls.stream and not stream:
        raise InvalidInputError(
            f"type: {_shorten(request_type)} is a streaming request; call "
            f"handle_stream_request(request) and iterate over its responses instead of "
            f"handle_request(request)"
        )
    if stream and not cls.stream:
        raise InvalidInputError(
            f"type: {_shorten(request_type)} is not a streaming request; call "
            f"handle_request(request) instead of handle_stream_request(request) (only "
            f"'propagate_in_video' streams)"
        )
    return cls


def _unknown_fields_message(name: str, unknown: list[object], valid: list[str]) -> str:
    parts = []
    for key in unknown[:5]:
        hint = _suggest(key, valid) if isinstance(key, str) else ""
        parts.append(f"{_shorten(key)}{hint}")
    if len(unknown) > 5:
        parts.append(f"... ({len(unknown)} in all)")
    return (
        f"{name}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(parts)}; "
        f"valid fields are 'type', {_names(valid)}"
    )


def _suggest(word: str, valid: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or ``""``."""
    if len(word) > _MAX_ECHO:  # no fuzzy matching of huge strings: it is slow and pointless
        return ""
    alias = _ALIASES.get(word.lower())
    if alias in valid:
        return f" (did you mean {alias!r}?)"
    by_lower = {v.lower(): v for v in valid}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


# -- field checks ------------------------------------------------------------------------------


def _check_session_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{field}: expected a non-empty str, got {_describe(value)}")
    return value


def _check_resource_path(value: object, field: str) -> str:
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(path, str) or not path:
        raise InvalidInputError(
            f"{field}: expected a non-empty str or os.PathLike path to a video, a frame folder "
            f"or an image, got {_describe(value)}"
        )
    return path


def _check_frame(value: object, field: str) -> int:
    return _check_int(value, field, error=FrameIndexError, what="a frame index")


def _check_count(value: object, field: str) -> int:
    return _check_int(value, field, error=InvalidInputError, what="a number of frames")


def _check_obj_id(value: object, field: str) -> int:
    return _check_int(
        value, field, error=InvalidInputError, what="an object id", upper=MAX_OBJ_ID
    )


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
            f"got {_describe(value)}"
        )
    number = int(value)  # type: ignore[arg-type]
    if not 0 <= number <= upper:
        bound = "that fits in int64" if upper == _INT64_MAX else f"below {upper + 1}"
        raise error(f"{field}: expected {what}, an int >= 0 {bound}, got {_shorten(number)}")
    return number


def _check_direction(value: object, field: str) -> str:
    if not isinstance(value, str) or value not in PROPAGATION_DIRECTIONS:
        raise InvalidInputError(
            f"{field}: expected one of {_names(PROPAGATION_DIRECTIONS)}, got {_describe(value)}"
        )
    return value


def _check_bool(value: object, field: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{field}: expected a bool, got {_describe(value)}")
    return bool(value)


def _check_texts(value: object, field: str) -> str | tuple[str, ...]:
    """One noun phrase (the seed) or a non-empty list of distinct ones (several concepts)."""
    if isinstance(value, str):
        return _check_text(value, field)
    if not isinstance(value, (list, tuple)):
        raise InvalidInputError(
            f"{field}: expected a str (a noun phrase) or a list of them, got {_describe(value)}"
        )
    if not value:
        raise InvalidInputError(f"{field}: expected at least one noun phrase, got an empty list")
    texts = tuple(_check_text(t, f"{field}[{i}]") for i, t in enumerate(value))
    seen: set[str] = set()
    for i, t in enumerate(texts):
        if t in seen:
            raise InvalidInputError(
                f"{field}[{i}]: expected distinct noun phrases, got {_shorten(t)} twice"
            )
        seen.add(t)
    return texts


def _check_concept_mode(value: object, field: str) -> str:
    if not isinstance(value, str) or value not in CONCEPT_MODES:
        raise InvalidInputError(
            f"{field}: expected one of {_names(CONCEPT_MODES)}, got {_describe(value)}"
        )
    return value


def _check_frame_array(value: object, field: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 3:
        raise InvalidInputError(
            f"{field}: expected an np.ndarray uint8 (H, W, 3) RGB frame, got {_describe(value)}"
        )
    if value.shape[2] != 3 or min(value.shape[:2]) < 1:
        raise InvalidInputError(
            f"{field}: expected an np.ndarray uint8 (H, W, 3) RGB frame, got shape {value.shape}"
        )
    return value


def _check_text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{field}: expected a str (a noun phrase), got {_describe(value)}")
    if not value.strip():
        raise InvalidInputError(
            f"{field}: expected a non-empty noun phrase such as 'person', got "
            f"{_shorten(value)}; leave 'text' out for a box or point prompt"
        )
    return value


def _check_points(value: object, field: str) -> np.ndarray:
    rows = _rows(value, field, 2, "[x, y] in pixels", "[[x, y], ...]")
    return _coordinates(rows, field, "[x, y] in pixels")


def _check_boxes(value: object, field: str) -> np.ndarray:
    what = "[cx, cy, w, h] normalized to [0, 1]"
    rows = _rows(value, field, 4, what, "[[cx, cy, w, h], ...]")
    boxes = _coordinates(rows, field, what)
    for i, (cx, cy, w, h) in enumerate(rows):  # Python floats: the check ignores float32 rounding
        problem = _box_problem(float(cx), float(cy), float(w), float(h))
        if problem:
            raise InvalidInputError(
                f"{field}[{i}]: expected a box {what} lying inside the image (w > 0, h > 0, "
                f"corners cx -/+ w/2 and cy -/+ h/2 within [0, 1]), got {_shorten(rows[i])} "
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
            f"got {_describe(value)}"
        )
    for i, label in enumerate(items):
        if not _is_int(label) or int(label) not in (0, 1):
            raise InvalidInputError(
                f"{field}[{i}]: expected the int 1 (positive) or 0 (negative); bools and "
                f"floats are not accepted, got {_describe(label)}"
            )
    return _read_only(np.array([int(label) for label in items], dtype=np.int64))


_FIELD_CHECKS = {
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


def _check_prompt_combination(values: dict[str, Any]) -> None:
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
        if len(labels) != len(points):
            raise InvalidInputError(
                f"point_labels: expected one label per point ({len(points)}), got {len(labels)}"
            )
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
    if boxes is not None and box_labels is not None and len(box_labels) != len(boxes):
        raise InvalidInputError(
            f"bounding_box_labels: expected one label per box ({len(boxes)}), got {len(box_labels)}"
        )


# -- helpers for the predictor (need session state) --------------------------------------------


def check_frame_index(value: object, num_frames: int, field: str = "frame_index") -> int:
    """Return ``value`` as an int if it is a frame index in ``[0, num_frames)``.

    Raises:
        FrameIndexError: naming ``field``, the valid range and the value.
    """
    if not _is_int(value):
        raise FrameIndexError(
            f"{field}: expected an int in [0, {num_frames}) (bool and float are not accepted), "
            f"got {_describe(value)}"
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
        raise UnknownIdError(f"{field}: unknown {field} {_shorten(value)}")
    ordered = sorted(known, key=lambda k: (0, int(k), "") if _is_int(k) else (1, 0, str(k)))
    listed = ", ".join(repr(k) for k in ordered[:10]) + (", ..." if len(ordered) > 10 else "")
    raise UnknownIdError(
        f"{field}: unknown {field} {_shorten(value)}; known: [{listed}]"
        if known
        else f"{field}: unknown {field} {_shorten(value)}; there are none"
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
            f"got {_describe(value)}"
        )
    if all(_is_real(v) for v in rows) and len(rows) == width:
        raise InvalidInputError(
            f"{field}: expected a list of {what} such as {form}, got one flat entry "
            f"{_shorten(rows)}; wrap it in a list"
        )
    out = []
    for i, row in enumerate(rows):
        items = _as_list(row)
        if items is None or len(items) != width:
            raise InvalidInputError(f"{field}[{i}]: expected {what}, got {_describe(row)}")
        out.append(items)
    return out


def _coordinates(rows: list[list], field: str, what: str) -> np.ndarray:
    for i, row in enumerate(rows):
        for v in row:
            if not _is_real(v) or not abs(_float_or_inf(v)) <= _FLOAT32_MAX:  # also rejects nan
                raise InvalidInputError(
                    f"{field}[{i}]: expected {what}, finite real numbers (not bool), "
                    f"got {_shorten(row)}"
                )
    return _read_only(np.array([[float(v) for v in row] for row in rows], dtype=np.float32))


def _float_or_inf(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except OverflowError:  # a huge Python int
        return math.inf


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _names(names: Collection[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _shorten(value: object, limit: int = _MAX_ECHO) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages never echo input in full."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__} {_shorten(value)}"
