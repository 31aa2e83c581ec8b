"""The shapes world's vocabulary: shape outlines, named colours and noun phrases.

Shapes (`SHAPES`)
  * Each shape is a list of closed contours in unit coordinates, centred on the origin, at
    angle 0: the first contour is filled, later ones are holes (only the ring has one). The
    "radius" of an object scales these coordinates; the outlines are sized so that shapes of
    one radius look about as large as each other (the square's half side is 0.85, the star's
    tips reach 1.1).
  * `outer_radius` (the farthest outline point, any rotation) and `inner_radius` (the largest
    centred disc inside the filled area) let scenarios place objects with guarantees, e.g. a
    shape wholly inside another.
  * Circles are polygons with a vertex every ~3 sub-pixels of the supersampled raster (3/4
    of a pixel), so their edge is smooth at any size.

Colours (`COLOURS`) are well separated hues plus white; each instance jitters its colour a
little (see `sam3video.data.world`), never far enough to be taken for another name.

Phrases: every instance answers to four noun phrases, most specific first:
``"<colour> <shape>"``, ``"<shape>"``, ``"<colour> shape"``, ``"shape"`` (`phrases_for`).
"""

from __future__ import annotations

import math

from sam3video.errors import InvalidInputError

__all__ = [
    "COLOURS",
    "PHRASE_LEVELS",
    "SHAPES",
    "contours",
    "inner_radius",
    "outer_radius",
    "phrase_matches",
    "phrases_for",
    "vocabulary",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "hexagon", "cross")

# Base RGB of each colour name (instances jitter it by at most 12 per channel).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (40, 185, 60),
    "blue": (40, 85, 230),
    "yellow": (240, 220, 35),
    "purple": (145, 55, 200),
    "orange": (250, 140, 25),
    "white": (245, 245, 245),
}

# The phrase levels, most specific first (the order of `phrases_for`).
PHRASE_LEVELS: tuple[str, ...] = ("colour_shape", "shape", "colour", "any")

_RING_HOLE = 0.55  # the ring's inner radius, relative to its outer radius
_CROSS_ARM = 0.34  # the cross's half arm width
_STAR_INNER = 0.45  # the star's inner vertices, relative to its tips


def _regular(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
    return [
        (
            radius * math.cos(phase + 2 * math.pi * i / n),
            radius * math.sin(phase + 2 * math.pi * i / n),
        )
        for i in range(n)
    ]


def _circle_vertices(radius_px: float) -> int:
    """Vertices for a circle of ``radius_px`` supersampled pixels: one per ~3 of them (the
    chords then stray from the circle by under 3**2 / (8 radius_px) sub-pixels)."""
    return max(16, min(720, int(math.ceil(2 * math.pi * radius_px / 3.0))))


def contours(shape: str, radius_px: float = 64.0) -> list[list[tuple[float, float]]]:
    """Outline of ``shape`` in unit coordinates (first contour filled, the others holes).

    Args:
        shape: one of `SHAPES`.
        radius_px: the drawn radius in (supersampled) pixels; only the circle's and the
            ring's vertex count depend on it.
    """
    if shape == "circle":
        return [_regular(_circle_vertices(radius_px), 1.0, 0.0)]
    if shape == "ring":
        n = _circle_vertices(radius_px)
        return [_regular(n, 1.0, 0.0), _regular(n, _RING_HOLE, 0.0)]
    if shape == "square":
        h = 0.85
        return [[(-h, -h), (h, -h), (h, h), (-h, h)]]
    if shape == "triangle":
        # Circumradius 1.1, one vertex pointing up (image y grows downwards).
        return [_regular(3, 1.1, -math.pi / 2)]
    if shape == "hexagon":
        return [_regular(6, 1.0, 0.0)]
    if shape == "star":
        tips = _regular(5, 1.1, -math.pi / 2)
        inner = _regular(5, 1.1 * _STAR_INNER, -math.pi / 2 + math.pi / 5)
        return [[p for pair in zip(tips, inner) for p in pair]]
    if shape == "cross":
        a, b = _CROSS_ARM, 1.0
        return [
            [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a)]
            + [(a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
        ]
    raise InvalidInputError(f"shape: expected one of {SHAPES}, got {shape!r}")


def outer_radius(shape: str) -> float:
    """Farthest point of the outline from the centre, in radius units (any rotation)."""
    return max(math.hypot(x, y) for x, y in contours(shape)[0])


def inner_radius(shape: str) -> float:
    """Radius of the largest centred disc inside the shape's filled area (0 for the ring)."""
    if shape == "ring":
        return 0.0
    if shape == "circle":
        # The polygon's edge midpoints are slightly inside the unit circle (16 vertices at
        # least).
        return math.cos(math.pi / 16)
    pts = contours(shape)[0]
    best = math.inf
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        # Distance from the origin to the edge segment.
        dx, dy = x1 - x0, y1 - y0
        t = max(0.0, min(1.0, -(x0 * dx + y0 * dy) / (dx * dx + dy * dy)))
        best = min(best, math.hypot(x0 + t * dx, y0 + t * dy))
    return best


def phrases_for(shape: str, colour: str) -> tuple[str, ...]:
    """The four noun phrases of an instance, most specific first (see `PHRASE_LEVELS`)."""
    return (f"{colour} {shape}", shape, f"{colour} shape", "shape")


def phrase_matches(phrase: str, shape: str, colour: str) -> bool:
    """Whether ``phrase`` refers to an instance of ``shape`` and ``colour``."""
    return phrase in phrases_for(shape, colour)


def vocabulary(
    shapes: tuple[str, ...] | list[str] = SHAPES,
    colours: tuple[str, ...] | list[str] | dict[str, tuple[int, int, int]] = tuple(COLOURS),
) -> list[str]:
    """Every phrase a world of these shapes and colours can use, sorted."""
    words = {"shape"}
    for shape in shapes:
        for colour in colours:
            words.update(phrases_for(shape, colour))
    return sorted(words)
