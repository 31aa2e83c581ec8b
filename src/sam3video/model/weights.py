"""Deterministic synthetic weights: the basis of parity testing without Meta's checkpoint.

Every tensor is generated from ``(seed, key, shape)`` alone, so the official implementation and
ours receive identical values whatever order they build their modules in. The fixture
generator in ``tools/reference/`` calls `synthetic_tensor` for every key of the *official*
model; our tests call `synthetic_state_dict` for every key of *ours*. Equal keys and shapes
therefore give equal weights.

Scales keep activations finite and informative through all blocks:

- LayerNorm/GroupNorm weights around 1, biases around 0.
- Matrices with ``std = gain / sqrt(fan_in)`` (variance preserving), biases small.
- Embedding tables and learned tokens with unit-ish scale.
- A few named tensors that have a special role get a fitting value (see `_special`).

Computed buffers that are part of the state dict (RoPE tables ``freqs_cis``, random-Fourier
matrices are *not* computed but parameters-like) are taken from the model itself:
`synthetic_state_dict` asks the model for them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import torch


def _key_seed(seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _normal(seed: int, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(_key_seed(seed, key))
    return torch.randn(shape, generator=gen, dtype=torch.float32)


def _is_norm(key: str) -> bool:
    leaf = key.rsplit(".", 2)
    name = leaf[-2] if len(leaf) >= 2 else ""
    return (
        "norm" in name
        or ".norms." in key  # GroupNorm lists (pixel decoder)
        or name.startswith("ln_")
        or name in {"ln_pre", "ln_final", "ln_post", "layer_norm"}
        # LayerNorm2d inside Sequential containers (mask downsamplers, upscaling)
        or key.endswith(
            (
                "mask_downscaling.1.weight",
                "mask_downscaling.1.bias",
                "mask_downscaling.4.weight",
                "mask_downscaling.4.bias",
                "output_upscaling.1.weight",
                "output_upscaling.1.bias",
            )
        )
        or (".mask_downsampler.encoder." in key and _downsampler_norm(key))
    )


def _downsampler_norm(key: str) -> bool:
    # mask_downsampler.encoder.{1,4,7,10} are LayerNorm2d; {0,3,6,9,12} convs.
    idx = key.split(".mask_downsampler.encoder.")[1].split(".")[0]
    return idx.isdigit() and int(idx) % 3 == 1


def _special(seed: int, key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    if key.endswith("freqs_cis"):
        raise KeyError("freqs_cis is a computed buffer: take it from the model")
    if key.endswith("positional_encoding_gaussian_matrix"):
        # The official init: randn * scale (scale 1.0 when not given).
        return _normal(seed, key, shape)
    if key.endswith("fuser.layers.0.gamma") or key.endswith("fuser.layers.1.gamma"):
        # ConvNeXt layer scale: small, as in training (init 1e-6 grows to ~0.1-1).
        return 0.1 + 0.05 * _normal(seed, key, shape)
    if key.endswith("out_proj.weight"):
        # Attention output projections scaled down: with unit gain the full-size fusion encoder
        # accumulates a component common to all tokens and the decoder's queries collapse.
        return 0.3 * _normal(seed, key, shape) / math.sqrt(shape[-1])
    if key.endswith("dot_prod_scoring.prompt_proj.weight"):
        # Gain 3 spreads the class logits so that some queries pass the 0.5 detection
        # threshold: the video logic (births, NMS, association) then has work to do.
        return 3.0 * _normal(seed, key, shape) / math.sqrt(shape[-1])
    if key.endswith("pred_obj_score_head.layers.2.bias"):
        # Object-score logits of +-0.5 make "is the object present" a coin toss; a positive
        # bias makes tracked and clicked objects present, as with real weights.
        return torch.full(shape, 3.0)
    if key.endswith(".gamma"):
        return 0.1 + 0.05 * _normal(seed, key, shape)
    if key.endswith("reference_points.weight"):
        # Reference boxes are sigmoid(weight): spread boxes over the image.
        return 1.0 * _normal(seed, key, shape)
    if key.endswith("maskmem_tpos_enc") or key.endswith("no_obj_embed_spatial"):
        return 0.02 * _normal(seed, key, shape)
    return None


def synthetic_tensor(key: str, shape: Iterable[int], seed: int = 0) -> torch.Tensor:
    """A float32 tensor for state-dict entry ``key`` of ``shape``, from (seed, key, shape).

    Raises ``KeyError`` for computed buffers (``freqs_cis``), which come from the model.
    """
    shape = tuple(int(s) for s in shape)
    special = _special(seed, key, shape)
    if special is not None:
        return special
    noise = _normal(seed, key, shape)
    if _is_norm(key):
        if key.endswith("weight"):
            return 1.0 + 0.1 * noise
        return 0.05 * noise
    if key.endswith("bias") or key.endswith("in_proj_bias"):
        return 0.02 * noise
    if len(shape) >= 2:
        # Linear (out, in), conv (out, in/groups, kh, kw), conv-transpose (in, out, kh, kw).
        if ".dconv_" in key or "output_upscaling" in key:
            fan_in = shape[0] * math.prod(shape[2:]) // 4  # stride-2 k2: each output sees 1 tap
        else:
            fan_in = math.prod(shape[1:])
        if key.endswith(("token_embedding.weight", "positional_embedding", "pos_embed")):
            return 0.5 * noise
        if len(shape) == 2 and key.rsplit(".", 1)[-1] == "weight" and _is_embedding(key):
            return noise
        return noise / math.sqrt(max(fan_in, 1))
    # 1-D non-norm, non-bias vectors (e.g. learned scalars): small.
    return 0.1 * noise


def _is_embedding(key: str) -> bool:
    name = key.rsplit(".", 2)[-2] if key.count(".") >= 1 else key
    return (
        name.endswith(("embed", "_embed", "token", "tokens", "embeddings"))
        or ".point_embeddings." in key
        or name in {"query_embed", "presence_token", "label_embed", "cls_embed"}
    )


def computed_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Buffers that are in the state dict but computed, not learned (e.g. RoPE ``freqs_cis``).

    Any submodule may define ``computed_buffers() -> dict[local_name, tensor]``; the tensors
    are built on CPU from the module's constructor arguments, so this works on ``meta`` models.
    """
    out: dict[str, torch.Tensor] = {}
    for name, sub in module.named_modules():
        if not hasattr(type(sub), "computed_buffers"):
            continue
        for local, value in sub.computed_buffers().items():
            out[f"{name}.{local}" if name else local] = value
    return out


