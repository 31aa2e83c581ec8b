"""Full-size detector parity (slow: ~3.5 GB of float32 weights, one 1008 px forward on CPU).

Fixture ``detector_full_person.pt`` from ``tools/reference/gen_detector.py --full``: the
official full detector with the synthetic weights on frame 30 of bikes.mp4, text "person".
Run with ``python -m pytest -m slow tests/test_detector_full.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _manifest import FIXTURES

from sam3video.io import to_model_input
from sam3video.model.build import build_sam3_video_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run():
    fx = torch.load(FIXTURES / "detector_full_person.pt", weights_only=False)
    t, meta = fx["tensors"], fx["meta"]
    with pytest.warns(UserWarning, match="synthetic weights"):
        model = build_sam3_video_model("full", device="cpu", dtype=torch.float32)
    image = to_model_input(t["frame_u8"].numpy(), 1008)[None]
    with torch.inference_mode():
        out = model.detector(image, ["person"])
    return t, meta, image, out


def test_input_recipe_matches(run):
    _, meta, image, _ = run
    stats = meta["input_stats"]
    assert abs(float(image.double().sum()) - stats["float_sum"]) < 1e-3
    assert abs(float(image.min()) - stats["float_min"]) < 1e-6


def test_full_size_outputs_match_official(run):
    t, _, _, out = run
    diff_logits = (out.pred_logits[0] - t["pred_logits"][0, :, 0]).abs().max().item()
    diff_presence = (out.presence_logit - t["presence_logit_dec"]).abs().max().item()
    diff_boxes = (out.pred_boxes - t["pred_boxes"]).abs().max().item()
    print(f"full: logits {diff_logits:.1e}, presence {diff_presence:.1e}, boxes {diff_boxes:.1e}")
    assert diff_logits <= 1e-3 and diff_presence <= 1e-3 and diff_boxes <= 1e-3
    masks = out.pred_masks[0]
    ref_top = t["top5_masks_f16"].float()
    top = masks[t["top5_idx"]]
    # float16 storage: ~1e-3 relative; mask logits reach |x| ~ 10
    assert (top - ref_top).abs().max().item() <= 2e-2
    ref_bin = np.unpackbits(t["masks_bin_packed"].numpy(), axis=-1)[..., :288].astype(bool)
    agree = ((masks > 0).numpy() == ref_bin).mean()
    print(f"binarised mask agreement over 200 queries: {agree:.6f}")
    assert agree >= 0.999
