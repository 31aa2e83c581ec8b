"""Fixtures for the detector heads: fusion encoder, decoder, dot-product scoring, segmentation head.

Run from the repository root with the reference venv::

    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_heads.py

Builds the OFFICIAL classes at the tiny sizes of ``tiny_config()`` with ``official_builders``
(the full-size arguments are in ``sam3/model_builder.py``), fills them with the synthetic
weights under their official prefixes, and calls them the way ``Sam3Image._run_encoder /
_run_decoder / _update_scores_and_boxes / _run_segmentation_heads`` do (sequence-first, eval,
float32, no autocast). Inputs are seeded and stored (batch-first) beside the outputs.

Writes ``tests/fixtures/heads_transformer.pt`` (encoder -> decoder -> scoring chain, B=2 and B=1)
and ``tests/fixtures/heads_segmentation.pt`` (segmentation head on a 6x8 grid, one image per
prompt and one image shared by two prompts).
"""

from __future__ import annotations

import official_builders as ob
import torch
from _common import load_synthetic, save_fixture
from sam3.model.model_misc import inverse_sigmoid
from sam3.model.position_encoding import PositionEmbeddingSine

from sam3video.model.config import tiny_config

CFG = tiny_config()
DET = CFG.detector
D = DET.d_model
GRID = CFG.feat_size  # 16
PREFIX = {
    "encoder": "detector.transformer.encoder.",
    "decoder": "detector.transformer.decoder.",
    "scoring": "detector.dot_prod_scoring.",
    "seg": "detector.segmentation_head.",
}


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def text_like_prompt(gen: torch.Generator, valid_text: list[int]) -> tuple[torch.Tensor, ...]:
    """Batch-first prompt of 32 text tokens (first k valid) + 1 valid CLS token, as for text-only
    queries: padding sits in the middle of the sequence."""
    b = len(valid_text)
    prompt = torch.randn(b, 33, D, generator=gen)
    mask = torch.ones(b, 33, dtype=torch.bool)
    for i, k in enumerate(valid_text):
        mask[i, :k] = False
    mask[:, 32] = False
    return prompt, mask


