"""Rasterising the shapes world: exact coverage, object textures and backgrounds.

Coverage (`coverage`)
  * An object is sampled on a ``SUPERSAMPLE`` x ``SUPERSAMPLE`` grid of sub-pixels inside its
    bounding box: a sub-pixel is covered when its centre is inside the outline (even-odd
    rule, so the ring's hole is empty; `_even_odd_fill`, an exact scanline parity fill); the
    per-pixel count of covered sub-pixels (0..16, an exact integer) is its coverage. The
    image blends the object in with ``count / 16`` (anti-aliased edges); the object's mask
    is ``count >= 8`` (the shape covers at least half of the pixel), exact and binary.
  * Sub-pixel ``k`` of pixel ``j`` has its centre at ``j + (k + 0.5) / 4`` in continuous image
    coordinates, where pixel ``j`` spans ``[j, j + 1)``.

Determinism: the vertices come from Python's ``math`` on scalars; the rest is element-wise
float64 arithmetic (+ - * / floor, each exactly rounded by IEEE 754: no BLAS, no
transcendental functions on arrays, no OpenCV), so equal seeds give equal bytes.

Textures (`texture_patch`): the object's colour times a brightness pattern fixed to the
object (it moves and turns with it): flat, stripes, checker or a gradient, at most +-20 %, so
the hue, which names the colour, stays.

Backgrounds (`background_field`): grey, low-saturation fields (a tint of at most 12 levels per
channel) made of a linear gradient, stripes and blurred value noise, kept within
``[15, 200]``: nothing in them looks like a saturated object or a white one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sam3video.data import seeds
from sam3video.data.shapes import contours

__all__ = ["SUPERSAMPLE", "Patch", "Texture", "background_field", "coverage", "texture_patch"]

SUPERSAMPLE = 4
HALF = SUPERSAMPLE * SUPERSAMPLE // 2  # mask threshold: at least half of the sub-pixels


@dataclass(frozen=True)
class Pose:
    """Where an object is on one frame: centre (pixels), radius (pixels), angle (radians)."""

    x: float
    y: float
    radius: float
    angle: float


@dataclass
class Patch:
    """An object's coverage on one frame: ``count`` int32 (h, w) in ``[0, 16]`` at rows
    ``y0:y0+h`` and columns ``x0:x0+w`` of the frame."""

    y0: int
    x0: int
    count: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.count >= HALF

    def full_mask(self, height: int, width: int) -> np.ndarray:
        out = np.zeros((height, width), bool)
        h, w = self.count.shape
        out[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = self.mask
        return out


@dataclass(frozen=True)
class Texture:
    """A brightness pattern in the object's own coordinates (unit: its radius)."""

    kind: str  # "flat", "stripes", "checker" or "gradient"
    amplitude: float  # at most 0.2
    period: float
    phase: float

    @staticmethod
    def random(rng: np.random.Generator) -> Texture:
        kind = seeds.choice(rng, ("flat", "stripes", "checker", "gradient"))
        return Texture(
            kind=kind,
            amplitude=seeds.uniform(rng, 0.08, 0.2),
            period=seeds.uniform(rng, 0.3, 0.8),
            phase=float(rng.random()),
        )


