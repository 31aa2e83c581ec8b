"""CLIP byte-level BPE tokenizer, as used by SAM 3's text path.

The vocabulary is the standard CLIP merges file (``bpe_simple_vocab_16e6.txt.gz``, vendored in
``sam3video/assets``). Ids:

- ``0 .. 255``: the 256 byte symbols (GPT-2 byte-to-unicode table order);
- ``256 .. 511``: the same symbols with the end-of-word marker ``</w>``;
- ``512 .. 49405``: the 48,894 merges in file order;
- ``49406`` = ``<start_of_text>``, ``49407`` = ``<end_of_text>``.

Id 0 is the symbol ``"!"`` without ``</w>``; it doubles as the padding id, so the text mask
rule "token == 0 is padding" also hides a genuine mid-word ``"!"`` (the official behaviour).
"""

from __future__ import annotations

import gzip
import html
import os
from collections import OrderedDict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import ftfy
import regex
import torch

from sam3video.errors import InvalidInputError, SourceNotFoundError

START_TOKEN = "<start_of_text>"
END_TOKEN = "<end_of_text>"
_NUM_MERGES = 49152 - 256 - 2  # merges kept from the file (after its header line)
_END_OF_WORD = "</w>"
_NO_RANK = float("inf")


def default_bpe_path() -> Path:
    """Path of the vendored CLIP merges file."""
    return Path(str(resources.files("sam3video") / "assets" / "bpe_simple_vocab_16e6.txt.gz"))


def byte_symbols() -> tuple[list[str], list[int]]:
    """The 256 byte symbols in vocabulary order, and the byte value each one stands for.

    Printable Latin-1 bytes stand for themselves and come first; the remaining bytes
    (controls, space, ...) are mapped to code points 256+ so BPE never sees whitespace.
    """
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    rest = [b for b in range(256) if b not in set(keep)]
    order = keep + rest
    code_points = keep + [256 + i for i in range(len(rest))]
    return [chr(c) for c in code_points], order


# Bounds on what is tokenized (far beyond a noun phrase: 30 tokens are kept in the end).
MAX_TEXT_CHARS = 1000
MAX_WORD_BYTES = 128


def _clean(text: str) -> str:
    # Repair mojibake, unescape HTML (twice, for "&amp;amp;"), collapse whitespace, lower-case.
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class SimpleTokenizer:
    """Text -> CLIP token ids with start/end tokens, zero-padded to ``context_length``.

    Truncation rule: ``[START] + encode(text) + [END]`` longer than ``context_length`` keeps
    its first ``context_length`` ids and then overwrites the last one with ``END`` (49407), so
    every row holds exactly one start and one end token and no padding.

    Args:
        bpe_path: CLIP merges file (gzip). ``None`` uses the vendored copy.
        context_length: number of ids per row (32 in SAM 3).
        cache_size: how many distinct words keep their BPE result (least recently used
            words are dropped first).
    """

    def __init__(
        self,
        bpe_path: str | os.PathLike | None = None,
        context_length: int = 32,
        cache_size: int = 10_000,
    ) -> None:
        path = default_bpe_path() if bpe_path is None else Path(bpe_path)
        if not path.is_file():
            raise SourceNotFoundError(f"bpe_path: expected a gzip CLIP merges file, got {path}")
        if not isinstance(context_length, int) or context_length < 2:
            raise InvalidInputError(f"context_length: expected an int >= 2, got {context_length!r}")
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as exc:  # not gzip, truncated, binary
            raise InvalidInputError(
                f"bpe_path: expected a gzip CLIP merges file, got {path} "
                f"({type(exc).__name__}: {exc})"
            ) from None
        merges = [tuple(line.split()) for line in lines[1 : 1 + _NUM_MERGES]]
        if len(merges) < _NUM_MERGES or any(len(m) != 2 for m in merges):
            raise InvalidInputError(
                f"bpe_path: expected a CLIP merges file with {_NUM_MERGES} merge pairs after its "
                f"header line, got {path} with {len(merges)} usable lines"
            )

        symbols, byte_order = byte_symbols()
        self.byte_to_symbol = {b: s for b, s in zip(byte_order, symbols)}
        vocab = symbols + [s + _END_OF_WORD for s in symbols]
        vocab += ["".join(m) for m in merges]
        vocab += [START_TOKEN, END_TOKEN]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.bpe_ranks: dict[tuple[str, ...], int] = {m: i for i, m in enumerate(merges)}
        self.vocab_size = len(vocab)
        self.start_id = self.encoder[START_TOKEN]
        self.end_id = self.encoder[END_TOKEN]
        self.context_length = context_length

        self._cache_size = cache_size
        self._cache: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._specials = {START_TOKEN: (START_TOKEN,), END_TOKEN: (END_TOKEN,)}
        # Special tokens | contractions | letter runs | single digits | other non-space runs.
        specials = "|".join(regex.escape(t) for t in self._specials)
        self.pattern = regex.compile(
            specials + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )

    def _merge(self, word: str) -> tuple[str, ...]:
        """BPE of one byte-mapped pre-token: merge the lowest-rank adjacent pair until none is
        in the merge table."""
        parts = [*word[:-1], word[-1] + _END_OF_WORD]
        ranks = self.bpe_ranks
        while len(parts) > 1:
            best = min(zip(parts, parts[1:]), key=lambda pair: ranks.get(pair, _NO_RANK))
            if best not in ranks:
                break
            first, second = best
            # Merge every non-overlapping occurrence of the pair, left to right.
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(parts)

    def bpe(self, word: str) -> tuple[str, ...]:
        """Vocabulary symbols of one byte-mapped pre-token (cached, bounded)."""
        if word in self._specials:
            return self._specials[word]
        hit = self._cache.get(word)
        if hit is not None:
            self._cache.move_to_end(word)
            return hit
        out = self._merge(word)
        self._cache[word] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def encode(self, text: str, limit: int | None = None) -> list[int]:
        """BPE ids of ``text`` after cleaning, without start/end tokens.

        With ``limit``, stops once ``limit`` ids are known (the rest would be truncated away),
        so the cost is bounded by the context, not by the text. Inputs beyond any real noun
        phrase are cut first: the text to its first `MAX_TEXT_CHARS` characters and each
        pre-token (a letter run, a digit, a punctuation run) to its first `MAX_WORD_BYTES`
        bytes, because BPE is quadratic in the length of a word.
        """
        if not isinstance(text, str):
            raise InvalidInputError(f"text: expected a str, got {type(text).__name__}")
        ids: list[int] = []
        for match in self.pattern.finditer(_clean(text[:MAX_TEXT_CHARS])):
            if limit is not None and len(ids) >= limit:
                break
            raw = match.group().encode("utf-8")[:MAX_WORD_BYTES]
            word = "".join(self.byte_to_symbol[b] for b in raw)
            ids.extend(self.encoder[s] for s in self.bpe(word))
        return ids if limit is None else ids[:limit]

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids, ``LongTensor (N, context_length)``; a single str gives ``N = 1``.

        Each row is ``[49406] + encode(text) + [49407]`` then zeros; see the class docstring for
        the truncation rule.
        """
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence):
            raise InvalidInputError(
                f"texts: expected a str or a sequence of str, got {type(texts).__name__}"
            )
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidInputError(f"texts[{i}]: expected a str, got {type(t).__name__}")
        n, length = len(texts), self.context_length
        out = torch.zeros(n, length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.start_id, *self.encode(text, limit=length - 1), self.end_id]
            if len(ids) > length:
                ids = ids[: length - 1] + [self.end_id]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out
