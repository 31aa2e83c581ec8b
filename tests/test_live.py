"""Live sessions (``start_session`` with ``live=True``, ``add_frame``): parity with offline
propagation when the hotstart buffer is off, prompts on the latest frame, typed errors that
change nothing, and memory that stays flat over a long stream (tiny model)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from PIL import Image

from sam3video import InvalidInputError
from sam3video.errors import FrameIndexError
from sam3video.predictor import Sam3VideoPredictor

pytestmark = pytest.mark.usefixtures("one_thread")

N, H, W = 20, 48, 64


def _frame(i: int) -> np.ndarray:
    rng = np.random.default_rng(11)
    base = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    frame = np.roll(base, 2 * i, axis=1)
    frame[8 + i % 20 : 28 + i % 20, 16:36] = (230, 40, 40)
    return frame


@pytest.fixture(scope="module")
def predictors(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        live = Sam3VideoPredictor(model_config="tiny", device="cpu")
        offline = Sam3VideoPredictor(model_config="tiny", device="cpu", model=live.model)
    # Offline with the hotstart buffer off: what a live session does (no lookahead).
    offline.heuristics = dataclasses.replace(offline.heuristics, hotstart_delay=0)
    folder = tmp_path_factory.mktemp("live")
    for i in range(N):  # PNG: lossless, the same pixels the live session receives
        Image.fromarray(_frame(i)).save(folder / f"{i:05d}.png")
    yield live, offline, str(folder)
    live.shutdown()
    offline.shutdown()


def _same(a, b, where):
    assert sorted(a) == sorted(b), f"{where}: ids {sorted(a)} vs {sorted(b)}"
    for i in a:
        assert np.array_equal(a[i]["mask"], b[i]["mask"]), f"{where}, object {i}"
        assert a[i]["score"] == pytest.approx(b[i]["score"], abs=1e-6)


def _live(p):
    return p.handle_request({"type": "start_session", "live": True})["session_id"]


def _add(p, sid, i):
    return p.handle_request({"type": "add_frame", "session_id": sid, "frame": _frame(i)})


@pytest.mark.parametrize(
    "prompt_frame, prompt",
    [
        (0, {"text": "person"}),
        (3, {"points": [[26, 20]], "point_labels": [1]}),
    ],
)
def test_live_equals_offline_without_the_hotstart_buffer(predictors, prompt_frame, prompt):
    live, offline, folder = predictors
    sid = offline.handle_request({"type": "start_session", "resource_path": folder})["session_id"]
    offline.handle_request(
        {"type": "add_prompt", "session_id": sid, "frame_index": prompt_frame, **prompt}
    )
    expected = {
        r["frame_index"]: r["outputs"]
        for r in offline.handle_stream_request(
            {"type": "propagate_in_video", "session_id": sid, "propagation_direction": "forward"}
        )
    }
    assert any(expected.values()), "the scenario tracks something"

    lsid = _live(live)
    for i in range(N):
        reply = _add(live, lsid, i)
        assert reply["frame_index"] == i
        if i == prompt_frame:
            live.handle_request(
                {"type": "add_prompt", "session_id": lsid, "frame_index": i, **prompt}
            )
        elif i > prompt_frame:
            _same(reply["outputs"], expected[i], f"frame {i}")
    live.handle_request({"type": "close_session", "session_id": lsid})


def test_live_requests_are_validated_and_change_nothing(predictors):
    live, _, folder = predictors
    sid = _live(live)
    with pytest.raises(FrameIndexError):  # no frame yet
        live.handle_request(
            {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": "person"}
        )
    _add(live, sid, 0)
    for bad in (
        np.zeros((H, W + 1, 3), np.uint8),  # another size than the first frame
        np.zeros((H, W, 3), np.float32),
        np.zeros((H, W), np.uint8),
    ):
        with pytest.raises(InvalidInputError, match="^frame: expected"):
            live.handle_request({"type": "add_frame", "session_id": sid, "frame": bad})
    assert _add(live, sid, 1)["frame_index"] == 1  # nothing was appended meanwhile
    with pytest.raises(InvalidInputError, match="^propagate_in_video: a live session"):
        live.handle_stream_request({"type": "propagate_in_video", "session_id": sid})
    offline_sid = live.handle_request({"type": "start_session", "resource_path": folder})[
        "session_id"
    ]
    with pytest.raises(InvalidInputError, match="^add_frame: this session reads a video"):
        _add(live, offline_sid, 0)


def test_frames_outside_the_window_are_a_typed_error(predictors):
    live, _, _ = predictors
    sid = _live(live)
    window = live.get_session(sid).frames.window
    for i in range(window + 5):
        _add(live, sid, i % N)
    with pytest.raises(FrameIndexError, match="holds its last"):
        live.handle_request(
            {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": "person"}
        )
    live.handle_request(  # the latest frame works
        {"type": "add_prompt", "session_id": sid, "frame_index": window + 4, "text": "person"}
    )


def _memory_after(live, sid, start, stop):
    for i in range(start, stop):
        _add(live, sid, i % N)
    session = live.get_session(sid)
    footprint = session.memory_footprint()
    tables = (
        len(session.ledger.masks),
        len(session.ledger.stamps),
        sum(len(f) for f in session.ledger.detected.values()),
        len(session.metadata.frame_scores),
        len(session.frames._frames),
    )
    return footprint, tables


def _memory_flat(live, long: int):
    sid = _live(live)
    _add(live, sid, 0)
    live.handle_request({"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": "x"})
    live.handle_request(
        {
            "type": "add_prompt",
            "session_id": sid,
            "frame_index": 0,
            "points": [[26, 20]],
            "point_labels": [1],
        }
    )
    short_footprint, short_tables = _memory_after(live, sid, 1, 100)
    long_footprint, long_tables = _memory_after(live, sid, 100, long)
    assert long_tables == short_tables, "per-frame tables hold the window only"
    assert long_footprint == short_footprint, (short_footprint, long_footprint)
    live.handle_request({"type": "close_session", "session_id": sid})


def test_memory_is_flat_over_a_long_stream(predictors):
    _memory_flat(predictors[0], 1000)


@pytest.mark.slow
def test_memory_is_flat_over_10000_frames(predictors):
    _memory_flat(predictors[0], 10_000)
