"""Fixtures for the tokenizer and the text encoder, from the official ``sam3`` code.

Run from the repository root with the reference venv::

    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_text.py

Writes:
- ``tests/fixtures/tokenizer_cases.json``: official token ids of tricky strings, at context
  lengths 32 and 8, plus the un-truncated ``encode`` ids;
- ``tests/fixtures/text_encoder.pt``: the official ``VETextEncoder`` at the tiny sizes of
  ``tiny_config()`` (``official_builders.build_official_text_encoder``) with synthetic
  weights (prefix ``detector.backbone.language_backbone.``): tokens, encoder token states,
  resized features (batch-first) and the padding mask.
"""

from __future__ import annotations

import json

import torch
from _common import BPE_PATH, FIXTURES, ROOT, load_synthetic, save_fixture
from official_builders import build_official_text_encoder
from sam3.model.tokenizer_ve import SimpleTokenizer

from sam3video.model.config import tiny_config

PREFIX = "detector.backbone.language_backbone."

LONG_TEXT = " ".join(
    f"word{i} the quick brown fox jumps over the lazy dog"[: 6 + (i % 7)] for i in range(100)
)

STRINGS = [
    "person",
    "a red car",
    "visual",
    "<text placeholder>",
    "  A  Red&amp;CAR!  ",
    "",
    "!",
    "!!",
    "hello!world",
    "wow!$ and !~",  # a genuine id 0 ("!" without </w>) inside a pre-token
    "?!?!... ---",
    "Tom &amp;amp; Jerry",
    "&lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;apos&#39; &nbsp;x",
    "naïve café résumé Ångström",
    "Straße İstanbul ΣΊΣΥΦΟΣ",
    "cafÃ© mojibake",
    "日本語のテキスト 中文 한국어",
    "emoji 🐶🐱 family 👨‍👩‍👧 flag 🇫🇷",
    "it's they're we've I'm you'll he'd can't",
    "IT'S SHOUTING'S",
    "MiXeD CaSe WoRdS",
    "3.14159 2024-06-01 1,000,000 0x1F",
    "tabs\tand\nnewlines\r\n  and   spaces",
    "   leading and trailing spaces   ",
    "\u200bzero\u200bwidth\u00a0nbsp",
    "Ελληνικά русский العربية हिन्दी",
    "a" * 60,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "<start_of_text> literal <END_OF_TEXT> specials",
    "e\u0301 combining accent",
    "control\x00\x07chars\x7f",
    "snake_case-and-kebab_case/path\\back",
    "$100 @user #hashtag 50% a+b=c ~tilde `tick`",
    "(parentheses) [brackets] {braces}",
    LONG_TEXT,
]

# Row 3 holds a genuine id 0, which the official mask rule marks as padding.
BATCH = ["person", "a red car", "visual", "wow!$ ok", LONG_TEXT]


def main() -> None:
    torch.manual_seed(0)
    cfg = tiny_config()
    t = cfg.text

    # Tokenizer cases.
    tok = SimpleTokenizer(bpe_path=str(BPE_PATH))
    cases = {
        "strings": STRINGS,
        "encode": [tok.encode(s) for s in STRINGS],
        "tokens_32": tok(STRINGS, context_length=32).tolist(),
        "tokens_8": tok(STRINGS, context_length=8).tolist(),
    }
    path = FIXTURES / "tokenizer_cases.json"
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cases, ensure_ascii=True) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1024:.1f} KiB)")

    # Text encoder at tiny sizes. VETextEncoder does not forward mlp_ratio/output_dim; the
    # default mlp_ratio 4.0 and output_dim 512 match the config (tiny keeps proj_dim 512).
    assert t.mlp_dim == 4 * t.width
    assert t.proj_dim == 512
    model = build_official_text_encoder(cfg)
    kept = load_synthetic(model, PREFIX)
    assert not kept, kept

    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        mask, feats_lnc, _ = model(BATCH, device="cpu")
        tokens = model.tokenizer(BATCH, context_length=t.context_length)
        _, states = model.encoder(tokens)

    save_fixture(
        "text_encoder",
        {
            "tokens": tokens,
            "encoder_states": states,  # (N, L, width)
            "features": feats_lnc.transpose(0, 1),  # official is seq-first; stored batch-first
            "pad_mask": mask,  # (N, L), True = padding
        },
        meta={
            "texts": BATCH,
            "prefix": PREFIX,
            "official_keys": {k: list(v.shape) for k, v in model.state_dict().items()},
            "sizes": {
                "context_length": t.context_length,
                "vocab_size": t.vocab_size,
                "width": t.width,
                "heads": t.heads,
                "layers": t.layers,
                "mlp_dim": t.mlp_dim,
                "proj_dim": t.proj_dim,
                "d_model": cfg.d_model,
            },
        },
    )


if __name__ == "__main__":
    main()
