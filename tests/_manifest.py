"""Helpers for comparing state dicts with the official manifests (committed fixtures).

``tests/fixtures/sam3_official_state_dict.tsv.gz`` is the official video model's state-dict
manifest (every key of Meta's ``sam3.pt``: key, shape, dtype), gzipped.
"""

from __future__ import annotations

import gzip
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MANIFEST = FIXTURES / "sam3_official_state_dict.tsv.gz"


def manifest_lines(path: Path = MANIFEST) -> list[str]:
    """The non-empty rows of a manifest tsv (``.gz`` or plain)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return [line for line in data.decode().splitlines() if line.strip()]


def read_manifest(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``key -> (shape, dtype)`` from a tsv of ``key<TAB>(d0, d1, ...)<TAB>dtype`` rows."""
    out = {}
    for line in manifest_lines(path):
        key, shape, dtype = line.split("\t")
        dims = tuple(int(s) for s in shape.strip("()").replace(" ", "").split(",") if s)
        out[key] = (dims, dtype)
    return out


def official_manifest() -> dict[str, tuple[tuple[int, ...], str]]:
    return read_manifest(MANIFEST)


def state_manifest(state: dict, prefix: str = "") -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        prefix + k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state.items()
    }
