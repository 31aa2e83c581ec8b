"""Fusion encoder: image tokens self-attend and read the prompt (``detector.transformer.encoder``).

Each layer is pre-norm: self-attention over the image tokens with the sine position encoding
added to queries and keys, cross-attention from the image tokens to the prompt tokens (no
position terms, padded prompt tokens masked out), then a ReLU FFN. There is no final norm and
no level embedding (a single feature level).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.common import MultiheadAttention


def check_prompt(prompt: Tensor, prompt_mask: Tensor, batch: int | None = None) -> None:
    """Validate a batch-first prompt ``(B, L, C)`` and its bool padding mask ``(B, L)``."""
    if prompt.dim() != 3:
        raise InvalidInputError(
            f"prompt: expected a (B, L, C) tensor, got shape {tuple(prompt.shape)}"
        )
    if prompt_mask.dtype != torch.bool or tuple(prompt_mask.shape) != tuple(prompt.shape[:2]):
        raise InvalidInputError(
            f"prompt_mask: expected a bool tensor of shape {tuple(prompt.shape[:2])} (True = "
            f"padding), got {prompt_mask.dtype} {tuple(prompt_mask.shape)}"
        )
    if batch is not None and prompt.shape[0] != batch:
        raise InvalidInputError(
            f"prompt: expected batch size {batch} (one prompt per image row), got {prompt.shape[0]}"
        )


class TransformerEncoderLayer(nn.Module):
    """One pre-norm fusion layer. Keys: ``self_attn``, ``cross_attn_image``, ``linear1/2``,
    ``norm1/2/3``."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads)
        self.cross_attn_image = MultiheadAttention(d_model, num_heads)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, pos: Tensor, prompt: Tensor, prompt_mask: Tensor) -> Tensor:
        """``x``, ``pos``: ``(B, HW, C)``; ``prompt``: ``(B, L, C)``; ``prompt_mask``: ``(B, L)``
        bool, True = padding. Returns ``(B, HW, C)``."""
        a = self.norm1(x)
        qk = a + pos
        x = x + self.self_attn(qk, qk, a)
        b = self.norm2(x)
        x = x + self.cross_attn_image(b, prompt, prompt, key_padding_mask=prompt_mask)
        c = self.norm3(x)
        return x + self.linear2(F.relu(self.linear1(c), inplace=True))


class TransformerEncoderFusion(nn.Module):
    """Stack of ``num_layers`` fusion layers (keys ``layers.{i}.*``)."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, num_heads, ffn_dim) for _ in range(num_layers)
        )

    def forward(
        self, img: Tensor, img_pos: Tensor, prompt: Tensor, prompt_mask: Tensor
    ) -> Tensor:
        """Fuse the prompt into the image tokens.

        Args:
            img: ``(B, HW, C)`` image tokens (row-major flattened grid).
            img_pos: ``(B, HW, C)`` their sine position encoding.
            prompt: ``(B, L, C)`` prompt tokens (text, then geometry incl. CLS).
            prompt_mask: ``(B, L)`` bool, True = padding.

        Returns:
            memory: ``(B, HW, C)``.
        """
        check_prompt(prompt, prompt_mask, batch=img.shape[0])
        if img.shape != img_pos.shape:
            raise InvalidInputError(
                f"img_pos: expected the shape of img {tuple(img.shape)}, got {tuple(img_pos.shape)}"
            )
        x = img
        for layer in self.layers:
            x = layer(x, img_pos, prompt, prompt_mask)
        return x
