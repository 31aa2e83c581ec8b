"""Vision backbone (ViT trunk, dual neck, sine position encoding) against the official code.

Fixtures come from ``tools/reference/gen_vision.py`` (official ``sam3`` 0.1.4 at the tiny
sizes, synthetic weights, float32). Measured fp32 max abs diff: about 5e-6 (tolerance 1e-4).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _manifest import manifest_lines

from sam3video.errors import ConfigError, InvalidInputError
from sam3video.model.build import build_vision_backbone
from sam3video.model.config import Sam3VideoConfig, full_config, tiny_config
from sam3video.model.neck import DualViTDetNeck
from sam3video.model.position_encoding import PositionEmbeddingSine
from sam3video.model.vit import Attention, ViT
from sam3video.model.weights import synthetic_state_dict

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
PREFIX = "detector.backbone.vision_backbone."
ATOL = 1e-4  # float32 parity tolerance (max abs diff)


def state_manifest(state: dict, prefix: str = "") -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        prefix + k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state.items()
    }


def official_manifest(prefix: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Rows ``key<TAB>(d0, d1, ...)<TAB>dtype`` of the official manifest under ``prefix``."""
    out = {}
    for line in manifest_lines():
        if line.startswith(prefix):
            key, shape, dtype = line.split("\t")
            dims = tuple(int(d) for d in shape.strip("()").replace(" ", "").split(",") if d)
            out[key] = (dims, dtype)
    return out


def build_neck(cfg: Sam3VideoConfig) -> DualViTDetNeck:
    return build_vision_backbone(cfg)


def load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def normalise(img_u8: torch.Tensor) -> torch.Tensor:
    return (img_u8.float() / 255.0 - 0.5) / 0.5


def crop(x: torch.Tensor, start: int, size: int) -> torch.Tensor:
    return x[..., start : start + size, start : start + size]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def neck() -> DualViTDetNeck:
    model = build_neck(tiny_config()).eval()
    model.load_state_dict(synthetic_state_dict(model, prefix=PREFIX), strict=True)
    return model


@pytest.fixture(scope="module")
def b1() -> dict:
    return load_fixture("vision_b1")


@pytest.fixture(scope="module")
def b1_out(neck, b1):
    with torch.no_grad():
        x = normalise(b1["tensors"]["image_u8"])
        return neck.trunk(x), neck(x)


# ----------------------------------------------------------------------------- parity


def test_tiny_parity_single_image(b1, b1_out):
    ref, meta = b1["tensors"], b1["meta"]
    trunk, out = b1_out
    (c0, s0) = meta["crop"][0]
    stride = meta["pos0_stride"]
    diffs = {
        "trunk": max_diff(trunk, ref["trunk"]),
        **{f"det{i}": max_diff(out.detector_feats[i], ref[f"det{i}"]) for i in range(3)},
        "trk0_crop": max_diff(crop(out.tracker_feats[0], c0, s0), ref["trk0_crop"]),
        "trk1": max_diff(out.tracker_feats[1], ref["trk1"]),
        "trk2": max_diff(out.tracker_feats[2], ref["trk2"]),
        "pos0": max_diff(out.detector_pos[0][..., ::stride, ::stride], ref["pos0_strided"]),
        "pos1": max_diff(out.detector_pos[1], ref["pos1"]),
        "pos2": max_diff(out.tracker_pos[2], ref["pos2"]),
    }
    assert all(d <= ATOL for d in diffs.values()), diffs
    # The outputs are informative (not collapsed by the synthetic weights).
    assert ref["trunk"].std() > 0.5 and ref["det0"].std() > 0.5
    assert [tuple(f.shape[-2:]) for f in out.detector_feats] == [(64, 64), (32, 32), (16, 16)]


def test_tiny_parity_batch_of_two(neck, b1):
    ref = load_fixture("vision_b2")
    t, crops = ref["tensors"], ref["meta"]["crop"]
    images = torch.cat([b1["tensors"]["image_u8"], t["image_u8_second"]])
    with torch.no_grad():
        x = normalise(images)
        trunk = neck.trunk(x)
        out = neck.apply_necks(trunk)
    diffs = {"trunk": max_diff(trunk, t["trunk"])}
    for side, feats in (("det", out.detector_feats), ("trk", out.tracker_feats)):
        diffs[f"{side}0"] = max_diff(crop(feats[0], *crops[0]), t[f"{side}0_crop"])
        diffs[f"{side}1"] = max_diff(crop(feats[1], *crops[1]), t[f"{side}1_crop"])
        diffs[f"{side}2"] = max_diff(feats[2], t[f"{side}2"])
    assert all(d <= ATOL for d in diffs.values()), diffs
    # The two images differ, so a batch mix-up could not pass.
    assert max_diff(t["trunk"][0], t["trunk"][1]) > 1.0


