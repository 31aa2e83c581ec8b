"""Parity fixture for the tracker's top level and tracking state, from the OFFICIAL predictor.

Run from the repository root with the reference venv::

    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_tracker.py

What it does:

1. Cuts ``NUM_FRAMES`` frames (every ``FRAME_STEP``-th) of ``shared/data/videos/bikes.mp4``,
   downscaled to ``VIDEO_W x VIDEO_H``, into a temporary JPEG folder, and loads it with SAM 3's
   own loader (``io_utils.load_resource_as_video_frames``: PIL resize to 224, float16,
   mean = std = 0.5). The 224x224 uint8 images are saved (lossless PNG); the float16 frames
   are recreated from them exactly (checked here).
2. Builds the official tiny tracker (``Sam3TrackerPredictor``) and the official tiny vision
   backbone (trunk + tracker neck ``sam2_convs``) with synthetic weights, and plugs the
   backbone in as the predictor's ``backbone`` through a small adapter, so the predictor
   computes each frame's tracker features itself (``_get_image_feature``).
3. Runs pure float32: autocast off, and the two explicit ``.to(torch.bfloat16)`` casts of
   stored memories neutralised.
4. Plays the scenarios of ``SCENARIOS`` (clicks, a box, two objects with correction clicks,
   a mask prompt, more than 16 clicks, object removal) and records every output: video-res
   masks of each prompt call (bit-packed), and per propagated frame the object ids, the
   low-res mask logits (float16, stored as int16 bits), the object-score logits (float32)
   and the video-res binary masks (bit-packed).

Writes ``tests/fixtures/tracker_video.pt``, and ``tests/fixtures/tracker_memory_bank.pt``:
the official ``_prepare_memory_conditioned_features`` (memory selection on and off, forward
and reverse, more prompted frames than ``max_cond_frames_in_attn``) on a synthetic memory bank
of 40 frames whose object pointers are large enough for their positions to matter.
``--only memory`` writes just the second file.

``--full`` writes only ``tests/fixtures/tracker_full.pt``: the same recipe at FULL size
(1008 px, synthetic weights of the whole ``tracker.`` and vision backbone), kept short:
``FULL_NUM_FRAMES`` frames of bikes.mp4 at the video's own 640x272, one positive click on
frame 0, forward propagation to the last frame (so the later frames read the memory bank).
It stores the decoded frames (lossless PNG at 640x272; the loader's 1008x1008 PIL resize is
redone by the test and checked here), the prompt call's video-res masks and, per propagated frame,
the low-res logits (float16 bits), the object-score logits and the bit-packed video-res masks.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import _common  # CPU patches, src/ on sys.path
import cv2
import numpy as np
import torch
import torchvision.transforms.functional as TF
from _common import SHARED, load_synthetic, save_fixture
from official_builders import build_official_tracker, build_official_vision_backbone
from PIL import Image

from sam3video.model.config import full_config, tiny_config
from sam3video.model.weights import synthetic_tensor

CFG = tiny_config()
VIDEO = SHARED / "data" / "videos" / "bikes.mp4"
NUM_FRAMES = 10
FRAME_STEP = 2
VIDEO_W, VIDEO_H = 320, 136
FP32_SCENARIOS = {"a_click"}  # low-res logits kept in float32 (others float16)

# Coordinates are pixels of the VIDEO_W x VIDEO_H frames; the official calls receive them
# as relative coordinates (x / W, y / H), as SAM 3's video predictor passes them.
SCENARIOS: dict[str, list[dict]] = {
    "a_click": [
        {"op": "points", "frame": 0, "obj": 1, "points": [[35.0, 125.0]], "labels": [1]},
        {"op": "propagate", "start": 0, "max": 8, "reverse": False},
    ],
    "b_box": [
        {"op": "box", "frame": 3, "obj": 5, "box": [140.0, 20.0, 230.0, 110.0]},
        {"op": "propagate", "start": None, "max": None, "reverse": False},
        {"op": "propagate", "start": None, "max": None, "reverse": True},
    ],
    "c_two_objects": [
        {"op": "points", "frame": 0, "obj": 1, "points": [[35.0, 125.0]], "labels": [1]},
        {
            "op": "points",
            "frame": 0,
            "obj": 2,
            "points": [[250.0, 110.0], [50.0, 20.0]],
            "labels": [1, 0],
        },
        {"op": "propagate", "start": 0, "max": 8, "reverse": False},
        {"op": "points", "frame": 4, "obj": 2, "points": [[70.5, 90.25]], "labels": [1]},
        {
            "op": "points",
            "frame": 4,
            "obj": 2,
            "points": [[250.0, 60.0]],
            "labels": [0],
            "clear": False,
        },
        {"op": "propagate", "start": None, "max": 8, "reverse": False},
        {"op": "remove", "obj": 1},
        {"op": "propagate", "start": 2, "max": 4, "reverse": False},
    ],
    "d_mask": [
        {"op": "mask", "frame": 2, "obj": 3, "mask": "ellipse"},
        {"op": "propagate", "start": None, "max": None, "reverse": False},
        {"op": "propagate", "start": 2, "max": None, "reverse": True},
    ],
    "e_many_clicks": [
        {"op": "points", "frame": 1, "obj": 7, "points": "grid18", "labels": "alternate18"},
        {"op": "propagate", "start": None, "max": 3, "reverse": False},
    ],
}


def ellipse_mask_u8() -> np.ndarray:
    """A soft-edged ellipse at video resolution, in 1/255 steps (the prompt is ``u8 / 255``)."""
    yy, xx = np.mgrid[0:VIDEO_H, 0:VIDEO_W].astype(np.float32)
    r = ((xx - 200.0) / 60.0) ** 2 + ((yy - 70.0) / 35.0) ** 2
    return np.round(np.clip(1.5 - r, 0.0, 1.0) * 255).astype(np.uint8)


def mask_from_u8(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 255.0


def encode_png(u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 3, S, S)`` uint8 -> concatenated lossless PNG bytes and their end offsets."""
    chunks = []
    for img in u8:
        array = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
        ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok and np.array_equal(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), array)
        chunks.append(torch.from_numpy(buf.reshape(-1).copy()))
    ends = torch.tensor([c.numel() for c in chunks]).cumsum(0)
    return torch.cat(chunks), ends


