"""The request layer of `Sam3VideoPredictor`: request dicts parsed into typed, validated requests.

``parse_request(request, stream=...)`` turns one request dict (the public API of the
predictor, see the README) into one frozen dataclass: `StartSession`, `AddPrompt`,
`PropagateInVideo`, `RemoveObject`, `ResetSession` or `CloseSession`. Everything that can be
checked without a session is checked here, before the predictor touches any state, so a bad
request never changes a session. The checks that need a session (a frame index below the
number of frames, a known session or object id) are the predictor's, through the helpers
`check_frame_index`, `check_known` and `check_points_in_frame`. The field checks themselves
live in `sam3video.validation` (re-exported here).

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
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

import numpy as np

from sam3video.errors import InvalidInputError
from sam3video.validation import (  # the helpers for the predictor are re-exported here
    CONCEPT_MODES,
    FIELD_CHECKS,
    MAX_ECHO,
    MAX_OBJ_ID,
    PROPAGATION_DIRECTIONS,
    check_frame_index,
    check_known,
    check_points_in_frame,
    check_prompt_combination,
    describe,
    quoted,
    read_only,
    shorten,
)

__all__ = [
    "CONCEPT_MODES",
    "MAX_OBJ_ID",
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
        raise InvalidInputError(f"stream: expected a bool, got {describe(stream)}")
    if not isinstance(request, Mapping):
        raise InvalidInputError(
            f"request: expected a Mapping (a dict with a 'type' key), got {describe(request)}"
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
        values[field_name] = FIELD_CHECKS[field_name](value, field_name)
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
        check_prompt_combination(values)
        if "bounding_boxes" in values and "bounding_box_labels" not in values:
            values["bounding_box_labels"] = read_only(
                np.ones(len(values["bounding_boxes"]), dtype=np.int64)
            )
    return cls(**values)


def _request_class(request: Mapping[str, Any], stream: bool) -> type:
    if "type" not in request:
        raise InvalidInputError(
            f"type: missing; expected one of {quoted(REQUEST_TYPES)}, got a request with keys "
            f"{shorten(sorted(map(repr, request)))}"
        )
    request_type = request["type"]
    if not isinstance(request_type, str):
        raise InvalidInputError(
            f"type: expected a str, one of {quoted(REQUEST_TYPES)}, got {describe(request_type)}"
        )
    if request_type not in REQUEST_TYPES:
        hint = _suggest(request_type, list(REQUEST_TYPES))
        raise InvalidInputError(
            f"type: unknown request type {shorten(request_type)}{hint}; expected one of "
            f"{quoted(REQUEST_TYPES)}"
        )
    cls = REQUEST_TYPES[request_type]
    if cls.stream and not stream:
        raise InvalidInputError(
            f"type: {shorten(request_type)} is a streaming request; call "
            f"handle_stream_request(request) and iterate over its responses instead of "
            f"handle_request(request)"
        )
    if stream and not cls.stream:
        raise InvalidInputError(
            f"type: {shorten(request_type)} is not a streaming request; call "
            f"handle_request(request) instead of handle_stream_request(request) (only "
            f"'propagate_in_video' streams)"
        )
    return cls


def _unknown_fields_message(name: str, unknown: list[object], valid: list[str]) -> str:
    parts = []
    for key in unknown[:5]:
        hint = _suggest(key, valid) if isinstance(key, str) else ""
        parts.append(f"{shorten(key)}{hint}")
    if len(unknown) > 5:
        parts.append(f"... ({len(unknown)} in all)")
    return (
        f"{name}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(parts)}; "
        f"valid fields are 'type', {quoted(valid)}"
    )


def _suggest(word: str, valid: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or ``""``."""
    if len(word) > MAX_ECHO:  # no fuzzy matching of huge strings: it is slow and pointless
        return ""
    alias = _ALIASES.get(word.lower())
    if alias in valid:
        return f" (did you mean {alias!r}?)"
    by_lower = {v.lower(): v for v in valid}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
