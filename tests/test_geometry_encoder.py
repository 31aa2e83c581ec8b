"""Geometry encoder: parity with the official ``SequenceGeometryEncoder`` and key layout.

Fixture: ``tests/fixtures/geometry_encoder.pt`` from ``tools/reference/gen_geometry.py`` (tiny
sizes, synthetic weights under ``detector.geometry_encoder.``). Parity tolerance: max abs diff
<= 1e-4 over every position, padding included (measured < 1e-6); masks must be equal.
"""

from __future__ import annotations

import pytest
import torch

from sam3video.errors import InvalidInputError
from sam3video.model.config import full_config, tiny_config
from sam3video.model.geometry_encoder import SequenceGeometryEncoder, sine_encode
from sam3video.model.weights import synthetic_state_dict
from tests._manifest import FIXTURES, official_manifest, state_manifest

PREFIX = "detector.geometry_encoder."
TOL = 1e-4
CASES = ["none", "one_box", "pos_neg_boxes", "padded_batch", "points", "boxes_and_points"]


@pytest.fixture(scope="module")
def fx():
    return torch.load(FIXTURES / "geometry_encoder.pt")


def _build(cfg=None, **kwargs) -> SequenceGeometryEncoder:
    d = (cfg or tiny_config()).detector
    return SequenceGeometryEncoder(
        d.d_model, d.num_heads, d.ffn_dim, d.geo_layers, d.geo_roi_size, **kwargs
    )


@pytest.fixture(scope="module")
def model():
    m = _build().eval()
    m.load_state_dict(synthetic_state_dict(m, prefix=PREFIX), strict=True)
    return m


def _run(model, fx, name, **override):
    t, case = fx["tensors"], fx["meta"]["cases"][name]
    b = case["batch"]
    kwargs = {k: t[f"{name}.{k}"] for k in case["given"]}
    kwargs.update(override)
    with torch.no_grad():
        return model(t["img_feats"][:b], t["img_pos"][:b], **kwargs)


@pytest.mark.parametrize("name", CASES)
def test_parity_with_official(model, fx, name):
    t = fx["tensors"]
    tokens, mask = _run(model, fx, name)
    ref = t[f"{name}.tokens"]
    assert tokens.shape == ref.shape
    assert torch.equal(mask, t[f"{name}.mask"])
    assert (tokens - ref).abs().max().item() <= TOL


def test_fixture_cases_are_informative(fx):
    t = fx["tensors"]
    # CLS only without prompts; padding appears in the batched cases.
    assert t["none.tokens"].shape[1] == 1 and not t["none.mask"].any()
    assert t["padded_batch.mask"].sum() == 2 and t["points.mask"].sum() == 2
    # Tokens differ from one another and are not saturated.
    tok = t["pos_neg_boxes.tokens"][0]
    assert torch.cdist(tok, tok).add(torch.eye(len(tok)) * 1e3).min() > 0.5
    assert tok.abs().max() < 10


def test_empty_prompt_equals_zero_length_boxes(model, fx):
    t = fx["tensors"]
    zero = torch.zeros(1, 0, 4)
    tokens, mask = _run(model, fx, "none", boxes=zero, box_mask=torch.zeros(1, 0, dtype=torch.bool))
    assert torch.allclose(tokens, t["none.tokens"], atol=TOL) and mask.shape == (1, 1)


def test_any_padding_pattern_packs_valid_tokens_first(model, fx):
    t = fx["tensors"]
    ref, ref_mask = _run(model, fx, "padded_batch")
    # Same prompt with the second row's valid box moved to the end, its padding in front.
    boxes = t["padded_batch.boxes"].clone()
    boxes[1] = boxes[1].flip(0)
    labels = t["padded_batch.box_labels"].clone()
    labels[1] = labels[1].flip(0)
    pad = t["padded_batch.box_mask"].clone()
    pad[1] = pad[1].flip(0)
    tokens, mask = _run(model, fx, "padded_batch", boxes=boxes, box_labels=labels, box_mask=pad)
    assert torch.equal(mask, ref_mask)
    valid = ~mask
    assert (tokens[valid] - ref[valid]).abs().max() <= TOL


