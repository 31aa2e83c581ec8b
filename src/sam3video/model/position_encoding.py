"""Sine-cosine position encoding of a 2-D feature map (DETR style, normalised coordinates).

Used for every level of both necks (``num_pos_feats = d_model``) and by the memory encoder
(``num_pos_feats = mem_dim``). It has no weights and depends only on the map's size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sam3video.errors import ConfigError, InvalidInputError


class PositionEmbeddingSine(nn.Module):
    """``(B, C, H, W)`` map -> ``(B, num_pos_feats, H, W)`` encoding of its pixel positions.

    The first half of the channels encodes the row (y), the second half the column (x).
    Within each half, channel ``k`` uses the frequency ``1 / temperature^(2*floor(k/2)/n)``
    (``n = num_pos_feats // 2``); even channels take its sine, odd channels its cosine.
    Positions are ``1..H`` and ``1..W``; with ``normalize`` they become
    ``r / (H + 1e-6) * scale`` (``scale`` defaults to 2*pi).

    The table is computed in float32 and then cast to the input's dtype. It is cached per
    ``(H, W, device, dtype)``; the returned tensor is a batch-expanded view of the cached one,
    so treat it as read-only.
    """

    def __init__(
        self,
        num_pos_feats: int,
        temperature: float = 10000,
        normalize: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if num_pos_feats <= 0 or num_pos_feats % 2:
            raise ConfigError(
                f"num_pos_feats: expected a positive even number, got {num_pos_feats}"
            )
        if scale is not None and not normalize:
            raise ConfigError("scale: only meaningful with normalize=True, got normalize=False")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict[tuple, Tensor] = {}

    def _table(self, height: int, width: int, device: torch.device) -> Tensor:
        """The float32 ``(num_pos_feats, H, W)`` encoding."""
        n = self.num_pos_feats // 2
        ys = torch.arange(1, height + 1, dtype=torch.float32, device=device)
        xs = torch.arange(1, width + 1, dtype=torch.float32, device=device)
        if self.normalize:
            eps = 1e-6
            # Divide by the last position in float32, as the official code does (bit-exact).
            ys = ys / (ys[-1:] + eps) * self.scale
            xs = xs / (xs[-1:] + eps) * self.scale
        k = torch.arange(n, dtype=torch.float32, device=device)
        inv_freq = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / n)

        def encode(pos: Tensor) -> Tensor:  # (L,) -> (L, n): sin on even, cos on odd channels
            angles = pos[:, None] / inv_freq
            return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

        pos_y = encode(ys).t()[:, :, None].expand(n, height, width)
        pos_x = encode(xs).t()[:, None, :].expand(n, height, width)
        return torch.cat((pos_y, pos_x), dim=0)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """``x (B, C, H, W)`` (only its shape, device and dtype are used) -> ``(B, P, H, W)``."""
        if x.ndim != 4:
            raise InvalidInputError(
                f"x: expected a (B, C, H, W) feature map, got shape {tuple(x.shape)}"
            )
        b, _, h, w = x.shape
        # Tables made under inference_mode cannot be used outside it: keep them apart.
        key = (h, w, x.device, x.dtype, torch.is_inference_mode_enabled())
        table = self._cache.get(key)
        if table is None:
            table = self._table(h, w, x.device).to(x.dtype)
            self._cache[key] = table
        return table[None].expand(b, -1, -1, -1)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale}"
        )


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor, inplace: bool = False) -> Tensor:
    """Rotate the channel pairs ``(2m, 2m+1)`` of ``x (..., L, D)`` (2-D RoPE).

    ``cos``/``sin (L', D/2)``: the rotation angles of ``L'`` positions; ``L`` must be a
    multiple of ``L'`` (the table is tiled, as for memory keys that span several frames of
    the same grid). Pair ``(a, b)`` becomes ``(a cos - b sin, a sin + b cos)``.

    Computed in float32; the result has ``x``'s dtype. Where the device has complex kernels
    (not MPS) this is one complex multiply, the official code's operation and ~10x fewer
    memory passes than the real form; with ``inplace`` a float32 ``x`` is rotated in place
    (for fresh projections nothing else reads; never a tensor that requires grad).
    """
    length, pairs = cos.shape
    if x.shape[-1] != 2 * pairs or x.shape[-2] % length:
        raise InvalidInputError(
            f"x: expected (..., k * {length}, {2 * pairs}), got {tuple(x.shape)}"
        )
    tiled = x.unflatten(-2, (-1, length)).unflatten(-1, (-1, 2))  # (..., k, L', D/2, 2)
    if x.device.type != "mps" and x.stride(-1) == 1:
        table = torch.complex(cos.float(), sin.float())
        if inplace and x.dtype == torch.float32 and not x.requires_grad:
            torch.view_as_complex(tiled).mul_(table)
            return x
        rotated = torch.view_as_complex(tiled.float().contiguous()) * table
        return torch.view_as_real(rotated).flatten(-2).flatten(-3, -2).to(x.dtype)
    xf = tiled.float()
    real, imag = xf[..., 0], xf[..., 1]
    out = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)
    return out.flatten(-2).flatten(-3, -2).to(x.dtype)
