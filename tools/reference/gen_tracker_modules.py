"""Parity fixtures for the tracker's neural modules, from the OFFICIAL sam3 classes at tiny sizes.

Run from the repository root with the reference venv::

    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_tracker_modules.py

Writes ``tests/fixtures/tracker_modules_{prompt_encoder,mask_decoder,memory_encoder,
memory_attention}.pt``: seeded inputs, official outputs (float32, autocast off, eval mode) and
the official state-dict key -> shape list of every module built here.
"""

from __future__ import annotations

import torch
from _common import load_synthetic, save_fixture
from sam3.model.decoder import TransformerDecoderLayerv2, TransformerEncoderCrossAttention
from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
from sam3.model.position_encoding import PositionEmbeddingSine
from sam3.sam.mask_decoder import MaskDecoder
from sam3.sam.prompt_encoder import PromptEncoder
from sam3.sam.transformer import RoPEAttention, TwoWayTransformer

from sam3video.model.config import tiny_config

CFG = tiny_config()
T = CFG.tracker
C = CFG.d_model  # 32
FEAT = CFG.feat_size  # 16
IMG = CFG.image_size  # 224
MASK_IN = CFG.input_mask_size  # 256


def keys_of(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def build_prompt_encoder(mask_in_chans: int) -> PromptEncoder:
    pe = PromptEncoder(
        embed_dim=C,
        image_embedding_size=(FEAT, FEAT),
        input_image_size=(IMG, IMG),
        mask_in_chans=mask_in_chans,
    ).eval()
    load_synthetic(pe, "tracker.sam_prompt_encoder.")
    return pe


def gen_prompt_encoder() -> None:
    g = torch.Generator().manual_seed(1)
    pe = build_prompt_encoder(T.mask_in_chans)
    pe16 = build_prompt_encoder(16)  # official width: the tiny width 4 gives a 1-channel LN
    t: dict[str, torch.Tensor] = {"dense_pe": pe.get_dense_pe()}

    # Clicks of every label, incl. -1 padding and box corners given as points (2/3); int32 as
    # the tracker passes them. Coordinates include the frame's edges.
    coords = torch.rand(3, 6, 2, generator=g) * IMG
    coords[0, 0] = torch.tensor([0.0, 0.0])
    coords[1, 1] = torch.tensor([IMG - 1.0, IMG - 1.0])
    labels = torch.tensor(
        [[1, 0, -1, 2, 3, 1], [2, 3, 1, 0, 0, -1], [0, -1, -1, 1, 1, 1]], dtype=torch.int32
    )
    sparse, dense = pe((coords, labels), None, None)
    t |= {"pts_coords": coords, "pts_labels": labels, "pts_sparse": sparse, "pts_dense": dense}

    # Boxes given through the boxes argument (no padding token then), with and without points.
    boxes = torch.tensor([[10.0, 20.0, 150.5, 200.0], [0.0, 0.0, 223.0, 223.0]])
    bcoords = torch.rand(2, 2, 2, generator=g) * IMG
    blabels = torch.tensor([[1, 0], [0, 1]], dtype=torch.int32)
    sparse, _ = pe((bcoords, blabels), boxes, None)
    sparse_only, _ = pe(None, boxes, None)
    t |= {
        "box_boxes": boxes,
        "box_coords": bcoords,
        "box_labels": blabels,
        "box_sparse": sparse,
        "boxonly_sparse": sparse_only,
    }

    # Mask prompt (logits at 4x the embedding grid) with the tracker's dummy point.
    masks = torch.randn(2, 1, 4 * FEAT, 4 * FEAT, generator=g) * 5.0
    dummy = torch.zeros(2, 1, 2)
    dlabels = -torch.ones(2, 1, dtype=torch.int32)
    sparse, dense = pe((dummy, dlabels), None, masks)
    _, dense16 = pe16((dummy, dlabels), None, masks)
    t |= {
        "mask_masks": masks,
        "mask_coords": dummy,
        "mask_labels": dlabels,
        "mask_sparse": sparse,
        "mask_dense": dense,
        "mask16_dense": dense16,
    }
    save_fixture(
        "tracker_modules_prompt_encoder",
        t,
        {"official_keys": keys_of(pe), "official_keys_mask16": keys_of(pe16)},
    )


def gen_mask_decoder() -> None:
    g = torch.Generator().manual_seed(2)
    md = MaskDecoder(
        num_multimask_outputs=T.num_multimask_outputs,
        transformer=TwoWayTransformer(
            depth=T.decoder_depth,
            embedding_dim=C,
            mlp_dim=T.decoder_mlp_dim,
            num_heads=T.decoder_heads,
        ),
        transformer_dim=C,
        iou_head_depth=T.iou_head_depth,
        iou_head_hidden_dim=C,  # 256 = d_model in the full model
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
        dynamic_multimask_via_stability=True,
        dynamic_multimask_stability_delta=T.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=T.dynamic_multimask_stability_thresh,
    ).eval()
    load_synthetic(md, "tracker.sam_mask_decoder.")
    pe = build_prompt_encoder(T.mask_in_chans)

    b = 3
    image = torch.randn(b, C, FEAT, FEAT, generator=g)
    coords = torch.rand(b, 2, 2, generator=g) * IMG
    labels = torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.int32)
    sparse, dense = pe((coords, labels), None, None)
    dense = dense.contiguous()
    image_pe = pe.get_dense_pe()
    feat_s0 = torch.randn(b, C // 8, 4 * FEAT, 4 * FEAT, generator=g)
    feat_s1 = torch.randn(b, C // 4, 2 * FEAT, 2 * FEAT, generator=g)
    # A positive offset on object 1's finest skip makes its single-mask logits large, hence
    # stable (kept); objects 0 and 2 stay unstable (fall back to the best multimask output).
    feat_s0[1] += 3.0
    high_res = [feat_s0, feat_s1]

    all_masks, all_iou, all_tokens, _ = md.predict_masks(
        image, image_pe, sparse, dense, False, high_res
    )
    stability = md._get_stability_scores(all_masks[:, 0:1]).flatten()
    stable = (stability >= md.dynamic_multimask_stability_thresh).tolist()
    assert stable == [False, True, False], stability

    out = {}
    for name, multi in (("multi", True), ("single", False)):
        masks, iou, tokens, obj = md(
            image_embeddings=image,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multi,
            repeat_image=False,
            high_res_features=high_res,
        )
        out |= {f"{name}_masks": masks, f"{name}_iou": iou, f"{name}_tokens": tokens}
        out["obj_score_logits"] = obj
    t = {
        "image": image,
        "image_pe": image_pe,
        "sparse": sparse,
        "dense": dense,
        "feat_s0": feat_s0,
        "feat_s1": feat_s1,
        "all_iou": all_iou,
        "all_tokens": all_tokens,
        "stability": stability,
        **out,
    }
    save_fixture(
        "tracker_modules_mask_decoder",
        t,
        {"official_keys": keys_of(md), "stable": stable, "iou_head_hidden_dim": C},
    )


def gen_memory_encoder() -> None:
    g = torch.Generator().manual_seed(3)
    enc = SimpleMaskEncoder(
        out_dim=T.mem_dim,
        mask_downsampler=SimpleMaskDownSampler(
            embed_dim=C, kernel_size=3, stride=2, padding=1, interpol_size=[MASK_IN, MASK_IN]
        ),
        fuser=SimpleFuser(
            layer=CXBlock(dim=C, kernel_size=7, padding=3, layer_scale_init_value=1e-6),
            num_layers=T.fuser_layers,
        ),
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=T.mem_dim, normalize=True, scale=None, temperature=10000
        ),
        in_dim=C,
    ).eval()
    load_synthetic(enc, "tracker.maskmem_backbone.")

    # Case A: binarised masks at the image size (resized to MASK_IN inside), as after clicks.
    pix_a = torch.randn(2, C, FEAT, FEAT, generator=g)
    bin_a = torch.zeros(2, 1, IMG, IMG, dtype=torch.bool)
    bin_a[0, :, 40:150, 60:200] = True
    bin_a[1, :, 100:224, 0:90] = True
    bin_a[1, :, 10:30, 150:170] = True
    out_a = enc(pix_a, bin_a.float() * 20.0 - 10.0, skip_mask_sigmoid=True)

    # Case B: soft (sigmoid) masks already at MASK_IN (no resize).
    pix_b = torch.randn(1, C, FEAT, FEAT, generator=g)
    soft_b = torch.sigmoid(torch.randn(1, 1, MASK_IN, MASK_IN, generator=g) * 3.0) * 20.0 - 10.0
    out_b = enc(pix_b, soft_b, skip_mask_sigmoid=True)

    t = {
        "a_pix": pix_a,
        "a_mask_bool": bin_a,
        "a_features": out_a["vision_features"],
        "a_pos": out_a["vision_pos_enc"][0],
        "b_pix": pix_b,
        "b_masks": soft_b,
        "b_features": out_b["vision_features"],
        "b_pos": out_b["vision_pos_enc"][0],
    }
    save_fixture("tracker_modules_memory_encoder", t, {"official_keys": keys_of(enc)})


def build_memory_attention(num_heads: int) -> TransformerEncoderCrossAttention:
    def rope(**kw):
        return RoPEAttention(
            embedding_dim=C,
            num_heads=num_heads,
            downsample_rate=1,
            dropout=0.1,
            rope_theta=T.rope_theta,
            feat_sizes=[FEAT, FEAT],
            use_fa3=False,
            use_rope_real=False,
            **kw,
        )

    layer = TransformerDecoderLayerv2(
        cross_attention_first=False,
        activation="relu",
        dim_feedforward=T.memory_attention_ffn_dim,
        dropout=0.1,
        pos_enc_at_attn=False,
        pre_norm=True,
        self_attention=rope(),
        d_model=C,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        cross_attention=rope(kv_in_dim=T.mem_dim, rope_k_repeat=True),
    )
    enc = TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[],
        batch_first=True,
        d_model=C,
        frozen=False,
        pos_enc_at_input=True,
        layer=layer,
        num_layers=T.memory_attention_layers,
        use_act_checkpoint=False,
    ).eval()
    load_synthetic(enc, "tracker.transformer.encoder.")
    return enc


