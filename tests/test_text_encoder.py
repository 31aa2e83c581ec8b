"""Parity of the text encoder with the official `VETextEncoder` (fixture from gen_text.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from _manifest import manifest_lines

from sam3video.errors import InvalidInputError
from sam3video.model.config import full_config, tiny_config
from sam3video.model.text_encoder import TextEncoder, TextTransformer
from sam3video.model.tokenizer import SimpleTokenizer
from sam3video.model.weights import synthetic_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "text_encoder.pt"
PREFIX = "detector.backbone.language_backbone."
ATOL = 1e-4  # float32, same op order up to the attention kernel


def build(cfg, device: str | torch.device = "cpu") -> TextEncoder:
    t = cfg.text
    with torch.device(device):
        encoder = TextTransformer(
            context_length=t.context_length,
            vocab_size=t.vocab_size,
            width=t.width,
            heads=t.heads,
            layers=t.layers,
            mlp_dim=t.mlp_dim,
            proj_dim=t.proj_dim,
        )
        return TextEncoder(SimpleTokenizer(context_length=t.context_length), encoder, cfg.d_model)


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def model() -> TextEncoder:
    m = build(tiny_config())
    m.load_state_dict(synthetic_state_dict(m, prefix=PREFIX), strict=True)
    return m.eval()


def test_tiny_sizes_match_fixture(fixture):
    t, cfg = tiny_config().text, tiny_config()
    sizes = fixture["meta"]["sizes"]
    assert sizes == {
        "context_length": t.context_length,
        "vocab_size": t.vocab_size,
        "width": t.width,
        "heads": t.heads,
        "layers": t.layers,
        "mlp_dim": t.mlp_dim,
        "proj_dim": t.proj_dim,
        "d_model": cfg.d_model,
    }


def test_tiny_keys_and_shapes_match_official(model, fixture):
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == fixture["meta"]["official_keys"]


def test_full_keys_and_shapes_match_manifest():
    expected = {}
    for key, shape, _dtype in csv.reader(manifest_lines(), delimiter="\t"):
        if key.startswith(PREFIX):
            expected[key[len(PREFIX) :]] = tuple(
                int(s) for s in shape.strip("()").split(",") if s.strip()
            )
    m = build(full_config(), device="meta")
    ours = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert len(expected) == 295
    assert ours == expected


def test_tokens_match_official(model, fixture):
    tokens = model.tokenizer(fixture["meta"]["texts"])
    assert torch.equal(tokens, fixture["tensors"]["tokens"])


@torch.no_grad()
def test_encoder_states_parity(model, fixture):
    states = model.encoder(fixture["tensors"]["tokens"])
    expected = fixture["tensors"]["encoder_states"]
    assert states.shape == expected.shape
    diff = (states - expected).abs().max().item()
    assert diff <= ATOL, diff


@torch.no_grad()
def test_text_encoder_parity(model, fixture):
    feats, mask = model(fixture["meta"]["texts"])
    expected = fixture["tensors"]["features"]
    assert feats.shape == expected.shape == (5, 32, 32)
    assert feats.dtype == torch.float32
    diff = (feats - expected).abs().max().item()
    assert diff <= ATOL, diff
    assert mask.dtype == torch.bool
    assert torch.equal(mask, fixture["tensors"]["pad_mask"])
    # The official id-0 rule: the genuine "!" token (id 0) in row 3 counts as padding.
    assert mask[3, 2] and fixture["tensors"]["tokens"][3, 2] == 0


@torch.no_grad()
def test_causal_padding_does_not_change_valid_tokens(model):
    tokens = model.tokenizer(["a red car"])
    full = model.encoder(tokens)
    short = model.encoder(tokens[:, :5])  # start, 3 words, end
    torch.testing.assert_close(full[:, :5], short, atol=1e-5, rtol=0)
    # Changing a later token leaves earlier outputs alone (causality) but changes its own.
    other = tokens.clone()
    other[0, 3] = 1000
    changed = model.encoder(other)
    torch.testing.assert_close(changed[:, :3], full[:, :3], atol=1e-6, rtol=0)
    assert (changed[:, 3] - full[:, 3]).abs().max() > 1e-2


@torch.no_grad()
def test_bf16_smoke(model, fixture):
    m = build(tiny_config())
    m.load_state_dict(model.state_dict())
    m = m.to(torch.bfloat16).eval()
    feats, mask = m(fixture["meta"]["texts"])
    assert feats.dtype == torch.bfloat16
    assert torch.isfinite(feats).all()
    diff = (feats.float() - fixture["tensors"]["features"]).abs().max().item()
    assert diff < 0.1, diff  # measured ~0.03 (features up to ~3.5)
    assert torch.equal(mask, fixture["tensors"]["pad_mask"])


def test_invalid_inputs(model):
    with pytest.raises(InvalidInputError, match="texts"):
        model([])
    with pytest.raises(InvalidInputError, match="tokens"):
        model.encoder(torch.zeros(2, 33, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="tokens"):
        model.encoder(torch.zeros(2, 4))
    with pytest.raises(InvalidInputError, match="texts"):
        model(["ok", 3])
