"""The dual SimpleFPN neck: one trunk pass, two feature pyramids (detector and tracker).

Official prefix: ``detector.backbone.vision_backbone.`` (class ``Sam3DualViTDetNeck``).
``convs`` feeds the detector, ``sam2_convs`` (same structure, separate weights) the tracker.
Each branch turns the single trunk map into one level: 4x (two stride-2 transposed convs
with a GELU between), 2x (one transposed conv), 1x, or 0.5x (max-pool); then a 1x1 conv to
``d_model`` and a 3x3 conv. SAM 3 drops the lowest-resolution (last) level, so that branch
only exists for checkpoint compatibility and is never run here.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from torch import Tensor, nn

from sam3video.errors import ConfigError, InvalidInputError
from sam3video.model.position_encoding import PositionEmbeddingSine
from sam3video.model.vit import ViT


class NeckOutput(NamedTuple):
    """Per pyramid, a list of levels from high to low resolution (4x, 2x, 1x of the trunk
    grid: 288, 144, 72 at full size), each ``(B, d_model, H_l, W_l)``, and the matching sine
    position encodings (same shape and dtype). ``None`` for a pyramid that was not asked for.
    """

    detector_feats: list[Tensor] | None
    detector_pos: list[Tensor] | None
    tracker_feats: list[Tensor] | None
    tracker_pos: list[Tensor] | None


def _fpn_branch(dim: int, d_model: int, scale: float) -> nn.Sequential:
    """One pyramid level; child names equal the official state-dict names."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if scale == 4.0:
        layers["dconv_2x2_0"] = nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)
        layers["gelu"] = nn.GELU()
        layers["dconv_2x2_1"] = nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2)
        out_dim = dim // 4
    elif scale == 2.0:
        layers["dconv_2x2"] = nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)
        out_dim = dim // 2
    elif scale == 1.0:
        out_dim = dim
    elif scale == 0.5:
        layers["maxpool_2x2"] = nn.MaxPool2d(kernel_size=2, stride=2)
        out_dim = dim
    else:
        raise ConfigError(f"scale_factors: expected values in (4.0, 2.0, 1.0, 0.5), got {scale}")
    layers["conv_1x1"] = nn.Conv2d(out_dim, d_model, kernel_size=1)
    layers["conv_3x3"] = nn.Conv2d(d_model, d_model, kernel_size=3, padding=1)
    return nn.Sequential(layers)


def fpn_pyramid(dim: int, d_model: int, scale_factors: tuple[float, ...]) -> nn.ModuleList:
    """One `_fpn_branch` per scale factor (keys ``{i}.<layer>``)."""
    return nn.ModuleList(_fpn_branch(dim, d_model, s) for s in scale_factors)


class ViTDetNeckBase(nn.Module):
    """What the SAM 3.0 dual and SAM 3.1 three-way necks share: ``trunk``,
    ``position_encoding`` (no weights) and the detector pyramid ``convs``, registered in the
    official order; ``num_levels`` of the levels are run.
    """

    def __init__(
        self,
        trunk: ViT,
        position_encoding: PositionEmbeddingSine,
        d_model: int,
        scale_factors: tuple[float, ...],
        num_levels: int,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.position_encoding = position_encoding
        self.scale_factors = tuple(scale_factors)
        self.num_levels = num_levels
        self.convs = fpn_pyramid(trunk.embed_dim, d_model, self.scale_factors)


class DualViTDetNeck(ViTDetNeckBase):
    """``trunk`` + ``convs`` (detector) + ``sam2_convs`` (tracker) + ``position_encoding``.

    ``forward(images (B, 3, S, S))`` runs the trunk once and returns a `NeckOutput` with the
    first ``len(scale_factors) - 1`` levels of each requested pyramid.
    """

    def __init__(
        self,
        trunk: ViT,
        position_encoding: PositionEmbeddingSine,
        d_model: int,
        scale_factors: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5),
        add_sam2_neck: bool = True,
    ) -> None:
        if len(scale_factors) < 2:
            raise ConfigError(
                f"scale_factors: expected at least 2 levels (the last is dropped), "
                f"got {tuple(scale_factors)}"
            )
        # SAM 3 drops the last level.
        super().__init__(trunk, position_encoding, d_model, scale_factors, len(scale_factors) - 1)
        self.sam2_convs = (
            fpn_pyramid(trunk.embed_dim, d_model, self.scale_factors) if add_sam2_neck else None
        )

    def forward(
        self, images: Tensor, need_detector: bool = True, need_tracker: bool = True
    ) -> NeckOutput:
        """``images (B, 3, S, S)`` normalised -> `NeckOutput` (levels 4x, 2x, 1x of S / p)."""
        return self.apply_necks(self.trunk(images), need_detector, need_tracker)

    def apply_necks(
        self, trunk_feats: Tensor, need_detector: bool = True, need_tracker: bool = True
    ) -> NeckOutput:
        """The pyramids from a trunk map ``(B, embed_dim, N, N)`` (``self.trunk``'s output)."""
        if not (need_detector or need_tracker):
            raise InvalidInputError(
                "need_detector/need_tracker: expected at least one to be True, got both False"
            )
        if need_tracker and self.sam2_convs is None:
            raise InvalidInputError(
                "need_tracker: expected False for a neck built with add_sam2_neck=False, got True"
            )
        det = (
            [self.convs[i](trunk_feats) for i in range(self.num_levels)] if need_detector else None
        )
        trk = (
            [self.sam2_convs[i](trunk_feats) for i in range(self.num_levels)]
            if need_tracker
            else None
        )
        # Both pyramids have the same shapes and dtype, so they share one encoding per level.
        pos = [self.position_encoding(f) for f in (det if det is not None else trk)]
        return NeckOutput(
            detector_feats=det,
            detector_pos=pos if need_detector else None,
            tracker_feats=trk,
            tracker_pos=list(pos) if need_tracker else None,
        )
