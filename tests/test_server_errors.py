"""The server's error mapping: each typed error of the package to its HTTP status and body.

The over-the-socket tests (test_server*.py) reach most statuses through real requests; the
ones no tiny model can trigger any more (a request the loaded model cannot serve: 501) are
checked here on the mapping itself.
"""

from __future__ import annotations

import pytest

from sam3video.errors import (
    CheckpointError,
    FrameIndexError,
    InvalidInputError,
    SessionBusyError,
    UnknownIdError,
    UnsupportedModelError,
)
from sam3video.server.errors import error_body, status_for


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (UnsupportedModelError("obj_id: refining object 3 is not supported"), 501),
        (UnknownIdError("obj_id: expected one of [1], got 3"), 404),
        (FrameIndexError("frame_index: expected 0..9, got 12"), 400),
        (InvalidInputError("points: expected pairs, got 3 numbers"), 400),
        (SessionBusyError("session_id: a propagation is running"), 409),
        (CheckpointError("checkpoint: unreadable"), 500),
        (RuntimeError("boom"), 500),
    ],
)
def test_status_of_each_error_type(exc, status):
    assert status_for(exc) == status


def test_unsupported_model_body_names_type_field_and_message():
    exc = UnsupportedModelError(
        "apply_temporal_disambiguation: False is not supported for SAM 3.1 models; pass True"
    )
    assert isinstance(exc, NotImplementedError)
    body = error_body(exc)
    assert body == {
        "error": "UnsupportedModelError",
        "field": "apply_temporal_disambiguation",
        "message": str(exc),
    }


def test_unexpected_errors_say_nothing_about_the_code():
    body = error_body(KeyError("/secret/path/model.py"))
    assert body["error"] == "InternalError" and "/secret" not in body["message"]
