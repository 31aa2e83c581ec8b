"""Seeds: the train / held-out split and the random streams of the shapes world.

* Split: seeds ``0 <= seed < HELDOUT_START`` are training seeds, seeds ``>= HELDOUT_START``
  are held out (`split_of_seed`). `train_seed(i)` and `heldout_seed(i)` number them.
* Streams: every random choice comes from ``numpy.random.Generator(PCG64(SeedSequence(seed,
  spawn_key=key)))`` with a key naming its purpose (the world, one object, one frame's
  noise, a scenario), so one object's draws do not depend on how many others there are and
  any frame can be rendered on its own. No global random state is touched.
* Only ``Generator.random`` (53-bit uniform doubles straight from the PCG64 stream) is used,
  whose output NumPy keeps stable; normals, choices and integers are derived from it here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from sam3video.errors import InvalidInputError

__all__ = ["HELDOUT_START", "heldout_seed", "make_rng", "split_of_seed", "train_seed"]

HELDOUT_START = 1_000_000_000

T = TypeVar("T")


def check_seed(seed: object, field: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"{field}: expected an int >= 0, got {seed!r}")
    return int(seed)


def split_of_seed(seed: int) -> str:
    """``"train"`` for ``seed < HELDOUT_START``, else ``"heldout"``."""
    return "train" if check_seed(seed) < HELDOUT_START else "heldout"


def train_seed(index: int) -> int:
    """The ``index``-th training seed (``0 <= index < HELDOUT_START``)."""
    index = check_seed(index, "index")
    if index >= HELDOUT_START:
        raise InvalidInputError(f"index: expected an int < {HELDOUT_START}, got {index}")
    return index


def heldout_seed(index: int) -> int:
    """The ``index``-th held-out seed."""
    return HELDOUT_START + check_seed(index, "index")


def make_rng(seed: int, *key: int) -> np.random.Generator:
    """The random stream of ``seed`` for the purpose ``key`` (small non-negative ints)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(rng.random())


def index(rng: np.random.Generator, n: int) -> int:
    return min(n - 1, int(float(rng.random()) * n))


def choice(rng: np.random.Generator, items: Sequence[T]) -> T:
    return items[index(rng, len(items))]


def chance(rng: np.random.Generator, p: float) -> bool:
    return float(rng.random()) < p


def angle(rng: np.random.Generator) -> float:
    return 2 * math.pi * float(rng.random())


def permutation(rng: np.random.Generator, n: int) -> list[int]:
    """A uniform permutation of ``range(n)`` (Fisher–Yates on `Generator.random`)."""
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = index(rng, i + 1)
        order[i], order[j] = order[j], order[i]
    return order
