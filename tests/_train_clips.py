"""A tiny clip source for the training tests: coloured squares moving on grey (no
dependence on the shapes world, whose own tests live elsewhere)."""

from __future__ import annotations

import numpy as np
import torch

from sam3video.train.data import ClipSample


class SquaresSource:
    """Two squares (red in front of blue) moving in straight lines; size ``size``."""

    def __init__(self, size: int = 224) -> None:
        self.size = size

    def sample(self, rng: np.random.Generator, num_frames: int) -> ClipSample:
        s = self.size
        frames = torch.full((num_frames, 3, s, s), 0.5)
        masks = torch.zeros(2, num_frames, s, s, dtype=torch.bool)
        pos = rng.uniform(0.1 * s, 0.6 * s, (2, 2))
        vel = rng.uniform(-0.02 * s, 0.02 * s, (2, 2))
        side = int(0.15 * s)
        colours = [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
        for t in range(num_frames):
            for i in range(2):
                x, y = (pos[i] + vel[i] * t).astype(int)
                masks[i, t, y : y + side, x : x + side] = True
            masks[1, t] &= ~masks[0, t]  # red is in front
            for i in (1, 0):
                for c in range(3):
                    frames[t, c][masks[i, t]] = colours[i][c]
        phrases = [("red square", "square"), ("blue square", "square")]
        return ClipSample(frames, masks, phrases, ("green circle",))
