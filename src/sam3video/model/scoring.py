"""Dot-product classification of decoder queries against the pooled prompt
(``detector.dot_prod_scoring``).

The prompt tokens go through a residual ReLU MLP and a LayerNorm, are mean-pooled over the valid
(non-padding) tokens, and projected; each query is projected too, and the logit is their scaled
dot product, clamped to ``[-clamp, clamp]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.encoder import check_prompt


class PromptMLP(nn.Module):
    """``out_norm(x + layers.1(relu(layers.0(x))))``: a residual two-layer MLP then LayerNorm."""

    def __init__(self, d_model: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList((nn.Linear(d_model, mlp_dim), nn.Linear(mlp_dim, d_model)))
        self.out_norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_norm(x + self.layers[1](F.relu(self.layers[0](x))))


class DotProductScoring(nn.Module):
    """Per-query logits from ``hs_proj(hs) . prompt_proj(mean(prompt_mlp(prompt)))``.

    Keys: ``prompt_mlp.layers.{0,1}``, ``prompt_mlp.out_norm``, ``prompt_proj``, ``hs_proj``.
    """

    def __init__(self, d_model: int, mlp_dim: int, clamp: float = 12.0) -> None:
        super().__init__()
        self.prompt_mlp = PromptMLP(d_model, mlp_dim)
        self.prompt_proj = nn.Linear(d_model, d_model)
        self.hs_proj = nn.Linear(d_model, d_model)
        self.scale = 1.0 / math.sqrt(d_model)
        self.clamp = clamp

    def pooled_prompt(self, prompt: Tensor, prompt_mask: Tensor) -> Tensor:
        """Projected mean of the MLP'd valid prompt tokens: ``(B, L, C), (B, L) -> (B, C)``."""
        tokens = self.prompt_mlp(prompt)  # every token, pads included; they are masked next
        valid = (~prompt_mask).to(tokens.dtype)[..., None]  # (B, L, 1)
        count = valid.sum(dim=1).clamp(min=1.0)
        return self.prompt_proj((tokens * valid).sum(dim=1) / count)

    def forward(self, hs: Tensor, prompt: Tensor, prompt_mask: Tensor) -> Tensor:
        """Score queries.

        Args:
            hs: ``(..., B, Q, C)`` normed decoder outputs (e.g. all layers ``(L, B, Q, C)``).
            prompt: ``(B, L, C)`` pre-encoder prompt, ``prompt_mask``: ``(B, L)`` True = padding.

        Returns:
            logits: ``(..., B, Q, 1)``, clamped to ``[-clamp, clamp]``.
        """
        check_prompt(prompt, prompt_mask)
        if hs.dim() < 3 or hs.shape[-3] != prompt.shape[0]:
            raise InvalidInputError(
                f"hs: expected (..., B={prompt.shape[0]}, Q, C), got {tuple(hs.shape)}"
            )
        pooled = self.pooled_prompt(prompt, prompt_mask)  # (B, C)
        scores = torch.matmul(self.hs_proj(hs), pooled[..., None]) * self.scale
        return scores.clamp(-self.clamp, self.clamp)