def test_padded_entries_do_not_change_valid_tokens(model, fx):
    t = fx["tensors"]
    ref, mask = _run(model, fx, "padded_batch")
    boxes = t["padded_batch.boxes"].clone()
    labels = t["padded_batch.box_labels"].clone()
    boxes[1, 1:] = torch.tensor([0.1, 0.9, 5.0, 5.0])
    labels[1, 1:] = -1  # any label value is tolerated in padding
    tokens, _ = _run(model, fx, "padded_batch", boxes=boxes, box_labels=labels)
    valid = ~mask
    assert (tokens[valid] - ref[valid]).abs().max() <= TOL


def test_bool_labels_and_default_labels(model, fx):
    t = fx["tensors"]
    tokens, _ = _run(model, fx, "pos_neg_boxes", box_labels=t["pos_neg_boxes.box_labels"].bool())
    assert torch.allclose(tokens, t["pos_neg_boxes.tokens"], atol=TOL)
    # Omitted labels mean positive: the one-box case was recorded with label 1.
    tokens, _ = _run(model, fx, "one_box", box_labels=None)
    assert torch.allclose(tokens, t["one_box.tokens"], atol=TOL)
    # And the label matters.
    neg, _ = _run(model, fx, "one_box", box_labels=torch.zeros(1, 1, dtype=torch.long))
    assert (neg - t["one_box.tokens"]).abs().max() > 0.1


def test_without_image_cross_attention(fx):
    on = _build()
    off = _build(use_img_cross_attn=False)
    assert list(on.state_dict()) == list(off.state_dict())
    for m in (on, off):
        m.load_state_dict(synthetic_state_dict(m, prefix=PREFIX), strict=True)
        m.eval()
    t = fx["tensors"]
    feats, pos = t["img_feats"][:1], t["img_pos"][:1]
    with torch.no_grad():
        a, _ = on(feats, pos)
        b, _ = off(feats, pos)
        c, _ = off(feats * 2, pos + 1)  # CLS alone no longer sees the image
    assert (a - b).abs().max() > 1e-2
    assert torch.allclose(b, c)


def test_sine_encode_layout():
    code = sine_encode(torch.tensor([0.25]), 8)
    angle = 0.25 * 2 * torch.pi / 10000 ** (torch.arange(4) * 2 / 8)
    expected = torch.stack((angle.sin(), angle.cos()), -1).flatten()
    assert torch.allclose(code[0], expected, atol=1e-6)


def test_rejects_mismatched_shapes(model, fx):
    t = fx["tensors"]
    feats, pos = t["img_feats"][:1], t["img_pos"][:1]
    with pytest.raises(InvalidInputError, match="img_feats"):
        model(feats[:, :16], pos[:, :16])
    with pytest.raises(InvalidInputError, match="img_pos"):
        model(feats, t["img_pos"])
    with pytest.raises(InvalidInputError, match="boxes"):
        model(feats, pos, boxes=torch.zeros(1, 2, 2))
    with pytest.raises(InvalidInputError, match="boxes"):
        model(feats, pos, boxes=torch.zeros(2, 2, 4))
    with pytest.raises(InvalidInputError, match="box_labels"):
        model(feats, pos, boxes=torch.zeros(1, 2, 4), box_labels=torch.ones(1, 3))
    with pytest.raises(InvalidInputError, match="box_mask"):
        model(feats, pos, boxes=torch.zeros(1, 2, 4), box_mask=torch.zeros(1, 2))
    with pytest.raises(InvalidInputError, match="point_labels"):
        model(feats, pos, point_labels=torch.ones(1, 1))
    with pytest.raises(InvalidInputError, match="points"):
        model(feats, pos, points=torch.zeros(1, 3, 4))


def test_state_dict_matches_official_tiny(fx):
    ours = {k: list(v.shape) for k, v in _build().state_dict().items()}
    assert ours == fx["meta"]["official_keys"]


def test_state_dict_matches_official_manifest_full():
    with torch.device("meta"):
        m = _build(full_config())
    official = {k: v for k, v in official_manifest().items() if k.startswith(PREFIX)}
    assert len(official) == 76
    assert state_manifest(m.state_dict(), PREFIX) == official
