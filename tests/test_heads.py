"""Detector heads (fusion encoder, decoder, dot-product scoring, segmentation head): parity with
the official ``sam3`` modules on synthetic weights, key/shape equality with the official state
dict, and the behaviours the spec singles out.

Fixtures come from ``tools/reference/gen_heads.py`` (official modules at tiny sizes, float32,
eval). Tolerance: max abs diff <= 1e-4 (float32; the official code uses nn.MultiheadAttention's
explicit-softmax path in places, we use SDPA, so last bits differ).
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from _manifest import manifest_lines

from sam3video.errors import InvalidInputError
from sam3video.model.config import full_config, tiny_config
from sam3video.model.decoder import TransformerDecoder, box_sine_embed, inverse_sigmoid
from sam3video.model.encoder import TransformerEncoderFusion
from sam3video.model.scoring import DotProductScoring
from sam3video.model.segmentation_head import UniversalSegmentationHead
from sam3video.model.weights import synthetic_state_dict

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOL = 1e-4

PREFIX = {
    "encoder": "detector.transformer.encoder.",
    "decoder": "detector.transformer.decoder.",
    "scoring": "detector.dot_prod_scoring.",
    "seg": "detector.segmentation_head.",
}


def build(name: str, cfg=None, device: str | torch.device = "cpu") -> torch.nn.Module:
    cfg = cfg or tiny_config()
    det = cfg.detector
    with torch.device(device):
        if name == "encoder":
            return TransformerEncoderFusion(
                det.d_model, det.num_heads, det.ffn_dim, det.encoder_layers
            )
        if name == "decoder":
            return TransformerDecoder(
                det.d_model,
                det.num_heads,
                det.ffn_dim,
                det.decoder_layers,
                det.num_queries,
                cfg.feat_size,
                presence_token=det.presence_token,
            )
        if name == "scoring":
            return DotProductScoring(det.d_model, det.scoring_mlp_dim, det.dot_prod_clamp)
        return UniversalSegmentationHead(
            det.d_model, det.num_heads, det.pixel_decoder_stages, det.group_norm_groups
        )


def loaded(name: str) -> torch.nn.Module:
    module = build(name)
    module.load_state_dict(synthetic_state_dict(module, prefix=PREFIX[name]), strict=True)
    return module.eval()


@pytest.fixture(scope="module")
def tr():
    return torch.load(FIXTURES / "heads_transformer.pt", weights_only=False)


@pytest.fixture(scope="module")
def seg_fx():
    return torch.load(FIXTURES / "heads_segmentation.pt", weights_only=False)


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def inputs(t: dict, b: int):
    return t["img"][:b], t["img_pos"][:b], t["prompt"][:b], t["prompt_mask"][:b]


# ---------------------------------------------------------------- parity


@pytest.mark.parametrize("b", [1, 2])
@torch.no_grad()
def test_encoder_parity(tr, b):
    t = tr["tensors"]
    memory = loaded("encoder")(*inputs(t, b))
    assert maxdiff(memory, t[f"memory_b{b}"]) <= TOL


@pytest.mark.parametrize("b", [1, 2])
@torch.no_grad()
def test_decoder_parity(tr, b):
    t = tr["tensors"]
    _, pos, prompt, mask = inputs(t, b)
    out = loaded("decoder")(t[f"memory_b{b}"], pos, prompt, mask)
    assert maxdiff(out.hs, t[f"hs_b{b}"]) <= TOL
    assert maxdiff(out.ref_boxes, t[f"ref_boxes_b{b}"]) <= TOL
    assert maxdiff(out.presence_logits, t[f"presence_logits_b{b}"]) <= TOL
    assert maxdiff(out.pred_boxes, t[f"pred_boxes_b{b}"]) <= TOL
    assert out.ref_boxes.dtype == out.pred_boxes.dtype == torch.float32


@pytest.mark.parametrize("b", [1, 2])
@torch.no_grad()
def test_scoring_parity(tr, b):
    t = tr["tensors"]
    _, _, prompt, mask = inputs(t, b)
    scores = loaded("scoring")(t[f"hs_b{b}"], prompt, mask)
    assert maxdiff(scores, t[f"scores_b{b}"]) <= TOL
    # a single layer (B, Q, C) works too
    last = loaded("scoring")(t[f"hs_b{b}"][-1], prompt, mask)
    assert maxdiff(last, t[f"scores_b{b}"][-1]) <= TOL


@torch.no_grad()
def test_encoder_decoder_scoring_chain(tr):
    """Our modules chained on our own intermediate outputs reach the official final outputs."""
    t = tr["tensors"]
    img, pos, prompt, mask = inputs(t, 2)
    memory = loaded("encoder")(img, pos, prompt, mask)
    out = loaded("decoder")(memory, pos, prompt, mask)
    scores = loaded("scoring")(out.hs, prompt, mask)
    assert maxdiff(out.pred_boxes, t["pred_boxes_b2"]) <= TOL
    assert maxdiff(out.presence_logits, t["presence_logits_b2"]) <= TOL
    assert maxdiff(scores, t["scores_b2"]) <= TOL


@torch.no_grad()
def test_segmentation_head_parity(seg_fx):
    t = seg_fx["tensors"]
    head = loaded("seg")
    h, w = seg_fx["meta"]["grid_hw"]
    coarse = torch.zeros(2, t["fpn0"].shape[1], h, w)
    fpn = [t["fpn0"], t["fpn1"], coarse]
    masks, sem = head(fpn, t["memory"], t["prompt"], t["prompt_mask"], t["queries"])
    assert maxdiff(masks, t["pred_masks"]) <= TOL
    assert maxdiff(sem, t["semantic_seg"]) <= TOL
    masks_only, none = head(
        fpn, t["memory"], t["prompt"], t["prompt_mask"], t["queries"], semantic=False
    )
    assert none is None and torch.equal(masks_only, masks)
    # two prompts on one image: batch-1 levels broadcast over the prompts
    shared = [t["fpn0"][:1], t["fpn1"][:1], coarse[:1]]
    masks_shared, _ = head(shared, t["memory"], t["prompt"], t["prompt_mask"], t["queries"])
    assert maxdiff(masks_shared, t["pred_masks_shared"]) <= TOL


# ---------------------------------------------------------------- state-dict layout


def _official_tsv() -> dict[str, tuple[int, ...]]:
    rows = {}
    for line in manifest_lines():
        key, shape, _ = line.split("\t")
        rows[key] = tuple(ast.literal_eval(shape))
    return rows


@pytest.mark.parametrize("name", ["encoder", "decoder", "scoring", "seg"])
def test_tiny_keys_and_shapes_match_official(tr, seg_fx, name):
    meta = seg_fx["meta"] if name == "seg" else tr["meta"]
    official = meta["official_shapes"] if name == "seg" else meta["official_shapes"][name]
    ours = {k: list(v.shape) for k, v in build(name).state_dict().items()}
    assert ours == official


@pytest.mark.parametrize("name", ["encoder", "decoder", "scoring", "seg"])
def test_full_keys_and_shapes_match_manifest(name):
    rows = _official_tsv()
    expected = {k[len(PREFIX[name]) :]: s for k, s in rows.items() if k.startswith(PREFIX[name])}
    module = build(name, full_config(), device="meta")
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert ours == expected
    assert len(expected) == {"encoder": 108, "decoder": 175, "scoring": 10, "seg": 28}[name]


# ---------------------------------------------------------------- behaviour


@torch.no_grad()
def test_padded_prompt_tokens_are_ignored(tr):
    t = tr["tensors"]
    img, pos, prompt, mask = inputs(t, 2)
    noisy = prompt.clone()
    noisy[mask] = 1e3 * torch.randn(int(mask.sum()), prompt.shape[-1])
    enc, dec, sc = loaded("encoder"), loaded("decoder"), loaded("scoring")
    mem_a, mem_b = enc(img, pos, prompt, mask), enc(img, pos, noisy, mask)
    assert maxdiff(mem_a, mem_b) <= 1e-5
    assert maxdiff(dec(mem_a, pos, prompt, mask).hs, dec(mem_a, pos, noisy, mask).hs) <= 1e-5
    hs = t["hs_b2"]
    assert maxdiff(sc(hs, prompt, mask), sc(hs, noisy, mask)) <= 1e-5
    # ...while valid tokens matter
    changed = prompt.clone()
    changed[:, 32] += 1.0  # the CLS token, valid in every row
    assert maxdiff(enc(img, pos, prompt, mask), enc(img, pos, changed, mask)) > 1e-3


@torch.no_grad()
def test_presence_logit_is_not_clamped(tr):
    t = tr["tensors"]
    _, pos, prompt, mask = inputs(t, 1)
    dec = loaded("decoder")
    dec.presence_token_head.layers[2].bias.fill_(50.0)
    out = dec(t["memory_b1"], pos, prompt, mask)
    assert out.presence_logits.min().item() > 40.0


@torch.no_grad()
def test_scores_are_clamped(tr):
    t = tr["tensors"]
    _, _, prompt, mask = inputs(t, 2)
    sc = loaded("scoring")
    sc.hs_proj.weight.mul_(1e3)
    scores = sc(t["hs_b2"], prompt, mask)
    assert scores.abs().max().item() == pytest.approx(12.0)


@torch.no_grad()
def test_box_rpb_changes_image_attention(tr):
    """The box bias is live: zeroing its MLP output changes the decoder."""
    t = tr["tensors"]
    _, pos, prompt, mask = inputs(t, 1)
    dec = loaded("decoder")
    ref = dec(t["memory_b1"], pos, prompt, mask).hs
    for mlp in (dec.boxRPB_embed_x, dec.boxRPB_embed_y):
        mlp.layers[1].weight.zero_()
        mlp.layers[1].bias.zero_()
    assert maxdiff(dec(t["memory_b1"], pos, prompt, mask).hs, ref) > 1e-3


def test_box_rpb_layout():
    """Bias[b, head, q, i*w + j] = Y(rows)[q, i, head] + X(cols)[q, j, head] on coords i/h, j/w."""
    torch.manual_seed(0)
    dec = build("decoder")
    boxes = torch.tensor([[[0.5, 0.25, 0.2, 0.1]]])  # one query: x in [0.4, 0.6], y in [0.2, 0.3]
    with torch.no_grad():
        bias = dec.box_rpb(boxes, 4, 8)  # (1, heads, 1, 32)
        d_row2 = torch.tensor([2 / 4 - 0.2, 2 / 4 - 0.3]) * 8
        d_col5 = torch.tensor([5 / 8 - 0.4, 5 / 8 - 0.6]) * 8
        y = dec.boxRPB_embed_y(torch.sign(d_row2) * torch.log2(d_row2.abs() + 1) / 3)
        x = dec.boxRPB_embed_x(torch.sign(d_col5) * torch.log2(d_col5.abs() + 1) / 3)
    assert bias.shape == (1, dec.num_heads, 1, 32)
    assert torch.allclose(bias[0, :, 0, 2 * 8 + 5], y + x, atol=1e-6)
    # Rows for tokens without a box; written in place without autograd, padded with it.
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            padded = dec.box_rpb(boxes, 4, 8, pad_queries=2)
        assert padded.shape == (1, dec.num_heads, 3, 32)
        assert padded.requires_grad == grad
        assert torch.equal(padded[:, :, :2], torch.zeros(1, dec.num_heads, 2, 32))
        assert torch.equal(padded[:, :, 2:].detach(), bias)


def test_box_sine_embed_order_and_inverse_sigmoid():
    boxes = torch.tensor([[0.1, 0.7, 0.3, 0.9]])  # cx, cy, w, h
    emb = box_sine_embed(boxes, 8)  # 4 coords x 8 features
    assert emb.shape == (1, 32)
    # first feature of each block is sin(v * 2pi): order [cy, cx, w, h]
    first = emb[0, ::8]
    angles = torch.tensor([0.7, 0.1, 0.3, 0.9]) * 2 * torch.pi
    assert torch.allclose(first, torch.sin(angles), atol=1e-6)
    assert torch.allclose(emb[0, 1::8], torch.cos(angles), atol=1e-6)
    # inverse sigmoid: clamp to [0, 1], floor both sides at 1e-3
    x = torch.tensor([0.0, 0.5, 1.0, 2.0])
    lim = -math.log(1e-3)
    assert torch.allclose(inverse_sigmoid(x), torch.tensor([-lim, 0.0, lim, lim]), atol=1e-5)


@torch.no_grad()
def test_pixel_decoder_uses_two_of_three_stages(seg_fx):
    t = seg_fx["tensors"]
    head = loaded("seg")
    h, w = seg_fx["meta"]["grid_hw"]
    fpn = [t["fpn0"], t["fpn1"], torch.zeros(2, t["fpn0"].shape[1], h, w)]
    args = (fpn, t["memory"], t["prompt"], t["prompt_mask"], t["queries"])
    ref, _ = head(*args)
    head.pixel_decoder.conv_layers[2].weight.normal_()
    head.pixel_decoder.norms[2].bias.fill_(3.0)
    assert torch.equal(head(*args)[0], ref)
    head.pixel_decoder.conv_layers[1].bias.add_(1.0)
    assert not torch.equal(head(*args)[0], ref)


def test_invalid_inputs_raise(tr):
    t = tr["tensors"]
    img, pos, prompt, mask = inputs(t, 2)
    enc, dec = build("encoder"), build("decoder")
    with pytest.raises(InvalidInputError, match="prompt_mask"):
        enc(img, pos, prompt, mask.float())
    with pytest.raises(InvalidInputError, match="prompt"):
        enc(img, pos, prompt[:1], mask[:1])
    with pytest.raises(InvalidInputError, match="memory"):
        dec(img[:, :-1], pos[:, :-1], prompt, mask)
    seg = build("seg")
    with pytest.raises(InvalidInputError, match="backbone_fpn"):
        seg([img], img, prompt, mask, img[:, :4])


@pytest.mark.slow
@torch.no_grad()
def test_full_size_decoder_scoring_and_masks_run():
    """Full sizes with synthetic weights: shapes, finiteness and float32 boxes (no reference)."""
    cfg = full_config()
    mods = {}
    for name in ("decoder", "scoring", "seg"):
        mods[name] = build(name, cfg)
        mods[name].load_state_dict(synthetic_state_dict(mods[name], prefix=PREFIX[name]))
        mods[name].eval()
    g, c, q = cfg.feat_size, cfg.d_model, cfg.detector.num_queries
    gen = torch.Generator().manual_seed(0)
    memory = torch.randn(1, g * g, c, generator=gen)
    pos = torch.randn(1, g * g, c, generator=gen)
    prompt = torch.randn(1, 33, c, generator=gen)
    mask = torch.ones(1, 33, dtype=torch.bool)
    mask[:, :4] = False
    mask[:, 32] = False
    out = mods["decoder"](memory, pos, prompt, mask)
    assert out.hs.shape == (cfg.detector.decoder_layers, 1, q, c)
    assert out.pred_boxes.shape == (1, q, 4) and out.pred_boxes.dtype == torch.float32
    scores = mods["scoring"](out.hs, prompt, mask)
    assert scores.shape == (cfg.detector.decoder_layers, 1, q, 1)
    fpn = [torch.randn(1, c, s * g, s * g, generator=gen) for s in (4, 2)]
    fpn.append(memory.new_zeros(1, c, g, g))
    masks, sem = mods["seg"](fpn, memory, prompt, mask, out.hs[-1], semantic=False)
    assert masks.shape == (1, q, 4 * g, 4 * g) and sem is None
    assert all(torch.isfinite(t).all() for t in (out.hs, out.pred_boxes, scores, masks))
