"""Parity of the tracker's neural modules with the official sam3 classes (tiny sizes, fp32).

Fixtures come from ``tools/reference/gen_tracker_modules.py``. Every module is built at the
tiny sizes, filled with `synthetic_state_dict` under its official prefix (strict load) and run
on the fixture's inputs. Tolerance: max abs diff <= 1e-4 (float32).
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from _manifest import manifest_lines

from sam3video.errors import InvalidInputError
from sam3video.model.config import full_config, tiny_config
from sam3video.model.mask_decoder import MaskDecoder, stability_scores
from sam3video.model.memory_attention import MemoryAttention
from sam3video.model.memory_encoder import MemoryEncoder
from sam3video.model.prompt_encoder import PromptEncoder
from sam3video.model.two_way_transformer import TwoWayTransformer
from sam3video.model.weights import synthetic_state_dict

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ATOL = 1e-4

PREFIX_PROMPT = "tracker.sam_prompt_encoder."
PREFIX_DECODER = "tracker.sam_mask_decoder."
PREFIX_MEMENC = "tracker.maskmem_backbone."
PREFIX_MEMATT = "tracker.transformer.encoder."


def load(name: str) -> tuple[dict, dict]:
    data = torch.load(FIXTURES / f"tracker_modules_{name}.pt", weights_only=True)
    return data["tensors"], data["meta"]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def filled(module: torch.nn.Module, prefix: str) -> torch.nn.Module:
    module.load_state_dict(synthetic_state_dict(module, prefix=prefix), strict=True)
    return module.eval()


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@lru_cache(maxsize=1)
def manifest() -> dict[str, list[int]]:
    out = {}
    for line in manifest_lines():
        parts = line.split("\t")
        if len(parts) >= 2:
            out[parts[0]] = list(ast.literal_eval(parts[1]))
    return out


def manifest_under(prefix: str) -> dict[str, list[int]]:
    return {k[len(prefix) :]: v for k, v in manifest().items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# Builders (explicit sizes from the config presets)


def prompt_encoder(cfg=None, mask_in_chans: int | None = None) -> PromptEncoder:
    cfg = cfg or tiny_config()
    f = cfg.feat_size
    return PromptEncoder(
        embed_dim=cfg.d_model,
        image_embedding_size=(f, f),
        input_image_size=(cfg.image_size, cfg.image_size),
        mask_in_chans=mask_in_chans or cfg.tracker.mask_in_chans,
    )


def mask_decoder(cfg=None) -> MaskDecoder:
    cfg = cfg or tiny_config()
    t = cfg.tracker
    transformer = TwoWayTransformer(
        depth=t.decoder_depth,
        embedding_dim=cfg.d_model,
        num_heads=t.decoder_heads,
        mlp_dim=t.decoder_mlp_dim,
        attention_downsample_rate=t.attention_downsample_rate,
    )
    return MaskDecoder(
        transformer_dim=cfg.d_model,
        transformer=transformer,
        num_multimask_outputs=t.num_multimask_outputs,
        iou_head_depth=t.iou_head_depth,
        iou_head_hidden_dim=cfg.d_model,
        dynamic_multimask_stability_delta=t.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=t.dynamic_multimask_stability_thresh,
    )


def memory_encoder(cfg=None) -> MemoryEncoder:
    cfg = cfg or tiny_config()
    return MemoryEncoder(
        out_dim=cfg.tracker.mem_dim,
        in_dim=cfg.d_model,
        mask_size=cfg.input_mask_size,
        fuser_layers=cfg.tracker.fuser_layers,
    )


def memory_attention(cfg=None, num_heads: int | None = None) -> MemoryAttention:
    cfg = cfg or tiny_config()
    t = cfg.tracker
    return MemoryAttention(
        d_model=cfg.d_model,
        kv_in_dim=t.mem_dim,
        num_layers=t.memory_attention_layers,
        num_heads=num_heads or t.memory_attention_heads,
        ffn_dim=t.memory_attention_ffn_dim,
        feat_size=cfg.feat_size,
        rope_theta=t.rope_theta,
    )


# ---------------------------------------------------------------------------------------------
# Prompt encoder


@torch.no_grad()
def test_prompt_encoder_parity():
    t, _ = load("prompt_encoder")
    pe = filled(prompt_encoder(), PREFIX_PROMPT)
    assert max_diff(pe.get_dense_pe(), t["dense_pe"]) <= ATOL

    sparse, dense = pe((t["pts_coords"], t["pts_labels"]))
    assert sparse.shape == (3, 7, 32)  # 6 points + the padding token
    assert max_diff(sparse, t["pts_sparse"]) <= ATOL
    assert max_diff(dense, t["pts_dense"]) <= ATOL

    sparse, _ = pe((t["box_coords"], t["box_labels"]), boxes=t["box_boxes"])
    assert sparse.shape == (2, 4, 32)  # no padding token when a box is given
    assert max_diff(sparse, t["box_sparse"]) <= ATOL
    sparse, _ = pe(None, boxes=t["box_boxes"])
    assert max_diff(sparse, t["boxonly_sparse"]) <= ATOL

    sparse, dense = pe((t["mask_coords"], t["mask_labels"]), masks=t["mask_masks"])
    assert max_diff(sparse, t["mask_sparse"]) <= ATOL
    assert max_diff(dense, t["mask_dense"]) <= ATOL

    pe16 = filled(prompt_encoder(mask_in_chans=16), PREFIX_PROMPT)
    _, dense16 = pe16((t["mask_coords"], t["mask_labels"]), masks=t["mask_masks"])
    assert max_diff(dense16, t["mask16_dense"]) <= ATOL
    assert dense16.std(dim=(2, 3)).min() > 1e-3  # the mask actually shapes the map


@torch.no_grad()
def test_prompt_encoder_labels():
    pe = filled(prompt_encoder(), PREFIX_PROMPT)
    coords = torch.tensor([[[10.0, 20.0], [100.0, 50.0], [100.0, 50.0], [3.0, 4.0]]])
    labels = torch.tensor([[-1, 0, 1, 7]], dtype=torch.int32)
    sparse, _ = pe((coords, labels))
    not_a_point = pe.not_a_point_embed.weight[0]
    # -1 ignores the position; the appended padding token is also "not a point".
    assert torch.equal(sparse[0, 0], not_a_point) and torch.equal(sparse[0, 4], not_a_point)
    diff = sparse[0, 2] - sparse[0, 1]
    expected = pe.point_embeddings[1].weight[0] - pe.point_embeddings[0].weight[0]
    assert torch.allclose(diff, expected, atol=1e-6)
    # Unknown labels keep the bare positional encoding (official behaviour).
    bare = pe.pe_layer.forward_with_coords(coords[:, 3:] + 0.5, pe.input_image_size)
    assert torch.allclose(sparse[0, 3], bare[0, 0], atol=1e-6)


def test_prompt_encoder_errors():
    pe = prompt_encoder()
    with pytest.raises(InvalidInputError, match="points"):
        pe((torch.zeros(1, 3, 2), torch.zeros(1, 2, dtype=torch.int32)))
    with pytest.raises(InvalidInputError, match="masks"):
        pe(None, masks=torch.zeros(1, 1, 32, 32))


# ---------------------------------------------------------------------------------------------
# Mask decoder


def decoder_inputs(t: dict) -> dict:
    return dict(
        image_embeddings=t["image"],
        image_pe=t["image_pe"],
        sparse_prompt_embeddings=t["sparse"],
        dense_prompt_embeddings=t["dense"],
        high_res_features=[t["feat_s0"], t["feat_s1"]],
    )


@torch.no_grad()
def test_mask_decoder_parity():
    t, meta = load("mask_decoder")
    md = filled(mask_decoder(), PREFIX_DECODER)
    inputs = decoder_inputs(t)

    _, all_iou, all_tokens, _ = md.predict_masks(**inputs)
    assert max_diff(all_iou, t["all_iou"]) <= ATOL
    assert max_diff(all_tokens, t["all_tokens"]) <= ATOL

    for name, multi in (("multi", True), ("single", False)):
        masks, iou, tokens, obj = md(**inputs, multimask_output=multi)
        m = 3 if multi else 1
        assert masks.shape == (3, m, 64, 64) and iou.shape == (3, m) and tokens.shape[1] == m
        assert max_diff(masks, t[f"{name}_masks"]) <= ATOL
        assert max_diff(iou, t[f"{name}_iou"]) <= ATOL
        assert max_diff(tokens, t[f"{name}_tokens"]) <= ATOL
        assert max_diff(obj, t["obj_score_logits"]) <= ATOL


@torch.no_grad()
def test_mask_decoder_dynamic_stability_fallback():
    t, meta = load("mask_decoder")
    md = filled(mask_decoder(), PREFIX_DECODER)
    inputs = decoder_inputs(t)
    all_masks, all_iou, all_tokens, _ = md.predict_masks(**inputs)
    scores = stability_scores(all_masks[:, 0], md.dynamic_multimask_stability_delta)
    assert max_diff(scores, t["stability"]) <= 1e-3
    stable = (scores >= md.dynamic_multimask_stability_thresh).tolist()
    assert stable == meta["stable"] == [False, True, False]

    masks, iou, tokens, _ = md(**inputs, multimask_output=False)
    best = all_iou[:, 1:].argmax(-1) + 1
    for i, keep in enumerate(stable):
        j = 0 if keep else best[i].item()
        assert torch.equal(masks[i, 0], all_masks[i, j])
        assert torch.equal(iou[i, 0], all_iou[i, j])
    # The pointer token stays mask token 0 even where the mask fell back.
    assert torch.equal(tokens[:, 0], all_tokens[:, 0])

    # Training mode: no fallback, always token 0's mask.
    md.train()
    masks, _, _, _ = md(**inputs, multimask_output=False)
    assert torch.equal(masks[:, 0], all_masks[:, 0])


def test_stability_scores_edge_cases():
    logits = torch.full((2, 4, 4), -5.0)
    logits[1, :2] = 1.0
    logits[1, 2, 0] = 0.0  # within +-delta: counted in the union only
    scores = stability_scores(logits, 0.05)
    assert scores[0].item() == 1.0  # empty union -> 1.0
    assert scores[1].item() == pytest.approx(8 / 9)


def test_mask_decoder_errors():
    md = mask_decoder()
    c, f = 32, 16
    with pytest.raises(InvalidInputError, match="batch size"):
        md(
            torch.zeros(2, c, f, f),
            torch.zeros(1, c, f, f),
            torch.zeros(3, 2, c),
            torch.zeros(3, c, f, f),
            True,
            [torch.zeros(3, 4, 64, 64), torch.zeros(3, 8, 32, 32)],
        )
    with pytest.raises(InvalidInputError, match="high_res_features"):
        md(
            torch.zeros(3, c, f, f),
            torch.zeros(1, c, f, f),
            torch.zeros(3, 2, c),
            torch.zeros(3, c, f, f),
            True,
            None,
        )


# ---------------------------------------------------------------------------------------------
# Memory encoder


@torch.no_grad()
def test_memory_encoder_parity():
    t, _ = load("memory_encoder")
    enc = filled(memory_encoder(), PREFIX_MEMENC)
    masks_a = t["a_mask_bool"].float() * 20.0 - 10.0  # binarised, scaled (224 -> resized)
    feats, pos = enc(t["a_pix"], masks_a)
    assert feats.shape == pos.shape == (2, 16, 16, 16)
    assert max_diff(feats, t["a_features"]) <= ATOL
    assert max_diff(pos, t["a_pos"]) <= ATOL
    feats, pos = enc(t["b_pix"], t["b_masks"])  # soft, already at 256
    assert max_diff(feats, t["b_features"]) <= ATOL
    assert max_diff(pos, t["b_pos"]) <= ATOL


def test_memory_encoder_errors():
    enc = memory_encoder()
    with pytest.raises(InvalidInputError, match="masks"):
        enc(torch.zeros(2, 32, 16, 16), torch.zeros(1, 1, 256, 256))


# ---------------------------------------------------------------------------------------------
# Memory attention


@torch.no_grad()
def test_memory_attention_parity():
    t, meta = load("memory_attention")
    att = filled(memory_attention(), PREFIX_MEMATT)
    n_ptr = meta["num_ptr"]
    out = att(t["src"], t["src_pos"], t["memory"], t["memory_pos"], num_obj_ptr_tokens=n_ptr)
    assert out.shape == (2, 256, 32)
    assert max_diff(out, t["out"]) <= ATOL

    hw = 256
    out = att(t["src"], t["src_pos"], t["memory"][:, :hw], t["memory_pos"][:, :hw], 0)
    assert max_diff(out, t["out_one_frame"]) <= ATOL

    att2 = filled(memory_attention(num_heads=2), PREFIX_MEMATT)
    out = att2(t["src"], t["src_pos"], t["memory"], t["memory_pos"], num_obj_ptr_tokens=n_ptr)
    assert max_diff(out, t["out_two_heads"]) <= ATOL


@torch.no_grad()
def test_memory_attention_pointer_tokens_not_rotated():
    # Pointer tokens carry no position: swapping two of them must not change the output,
    # while swapping two spatial memory tokens must.
    t, meta = load("memory_attention")
    att = filled(memory_attention(), PREFIX_MEMATT)
    mem, pos = t["memory"], t["memory_pos"]
    base = att(t["src"], t["src_pos"], mem, pos, num_obj_ptr_tokens=4)
    L = mem.shape[1]
    perm = list(range(L))
    perm[L - 1], perm[L - 2] = perm[L - 2], perm[L - 1]
    swapped = att(t["src"], t["src_pos"], mem[:, perm], pos[:, perm], num_obj_ptr_tokens=4)
    assert max_diff(base, swapped) <= 1e-5
    perm = list(range(L))
    perm[0], perm[5] = perm[5], perm[0]
    swapped = att(t["src"], t["src_pos"], mem[:, perm], pos[:, perm], num_obj_ptr_tokens=4)
    assert max_diff(base, swapped) > 1e-4


def test_memory_attention_errors():
    att = memory_attention()
    src = torch.zeros(1, 256, 32)
    mem = torch.zeros(1, 256 + 4, 16)
    with pytest.raises(InvalidInputError, match="num_obj_ptr_tokens"):
        att(src, src, mem, mem, num_obj_ptr_tokens=3)
    with pytest.raises(InvalidInputError, match="memory"):
        att(src, src, mem, mem[:, :-1], num_obj_ptr_tokens=4)


# ---------------------------------------------------------------------------------------------
# State-dict keys and shapes


def test_state_dict_matches_official_tiny():
    for name, module in (
        ("prompt_encoder", prompt_encoder()),
        ("mask_decoder", mask_decoder()),
        ("memory_encoder", memory_encoder()),
        ("memory_attention", memory_attention()),
    ):
        _, meta = load(name)
        assert shapes(module) == meta["official_keys"], name
    _, meta = load("prompt_encoder")
    assert shapes(prompt_encoder(mask_in_chans=16)) == meta["official_keys_mask16"]


def test_state_dict_matches_manifest_full():
    cfg = full_config()
    with torch.device("meta"):
        modules = {
            PREFIX_PROMPT: prompt_encoder(cfg),
            PREFIX_DECODER: mask_decoder(cfg),
            PREFIX_MEMENC: memory_encoder(cfg),
            PREFIX_MEMATT: memory_attention(cfg),
        }
    for prefix, module in modules.items():
        expected = manifest_under(prefix)
        if prefix == PREFIX_PROMPT:
            assert expected  # sanity: the manifest has rows for the tracker
        # The official decoder's transformer lives under the decoder prefix too.
        assert shapes(module) == expected, prefix


def test_memory_attention_runs_a_shared_frame_once():
    """Objects of one frame (features expanded over the batch) share the first
    self-attention; the result equals that of materialised, independent rows."""
    torch.manual_seed(0)
    attn = MemoryAttention(d_model=32, kv_in_dim=16, num_layers=2, num_heads=1, ffn_dim=64,
                           feat_size=4).eval()
    src, pos = torch.randn(1, 16, 32), torch.randn(1, 16, 32)
    memory, memory_pos = torch.randn(3, 2 * 16 + 4, 16), torch.randn(3, 2 * 16 + 4, 16)
    seen = []
    attn.layers[0].self_attn.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[0]))
    with torch.inference_mode():
        shared = attn(src.expand(3, -1, -1), pos.expand(3, -1, -1), memory, memory_pos, 4)
        rows = attn(src.repeat(3, 1, 1), pos.repeat(3, 1, 1), memory, memory_pos, 4)
    assert seen == [1, 3]
    assert shared.shape == rows.shape == (3, 16, 32)
    torch.testing.assert_close(shared, rows, atol=1e-5, rtol=0)
    assert (shared[0] - shared[1]).abs().max() > 1e-3  # the memories do differ per object


def test_blocked_attention_equals_softmax_attention():
    """Several query blocks (the last one short), heads, values narrower than the keys."""
    from sam3video.model.memory_attention import blocked_attention

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 17, 8), torch.randn(2, 3, 11, 8), torch.randn(2, 3, 11, 4)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1) @ v
    for rows in (5, 17, 64):
        torch.testing.assert_close(blocked_attention(q, k, v, block_rows=rows), expected)