def grid_points(n: int) -> list[list[float]]:
    g = torch.Generator().manual_seed(18)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([VIDEO_W - 1.0, VIDEO_H - 1.0])
    return xy.tolist()


def resolve(op: dict) -> dict:
    op = dict(op)
    if op.get("points") == "grid18":
        op["points"] = grid_points(18)
    if op.get("labels") == "alternate18":
        op["labels"] = [1 - (i % 3 == 2) for i in range(18)]
    return op


# --------------------------------------------------------------------------------------------
# Pure float32: drop explicit bfloat16 casts (the official code stores memories as bf16).
_common.drop_bf16_casts()


class TrackerNeckAdapter:
    """Gives the official predictor a ``backbone.forward_image`` from the tiny vision neck."""

    def __init__(self, neck: torch.nn.Module) -> None:
        self.neck = neck

    def forward_image(self, image: torch.Tensor) -> dict:
        _, _, feats, pos = self.neck(image)
        feats, pos = feats[:-1], pos[:-1]  # SAM3VLBackbone(scalp=1) drops the last level
        return {
            "sam2_backbone_out": {
                "vision_features": feats[-1],
                "vision_pos_enc": pos,
                "backbone_fpn": feats,
            }
        }


def cut_frames(
    folder: str,
    num_frames: int = NUM_FRAMES,
    step: int = FRAME_STEP,
    size: tuple[int, int] | None = (VIDEO_W, VIDEO_H),
) -> None:
    """Every ``step``-th frame as JPEG, downscaled to ``size`` (W, H) unless ``None``."""
    cap = cv2.VideoCapture(str(VIDEO))
    written = 0
    i = 0
    while written < num_frames:
        ok, frame = cap.read()
        if not ok:
            raise SystemExit(f"{VIDEO}: only {i} frames")
        if i % step == 0:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if size is not None:
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            Image.fromarray(rgb).save(os.path.join(folder, f"{written:05d}.jpg"), quality=95)
            written += 1
        i += 1
    cap.release()


def frames_from_uint8(u8: torch.Tensor) -> torch.Tensor:
    """The loader's float16 frames from its resized uint8 images ``(N, 3, S, S)``."""
    x = (u8.float() / 255.0).to(torch.float16)
    half = torch.tensor(0.5, dtype=torch.float16)
    return (x - half) / half


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """bool ``(..., H, W)`` -> uint8 ``(..., ceil(H*W/8))`` (numpy packbits, big bit order)."""
    flat = mask.reshape(*mask.shape[:-2], -1).numpy().astype(bool)
    return torch.from_numpy(np.packbits(flat, axis=-1))


