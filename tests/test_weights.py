"""Synthetic weights: a pure function of (seed, key, shape), with sane scales."""

from __future__ import annotations

import torch

from sam3video.model.weights import synthetic_tensor


def test_same_key_shape_seed_gives_identical_values():
    a = synthetic_tensor("detector.transformer.decoder.layers.0.linear1.weight", (64, 32))
    b = synthetic_tensor("detector.transformer.decoder.layers.0.linear1.weight", (64, 32))
    assert torch.equal(a, b)


def test_values_depend_on_key_and_seed_not_on_call_order():
    k1, k2 = "tracker.obj_ptr_proj.layers.0.weight", "tracker.obj_ptr_proj.layers.1.weight"
    first = synthetic_tensor(k1, (32, 32))
    synthetic_tensor(k2, (32, 32))
    again = synthetic_tensor(k1, (32, 32))
    assert torch.equal(first, again)
    assert not torch.equal(synthetic_tensor(k1, (32, 32)), synthetic_tensor(k2, (32, 32)))
    assert not torch.equal(
        synthetic_tensor(k1, (32, 32), seed=0), synthetic_tensor(k1, (32, 32), seed=1)
    )


def test_scales_by_role():
    ln_w = synthetic_tensor("detector.geometry_encoder.norm.weight", (256,))
    ln_b = synthetic_tensor("detector.geometry_encoder.norm.bias", (256,))
    lin = synthetic_tensor("detector.geometry_encoder.final_proj.weight", (256, 256))
    assert abs(ln_w.mean().item() - 1.0) < 0.05 and ln_w.std().item() < 0.2
    assert ln_b.abs().max().item() < 0.5
    # variance preserving: std ~ 1/sqrt(fan_in)
    assert abs(lin.std().item() * 16 - 1.0) < 0.1
    assert synthetic_tensor("x.weight", (4, 3, 2, 2)).dtype == torch.float32


def test_computed_buffers_are_refused():
    import pytest

    with pytest.raises(KeyError):
        synthetic_tensor("detector.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis", (4, 2))