@torch.no_grad()
def run_transformer(enc, dec, scoring, img, pos, prompt, mask) -> dict[str, torch.Tensor]:
    """Official call sequence of Sam3Image for the encoder, decoder and scores (batch-first io)."""
    b = img.shape[0]
    prompt_sf = prompt.transpose(0, 1)  # seq-first, as Sam3Image builds it
    out = enc(
        src=[img.transpose(0, 1).contiguous()],
        src_key_padding_mask=None,
        src_pos=[pos.transpose(0, 1).contiguous()],
        prompt=prompt_sf,
        prompt_pos=torch.zeros_like(prompt_sf),
        prompt_key_padding_mask=mask,
        feat_sizes=[(GRID, GRID)],
    )
    memory = out["memory"]  # (HW, B, C)
    tgt = dec.query_embed.weight.unsqueeze(1).repeat(1, b, 1)
    hs, refs, presence, _ = dec(
        tgt=tgt,
        memory=memory,
        memory_key_padding_mask=out["padding_mask"],
        pos=out["pos_embed"],
        reference_boxes=None,
        level_start_index=out["level_start_index"],
        spatial_shapes=out["spatial_shapes"],
        valid_ratios=out["valid_ratios"],
        tgt_mask=None,
        memory_text=prompt_sf,
        text_attention_mask=mask,
        apply_dac=False,
    )
    hs = hs.transpose(1, 2)  # (L, B, Q, C)
    refs = refs.transpose(1, 2)  # (L, B, Q, 4)
    presence = presence.transpose(1, 2)  # (L, B, 1)
    logits = scoring(hs, prompt_sf, mask)  # (L, B, Q, 1)
    boxes = (inverse_sigmoid(refs) + dec.bbox_embed(hs)).sigmoid()
    return {
        "memory": memory.transpose(0, 1),
        "hs": hs,
        "ref_boxes": refs,
        "presence_logits": presence,
        "pred_boxes": boxes[-1],
        "scores": logits,
    }


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    transformer = ob.build_official_transformer(CFG)
    enc, dec = transformer.encoder, transformer.decoder
    scoring = ob.build_official_dot_prod_scoring(CFG)
    seg = ob.build_official_segmentation_head(CFG)
    modules = {"encoder": enc, "decoder": dec, "scoring": scoring, "seg": seg}
    for name, m in modules.items():
        kept = load_synthetic(m, PREFIX[name])
        assert not kept, kept

    # ---- encoder -> decoder -> scoring, B = 2 (and B = 1 on the first row) ----
    gen = torch.Generator().manual_seed(1234)
    img = torch.randn(2, GRID * GRID, D, generator=gen)
    pe = PositionEmbeddingSine(num_pos_feats=D, normalize=True)
    pos = pe(torch.zeros(2, D, GRID, GRID)).flatten(2).transpose(1, 2).contiguous()
    prompt, mask = text_like_prompt(gen, [5, 12])
    res2 = run_transformer(enc, dec, scoring, img, pos, prompt, mask)
    res1 = run_transformer(enc, dec, scoring, img[:1], pos[:1], prompt[:1], mask[:1])
    tensors = {"img": img, "img_pos": pos, "prompt": prompt, "prompt_mask": mask}
    tensors.update({f"{k}_b2": v for k, v in res2.items()})
    tensors.update({f"{k}_b1": v for k, v in res1.items()})
    for k, v in res2.items():
        print(f"  {k:16s} {tuple(v.shape)}  absmax {v.abs().max():.3f}  std {v.std():.3f}")
    meta = {
        "grid": GRID,
        "official_shapes": {n: shapes(modules[n]) for n in ("encoder", "decoder", "scoring")},
        "prefixes": {n: PREFIX[n] for n in ("encoder", "decoder", "scoring")},
        "note": "batch-first tensors; official modules run seq-first in float32, eval",
    }
    save_fixture("heads_transformer", tensors, meta)

    # ---- segmentation head, 6x8 token grid ----
    gen = torch.Generator().manual_seed(4321)
    h, w, q = 6, 8, DET.num_queries
    fpn = [torch.randn(2, D, s * h, s * w, generator=gen) for s in (4, 2)]
    seg_memory = torch.randn(2, h * w, D, generator=gen)
    seg_prompt, seg_mask = text_like_prompt(gen, [3, 9])
    queries = torch.nn.functional.layer_norm(torch.randn(2, q, D, generator=gen), (D,))
    coarse = torch.zeros(2, D, h, w)  # replaced by the memory; only its size matters

    def run_seg(levels, img_ids):
        out = seg(
            backbone_feats=levels,
            obj_queries=queries[None],
            image_ids=img_ids,
            encoder_hidden_states=seg_memory.transpose(0, 1),
            prompt=seg_prompt.transpose(0, 1),
            prompt_mask=seg_mask,
        )
        return out["pred_masks"], out["semantic_seg"]

    masks, sem = run_seg([*fpn, coarse], torch.tensor([0, 1]))
    # Two prompts on ONE image: the official code broadcasts the batch-1 levels.
    masks_shared, _ = run_seg([fpn[0][:1], fpn[1][:1], coarse[:1]], torch.tensor([0, 0]))
    for k, v in {"pred_masks": masks, "semantic_seg": sem, "shared": masks_shared}.items():
        print(f"  {k:16s} {tuple(v.shape)}  absmax {v.abs().max():.3f}  std {v.std():.3f}")
    save_fixture(
        "heads_segmentation",
        {
            "fpn0": fpn[0],
            "fpn1": fpn[1],
            "memory": seg_memory,
            "prompt": seg_prompt,
            "prompt_mask": seg_mask,
            "queries": queries,
            "pred_masks": masks,
            "semantic_seg": sem,
            "pred_masks_shared": masks_shared,
        },
        {"grid_hw": [h, w], "official_shapes": shapes(seg), "prefix": PREFIX["seg"]},
    )


if __name__ == "__main__":
    main()
