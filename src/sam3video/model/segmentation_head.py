"""Segmentation head: prompt-aware pixel decoder and per-query mask logits
(``detector.segmentation_head``).

1. The fusion-encoder memory reads the prompt once more (pre-norm cross-attention, residual).
2. A small FPN ("pixel decoder") starts from that memory reshaped to the token grid and, for each
   finer backbone level, adds the nearest-upsampled running map, then Conv3x3 -> GroupNorm ->
   ReLU. With the usual 3 levels only two stages run: ``conv_layers.2``/``norms.2`` exist in the
   checkpoint but are never used.
3. Mask logits are dot products between an MLP of each query and a 1x1-conv projection of the
   finest pixel map; a 1-channel 1x1 conv gives a semantic map (not used by the video model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.common import MLP, MultiheadAttention
from sam3video.model.encoder import check_prompt


class PixelDecoder(nn.Module):
    """Top-down FPN. Keys: ``conv_layers.{i}`` (3x3, same width), ``norms.{i}`` (GroupNorm)."""

    def __init__(self, hidden_dim: int, num_upsampling_stages: int, num_groups: int = 8) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList(
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1) for _ in range(num_upsampling_stages)
        )
        self.norms = nn.ModuleList(
            nn.GroupNorm(num_groups, hidden_dim) for _ in range(num_upsampling_stages)
        )

    def forward(self, feats: list[Tensor]) -> Tensor:
        """``feats``: maps finest first, ``[(B, C, H0, W0), ..., (B, C, Hn, Wn)]``; the coarsest
        one starts the top-down pass. Returns ``(B, C, H0, W0)``."""
        x = feats[-1]
        # One stage per finer level (two with three levels), so the last conv/norm may stay unused.
        for i, skip in enumerate(reversed(feats[:-1])):
            x = skip + F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = F.relu(self.norms[i](self.conv_layers[i](x)), inplace=True)
        return x


class MaskPredictor(nn.Module):
    """Query MLP (``mask_embed``, 3 layers) dotted with a pixel embedding."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.mask_embed = MLP(hidden_dim, hidden_dim, hidden_dim, 3)

    def forward(self, queries: Tensor, pixel_embed: Tensor) -> Tensor:
        """``queries (B, Q, C)``, ``pixel_embed (B, C, H, W)`` -> logits ``(B, Q, H, W)``."""
        emb = self.mask_embed(queries)
        b, c, h, w = pixel_embed.shape
        return torch.bmm(emb, pixel_embed.reshape(b, c, h * w)).view(b, -1, h, w)


class UniversalSegmentationHead(nn.Module):
    """Instance masks (and a semantic map) from backbone levels, memory, prompt and queries.

    Keys: ``pixel_decoder.*``, ``mask_predictor.mask_embed.layers.{0,1,2}``,
    ``cross_attend_prompt``, ``cross_attn_norm``, ``instance_seg_head``, ``semantic_seg_head``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_upsampling_stages: int = 3,
        group_norm_groups: int = 8,
    ) -> None:
        super().__init__()
        self.pixel_decoder = PixelDecoder(d_model, num_upsampling_stages, group_norm_groups)
        self.mask_predictor = MaskPredictor(d_model)
        self.cross_attend_prompt = MultiheadAttention(d_model, num_heads)
        self.cross_attn_norm = nn.LayerNorm(d_model)
        self.instance_seg_head = nn.Conv2d(d_model, d_model, kernel_size=1)
        self.semantic_seg_head = nn.Conv2d(d_model, 1, kernel_size=1)

    def forward(
        self,
        backbone_fpn: list[Tensor],
        memory: Tensor,
        prompt: Tensor,
        prompt_mask: Tensor,
        queries: Tensor,
        semantic: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Predict mask logits.

        Args:
            backbone_fpn: detector neck levels finest first, e.g.
                ``[(B, C, 4h, 4w), (B, C, 2h, 2w), (B, C, h, w)]``. The coarsest level is
                replaced by ``memory`` (only its size is read). A batch of 1 is broadcast over B
                prompts on the same image.
            memory: ``(B, h*w, C)`` fusion-encoder output (row-major grid).
            prompt: ``(B, L, C)``, ``prompt_mask``: ``(B, L)`` bool, True = padding.
            queries: ``(B, Q, C)`` last-layer normed decoder outputs.
            semantic: also return the semantic map (unused by the video pipeline).

        Returns:
            pred_masks ``(B, Q, 4h, 4w)`` logits and semantic_seg ``(B, 1, 4h, 4w)`` logits, or
            None when ``semantic`` is False.
        """
        b, hw, c = memory.shape
        check_prompt(prompt, prompt_mask, batch=b)
        if len(backbone_fpn) < 2:
            raise InvalidInputError(
                f"backbone_fpn: expected at least 2 levels (finest first), got {len(backbone_fpn)}"
            )
        h, w = backbone_fpn[-1].shape[-2:]
        if h * w != hw:
            raise InvalidInputError(
                f"memory: expected {h}*{w}={h * w} tokens to match backbone_fpn[-1], got {hw}"
            )
        if queries.dim() != 3 or queries.shape[0] != b:
            raise InvalidInputError(
                f"queries: expected (B={b}, Q, C), got {tuple(queries.shape)}"
            )
        x = self.cross_attn_norm(memory)
        memory = memory + self.cross_attend_prompt(x, prompt, prompt, key_padding_mask=prompt_mask)
        grid = memory.transpose(1, 2).reshape(b, c, h, w)
        pixel_embed = self.pixel_decoder([*backbone_fpn[:-1], grid])
        masks = self.mask_predictor(queries, self.instance_seg_head(pixel_embed))
        sem = self.semantic_seg_head(pixel_embed) if semantic else None
        return masks, sem
