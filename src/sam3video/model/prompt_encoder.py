"""The tracker's SAM prompt encoder (``tracker.sam_prompt_encoder``).

Points (and box corners) become sparse tokens: a random-Fourier encoding of the position plus
a learned per-label embedding. A mask prompt becomes a dense map through a small strided conv
stack; without one, a learned ``no_mask_embed`` fills the map.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier positional encoding: ``cat(sin, cos)(2*pi * (2*xy - 1) @ G)``.

    ``positional_encoding_gaussian_matrix (2, num_pos_feats)`` is a persistent buffer loaded
    from the checkpoint. Output width ``2 * num_pos_feats``.
    """

    def __init__(self, num_pos_feats: int = 64) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def _pe_encoding(self, coords: Tensor) -> Tensor:
        """``coords (..., 2)`` as (x, y) in [0, 1] -> ``(..., 2 * num_pos_feats)``.

        Computed in float32 (large sin/cos arguments), returned in the buffer's dtype, the
        model's dtype when its weights were cast (e.g. bfloat16).
        """
        gaussian = self.positional_encoding_gaussian_matrix
        coords = 2 * coords.float() - 1
        coords = coords @ gaussian.float()
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1).to(gaussian.dtype)

    def forward(self, size: tuple[int, int]) -> Tensor:
        """Encoding of the pixel centres of an ``(h, w)`` grid -> ``(C, h, w)``."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: Tensor, image_size: tuple[int, int]) -> Tensor:
        """``coords (B, N, 2)``: (x, y) pixels of an ``(H, W)`` frame -> ``(B, N, C)``.

        Coordinates are normalised in float32 whatever their dtype (a bfloat16 pixel
        coordinate of a 1008 frame is off by up to 2 pixels).
        """
        coords = coords.float()
        scale = coords.new_tensor([image_size[1], image_size[0]])
        return self._pe_encoding(coords / scale)


class PromptEncoder(nn.Module):
    """Sparse (points/boxes) and dense (mask) prompt embeddings of width ``embed_dim``.

    ``image_embedding_size = (h, w)`` is the decoder's grid; ``input_image_size = (H, W)`` the
    pixel frame of point coordinates; mask prompts are ``(4h, 4w)``.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        # Labels 0/1: negative/positive click; 2/3: box top-left/bottom-right.
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> Tensor:
        """Positional encoding of the image-embedding grid, ``(1, C, h, w)``."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, coords: Tensor, labels: Tensor, pad: bool) -> Tensor:
        """``coords (B, N, 2)`` pixels, ``labels (B, N)`` -> ``(B, N + pad, C)``."""
        coords = coords.float() + 0.5  # pixel index -> pixel centre (float32: see PE)
        if pad:
            # A "not a point" token is appended when no box follows (as in SAM).
            b = coords.shape[0]
            coords = torch.cat([coords, coords.new_zeros(b, 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((b, 1), -1)], dim=1)
        pe = self.pe_layer.forward_with_coords(coords, self.input_image_size)

        # Per-label embedding without a loop: gather from the stacked table; labels outside
        # 0..3 (and -1, handled below) add nothing, as in the official code.
        table = torch.cat([e.weight for e in self.point_embeddings], dim=0)  # (4, C)
        known = (labels >= 0) & (labels < self.num_point_embeddings)
        idx = torch.where(known, labels, torch.zeros_like(labels)).long()
        embedded = torch.where(known[..., None], pe + table[idx], pe)
        not_a_point = torch.zeros_like(pe) + self.not_a_point_embed.weight
        return torch.where((labels == -1)[..., None], not_a_point, embedded)

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        """``boxes (B, 4)`` as x0, y0, x1, y1 pixels -> corner tokens ``(B, 2, C)``."""
        corners = (boxes.float() + 0.5).reshape(-1, 2, 2)
        pe = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_embed = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return pe + corner_embed

    def forward(
        self,
        points: tuple[Tensor, Tensor] | None,
        boxes: Tensor | None = None,
        masks: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Embed prompts for ``B`` objects.

        ``points``: ``(coords (B, N, 2) as (x, y) pixels of input_image_size, labels (B, N)``
        int in {-1: padding, 0: negative, 1: positive, 2/3: box corners}``)``. ``boxes``:
        ``(B, 4)`` pixels. ``masks``: ``(B, 1, 4h, 4w)`` logits.

        Returns ``sparse (B, N + 1, C)`` (a padding token is appended when ``boxes`` is None;
        box corners add 2 tokens) and ``dense (B, C, h, w)``.
        """
        if points is not None:
            coords, labels = points
            if coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]:
                raise InvalidInputError(
                    "points: expected coords (B, N, 2) and labels (B, N), got "
                    f"{tuple(coords.shape)} and {tuple(labels.shape)}"
                )
            bs = coords.shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        if masks is not None and tuple(masks.shape[-2:]) != self.mask_input_size:
            raise InvalidInputError(
                f"masks: expected spatial size {self.mask_input_size}, "
                f"got {tuple(masks.shape[-2:])}"
            )

        weight = self.no_mask_embed.weight
        sparse = [weight.new_empty(bs, 0, self.embed_dim)]
        if points is not None:
            sparse.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse_embeddings = torch.cat(sparse, dim=1)

        if masks is not None:
            # Mask prompts may come as float32 logits; the convs run in the weights' dtype.
            dense_embeddings = self.mask_downscaling(masks.to(weight.dtype))
        else:
            h, w = self.image_embedding_size
            dense_embeddings = weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse_embeddings, dense_embeddings
