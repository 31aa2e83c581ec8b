"""The tracker's memory encoder (``tracker.maskmem_backbone``, official ``SimpleMaskEncoder``).

A frame's mask (already turned into +-10-scaled probabilities by the caller) is downsampled by
strided convs to the feature grid, added to the projected image features, fused by ConvNeXt
blocks and projected to the memory width ``out_dim``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import ConfigError, InvalidInputError
from sam3video.model.common import LayerNorm2d
from sam3video.model.position_encoding import PositionEmbeddingSine


class MaskDownSampler(nn.Module):
    """Resize ``(B, in_chans, H, W)`` masks to ``interpol_size``, downsample by ``total_stride``.

    Conv ``i`` (stride ``stride``) outputs ``start_chans * stride**(2 (i+1))`` channels (SAM 3.0:
    one mask channel, ``start_chans`` 1; SAM 3.1 multiplex: ``2M`` channels, ``start_chans`` 4),
    followed by LayerNorm2d and GELU; a final 1x1 conv maps to ``embed_dim``. Keys ``encoder.{i}``.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        kernel_size: int = 3,
        stride: int = 2,
        padding: int = 1,
        total_stride: int = 16,
        interpol_size: tuple[int, int] | None = (1152, 1152),
        in_chans: int = 1,
        start_chans: int = 1,
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
        """``(B, in_chans, H, W)`` -> ``(B, embed_dim, S / total_stride, S / total_stride)``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise InvalidInputError(
                f"masks: expected (B, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        if self.interpol_size is not None and tuple(x.shape[-2:]) != self.interpol_size:
            # Antialiased resize in fp32 (the official code resizes here, after the caller's
            # sigmoid/threshold and x20-10 scaling).
            x = F.interpolate(
                x.float(),
                size=self.interpol_size,
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        # Masks may come in float32 (logits, the resize above): the convs take their dtype.
        return self.encoder(x.to(self.encoder[0].weight.dtype))


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm2d, Linear-GELU-Linear, layer scale, residual."""

    def __init__(self, dim: int, kernel_size: int = 7, padding: int = 3) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> same shape."""
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # channels last for the Linears
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """``num_layers`` CXBlocks (keys ``layers.{i}``); the official input projection is Identity."""

    def __init__(self, dim: int, num_layers: int, kernel_size: int = 7, padding: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim, kernel_size, padding) for _ in range(num_layers))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Encode (image features, mask) into memory features and their sine positional encoding.

    ``in_dim`` = width of the image features (d_model), ``out_dim`` = memory width
    (``mem_dim``), ``mask_size`` = side the mask is resized to before downsampling (1152 full,
    256 tiny; ``mask_size / mask_total_stride`` must equal the feature grid side).
    """

    def __init__(
        self,
        out_dim: int,
        in_dim: int = 256,
        mask_size: int = 1152,
        mask_kernel_size: int = 3,
        mask_stride: int = 2,
        mask_padding: int = 1,
        mask_total_stride: int = 16,
        fuser_layers: int = 2,
        fuser_kernel_size: int = 7,
        fuser_padding: int = 3,
        position_encoding: nn.Module | None = None,
        mask_in_chans: int = 1,
        mask_start_chans: int = 1,
    ) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(
            embed_dim=in_dim,
            kernel_size=mask_kernel_size,
            stride=mask_stride,
            padding=mask_padding,
            total_stride=mask_total_stride,
            interpol_size=(mask_size, mask_size),
            in_chans=mask_in_chans,
            start_chans=mask_start_chans,
        )
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim, fuser_layers, fuser_kernel_size, fuser_padding)
        self.position_encoding = (
            PositionEmbeddingSine(out_dim) if position_encoding is None else position_encoding
        )
        self.out_proj = (
            nn.Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim else nn.Identity()
        )

    def forward(self, pix_feat: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """``pix_feat (B, in_dim, h, w)``, ``masks (B, 1, H, W)`` -> ``(features, pos)``.

        ``masks`` are already mapped to the encoder's input range by the caller (sigmoid or
        binarised, then x20 - 10); no sigmoid is applied here. Both outputs are
        ``(B, out_dim, h, w)``; ``pos`` is cast to the features' dtype.
        """
        if masks.ndim != 4 or masks.shape[1] != 1 or masks.shape[0] != pix_feat.shape[0]:
            raise InvalidInputError(
                f"masks: expected (B={pix_feat.shape[0]}, 1, H, W), got {tuple(masks.shape)}"
            )
        return self._encode(pix_feat, masks)

    def _encode(self, pix_feat: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """The shared body: downsample the masks, add the projected features, fuse, project."""
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
