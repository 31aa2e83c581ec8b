"""Training samples of the shapes world as torch tensors.

`sample_training_clip(seed, ...)` renders a random world (`ShapesWorld`; with
``occlusion_hidden=K`` the occlusion scenario instead, `occlusion_world`: one object wholly
hidden behind another for K frames in the middle of the clip) and returns a
`TrainingClip`: frames (T, 3, H, W) float in [0, 1], the visible masks (N, T, H, W) of the
objects that are visible on at least one frame (the others are dropped: nothing to learn
from them), their boxes, presence, phrases, and the vocabulary phrases that match no object
of the clip (negatives, e.g. for the presence loss). Held-out seeds are refused unless
``allow_heldout=True``, so that training cannot see the evaluation clips by accident.

`ShapesClipDataset` is a map-style ``torch.utils.data.Dataset`` over consecutive training
seeds; its items have different object counts, so batch them with `collate_clips` (a list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sam3video.data import seeds
from sam3video.data.scenarios import occlusion_world
from sam3video.data.shapes import COLOURS, SHAPES, vocabulary
from sam3video.data.world import ShapesWorld
from sam3video.errors import InvalidInputError

__all__ = ["ShapesClipDataset", "TrainingClip", "collate_clips", "sample_training_clip"]


@dataclass
class TrainingClip:
    """One training sample (see the module notes). N objects, T frames."""

    frames: torch.Tensor  # float32 (T, 3, H, W) in [0, 1]
    masks: torch.Tensor  # bool (N, T, H, W) visible masks
    boxes: torch.Tensor  # float32 (N, T, 4) normalized cxcywh; 0 where absent
    present: torch.Tensor  # bool (N, T)
    obj_ids: list[int]
    phrases: list[tuple[str, ...]]  # per object, most specific first
    shapes: list[str]
    colours: list[str]
    negative_phrases: list[str]
    seed: int


def sample_training_clip(
    seed: int,
    num_frames: int = 8,
    size: tuple[int, int] = (224, 224),
    *,
    allow_heldout: bool = False,
    occlusion_hidden: int | None = None,
    **world_kwargs: Any,
) -> TrainingClip:
    """Render the training clip of ``seed`` (``world_kwargs`` go to `ShapesWorld`);
    ``occlusion_hidden``: the `occlusion_world` of ``seed`` with that many hidden frames
    (raises `ConfigError` where no occluder fits, as `occlusion_world` does)."""
    seed = seeds.check_seed(seed)
    if not allow_heldout and seeds.split_of_seed(seed) != "train":
        raise InvalidInputError(
            f"seed: expected a training seed (< {seeds.HELDOUT_START}), got the held-out seed "
            f"{seed} (pass allow_heldout=True to use it anyway)"
        )
    if occlusion_hidden is None:
        world = ShapesWorld(seed, num_frames, size, **world_kwargs)
    else:
        world = occlusion_world(seed, num_frames, size, hidden=occlusion_hidden, **world_kwargs)
    clip = world.render()
    keep = np.flatnonzero(clip.present.any(axis=1))
    instances = [clip.instances[i] for i in keep]
    boxes = clip.boxes()[keep]
    frames = torch.from_numpy(np.ascontiguousarray(clip.frames.transpose(0, 3, 1, 2)))
    shapes = world_kwargs.get("shapes", SHAPES)
    colours = world_kwargs.get("colours", tuple(COLOURS))
    used = {p for inst in instances for p in inst.phrases}
    return TrainingClip(
        frames=frames.to(torch.float32) / 255.0,
        masks=torch.from_numpy(np.ascontiguousarray(clip.masks[keep])),
        boxes=torch.from_numpy(boxes),
        present=torch.from_numpy(np.ascontiguousarray(clip.present[keep])),
        obj_ids=[inst.obj_id for inst in instances],
        phrases=[inst.phrases for inst in instances],
        shapes=[inst.shape for inst in instances],
        colours=[inst.colour for inst in instances],
        negative_phrases=[p for p in vocabulary(shapes, colours) if p not in used],
        seed=seed,
    )


class ShapesClipDataset(torch.utils.data.Dataset):
    """Item ``i`` is ``sample_training_clip(train_seed(start + i), ...)``.

    Args:
        length: number of items.
        num_frames, size, world_kwargs: as `sample_training_clip`.
        start: first training seed.
    """

    def __init__(
        self,
        length: int,
        num_frames: int = 8,
        size: tuple[int, int] = (224, 224),
        start: int = 0,
        **world_kwargs: Any,
    ) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise InvalidInputError(f"length: expected an int >= 0, got {length!r}")
        start = seeds.check_seed(start, "start")
        if start + length > seeds.HELDOUT_START:
            raise InvalidInputError(
                f"start + length: expected <= {seeds.HELDOUT_START} (training seeds only), "
                f"got {start + length}"
            )
        self.length, self.start = length, start
        self.num_frames, self.size, self.world_kwargs = num_frames, size, world_kwargs

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> TrainingClip:
        if not 0 <= index < self.length:
            raise IndexError(f"index: expected an int in [0, {self.length}), got {index}")
        return sample_training_clip(
            seeds.train_seed(self.start + index), self.num_frames, self.size, **self.world_kwargs
        )


def collate_clips(batch: list[TrainingClip]) -> list[TrainingClip]:
    """The batch as a list (object counts differ between clips)."""
    return list(batch)
