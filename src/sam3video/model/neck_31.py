"""SAM 3.1's three-way SimpleFPN neck: one trunk pass, three feature pyramids.

Official prefix: ``detector.backbone.vision_backbone.`` (class ``Sam3TriViTDetNeck``).
``convs`` feeds the detector, ``interactive_convs`` the tracker's interactive (click / mask
prompt) heads and ``propagation_convs`` the multiplex propagation heads and the memory. The
three branches have the same structure (levels 4x, 2x, 1x of the trunk grid; see
`sam3video.model.neck.ViTDetNeckBase`) and separate weights. Unlike SAM 3's dual neck there is no
0.5x level, and all three levels are used.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from sam3video.errors import ConfigError, InvalidInputError
from sam3video.model.neck import ViTDetNeckBase, fpn_pyramid
from sam3video.model.position_encoding import PositionEmbeddingSine
from sam3video.model.vit import ViT


class TriNeckOutput(NamedTuple):
    """Per pyramid, the levels from high to low resolution (4x, 2x, 1x of the trunk grid: 288,
    144, 72 at full size), each ``(B, d_model, H_l, W_l)``, and the matching sine position
    encodings (same shape and dtype; the three pyramids share them). ``None`` for a pyramid
    that was not asked for.
    """

    detector_feats: list[Tensor] | None
    detector_pos: list[Tensor] | None
    interactive_feats: list[Tensor] | None
    interactive_pos: list[Tensor] | None
    propagation_feats: list[Tensor] | None
    propagation_pos: list[Tensor] | None


class TriViTDetNeck(ViTDetNeckBase):
    """``trunk`` + ``convs`` + ``interactive_convs`` + ``propagation_convs`` +
    ``position_encoding`` (no weights).

    ``forward(images (B, 3, S, S))`` runs the trunk once and returns a `TriNeckOutput`.
    """

    def __init__(
        self,
        trunk: ViT,
        position_encoding: PositionEmbeddingSine,
        d_model: int,
        scale_factors: tuple[float, ...] = (4.0, 2.0, 1.0),
    ) -> None:
        if not scale_factors:
            raise ConfigError("scale_factors: expected at least one level, got ()")
        super().__init__(trunk, position_encoding, d_model, scale_factors, len(scale_factors))
        dim = trunk.embed_dim
        self.interactive_convs = fpn_pyramid(dim, d_model, self.scale_factors)
        self.propagation_convs = fpn_pyramid(dim, d_model, self.scale_factors)

    def forward(
        self,
        images: Tensor,
        need_detector: bool = True,
        need_tracker: bool = False,
        *,
        need_interactive: bool = False,
        need_propagation: bool = False,
    ) -> TriNeckOutput:
        """``images (B, 3, S, S)`` normalised -> `TriNeckOutput`.

        ``need_tracker`` asks for both tracker pyramids (interactive and propagation), as the
        3.0 neck's flag of that name asks for its single tracker pyramid.
        """
        return self.apply_necks(
            self.trunk(images),
            need_detector=need_detector,
            need_interactive=need_interactive or need_tracker,
            need_propagation=need_propagation or need_tracker,
        )

    def apply_necks(
        self,
        trunk_feats: Tensor,
        need_detector: bool = True,
        need_interactive: bool = False,
        need_propagation: bool = False,
    ) -> TriNeckOutput:
        """The requested pyramids from a trunk map ``(B, embed_dim, N, N)``."""
        wanted = [
            (need_detector, self.convs),
            (need_interactive, self.interactive_convs),
            (need_propagation, self.propagation_convs),
        ]
        if not any(flag for flag, _ in wanted):
            raise InvalidInputError(
                "need_detector/need_interactive/need_propagation: expected at least one True, "
                "got all False"
            )
        pyramids = [
            [conv(trunk_feats) for conv in convs] if flag else None for flag, convs in wanted
        ]
        first = next(p for p in pyramids if p is not None)
        # Equal shapes and dtype at each level: one encoding per level serves every pyramid.
        pos = [self.position_encoding(f) for f in first]
        out: list[list[Tensor] | None] = []
        for feats in pyramids:
            out += [feats, None if feats is None else list(pos)]
        return TriNeckOutput(*out)
