"""Parity fixtures for the tracker's neural modules, from the OFFICIAL sam3 classes at tiny sizes.

Run from the repository root with the reference venv::

    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_tracker_modules.py

The modules are children of ``official_builders.build_official_tracker`` (the official tracker
as ``build_tracker`` wires it, at the tiny sizes); variants (another mask-prompt width, two
memory-attention heads) come from a modified config.

Writes ``tests/fixtures/tracker_modules_{prompt_encoder,mask_decoder,memory_encoder,
memory_attention}.pt``: seeded inputs, official outputs (float32, autocast off, eval mode) and
the official state-dict key -> shape list of every module built here.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from _common import load_synthetic, save_fixture
from official_builders import build_official_tracker

from sam3video.model.config import Sam3VideoConfig, tiny_config

CFG = tiny_config()
T = CFG.tracker
C = CFG.d_model  # 32
FEAT = CFG.feat_size  # 16
IMG = CFG.image_size  # 224
MASK_IN = CFG.input_mask_size  # 256


def keys_of(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def official_part(path: str, cfg: Sam3VideoConfig = CFG) -> torch.nn.Module:
    """The official tracker's child at ``path`` (its state-dict prefix), synthetic weights."""
    module = build_official_tracker(cfg).get_submodule(path)
    load_synthetic(module, f"tracker.{path}.")
    return module.eval()


def build_prompt_encoder(mask_in_chans: int) -> torch.nn.Module:
    cfg = CFG.replace(tracker=replace(T, mask_in_chans=mask_in_chans))
    return official_part("sam_prompt_encoder", cfg)


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
    md = official_part("sam_mask_decoder")
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
    enc = official_part("maskmem_backbone")

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


def build_memory_attention(num_heads: int) -> torch.nn.Module:
    cfg = CFG.replace(tracker=replace(T, memory_attention_heads=num_heads))
    return official_part("transformer.encoder", cfg)


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
