"""DETR-style decoder with a presence token, iterative box refinement and a box relative-position
bias (``detector.transformer.decoder``).

Every layer is **post-norm** in the order self-attention -> text cross-attention -> image
cross-attention (with the box bias added to the logits) -> FFN. A learned presence token rides
along with the queries (prepended, zero position term) and gives one "is the concept present"
logit per layer. After each layer the shared output norm feeds the box head, whose output
refines the reference boxes in logit space.

Precision: reference boxes, their sine embedding, the bias coordinates and the box updates are
kept in float32 whatever the working dtype (as the official code does), and the FFN runs with
autocast disabled in the dtype of its weights (the official CUDA path disables autocast there, so
under bf16 autocast it is a float32 island).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import ConfigError, InvalidInputError
from sam3video.model.common import MLP, MultiheadAttention
from sam3video.model.encoder import check_prompt


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """Logit of ``x`` clamped to ``[0, 1]``, with numerator and denominator floored at ``eps``."""
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` centre/size boxes to corner boxes."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_sine_embed(boxes: Tensor, num_feats: int) -> Tensor:
    """Sine embedding of ``(..., 4)`` cxcywh boxes in [0, 1] -> ``(..., 4 * num_feats)``, float32.

    Per coordinate: angles ``v * 2pi / 10000^(2k / num_feats)`` for ``k < num_feats / 2``, laid out
    as interleaved ``(sin, cos)`` pairs. Coordinates are concatenated as **[cy, cx, w, h]**.
    """
    boxes = boxes.float()
    k = torch.arange(num_feats // 2, dtype=torch.float32, device=boxes.device)
    dim_t = 10000 ** ((k * 2) / num_feats)
    coords = boxes[..., [1, 0, 2, 3]] * (2 * math.pi)
    angles = coords[..., None] / dim_t  # (..., 4, num_feats / 2)
    emb = torch.stack((angles.sin(), angles.cos()), dim=-1)  # (..., 4, num_feats / 2, 2)
    return emb.flatten(-3)


def _signed_log(d: Tensor) -> Tensor:
    # Distances in [-1, 1] stretched to [-8, 8], then log2-compressed back to about [-1, 1].
    d = d * 8
    return torch.sign(d) * torch.log2(d.abs() + 1.0) / math.log2(8)


@dataclass
class DecoderOutput:
    """Per-layer decoder results (batch-first).

    hs: ``(num_layers, B, Q, C)`` query features after the shared output norm.
    ref_boxes: ``(num_layers, B, Q, 4)`` cxcywh reference boxes fed *into* each layer (float32).
    presence_logits: ``(num_layers, B, 1)`` unclamped presence logits, or None without a token.
    pred_boxes: ``(B, Q, 4)`` final cxcywh boxes in [0, 1] (float32).
    """

    hs: Tensor
    ref_boxes: Tensor
    presence_logits: Tensor | None
    pred_boxes: Tensor


class TransformerDecoderLayer(nn.Module):
    """One post-norm decoder layer. Keys: ``self_attn``, ``ca_text``, ``cross_attn``,
    ``norm1`` (after image cross-attention), ``catext_norm``, ``norm2`` (after self-attention),
    ``norm3`` (after the FFN), ``linear1/2``."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads)
        self.ca_text = MultiheadAttention(d_model, num_heads)
        self.cross_attn = MultiheadAttention(d_model, num_heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.catext_norm = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)

    def _ffn(self, x: Tensor) -> Tensor:
        # Autocast off: the official CUDA path runs this FFN in the weights' dtype (float32).
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(self.linear1.weight.dtype)
            return self.linear2(F.relu(self.linear1(x), inplace=True))

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_key: Tensor,
        prompt: Tensor,
        prompt_mask: Tensor,
        rpb: Tensor,
    ) -> Tensor:
        """``tgt``, ``query_pos``: ``(B, T, C)`` (T = queries, plus the presence token first);
        ``memory``: ``(B, HW, C)``; ``memory_key`` = memory + its position encoding;
        ``prompt``: ``(B, L, C)``, ``prompt_mask``: ``(B, L)``; ``rpb``: ``(B, heads, T, HW)``
        additive bias. Returns ``(B, T, C)``."""
        q = tgt + query_pos
        tgt = self.norm2(tgt + self.self_attn(q, q, tgt))
        q = tgt + query_pos
        tgt = self.catext_norm(
            tgt + self.ca_text(q, prompt, prompt, key_padding_mask=prompt_mask)
        )
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.cross_attn(q, memory_key, memory, attn_bias=rpb))
        return self.norm3(tgt + self._ffn(tgt))


