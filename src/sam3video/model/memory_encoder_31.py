"""SAM 3.1's memory encoder (``tracker.model.maskmem_backbone``, official ``SimpleMaskEncoder``).

Differences from SAM 3.0 (`sam3video.model.memory_encoder.MemoryEncoder`):

- the mask input of a bucket has ``2 * M`` channels (``M`` = multiplex_count): the ``M`` slots'
  mask probabilities, then ``M`` constant "is this slot's object a conditioning input on this
  frame" channels; the downsampler starts from ``start_chans`` (4 at full size) channels and
  multiplies them by ``stride**2`` per conv (16, 64, 256, 1024 at full size);
- the memory is as wide as the features (``out_dim = in_dim``: ``out_proj`` is Identity) and
  its sine position encoding too;
- the frame's features are shared by the buckets: ``pix_feat`` has batch 1 (or ``Bk``).

The ConvNeXt fuser and the other pieces are SAM 3.0's.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import ConfigError, InvalidInputError
from sam3video.model.common import LayerNorm2d
from sam3video.model.memory_encoder import Fuser
from sam3video.model.position_encoding import PositionEmbeddingSine


class MultiplexMaskDownSampler(nn.Module):
    """Resize ``(Bk, in_chans, H, W)`` masks to ``interpol_size``, downsample by ``total_stride``.

    Conv ``i`` (stride ``stride``) outputs ``start_chans * stride**(2 (i+1))`` channels, followed
    by LayerNorm2d and GELU; a final 1x1 conv maps to ``embed_dim``. Keys ``encoder.{i}``.
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int = 256,
        start_chans: int = 4,
        kernel_size: int = 3,
        stride: int = 2,
        padding: int = 1,
        total_stride: int = 16,
        interpol_size: tuple[int, int] | None = (1152, 1152),
    ) -> None:
        super().__init__()
        num_layers = round(math.log(total_stride, stride))
        if stride**num_layers != total_stride:
            raise ConfigError(
                f"total_stride: expected a power of stride={stride}, got {total_stride}"
            )
        layers: list[nn.Module] = []
        chans_in, chans_out = in_chans, start_chans
        for _ in range(num_layers):
            chans_out = chans_out * stride**2
            layers += [
                nn.Conv2d(chans_in, chans_out, kernel_size, stride=stride, padding=padding),
                LayerNorm2d(chans_out),
                nn.GELU(),
            ]
            chans_in = chans_out
        layers.append(nn.Conv2d(chans_out, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)
        self.in_chans = in_chans
        self.interpol_size = None if interpol_size is None else tuple(interpol_size)

    def forward(self, x: Tensor) -> Tensor:
        """``(Bk, in_chans, H, W)`` -> ``(Bk, embed_dim, S / total_stride, S / total_stride)``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise InvalidInputError(
                f"masks: expected (Bk, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        if self.interpol_size is not None and tuple(x.shape[-2:]) != self.interpol_size:
            # Antialiased resize in float32, as the official code.
            x = F.interpolate(
                x.float(),
                size=self.interpol_size,
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return self.encoder(x.to(self.encoder[0].weight.dtype))


class MultiplexMemoryEncoder(nn.Module):
    """Encode (frame features, the slot masks of ``Bk`` buckets) into ``Bk`` memories.

    ``dim`` = width of the features and of the memory (C), ``mask_in_chans`` = ``2 * M``,
    ``mask_size`` = side the masks are resized to before downsampling (1152 full, 256 tiny;
    ``mask_size / 16`` must equal the feature grid side).
    """

    def __init__(
        self,
        dim: int,
        mask_in_chans: int,
        mask_size: int = 1152,
        start_chans: int = 4,
        fuser_layers: int = 2,
    ) -> None:
        super().__init__()
        self.mask_downsampler = MultiplexMaskDownSampler(
            in_chans=mask_in_chans,
            embed_dim=dim,
            start_chans=start_chans,
            interpol_size=(mask_size, mask_size),
        )
        self.pix_feat_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.fuser = Fuser(dim, fuser_layers)
        self.position_encoding = PositionEmbeddingSine(dim)
        self.out_proj = nn.Identity()  # official: no projection when out_dim == in_dim

    def forward(self, pix_feat: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """``pix_feat (b, C, h, w)`` (b = 1 or Bk), ``masks (Bk, 2M, H, W)`` already mapped
        to the encoder's input range by the caller (no sigmoid here) -> ``(features, pos)``,
        both ``(Bk, C, h, w)``; ``pos`` in the features' dtype.
        """
        if pix_feat.shape[0] not in (1, masks.shape[0]):
            raise InvalidInputError(
                f"pix_feat: expected batch 1 or {masks.shape[0]} (one per bucket), "
                f"got {pix_feat.shape[0]}"
            )
        mask_feat = self.mask_downsampler(masks)
        if mask_feat.shape[-2:] != pix_feat.shape[-2:]:
            raise InvalidInputError(
                f"pix_feat: expected spatial size {tuple(mask_feat.shape[-2:])} (mask grid), "
                f"got {tuple(pix_feat.shape[-2:])}"
            )
        x = self.pix_feat_proj(pix_feat) + mask_feat
        x = self.out_proj(self.fuser(x))
        pos = self.position_encoding(x).to(x.dtype)
        return x, pos
