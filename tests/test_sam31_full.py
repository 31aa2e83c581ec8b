"""Full-size parity of SAM 3.1's tracker pieces with the official 3.1 tracker (slow).

Fixture: ``tools/reference/gen_sam31_modules.py --full`` (official sizes: 16 slots per
bucket, 72 x 72 grid, 8-head decoupled memory attention). The inputs are too large to store:
they are drawn again here from the same seeds and checked against the stored checksums; the
large outputs are stored subsampled. Only the tracker (``tracker.model.``) is built, with the
synthetic weights of the whole ``sam3.1`` model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sam3video.model.build import load_state_dict_checked
from sam3video.model.config import get_config
from sam3video.model.tracker_31 import MemoryFrame, PointerFrame, build_multiplex_tracker
from sam3video.model.weights import synthetic_state_dict

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sam31_full.pt"
ATOL = 1e-4  # measured: heads and memory encoding bit-exact, conditioning 2.3e-6


def full_inputs(cfg) -> dict[str, torch.Tensor]:
    """The generator's `full_inputs` recipe (same seed, same draws, same order)."""
    g = torch.Generator().manual_seed(3101)
    c, f, m, n, bk = cfg.d_model, cfg.feat_size, cfg.multiplex.multiplex_count, 20, 2
    t = {
        "prop_features": torch.randn(bk, c, f, f, generator=g),
        "prop_s0": torch.randn(1, c // 8, 4 * f, 4 * f, generator=g),
        "prop_s1": torch.randn(1, c // 4, 2 * f, 2 * f, generator=g),
        "vision": torch.randn(1, c, f, f, generator=g),
        "enc_masks": torch.randn(n, 1, 252, 252, generator=g) * 4,
        "enc_scores": torch.randn(n, 1, generator=g) * 2,
    }
    for frame in (0, 4):
        t[f"frame{frame}_maskmem_features"] = torch.randn(bk, c, f, f, generator=g)
        t[f"frame{frame}_image_features"] = torch.randn(1, c, f, f, generator=g)
        t[f"frame{frame}_obj_ptr"] = torch.randn(bk, m, c, generator=g)
    return t


@pytest.fixture(scope="module")
def case():
    data = torch.load(FIXTURE, weights_only=True)
    cfg = get_config("sam3.1")
    tracker = build_multiplex_tracker(cfg).to("meta")
    state = synthetic_state_dict(tracker, prefix="tracker.")
    assert load_state_dict_checked(tracker, state, strict=True).ok
    inputs = full_inputs(cfg)
    for k, (total, absolute) in data["meta"]["input_checksums"].items():
        v = inputs[k].double()
        assert (float(v.sum()), float(v.abs().sum())) == (total, absolute), k
    return tracker.model.eval(), inputs, data["tensors"], data["meta"]


def close(ours: torch.Tensor, official: torch.Tensor) -> None:
    assert ours.shape == official.shape
    torch.testing.assert_close(ours, official, atol=ATOL, rtol=0)


def test_full_propagation_heads(case):
    model, x, t, meta = case
    slots = torch.tensor(meta["assignments"])
    with torch.no_grad():
        out = model.forward_propagation_heads(
            x["prop_features"], [x["prop_s0"], x["prop_s1"]], slots
        )
    close(out.low_res_masks[..., ::4, ::4], t["prop_low_res_masks"])
    close(out.low_res_multimasks[..., ::8, ::8], t["prop_low_res_multimasks"])
    close(out.ious, t["prop_ious"])
    close(out.obj_ptr, t["prop_obj_ptr"])
    close(out.object_score_logits, t["prop_object_score_logits"])


def test_full_memory_encoding(case):
    model, x, t, meta = case
    slots = torch.tensor(meta["assignments"])
    cond = torch.zeros(20, dtype=torch.bool)
    cond[meta["conditioning"]] = True
    with torch.no_grad():
        feats, _ = model.encode_memory(x["vision"], x["enc_masks"], x["enc_scores"], slots, cond)
    close(feats[..., ::6, ::6], t["enc_features"])


def test_full_memory_conditioning(case):
    model, x, t, meta = case
    pos = model.maskmem_backbone.position_encoding(x["vision"])
    memories = [
        MemoryFrame(x[f"frame{f}_maskmem_features"], x[f"frame{f}_image_features"], pos, p)
        for f, p in meta["spatial"]
    ]
    pointers = [PointerFrame(x[f"frame{f}_obj_ptr"], d) for f, d in meta["pointers"]]
    with torch.no_grad():
        out = model.condition_on_memory(
            x["vision"], pos, 2, memories, pointers, num_frames=meta["num_frames"]
        )
    close(out[..., ::6, ::6], t["cond_out"])
