"""End-to-end parity of the predictor with the official ``Sam3VideoPredictor`` at tiny size.

Fixtures from ``tools/reference/gen_video.py``: the official tiny video model with the same
synthetic weights, driven through its request API on a 16-frame clip of bikes.mp4 (text on
frame 0 then forward; a click adding an object, a refinement click, ``remove_object``, a reset
and a new text; text on a middle frame then "both"; a refinement there). We replay the same
requests (product conventions) and compare every response: frame order, object ids, masks
(IoU) and scores.

Product differences taken into account (README): objects whose final mask is empty are
omitted (upstream lists them with an empty mask), and boxes come from the final masks.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from _manifest import FIXTURES
from PIL import Image

from sam3video.predictor import Sam3VideoPredictor

MIN_IOU = 0.99
SCORE_TOL = 1e-3


def _clip(tmp_path):
    clip = torch.load(FIXTURES / "video_clip.pt", weights_only=False)["tensors"]
    folder = tmp_path / "clip"
    folder.mkdir()
    ends = clip["jpeg_ends"].tolist()
    data = clip["jpeg_bytes"].numpy().tobytes()
    starts = [0] + ends[:-1]
    for t, (a, b) in enumerate(zip(starts, ends)):
        (folder / f"{t:05d}.jpg").write_bytes(data[a:b])
    pends = clip["frames_png_ends"].tolist()
    pdata = clip["frames_png"].numpy().tobytes()
    pstarts = [0] + pends[:-1]
    frames = []
    for a, b in zip(pstarts, pends):
        u8 = torch.from_numpy(np.array(Image.open(io.BytesIO(pdata[a:b])))).permute(2, 0, 1)
        x = (u8.float() / 255).to(torch.float16)
        half = torch.tensor(0.5, dtype=torch.float16)
        frames.append(((x - half) / half).float())  # the official fp16 frames, as float32
    return folder, frames


@pytest.fixture(scope="module")
def predictor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Sam3VideoPredictor(model_config="tiny", device="cpu", dtype=torch.float32)


def _unpack(packed: torch.Tensor, h: int, w: int) -> np.ndarray:
    if packed.numel() == 0:
        return np.zeros((0, h, w), dtype=bool)
    return np.unpackbits(packed.numpy(), axis=-1, count=h * w).reshape(-1, h, w) > 0


def _replay(predictor, tmp_path, name):
    fx = torch.load(FIXTURES / f"{name}.pt", weights_only=False)
    tensors, meta = fx["tensors"], fx["meta"]
    h, w = meta["video_size"]
    folder, frames = _clip(tmp_path)
    sid = predictor.handle_request({"type": "start_session", "resource_path": str(folder)})[
        "session_id"
    ]
    predictor._sessions[sid].transform = lambda t: frames[t]
    checked = 0
    for k, step in enumerate(meta["steps"]):
        req = {**step["product_request"], "session_id": sid}
        if req["type"] == "propagate_in_video":
            ours = [(r["frame_index"], r["outputs"]) for r in predictor.handle_stream_request(req)]
        elif req["type"] == "add_prompt":
            r = predictor.handle_request(req)
            ours = [(r["frame_index"], r["outputs"])]
        else:
            assert predictor.handle_request(req) == step["reply"]
            ours = []
        frames_off = tensors.get(f"step{k}/frames", torch.zeros(0, dtype=torch.long)).tolist()
        if req["type"] == "add_prompt":
            frames_off = [step["request"]["frame_index"]]
        assert [f for f, _ in ours] == frames_off, f"step {k}: frame order"
        for j, (frame, outputs) in enumerate(ours):
            ids = tensors[f"step{k}/{j}/obj_ids"].tolist()
            probs = tensors[f"step{k}/{j}/probs"].tolist()
            masks = _unpack(tensors[f"step{k}/{j}/masks"], h, w)
            expected = {i: (m, p) for i, m, p in zip(ids, masks, probs) if m.any()}
            where = f"step {k} ({step['scenario']}, {req['type']}), frame {frame}"
            assert sorted(outputs) == sorted(expected), where
            for obj_id, (mask, prob) in expected.items():
                got = outputs[obj_id]["mask"]
                iou = (got & mask).sum() / max((got | mask).sum(), 1)
                assert iou >= MIN_IOU, f"{where}, object {obj_id}: IoU {iou:.4f}"
                assert abs(outputs[obj_id]["score"] - prob) <= SCORE_TOL, where
                checked += 1
    predictor.handle_request({"type": "close_session", "session_id": sid})
    return checked


def test_main_scenarios_match_official(predictor, tmp_path):
    assert _replay(predictor, tmp_path, "video_main") > 10


def test_middle_frame_both_directions_match_official(predictor, tmp_path):
    assert _replay(predictor, tmp_path, "video_middle") > 10
