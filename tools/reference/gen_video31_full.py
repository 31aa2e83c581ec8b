"""End-to-end parity fixture of the OFFICIAL SAM 3.1 video predictor at FULL size (slow).

Runs ONLY with the SAM 3.1 reference interpreter, from the repository root::

    nice -n 10 ~/.cache/sam3-reference-31/bin/python tools/reference/gen_video31_full.py
    # ~30-40 min on the shared 2-core machine, ~8 GB RAM, one torch thread
    ~/.cache/sam3-reference-31/bin/python tools/reference/gen_video31_full.py \
        --preset sam3.1-tiny --out /tmp/video31_full_tiny.pt      # the same plumbing, ~1 min

What it does: writes the first ``NUM_FRAMES`` JPEG files of ``tests/fixtures/video_clip.pt``
(bikes.mp4, 272x640) into a temporary folder, builds the official
``Sam3MultiplexTrackingWithInteractivity`` at Meta's sizes (preset ``"sam3.1"``, the builders of
``official_builders_31``, heuristic overrides ``OVERRIDES``), fills every key with the synthetic
weights (``_common31.load_synthetic``; the ``freqs_cis`` keep their computed values), wraps it in
the official ``Sam3MultiplexVideoPredictor`` and plays ``STEPS`` through ``handle_request`` /
``handle_stream_request``: a text prompt on frame 0 (the detector births object 0), a forward
propagation, a click creating object ``CLICK_ID`` on frame 1, a positive and a negative click
creating object ``CLICK_ID + 1`` on frame 2, a propagation both ways from frame 1 (the two click
states re-tracked with the detector-born object). Every response is recorded (ids, probs,
bit-packed masks, normalised xywh boxes) in ``tests/fixtures/video31_full.pt`` (layout in
``meta["layout"]``).

Input frames: the official JPEG-folder loader's float16 frames are checked to equal the recipe
``tests/test_video_ids.full_frames`` rebuilds from the JPEG files (PIL bilinear to the model
size, /255 in float16, (x - 0.5) / 0.5 in float16), so the test feeds the same input.
Heuristics: the synthetic text score (~0.6) is below the 3.1 builder's birth threshold
``new_det_thresh`` 0.65; 0.5 lets the detection be born (as in ``gen_video31.py`` and the
full-size smoke run of ``official_builders_31.py``). CPU patches: ``_common31`` (float32, no
bf16 casts, empty connected components guarded). Request conversion and response recording are
``gen_video31``'s (``product_request``, ``record``).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import _common31  # noqa: F401  (first: 3.1 overlay on sys.path, CPU patches)
import gen_video31 as gv31
import numpy as np
import official_builders_31 as ob31
import torch
from PIL import Image

from sam3video.model.config import get_config

NUM_FRAMES = 3
CLICK_ID = 7
OVERRIDES = {"new_det_thresh": 0.5}
STEPS = [
    {"type": "add_prompt", "frame_index": 0, "text": "bicycle"},
    {"type": "propagate_in_video", "propagation_direction": "forward", "start_frame_index": 0},
    {
        "type": "add_prompt",
        "frame_index": 1,
        "points": gv31.CLICK,
        "point_labels": [1],
        "obj_id": CLICK_ID,
    },
    {
        "type": "add_prompt",
        "frame_index": 2,
        "points": [[0.8, 0.6], [0.2, 0.3]],
        "point_labels": [1, 0],
        "obj_id": CLICK_ID + 1,
    },
    {"type": "propagate_in_video", "propagation_direction": "both", "start_frame_index": 1},
]
LAYOUT = (
    "step{k}/frames: yielded frame order; step{k}/{j}/obj_ids|probs|masks|boxes_xywh: the j-th "
    "response (masks bit-packed (N, H*W/8) as gen_video31; boxes the official normalised "
    "[x, y, w, h] of the final masks); meta.steps[k].product_request: the same request in our "
    "conventions"
)


def clip_jpegs(num_frames: int) -> list[bytes]:
    clip = torch.load(_common31.FIXTURES / "video_clip.pt", weights_only=False)["tensors"]
    data = clip["jpeg_bytes"].numpy().tobytes()
    ends = clip["jpeg_ends"].tolist()
    return [data[a:b] for a, b in zip([0] + ends[:-1], ends)][:num_frames]


def recipe_frames(jpegs: list[bytes], image_size: int) -> torch.Tensor:
    """The loader's frames rebuilt from the JPEG files (``tests/test_video_ids.full_frames``)."""
    frames = []
    for data in jpegs:
        rgb = Image.open(io.BytesIO(data)).convert("RGB")
        u8 = torch.from_numpy(np.array(rgb.resize((image_size, image_size), Image.BILINEAR)))
        x = (u8.permute(2, 0, 1).float() / 255).to(torch.float16)
        half = torch.tensor(0.5, dtype=torch.float16)
        frames.append((x - half) / half)
    return torch.stack(frames)


