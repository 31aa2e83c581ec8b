"""Reading the bit-packed boolean tensors of the planner fixtures."""

from __future__ import annotations

import numpy as np
import torch


def unpack_bits(tensors: dict, key: str) -> torch.Tensor:
    """The bool tensor stored as ``tensors[key]`` (``np.packbits`` of it, flattened) with its
    shape in ``tensors[key + "_shape"]``."""
    shape = tuple(tensors[f"{key}_shape"].tolist())
    bits = np.unpackbits(tensors[key].numpy())[: int(np.prod(shape))]
    return torch.from_numpy(bits.reshape(shape).astype(bool))