def fp16_bits(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float16).view(torch.int16)


# --------------------------------------------------------------------------------------------
# Memory bank in isolation (§9): synthetic stored outputs, the official assembly + attention.
BANK_FRAMES = 40
BANKS = {
    # selection on: 5 prompted frames (> max_cond_frames_in_attn = 4), gaps, low scores, and
    # frames without a score (merged outputs downgraded to tracked ones)
    "scored": {
        "cond": [0, 30, 10, 25, 5],
        "missing": [17, 33],
        "unscored": [14, 22],
    },
    # selection off: prompted frames right before the frame, so that unselected prompted
    # frames serve as earlier-frame memories and pointers
    "plain": {"cond": [13, 11, 15, 12, 14, 2], "missing": [9], "unscored": []},
}
MEMORY_CASES = [
    {"name": "fwd_selection", "bank": "scored", "frame": 20, "reverse": False, "selection": True},
    {"name": "rev_selection", "bank": "scored", "frame": 12, "reverse": True, "selection": True},
    {"name": "fwd_far", "bank": "scored", "frame": 38, "reverse": False, "selection": True},
    {"name": "fwd_plain", "bank": "plain", "frame": 16, "reverse": False, "selection": False},
    {"name": "rev_plain", "bank": "plain", "frame": 7, "reverse": True, "selection": False},
]


def memory_bank_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(9)
    c, m, f, b = CFG.d_model, CFG.tracker.mem_dim, CFG.feat_size, 2
    return {
        "vision": torch.randn(1, c, f, f, generator=g),
        "maskmem_bases": torch.randn(3, b, m, f, f, generator=g),
        "obj_ptr": torch.randn(BANK_FRAMES, b, c, generator=g) * 4.0,
        "eff": torch.rand(BANK_FRAMES, generator=g) * 0.025,
    }


def bank_maskmem(bases: torch.Tensor, t: int) -> torch.Tensor:
    """Frame ``t``'s spatial memory ``(B, M, h, w)`` (also recomputed by the test)."""
    return bases[t % 3] * (1.0 + 0.02 * t)


def gen_memory_bank(tracker) -> None:
    from sam3.model.position_encoding import PositionEmbeddingSine

    inputs = memory_bank_inputs()
    b = inputs["maskmem_bases"].shape[1]
    vision = inputs["vision"]
    vision_pos = PositionEmbeddingSine(CFG.d_model, normalize=True)(vision)
    mem_pos = tracker.maskmem_backbone.position_encoding
    tensors = dict(inputs, vision_pos=vision_pos)
    for case in MEMORY_CASES:
        bank = BANKS[case["bank"]]
        cond, non_cond = {}, {}
        for t in range(BANK_FRAMES):
            if t in bank["missing"] or t == case["frame"]:
                continue
            feats = bank_maskmem(inputs["maskmem_bases"], t)
            out = {
                "maskmem_features": feats,
                "maskmem_pos_enc": [mem_pos(feats).to(feats.dtype)],
                "obj_ptr": inputs["obj_ptr"][t],
            }
            if t in bank["cond"]:
                continue
            if t not in bank["unscored"]:
                out["eff_iou_score"] = inputs["eff"][t]
            non_cond[t] = out
        for t in bank["cond"]:  # insertion order matters
            feats = bank_maskmem(inputs["maskmem_bases"], t)
            cond[t] = {
                "maskmem_features": feats,
                "maskmem_pos_enc": [mem_pos(feats).to(feats.dtype)],
                "obj_ptr": inputs["obj_ptr"][t],
            }
        tracker.use_memory_selection = case["selection"]
        x = vision.expand(b, -1, -1, -1).flatten(2).permute(2, 0, 1)
        pos = vision_pos.expand(b, -1, -1, -1).flatten(2).permute(2, 0, 1)
        out = tracker._prepare_memory_conditioned_features(
            frame_idx=case["frame"],
            is_init_cond_frame=False,
            current_vision_feats=[x],
            current_vision_pos_embeds=[pos],
            feat_sizes=[(CFG.feat_size, CFG.feat_size)],
            output_dict={"cond_frame_outputs": cond, "non_cond_frame_outputs": non_cond},
            num_frames=BANK_FRAMES,
            track_in_reverse=case["reverse"],
        )
        tensors[f"{case['name']}/out"] = out
    tracker.use_memory_selection = CFG.tracker.use_memory_selection
    save_fixture("tracker_memory_bank", tensors, {"cases": MEMORY_CASES, "banks": BANKS})


