"""SAM 3.1's memory attention (``tracker.model.transformer.encoder``): *decoupled* keys.

SAM 3.0 attends from the frame's tokens to the memory features alone. SAM 3.1 also keeps each
memory frame's *image features* (the propagation neck's lowest level) and builds the
cross-attention from two sources that are projected separately and summed:

- queries ``image_cross_attn_q_proj(image) + cross_attn_q_proj(norm2(tgt))``, where ``image``
  is the current frame's raw features (shared by all buckets, unchanged through the layers)
  and ``tgt`` the running per-bucket tokens;
- keys ``image_cross_attn_k_proj(memory_image) + cross_attn_k_proj(memory) + memory_image_pos``
  (the memory frames' image features, their per-bucket memories, and the image features'
  sine encoding plus the temporal embedding); the object-pointer tokens have no image: their
  image part is zero (so the key gets the projection's bias) and their position is the
  pointer encoding;
- values ``cross_attn_v_proj(memory)``.

Every layer is pre-norm: RoPE self-attention (no positions added), the decoupled RoPE
cross-attention (8 heads of 32 at full size; pointer keys not rotated) and a GELU FFN; a final
LayerNorm follows the layers. Before the first layer the frame tokens get ``0.1 * src_pos``.
RoPE is the 2-D axial rotation of SAM 3.0 (`sam3video.model.memory_attention`).

Shapes: ``B`` buckets, ``HW`` frame tokens (5184 at full size), ``C`` = d_model (256),
``Lm`` memory-frame tokens (``F * HW``), ``P`` pointer tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.memory_attention import MemoryAttentionStackBase, PreNormLayerBase
from sam3video.model.position_encoding import apply_rope


def rope_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    num_heads: int,
    cos: Tensor,
    sin: Tensor,
    num_k_exclude_rope: int = 0,
) -> Tensor:
    """Multi-head attention of projected ``q (B, Lq, C)``, ``k``/``v (B, Lk, C)`` -> ``(B, Lq, C)``.

    Queries and the first ``Lk - num_k_exclude_rope`` keys are rotated with the ``(Lq, C /
    heads / 2)`` tables (tiled over the memory frames); the last keys are not. ``q`` and ``k``
    must be fresh projections: with one head their head view is themselves, rotated in place.
    """
    b, lq, c = q.shape
    lk = k.shape[1]
    d = c // num_heads

    def heads(x: Tensor) -> Tensor:
        # A contiguous (B, heads, L, d) copy: RoPE rotates it in place (no out-of-place
        # rotation, no cat of the unrotated pointer keys), and torch's CPU flash kernel runs
        # ~5-10 % faster on contiguous q/k/v than on the transposed (B, L, heads, d) views.
        return x.reshape(x.shape[0], x.shape[1], num_heads, d).transpose(1, 2).contiguous()

    q = apply_rope(heads(q), cos, sin, inplace=True)
    k, v = heads(k), heads(v)
    num_rope = lk - num_k_exclude_rope
    if num_rope > 0:
        head = k[:, :, :num_rope]
        rotated = apply_rope(head, cos, sin, inplace=True)
        if rotated is not head:  # rotated out of place (another dtype, autograd, MPS)
            k = torch.cat([rotated, k[:, :, num_rope:]], dim=2)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, lq, c)


class DecoupledMemoryAttentionLayer(PreNormLayerBase):
    """One pre-norm layer; attribute names are the official state-dict names."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int) -> None:
        super().__init__()
        if d_model % num_heads or (d_model // num_heads) % 4:
            raise InvalidInputError(
                f"num_heads: expected a divisor of d_model={d_model} leaving a head width "
                f"divisible by 4 (2-D RoPE), got {num_heads}"
            )
        self.d_model = d_model
        self.num_heads = num_heads
        self.self_attn_q_proj = nn.Linear(d_model, d_model)
        self.self_attn_k_proj = nn.Linear(d_model, d_model)
        self.self_attn_v_proj = nn.Linear(d_model, d_model)
        self.self_attn_out_proj = nn.Linear(d_model, d_model)
        self.cross_attn_q_proj = nn.Linear(d_model, d_model)
        self.cross_attn_k_proj = nn.Linear(d_model, d_model)
        self.cross_attn_v_proj = nn.Linear(d_model, d_model)
        self.cross_attn_out_proj = nn.Linear(d_model, d_model)
        self.image_cross_attn_q_proj = nn.Linear(d_model, d_model)
        self.image_cross_attn_k_proj = nn.Linear(d_model, d_model)
        self._init_ffn_and_norms(d_model, dim_feedforward)

    def forward(
        self,
        image: Tensor,
        tgt: Tensor,
        memory_image: Tensor,
        memory: Tensor,
        memory_image_pos: Tensor,
        cos: Tensor,
        sin: Tensor,
        num_k_exclude_rope: int = 0,
    ) -> Tensor:
        """``image (1|B, HW, C)``, ``tgt (B, HW, C)``, ``memory_image``/``memory_image_pos
        (1|B, L, C)`` (pointer rows included), ``memory (B, L, C)`` -> ``(B, HW, C)``."""
        x = self.norm1(tgt)
        att = rope_attention(
            self.self_attn_q_proj(x),
            self.self_attn_k_proj(x),
            self.self_attn_v_proj(x),
            self.num_heads,
            cos,
            sin,
        )
        tgt = tgt + self.self_attn_out_proj(att)

        x = self.norm2(tgt)
        q = self.image_cross_attn_q_proj(image) + self.cross_attn_q_proj(x)
        k = self.image_cross_attn_k_proj(memory_image) + self.cross_attn_k_proj(memory)
        k = k + memory_image_pos
        att = rope_attention(
            q, k, self.cross_attn_v_proj(memory), self.num_heads, cos, sin, num_k_exclude_rope
        )
        tgt = tgt + self.cross_attn_out_proj(att)

        return self._ffn_residual(tgt, F.gelu)


class DecoupledMemoryAttention(MemoryAttentionStackBase):
    """Stack of `DecoupledMemoryAttentionLayer` plus a final LayerNorm (keys ``layers.{i}``,
    ``norm``)."""

    def __init__(
        self,
        d_model: int,
        num_layers: int,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__(
            d_model,
            num_heads,
            rope_theta,
            (DecoupledMemoryAttentionLayer(d_model, num_heads, ffn_dim) for _ in range(num_layers)),
        )

    def forward(
        self,
        image: Tensor,
        src: Tensor,
        src_pos: Tensor,
        memory_image: Tensor,
        memory: Tensor,
        memory_image_pos: Tensor,
        pointer_pos: Tensor | None = None,
    ) -> Tensor:
        """Condition ``B`` buckets' views of the current frame on their memories.

        ``image (1, HW, C)``: the frame's raw features; ``src``/``src_pos (B or 1, HW, C)``:
        the same features per bucket and their sine encoding; ``memory_image``/
        ``memory_image_pos (1, Lm, C)``: the memory frames' image features and positions
        (sine + temporal); ``memory (B, Lm + P, C)``: the buckets' spatial memories then ``P``
        pointer tokens; ``pointer_pos (1 or B, P, C)``: the pointers' temporal encodings
        (``None`` when ``P = 0``; the official code reads them from batch 0). Returns
        ``(B, HW, C)``.
        """
        b, n, c = memory.shape[0], src.shape[1], src.shape[2]
        lm = memory_image.shape[1]
        num_ptr = memory.shape[1] - lm
        if num_ptr < 0 or (pointer_pos is None) != (num_ptr == 0):
            raise InvalidInputError(
                f"pointer_pos: expected {num_ptr} pointer positions (memory length "
                f"{memory.shape[1]} minus memory image length {lm}), got "
                f"{None if pointer_pos is None else tuple(pointer_pos.shape)}"
            )
        if memory_image_pos.shape[1] != lm:
            raise InvalidInputError(
                f"memory_image_pos: expected length {lm}, got {memory_image_pos.shape[1]}"
            )
        side = math.isqrt(n)
        if side * side != n or lm % n:
            raise InvalidInputError(
                f"src/memory_image: expected a square grid of tokens and whole memory frames, "
                f"got {n} frame tokens and {lm} memory tokens"
            )
        if num_ptr:
            if pointer_pos.shape[1] != num_ptr:
                raise InvalidInputError(
                    f"pointer_pos: expected {num_ptr} positions, got {pointer_pos.shape[1]}"
                )
            # Pointers have no image: zero features, and their own (temporal) positions.
            pad = memory_image.new_zeros(memory_image.shape[0], num_ptr, c)
            memory_image = torch.cat([memory_image, pad], dim=1)
            memory_image_pos = torch.cat(
                [memory_image_pos, pointer_pos[:1].to(memory_image_pos.dtype)], dim=1
            )
        cos, sin = self._rope_tables(side, src.device)
        out = src + 0.1 * src_pos
        if out.shape[0] != b:
            out = out.expand(b, -1, -1)
        for layer in self.layers:
            out = layer(image, out, memory_image, memory, memory_image_pos, cos, sin, num_ptr)
        return self.norm(out)


class MultiplexTransformerWrapper(nn.Module):
    """Holds the memory attention as ``encoder`` (official ``TransformerWrapper``, no decoder)."""

    def __init__(self, encoder: DecoupledMemoryAttention) -> None:
        super().__init__()
        self.encoder = encoder
        self.d_model = encoder.d_model

    def forward(self, *args, **kwargs) -> Tensor:
        """See `DecoupledMemoryAttention.forward`."""
        return self.encoder(*args, **kwargs)
