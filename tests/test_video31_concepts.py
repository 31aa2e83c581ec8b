"""SAM 3.1 sessions with several concepts (``concept_mode="add"``) and live sessions: our
extensions (the official 3.1 predictor tracks one prompt at a time and has no live mode),
tested by behaviour.

Design (`sam3video.video.session31.VideoSession31._det_track_one_frame`, the SAM 3 session's
rule): each concept is planned apart over its own objects, with its own planner metadata, and
its births go only to tracker states of its own objects, so a state never mixes concepts and
the states of all concepts advance as one batch. Hence each concept of a two-concept session
gets the objects and masks a session of that concept alone gets, up to the ids (a concept
added later numbers its objects after the earlier ones). Same clip, synthetic weights and
heuristics as ``tests/test_video31.py`` ("main").
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from test_video31 import MIN_IOU, SCORE_TOL, _load, _start

from sam3video.predictor import Sam3VideoPredictor
from sam3video.video.multiplex_live import LiveSession31
from sam3video.video.planner31 import VideoHeuristics31

TEXTS = ("bicycle", "person")


@pytest.fixture(scope="module")
def predictor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = Sam3VideoPredictor(model_config="sam3.1-tiny", device="cpu", dtype=torch.float32)
    return p


def _run(predictor, tmp_path, texts, frames=4):
    """Prompt ``texts`` on frame 0 (the first replacing, the others added), then forward over
    ``frames + 1`` frames. Returns the prompt replies, the outputs per frame and the
    session's object -> concept map."""
    meta = _load("main")["meta"]
    tmp_path.mkdir(parents=True, exist_ok=True)
    sid = _start(predictor, tmp_path, meta)
    replies = []
    for k, text in enumerate(texts):
        req = {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": text}
        if k:
            req["concept_mode"] = "add"
        replies.append(predictor.handle_request(req)["outputs"])
    stream = predictor.handle_stream_request(
        {
            "type": "propagate_in_video",
            "session_id": sid,
            "propagation_direction": "forward",
            "start_frame_index": 0,
            "max_frame_num_to_track": frames,
        }
    )
    outputs = {r["frame_index"]: r["outputs"] for r in stream}
    session = predictor.get_session(sid)
    concept_of = dict(session.object_concept)
    states = [list(s.obj_ids) for s in session.states]
    predictor.handle_request({"type": "close_session", "session_id": sid})
    return replies, outputs, concept_of, states


def _same(got: dict, expected: dict, ids: dict[int, int], where: str) -> int:
    """``got`` restricted to the ids of ``ids`` (ours -> alone) equals ``expected``."""
    mine = {ids[i]: o for i, o in got.items() if i in ids}
    assert sorted(mine) == sorted(expected), where
    for obj_id, out in expected.items():
        a, b = mine[obj_id]["mask"], out["mask"]
        iou = (a & b).sum() / max((a | b).sum(), 1)
        assert iou >= MIN_IOU, f"{where}, object {obj_id}: IoU {iou:.4f}"
        assert abs(mine[obj_id]["score"] - out["score"]) <= SCORE_TOL, where
    return len(expected)


def test_two_concepts_track_what_each_concept_tracks_alone(predictor, tmp_path):
    alone = {t: _run(predictor, tmp_path / t, [t]) for t in TEXTS}
    replies, outputs, concept_of, states = _run(predictor, tmp_path / "both", list(TEXTS))
    checked = 0
    for k, text in enumerate(TEXTS):
        alone_replies, alone_outputs, alone_concepts, _ = alone[text]
        mine = sorted(i for i, c in concept_of.items() if c == text)
        theirs = sorted(i for i, c in alone_concepts.items() if c == text)
        assert len(mine) == len(theirs) and mine, f"{text}: objects {mine} vs {theirs}"
        ids = dict(zip(mine, theirs))
        # the reply to the prompt that added the concept, then every propagated frame
        checked += _same(replies[k], alone_replies[0], ids, f"{text}: prompt reply")
        assert sorted(outputs) == sorted(alone_outputs)
        for frame, out in alone_outputs.items():
            checked += _same(outputs[frame], out, ids, f"{text}: frame {frame}")
    # no tracker state mixes the two concepts
    for ids in states:
        assert len({concept_of[i] for i in ids}) == 1, states
    assert checked >= 10


# ------------------------------------------------------------------------------------------
# Live sessions on SAM 3.1 (`sam3video.video.multiplex_live.LiveSession31`), our extension:
# the same outputs as an offline forward propagation with the hotstart buffer off, as the
# SAM 3 live session (tests/test_live.py).
# ------------------------------------------------------------------------------------------

N_LIVE, H_LIVE, W_LIVE = 8, 48, 64


def _frame(i: int) -> np.ndarray:
    rng = np.random.default_rng(11)
    base = rng.integers(0, 255, (H_LIVE, W_LIVE, 3), dtype=np.uint8)
    frame = np.roll(base, 2 * i, axis=1)
    frame[8 + i % 20 : 28 + i % 20, 16:36] = (230, 40, 40)
    return frame


@pytest.mark.parametrize(
    "prompt_frame, prompt",
    [
        (0, {"text": "person"}),
        (3, {"points": [[26, 20]], "point_labels": [1]}),
    ],
)
def test_sam31_live_equals_offline_without_the_hotstart_buffer(
    predictor, tmp_path, prompt_frame, prompt
):
    heuristics = dataclasses.replace(VideoHeuristics31(), hotstart_delay=0, new_det_thresh=0.5)
    predictor.heuristics = heuristics
    for i in range(N_LIVE):  # PNG: lossless, the pixels the live session receives
        Image.fromarray(_frame(i)).save(tmp_path / f"{i:05d}.png")
    sid = predictor.handle_request({"type": "start_session", "resource_path": str(tmp_path)})[
        "session_id"
    ]
    predictor.handle_request(
        {"type": "add_prompt", "session_id": sid, "frame_index": prompt_frame, **prompt}
    )
    expected = {
        r["frame_index"]: r["outputs"]
        for r in predictor.handle_stream_request(
            {"type": "propagate_in_video", "session_id": sid, "propagation_direction": "forward"}
        )
    }
    predictor.handle_request({"type": "close_session", "session_id": sid})
    assert any(expected.values()), "the scenario tracks something"

    lsid = predictor.handle_request({"type": "start_session", "live": True})["session_id"]
    assert isinstance(predictor.get_session(lsid), LiveSession31)
    checked = 0
    for i in range(N_LIVE):
        reply = predictor.handle_request(
            {"type": "add_frame", "session_id": lsid, "frame": _frame(i)}
        )
        assert reply["frame_index"] == i
        if i == prompt_frame:
            predictor.handle_request(
                {"type": "add_prompt", "session_id": lsid, "frame_index": i, **prompt}
            )
        elif i > prompt_frame:
            got, want = reply["outputs"], expected[i]
            assert sorted(got) == sorted(want), f"frame {i}"
            for obj_id in want:
                assert np.array_equal(got[obj_id]["mask"], want[obj_id]["mask"]), f"frame {i}"
                assert got[obj_id]["score"] == pytest.approx(want[obj_id]["score"], abs=1e-6)
                checked += 1
    predictor.handle_request({"type": "close_session", "session_id": lsid})
    assert checked >= N_LIVE - prompt_frame - 1
