"""Build the SAM 3 video model from a config and load Meta's checkpoint (``sam3.pt``) strictly.

`build_sam3_video_model` is the public entry point. The model is constructed on the ``meta``
device (instant, no memory), then weights are *assigned* from the checkpoint (memory-mapped
when possible) or from `synthetic_state_dict`, so a full-size model never exists twice in
memory.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sam3video.errors import CheckpointError, ConfigError, SourceNotFoundError
from sam3video.model.config import Sam3VideoConfig, get_config
from sam3video.model.decoder import TransformerDecoder
from sam3video.model.detector import (
    Sam3Detector,
    TransformerWrapper,
    VisionLanguageBackbone,
)
from sam3video.model.encoder import TransformerEncoderFusion
from sam3video.model.geometry_encoder import SequenceGeometryEncoder
from sam3video.model.neck import DualViTDetNeck
from sam3video.model.neck_31 import TriViTDetNeck
from sam3video.model.position_encoding import PositionEmbeddingSine
from sam3video.model.scoring import DotProductScoring
from sam3video.model.segmentation_head import UniversalSegmentationHead
from sam3video.model.text_encoder import TextEncoder, TextTransformer
from sam3video.model.tokenizer import SimpleTokenizer
from sam3video.model.vit import ViT
from sam3video.model.weights import detect_checkpoint_version, synthetic_state_dict


class Sam3VideoModel(nn.Module):
    """The whole video model: ``detector`` (``detector.*`` keys) and ``tracker`` (``tracker.*``)."""

    def __init__(self, config: Sam3VideoConfig, detector: Sam3Detector, tracker: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.detector = detector
        self.tracker = tracker


def build_vision_backbone(cfg: Sam3VideoConfig) -> DualViTDetNeck | TriViTDetNeck:
    """The ViT trunk and the necks of ``cfg`` (``detector.backbone.vision_backbone``): SAM 3's
    dual neck, or SAM 3.1's three-way neck for a config with ``multiplex`` set."""
    v = cfg.vit
    trunk = ViT(
        img_size=cfg.image_size,
        patch_size=v.patch_size,
        embed_dim=v.embed_dim,
        depth=v.depth,
        num_heads=v.num_heads,
        mlp_ratio=v.mlp_ratio,
        window_size=v.window_size,
        global_att_blocks=v.global_att_blocks,
        pretrain_img_size=v.pretrain_img_size,
        rope_theta=v.rope_theta,
        layer_norm_eps=v.layer_norm_eps,
    )
    if cfg.multiplex is not None:
        return TriViTDetNeck(
            trunk=trunk,
            position_encoding=PositionEmbeddingSine(cfg.d_model, normalize=True),
            d_model=cfg.d_model,
        )
    return DualViTDetNeck(
        trunk=trunk,
        position_encoding=PositionEmbeddingSine(cfg.d_model, normalize=True),
        d_model=cfg.d_model,
        add_sam2_neck=True,
    )


def build_detector(cfg: Sam3VideoConfig, bpe_path: str | os.PathLike | None = None) -> Sam3Detector:
    """The detector of ``cfg`` with freshly initialised (meaningless) weights."""
    t, d = cfg.text, cfg.detector
    neck = build_vision_backbone(cfg)
    text = TextEncoder(
        tokenizer=SimpleTokenizer(bpe_path, context_length=t.context_length),
        encoder=TextTransformer(
            context_length=t.context_length,
            vocab_size=t.vocab_size,
            width=t.width,
            heads=t.heads,
            layers=t.layers,
            mlp_dim=t.mlp_dim,
            proj_dim=t.proj_dim,
        ),
        d_model=d.d_model,
    )
    return Sam3Detector(
        backbone=VisionLanguageBackbone(neck, text),
        geometry_encoder=SequenceGeometryEncoder(
            d_model=d.d_model,
            num_heads=d.num_heads,
            ffn_dim=d.ffn_dim,
            num_layers=d.geo_layers,
            roi_size=d.geo_roi_size,
            use_img_cross_attn=d.geo_use_img_cross_attn,
        ),
        transformer=TransformerWrapper(
            encoder=TransformerEncoderFusion(
                d_model=d.d_model,
                num_heads=d.num_heads,
                ffn_dim=d.ffn_dim,
                num_layers=d.encoder_layers,
            ),
            decoder=TransformerDecoder(
                d_model=d.d_model,
                num_heads=d.num_heads,
                ffn_dim=d.ffn_dim,
                num_layers=d.decoder_layers,
                num_queries=d.num_queries,
                feat_size=cfg.feat_size,
                presence_token=d.presence_token,
            ),
        ),
        dot_prod_scoring=DotProductScoring(
            d_model=d.d_model, mlp_dim=d.scoring_mlp_dim, clamp=d.dot_prod_clamp
        ),
        segmentation_head=UniversalSegmentationHead(
            d_model=d.d_model,
            num_heads=d.num_heads,
            num_upsampling_stages=d.pixel_decoder_stages,
            group_norm_groups=d.group_norm_groups,
        ),
    )


