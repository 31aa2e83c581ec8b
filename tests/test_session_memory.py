"""A session's memory does not grow with video length beyond its compact outputs."""

from __future__ import annotations

import warnings

import av
import numpy as np

from sam3video.predictor import Sam3VideoPredictor

FRAMES, H, W = 300, 48, 64


def _video(path):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        for i in range(FRAMES):
            img = np.roll(base, i % W, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_memory_is_flat_in_video_length(tmp_path):
    path = tmp_path / "long.mp4"
    _video(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Sam3VideoPredictor(model_config="tiny", device="cpu")
    sid = predictor.handle_request({"type": "start_session", "resource_path": str(path)})[
        "session_id"
    ]
    for x in (16, 48):
        predictor.handle_request(
            {
                "type": "add_prompt",
                "session_id": sid,
                "frame_index": 0,
                "points": [[x, 24]],
                "point_labels": [1],
            }
        )
    seen = {}
    req = {"type": "propagate_in_video", "session_id": sid, "propagation_direction": "forward"}
    for r in predictor.handle_stream_request(req):
        if r["frame_index"] in (60, FRAMES - 1):
            seen[r["frame_index"]] = predictor.session_info(sid)["memory"]
    early, late = seen[60], seen[FRAMES - 1]
    # tracker memories: bounded (the same set of retained frames once the window is full)
    assert late["tracker_bytes"] == early["tracker_bytes"] > 0
    # outputs are cached bit-packed: about H*W/8 bytes per object and frame
    assert late["cached_frames"] == FRAMES
    assert late["cached_output_bytes"] <= FRAMES * 2 * (H * W // 8 + 1)
    predictor.shutdown()
