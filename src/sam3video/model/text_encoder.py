"""SAM 3 text encoder: a CLIP-style causal transformer plus a linear resizer to ``d_model``.

Official prefix: ``detector.backbone.language_backbone.`` (``encoder.*``, ``resizer.*``).
The encoder returns every token state after ``ln_final`` (no pooling); ``text_projection``
is kept in the state dict for strict loading but never used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.common import MultiheadAttention
from sam3video.model.tokenizer import SimpleTokenizer


class TextMLP(nn.Module):
    """``c_fc -> exact GELU -> c_proj`` (keys ``c_fc``, ``c_proj``)."""

    def __init__(self, width: int, mlp_dim: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, mlp_dim)
        self.c_proj = nn.Linear(mlp_dim, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = TextMLP(width, mlp_dim)

    def forward(self, x: Tensor, causal_bias: Tensor) -> Tensor:
        """``x (N, L, width)``, ``causal_bias (L, L)`` additive -> ``(N, L, width)``."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_bias=causal_bias)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Stack of ``layers`` blocks under the key ``resblocks.{i}``."""

    def __init__(self, width: int, heads: int, layers: int, mlp_dim: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_dim) for _ in range(layers)
        )

    def forward(self, x: Tensor, causal_bias: Tensor) -> Tensor:
        for block in self.resblocks:
            x = block(x, causal_bias)
        return x


class TextTransformer(nn.Module):
    """CLIP-style causal text transformer (official ``language_backbone.encoder``).

    Token + learned position embeddings, ``layers`` pre-norm blocks with causal self-attention
    (no padding mask: padding comes after the end token, so real tokens never see it), then
    ``ln_final``. ``text_projection (width, proj_dim)`` is stored only.
    """

    def __init__(
        self,
        context_length: int,
        vocab_size: int,
        width: int,
        heads: int,
        layers: int,
        mlp_dim: int,
        proj_dim: int,
    ) -> None:
        super().__init__()
        if width % heads != 0:
            raise InvalidInputError(f"heads: expected a divisor of width={width}, got {heads}")
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.width = width
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, heads, layers, mlp_dim)
        self.ln_final = nn.LayerNorm(width, eps=1e-5)
        self.text_projection = nn.Parameter(torch.empty(width, proj_dim))
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens (N, L)`` long, ``L <= context_length`` -> token states ``(N, L, width)``."""
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise InvalidInputError(
                "tokens: expected a 2-D int64 tensor (N, L), "
                f"got shape {tuple(tokens.shape)} dtype {tokens.dtype}"
            )
        length = tokens.shape[1]
        if length > self.context_length:
            raise InvalidInputError(
                f"tokens: expected at most {self.context_length} tokens per row, got {length}"
            )
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        # Additive causal mask: -inf strictly above the diagonal.
        causal_bias = torch.full(
            (length, length), float("-inf"), dtype=x.dtype, device=x.device
        ).triu(1)
        x = self.transformer(x, causal_bias)
        return self.ln_final(x)


class TextEncoder(nn.Module):
    """Strings -> ``d_model`` token features and a padding mask (official ``VETextEncoder``).

    The tokenizer is plain Python state (no weights). ``resizer`` maps ``width -> d_model``.
    """

    def __init__(self, tokenizer: SimpleTokenizer, encoder: TextTransformer, d_model: int) -> None:
        super().__init__()
        if tokenizer.context_length > encoder.context_length:
            raise InvalidInputError(
                f"tokenizer.context_length: expected <= encoder.context_length="
                f"{encoder.context_length}, got {tokenizer.context_length}"
            )
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.resizer = nn.Linear(encoder.width, d_model)

    def encode_tokens(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``tokens (N, L)`` long -> ``(features (N, L, d_model), pad_mask (N, L) bool)``.

        ``pad_mask`` is ``tokens == 0`` (True = padding), the official rule; note that id 0 is
        also the symbol "!" inside a word, which this rule hides as well.
        """
        pad_mask = tokens == 0
        return self.resizer(self.encoder(tokens)), pad_mask

    def forward(
        self, texts: Sequence[str], device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Encode ``N`` strings: ``features (N, L, d_model)``, ``pad_mask (N, L)`` bool.

        ``L`` is the tokenizer's context length. ``device`` defaults to the module's device;
        features come out in the module's parameter dtype.
        """
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise InvalidInputError("texts: expected at least one string, got an empty sequence")
        if device is None:
            device = self.resizer.weight.device
        tokens = self.tokenizer(texts).to(device)
        return self.encode_tokens(tokens)