# --------------------------------------------------------------------------------------------
# Full size (--full): one short case, compact outputs.
FULL_NUM_FRAMES = 3
FULL_FRAME_STEP = 2
FULL_OPS: list[dict] = [
    {"op": "points", "frame": 0, "obj": 1, "points": [[330.0, 40.0]], "labels": [1]},
    {"op": "propagate", "start": 0, "max": FULL_NUM_FRAMES - 1, "reverse": False},
]


def fill_synthetic_inplace(module: torch.nn.Module, prefix: str) -> list[str]:
    """`load_synthetic` copying tensor by tensor (no second full-size state dict in memory)."""
    kept = []
    with torch.no_grad():
        for key, value in module.state_dict(keep_vars=True).items():
            try:
                new = synthetic_tensor(prefix + key, value.shape)
            except KeyError:
                kept.append(key)  # computed buffers (freqs_cis) keep the module's values
                continue
            value.copy_(new.to(value.dtype))
    return kept


def resize_like_loader(rgb: np.ndarray, size: int) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, S, S)`` uint8: PIL bilinear, as ``TF.resize`` on a PIL image."""
    resized = Image.fromarray(rgb).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1)


def gen_full() -> None:
    cfg = full_config()
    tmp = tempfile.mkdtemp(prefix="sam3_tracker_full_frames_")
    cut_frames(tmp, FULL_NUM_FRAMES, FULL_FRAME_STEP, size=None)

    from sam3.model.io_utils import load_resource_as_video_frames

    images, video_h, video_w = load_resource_as_video_frames(
        tmp, cfg.image_size, offload_video_to_cpu=True
    )
    names = sorted(os.listdir(tmp))
    # The loader's decoded frames (JPEG -> RGB), stored losslessly; the test redoes the resize.
    decoded = [np.array(Image.open(os.path.join(tmp, n)).convert("RGB")) for n in names]
    assert decoded[0].shape == (video_h, video_w, 3), (decoded[0].shape, video_h, video_w)
    u8 = torch.stack([resize_like_loader(rgb, cfg.image_size) for rgb in decoded])
    assert torch.equal(frames_from_uint8(u8), images), "cannot recreate the loader's frames"
    png, png_ends = encode_png(torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in decoded]))

    t0 = time.perf_counter()
    tracker = build_official_tracker(cfg)
    fill_synthetic_inplace(tracker, "tracker.")
    tracker.bf16_context.__exit__(None, None, None)  # autocast off (pure float32)
    neck = build_official_vision_backbone(cfg)
    kept = fill_synthetic_inplace(neck, "detector.backbone.vision_backbone.")
    tracker.backbone = TrackerNeckAdapter(neck)
    t_build = time.perf_counter() - t0
    print(f"full tracker + vision backbone built with synthetic weights in {t_build:.1f} s")
    torch.set_grad_enabled(False)

    tensors: dict[str, torch.Tensor] = {"frames_png": png, "frames_png_ends": png_ends}
    stats: dict[str, list] = {}
    timing: dict[str, float] = {}
    state = tracker.init_state(
        video_height=video_h, video_width=video_w, num_frames=FULL_NUM_FRAMES
    )
    state["images"] = images
    scale = torch.tensor([video_w, video_h], dtype=torch.float64)
    for k, op in enumerate(FULL_OPS):
        key = f"full/{k}"
        t0 = time.perf_counter()
        if op["op"] == "points":
            rel = (torch.tensor(op["points"], dtype=torch.float64) / scale).float()
            # (the official call returns no low-res logits: only ids and video-res masks)
            _, obj_ids, _, video_res = tracker.add_new_points_or_box(
                state,
                op["frame"],
                op["obj"],
                points=rel,
                labels=torch.tensor(op["labels"], dtype=torch.int32),
                clear_old_points=True,
            )
            tensors[f"{key}/obj_ids"] = torch.tensor(obj_ids)
            tensors[f"{key}/masks"] = pack_bits(video_res[:, 0] > 0)
        elif op["op"] == "propagate":
            frames = []
            for f, obj_ids, low, video_res, scores in tracker.propagate_in_video(
                state,
                start_frame_idx=op["start"],
                max_frame_num_to_track=op["max"],
                reverse=op["reverse"],
                tqdm_disable=True,
                propagate_preflight=True,
            ):
                frames.append(f)
                fk = f"{key}/{f}"
                tensors[f"{fk}/obj_ids"] = torch.tensor(obj_ids)
                tensors[f"{fk}/low_res"] = fp16_bits(low)
                tensors[f"{fk}/scores"] = scores.float()
                tensors[f"{fk}/masks"] = pack_bits(video_res[:, 0] > 0)
                stats[str(f)] = {
                    "score": scores.flatten().tolist(),
                    "low_res_absmax": low.abs().max().item(),
                    "low_res_mean": low.mean().item(),
                    "low_res_std": low.std().item(),
                    "video_mask_fraction": (video_res[:, 0] > 0).float().mean().item(),
                }
                print(f"frame {f}: {stats[str(f)]}")
            tensors[f"{key}/frames"] = torch.tensor(frames)
        else:
            raise ValueError(op["op"])
        label = f"{key} ({op['op']})"
        timing[label] = round(time.perf_counter() - t0, 1)
        print(f"{label}: {timing[label]} s")

    meta = {
        "config": "full",
        "video_size": [video_h, video_w],
        "num_frames": FULL_NUM_FRAMES,
        "frame_step": FULL_FRAME_STEP,
        "ops": FULL_OPS,
        "frames_png": "lossless PNG (cv2, RGB stored as-is) of the loader's decoded JPEG frames"
        " at video size; model input = PIL bilinear resize to image_size, /255 in float16,"
        " (x - 0.5) / 0.5 in float16",
        "weights": "synthetic_tensor(official key, shape, seed=0): tracker.* and"
        " detector.backbone.vision_backbone.*",
        "neck_computed_buffers": kept,
        "stats": stats,
        "timing_s": {
            "build": round(t_build, 1),
            **timing,
            "threads": torch.get_num_threads(),
            "loadavg_1m_5m_15m_after": [round(x, 2) for x in os.getloadavg()],
        },
        "dtype": "float32, autocast off, bf16 memory casts removed, CPU",
    }
    save_fixture("tracker_full", tensors, meta)


def main() -> None:
    torch.manual_seed(0)
    if "--full" in sys.argv:
        gen_full()
        return
    if "--only" in sys.argv and sys.argv[sys.argv.index("--only") + 1] == "memory":
        tracker = build_official_tracker(CFG)
        load_synthetic(tracker, "tracker.")
        tracker.bf16_context.__exit__(None, None, None)
        with torch.no_grad():
            gen_memory_bank(tracker)
        return
    tmp = tempfile.mkdtemp(prefix="sam3_tracker_frames_")
    cut_frames(tmp)

    from sam3.model.io_utils import load_resource_as_video_frames

    images, video_h, video_w = load_resource_as_video_frames(
        tmp, CFG.image_size, offload_video_to_cpu=True
    )
    assert (video_h, video_w) == (VIDEO_H, VIDEO_W), (video_h, video_w)
    names = sorted(os.listdir(tmp))
    u8 = torch.stack(
        [
            torch.from_numpy(
                np.array(
                    TF.resize(
                        Image.open(os.path.join(tmp, n)).convert("RGB"),
                        size=(CFG.image_size, CFG.image_size),
                    )
                )
            ).permute(2, 0, 1)
            for n in names
        ]
    )
    assert torch.equal(frames_from_uint8(u8), images), "cannot recreate the loader's frames"
    png, png_ends = encode_png(u8)
    ellipse = torch.from_numpy(ellipse_mask_u8())

    tracker = build_official_tracker(CFG)
    load_synthetic(tracker, "tracker.")
    tracker.bf16_context.__exit__(None, None, None)  # autocast off (pure float32)
    neck = build_official_vision_backbone(CFG)
    kept = load_synthetic(neck, "detector.backbone.vision_backbone.")
    tracker.backbone = TrackerNeckAdapter(neck)
    torch.set_grad_enabled(False)

    tensors: dict[str, torch.Tensor] = {
        "frames_png": png,
        "frames_png_ends": png_ends,
        "mask_ellipse_u8": ellipse,
    }
    scenarios_meta: dict[str, list[dict]] = {}
    stats = {}
    for name, ops in SCENARIOS.items():
        state = tracker.init_state(video_height=VIDEO_H, video_width=VIDEO_W, num_frames=NUM_FRAMES)
        state["images"] = images
        ops = [resolve(op) for op in ops]
        scenarios_meta[name] = ops
        for k, op in enumerate(ops):
            key = f"{name}/{k}"
            kind = op["op"]
            if kind in ("points", "box"):
                kwargs = {}
                if kind == "points":
                    pts = torch.tensor(op["points"], dtype=torch.float64)
                    rel = (pts / torch.tensor([VIDEO_W, VIDEO_H], dtype=torch.float64)).float()
                    kwargs["points"] = rel
                    kwargs["labels"] = torch.tensor(op["labels"], dtype=torch.int32)
                    kwargs["clear_old_points"] = op.get("clear", True)
                else:
                    box = torch.tensor(op["box"], dtype=torch.float64)
                    scale = torch.tensor([VIDEO_W, VIDEO_H] * 2, dtype=torch.float64)
                    kwargs["box"] = (box / scale).float()
                _, obj_ids, _, video_res = tracker.add_new_points_or_box(
                    state, op["frame"], op["obj"], **kwargs
                )
                tensors[f"{key}/obj_ids"] = torch.tensor(obj_ids)
                tensors[f"{key}/masks"] = pack_bits(video_res[:, 0] > 0)
            elif kind == "mask":
                mask = mask_from_u8(ellipse)
                _, obj_ids, _, video_res = tracker.add_new_mask(state, op["frame"], op["obj"], mask)
                tensors[f"{key}/obj_ids"] = torch.tensor(obj_ids)
                tensors[f"{key}/masks"] = pack_bits(video_res[:, 0] > 0)
            elif kind == "remove":
                obj_ids, _ = tracker.remove_object(state, op["obj"], strict=True)
                tensors[f"{key}/obj_ids"] = torch.tensor(obj_ids)
            elif kind == "propagate":
                frames = []
                for f, obj_ids, low, video_res, scores in tracker.propagate_in_video(
                    state,
                    start_frame_idx=op["start"],
                    max_frame_num_to_track=op["max"],
                    reverse=op["reverse"],
                    tqdm_disable=True,
                    propagate_preflight=True,
                ):
                    frames.append(f)
                    fk = f"{key}/{f}"
                    tensors[f"{fk}/obj_ids"] = torch.tensor(obj_ids)
                    tensors[f"{fk}/low_res"] = (
                        low.float() if name in FP32_SCENARIOS else fp16_bits(low)
                    )
                    tensors[f"{fk}/scores"] = scores.float()
                    tensors[f"{fk}/masks"] = pack_bits(video_res[:, 0] > 0)
                    stats.setdefault(name, []).append(
                        (
                            f,
                            [round(s, 3) for s in scores.flatten().tolist()],
                            [
                                round((video_res[i, 0] > 0).float().mean().item(), 3)
                                for i in range(video_res.shape[0])
                            ],
                        )
                    )
                tensors[f"{key}/frames"] = torch.tensor(frames)
            else:
                raise ValueError(kind)
    for name, rows in stats.items():
        print(name)
        for row in rows:
            print("   ", row)

    # Hole filling / sprinkle removal (official CPU path: skimage labels, 8-connectivity).
    from sam3.model.sam3_tracker_utils import fill_holes_in_mask_scores

    g = torch.Generator().manual_seed(7)
    noise = torch.randn(3, 1, 37, 50, generator=g)
    logits = torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1) * 4 + 0.3
    logits[1] = -logits[1]
    logits[2, 0, 10:20, 10:30] = 5.0
    logits[2, 0, 14:16, 15:17] = -5.0  # a 4-pixel hole
    tensors["fill_holes/input"] = logits
    for area in (0, 4, 16):
        tensors[f"fill_holes/output_{area}"] = fill_holes_in_mask_scores(logits.clone(), area)

    meta = {
        "video_size": [VIDEO_H, VIDEO_W],
        "num_frames": NUM_FRAMES,
        "scenarios": scenarios_meta,
        "official_tracker_keys": {k: list(v.shape) for k, v in tracker.state_dict().items()},
        "neck_computed_buffers": kept,
    }
    save_fixture("tracker_video", tensors, meta)
    gen_memory_bank(tracker)


if __name__ == "__main__":
    main()