def synthetic_state_dict(
    model: torch.nn.Module | str | object = "tiny", seed: int = 0, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Synthetic weights for every state-dict key of ``model``.

    ``model`` is an ``nn.Module`` (any device, ``meta`` included) or a config / preset name, in
    which case the whole video model is built on the ``meta`` device (instant) for its keys and
    shapes. ``prefix`` is prepended to each key when drawing values, so a submodule gets the same
    values as inside the whole model (``prefix="detector.geometry_encoder."``). Returned keys are
    the module's own (without the prefix).
    """
    if not isinstance(model, torch.nn.Module):
        from sam3video.model.build import build_model_skeleton

        model = build_model_skeleton(model, device="meta")
    buffers = computed_buffers(model)
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key in buffers:
            out[key] = buffers[key]
        else:
            out[key] = synthetic_tensor(prefix + key, value.shape, seed)
    return out


# ----------------------------------------------------------------------------- versions

# Key prefixes only one checkpoint family has: SAM 3.1's multiplex tracker sits under
# ``tracker.model.`` and its neck has ``propagation_convs``; SAM 3's tracker is directly
# under ``tracker.`` and its neck has ``sam2_convs``.
VERSION_MARKERS: dict[str, tuple[str, ...]] = {
    "sam3.1": (
        "tracker.model.sam_mask_decoder.",
        "detector.backbone.vision_backbone.propagation_convs.",
    ),
    "sam3": (
        "tracker.sam_mask_decoder.",
        "detector.backbone.vision_backbone.sam2_convs.",
    ),
}


def detect_checkpoint_version(keys: Iterable[str]) -> str:
    """``"sam3"`` (``sam3.pt``) or ``"sam3.1"`` (``sam3.1_multiplex.pt``) from state-dict keys.

    Raises `CheckpointError` when no key of either family is present, or keys of both are.
    """
    from sam3video.errors import CheckpointError

    keys = list(keys)
    found = {
        version: sorted({m for m in markers for k in keys if k.startswith(m)})
        for version, markers in VERSION_MARKERS.items()
    }
    hits = [v for v, f in found.items() if f]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        expected = ", ".join(f"{m}*" for ms in VERSION_MARKERS.values() for m in ms)
        shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
        raise CheckpointError(
            f"checkpoint: expected SAM 3 or SAM 3.1 keys (one of {expected}), got "
            f"{len(keys)} keys ({shown or 'none'})"
        )
    raise CheckpointError(
        "checkpoint: expected the keys of one model version, got both SAM 3 "
        f"({', '.join(found['sam3'])}) and SAM 3.1 ({', '.join(found['sam3.1'])}) keys"
    )