def build_tracker(cfg: Sam3VideoConfig) -> nn.Module:
    """The tracker of ``cfg`` (`sam3video.model.tracker.Sam3Tracker`, or for SAM 3.1
    `sam3video.model.tracker_31.Sam3MultiplexTracker`)."""
    if cfg.multiplex is not None:
        from sam3video.model.tracker_31 import build_multiplex_tracker

        return build_multiplex_tracker(cfg)
    from sam3video.model.tracker import build_tracker as _build_tracker

    return _build_tracker(cfg)


def build_model_skeleton(
    config: str | Sam3VideoConfig = "full",
    device: torch.device | str | None = "meta",
    bpe_path: str | os.PathLike | None = None,
) -> Sam3VideoModel:
    """The model with uninitialised weights, on ``device`` (``meta``: instant, no memory)."""
    cfg = get_config(config)
    with torch.device(device or "cpu"):
        return Sam3VideoModel(cfg, build_detector(cfg, bpe_path), build_tracker(cfg))


# ----------------------------------------------------------------------------- checkpoints


@dataclass
class LoadReport:
    """What `load_state_dict_checked` did: keys missing, unexpected or with another shape."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 5) -> str:
        parts = []
        for name, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")
                parts.append(f"{len(items)} {name} key(s): {shown}")
        if self.mismatched:
            shown = ", ".join(
                f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})"
                for k, a, b in self.mismatched[:limit]
            )
            more = ", ..." if len(self.mismatched) > limit else ""
            parts.append(f"{len(self.mismatched)} shape mismatch(es): {shown}{more}")
        return "; ".join(parts) if parts else "all keys match"


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read ``sam3.pt`` (a state dict, or one under a top-level ``"model"`` key) or safetensors."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceNotFoundError(f"checkpoint_path: file not found: {str(p)!r}")
    if p.is_dir():
        raise CheckpointError(f"checkpoint_path: expected a file, got the directory {str(p)!r}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # torch/pickle/zip errors vary by file
        raise CheckpointError(
            f"checkpoint_path: {str(p)!r} is not a readable PyTorch checkpoint "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"checkpoint_path: {str(p)!r} does not hold a state dict of tensors "
            f"(found {type(state).__name__})"
        )
    return state


def checkpoint_version(path: str | os.PathLike) -> str:
    """``"sam3"`` or ``"sam3.1"``: the version of the checkpoint at ``path``, from its keys
    (`sam3video.model.weights.detect_checkpoint_version`; ``.pt`` files are memory-mapped,
    so this reads little more than the key list)."""
    return detect_checkpoint_version(checkpoint_keys(path))


def checkpoint_keys(path: str | os.PathLike) -> list[str]:
    """The state-dict keys of a checkpoint (internal prefixes renamed) without loading its
    tensors: ``.safetensors`` headers are read, ``.pt`` files memory-mapped."""
    p = Path(path).expanduser()
    if p.suffix == ".safetensors" and p.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                keys = list(f.keys())
        except Exception as exc:  # header errors vary
            raise CheckpointError(
                f"checkpoint_path: {str(p)!r} is not a readable safetensors file "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        return list(official_key_names(dict.fromkeys(keys)))
    return list(official_key_names(read_checkpoint(p)))


# Meta's internal training checkpoints name the two halves differently; the official SAM 3.1
# loader renames them (the released files already use detector. / tracker.).
_INTERNAL_PREFIXES = {"sam3_model.": "detector.", "sam2_predictor.": "tracker."}


def official_key_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with internal prefixes (``sam3_model.``, ``sam2_predictor.``) renamed to the
    released ones (``detector.``, ``tracker.``); the same dict when there are none."""
    if not any(k.startswith(tuple(_INTERNAL_PREFIXES)) for k in state):
        return state
    out = {}
    for key, value in state.items():
        for old, new in _INTERNAL_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


# The preset of the other model version with the same sizes.
_COUNTERPART = {"full": "sam3.1", "tiny": "sam3.1-tiny", "sam3.1": "full", "sam3.1-tiny": "tiny"}


def resolve_model_config(
    config: str | Sam3VideoConfig,
    checkpoint_path: str | os.PathLike | None = None,
    version: str | None = None,
) -> Sam3VideoConfig:
    """The config that fits a checkpoint: ``config``, or its counterpart of the other version.

    ``version`` (``"sam3"`` / ``"sam3.1"``) forces the version; otherwise it is read from
    the checkpoint's keys (`checkpoint_version`; nothing to read without a checkpoint). A
    preset of the other version is swapped for the one with the same sizes (``"full"`` <->
    ``"sam3.1"``, ``"tiny"`` <-> ``"sam3.1-tiny"``); a custom config of the other version is
    a `ConfigError`. A checkpoint whose keys are of neither version keeps ``config`` (the
    strict load then lists the keys that do not fit).
    """
    if version not in (None, "sam3", "sam3.1"):
        raise ConfigError(f"version: expected None, 'sam3' or 'sam3.1', got {version!r}")
    cfg = get_config(config)
    if version is None and checkpoint_path is not None:
        try:
            version = detect_checkpoint_version(checkpoint_keys(checkpoint_path))
        except CheckpointError:
            # Keys of neither version (or unreadable): the strict load will say what is wrong.
            return cfg
    if version is None or version == cfg.version:
        return cfg
    if cfg.name in _COUNTERPART and cfg == get_config(cfg.name):
        return get_config(_COUNTERPART[cfg.name])
    raise ConfigError(
        f"model_config: expected a {version} config for this checkpoint, got the "
        f"{cfg.version} config {cfg.name!r}"
    )