def test_need_flags_select_pyramids(neck, b1, b1_out):
    _, both = b1_out
    x = normalise(b1["tensors"]["image_u8"])
    with torch.no_grad():
        det_only = neck(x, need_detector=True, need_tracker=False)
        trk_only = neck(x, need_detector=False, need_tracker=True)
    assert det_only.tracker_feats is None and det_only.tracker_pos is None
    assert trk_only.detector_feats is None and trk_only.detector_pos is None
    assert len(det_only.detector_feats) == len(trk_only.tracker_pos) == 3
    for a, b in zip(det_only.detector_feats, both.detector_feats):
        assert torch.equal(a, b)
    for a, b in zip(trk_only.tracker_feats, both.tracker_feats):
        assert torch.equal(a, b)
    # The two pyramids have separate weights.
    assert max_diff(both.detector_feats[2], both.tracker_feats[2]) > 0.1
    with pytest.raises(InvalidInputError, match="need_detector"):
        neck(x, need_detector=False, need_tracker=False)


# ----------------------------------------------------------------------------- keys


def test_tiny_state_dict_matches_official(neck, b1):
    official = {k: (tuple(s), d) for k, s, d in b1["meta"]["official_keys"]}
    ours = state_manifest(neck.state_dict())
    assert ours == official
    # The unused 0.5x branch still holds its weights (strict checkpoint loading).
    assert "convs.3.conv_1x1.weight" in ours and "sam2_convs.3.conv_3x3.bias" in ours


def test_full_state_dict_on_meta_matches_manifest():
    with torch.device("meta"):
        model = build_neck(full_config())
    ours = state_manifest(model.state_dict(), prefix=PREFIX)
    official = official_manifest(PREFIX)
    assert len(official) == 464
    assert ours == official


# ----------------------------------------------------------------------------- RoPE tables


def test_tiny_rope_tables_equal_official(neck, b1):
    t, meta = b1["tensors"], b1["meta"]
    for block, name in ((meta["window_block"], "window"), (meta["global_block"], "global")):
        ours = neck.trunk.blocks[block].attn.computed_buffers()["freqs_cis"]
        assert ours.dtype == torch.complex64
        assert torch.equal(ours, t[f"freqs_cis_{name}"]), name


def test_full_rope_tables_equal_official():
    ref = load_fixture("vision_rope_full")
    t, meta = ref["tensors"], ref["meta"]
    v, grid = full_config().vit, full_config().feat_size
    window = Attention(v.embed_dim, v.num_heads, v.window_size, 1.0, v.rope_theta)
    scale = v.window_size / grid
    assert scale == meta["global_block_scale"]
    with torch.device("meta"):  # computed_buffers must not need real weights
        glob = Attention(v.embed_dim, v.num_heads, grid, scale, v.rope_theta)
    w_table = window.computed_buffers()["freqs_cis"]
    g_table = glob.computed_buffers()["freqs_cis"]
    assert list(w_table.shape) == meta["window_shape"] == [576, 32]
    assert list(g_table.shape) == meta["global_shape"] == [5184, 32]
    assert torch.equal(w_table, t["window"])
    assert torch.equal(g_table[t["global_rows"]], t["global"])
    assert math.isclose(g_table.real.double().sum().item(), meta["global_real_sum"], rel_tol=1e-9)
    assert math.isclose(g_table.imag.double().sum().item(), meta["global_imag_sum"], rel_tol=1e-9)


def test_dtype_casts_keep_rope_table_complex(neck):
    model = build_neck(tiny_config())
    model.load_state_dict(neck.state_dict())
    model.to(dtype=torch.bfloat16)
    table = model.trunk.blocks[0].attn.freqs_cis
    assert table.dtype == torch.complex64
    assert torch.equal(table, neck.trunk.blocks[0].attn.freqs_cis)
    assert model.trunk.blocks[0].attn.qkv.weight.dtype == torch.bfloat16


def test_meta_build_then_assign_load_gives_same_outputs(neck, b1, b1_out):
    with torch.device("meta"):
        model = build_neck(tiny_config())
    model.load_state_dict(synthetic_state_dict(model, prefix=PREFIX), strict=True, assign=True)
    assert not any(t.is_meta for t in model.state_dict().values())
    with torch.no_grad():
        trunk = model.trunk(normalise(b1["tensors"]["image_u8"]))
    assert torch.equal(trunk, b1_out[0])