def play(preset: str, out: Path) -> None:
    t_all = time.time()
    cfg = get_config(preset)
    model = ob31.build_official_31_video_model(cfg, "cpu", **OVERRIDES)
    kept = _common31.load_synthetic(model, prefix="")
    assert all(k.endswith("freqs_cis") for k in kept), kept
    predictor = ob31.build_official_31_predictor(model)
    print(f"[{preset}] built + synthetic weights in {time.time() - t_all:.1f}s", flush=True)
    jpegs = clip_jpegs(NUM_FRAMES)
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
        ours = recipe_frames(jpegs, cfg.image_size)
        assert images.shape == ours.shape, (images.shape, ours.shape)
        assert torch.equal(images.to(ours.dtype), ours), "loader frames differ from the recipe"
        for k, req in enumerate(STEPS):
            t0 = time.time()
            sent = dict(req, session_id=sid)
            if req["type"] == "propagate_in_video":
                items = [
                    (r["frame_index"], r["outputs"]) for r in predictor.handle_stream_request(sent)
                ]
            else:
                reply = predictor.handle_request(sent)
                items = [(reply["frame_index"], reply["outputs"])]
            responses = []
            for j, (frame, outputs) in enumerate(items):
                rec = gv31.record(tensors, f"step{k}/{j}", outputs)
                boxes = np.asarray(outputs["out_boxes_xywh"], dtype=np.float32).reshape(-1, 4)
                tensors[f"step{k}/{j}/boxes_xywh"] = torch.from_numpy(boxes)
                probs = tensors[f"step{k}/{j}/probs"].tolist()
                responses.append(dict(frame_index=int(frame), probs=probs, **rec))
            tensors[f"step{k}/frames"] = torch.tensor(
                [r["frame_index"] for r in responses], dtype=torch.int64
            )
            steps_meta.append(
                {
                    "request": req,
                    "product_request": gv31.product_request(req),
                    "responses": responses,
                    "seconds": round(time.time() - t0, 1),
                }
            )
            print(f"[{preset}] step {k} {req['type']} ({time.time() - t0:.1f}s)", flush=True)
            for r in responses:
                print(
                    f"   frame {r['frame_index']}: ids {r['obj_ids']} areas {r['areas']} "
                    f"probs {[round(p, 4) for p in r['probs']]}",
                    flush=True,
                )
        predictor.handle_request({"type": "close_session", "session_id": sid})
    meta = {
        "session": "full",
        "preset": preset,
        "video_size": [gv31.VIDEO_H, gv31.VIDEO_W],
        "num_frames": NUM_FRAMES,
        "image_size": cfg.image_size,
        "clip_fixture": "video_clip.pt (JPEG files of the first num_frames frames)",
        "overrides": OVERRIDES,
        "official_commit": _common31.COMMIT,
        "torch_threads": torch.get_num_threads(),
        "seconds": round(time.time() - t_all, 1),
        "steps": steps_meta,
        "layout": LAYOUT,
    }
    torch.save({"tensors": tensors, "meta": meta}, out)
    print(f"wrote {out} ({out.stat().st_size} bytes) in {time.time() - t_all:.1f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=["sam3.1", "sam3.1-tiny"], default="sam3.1")
    ap.add_argument("--out", type=Path, default=_common31.FIXTURES / "video31_full.pt")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    _common31.drop_bf16_casts()
    _common31._common.guard_empty_connected_components()
    play(args.preset, args.out)


if __name__ == "__main__":
    main()
