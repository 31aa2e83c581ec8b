"""Scenario clips for semantic tests: planned occlusions and concept line-ups.

`occlusion_world` / `occlusion_clip`
  * A large occluder (circle or hexagon, not turning, in front, near the centre) and a small
    occludee that crosses the frame horizontally behind it at constant speed, turning. The
    speed is chosen so that the occludee is wholly inside the occluder's inscribed disc (with
    a 2-pixel margin, any rotation) on exactly ``hidden`` consecutive frames centred in the
    clip, and wholly clear of the occluder on the first and last frames.
  * Distractors (small, bouncing between the frame's sides) keep to bands above and below
    the occluder, so they never touch the occludee or the occluder.
  * The world is rendered and checked on construction. ``meta["hidden_frames"]``: the
    frames on which the occludee leaves no trace at all (its visible mask is empty and every
    pixel it touches is wholly covered by the occluder), one span that contains the planned
    frames (``meta["planned_hidden_frames"]``). ``meta["empty_frames"]``: the frames on which
    its visible mask is empty (the hidden ones, maybe one more at either end, where a
    sub-pixel of it still tints the occluder's anti-aliased edge). The occludee is visible
    on the first and last frames. Else `ConfigError` (e.g. too few frames for the hidden span
    asked).

`concept_world` / `concept_clip`
  * ``num_targets`` objects of the target colour and shape, plus distractors: one sharing the
    colour only, one sharing the shape only, then others of neither (as far as
    ``num_distractors`` goes). Each object moves and turns inside its own cell of a grid
    (bouncing off the cell's walls), so objects never overlap and stay in the frame.
  * ``meta = {"phrase": "<colour> <shape>", "targets": [ids], "colour_only": [ids],
    "shape_only": [ids]}``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sam3video.data import seeds
from sam3video.data.render import Texture
from sam3video.data.shapes import COLOURS, SHAPES, inner_radius, outer_radius
from sam3video.data.world import Clip, ObjectSpec, ShapesWorld, jitter_colour
from sam3video.errors import ConfigError, InvalidInputError

__all__ = ["concept_clip", "concept_world", "occlusion_clip", "occlusion_world"]

KEY_OCCLUSION, KEY_CONCEPT = 10, 11
_MARGIN = 2.0  # pixels between the hidden occludee and the occluder's edge


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect positions into ``[lo, hi]`` (a bounce off both walls)."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, (lo + hi) / 2)
    z = np.mod(x - lo, 2 * span)
    return lo + np.where(z > span, 2 * span - z, z)


def _spec(
    rng: np.random.Generator,
    shape: str,
    colour: str,
    radius: float,
    x: np.ndarray,
    y: np.ndarray,
    spin: float,
    z: float,
) -> ObjectSpec:
    t = np.arange(len(x), dtype=np.float64)
    return ObjectSpec(
        shape=shape,
        colour=colour,
        rgb=jitter_colour(rng, colour),
        radius=radius,
        texture=Texture.random(rng),
        z=z,
        x=np.asarray(x, np.float64),
        y=np.asarray(y, np.float64),
        angle=seeds.angle(rng) + spin * t,
        scale=np.ones(len(x)),
    )


def occlusion_world(
    seed: int,
    num_frames: int = 24,
    size: tuple[int, int] = (224, 224),
    hidden: int = 8,
    num_distractors: int = 2,
    **kwargs: Any,
) -> ShapesWorld:
    """A world where object ``meta["occludee"]`` passes wholly behind ``meta["occluder"]``
    for ``hidden`` frames (see the module notes). ``kwargs`` go to `ShapesWorld` (noise,
    fps)."""
    seed = seeds.check_seed(seed)
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise InvalidInputError(f"hidden: expected an int >= 1, got {hidden!r}")
    if not isinstance(num_frames, int) or num_frames < hidden + 2:
        raise InvalidInputError(
            f"num_frames: expected an int >= hidden + 2 = {hidden + 2}, got {num_frames!r}"
        )
    height, width = size
    unit = float(min(height, width))
    rng = seeds.make_rng(seed, KEY_OCCLUSION)
    big_shape = seeds.choice(rng, ("circle", "hexagon"))
    small_shape = seeds.choice(rng, [s for s in SHAPES if s != "ring"])
    small_r = unit * seeds.uniform(rng, 0.045, 0.06)
    ext = outer_radius(small_shape) * small_r
    inner, outer = inner_radius(big_shape), outer_radius(big_shape)
    off = unit * seeds.uniform(rng, -0.02, 0.02)
    cx = width / 2 + off
    cy = height / 2 + unit * seeds.uniform(rng, -0.03, 0.03)
    # Centre the hidden span: on an integer t_c for an odd count, a half-integer one for an
    # even count; then exactly `hidden` frames have |t - t_c| <= (hidden - 1) / 2 + 1 / 4.
    t_c = (num_frames - 1) // 2 + (0.5 if hidden % 2 == 0 else 0.0)
    bound = (hidden - 1) / 2 + 0.25
    near, far = min(t_c, num_frames - 1 - t_c), max(t_c, num_frames - 1 - t_c)
    # The occluder's radius R sets the speed, (inner R - ext - margin) / bound; R must let
    # the occludee be clear of the occluder on the end frames (R >= r_lo) and inside the
    # frame there (R <= r_hi).
    clear = 2.0
    slope = inner * near / bound - outer
    r_lo = (ext + clear + (ext + _MARGIN) * near / bound) / slope if slope > 0 else math.inf
    room = width / 2 - abs(off) - ext - 1.0
    r_hi = min(
        (bound * room / far + ext + _MARGIN) / inner,
        (min(cy, height - cy) - 1.0) / outer,
        0.3 * unit,
    )
    if not r_lo < r_hi:
        raise ConfigError(
            f"occlusion_world(num_frames={num_frames}, size={size}, hidden={hidden}): no "
            f"occluder size fits (hidden {hidden} frames out of {num_frames} needs an "
            f"occluder radius in [{r_lo:.1f}, {r_hi:.1f}] px); use more frames, or fewer "
            "hidden ones"
        )
    big_r = r_lo + (r_hi - r_lo) * seeds.uniform(rng, 0.2, 0.8)
    speed = (inner * big_r - ext - _MARGIN) / bound
    direction = 1.0 if seeds.chance(rng, 0.5) else -1.0
    t = np.arange(num_frames, dtype=np.float64)
    xs = cx + direction * speed * (t - t_c)
    ys = np.full(num_frames, cy)
    colours = list(COLOURS)
    big_colour = seeds.choice(rng, colours)
    small_colour = seeds.choice(rng, [c for c in colours if c != big_colour])
    occluder = _spec(
        rng,
        big_shape,
        big_colour,
        big_r,
        np.full(num_frames, cx),
        np.full(num_frames, cy),
        0.0,
        1.0,
    )
    occludee = _spec(
        rng, small_shape, small_colour, small_r, xs, ys, seeds.uniform(rng, -0.1, 0.1), 0.5
    )
    planned = [k for k in range(num_frames) if abs(k - t_c) <= bound]
    specs = [occludee, occluder]
    # Distractors in the bands above and below the occluder.
    for k in range(num_distractors):
        d_r = unit * seeds.uniform(rng, 0.035, 0.05)
        d_shape = seeds.choice(rng, list(SHAPES))
        d_ext = outer_radius(d_shape) * d_r
        above = k % 2 == 0
        lo_y, hi_y = (
            (d_ext, cy - outer * big_r - d_ext - _MARGIN)
            if above
            else (
                cy + outer * big_r + d_ext + _MARGIN,
                height - d_ext,
            )
        )
        if lo_y > hi_y:
            continue  # no room in this band at this size
        d_y = np.full(num_frames, seeds.uniform(rng, lo_y, hi_y))
        d_x = _fold(
            seeds.uniform(rng, d_ext, width - d_ext) + unit * seeds.uniform(rng, -0.03, 0.03) * t,
            d_ext,
            width - d_ext,
        )
        specs.append(
            _spec(
                rng,
                d_shape,
                seeds.choice(rng, colours),
                d_r,
                d_x,
                d_y,
                seeds.uniform(rng, -0.1, 0.1),
                float(rng.random()),
            )
        )
    meta = {"occludee": 1, "occluder": 2, "planned_hidden_frames": planned}
    world = ShapesWorld(seed, num_frames, size, objects=specs, meta=meta, **kwargs)
    hidden_frames, empty_frames = [], []
    for frame in range(num_frames):
        visible, amodal = world.masks(frame)[1], world.amodal_masks(frame)[1]
        if amodal.any() and not visible.any():
            empty_frames.append(frame)
            if _covered(world, frame, 1, 2):
                hidden_frames.append(frame)
    first, last = world.masks(0)[1].any(), world.masks(num_frames - 1)[1].any()
    if not (
        set(planned) <= set(hidden_frames)
        and _span(hidden_frames)
        and _span(empty_frames)
        and first
        and last
    ):
        raise ConfigError(
            f"occlusion_world(seed={seed}, num_frames={num_frames}, size={size}, "
            f"hidden={hidden}): expected the occludee hidden on frames {planned} (one span) "
            f"and visible on the first and last frames, got hidden {hidden_frames}, visible "
            f"first/last {bool(first)}/{bool(last)} (more frames may be needed)"
        )
    world.meta["empty_frames"] = empty_frames
    world.meta["hidden_frames"] = hidden_frames
    return world


def _span(frames: list[int]) -> bool:
    """A non-empty run of consecutive frames."""
    return bool(frames) and frames == list(range(frames[0], frames[-1] + 1))


def _covered(world: ShapesWorld, t: int, back: int, front: int) -> bool:
    """Whether every pixel that object ``back`` touches on frame ``t`` is wholly covered by
    object ``front`` (then ``back`` leaves no trace in the image)."""
    patches = world._render(t)[1]
    if back not in patches:
        return True
    if front not in patches:
        return False
    h, w = world.height, world.width
    touched = np.zeros((h, w), bool)
    full = np.zeros((h, w), bool)
    for obj_id, target, test in (
        (back, touched, lambda c: c > 0),
        (front, full, lambda c: c == 16),
    ):
        p = patches[obj_id]
        ph, pw = p.count.shape
        target[p.y0 : p.y0 + ph, p.x0 : p.x0 + pw] = test(p.count)
    return not (touched & ~full).any()


def occlusion_clip(seed: int, **kwargs: Any) -> Clip:
    """``occlusion_world(seed, **kwargs).render()``."""
    return occlusion_world(seed, **kwargs).render()


def concept_world(
    seed: int,
    num_frames: int = 16,
    size: tuple[int, int] = (224, 224),
    target: tuple[str, str] = ("red", "circle"),
    num_targets: int = 2,
    num_distractors: int = 3,
    **kwargs: Any,
) -> ShapesWorld:
    """A world with ``num_targets`` instances of ``target`` (colour, shape) among
    distractors, none overlapping (see the module notes)."""
    seed = seeds.check_seed(seed)
    colour, shape = target
    if colour not in COLOURS or shape not in SHAPES:
        raise InvalidInputError(
            f"target: expected (colour, shape) from {tuple(COLOURS)} x {SHAPES}, got {target!r}"
        )
    if not isinstance(num_targets, int) or num_targets < 0:
        raise InvalidInputError(f"num_targets: expected an int >= 0, got {num_targets!r}")
    if not isinstance(num_distractors, int) or num_distractors < 0:
        raise InvalidInputError(f"num_distractors: expected an int >= 0, got {num_distractors!r}")
    height, width = size
    rng = seeds.make_rng(seed, KEY_CONCEPT)
    other_colours = [c for c in COLOURS if c != colour]
    other_shapes = [s for s in SHAPES if s != shape]
    kinds: list[tuple[str, str, str]] = [("target", colour, shape)] * num_targets
    for k in range(num_distractors):
        if k == 0:
            kinds.append(("colour_only", colour, seeds.choice(rng, other_shapes)))
        elif k == 1:
            kinds.append(("shape_only", seeds.choice(rng, other_colours), shape))
        else:
            kinds.append(
                ("neither", seeds.choice(rng, other_colours), seeds.choice(rng, other_shapes))
            )
    n = len(kinds)
    cols = max(1, math.ceil(math.sqrt(n * width / height)))
    rows = max(1, math.ceil(n / cols))
    cell_w, cell_h = width / cols, height / rows
    cells = seeds.permutation(rng, rows * cols)[:n]
    order = seeds.permutation(rng, n)  # ids do not reveal the kind
    specs, meta = (
        [],
        {"phrase": f"{colour} {shape}", "targets": [], "colour_only": [], "shape_only": []},
    )
    t = np.arange(num_frames, dtype=np.float64)
    for obj_id, k in enumerate(order, start=1):
        kind, c, s = kinds[k]
        row, col = divmod(cells[k], cols)
        ext_max = 0.42 * min(cell_w, cell_h)
        r = ext_max / outer_radius(s) * seeds.uniform(rng, 0.6, 1.0)
        ext = outer_radius(s) * r
        x_lo, x_hi = col * cell_w + ext + 1, (col + 1) * cell_w - ext - 1
        y_lo, y_hi = row * cell_h + ext + 1, (row + 1) * cell_h - ext - 1
        speed = min(cell_w, cell_h) * seeds.uniform(rng, 0.01, 0.04)
        heading = seeds.angle(rng)
        xs = _fold(seeds.uniform(rng, x_lo, x_hi) + speed * math.cos(heading) * t, x_lo, x_hi)
        ys = _fold(seeds.uniform(rng, y_lo, y_hi) + speed * math.sin(heading) * t, y_lo, y_hi)
        spec = _spec(rng, s, c, r, xs, ys, seeds.uniform(rng, -0.1, 0.1), float(rng.random()))
        spec.obj_id = obj_id
        specs.append(spec)
        if kind != "neither":
            meta[kind + "s" if kind == "target" else kind].append(obj_id)
    for key in ("targets", "colour_only", "shape_only"):
        meta[key].sort()
    specs.sort(key=lambda sp: sp.obj_id)
    return ShapesWorld(seed, num_frames, size, objects=specs, meta=meta, **kwargs)


def concept_clip(seed: int, **kwargs: Any) -> Clip:
    """``concept_world(seed, **kwargs).render()``."""
    return concept_world(seed, **kwargs).render()
