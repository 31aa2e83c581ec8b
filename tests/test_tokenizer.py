"""Parity of `SimpleTokenizer` with the official sam3 tokenizer (fixture from gen_text.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sam3video.errors import InvalidInputError, SourceNotFoundError
from sam3video.model.tokenizer import SimpleTokenizer, default_bpe_path

FIXTURE = Path(__file__).parent / "fixtures" / "tokenizer_cases.json"
START, END = 49406, 49407


@pytest.fixture(scope="module")
def cases() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def tok() -> SimpleTokenizer:
    return SimpleTokenizer(context_length=32)


def test_fixture_is_rich(cases):
    assert len(cases["strings"]) >= 30
    assert any(len(ids) > 30 for ids in cases["encode"])  # some string is truncated
    assert any(0 in ids for ids in cases["encode"])  # a genuine id 0


def test_encode_matches_official(tok, cases):
    for text, expected in zip(cases["strings"], cases["encode"], strict=True):
        assert tok.encode(text) == expected, repr(text)


@pytest.mark.parametrize("length", [32, 8])
def test_call_matches_official(cases, length):
    tok = SimpleTokenizer(context_length=length)
    got = tok(cases["strings"])
    expected = torch.tensor(cases[f"tokens_{length}"], dtype=torch.long)
    assert got.dtype == torch.long and got.shape == (len(cases["strings"]), length)
    mismatched = [s for s, a, b in zip(cases["strings"], got, expected) if not torch.equal(a, b)]
    assert not mismatched, mismatched


def test_spec_check_vectors(tok):
    def row(ids):
        return ids + [0] * (32 - len(ids))

    got = tok(["person", "a red car", "visual", "  A  Red&amp;CAR!  "])
    assert got.tolist() == [
        row([START, 2533, END]),
        row([START, 320, 736, 1615, END]),
        row([START, 7195, END]),
        row([START, 320, 736, 261, 1615, 256, END]),
    ]


def test_truncation_forces_end_token(tok):
    text = " ".join(["dog"] * 100)
    ids = tok(text)[0]
    assert ids[0] == START and ids[-1] == END
    assert (ids == END).sum() == 1 and (ids == 0).sum() == 0
    # Exactly 31 ids fit: start + 30 words, then END replaces the 31st word.
    assert ids[1:31].tolist() == tok.encode(text)[:30]
    # At exactly context_length ids no truncation happens (30 words + start + end).
    exact = tok(" ".join(["dog"] * 30))[0]
    assert exact.tolist() == [START] + [tok.encode("dog")[0]] * 30 + [END]


def test_single_string_and_empty(tok):
    assert tok("person").shape == (1, 32)
    assert tok("").tolist()[0][:3] == [START, END, 0]
    assert tok([]).shape == (0, 32)


def test_cache_is_bounded():
    tok = SimpleTokenizer(cache_size=3)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    first = [tok.encode(w) for w in words]
    assert len(tok._cache) == 3
    assert [tok.encode(w) for w in words] == first  # evicted words are recomputed identically


def test_default_bpe_path_is_packaged():
    assert default_bpe_path().is_file()


def test_missing_bpe_path_raises(tmp_path):
    missing = tmp_path / "nope.txt.gz"
    with pytest.raises(SourceNotFoundError, match="nope.txt.gz"):
        SimpleTokenizer(bpe_path=missing)
    with pytest.raises(FileNotFoundError):  # also the built-in exception
        SimpleTokenizer(bpe_path=str(missing))


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["ok", 5], ("ok", None)])
def test_non_str_inputs_raise(tok, bad):
    with pytest.raises(InvalidInputError, match="text"):
        tok(bad)


def test_encode_non_str_raises(tok):
    with pytest.raises(InvalidInputError, match="text"):
        tok.encode(123)  # type: ignore[arg-type]