# ----------------------------------------------------------------------------- precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_close_to_float32(neck, b1, b1_out, dtype):
    model = build_neck(tiny_config()).eval()
    model.load_state_dict(neck.state_dict())
    model.to(dtype=dtype)
    with torch.no_grad():
        out = model(normalise(b1["tensors"]["image_u8"]).to(dtype))
    _, ref = b1_out
    for feats, pos, ref_feats, ref_pos in zip(
        out.detector_feats, out.detector_pos, ref.detector_feats, ref.detector_pos
    ):
        assert feats.dtype == pos.dtype == dtype
        assert torch.isfinite(feats).all()
        # Loose: relative to the feature scale (bf16 has an 8-bit mantissa).
        assert max_diff(feats, ref_feats) <= 0.05 * ref_feats.abs().max().item()
        assert max_diff(pos, ref_pos) <= 1e-2


# ----------------------------------------------------------------------------- behaviour


def test_position_encoding_layout():
    pe = PositionEmbeddingSine(8)
    x = torch.zeros(2, 5, 3, 4, dtype=torch.float64)
    pos = pe(x)
    assert pos.shape == (2, 8, 3, 4) and pos.dtype == torch.float64
    # First half depends on the row only, second half on the column only; y first.
    assert torch.equal(pos[:, :4], pos[:, :4, :, :1].expand(-1, -1, -1, 4))
    assert torch.equal(pos[:, 4:], pos[:, 4:, :1, :].expand(-1, -1, 3, -1))
    y = torch.arange(1, 4, dtype=torch.float64) / (3 + 1e-6) * 2 * math.pi
    assert torch.allclose(pos[0, 0, :, 0], torch.sin(y), atol=1e-6)  # channel 0: sin, freq 1
    assert torch.allclose(pos[0, 1, :, 0], torch.cos(y), atol=1e-6)  # channel 1: cos, freq 1
    x_pos = torch.arange(1, 5, dtype=torch.float64) / (4 + 1e-6) * 2 * math.pi
    freq = 10000 ** (-2 / 4)  # channel 6 = x channel 2: second frequency, sine
    assert torch.allclose(pos[0, 6, 0, :], torch.sin(freq * x_pos), atol=1e-6)
    with pytest.raises(ConfigError):
        PositionEmbeddingSine(7)
    with pytest.raises(ConfigError):
        PositionEmbeddingSine(8, normalize=False, scale=1.0)


def test_trunk_rejects_wrong_image_size(neck):
    with pytest.raises(InvalidInputError, match="images"):
        neck.trunk(torch.zeros(1, 3, 112, 112))
    with pytest.raises(InvalidInputError, match="images"):
        neck.trunk(torch.zeros(3, 224, 224))


def test_padded_windows_keep_images_independent():
    # 16x16 tokens in 6x6 windows: the grid is zero-padded to 18x18 inside windowed blocks.
    trunk = ViT(224, 14, 32, 2, 2, 2.0, 6, (1,), 112)
    trunk.load_state_dict(synthetic_state_dict(trunk, prefix=PREFIX + "trunk."))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        both = trunk(x)
        first = trunk(x[:1])
    assert both.shape == (2, 32, 16, 16) and torch.isfinite(both).all()
    assert max_diff(both[:1], first) <= 1e-5


def test_apply_rope_complex_real_and_in_place_agree():
    """The complex multiply (CPU/CUDA), the real form (MPS, or strided channels) and the
    in-place variant rotate the same way; tables tile over several frames of a grid."""
    from sam3video.errors import InvalidInputError
    from sam3video.model.position_encoding import apply_rope

    torch.manual_seed(0)
    angles = torch.rand(6, 4) * 6.3  # 6 positions, head_dim 8
    cos, sin = angles.cos(), angles.sin()
    x = torch.randn(2, 3, 12, 8)  # 2 frames of the 6 positions
    pairs = x.unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    c, s = cos.repeat(2, 1), sin.repeat(2, 1)
    expected = torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)

    torch.testing.assert_close(apply_rope(x, cos, sin), expected)
    strided = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # channels not contiguous
    assert strided.stride(-1) != 1
    torch.testing.assert_close(apply_rope(strided, cos, sin), expected)
    y = x.clone()
    assert apply_rope(y, cos, sin, inplace=True) is y
    torch.testing.assert_close(y, expected)
    half = apply_rope(x.bfloat16(), cos, sin)
    assert half.dtype == torch.bfloat16 and (half.float() - expected).abs().max() < 0.05
    with pytest.raises(InvalidInputError, match="x: expected"):
        apply_rope(torch.randn(2, 3, 10, 8), cos, sin)