class TransformerDecoder(nn.Module):
    """``num_layers`` decoder layers over ``num_queries`` learned queries and reference boxes.

    ``feat_size`` is the side of the (square) image-token grid used for the box bias (72 at
    full size); ``forward`` accepts another grid through ``feat_hw``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ffn_dim: int,
        num_layers: int,
        num_queries: int,
        feat_size: int,
        presence_token: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"num_layers: expected at least 1 decoder layer, got {num_layers}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.feat_size = feat_size
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(d_model, num_heads, ffn_dim) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.reference_points = nn.Embedding(num_queries, 4)
        self.boxRPB_embed_x = MLP(2, d_model, num_heads, 2)
        self.boxRPB_embed_y = MLP(2, d_model, num_heads, 2)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        if presence_token:
            self.presence_token = nn.Embedding(1, d_model)
            self.presence_token_head = MLP(d_model, d_model, 1, 3)
            self.presence_token_out_norm = nn.LayerNorm(d_model)
        else:
            self.presence_token = None

    def box_rpb(self, ref_boxes: Tensor, h: int, w: int, pad_queries: int = 0) -> Tensor:
        """Box relative-position bias: ``ref_boxes (B, Q, 4)`` cxcywh -> ``(B, heads, P+Q, h*w)``.

        For grid row ``i`` and column ``j`` (coordinates ``i/h``, ``j/w``, not pixel centres) the
        bias of head ``k`` is ``Y[q, i, k] + X[q, j, k]``, where X and Y are MLPs of the signed-log
        distances from the coordinate to the box's two edges along that axis. The first
        ``P = pad_queries`` rows are zero (tokens without a box, e.g. the presence token).
        The sum is written once, straight into the attention's layout (at full size the bias
        is 33 MB per layer; permuting and padding it afterwards cost three more passes).
        """
        x0, y0, x1, y1 = box_cxcywh_to_xyxy(ref_boxes.float()).unbind(-1)
        ys = torch.arange(h, dtype=torch.float32, device=ref_boxes.device) / h
        xs = torch.arange(w, dtype=torch.float32, device=ref_boxes.device) / w
        dy = ys[:, None] - torch.stack((y0, y1), dim=-1)[..., None, :]  # (B, Q, h, 2)
        dx = xs[:, None] - torch.stack((x0, x1), dim=-1)[..., None, :]  # (B, Q, w, 2)
        dtype = self.boxRPB_embed_x.layers[0].weight.dtype
        by = self.boxRPB_embed_y(_signed_log(dy).to(dtype)).permute(0, 3, 1, 2)  # (B, k, Q, h)
        bx = self.boxRPB_embed_x(_signed_log(dx).to(dtype)).permute(0, 3, 1, 2)  # (B, k, Q, w)
        if by.requires_grad or bx.requires_grad:  # out= has no autograd
            bias = F.pad(by[..., :, None] + bx[..., None, :], (0, 0, 0, 0, pad_queries, 0))
            return bias.flatten(3)
        b, heads, q = by.shape[:3]
        bias = by.new_empty(b, heads, pad_queries + q, h, w)
        bias[:, :, :pad_queries] = 0
        torch.add(by[..., :, None], bx[..., None, :], out=bias[:, :, pad_queries:])
        return bias.flatten(3)

    def forward(
        self,
        memory: Tensor,
        memory_pos: Tensor,
        prompt: Tensor,
        prompt_mask: Tensor,
        feat_hw: tuple[int, int] | None = None,
    ) -> DecoderOutput:
        """Decode queries against the fused image tokens.

        Args:
            memory: ``(B, HW, C)`` fusion-encoder output (row-major grid).
            memory_pos: ``(B, HW, C)`` its sine position encoding.
            prompt: ``(B, L, C)`` prompt tokens (pre-encoder), ``prompt_mask``: ``(B, L)`` bool,
                True = padding.
            feat_hw: grid ``(h, w)`` with ``h * w == HW``; default ``(feat_size, feat_size)``.

        Returns:
            `DecoderOutput` (hs, ref_boxes, presence_logits, pred_boxes).
        """
        b, hw, _ = memory.shape
        check_prompt(prompt, prompt_mask, batch=b)
        h, w = feat_hw if feat_hw is not None else (self.feat_size, self.feat_size)
        if h * w != hw or memory_pos.shape != memory.shape:
            raise InvalidInputError(
                f"memory: expected (B, {h}*{w}, C) with memory_pos of the same shape, got "
                f"{tuple(memory.shape)} and {tuple(memory_pos.shape)}"
            )
        memory_key = memory + memory_pos
        tgt = self.query_embed.weight[None].expand(b, -1, -1)
        ref = self.reference_points.weight.float().sigmoid()[None].expand(b, -1, -1)
        presence = None
        if self.presence_token is not None:
            presence = self.presence_token.weight[None].expand(b, -1, -1)

        hs, refs, presence_logits = [], [], []
        for layer in self.layers:
            refs.append(ref)
            sine = box_sine_embed(ref, self.d_model // 2).to(tgt.dtype)
            query_pos = self.ref_point_head(sine)
            # The presence token has a zero position and no box bias.
            rpb = self.box_rpb(ref, h, w, pad_queries=0 if presence is None else 1)
            x = tgt
            if presence is not None:
                x = torch.cat((presence, tgt), dim=1)
                query_pos = F.pad(query_pos, (0, 0, 1, 0))
            x = layer(x, query_pos, memory, memory_key, prompt, prompt_mask, rpb)
            if presence is not None:
                presence, x = x[:, :1], x[:, 1:]
                logit = self.presence_token_head(self.presence_token_out_norm(presence))
                presence_logits.append(logit.squeeze(-1))  # (B, 1); deliberately unclamped
            tgt = x
            out = self.norm(tgt)
            hs.append(out)
            # Refine in logit space; boxes stay float32 and carry no gradient between layers.
            boxes = (inverse_sigmoid(ref) + self.bbox_embed(out).float()).sigmoid()
            ref = boxes.detach()

        return DecoderOutput(
            hs=torch.stack(hs),
            ref_boxes=torch.stack(refs),
            presence_logits=torch.stack(presence_logits) if presence_logits else None,
            pred_boxes=boxes,
        )