def coverage(shape: str, pose: Pose, height: int, width: int) -> Patch | None:
    """Sub-pixel coverage of ``shape`` at ``pose`` within the frame; None if it misses it."""
    s = SUPERSAMPLE
    c, n = math.cos(pose.angle), math.sin(pose.angle)
    r = pose.radius
    outlines = [
        [(pose.x + r * (u * c - v * n), pose.y + r * (u * n + v * c)) for u, v in contour]
        for contour in contours(shape, r * s)
    ]
    xs = [p[0] for p in outlines[0]]
    ys = [p[1] for p in outlines[0]]
    x0, x1 = max(0, math.floor(min(xs)) - 1), min(width, math.ceil(max(xs)) + 1)
    y0, y1 = max(0, math.floor(min(ys)) - 1), min(height, math.ceil(max(ys)) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    # Canvas coordinates: sub-pixel k's centre (at x0 + (k + 0.5) / s) is the integer k.
    rows, cols = (y1 - y0) * s, (x1 - x0) * s
    canvas = _even_odd_fill(
        [[((x - x0) * s - 0.5, (y - y0) * s - 0.5) for x, y in outline] for outline in outlines],
        rows,
        cols,
    )
    # Sum each pixel's s x s sub-pixels (rows, then columns; uint8 holds 16).
    h, w = y1 - y0, x1 - x0
    count = canvas.reshape(h, s, cols).sum(axis=1, dtype=np.uint8)
    count = count.reshape(h, w, s).sum(axis=2, dtype=np.uint8).astype(np.int32)
    if not count.any():
        return None
    return Patch(y0, x0, count)


def _even_odd_fill(outlines: list[list[tuple[float, float]]], rows: int, cols: int) -> np.ndarray:
    """uint8 (rows, cols): 1 where the integer point ``(col, row)`` is inside the outlines
    by the even-odd rule (scanline parity; an edge crosses row ``y`` when one end is at or
    above ``y`` and the other below it, so shared vertices count once)."""
    ax, ay, bx, by = [], [], [], []
    for outline in outlines:
        for (xa, ya), (xb, yb) in zip(outline, outline[1:] + outline[:1]):
            ax.append(xa)
            ay.append(ya)
            bx.append(xb)
            by.append(yb)
    xa_, ya_ = np.array(ax), np.array(ay)
    xb_, yb_ = np.array(bx), np.array(by)
    lo, hi = np.minimum(ya_, yb_), np.maximum(ya_, yb_)
    # Rows y with lo <= y < hi, clipped to the canvas.
    first = np.clip(np.ceil(lo), 0, rows).astype(np.int64)
    stop = np.clip(np.ceil(hi), 0, rows).astype(np.int64)
    counts = np.maximum(stop - first, 0)
    toggles = np.zeros((rows, cols + 1), np.uint8)
    if counts.sum():
        edge = np.repeat(np.arange(len(counts)), counts)
        row = first[edge] + (np.arange(len(edge)) - np.repeat(np.cumsum(counts) - counts, counts))
        y = row.astype(np.float64)
        x = xa_[edge] + (y - ya_[edge]) * (xb_[edge] - xa_[edge]) / (yb_[edge] - ya_[edge])
        # The crossing flips every point strictly to its right.
        col = np.clip(np.floor(x).astype(np.int64) + 1, 0, cols)
        np.add.at(toggles, (row, col), 1)
    # Parity of the flips to the left (uint8 sums wrap mod 256, which keeps the parity).
    return np.cumsum(toggles[:, :cols], axis=1, dtype=np.uint8) & 1


def _tri(z: np.ndarray) -> np.ndarray:
    """Triangle wave of period 1 in ``[0, 1]`` (no transcendental functions: exact)."""
    return np.abs(2.0 * (z - np.floor(z)) - 1.0)


def texture_patch(
    rgb: tuple[int, int, int], texture: Texture, pose: Pose, patch: Patch
) -> np.ndarray:
    """float64 (h, w, 3): the object's colour with its texture over ``patch``'s pixels."""
    h, w = patch.count.shape
    base = np.asarray(rgb, np.float64)
    if texture.kind == "flat":
        return np.broadcast_to(base, (h, w, 3))
    c, n = math.cos(pose.angle), math.sin(pose.angle)
    dx = (np.arange(w, dtype=np.float64) + (patch.x0 + 0.5 - pose.x))[None, :]
    dy = (np.arange(h, dtype=np.float64) + (patch.y0 + 0.5 - pose.y))[:, None]
    inv = 1.0 / pose.radius
    u = (dx * c + dy * n) * inv
    v = (dy * c - dx * n) * inv
    a = texture.amplitude
    if texture.kind == "stripes":
        mod = 1.0 + a * (2.0 * _tri(u / texture.period + texture.phase) - 1.0)
    elif texture.kind == "checker":
        mod = 1.0 + a * (2.0 * _tri(u / texture.period + texture.phase) - 1.0) * (
            2.0 * _tri(v / texture.period) - 1.0
        )
    else:  # gradient, along the object's own x axis
        mod = 1.0 + a * np.clip(u, -1.0, 1.0)
    return np.clip(mod[:, :, None] * base, 0.0, 255.0)


def background_field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """float64 (H, W, 3): a low-saturation textured background (see the module notes)."""
    yy = np.arange(height, dtype=np.float64)[:, None] + 0.5
    xx = np.arange(width, dtype=np.float64)[None, :] + 0.5
    diag = float(max(height, width))
    level = seeds.uniform(rng, 60.0, 150.0)
    # Linear gradient in a random direction.
    phi = seeds.angle(rng)
    slope = seeds.uniform(rng, -70.0, 70.0)
    grey = level + slope * ((xx * math.cos(phi) + yy * math.sin(phi)) / diag)
    # Stripes (half of the backgrounds).
    if seeds.chance(rng, 0.5):
        psi = seeds.angle(rng)
        period = seeds.uniform(rng, 6.0, 40.0)
        amp = seeds.uniform(rng, 4.0, 18.0)
        grey = grey + amp * (2.0 * _tri((xx * math.cos(psi) + yy * math.sin(psi)) / period) - 1.0)
    # Blurred value noise: a coarse random grid, bilinearly interpolated.
    cells = 2 + seeds.index(rng, 9)
    amp = seeds.uniform(rng, 0.0, 30.0)
    grid = rng.random((cells + 1, cells + 1)) * 2.0 - 1.0
    gy = yy[:, 0] * (cells / height)
    gx = xx[0, :] * (cells / width)
    iy = np.minimum(gy.astype(np.int64), cells - 1)
    ix = np.minimum(gx.astype(np.int64), cells - 1)
    fy = (gy - iy)[:, None]
    fx = (gx - ix)[None, :]
    top = grid[iy][:, ix] * (1.0 - fx) + grid[iy][:, ix + 1] * fx
    bottom = grid[iy + 1][:, ix] * (1.0 - fx) + grid[iy + 1][:, ix + 1] * fx
    grey = grey + amp * (top * (1.0 - fy) + bottom * fy)
    # Fine static grain.
    grain = seeds.uniform(rng, 0.0, 10.0)
    grey = grey + grain * (rng.random((height, width)) * 2.0 - 1.0)
    tint = rng.random(3) * 24.0 - 12.0
    field = grey[:, :, None] + tint[None, None, :]
    return np.clip(field, 15.0, 200.0)
