"""The shapes world: moving, turning, occluding textured shapes with exact masks.

`ShapesWorld(seed, ...)` draws a clip's objects and background from ``seed`` (see
`sam3video.data.seeds`) and renders any frame on demand; `render_clip` renders all of it into
a `Clip` of arrays.

Objects (`ObjectSpec`)
  * A shape, a colour name, an RGB near the colour's base (+-12 per channel), a radius in
    pixels, a texture, a depth key ``z`` (higher is in front; fixed for the clip) and its
    trajectory: per-frame centre, angle and scale (the drawn radius is ``radius * scale``).
  * Random objects (`random_object`) start inside the frame, or (``p_enter``) outside it,
    heading in; they move with a velocity plus a small constant acceleration (speed capped at
    twice its start), turn at a constant rate and slowly grow or shrink. Some (``p_bounce``)
    bounce off the frame's edges; the others may leave it, and entering ones never bounce.
  * Ids are 1..N in drawing order of the specs; ``z`` orders them for occlusion.

Frames and masks: see `sam3video.data.render` (coverage, textures, background). Each frame
adds its own sensor noise (uniform, at most ``noise[1]`` levels, one amplitude per clip)
to the whole image, objects and background alike. ``masks(t)`` holds every object id, empty
where the object is hidden or outside the frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sam3video.data import seeds
from sam3video.data.render import (
    SUPERSAMPLE,
    Patch,
    Pose,
    Texture,
    background_field,
    coverage,
    texture_patch,
)
from sam3video.data.shapes import COLOURS, SHAPES, outer_radius, phrases_for
from sam3video.errors import InvalidInputError

__all__ = ["Clip", "Instance", "ObjectSpec", "ShapesWorld", "random_object", "render_clip"]

# Stream keys (see seeds.make_rng).
KEY_WORLD, KEY_BACKGROUND, KEY_OBJECT, KEY_NOISE = 0, 1, 2, 3


@dataclass(frozen=True)
class Instance:
    """What is known about one object of a clip."""

    obj_id: int
    shape: str
    colour: str
    rgb: tuple[int, int, int]
    radius: float  # pixels, at scale 1
    z: float  # higher is in front
    phrases: tuple[str, ...]


@dataclass
class ObjectSpec:
    """One object and its trajectory; ``x``, ``y``, ``angle``, ``scale`` have one entry per
    frame (pixels, radians, factor). ``obj_id`` 0 means "its position in the list, from 1"."""

    shape: str
    colour: str
    rgb: tuple[int, int, int]
    radius: float
    texture: Texture
    z: float
    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    scale: np.ndarray
    obj_id: int = 0

    def pose(self, t: int) -> Pose:
        return Pose(
            float(self.x[t]),
            float(self.y[t]),
            self.radius * float(self.scale[t]),
            float(self.angle[t]),
        )


def jitter_colour(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    base = COLOURS[colour]
    jitter = rng.random(3) * 24.0 - 12.0
    return tuple(int(min(255, max(0, round(c + j)))) for c, j in zip(base, jitter))  # type: ignore[return-value]


def random_object(
    rng: np.random.Generator,
    num_frames: int,
    height: int,
    width: int,
    *,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
    radius: tuple[float, float] = (0.07, 0.18),
    speed: tuple[float, float] = (0.004, 0.03),
    p_enter: float = 0.25,
    p_bounce: float = 0.5,
) -> ObjectSpec:
    """A random object (see the module notes); ``radius`` and ``speed`` are fractions of
    ``min(height, width)`` (speed per frame)."""
    unit = float(min(height, width))
    shape = seeds.choice(rng, list(shapes))
    colour = seeds.choice(rng, list(colours))
    rgb = jitter_colour(rng, colour)
    texture = Texture.random(rng)
    z = float(rng.random())
    r = unit * seeds.uniform(rng, *radius)
    grow = seeds.uniform(rng, -0.008, 0.008)
    scale = np.clip(1.0 + grow * np.arange(num_frames, dtype=np.float64), 0.7, 1.4)
    spin = seeds.uniform(rng, -0.12, 0.12)
    angle = seeds.angle(rng) + spin * np.arange(num_frames, dtype=np.float64)
    v0 = unit * seeds.uniform(rng, *speed)
    heading = seeds.angle(rng)
    acc = v0 * seeds.uniform(rng, 0.0, 0.06)
    acc_dir = seeds.angle(rng)
    ext = outer_radius(shape) * r  # reach of the outline at scale 1
    if seeds.chance(rng, p_enter):
        edge = seeds.index(rng, 4)  # 0 left, 1 right, 2 top, 3 bottom
        along = float(rng.random())
        outside = ext * 1.45 + v0 * seeds.uniform(rng, 0.0, min(8.0, num_frames / 2))
        inward = (0.0, math.pi, math.pi / 2, -math.pi / 2)[edge]
        heading = inward + seeds.uniform(rng, -0.6, 0.6)
        if edge < 2:
            x = -outside if edge == 0 else width + outside
            y = along * height
        else:
            x = along * width
            y = -outside if edge == 2 else height + outside
        bounce = False
    else:
        x = seeds.uniform(rng, min(ext, width / 2), max(width - ext, width / 2))
        y = seeds.uniform(rng, min(ext, height / 2), max(height - ext, height / 2))
        bounce = seeds.chance(rng, p_bounce)
    vx, vy = v0 * math.cos(heading), v0 * math.sin(heading)
    ax, ay = acc * math.cos(acc_dir), acc * math.sin(acc_dir)
    xs, ys = np.empty(num_frames), np.empty(num_frames)
    for t in range(num_frames):
        xs[t], ys[t] = x, y
        vx, vy = vx + ax, vy + ay
        v = math.hypot(vx, vy)
        if v > 2 * v0:  # keep the acceleration small over long clips
            vx, vy = vx * (2 * v0 / v), vy * (2 * v0 / v)
        x, y = x + vx, y + vy
        if bounce:
            reach = ext * float(scale[min(t + 1, num_frames - 1)])
            if (x < reach and vx < 0) or (x > width - reach and vx > 0):
                vx, ax = -vx, -ax
            if (y < reach and vy < 0) or (y > height - reach and vy > 0):
                vy, ay = -vy, -ay
    return ObjectSpec(shape, colour, rgb, r, texture, z, xs, ys, angle, scale)


def _check_range(value: Any, field: str, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{field}: expected a (min, max) pair, got {value!r}") from None
    if not (low <= a <= b <= high):
        raise InvalidInputError(f"{field}: expected {low} <= min <= max <= {high}, got {value!r}")
    return a, b


def _check_int(value: Any, field: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidInputError(f"{field}: expected an int >= {low}, got {value!r}")
    return int(value)


@dataclass
class Clip:
    """A rendered clip. ``frames`` uint8 (T, H, W, 3) RGB; ``masks`` bool (N, T, H, W) visible
    masks and ``amodal`` bool (N, T, H, W) whole-shape masks, row ``i`` for ``obj_ids[i]``."""

    frames: np.ndarray
    masks: np.ndarray
    amodal: np.ndarray
    obj_ids: list[int]
    instances: list[Instance]
    seed: int
    fps: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def present(self) -> np.ndarray:
        """bool (N, T): the visible mask is not empty."""
        return self.masks.any(axis=(2, 3))

    def boxes(self) -> np.ndarray:
        """float32 (N, T, 4): normalized ``(cx, cy, w, h)`` of each visible mask (pixel
        extents, x1 exclusive, divided by W and H); 0 where the mask is empty."""
        n, t, h, w = self.masks.shape
        out = np.zeros((n, t, 4), np.float32)
        rows = self.masks.any(axis=3)  # (N, T, H)
        cols = self.masks.any(axis=2)  # (N, T, W)
        for i in range(n):
            for j in range(t):
                ys, xs = np.flatnonzero(rows[i, j]), np.flatnonzero(cols[i, j])
                if len(ys) == 0:
                    continue
                x0, x1, y0, y1 = xs[0], xs[-1] + 1, ys[0], ys[-1] + 1
                out[i, j] = ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)
        return out

    def phrases(self) -> list[str]:
        return sorted({p for inst in self.instances for p in inst.phrases})

    def objects_for(self, phrase: str) -> list[int]:
        return sorted(inst.obj_id for inst in self.instances if phrase in inst.phrases)


def _depth_order(specs: Sequence[ObjectSpec]) -> list[int]:
    """Indices of ``specs`` from back to front (ties broken by id, so the order is total)."""
    return sorted(range(len(specs)), key=lambda i: (specs[i].z, specs[i].obj_id))


class ShapesWorld:
    """A clip of the shapes world, rendered frame by frame (see the module notes).

    Args:
        seed: int >= 0; everything below is a pure function of it and the other arguments.
        num_frames: T >= 1.
        size: ``(H, W)`` in pixels, each >= 8.
        num_objects: ``(min, max)`` objects, inclusive.
        shapes, colours: the names to draw from (`SHAPES`, `COLOURS`).
        radius: object radius range, fraction of ``min(H, W)``.
        speed: start speed range, fraction of ``min(H, W)`` per frame.
        p_enter: chance that an object starts outside the frame, heading in.
        p_bounce: chance that an object that starts inside bounces off the edges.
        noise: range of the per-clip sensor noise amplitude (grey levels).
        fps: frame rate stored in exports.
        objects: explicit objects (scenarios): replaces the random ones.
        meta: facts stored in the `Clip` (scenarios).
    """

    def __init__(
        self,
        seed: int,
        num_frames: int = 16,
        size: tuple[int, int] = (224, 224),
        num_objects: tuple[int, int] = (2, 5),
        *,
        shapes: Sequence[str] = SHAPES,
        colours: Sequence[str] = tuple(COLOURS),
        radius: tuple[float, float] = (0.07, 0.18),
        speed: tuple[float, float] = (0.004, 0.03),
        p_enter: float = 0.25,
        p_bounce: float = 0.5,
        noise: tuple[float, float] = (0.0, 6.0),
        fps: float = 10.0,
        objects: Sequence[ObjectSpec] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.seed = seeds.check_seed(seed)
        self.num_frames = _check_int(num_frames, "num_frames", 1)
        try:
            h, w = size
        except (TypeError, ValueError):
            raise InvalidInputError(f"size: expected (H, W), got {size!r}") from None
        self.height, self.width = _check_int(h, "size[0]", 8), _check_int(w, "size[1]", 8)
        lo, hi = (_check_int(n, "num_objects", 0) for n in num_objects)
        if lo > hi:
            raise InvalidInputError(f"num_objects: expected min <= max, got {num_objects!r}")
        for name in shapes:
            if name not in SHAPES:
                raise InvalidInputError(f"shapes: expected names from {SHAPES}, got {name!r}")
        for name in colours:
            if name not in COLOURS:
                raise InvalidInputError(
                    f"colours: expected names from {tuple(COLOURS)}, got {name!r}"
                )
        if not shapes or not colours:
            raise InvalidInputError("shapes, colours: expected at least one name each")
        if not (isinstance(fps, (int, float)) and fps > 0):
            raise InvalidInputError(f"fps: expected a float > 0, got {fps!r}")
        self.fps = float(fps)
        self.meta = dict(meta or {})
        self._config = dict(
            num_objects=(lo, hi),
            shapes=tuple(shapes),
            colours=tuple(colours),
            radius=_check_range(radius, "radius", 0.0, 10.0),
            speed=_check_range(speed, "speed", 0.0, 10.0),
            p_enter=float(p_enter),
            p_bounce=float(p_bounce),
            noise=_check_range(noise, "noise", 0.0, 64.0),
        )
        rng = seeds.make_rng(self.seed, KEY_WORLD)
        self.noise = seeds.uniform(rng, *self._config["noise"])
        if objects is None:
            count = lo + seeds.index(rng, hi - lo + 1)
            specs = [
                random_object(
                    seeds.make_rng(self.seed, KEY_OBJECT, k),
                    self.num_frames,
                    self.height,
                    self.width,
                    shapes=shapes,
                    colours=colours,
                    radius=self._config["radius"],
                    speed=self._config["speed"],
                    p_enter=self._config["p_enter"],
                    p_bounce=self._config["p_bounce"],
                )
                for k in range(count)
            ]
        else:
            specs = list(objects)
        self.specs: list[ObjectSpec] = []
        for k, spec in enumerate(specs):
            if len(spec.x) < self.num_frames:
                raise InvalidInputError(
                    f"objects[{k}]: expected a trajectory of {self.num_frames} frames, "
                    f"got {len(spec.x)}"
                )
            self.specs.append(spec if spec.obj_id else replace(spec, obj_id=k + 1))
        ids = [s.obj_id for s in self.specs]
        if len(set(ids)) != len(ids):
            raise InvalidInputError(f"objects: expected distinct obj_id values, got {ids}")
        self.instances = [
            Instance(
                s.obj_id, s.shape, s.colour, s.rgb, s.radius, s.z, phrases_for(s.shape, s.colour)
            )
            for s in self.specs
        ]
        self._order = _depth_order(self.specs)
        self._background: np.ndarray | None = None
        self._cached: tuple[int, np.ndarray, dict[int, Patch]] | None = None

    # -- derived worlds -------------------------------------------------------------------
    def without(self, *obj_ids: int) -> ShapesWorld:
        """The same world (background, noise, other objects) without these objects."""
        world = ShapesWorld.__new__(ShapesWorld)
        world.__dict__.update(self.__dict__)
        world.specs = [s for s in self.specs if s.obj_id not in obj_ids]
        world.instances = [i for i in self.instances if i.obj_id not in obj_ids]
        world._order = _depth_order(world.specs)
        world._cached = None
        world.meta = dict(self.meta)
        return world

    # -- rendering ----------------------------------------------------------------------
    def _check_t(self, t: int) -> int:
        if (
            isinstance(t, bool)
            or not isinstance(t, (int, np.integer))
            or not 0 <= t < self.num_frames
        ):
            raise InvalidInputError(f"t: expected an int in [0, {self.num_frames}), got {t!r}")
        return int(t)

    def _field(self) -> np.ndarray:
        if self._background is None:
            rng = seeds.make_rng(self.seed, KEY_BACKGROUND)
            self._background = background_field(rng, self.height, self.width)
        return self._background

    def _finish(self, image: np.ndarray, t: int) -> np.ndarray:
        if self.noise > 0:
            rng = seeds.make_rng(self.seed, KEY_NOISE, t)
            image = image + (rng.random(image.shape) * 2.0 - 1.0) * self.noise
        return np.clip(np.floor(image + 0.5), 0, 255).astype(np.uint8)

    def _render(self, t: int) -> tuple[np.ndarray, dict[int, Patch]]:
        t = self._check_t(t)
        if self._cached is not None and self._cached[0] == t:
            return self._cached[1], self._cached[2]
        image = self._field().copy()
        patches: dict[int, Patch] = {}
        full = SUPERSAMPLE * SUPERSAMPLE
        for k in self._order:
            spec = self.specs[k]
            pose = spec.pose(t)
            patch = coverage(spec.shape, pose, self.height, self.width)
            if patch is None:
                continue
            patches[spec.obj_id] = patch
            h, w = patch.count.shape
            alpha = (patch.count.astype(np.float64) / full)[:, :, None]
            colour = texture_patch(spec.rgb, spec.texture, pose, patch)
            region = image[patch.y0 : patch.y0 + h, patch.x0 : patch.x0 + w]
            image[patch.y0 : patch.y0 + h, patch.x0 : patch.x0 + w] = (
                region * (1.0 - alpha) + colour * alpha
            )
        frame = self._finish(image, t)
        self._cached = (t, frame, patches)
        return frame, patches

    def frame(self, t: int) -> np.ndarray:
        """uint8 (H, W, 3) RGB frame ``t`` (a fresh array)."""
        return self._render(t)[0].copy()

    def frames(self) -> Iterator[np.ndarray]:
        """The frames in order."""
        for t in range(self.num_frames):
            yield self.frame(t)

    def background(self, t: int) -> np.ndarray:
        """uint8 (H, W, 3): frame ``t`` without any object (same sensor noise)."""
        return self._finish(self._field().copy(), self._check_t(t))

    def amodal_masks(self, t: int) -> dict[int, np.ndarray]:
        """``{obj_id: bool (H, W)}``: each whole shape (occluders ignored), within the frame."""
        patches = self._render(t)[1]
        out = {}
        for inst in self.instances:
            patch = patches.get(inst.obj_id)
            out[inst.obj_id] = (
                patch.full_mask(self.height, self.width)
                if patch is not None
                else np.zeros((self.height, self.width), bool)
            )
        return out

    def masks(self, t: int) -> dict[int, np.ndarray]:
        """``{obj_id: bool (H, W)}``: the visible part of each object on frame ``t``
        (disjoint; empty where hidden or outside the frame)."""
        amodal = self.amodal_masks(t)
        covered = np.zeros((self.height, self.width), bool)
        visible = {}
        for k in reversed(self._order):  # front to back
            obj_id = self.specs[k].obj_id
            visible[obj_id] = amodal[obj_id] & ~covered
            covered |= amodal[obj_id]
        return {inst.obj_id: visible[inst.obj_id] for inst in self.instances}

    def phrases(self) -> list[str]:
        """The phrases of this world's instances, sorted."""
        return sorted({p for inst in self.instances for p in inst.phrases})

    def objects_for(self, phrase: str) -> list[int]:
        """Ids of the instances ``phrase`` refers to (visible or not), sorted."""
        return sorted(inst.obj_id for inst in self.instances if phrase in inst.phrases)

    def render(self) -> Clip:
        """Every frame and mask as arrays."""
        t_, h, w = self.num_frames, self.height, self.width
        n = len(self.instances)
        frames = np.empty((t_, h, w, 3), np.uint8)
        masks = np.zeros((n, t_, h, w), bool)
        amodal = np.zeros((n, t_, h, w), bool)
        row = {inst.obj_id: i for i, inst in enumerate(self.instances)}
        for t in range(t_):
            frames[t] = self.frame(t)
            for obj_id, mask in self.masks(t).items():
                masks[row[obj_id], t] = mask
            for obj_id, mask in self.amodal_masks(t).items():
                amodal[row[obj_id], t] = mask
        return Clip(
            frames=frames,
            masks=masks,
            amodal=amodal,
            obj_ids=[inst.obj_id for inst in self.instances],
            instances=list(self.instances),
            seed=self.seed,
            fps=self.fps,
            meta=dict(self.meta),
        )


def render_clip(seed: int, **kwargs: Any) -> Clip:
    """``ShapesWorld(seed, **kwargs).render()``."""
    return ShapesWorld(seed, **kwargs).render()
