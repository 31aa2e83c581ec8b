"""`RemotePredictor`: the seed's four examples through a real server equal in-process runs.

The same request sequences run through `Sam3VideoPredictor` in this process and through
`RemotePredictor` against a server of the same (tiny, synthetic-weight) predictor; every
response must be equal: frame order, object ids, masks bit for bit, scores, boxes.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_server_harness import CLIP, TOKEN, assert_same_outputs, tiny_predictor

from sam3video.client import RemotePredictor
from sam3video.errors import FrameIndexError, InvalidInputError, UnknownIdError

pytestmark = pytest.mark.usefixtures("one_thread")


def _start(predictor, path: str) -> str:
    return predictor.handle_request({"type": "start_session", "resource_path": path})["session_id"]


def _propagate(predictor, sid: str, **options) -> list[tuple[int, dict]]:
    request = {"type": "propagate_in_video", "session_id": sid, **options}
    return [(r["frame_index"], r["outputs"]) for r in predictor.handle_stream_request(request)]


def seed_examples(predictor, video: str) -> list:
    """The seed's examples (basic text, clicks, a box, both directions) on a small video;
    every response, in order."""
    log = []
    # Basic video segmentation: a text prompt on frame 0, propagated forward.
    sid = _start(predictor, video)
    log.append(
        predictor.handle_request(
            {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": "person"}
        )
    )
    log.append(_propagate(predictor, sid, propagation_direction="forward"))
    log.append(predictor.handle_request({"type": "close_session", "session_id": sid}))
    # Interactive tracking with points: the object id comes from the response.
    sid = _start(predictor, video)
    response = predictor.handle_request(
        {
            "type": "add_prompt",
            "session_id": sid,
            "frame_index": 0,
            "points": np.array([[32, 24]]),  # numpy, as callers often send
            "point_labels": [1],
        }
    )
    obj_id = list(response["outputs"].keys())[0]
    log += [response, obj_id, _propagate(predictor, sid)]
    # Box prompting (normalized cx, cy, w, h), then forward.
    log.append(
        predictor.handle_request(
            {
                "type": "add_prompt",
                "session_id": sid,
                "frame_index": 0,
                "bounding_boxes": [[0.5, 0.5, 0.3, 0.4]],
                "bounding_box_labels": [1],
            }
        )
    )
    log.append(_propagate(predictor, sid, propagation_direction="forward"))
    predictor.handle_request({"type": "close_session", "session_id": sid})
    # Bidirectional propagation from a middle frame.
    sid = _start(predictor, video)
    car = {"type": "add_prompt", "session_id": sid, "frame_index": 4, "text": "car"}
    predictor.handle_request(car)
    log.append(_propagate(predictor, sid, propagation_direction="both", start_frame_index=4))
    predictor.handle_request({"type": "close_session", "session_id": sid})
    return log


def _assert_same(got, expected) -> None:
    if isinstance(expected, list):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            _assert_same(g, e)
    elif isinstance(expected, tuple):  # (frame_index, outputs) of a propagation
        assert got[0] == expected[0]
        assert_same_outputs(got[1], expected[1])
    elif isinstance(expected, dict) and "outputs" in expected:
        assert got["frame_index"] == expected["frame_index"]
        assert_same_outputs(got["outputs"], expected["outputs"])
    else:
        assert got == expected


def test_seed_examples_through_the_client_equal_in_process(server, media):
    expected = seed_examples(tiny_predictor(), str(media / CLIP))
    with RemotePredictor(server.url, token=TOKEN) as remote:
        got = seed_examples(remote, CLIP)  # a path under the media root
    _assert_same(got, expected)
    # the bidirectional run: forward 4..7, then backward 3..0
    assert [f for f, _ in got[-1]] == [4, 5, 6, 7, 3, 2, 1, 0]


def test_typed_errors_come_back_as_the_same_types(server):
    with RemotePredictor(server.url, token=TOKEN) as remote:
        with pytest.raises(UnknownIdError, match="session_id"):
            remote.handle_request(
                {"type": "add_prompt", "session_id": "nope", "frame_index": 0, "text": "a"}
            )
        sid = _start(remote, CLIP)
        with pytest.raises(InvalidInputError, match="frame_idx"):
            remote.handle_request({"type": "add_prompt", "session_id": sid, "frame_idx": 0})
        with pytest.raises(FrameIndexError):
            remote.handle_stream_request(  # raised at the call, before any frame
                {"type": "propagate_in_video", "session_id": sid, "start_frame_index": 99}
            )
        with pytest.raises(InvalidInputError, match="handle_stream_request"):
            remote.handle_request({"type": "propagate_in_video", "session_id": sid})
        info = remote.session_info(sid)
        assert (info["num_frames"], info["height"], info["width"]) == (8, 48, 64)
    # shutdown closed the session this client opened
    assert sid not in server.core.registry.ids()


def test_a_wrong_token_raises_auth_error(server):
    from sam3video.server.errors import AuthError

    with RemotePredictor(server.url, token="wrong") as remote:
        with pytest.raises(AuthError):
            _start(remote, CLIP)