def load_state_dict_checked(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    strict: bool = True,
    source: str = "checkpoint",
) -> LoadReport:
    """Assign ``state`` into ``model`` (which may live on ``meta``), checking keys and shapes.

    ``strict=True``: any missing/unexpected key or shape mismatch raises `CheckpointError`
    listing the offending keys (first few + counts) before anything is loaded.
    ``strict=False``: loads what matches and returns the report of the rest.
    """
    expected = model.state_dict()
    report = LoadReport(
        missing=sorted(k for k in expected if k not in state),
        unexpected=sorted(k for k in state if k not in expected),
        mismatched=[
            (k, tuple(state[k].shape), tuple(v.shape))
            for k, v in expected.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)
        ],
    )
    if strict and not report.ok:
        cfg = getattr(model, "config", None)
        if getattr(cfg, "version", "sam3") == "sam3.1":
            hint = (
                "Is it Meta's SAM 3.1 checkpoint (sam3.1_multiplex.pt) and the matching "
                f"model config ({cfg.name!r})?"
            )
        else:
            hint = "Is it Meta's SAM 3 checkpoint (sam3.pt) and the matching model config?"
        raise CheckpointError(f"{source} does not fit the model ({report.summary()}). {hint}")
    bad = {k for k, _, _ in report.mismatched}
    usable = {k: v for k, v in state.items() if k in expected and k not in bad}
    model.load_state_dict(usable, strict=False, assign=True)
    return report


def _pick_device(device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def build_sam3_video_model(
    config: str | Sam3VideoConfig = "full",
    checkpoint_path: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    strict: bool = True,
    *,
    bpe_path: str | os.PathLike | None = None,
    seed: int = 0,
) -> Sam3VideoModel:
    """Build the SAM 3 video model and load its weights.

    config: ``"full"`` (Meta's sizes), ``"tiny"``, ``"sam3.1"`` (Meta's SAM 3.1 sizes, for
        ``sam3.1_multiplex.pt``), ``"sam3.1-tiny"`` or a `Sam3VideoConfig`.
    checkpoint_path: Meta's ``sam3.pt`` (plain state dict or under ``"model"``) or a
        ``.safetensors`` file. ``None`` loads deterministic *synthetic* weights
        (`synthetic_state_dict`, seed ``seed``): the pipeline runs, the masks are meaningless.
    device: default CUDA, then MPS, then CPU. dtype: parameter dtype (default float32, also
        for a float16 / bfloat16 checkpoint).
    strict: with True a key or shape mismatch raises `CheckpointError` naming the keys;
        with False what matches is loaded and the rest is reported as a warning.
    Returns the model in eval mode.
    """
    cfg = get_config(config)
    model = build_model_skeleton(cfg, device="meta", bpe_path=bpe_path)
    if checkpoint_path is None:
        wanted = {
            "full": "Meta's sam3.pt",
            "sam3.1": "Meta's sam3.1_multiplex.pt",
            "demo": "sam3video.checkpoints.demo_weights()",  # the predictor passes it itself
        }
        if cfg.name in wanted:
            warnings.warn(
                "build_sam3_video_model: no checkpoint_path, using synthetic weights; "
                f"the outputs are meaningless (pass {wanted[cfg.name]} for real masks)",
                stacklevel=2,
            )
        state = synthetic_state_dict(model, seed=seed)
        source = "synthetic weights"
    else:
        state = official_key_names(read_checkpoint(checkpoint_path))
        source = f"checkpoint {str(checkpoint_path)!r}"
    report = load_state_dict_checked(model, state, strict=strict, source=source)
    if not report.ok:
        warnings.warn(f"{source}: loaded with strict=False; {report.summary()}", stacklevel=2)
    _materialize_leftovers(model)
    target = _pick_device(device)
    model.to(device=target)
    half = (torch.float16, torch.bfloat16)
    if dtype is None and any(p.dtype in half for p in model.parameters()):
        dtype = torch.float32  # a half-precision file (the packaged demo weights) gives float32
    if dtype is not None:
        model.to(dtype=dtype)
    return model.eval()


def _materialize_leftovers(model: nn.Module) -> None:
    """Give parameters still on ``meta`` (strict=False gaps) a real, zero-filled tensor."""
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_meta:
                module.register_parameter(
                    name, nn.Parameter(torch.zeros(param.shape, dtype=param.dtype))
                )
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.is_meta:
                # Computed, non-persistent state must be created lazily by its module.
                raise RuntimeError(f"buffer {name!r} of {type(module).__name__} left on meta")


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
