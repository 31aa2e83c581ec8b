"""Training data: the clip-sample interface, its two sources and the batch builders.

A *clip sample* is anything with ``frames (T, 3, H, W)`` float in [0, 1], ``masks
(N, T, H, W)`` bool (one row per object, the visible part per frame), ``phrases`` (per
object: a noun phrase or a tuple of phrases that all describe it) and optionally
``negative_phrases`` (phrases known to match nothing in the clip). `ClipSample` is the
plain container; `sam3video.data.sample_training_clip` (the procedural shapes world)
returns objects of the same shape.

Sources implement ``sample(rng, num_frames) -> clip sample`` with a numpy ``Generator``: all
the randomness of a training step comes from generators seeded by ``(seed, step)``, so that a
resumed run draws exactly the data the uninterrupted run would have drawn.

* `ShapesSource`: the procedural world (``sam3video.data``), a fresh world per sample from
  the training seeds only; with ``p_occlusion`` that share of the samples is the occlusion
  scenario (one object wholly hidden behind another in the middle of the clip), so that
  short training clips still contain whole occlusions.
* `YtvisSource`: YTVIS / SA-Co JSON (the layout ``sam3video track`` writes and SA-Co's
  ground truth), frames read from ``frames_root / file_names[t]``; annotations sharing an
  ``obj_id`` are one object with several phrases; a video's ``video_np_pairs`` with
  ``num_masklets == 0`` are its negative phrases.

`prepare_clip` resizes a sample to the model's square input (frames normalised with mean
0.5 / std 0.5 as at inference, masks resized and thresholded at 0.5); `detector_queries` draws
one (frame, phrase) find-query per clip with its target boxes and masks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.errors import ConfigError, InvalidInputError, SourceNotFoundError
from sam3video.model.ops import box_xyxy_to_cxcywh, masks_to_boxes
from sam3video.train.losses import DetectorTargets

__all__ = [
    "ClipSample",
    "ClipSource",
    "PreparedClip",
    "ShapesSource",
    "YtvisSource",
    "detector_queries",
    "prepare_clip",
    "step_rng",
]


@dataclass
class ClipSample:
    """``frames (T, 3, H, W)`` float in [0, 1]; ``masks (N, T, H, W)`` bool; ``phrases``: per
    object a phrase or a tuple of phrases; ``negative_phrases``: phrases absent from the clip."""

    frames: Tensor
    masks: Tensor
    phrases: Sequence[str | Sequence[str]]
    negative_phrases: Sequence[str] = field(default_factory=tuple)


class ClipSource(Protocol):
    def sample(self, rng: np.random.Generator, num_frames: int) -> Any: ...


def step_rng(seed: int, step: int, purpose: int = 0) -> np.random.Generator:
    """The numpy generator of one training step (and purpose: 0 data, 1 prompts)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(step), int(purpose)]))


def object_phrases(sample: Any) -> list[tuple[str, ...]]:
    """Per object, the tuple of its phrases (a single string becomes a 1-tuple)."""
    out = []
    for p in sample.phrases:
        out.append((p,) if isinstance(p, str) else tuple(p))
    return out


def check_sample(sample: Any) -> None:
    """Raise `InvalidInputError` naming the field if ``sample`` is not a clip sample."""
    frames, masks = sample.frames, sample.masks
    if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        raise InvalidInputError(
            f"frames: expected a (T, 3, H, W) tensor, got {getattr(frames, 'shape', frames)}"
        )
    if not isinstance(masks, Tensor) or masks.ndim != 4 or masks.dtype != torch.bool:
        raise InvalidInputError(
            f"masks: expected a bool (N, T, H, W) tensor, got {getattr(masks, 'shape', masks)}"
        )
    if masks.shape[1:] != (frames.shape[0], *frames.shape[2:]):
        raise InvalidInputError(
            f"masks: expected (N, {frames.shape[0]}, {frames.shape[2]}, {frames.shape[3]}) to "
            f"match the frames, got {tuple(masks.shape)}"
        )
    if len(sample.phrases) != masks.shape[0]:
        raise InvalidInputError(
            f"phrases: expected one entry per object ({masks.shape[0]}), got {len(sample.phrases)}"
        )


# ----------------------------------------------------------------------------- sources


