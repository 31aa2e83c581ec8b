"""Helpers for comparing state dicts with the official manifests (shared/ and fixtures)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "tests" / "fixtures"


def read_manifest(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``key -> (shape, dtype)`` from a tsv of ``key<TAB>(d0, d1, ...)<TAB>dtype`` rows."""
    out = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        dims = tuple(int(s) for s in shape.strip("()").replace(" ", "").split(",") if s)
        out[key] = (dims, dtype)
    return out


def official_manifest() -> dict[str, tuple[tuple[int, ...], str]]:
    return read_manifest(SHARED / "reference" / "sam3_official_state_dict.tsv")


def state_manifest(state: dict, prefix: str = "") -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        prefix + k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state.items()
    }
