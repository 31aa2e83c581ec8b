"""The request layer: request dicts parsed into typed requests, every bad input a typed error."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sam3video.errors import FrameIndexError, InvalidInputError, Sam3VideoError, UnknownIdError
from sam3video.requests import (
    REQUEST_TYPES,
    AddPrompt,
    CloseSession,
    PropagateInVideo,
    RemoveObject,
    ResetSession,
    StartSession,
    check_frame_index,
    check_known,
    check_points_in_frame,
    parse_request,
)

STREAM_TYPES = {"propagate_in_video"}


def parse(request: dict) -> object:
    """Parse through the entry point the request type belongs to."""
    return parse_request(request, stream=request.get("type") in STREAM_TYPES)


def prompt(**fields: object) -> dict:
    return {"type": "add_prompt", "session_id": "s", "frame_index": 0, **fields}


# -- the public API (the seed's field names and defaults) ----------------------------------------


def test_fields_and_defaults_match_the_seed_api() -> None:
    def signature(cls: type) -> list[tuple[str, object]]:
        return [(f.name, f.default) for f in dataclasses.fields(cls)]

    required = dataclasses.MISSING
    # The seed's fields, in its order and with its defaults; then our documented extensions.
    # resource_path is optional in the dataclass because live sessions have none; without
    # live=True it is required (test_live_start_session_needs_a_resource_path).
    assert signature(StartSession) == [
        ("resource_path", None),
        ("session_id", None),
        ("live", False),
    ]
    assert signature(AddPrompt) == [
        ("session_id", required),
        ("frame_index", required),
        ("text", None),
        ("points", None),
        ("point_labels", None),
        ("bounding_boxes", None),
        ("bounding_box_labels", None),
        ("obj_id", None),
        ("concept_mode", "replace"),
    ]
    assert signature(PropagateInVideo) == [
        ("session_id", required),
        ("propagation_direction", "both"),
        ("start_frame_index", None),
        ("max_frame_num_to_track", None),
    ]
    assert signature(RemoveObject) == [
        ("session_id", required),
        ("obj_id", required),
        ("is_user_action", True),
    ]
    assert signature(ResetSession) == signature(CloseSession) == [("session_id", required)]
    assert set(REQUEST_TYPES) == {
        "start_session",
        "add_prompt",
        "propagate_in_video",
        "remove_object",
        "reset_session",
        "close_session",
        # extensions: SAM 3.1's cancel, several concepts, live sessions
        "cancel_propagation",
        "remove_concept",
        "add_frame",
    }
    assert all(REQUEST_TYPES[name].request_type == name for name in REQUEST_TYPES)
    assert [n for n, c in REQUEST_TYPES.items() if c.stream] == ["propagate_in_video"]


def test_live_start_session_needs_a_resource_path() -> None:
    with pytest.raises(InvalidInputError, match="missing required field 'resource_path'"):
        parse_request({"type": "start_session"}, stream=False)
    with pytest.raises(InvalidInputError, match="^resource_path: a live session"):
        parse_request({"type": "start_session", "live": True, "resource_path": "x"}, stream=False)
    assert parse_request({"type": "start_session", "live": True}, stream=False).live


# -- happy paths --------------------------------------------------------------------------------


def test_start_session() -> None:
    assert parse({"type": "start_session", "resource_path": "v.mp4"}) == StartSession("v.mp4")
    assert parse(
        {"type": "start_session", "resource_path": "v.mp4", "session_id": None}
    ) == StartSession("v.mp4", None)
    request = {"type": "start_session", "resource_path": Path("/tmp/frames"), "session_id": "a"}
    parsed = parse(request)
    assert parsed == StartSession("/tmp/frames", "a")
    assert type(parsed.resource_path) is str


def test_simple_session_requests_and_defaults() -> None:
    assert parse({"type": "reset_session", "session_id": "s"}) == ResetSession("s")
    assert parse({"type": "close_session", "session_id": "s"}) == CloseSession("s")
    assert parse({"type": "remove_object", "session_id": "s", "obj_id": 3}) == RemoveObject(
        "s", 3, True
    )
    removed = parse(
        {"type": "remove_object", "session_id": "s", "obj_id": np.int32(0), "is_user_action": False}
    )
    assert removed == RemoveObject("s", 0, False) and type(removed.obj_id) is int
    assert parse({"type": "propagate_in_video", "session_id": "s"}) == PropagateInVideo(
        "s", "both", None, None
    )
    for direction in ("forward", "backward", "both"):
        parsed = parse(
            {
                "type": "propagate_in_video",
                "session_id": "s",
                "propagation_direction": direction,
                "start_frame_index": np.uint8(4),
                "max_frame_num_to_track": 0,
            }
        )
        assert parsed == PropagateInVideo("s", direction, 4, 0)
        assert type(parsed.start_frame_index) is int


def test_text_prompt_keeps_the_text_as_given() -> None:
    parsed = parse(prompt(text="  Red CAR, "))
    assert isinstance(parsed, AddPrompt)
    assert parsed.text == "  Red CAR, "
    assert parsed.points is None and parsed.point_labels is None
    assert parsed.bounding_boxes is None and parsed.bounding_box_labels is None
    assert parsed.obj_id is None and parsed.frame_index == 0 and parsed.session_id == "s"


@pytest.mark.parametrize(
    "points, labels",
    [
        ([[500, 375]], [1]),
        ([(1.5, 2), [np.float32(3), np.int64(4)]], (1, 0)),
        (np.array([[10, 20], [30, 40]], dtype=np.int16), np.array([0, 1])),
        (np.array([[10.25, 20.5]]), [np.int64(1)]),
    ],
)
def test_point_prompt(points: object, labels: object) -> None:
    request = prompt(points=points, point_labels=labels)
    before = copy.deepcopy(request)
    parsed = parse(request)
    expected = np.asarray(points, dtype=np.float64)
    assert parsed.points.dtype == np.float32 and parsed.points.shape == expected.shape
    np.testing.assert_array_equal(parsed.points, expected.astype(np.float32))
    assert parsed.point_labels.dtype == np.int64
    np.testing.assert_array_equal(parsed.point_labels, np.asarray(labels))
    assert parsed.obj_id is None and parsed.text is None and parsed.bounding_boxes is None
    # the caller's request is untouched and the parsed arrays are read-only copies
    np.testing.assert_equal(request, before)
    assert not parsed.points.flags.writeable and not parsed.point_labels.flags.writeable
    if isinstance(points, np.ndarray):
        assert not np.shares_memory(parsed.points, points)


def test_point_prompt_with_obj_id() -> None:
    parsed = parse(prompt(points=[[1, 2]], point_labels=[0], obj_id=np.int64(7)))
    assert parsed.obj_id == 7 and type(parsed.obj_id) is int


def test_box_prompts_default_labels_and_several_boxes() -> None:
    boxes = [[0.3, 0.4, 0.2, 0.3], (0.5, 0.5, 1.0, 1.0), np.array([0.1, 0.9, 0.2, 0.2])]
    parsed = parse(prompt(bounding_boxes=boxes))
    assert parsed.bounding_boxes.shape == (3, 4) and parsed.bounding_boxes.dtype == np.float32
    np.testing.assert_allclose(parsed.bounding_boxes[0], [0.3, 0.4, 0.2, 0.3])
    assert parsed.bounding_box_labels.dtype == np.int64
    np.testing.assert_array_equal(parsed.bounding_box_labels, [1, 1, 1])
    assert not parsed.bounding_box_labels.flags.writeable
    assert parsed.text is None and parsed.points is None

    mixed = parse(prompt(text="dog", bounding_boxes=np.array(boxes), bounding_box_labels=[1, 0, 0]))
    assert mixed.text == "dog"
    np.testing.assert_array_equal(mixed.bounding_box_labels, [1, 0, 0])
    negative_only = parse(prompt(bounding_boxes=[[0.5, 0.5, 0.1, 0.1]], bounding_box_labels=[0]))
    np.testing.assert_array_equal(negative_only.bounding_box_labels, [0])


def test_box_touching_the_border_within_tolerance() -> None:
    # 0.1 + 0.9 / 2 style rounding must not reject a box that spans the image
    parsed = parse(prompt(bounding_boxes=[[0.55, 0.5, 0.9 + 1e-7, 1.0 + 5e-7]]))
    assert parsed.bounding_boxes.shape == (1, 4)


# -- errors: the request itself -----------------------------------------------------------------


def expect(error: type[Exception], request: object, *fragments: str, stream: bool = False) -> str:
    with pytest.raises(error) as caught:
        parse_request(request, stream=stream)  # type: ignore[arg-type]
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert isinstance(caught.value, Sam3VideoError)
    return message


@pytest.mark.parametrize("request_", [None, [("type", "reset_session")], "reset_session", 3])
def test_request_must_be_a_mapping(request_: object) -> None:
    expect(InvalidInputError, request_, "request", "Mapping", type(request_).__name__)


def test_type_missing_wrong_type_unknown() -> None:
    expect(InvalidInputError, {"session_id": "s"}, "type", "missing", "'add_prompt'")
    expect(InvalidInputError, {"type": 1, "session_id": "s"}, "type", "expected a str", "int 1")
    expect(InvalidInputError, {"type": None}, "type", "expected a str", "NoneType")
    expect(InvalidInputError, {"type": "add_promt"}, "'add_promt'", "did you mean 'add_prompt'")
    expect(InvalidInputError, {"type": "Close_Session"}, "did you mean 'close_session'")
    message = expect(InvalidInputError, {"type": "explode"}, "unknown request type 'explode'")
    assert "did you mean" not in message and "'start_session'" in message


def test_stream_and_plain_requests_go_to_their_entry_points() -> None:
    expect(
        InvalidInputError,
        {"type": "propagate_in_video", "session_id": "s"},
        "'propagate_in_video'",
        "handle_stream_request",
        stream=False,
    )
    for name in ("start_session", "add_prompt", "remove_object", "reset_session", "close_session"):
        expect(InvalidInputError, {"type": name}, f"'{name}'", "call handle_request", stream=True)
    with pytest.raises(InvalidInputError, match="stream"):
        parse_request({"type": "reset_session", "session_id": "s"}, stream="yes")  # type: ignore


@pytest.mark.parametrize(
    "request_, fragments",
    [
        (prompt(frame_idx=0), ["add_prompt", "'frame_idx'", "did you mean 'frame_index'"]),
        (prompt(text="a", txt=1), ["'txt'", "did you mean 'text'"]),
        (prompt(text="a", boxes_xywh=1), ["'boxes_xywh'", "did you mean 'bounding_boxes'"]),
        (prompt(text="a", point_label=[1]), ["'point_label'", "did you mean 'point_labels'"]),
        (prompt(text="a", Obj_Id=1), ["'Obj_Id'", "did you mean 'obj_id'"]),
        (prompt(text="a", zzz=1, qqq=2), ["unknown fields", "'zzz'", "'qqq'", "'obj_id'"]),
        (
            {"type": "propagate_in_video", "session_id": "s", "start_frame_idx": 0},
            ["'start_frame_idx'", "did you mean 'start_frame_index'"],
        ),
        (
            {"type": "propagate_in_video", "session_id": "s", "obj_id": 1},
            ["propagate_in_video", "unknown field 'obj_id'"],
        ),
        ({"type": "reset_session", "session_id": "s", 3: 1}, ["unknown field 3"]),
        ({"type": "start_session", "path": "v.mp4"}, ["did you mean 'resource_path'"]),
    ],
)
def test_unknown_fields_suggest_the_closest_name(request_: dict, fragments: list[str]) -> None:
    message = expect(
        InvalidInputError, request_, *fragments, stream=request_["type"] in STREAM_TYPES
    )
    assert "valid fields are" in message


@pytest.mark.parametrize(
    "request_, missing",
    [
        ({"type": "start_session"}, "'resource_path'"),
        ({"type": "add_prompt", "session_id": "s", "text": "a"}, "'frame_index'"),
        ({"type": "add_prompt"}, "fields 'session_id', 'frame_index'"),
        ({"type": "remove_object", "session_id": "s"}, "'obj_id'"),
        ({"type": "reset_session"}, "'session_id'"),
        ({"type": "close_session"}, "'session_id'"),
        ({"type": "propagate_in_video"}, "'session_id'"),
    ],
)
def test_missing_required_fields(request_: dict, missing: str) -> None:
    stream = request_["type"] in STREAM_TYPES
    expect(
        InvalidInputError, request_, request_["type"], "missing required", missing, stream=stream
    )


# -- errors: field values -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", 1.0, True, np.bool_(False), -1, None, [0], 2**63])
def test_bad_frame_index(value: object) -> None:
    message = expect(FrameIndexError, prompt(frame_index=value, text="a"), "frame_index", ">= 0")
    assert isinstance(value, int) or type(value).__name__ in message


@pytest.mark.parametrize("value", ["1", 1.5, False, -3])
def test_bad_start_frame_index_and_max_frames(value: object) -> None:
    request = {"type": "propagate_in_video", "session_id": "s"}
    with pytest.raises(FrameIndexError, match="start_frame_index"):
        parse_request({**request, "start_frame_index": value}, stream=True)
    with pytest.raises(InvalidInputError, match="max_frame_num_to_track"):
        parse_request({**request, "max_frame_num_to_track": value}, stream=True)


@pytest.mark.parametrize("value", ["forwards", "Forward", None, 1, ["both"]])
def test_bad_propagation_direction(value: object) -> None:
    request = {"type": "propagate_in_video", "session_id": "s", "propagation_direction": value}
    expect(
        InvalidInputError, request, "propagation_direction", "'forward'", repr(value), stream=True
    )


@pytest.mark.parametrize("value", [1.0, True, "3", -1, None, np.float64(2)])
def test_bad_obj_id(value: object) -> None:
    expect(
        InvalidInputError,
        {"type": "remove_object", "session_id": "s", "obj_id": value},
        "obj_id",
        "int >= 0",
    )
    if value is not None:  # None means "not given" in add_prompt
        expect(InvalidInputError, prompt(points=[[1, 2]], point_labels=[1], obj_id=value), "obj_id")


@pytest.mark.parametrize("value", [1, 0, "true", None])
def test_bad_is_user_action(value: object) -> None:
    request = {"type": "remove_object", "session_id": "s", "obj_id": 1, "is_user_action": value}
    expect(InvalidInputError, request, "is_user_action", "expected a bool")


@pytest.mark.parametrize("value", ["", 3, None, b"s", ["s"]])
def test_bad_session_id(value: object) -> None:
    for request in (
        {"type": "reset_session", "session_id": value},
        {"type": "close_session", "session_id": value},
        prompt(session_id=value, text="a"),
    ):
        expect(InvalidInputError, request, "session_id", "non-empty str")
    if value is not None:  # start_session: None asks for a generated id
        expect(
            InvalidInputError,
            {"type": "start_session", "resource_path": "v.mp4", "session_id": value},
            "session_id",
        )


@pytest.mark.parametrize("value", ["", 3, None, b"v.mp4", ["v.mp4"]])
def test_bad_resource_path(value: object) -> None:
    expect(
        InvalidInputError,
        {"type": "start_session", "resource_path": value},
        "resource_path",
        "os.PathLike",
    )


@pytest.mark.parametrize("value", ["", "   ", "\n\t"])
def test_empty_text(value: str) -> None:
    expect(InvalidInputError, prompt(text=value), "text", "non-empty", repr(value))


@pytest.mark.parametrize("value", [1, b"person", True, {"person": 1}])
def test_text_must_be_a_str(value: object) -> None:  # or a list of them: test_concepts.py
    expect(InvalidInputError, prompt(text=value), "text", "expected a str", type(value).__name__)


@pytest.mark.parametrize(
    "points, fragments",
    [
        ([], ["points", "non-empty list"]),
        (np.zeros((0, 2)), ["points", "non-empty"]),
        ("1,2", ["points", "str"]),
        ({"x": 1, "y": 2}, ["points", "dict"]),
        ([500, 375], ["flat entry", "wrap it in a list"]),
        ([[1, 2, 3]], ["points[0]", "[x, y]"]),
        ([[1, 2], [3]], ["points[1]", "[x, y]"]),
        ([[1, 2], 3], ["points[1]", "int 3"]),
        ([[1, float("nan")]], ["points[0]", "finite", "nan"]),
        ([[float("inf"), 1]], ["points[0]", "finite"]),
        ([[1e39, 1]], ["points[0]", "finite"]),
        ([[10**400, 1]], ["points[0]", "finite"]),
        ([[True, 1]], ["points[0]", "not bool"]),
        ([["1", 2]], ["points[0]", "'1'"]),
        ([[1 + 2j, 2]], ["points[0]"]),
        (np.array([[1, 2]], dtype=bool), ["points[0]", "not bool"]),
        (np.array([1.0, 2.0]), ["flat entry"]),
        (np.float32(1), ["points", "float32"]),
    ],
)
def test_bad_points(points: object, fragments: list[str]) -> None:
    expect(InvalidInputError, prompt(points=points, point_labels=[1]), *fragments)


@pytest.mark.parametrize(
    "labels, fragments",
    [
        ([True], ["point_labels[0]", "int 1", "bool True"]),
        ([1.0], ["point_labels[0]", "float 1.0"]),
        ([2], ["point_labels[0]", "int 2"]),
        ([-1], ["point_labels[0]", "int -1"]),
        (["1"], ["point_labels[0]", "str"]),
        (1, ["point_labels", "non-empty list", "int 1"]),
        ([], ["point_labels", "non-empty list"]),
        (np.array([True]), ["point_labels[0]", "bool"]),
        (np.array([1.0]), ["point_labels[0]", "float"]),
        ([1, 0], ["point_labels", "one label per point (1)", "got 2"]),
    ],
)
def test_bad_point_labels(labels: object, fragments: list[str]) -> None:
    expect(InvalidInputError, prompt(points=[[1, 2]], point_labels=labels), *fragments)


def test_points_need_labels_and_labels_need_points() -> None:
    expect(InvalidInputError, prompt(points=[[1, 2]]), "point_labels", "required with 'points'")
    expect(
        InvalidInputError, prompt(points=[[1, 2]], point_labels=None), "point_labels", "required"
    )
    expect(InvalidInputError, prompt(text="a", point_labels=[1]), "point_labels", "without")
    expect(
        InvalidInputError,
        prompt(text="a", bounding_box_labels=[1]),
        "bounding_box_labels",
        "without 'bounding_boxes'",
    )


@pytest.mark.parametrize(
    "boxes, fragments",
    [
        ([], ["bounding_boxes", "non-empty"]),
        ([0.5, 0.5, 0.2, 0.2], ["flat entry"]),
        ([[0.5, 0.5, 0.2]], ["bounding_boxes[0]", "[cx, cy, w, h]"]),
        ([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.0, 0.2]], ["bounding_boxes[1]", "w = 0.0 is not > 0"]),
        ([[0.5, 0.5, 0.2, -0.1]], ["bounding_boxes[0]", "h = -0.1 is not > 0"]),
        ([[0.05, 0.5, 0.2, 0.2]], ["cx - w/2 = -0.05 < 0"]),
        ([[0.5, 0.95, 0.2, 0.2]], ["cy + h/2 = 1.05 > 1"]),
        ([[0.5, 0.5, 1.0 + 1e-5, 0.2]], ["bounding_boxes[0]", "< 0"]),
        ([[1.5, 0.5, 0.2, 0.2]], ["> 1"]),
        ([[0.5, 0.5, 0.2, float("nan")]], ["finite"]),
        ([[0.5, 0.5, True, 0.2]], ["not bool"]),
        ("0.5 0.5 0.2 0.2", ["bounding_boxes", "str"]),
        (np.array([[0.9, 0.5, 0.4, 0.2]], dtype=np.float16), ["cx + w/2 = 1.09985", "> 1"]),
    ],
)
def test_bad_boxes(boxes: object, fragments: list[str]) -> None:
    expect(InvalidInputError, prompt(bounding_boxes=boxes), *fragments)


@pytest.mark.parametrize(
    "labels, fragments",
    [
        ([1], ["bounding_box_labels", "one label per box (2)", "got 1"]),
        ([1, True], ["bounding_box_labels[1]", "bool"]),
        ([1, 0.0], ["bounding_box_labels[1]", "float"]),
        ([1, 3], ["bounding_box_labels[1]", "int 3"]),
        ("10", ["bounding_box_labels", "non-empty list"]),
    ],
)
def test_bad_box_labels(labels: object, fragments: list[str]) -> None:
    boxes = [[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]
    expect(InvalidInputError, prompt(bounding_boxes=boxes, bounding_box_labels=labels), *fragments)


def test_prompt_combinations() -> None:
    expect(InvalidInputError, prompt(), "at least one prompt", "'text'", "'points'")
    expect(InvalidInputError, prompt(text=None, points=None), "at least one prompt")
    expect(InvalidInputError, prompt(obj_id=1), "at least one prompt")
    click = {"points": [[1, 2]], "point_labels": [1]}
    expect(InvalidInputError, prompt(text="a", **click), "points", "'text'")
    box = [[0.5, 0.5, 0.2, 0.2]]
    expect(InvalidInputError, prompt(bounding_boxes=box, **click), "points", "'bounding_boxes'")
    expect(InvalidInputError, prompt(text="a", obj_id=2), "obj_id", "only allowed with 'points'")
    expect(InvalidInputError, prompt(bounding_boxes=box, obj_id=0), "obj_id", "box prompt")


def test_failed_parse_leaves_the_request_untouched() -> None:
    points = np.array([[1.0, 2.0]])
    request = prompt(text="a", points=points, point_labels=[1])
    with pytest.raises(InvalidInputError):
        parse(request)
    assert request["points"] is points and points.flags.writeable
    np.testing.assert_array_equal(points, [[1.0, 2.0]])


def test_invalid_input_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        parse(prompt(frame_index="0", text="a"))
    with pytest.raises(IndexError):  # FrameIndexError is both
        parse(prompt(frame_index=-1, text="a"))


# -- helpers for the predictor ------------------------------------------------------------------


def test_check_frame_index() -> None:
    assert check_frame_index(0, 5) == 0
    value = check_frame_index(np.int64(4), 5, "start_frame_index")
    assert value == 4 and type(value) is int
    with pytest.raises(FrameIndexError, match=r"start_frame_index: expected an int in \[0, 5\)"):
        check_frame_index(5, 5, "start_frame_index")
    with pytest.raises(FrameIndexError, match=r"got -1 \(the session has 1 frame\)"):
        check_frame_index(-1, 1)
    for bad in (True, 1.0, "1", None):
        with pytest.raises(FrameIndexError, match="frame_index"):
            check_frame_index(bad, 5)


def test_check_known() -> None:
    check_known("a", {"a": 1}, "session_id")
    check_known(np.int64(3), [1, 3], "obj_id")
    with pytest.raises(UnknownIdError) as caught:
        check_known("sesion-1", {"session-1": 0, "other": 1}, "session_id", list_known=False)
    message = str(caught.value)
    assert message == "session_id: unknown session_id 'sesion-1'"  # no other session named
    assert isinstance(caught.value, KeyError)
    with pytest.raises(UnknownIdError) as caught:
        check_known("x" * 1_000_000, {"a": 0}, "session_id", list_known=False)
    assert len(str(caught.value)) < 160  # input echoed cut to ~100 characters
    with pytest.raises(UnknownIdError, match=r"obj_id: unknown obj_id 50; known: \[0, 1, 2"):
        check_known(50, range(12), "obj_id")
    with pytest.raises(UnknownIdError, match="none"):
        check_known(0, set(), "obj_id")
    with pytest.raises(UnknownIdError, match="obj_id"):
        check_known([1], {1}, "obj_id")  # unhashable: not a TypeError


def test_check_points_in_frame() -> None:
    check_points_in_frame(np.array([[0, 0], [640, 480]], dtype=np.float32), 640, 480)
    with pytest.raises(InvalidInputError, match=r"points\[1\].*640x480.*\[641, 2\]"):
        check_points_in_frame(np.array([[1, 1], [641, 2]], dtype=np.float32), 640, 480)
    with pytest.raises(InvalidInputError, match=r"points\[0\]"):
        check_points_in_frame(np.array([[-0.5, 1]], dtype=np.float32), 640, 480)


# -- fuzz ---------------------------------------------------------------------------------------

# Valid requests (every field drawn from its valid values) ...
ints = st.one_of(st.integers(0, 10_000), st.integers(0, 100).map(np.int64))
session_ids = st.text(min_size=1, max_size=6)
unit = st.floats(0.05, 0.95)
boxes = st.tuples(unit, unit, st.floats(0.01, 0.1), st.floats(0.01, 0.1)).map(list)
point_lists = st.lists(
    st.tuples(st.floats(-1e4, 1e4), st.floats(-1e4, 1e4)).map(list), min_size=1, max_size=5
)
valid_prompts = st.one_of(
    st.builds(dict, text=st.text(min_size=1, max_size=10).filter(str.strip)),
    point_lists.flatmap(
        lambda p: st.builds(
            dict,
            points=st.sampled_from([p, np.array(p), tuple(map(tuple, p))]),
            point_labels=st.lists(st.sampled_from([0, 1]), min_size=len(p), max_size=len(p)),
            obj_id=st.one_of(st.none(), ints),
        )
    ),
    st.lists(boxes, min_size=1, max_size=4).flatmap(
        lambda b: st.builds(
            dict,
            bounding_boxes=st.just(b),
            bounding_box_labels=st.one_of(
                st.none(), st.lists(st.sampled_from([0, 1]), min_size=len(b), max_size=len(b))
            ),
            text=st.one_of(st.none(), st.just("cat")),
        )
    ),
)
valid = st.one_of(
    st.builds(
        dict,
        type=st.just("start_session"),
        resource_path=st.text(min_size=1, max_size=8),
        session_id=st.one_of(st.none(), session_ids),
    ),
    st.builds(
        lambda sid, frame, fields: {
            "type": "add_prompt",
            "session_id": sid,
            "frame_index": frame,
            **fields,
        },
        session_ids,
        ints,
        valid_prompts,
    ),
    st.builds(
        dict,
        type=st.just("propagate_in_video"),
        session_id=session_ids,
        propagation_direction=st.sampled_from(["forward", "backward", "both"]),
        start_frame_index=st.one_of(st.none(), ints),
        max_frame_num_to_track=st.one_of(st.none(), ints),
    ),
    st.builds(
        dict,
        type=st.just("remove_object"),
        session_id=session_ids,
        obj_id=ints,
        is_user_action=st.booleans(),
    ),
    st.builds(
        dict, type=st.sampled_from(["reset_session", "close_session"]), session_id=session_ids
    ),
)

# ... and garbage: valid requests with a few fields replaced, added (typos too) or deleted,
# or any value at all.
ALL_FIELDS = sorted({f.name for cls in REQUEST_TYPES.values() for f in dataclasses.fields(cls)})
TYPOS = ["frame_idx", "Text", "obj", "boxes", "session", "start_frame_idx", "labels", "typ"]
DELETE = object()

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1),
    st.sampled_from([0, 1, -1, 2]),
    st.integers(-3, 3).map(np.int64),
    st.floats(-2, 2).map(np.float32),
)
scalars = st.one_of(
    numbers,
    st.none(),
    st.booleans(),
    st.booleans().map(np.bool_),
    st.text(max_size=8),
    st.sampled_from(["", " ", "s", "forward", "both", "person", "v.mp4"]),
    st.just(b"bytes"),
)
arrays = st.one_of(
    st.tuples(st.integers(0, 3), st.sampled_from([1, 2, 4])).map(
        lambda shape: np.random.default_rng(shape[0]).random(shape)
    ),
    st.integers(0, 3).map(lambda n: np.ones(n, dtype=np.int64)),
    st.just(np.array(1.0)),
    st.just(np.array([[True, False]])),
    st.just(np.array([["a", "b"]])),
)
values = st.one_of(
    scalars,
    arrays,
    st.lists(numbers, max_size=5),  # flat lists: labels, or a point/box not wrapped
    st.lists(st.lists(numbers, min_size=1, max_size=5).map(tuple), max_size=3),  # rows
    st.recursive(
        st.one_of(scalars, arrays),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(st.text(max_size=3), inner, max_size=2),
        ),
        max_leaves=6,
    ),
)


def edits(request: dict) -> st.SearchStrategy[list[tuple[object, object]]]:
    """1-2 edits, mostly on the request's own fields (else a typo, another type's field...)."""
    own = [f.name for f in dataclasses.fields(REQUEST_TYPES[request["type"]])]
    other = [*ALL_FIELDS, *TYPOS, "type", 0]
    key = st.integers(0, 4).flatmap(lambda k: st.sampled_from(other if k == 0 else own))
    return st.lists(st.tuples(key, st.one_of(values, st.just(DELETE))), min_size=1, max_size=2)


def mutate(request: dict, changes: list[tuple[object, object]]) -> dict:
    out = dict(request)
    for key, value in changes:
        if value is DELETE:
            out.pop(key, None)
        else:
            out[key] = value
    return out


mutated = valid.flatmap(lambda r: edits(r).map(lambda changes: mutate(r, changes)))
# (one_of would flatten the branches of `values` and drown the mutated requests: pick first)
garbage = st.integers(0, 9).flatmap(lambda k: values if k == 7 else mutated)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(request=garbage, mismatched_stream=st.integers(0, 9))
def test_fuzz_only_typed_errors_escape(request: object, mismatched_stream: int) -> None:
    stream = isinstance(request, dict) and request.get("type") == "propagate_in_video"
    stream ^= mismatched_stream == 7  # about one call in ten goes to the wrong entry point
    try:
        parsed = parse_request(request, stream=stream)  # type: ignore[arg-type]
    except Sam3VideoError:
        return
    assert isinstance(parsed, tuple(REQUEST_TYPES.values()))
    assert parsed.stream == stream and parsed.request_type == request["type"]
    if isinstance(parsed, AddPrompt):
        if parsed.points is not None:
            assert parsed.points.dtype == np.float32 and parsed.points.shape[1] == 2
            assert np.isfinite(parsed.points).all()
            assert parsed.point_labels.shape == (len(parsed.points),)
            assert parsed.text is None and parsed.bounding_boxes is None
        elif parsed.obj_id is not None:
            raise AssertionError("obj_id accepted without points")
        if parsed.bounding_boxes is not None:
            boxes = parsed.bounding_boxes.astype(np.float64)
            assert boxes.dtype != object and boxes.shape[1] == 4
            assert (boxes[:, 2:] > 0).all() and (boxes >= 0).all() and (boxes <= 1 + 1e-6).all()
            assert parsed.bounding_box_labels.shape == (len(parsed.bounding_boxes),)
            assert set(parsed.bounding_box_labels.tolist()) <= {0, 1}


@settings(max_examples=100, deadline=None, database=None, derandomize=True)
@given(request=valid)
def test_fuzz_valid_requests_parse(request: dict) -> None:
    parsed = parse(request)
    assert parsed.request_type == request["type"]
    for key, value in request.items():
        if key == "type" or value is None:
            continue
        got = getattr(parsed, key)
        if isinstance(got, np.ndarray):
            expected = np.asarray(value, dtype=got.dtype)
            np.testing.assert_array_equal(got, expected)
        else:
            assert got == value and type(got) is not np.int64
    if isinstance(parsed, AddPrompt) and request.get("bounding_box_labels") is None:
        if parsed.bounding_boxes is not None:
            np.testing.assert_array_equal(parsed.bounding_box_labels, 1)