class ShapesSource:
    """Clips of the procedural shapes world (``sam3video.data``), training seeds only."""

    def __init__(self, size: int = 224, p_occlusion: float = 0.0, **world_kwargs: Any) -> None:
        from sam3video.data import HELDOUT_START, sample_training_clip

        if isinstance(p_occlusion, bool) or not 0.0 <= p_occlusion <= 1.0:
            raise InvalidInputError(
                f"p_occlusion: expected a probability in [0, 1], got {p_occlusion!r}"
            )
        self._sample = sample_training_clip
        self._limit = HELDOUT_START
        self.size = size
        self.p_occlusion = float(p_occlusion)
        self.world_kwargs = world_kwargs

    def sample(self, rng: np.random.Generator, num_frames: int) -> Any:
        """A random world; with probability ``p_occlusion`` (clips of >= 3 frames) the
        occlusion scenario with ``num_frames // 4`` to ``(num_frames - 2) // 2`` hidden frames
        (at least 1), or the random world of the same seed where no occluder fits it."""
        seed = int(rng.integers(0, self._limit))
        size = (self.size, self.size)
        # No draw when p_occlusion is 0: runs without it keep their exact data stream.
        if self.p_occlusion > 0 and num_frames >= 3 and rng.random() < self.p_occlusion:
            most = max(1, (num_frames - 2) // 2)
            hidden = int(rng.integers(min(max(1, num_frames // 4), most), most + 1))
            try:
                return self._sample(
                    seed, num_frames=num_frames, size=size, occlusion_hidden=hidden,
                    **self.world_kwargs,
                )  # fmt: skip
            except ConfigError:
                pass
        return self._sample(seed, num_frames=num_frames, size=size, **self.world_kwargs)


class YtvisSource:
    """Clips of the videos of a YTVIS / SA-Co JSON file (see the module notes).

    ``frames_root``: the folder that ``file_names`` are relative to (default: the JSON's
    folder). ``stride``: frames between two clip frames (1: consecutive annotated frames).
    Only videos with at least one annotated object are used.
    """

    def __init__(
        self, path: str | os.PathLike, frames_root: str | os.PathLike | None = None, stride: int = 1
    ) -> None:
        from sam3video.evaluation.data import load_json  # reads .json and .json.gz

        self.path = Path(path)
        self.data = load_json(self.path)
        if not isinstance(self.data, dict) or not isinstance(self.data.get("videos"), list):
            raise InvalidInputError(f"data: {str(path)!r} is not a YTVIS / SA-Co JSON file")
        self.root = Path(frames_root) if frames_root is not None else self.path.parent
        self.stride = max(int(stride), 1)
        by_video: dict[Any, list[dict]] = {}
        for ann in self.data.get("annotations", []):
            by_video.setdefault(ann["video_id"], []).append(ann)
        cats = {c["id"]: c.get("name") for c in self.data.get("categories", [])}
        self.videos = []
        for index, video in enumerate(self.data["videos"]):
            anns = by_video.get(video["id"], [])
            if not anns:
                continue
            objects: dict[int, list[str]] = {}
            for ann in anns:
                key = int(ann.get("obj_id", ann["id"]))
                phrase = ann.get("noun_phrase") or cats.get(ann.get("category_id")) or "object"
                if phrase not in objects.setdefault(key, []):
                    objects[key].append(phrase)
            negatives = [
                p["noun_phrase"]
                for p in self.data.get("video_np_pairs", [])
                if p.get("video_id") == video["id"] and p.get("num_masklets", 1) == 0
            ]
            self.videos.append((index, video, objects, negatives))
        if not self.videos:
            raise InvalidInputError(f"data: {str(path)!r} has no video with annotations")

    def _frame(self, name: str) -> Tensor:
        import cv2

        file = self.root / name
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceNotFoundError(
                f"frames_root: frame {str(file)!r} is missing or unreadable "
                "(pass --frames-root, the folder that the JSON's file_names are relative to)"
            )
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0

    def sample(self, rng: np.random.Generator, num_frames: int) -> ClipSample:
        from sam3video.io.export.ytvis import decode_ytvis_masks

        index, video, objects, negatives = self.videos[int(rng.integers(len(self.videos)))]
        length = int(video.get("length") or len(video["file_names"]))
        span = (num_frames - 1) * self.stride + 1
        start = int(rng.integers(0, max(length - span, 0) + 1))
        ts = [min(start + k * self.stride, length - 1) for k in range(num_frames)]
        decoded = decode_ytvis_masks(self.data, index, frames=sorted(set(ts)))
        frames = torch.stack([self._frame(video["file_names"][t]) for t in ts])
        h, w = int(video["height"]), int(video["width"])
        if tuple(frames.shape[-2:]) != (h, w):
            raise InvalidInputError(
                f"frames_root: frame {video['file_names'][ts[0]]!r} is {tuple(frames.shape[-2:])}"
                f", the JSON says ({h}, {w})"
            )
        keys = sorted(objects)
        masks = torch.zeros(len(keys), num_frames, h, w, dtype=torch.bool)
        for k, t in enumerate(ts):
            for row, key in enumerate(keys):
                m = decoded[t].get(key)
                if m is not None:
                    masks[row, k] = torch.from_numpy(m)
        return ClipSample(frames, masks, [tuple(objects[k]) for k in keys], tuple(negatives))


# ----------------------------------------------------------------------------- batches


@dataclass
class PreparedClip:
    """A clip at the model's input: ``images (T, 3, S, S)`` normalised, ``masks
    (N, T, S, S)`` bool, ``phrases`` per object, ``negative_phrases``."""

    images: Tensor
    masks: Tensor
    phrases: list[tuple[str, ...]]
    negative_phrases: tuple[str, ...]


def prepare_clip(sample: Any, image_size: int) -> PreparedClip:
    """Resize a clip sample to ``image_size`` squares and normalise its frames (CPU)."""
    check_sample(sample)
    frames = sample.frames.float()
    size = (image_size, image_size)
    if tuple(frames.shape[-2:]) != size:
        frames = F.interpolate(frames, size=size, mode="bilinear", antialias=True).clamp(0, 1)
    masks = sample.masks
    if tuple(masks.shape[-2:]) != size and masks.shape[0] > 0:
        n, t = masks.shape[:2]
        m = F.interpolate(
            masks.flatten(0, 1)[:, None].float(), size=size, mode="bilinear", antialias=True
        )
        masks = (m[:, 0] >= 0.5).reshape(n, t, *size)
    elif masks.shape[0] == 0:
        masks = masks.new_zeros(0, frames.shape[0], *size)
    return PreparedClip(
        images=(frames - 0.5) / 0.5,
        masks=masks,
        phrases=object_phrases(sample),
        negative_phrases=tuple(getattr(sample, "negative_phrases", ()) or ()),
    )


def normalized_boxes(masks: Tensor) -> Tensor:
    """``(N, H, W)`` bool -> ``(N, 4)`` normalised cxcywh boxes of the masks."""
    h, w = masks.shape[-2:]
    boxes = masks_to_boxes(masks) / torch.tensor([w, h, w, h], dtype=torch.float32)
    return box_xyxy_to_cxcywh(boxes)


def detector_queries(
    clips: Sequence[PreparedClip],
    rng: np.random.Generator,
    p_negative: float = 0.2,
    vocabulary: Sequence[str] = (),
    per_frame: int = 1,
) -> tuple[list[tuple[int, int]], list[str], DetectorTargets]:
    """``per_frame`` find-queries per clip, all on one random frame of the clip.

    Each query's phrase is, with probability ``p_negative`` (or when no object is visible),
    one that matches nothing (the clip's negatives, else a ``vocabulary`` phrase of no
    object); else a phrase of a visible object, whose targets are all objects visible on the
    frame that carry the phrase. Returns ``(clip index, frame index)`` per query, the texts
    and the `DetectorTargets`.
    """
    frames, texts, boxes, masks = [], [], [], []
    for k, clip in enumerate(clips):
        t = int(rng.integers(clip.images.shape[0]))
        visible = clip.masks[:, t].flatten(1).any(1)
        present = sorted({p for i, ps in enumerate(clip.phrases) if visible[i] for p in ps})
        every = {p for ps in clip.phrases for p in ps}
        negatives = list(clip.negative_phrases) or [p for p in vocabulary if p not in every]
        if not present and not negatives:
            raise InvalidInputError(
                "negative_phrases: a clip frame without visible objects needs a phrase that "
                "matches nothing (give negative_phrases or a vocabulary)"
            )
        for _ in range(per_frame):
            use_negative = bool(negatives) and (not present or rng.random() < p_negative)
            if use_negative:
                phrase = negatives[int(rng.integers(len(negatives)))]
                rows: list[int] = []
            else:
                phrase = present[int(rng.integers(len(present)))]
                rows = [i for i, ps in enumerate(clip.phrases) if visible[i] and phrase in ps]
            m = clip.masks[rows, t]
            frames.append((k, t))
            texts.append(phrase)
            masks.append(m)
            boxes.append(normalized_boxes(m) if rows else torch.zeros(0, 4))
    return frames, texts, DetectorTargets(boxes, masks)
