"""The tracker's memory attention (``tracker.transformer.encoder``).

Pre-norm layers condition the current frame's tokens on the memory bank: RoPE self-attention
over the frame, RoPE cross-attention to the memory tokens (spatial memories of past frames
followed by object-pointer tokens, which are not rotated), and a ReLU FFN.

2-D axial RoPE is computed with real cos/sin (MPS has no complex dtype) in float32. For token
``n`` of a ``W x W`` grid (row-major), ``x = n mod W`` and ``y = n div W``. Each head's channel
pairs ``(2j, 2j+1)`` rotate: the first ``head_dim / 4`` pairs by ``x * f_j``, the next
``head_dim / 4`` by ``y * f_j``, with ``f_j = theta ** (-4j / head_dim)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.position_encoding import apply_rope
from sam3video.model.two_way_transformer import Attention


def axial_rope_tables(
    head_dim: int,
    end_x: int,
    end_y: int,
    theta: float = 10000.0,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """``cos, sin`` of the axial RoPE angles, each ``(end_x * end_y, head_dim // 2)`` float32."""
    freqs = 1.0 / (
        theta ** (torch.arange(0, head_dim, 4, device=device)[: head_dim // 4].float() / head_dim)
    )
    t = torch.arange(end_x * end_y, dtype=torch.float32, device=device)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)
    return torch.cos(angles), torch.sin(angles)


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, block_rows: int = 512) -> Tensor:
    """Exact ``softmax(q k^T / sqrt(D)) v`` computed over blocks of query rows.

    ``q (..., Lq, D)``, ``k (..., Lk, D)``, ``v (..., Lk, Dv)`` (same leading dims) ->
    ``(..., Lq, Dv)``. Two plain matmuls per block and the softmax in place in one reused
    ``(block_rows, Lk)`` score buffer: on the CPU this runs the memory cross-attention at the
    GEMM rate (the fused flash kernel is ~1.2x off it with 256-wide heads, and a fresh
    score block per step costs its page faults), and unlike the fused kernel it accepts
    values narrower than the keys (see `RoPEAttention`).
    """
    lead, (lq, d), (lk, dv) = q.shape[:-2], q.shape[-2:], v.shape[-2:]
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        # Training: out= kernels have no autograd; the same attention, differentiable.
        return torch.softmax((q * d**-0.5) @ k.transpose(-1, -2), dim=-1) @ v
    qs = (q * d**-0.5).reshape(-1, lq, d)
    ks, vs = k.reshape(-1, lk, d), v.reshape(-1, lk, dv)
    out = q.new_empty(qs.shape[0], lq, dv)
    scores = q.new_empty(min(block_rows, lq), lk)
    for i in range(qs.shape[0]):
        k_t = ks[i].transpose(0, 1)
        for start in range(0, lq, block_rows):
            stop = min(start + block_rows, lq)
            block = scores[: stop - start]
            torch.mm(qs[i, start:stop], k_t, out=block)
            torch.softmax(block, dim=-1, out=block)
            torch.mm(block, vs[i], out=out[i, start:stop])
    return out.reshape(*lead, lq, dv)


class RoPEAttention(Attention):
    """`Attention` with 2-D RoPE on queries and keys (keys may span several frames)."""

    def forward(  # type: ignore[override]
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cos: Tensor,
        sin: Tensor,
        num_k_exclude_rope: int = 0,
    ) -> Tensor:
        """``q (B, Lq, C)``, ``k``/``v (B, Lk, kv_in_dim)``, ``cos``/``sin (Lq, head_dim/2)``.

        The first ``Lk - num_k_exclude_rope`` keys are rotated with the table tiled over
        frames (each memory frame reuses the query grid's positions); the rest (object
        pointers) are not rotated. Returns ``(B, Lq, C)``.
        """
        q = apply_rope(self._heads(self.q_proj(q)), cos, sin, inplace=True)
        k = self._heads(self.k_proj(k))
        num_k_rope = k.shape[-2] - num_k_exclude_rope
        if num_k_rope > 0:
            # Memory frames repeat the query grid's positions; pointer tokens stay as they are.
            head = k[:, :, :num_k_rope]
            rotated = apply_rope(head, cos, sin, inplace=True)
            if rotated is not head:  # rotated out of place (another dtype, MPS)
                k = torch.cat([rotated, k[:, :, num_k_rope:]], dim=2)
        if self._folds_values(q):
            # softmax rows sum to 1, so attn @ (m W^T + b) = (attn @ m) W^T + b: the
            # attention runs on the kv_in_dim-wide memories (64 vs 256 at full size, 37%
            # fewer FLOPs) and the value projection on its Lq outputs.
            h, dh = self.num_heads, self.internal_dim // self.num_heads
            memory = v[:, None].expand(-1, h, -1, -1)  # (B, heads, Lk, kv_in_dim)
            out = blocked_attention(q, k, memory)
            weight = self.v_proj.weight.view(h, dh, self.kv_in_dim)
            out = torch.einsum("bhlm,hdm->bhld", out, weight)
            out = out + self.v_proj.bias.view(1, h, 1, dh)
        else:
            out = F.scaled_dot_product_attention(q, k, self._heads(self.v_proj(v)))
        return self.out_proj(self._merge(out))

    def _folds_values(self, q: Tensor) -> bool:
        """Whether `forward` folds the value projection after a `blocked_attention`.

        On the CPU in float32, when the heads' memories are narrower than their values;
        elsewhere the fused kernel (flash / memory-efficient on CUDA) in the textbook order.
        """
        return (
            q.device.type == "cpu"
            and q.dtype == torch.float32
            and self.num_heads * self.kv_in_dim < self.internal_dim
        )


class PreNormLayerBase(nn.Module):
    """What SAM 3.0's and SAM 3.1's memory-attention layers share: the FFN (``linear1``,
    ``linear2``) and the three pre-norms (``norm1`` before self-attention, ``norm2`` before
    cross-attention, ``norm3`` before the FFN)."""

    def _init_ffn_and_norms(self, d_model: int, dim_feedforward: int) -> None:
        """Register the FFN and norms (after the attention modules: official key order)."""
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def _ffn_residual(self, tgt: Tensor, activation: Callable[[Tensor], Tensor]) -> Tensor:
        """``tgt + linear2(activation(linear1(norm3(tgt))))``, ``(B, L, C)`` -> same."""
        return tgt + self.linear2(activation(self.linear1(self.norm3(tgt))))


class MemoryAttentionStackBase(nn.Module):
    """``layers`` plus a final LayerNorm ``norm`` and the 2-D RoPE tables of the heads."""

    def __init__(
        self, d_model: int, num_heads: int, rope_theta: float, layers: Iterable[nn.Module]
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_heads = num_heads
        self.rope_theta = rope_theta
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)

    def _rope_tables(self, side: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``cos, sin`` for a ``side x side`` grid of queries, ``(side**2, head_dim / 2)``."""
        head_dim = self.d_model // self.num_heads
        return axial_rope_tables(head_dim, side, side, self.rope_theta, device=device)


class MemoryAttentionLayer(PreNormLayerBase):
    """Pre-norm layer: RoPE self-attention, RoPE cross-attention to memory, ReLU FFN."""

    def __init__(self, d_model: int, kv_in_dim: int, num_heads: int, dim_feedforward: int) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model, num_heads)
        self.cross_attn_image = RoPEAttention(d_model, num_heads, kv_in_dim=kv_in_dim)
        self._init_ffn_and_norms(d_model, dim_feedforward)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        cos: Tensor,
        sin: Tensor,
        num_k_exclude_rope: int,
    ) -> Tensor:
        """``tgt (B, HW, C)``, ``memory``/``memory_pos (B, L, kv_in_dim)`` -> ``(B, HW, C)``."""
        x = self.norm1(tgt)
        tgt = tgt + self.self_attn(x, x, x, cos, sin)
        if tgt.shape[0] != memory.shape[0]:  # one frame shared by all objects (see below)
            tgt = tgt.expand(memory.shape[0], -1, -1)
        # Positions enter only on the memory keys (not on the queries).
        x = self.norm2(tgt)
        tgt = tgt + self.cross_attn_image(
            x, memory + memory_pos, memory, cos, sin, num_k_exclude_rope
        )
        return self._ffn_residual(tgt, partial(F.relu, inplace=True))


class MemoryAttention(MemoryAttentionStackBase):
    """Stack of `MemoryAttentionLayer` plus a final LayerNorm (keys ``layers.{i}``, ``norm``).

    ``feat_size`` is the side of the (square) current-frame grid, used when the query length
    is ``feat_size**2``; other square lengths ``n`` use a ``sqrt(n)`` grid.
    """

    def __init__(
        self,
        d_model: int,
        kv_in_dim: int,
        num_layers: int,
        num_heads: int = 1,
        ffn_dim: int = 2048,
        feat_size: int = 72,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__(
            d_model,
            num_heads,
            rope_theta,
            (
                MemoryAttentionLayer(d_model, kv_in_dim, num_heads, ffn_dim)
                for _ in range(num_layers)
            ),
        )
        self.feat_size = feat_size

    def forward(
        self,
        src: Tensor,
        src_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        num_obj_ptr_tokens: int = 0,
    ) -> Tensor:
        """Condition the current frame on the memory bank.

        ``src``/``src_pos (B, HW, C)``: current-frame tokens (row-major grid) and their sine
        encoding; ``memory``/``memory_pos (B, L, kv_in_dim)``: ``F`` spatial memories of
        ``HW`` tokens each, then ``num_obj_ptr_tokens`` pointer tokens. Returns ``(B, HW, C)``.
        """
        b, n, _ = src.shape
        num_spatial = memory.shape[1] - num_obj_ptr_tokens
        if memory.shape[0] != b or memory_pos.shape != memory.shape:
            raise InvalidInputError(
                f"memory/memory_pos: expected equal shapes with batch {b}, got "
                f"{tuple(memory.shape)} and {tuple(memory_pos.shape)}"
            )
        if not 0 <= num_obj_ptr_tokens <= memory.shape[1] or num_spatial % n != 0:
            raise InvalidInputError(
                f"num_obj_ptr_tokens: expected memory length ({memory.shape[1]}) minus it to be "
                f"a multiple of the {n} query tokens, got {num_obj_ptr_tokens}"
            )
        side = self.feat_size if n == self.feat_size**2 else math.isqrt(n)
        if side * side != n:
            raise InvalidInputError(f"src: expected a square token grid, got {n} tokens")
        cos, sin = self._rope_tables(side, src.device)

        if b > 1 and src.stride(0) == 0 and src_pos.stride(0) == 0:
            # The objects share the frame (its features expanded over the batch): the first
            # self-attention sees identical rows, so it runs once and is expanded after it.
            src, src_pos = src[:1], src_pos[:1]
        out = src + 0.1 * src_pos  # the only use of the frame's own positional encoding
        for layer in self.layers:
            out = layer(out, memory, memory_pos, cos, sin, num_obj_ptr_tokens)
        return self.norm(out)
