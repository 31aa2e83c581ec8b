"""End-to-end parity fixture of the OFFICIAL SAM 3.1 video predictor at tiny size.

Runs ONLY with the SAM 3.1 reference interpreter (see /work/notes or
``tools/reference/setup_reference_31.sh``), from the repository root::

    ~/.cache/sam3-reference-31/bin/python tools/reference/gen_video31.py [main ...]  # ~1 min

What it does: writes the first ``NUM_FRAMES`` JPEG files of ``tests/fixtures/video_clip.pt``
(bikes.mp4, 272x640) into a temporary folder, builds the official
``Sam3MultiplexTrackingWithInteractivity`` for ``sam3.1-tiny``
(`official_builders_31.build_official_31_video_model`, the 3.1 builder's heuristics with the
per-session overrides of ``SESSIONS``), fills every key with the synthetic weights
(`_common31.load_synthetic`), wraps it in the official ``Sam3MultiplexVideoPredictor`` and
plays each session of ``SESSIONS`` through ``handle_request`` / ``handle_stream_request``,
recording every response (ids, probs, bit-packed masks) in ``tests/fixtures/video31_<name>.pt``.

The official JPEG loader's float16 frames are checked to equal the ones
``tests/test_video_parity.py`` rebuilds from the clip's lossless PNGs, so the test feeds the
same input. Heuristic overrides (per session, the test sets the same): the synthetic text
scores are ~0.6, below the 3.1 builder's ``new_det_thresh`` (0.65); lower ones let the
detections be born.
Propagations name their start frame: officially the default start is the first frame with
outputs, ours the first prompted frame (a documented product choice). CPU patches:
`_common31` (float32, no bf16 casts, empty connected components guarded).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time

import _common31  # noqa: F401  (first: 3.1 overlay on sys.path, CPU patches)
import numpy as np
import official_builders_31 as ob31
import torch
from PIL import Image

from sam3video.model.config import get_config

NUM_FRAMES = 8
VIDEO_H, VIDEO_W = 272, 640
CLICK = [[0.4375, 0.3125]]  # (280, 85) px
CLICK_ID = 7
# Several detections born on one frame, kept in one tracker state (tiny: 4 slots a bucket).
SHARED_OVERRIDES = {
    "score_threshold_detection": 0.3,
    "new_det_thresh": 0.35,
    "det_nms_thresh": 0.95,
    "max_num_objects": 3,
}
# name -> (heuristic overrides, requests). "main": the seed protocol's requests on one object;
# "clicks": two objects created by clicks after a text prompt (one state each, re-tracked as one
# batch by a partial propagation from a middle frame), then the text object removed;
# "crowd": lower thresholds, so that several detections are born on several frames (buckets
# filled by best fit, births into existing states), plus a box-only prompt and a reset.
SESSIONS = {
    "main": (
        {"new_det_thresh": 0.5},
        [
            {"type": "add_prompt", "frame_index": 2, "text": "bicycle"},
            {"type": "propagate_in_video", "propagation_direction": "both", "start_frame_index": 2},
            {
                "type": "add_prompt",
                "frame_index": 3,
                "points": CLICK,
                "point_labels": [1],
                "obj_id": CLICK_ID,
            },
            {"type": "propagate_in_video", "propagation_direction": "both", "start_frame_index": 0},
            {"type": "remove_object", "frame_index": 3, "obj_id": CLICK_ID},
            {"type": "propagate_in_video", "propagation_direction": "both", "start_frame_index": 0},
        ],
    ),
    "clicks": (
        {"new_det_thresh": 0.5},
        [
            {"type": "add_prompt", "frame_index": 0, "text": "bicycle"},
            {"type": "propagate_in_video", "propagation_direction": "forward"},
            {
                "type": "add_prompt",
                "frame_index": 2,
                "points": CLICK,
                "point_labels": [1],
                "obj_id": 5,
            },
            {
                "type": "add_prompt",
                "frame_index": 5,
                "points": [[0.8, 0.6], [0.2, 0.3]],
                "point_labels": [1, 0],
                "obj_id": 6,
            },
            {"type": "propagate_in_video", "propagation_direction": "both", "start_frame_index": 3},
            {"type": "remove_object", "frame_index": 4, "obj_id": 0},
            {
                "type": "propagate_in_video",
                "propagation_direction": "forward",
                "start_frame_index": 0,
            },
        ],
    ),
    # "refine": refinement clicks on existing objects: a detector-born object (positive click on
    # a tracked frame, again with a second click, a negative click on another frame), then a
    # click-born object refined on a tracked frame; each followed by propagation.
    "refine": (
        {"new_det_thresh": 0.5},
        [
            {"type": "add_prompt", "frame_index": 0, "text": "bicycle"},
            {"type": "propagate_in_video", "propagation_direction": "forward"},
            {
                "type": "add_prompt",
                "frame_index": 2,
                "points": CLICK,
                "point_labels": [1],
                "obj_id": 0,
            },
            {
                "type": "add_prompt",
                "frame_index": 2,
                "points": [CLICK[0], [0.7, 0.5]],
                "point_labels": [1, 1],
                "obj_id": 0,
            },
            {
                "type": "add_prompt",
                "frame_index": 5,
                "points": [[0.2, 0.3]],
                "point_labels": [0],
                "obj_id": 0,
            },
            {"type": "propagate_in_video", "propagation_direction": "both", "start_frame_index": 2},
            {
                "type": "add_prompt",
                "frame_index": 1,
                "points": [[0.8, 0.6]],
                "point_labels": [1],
                "obj_id": CLICK_ID,
            },
            {
                "type": "propagate_in_video",
                "propagation_direction": "forward",
                "start_frame_index": 1,
            },
            {
                "type": "add_prompt",
                "frame_index": 4,
                "points": [[0.8, 0.6], [0.3, 0.5]],
                "point_labels": [1, 0],
                "obj_id": CLICK_ID,
            },
            {"type": "propagate_in_video", "propagation_direction": "both", "start_frame_index": 0},
        ],
    ),
    # "shared": refinement clicks on detector-born objects that SHARE their tracker state
    # (lower detection and NMS thresholds and a cap of 3 objects: three births on frame 3, one
    # state), both ways. A click on object 1 on frame 1 and one on object 2 on frame 5 (each
    # extracted to a state of its own), both ways; two clicks refining object 1 again on
    # frame 1 (now a tracked frame of its own state), both ways.
    "shared": (
        SHARED_OVERRIDES,
        [
            {"type": "add_prompt", "frame_index": 3, "text": "bicycle"},
            {"type": "propagate_in_video", "propagation_direction": "both", "start_frame_index": 3},
            {
                "type": "add_prompt",
                "frame_index": 1,
                "points": CLICK,
                "point_labels": [1],
                "obj_id": 1,
            },
            {
                "type": "add_prompt",
                "frame_index": 5,
                "points": [[0.8, 0.6]],
                "point_labels": [1],
                "obj_id": 2,
            },
            {"type": "propagate_in_video", "propagation_direction": "both", "start_frame_index": 3},
            {
                "type": "add_prompt",
                "frame_index": 1,
                "points": [CLICK[0], [0.7, 0.5]],
                "point_labels": [1, 1],
                "obj_id": 1,
            },
            {"type": "propagate_in_video", "propagation_direction": "both", "start_frame_index": 0},
        ],
    ),
    "crowd": (
        {"score_threshold_detection": 0.3, "new_det_thresh": 0.35},
        [
            {"type": "add_prompt", "frame_index": 0, "text": "bicycle"},
            {
                "type": "propagate_in_video",
                "propagation_direction": "forward",
                "start_frame_index": 0,
            },
            {
                "type": "add_prompt",
                "frame_index": 1,
                "bounding_boxes": [[0.1, 0.2, 0.3, 0.5]],
                "bounding_box_labels": [1],
            },
            {"type": "propagate_in_video", "propagation_direction": "both", "start_frame_index": 1},
            {"type": "reset_session"},
            {"type": "add_prompt", "frame_index": 5, "text": "person"},
            {
                "type": "propagate_in_video",
                "propagation_direction": "backward",
                "start_frame_index": 5,
            },
        ],
    ),
}


def product_request(req: dict) -> dict:
    """The same request in our conventions (points in pixels)."""
    out = dict(req)
    if out.get("points") is not None:
        out["points"] = [[x * VIDEO_W, y * VIDEO_H] for x, y in out["points"]]
    if out.get("bounding_boxes") is not None:  # official xywh -> our cxcywh (normalised)
        out["bounding_boxes"] = [
            [x + w / 2, y + h / 2, w, h] for x, y, w, h in out["bounding_boxes"]
        ]
    if out["type"] == "remove_object":
        out.pop("frame_index")
    return out


def pack(masks: np.ndarray) -> torch.Tensor:
    n = masks.shape[0]
    flat = masks.reshape(n, VIDEO_H * VIDEO_W).astype(bool)
    return torch.from_numpy(np.packbits(flat, axis=-1).reshape(n, VIDEO_H * VIDEO_W // 8))


def _clip_frames() -> tuple[list[bytes], list[torch.Tensor]]:
    clip = torch.load(_common31.FIXTURES / "video_clip.pt", weights_only=False)["tensors"]
    data = clip["jpeg_bytes"].numpy().tobytes()
    ends = clip["jpeg_ends"].tolist()
    jpegs = [data[a:b] for a, b in zip([0] + ends[:-1], ends)][:NUM_FRAMES]
    pdata = clip["frames_png"].numpy().tobytes()
    pends = clip["frames_png_ends"].tolist()
    frames = []
    for a, b in list(zip([0] + pends[:-1], pends))[:NUM_FRAMES]:
        u8 = torch.from_numpy(np.array(Image.open(io.BytesIO(pdata[a:b])))).permute(2, 0, 1)
        x = (u8.float() / 255).to(torch.float16)
        half = torch.tensor(0.5, dtype=torch.float16)
        frames.append((x - half) / half)
    return jpegs, frames


def record(tensors: dict, key: str, outputs: dict) -> dict:
    ids = np.asarray(outputs["out_obj_ids"], dtype=np.int64)
    masks = np.asarray(outputs["out_binary_masks"]).astype(bool)
    probs = np.asarray(outputs.get("out_probs", np.ones(len(ids))), dtype=np.float32)
    tensors[f"{key}/obj_ids"] = torch.from_numpy(ids)
    tensors[f"{key}/probs"] = torch.from_numpy(probs)
    tensors[f"{key}/masks"] = pack(masks.reshape(-1, VIDEO_H, VIDEO_W))
    return {"obj_ids": ids.tolist(), "areas": [int(m.sum()) for m in masks]}


def play(name: str, jpegs: list[bytes], frames: list[torch.Tensor]) -> None:
    overrides, steps = SESSIONS[name]
    model = ob31.build_official_31_video_model(get_config("sam3.1-tiny"), "cpu", **overrides)
    _common31.load_synthetic(model, prefix="")
    predictor = ob31.build_official_31_predictor(model)
    tensors: dict[str, torch.Tensor] = {}
    steps_meta = []
    with tempfile.TemporaryDirectory() as folder:
        for t, data in enumerate(jpegs):
            with open(os.path.join(folder, f"{t:05d}.jpg"), "wb") as f:
                f.write(data)
        sid = predictor.handle_request({"type": "start_session", "resource_path": folder})[
            "session_id"
        ]
        state = predictor._all_inference_states[sid]["state"]
        images = state["input_batch"].img_batch.tensors
        ours = torch.stack(frames)
        assert images.shape == ours.shape, (images.shape, ours.shape)
        assert torch.equal(images.to(ours.dtype), ours), "loader frames differ from the PNGs"
        for k, req in enumerate(steps):
            t0 = time.time()
            sent = dict(req, session_id=sid)
            responses = []
            entry = {"request": req, "product_request": product_request(req)}
            if req["type"] == "propagate_in_video":
                for j, reply in enumerate(predictor.handle_stream_request(sent)):
                    rec = record(tensors, f"step{k}/{j}", reply["outputs"])
                    responses.append(dict(frame_index=int(reply["frame_index"]), **rec))
            else:
                reply = predictor.handle_request(sent)
                if "outputs" in reply:
                    rec = record(tensors, f"step{k}/0", reply["outputs"])
                    responses.append(dict(frame_index=int(reply["frame_index"]), **rec))
                else:
                    entry["reply"] = reply
            tensors[f"step{k}/frames"] = torch.tensor(
                [r["frame_index"] for r in responses], dtype=torch.int64
            )
            entry["responses"] = responses
            steps_meta.append(entry)
            print(f"[{name}] step {k} {req['type']} ({time.time() - t0:.1f}s)")
            for r in responses:
                print(f"   frame {r['frame_index']}: ids {r['obj_ids']} areas {r['areas']}")
        predictor.handle_request({"type": "close_session", "session_id": sid})
    meta = {
        "session": name,
        "preset": "sam3.1-tiny",
        "video_size": [VIDEO_H, VIDEO_W],
        "num_frames": NUM_FRAMES,
        "clip_fixture": "video_clip.pt (first NUM_FRAMES frames)",
        "overrides": overrides,
        "official_commit": _common31.COMMIT,
        "steps": steps_meta,
        "layout": (
            "step{k}/frames: yielded frame order; step{k}/{j}/obj_ids|probs|masks: the j-th "
            "response (masks bit-packed (N, H*W/8)); meta.steps[k].product_request: the same "
            "request in our conventions; meta.steps[k].reply: a reply without outputs"
        ),
    }
    path = _common31.FIXTURES / f"video31_{name}.pt"
    torch.save({"tensors": tensors, "meta": meta}, path)
    print(f"wrote {path}")


def main() -> None:
    torch.set_grad_enabled(False)
    _common31.drop_bf16_casts()
    _common31._common.guard_empty_connected_components()
    jpegs, frames = _clip_frames()
    for name in sys.argv[1:] or SESSIONS:
        play(name, jpegs, frames)


if __name__ == "__main__":
    main()
