"""Fixtures for the vision backbone (ViT trunk, dual neck, sine position encoding).

Run from the repository root with the reference venv::

    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_vision.py

Builds the official ``ViT`` + ``Sam3DualViTDetNeck`` + ``PositionEmbeddingSine`` with the
arguments of ``model_builder._create_vision_backbone`` but the tiny sizes of ``tiny_config()``
(``official_builders.build_official_vision_backbone``), fills them with synthetic weights
(prefix ``detector.backbone.vision_backbone.``) and runs them in float32 on seeded uint8
images normalised with mean = std = 0.5.

Writes (sizes kept small: the 4x level is large, so some tensors are crops or strided):
- ``tests/fixtures/vision_b1.pt``: one image; trunk output, all three detector levels,
  tracker levels 1 and 2 in full and a crop of level 0, position encodings (level 0 strided),
  the official tiny RoPE tables and the official tiny key -> (shape, dtype) list;
- ``tests/fixtures/vision_b2.pt``: a batch of two images (the first one is the B=1 image);
  trunk output, level 2 of both pyramids and crops of levels 0 and 1;
- ``tests/fixtures/vision_rope_full.pt``: official full-size ``freqs_cis`` of one window
  block (all rows) and one global block (selected rows, see ``GLOBAL_ROWS``).
"""

from __future__ import annotations

import torch
from _common import load_synthetic, save_fixture
from official_builders import build_official_vision_backbone
from sam3.model.vitdet import Attention

from sam3video.model.config import full_config, tiny_config

PREFIX = "detector.backbone.vision_backbone."

# Crops kept for the large levels, as (row/col start, size) on each level's grid.
CROP = {0: (20, 24), 1: (8, 16)}
POS0_STRIDE = 3


def normalise(img_u8: torch.Tensor) -> torch.Tensor:
    return (img_u8.float() / 255.0 - 0.5) / 0.5


def make_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random images plus noise, as uint8 (B, 3, S, S)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 16, size // 16, generator=gen)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear")
    img = img + 0.15 * torch.randn(n, 3, size, size, generator=gen)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def crop(x: torch.Tensor, level: int) -> torch.Tensor:
    start, size = CROP[level]
    return x[..., start : start + size, start : start + size]


def run(neck, images_u8):
    with torch.no_grad():
        x = normalise(images_u8)
        trunk = neck.trunk(x)[-1]
        det, det_pos, trk, trk_pos = neck(x)
    # SAM3VLBackbone(scalp=1) drops the last level.
    return trunk, det[:3], det_pos[:3], trk[:3], trk_pos[:3]


def main() -> None:
    torch.manual_seed(0)
    cfg = tiny_config()
    neck = build_official_vision_backbone(cfg)
    kept = load_synthetic(neck, PREFIX)
    assert all(k.endswith("freqs_cis") for k in kept), kept
    keys = [
        [k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in neck.state_dict().items()
    ]

    images = make_images(2, cfg.image_size, seed=1234)

    # B = 1
    trunk, det, det_pos, trk, trk_pos = run(neck, images[:1])
    assert torch.equal(det_pos[0], trk_pos[0])
    win = next(i for i in range(cfg.vit.depth) if i not in cfg.vit.global_att_blocks)
    glob = cfg.vit.global_att_blocks[0]
    tensors = {
        "image_u8": images[:1],
        "trunk": trunk,
        "det0": det[0],
        "det1": det[1],
        "det2": det[2],
        "trk0_crop": crop(trk[0], 0),
        "trk1": trk[1],
        "trk2": trk[2],
        "pos0_strided": det_pos[0][..., ::POS0_STRIDE, ::POS0_STRIDE],
        "pos1": det_pos[1],
        "pos2": det_pos[2],
        "freqs_cis_window": neck.trunk.blocks[win].attn.freqs_cis,
        "freqs_cis_global": neck.trunk.blocks[glob].attn.freqs_cis,
    }
    meta = {
        "prefix": PREFIX,
        "official_keys": keys,
        "window_block": win,
        "global_block": glob,
        "crop": CROP,
        "pos0_stride": POS0_STRIDE,
        "normalise": "(u8 / 255 - 0.5) / 0.5",
    }
    save_fixture("vision_b1", tensors, meta)

    # B = 2 (batching: windows and attention must not mix images)
    trunk, det, det_pos, trk, trk_pos = run(neck, images)
    tensors = {
        "image_u8_second": images[1:],
        "trunk": trunk,
        "det0_crop": crop(det[0], 0),
        "det1_crop": crop(det[1], 1),
        "det2": det[2],
        "trk0_crop": crop(trk[0], 0),
        "trk1_crop": crop(trk[1], 1),
        "trk2": trk[2],
    }
    save_fixture("vision_b2", tensors, {"prefix": PREFIX, "crop": CROP})

    # Full-size RoPE tables: just the attention modules, as the full ViT builds them.
    full = full_config()
    v = full.vit
    grid = full.image_size // v.patch_size
    pt = (v.window_size, v.window_size)
    window_attn = Attention(
        dim=v.embed_dim,
        num_heads=v.num_heads,
        input_size=pt,
        use_rope=True,
        rope_pt_size=pt,
        rope_interp=True,
    )
    global_attn = Attention(
        dim=v.embed_dim,
        num_heads=v.num_heads,
        input_size=(grid, grid),
        use_rope=True,
        rope_pt_size=pt,
        rope_interp=True,
    )
    gtable = global_attn.freqs_cis
    # Rows: the first grid row (every x), the first column (every y) and a seeded sample.
    gen = torch.Generator().manual_seed(7)
    sample = torch.randperm(grid * grid, generator=gen)[:64]
    rows = torch.cat([torch.arange(grid), torch.arange(grid) * grid, sample])
    save_fixture(
        "vision_rope_full",
        {
            "window": window_attn.freqs_cis,
            "global_rows": rows,
            "global": gtable[rows],
        },
        {
            "window_shape": list(window_attn.freqs_cis.shape),
            "global_shape": list(gtable.shape),
            "global_block_scale": v.window_size / grid,
            "global_real_sum": float(gtable.real.double().sum()),
            "global_imag_sum": float(gtable.imag.double().sum()),
        },
    )


if __name__ == "__main__":
    main()
