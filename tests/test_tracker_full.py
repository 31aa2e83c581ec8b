"""Full-size tracker parity (slow: ~3.5 GB of float32 weights, 1008 px backbone on CPU).

Fixture ``tracker_full.pt`` from ``tools/reference/gen_tracker.py --full``: the official
``Sam3TrackerPredictor`` and vision backbone at FULL size with the synthetic weights, pure
float32, on 3 frames of bikes.mp4 (every 2nd frame, 640x272): one positive click on frame 0,
then forward propagation to frame 2 (frames 1 and 2 read the memory bank: the prompted frame's
spatial memory and pointer, and the previous tracked frame). We replay it with OUR full model
(`build_sam3_video_model("full")`, synthetic weights) and a `TrackingState`:

- low-res (288x288) mask logits, stored as float16: ``|ours - ref| <= 2e-3 + 1e-3 |ref|``
  (float16 rounding alone is up to 4.9e-4 |ref|, 0.016 at the logits' |32|), and at most
  1e-3 beyond the float16 rounding of ``ref``;
- object-score logits (float32): max abs diff <= 1e-3;
- video-resolution binary masks: >= 99.5 % pixel agreement per frame.

Run with ``python -m pytest -m slow tests/test_tracker_full.py -q -s``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _manifest import FIXTURES
from PIL import Image

from sam3video.model.build import build_sam3_video_model
from sam3video.video.tracking import TrackingState

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_grad")]

LOGIT_ATOL, LOGIT_RTOL = 2e-3, 1e-3
BEYOND_FP16_ATOL = 1e-3
SCORE_ATOL = 1e-3
MIN_AGREEMENT = 0.995
IMAGE_SIZE = 1008


def decode_frames(tensors: dict) -> list[np.ndarray]:
    """The loader's decoded RGB frames ``(H, W, 3)`` uint8, from the fixture's lossless PNGs."""
    import cv2

    data, ends = tensors["frames_png"].numpy(), tensors["frames_png_ends"].tolist()
    return [
        cv2.imdecode(data[start:end], cv2.IMREAD_UNCHANGED)
        for start, end in zip([0] + ends[:-1], ends)
    ]


def loader_input(rgb: np.ndarray) -> torch.Tensor:
    """SAM 3's JPEG-folder loader: PIL bilinear resize, ``/ 255`` and normalise in float16.

    Returns ``(1, 3, S, S)`` float32 (the official predictor casts the stored frame up).
    """
    resized = Image.fromarray(rgb).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    x = torch.from_numpy(np.array(resized)).permute(2, 0, 1)
    x = (x.float() / 255.0).to(torch.float16)
    half = torch.tensor(0.5, dtype=torch.float16)
    return ((x - half) / half).float()[None]


def unpack(bits: torch.Tensor, h: int, w: int) -> torch.Tensor:
    flat = np.unpackbits(bits.numpy(), axis=-1)[..., : h * w].astype(bool)
    return torch.from_numpy(flat).reshape(*bits.shape[:-1], h, w)


def fp16(bits: torch.Tensor) -> torch.Tensor:
    return bits.view(torch.float16).float()


@pytest.fixture(scope="module")
def run():
    fx = torch.load(FIXTURES / "tracker_full.pt", weights_only=False)
    tensors, meta = fx["tensors"], fx["meta"]
    frames = decode_frames(tensors)
    assert [f.shape for f in frames] == [(*meta["video_size"], 3)] * meta["num_frames"]
    with pytest.warns(UserWarning, match="synthetic weights"):
        model = build_sam3_video_model("full", device="cpu", dtype=torch.float32)
    backbone = model.detector.backbone

    def features(i: int):
        neck = backbone.forward_image(loader_input(frames[i]), need_detector=False)
        return neck.tracker_feats, neck.tracker_pos

    state = TrackingState(model.tracker, features, meta["num_frames"], tuple(meta["video_size"]))
    results = {}
    with torch.inference_mode():
        for k, op in enumerate(meta["ops"]):
            if op["op"] == "points":
                results[k] = state.add_points(op["frame"], op["obj"], op["points"], op["labels"])
            elif op["op"] == "propagate":
                results[k] = list(state.propagate(op["start"], op["max"], op["reverse"]))
            else:
                raise AssertionError(op["op"])
    return tensors, meta, results


def fp16_half_ulp(x: torch.Tensor) -> torch.Tensor:
    """Largest float16 rounding error of values stored as ``x`` (float16 values)."""
    _, exponent = torch.frexp(x)  # |x| in [2^(e-1), 2^e): the float16 step is 2^(e-11)
    exponent = torch.where(x == 0, torch.zeros_like(exponent) - 24, exponent - 11)
    return torch.exp2(exponent.clamp(min=-24).float()) / 2


def check_logits(ours: torch.Tensor, ref: torch.Tensor, where: str) -> tuple[float, float]:
    """Max abs diff, and max diff beyond the float16 rounding of the stored reference."""
    assert ours.shape == ref.shape, where
    diff = (ours - ref).abs()
    bound = LOGIT_ATOL + LOGIT_RTOL * ref.abs()
    assert (diff <= bound).all(), f"{where}: {(diff - bound).max():.3g} over the bound"
    beyond = (diff - fp16_half_ulp(ref)).clamp(min=0).max().item()
    assert beyond <= BEYOND_FP16_ATOL, f"{where}: {beyond:.3g} beyond float16 rounding"
    return diff.max().item(), beyond


def check_masks(ours: torch.Tensor, bits: torch.Tensor, h: int, w: int, where: str) -> float:
    ref = unpack(bits, h, w)
    assert ours.shape == (ref.shape[0], 1, h, w), where
    agreement = (ours[:, 0] == ref).float().mean(dim=(1, 2))
    assert agreement.min() >= MIN_AGREEMENT, f"{where}: agreement {agreement.tolist()}"
    return agreement.min().item()


def test_fixture_is_not_degenerate(run):
    """The case must exercise something: the object is present and its mask is partial."""
    _, meta, _ = run
    for f, s in meta["stats"].items():
        assert all(x > 0 for x in s["score"]), f
        assert 0.001 < s["video_mask_fraction"] < 0.999, f


def test_prompt_call_matches_official(run):
    tensors, meta, results = run
    h, w = meta["video_size"]
    out = results[0]
    assert out.obj_ids == tensors["full/0/obj_ids"].tolist()
    a = check_masks(out.masks, tensors["full/0/masks"], h, w, "prompt")
    print(f"\nprompt call: mask agreement {a:.6f}")


def test_propagation_matches_official(run):
    tensors, meta, results = run
    h, w = meta["video_size"]
    outs = results[1]
    assert [o.frame_idx for o in outs] == tensors["full/1/frames"].tolist() == [0, 1, 2]
    for out in outs:
        fk = f"full/1/{out.frame_idx}"
        assert out.obj_ids == tensors[f"{fk}/obj_ids"].tolist(), fk
        ref = fp16(tensors[f"{fk}/low_res"])
        assert out.low_res_masks.shape == ref.shape == (1, 1, 288, 288), fk
        d, beyond = check_logits(out.low_res_masks, ref, fk)
        score_diff = (out.object_score_logits - tensors[f"{fk}/scores"]).abs().max().item()
        assert score_diff <= SCORE_ATOL, f"{fk}: score diff {score_diff:.3g}"
        a = check_masks(out.masks, tensors[f"{fk}/masks"], h, w, fk)
        assert torch.equal(out.masks, out.video_res_logits > 0)
        print(
            f"\nframe {out.frame_idx}: low-res logits max abs diff {d:.2e} "
            f"(|ref| max {ref.abs().max():.2f}; {beyond:.2e} beyond float16 rounding), "
            f"score diff {score_diff:.2e}, "
            f"mask agreement {a:.6f}"
        )