def run_memory_attention(enc, src, src_pos, memory, memory_pos, n_ptr) -> torch.Tensor:
    """Batch-first in and out; the official module takes sequence-first tensors."""
    out = enc(
        src=src.transpose(0, 1),
        prompt=memory.transpose(0, 1),
        src_pos=src_pos.transpose(0, 1),
        prompt_pos=memory_pos.transpose(0, 1),
        num_obj_ptr_tokens=n_ptr,
    )
    return out["memory"].transpose(0, 1)


def gen_memory_attention() -> None:
    g = torch.Generator().manual_seed(4)
    enc = build_memory_attention(T.memory_attention_heads)
    hw = FEAT * FEAT
    b, frames, n_ptr = 2, 2, 4
    src = torch.randn(b, hw, C, generator=g)
    src_pos = torch.randn(b, hw, C, generator=g)
    memory = torch.randn(b, frames * hw + n_ptr, T.mem_dim, generator=g)
    memory_pos = torch.randn(b, frames * hw + n_ptr, T.mem_dim, generator=g)
    out = run_memory_attention(enc, src, src_pos, memory, memory_pos, n_ptr)
    # One memory frame and no pointers (keys exactly as long as the queries).
    out_1f = run_memory_attention(enc, src, src_pos, memory[:, :hw], memory_pos[:, :hw], 0)
    # Two heads (RoPE per head of width C/2), same weights: the official class allows it.
    enc2 = build_memory_attention(2)
    out_2h = run_memory_attention(enc2, src, src_pos, memory, memory_pos, n_ptr)
    t = {
        "src": src,
        "src_pos": src_pos,
        "memory": memory,
        "memory_pos": memory_pos,
        "out": out,
        "out_one_frame": out_1f,
        "out_two_heads": out_2h,
    }
    save_fixture(
        "tracker_modules_memory_attention", t, {"official_keys": keys_of(enc), "num_ptr": n_ptr}
    )


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    gen_prompt_encoder()
    gen_mask_decoder()
    gen_memory_encoder()
    gen_memory_attention()
