"""Small building blocks shared by the detector and the tracker.

Conventions used throughout ``sam3video.model``:
- Sequences are **batch-first** ``(B, L, C)``; feature maps are ``(B, C, H, W)``.
- Key-padding masks are bool ``(B, L)`` with ``True`` = padding (ignored), as in the official
  code.
- Module attribute names equal the official state-dict names, so checkpoints load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """``num_layers`` Linear layers (keys ``layers.{i}``) with ReLU between them."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x, inplace=True)  # x is the layer's fresh output
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (biased variance)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MultiheadAttention(nn.Module):
    """Drop-in for ``nn.MultiheadAttention`` weights (packed ``in_proj_weight``), batch-first.

    State-dict keys: ``in_proj_weight (3C, C)``, ``in_proj_bias (3C,)``, ``out_proj.weight``,
    ``out_proj.bias``. Runs through ``F.scaled_dot_product_attention``.
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        attn_bias: Tensor | None = None,
    ) -> Tensor:
        """Attention of ``query (B, Lq, C)`` over ``key``/``value (B, Lk, C)``.

        ``key_padding_mask``: bool ``(B, Lk)``, True = ignore. ``attn_bias``: float, added to
        the logits, broadcastable to ``(B, heads, Lq, Lk)``. Returns ``(B, Lq, C)``.
        """
        b, lq, c = query.shape
        lk = key.shape[1]
        h = self.num_heads
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = F.linear(query, w_q, b_q).view(b, lq, h, c // h).transpose(1, 2)
        k = F.linear(key, w_k, b_k).view(b, lk, h, c // h).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(b, lk, h, c // h).transpose(1, 2)
        mask = attn_bias
        if key_padding_mask is not None:
            pad = torch.zeros(b, 1, 1, lk, dtype=q.dtype, device=q.device)
            pad = pad.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
            mask = pad if mask is None else mask.to(q.dtype) + pad
        elif mask is not None:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, c))
