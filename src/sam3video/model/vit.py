"""SAM 3's vision trunk: a plain ViT with windowed and global attention and 2-D axial RoPE.

Official prefix: ``detector.backbone.vision_backbone.trunk.``. At full size: 1008 px input,
14 px patches (72x72 tokens), width 1024, 32 blocks, 16 heads, 24x24 windows, global
attention in blocks 7, 15, 23 and 31. Facts that are easy to get wrong:

- the absolute position embedding (pretraining grid plus an unused cls row) is *tiled*
  over the token grid, not interpolated;
- RoPE rotates adjacent channel pairs ``(2m, 2m+1)``; the first half of the pairs uses the
  column (x) position, the second half the row (y) position;
- RoPE positions are ``0..N-1`` scaled by ``window_size / N`` in global blocks (the
  "interpolated" RoPE), so every block sees positions in ``[0, window_size)``;
- the rotation tables are checkpoint buffers (``blocks.{i}.attn.freqs_cis``, complex64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import ConfigError, InvalidInputError
from sam3video.model.position_encoding import apply_rope


def axial_rope_table(
    head_dim: int,
    side: int,
    scale: float = 1.0,
    theta: float = 10000.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Complex64 ``(side*side, head_dim // 2)`` rotations of a row-major ``side x side`` grid.

    Token ``t`` sits at ``x = (t % side) * scale``, ``y = (t // side) * scale``. Column ``j``
    of the first ``head_dim // 4`` columns is ``exp(i * x * f_j)``, of the last ones
    ``exp(i * y * f_j)``, with ``f_j = theta^(-4j / head_dim)``.
    """
    if head_dim % 4:
        raise ConfigError(f"head_dim: expected a multiple of 4 for 2-D RoPE, got {head_dim}")
    # The operation order follows the official tables so the values are bit-identical.
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4, device=device).float() / head_dim))
    t = torch.arange(side * side, dtype=torch.float32, device=device)
    pos_x = (t % side) * scale
    pos_y = torch.div(t, side, rounding_mode="floor") * scale
    angles = torch.cat((torch.outer(pos_x, freqs), torch.outer(pos_y, freqs)), dim=-1)
    return torch.polar(torch.ones_like(angles), angles)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution without bias: ``(B, 3, S, S) -> (B, N, N, C)``."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Attention(nn.Module):
    """Multi-head self-attention with 2-D RoPE over a ``grid_size x grid_size`` token grid.

    Keys: ``qkv`` (C -> 3C, rows q|k|v, heads contiguous within each), ``proj`` and the
    persistent complex64 buffer ``freqs_cis (grid_size**2, head_dim // 2)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: int,
        rope_scale: float = 1.0,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"num_heads: expected a divisor of dim={dim}, got {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.grid_size = grid_size
        self.rope_scale = rope_scale
        self.rope_theta = rope_theta
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # Built on CPU (cheap; meta-device arithmetic is slow) and moved to the default device.
        table = self.computed_buffers()["freqs_cis"].to(torch.get_default_device())
        self.register_buffer("freqs_cis", table, persistent=True)

    def computed_buffers(self) -> dict[str, Tensor]:
        """The RoPE table, built on CPU from the constructor arguments."""
        table = axial_rope_table(
            self.head_dim, self.grid_size, self.rope_scale, self.rope_theta, device="cpu"
        )
        return {"freqs_cis": table}

    def _apply(self, fn, recurse=True):
        # Module.to(dtype) would cast the complex table to a real dtype and drop its imaginary
        # part: the table stays complex64 and only follows the module to its device.
        table = self._buffers.pop("freqs_cis")
        try:
            super()._apply(fn, recurse)
        finally:
            device = self.qkv.weight.device
            if table.is_meta and device.type != "meta":  # to_empty(): rebuild the values
                table = self.computed_buffers()["freqs_cis"]
            self._buffers["freqs_cis"] = table.to(device)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, L, C)`` with ``L = grid_size**2`` row-major tokens -> ``(B, L, C)``."""
        b, length, c = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, heads, L, head_dim); not unbind: its
        # views cannot be modified in place
        table = torch.view_as_real(self.freqs_cis)  # (L, head_dim / 2, 2): cos and sin
        cos, sin = table[..., 0], table[..., 1]
        # q and k are views of the fresh qkv projection: rotated in place.
        q = apply_rope(q, cos, sin, inplace=True)
        k = apply_rope(k, cos, sin, inplace=True)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, length, c))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` with the exact (erf) GELU."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; windowed attention when ``window_size > 0``, else global.

    Windowed blocks zero-pad the grid to a multiple of ``window_size`` (after ``norm1``, so
    padded tokens take part in attention, as in the official code) and attend within each
    window; ``grid_size`` is then the window side.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        window_size: int,
        grid_size: int,
        rope_scale: float,
        rope_theta: float = 10000.0,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.attn = Attention(dim, num_heads, grid_size, rope_scale, rope_theta)
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.mlp = Mlp(dim, mlp_dim)

    def _window_attention(self, x: Tensor) -> Tensor:
        """``(B, H, W, C)`` -> attention within each ``window_size`` window -> same shape."""
        b, h, w, c = x.shape
        ws = self.window_size
        pad_h, pad_w = (-h) % ws, (-w) % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        nh, nw = (h + pad_h) // ws, (w + pad_w) // ws
        # (B, nh, ws, nw, ws, C) -> windows in row-major order, each its own batch element.
        windows = x.view(b, nh, ws, nw, ws, c).permute(0, 1, 3, 2, 4, 5)
        windows = self.attn(windows.reshape(b * nh * nw, ws * ws, c))
        x = windows.view(b, nh, nw, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, nh * ws, nw * ws, c)
        return x[:, :h, :w] if pad_h or pad_w else x

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, H, W, C)`` -> ``(B, H, W, C)``."""
        y = self.norm1(x)
        if self.window_size > 0:
            y = self._window_attention(y)
        else:
            b, h, w, c = y.shape
            y = self.attn(y.reshape(b, h * w, c)).view(b, h, w, c)
        x = x + y
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """The trunk: ``(B, 3, img_size, img_size)`` -> ``(B, embed_dim, N, N)``, ``N = img_size / p``.

    Keys: ``pos_embed (1, 1 + G*G, C)`` (``G = pretrain_img_size // patch_size``; row 0 is
    an unused cls slot), ``patch_embed.proj``, ``blocks.{i}``, ``ln_pre``. No final norm.
    Blocks listed in ``global_att_blocks`` attend globally, the others within windows. The
    output is taken after the last global block (the last block in SAM 3).
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        global_att_blocks: tuple[int, ...],
        pretrain_img_size: int,
        rope_theta: float = 10000.0,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ConfigError(
                f"img_size: expected a multiple of patch_size={patch_size}, got {img_size}"
            )
        if not global_att_blocks or not all(0 <= i < depth for i in global_att_blocks):
            raise ConfigError(
                f"global_att_blocks: expected block indices in [0, {depth}), "
                f"got {tuple(global_att_blocks)}"
            )
        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.grid_size = img_size // patch_size
        self.pretrain_grid = pretrain_img_size // patch_size
        self.global_att_blocks = tuple(global_att_blocks)
        # Later blocks would not contribute to the output (as in the official trunk).
        self.last_block = self.global_att_blocks[-1]

        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pretrain_grid**2, embed_dim))
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        mlp_dim = int(embed_dim * mlp_ratio)
        blocks = []
        for i in range(depth):
            is_global = i in self.global_att_blocks
            blocks.append(
                Block(
                    embed_dim,
                    num_heads,
                    mlp_dim,
                    window_size=0 if is_global else window_size,
                    grid_size=self.grid_size if is_global else window_size,
                    # Global blocks squeeze their N positions into the window's range.
                    rope_scale=window_size / self.grid_size if is_global else 1.0,
                    rope_theta=rope_theta,
                    layer_norm_eps=layer_norm_eps,
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.ln_pre = nn.LayerNorm(embed_dim, eps=layer_norm_eps)

    def tiled_pos_embed(self) -> Tensor:
        """``(1, N, N, C)``: position ``(r, c)`` takes the pretrained entry ``(r % G, c % G)``."""
        g, n = self.pretrain_grid, self.grid_size
        grid = self.pos_embed[:, 1:].reshape(1, g, g, -1)
        reps = n // g + 1
        return grid.repeat(1, reps, reps, 1)[:, :n, :n]

    def forward(self, images: Tensor) -> Tensor:
        """``images (B, 3, S, S)`` normalised, ``S = img_size`` -> ``(B, embed_dim, N, N)``."""
        if images.ndim != 4 or images.shape[1:] != (3, self.img_size, self.img_size):
            raise InvalidInputError(
                f"images: expected shape (B, 3, {self.img_size}, {self.img_size}), "
                f"got {tuple(images.shape)}"
            )
        x = self.patch_embed(images.to(self.patch_embed.proj.weight.dtype))
        x = self.ln_pre(x + self.tiled_pos_embed())
        for block in self.blocks[: self.last_block + 1]:
            x = block(x)
        return x.permute(0, 3, 1, 2)
