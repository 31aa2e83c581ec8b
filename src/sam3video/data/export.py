"""Writing shapes-world clips: image folders, MP4 videos and SA-Co/YTVIS ground truth.

* `write_frames`: ``00000.png``, ``00001.png``, ... in a folder (the layout the image-folder
  frame source reads; PNG is lossless, ``ext="jpg"`` writes JPEG quality 95).
* `write_video`: an MP4 through the overlay writer with no results drawn (H.264 when FFmpeg
  has it, see `sam3video.io.export.overlay`); lossy, for viewing and demos.
* `write_dataset`: frame folders plus their ground truth JSON (``file_names`` point at the
  frames), e.g. a toy fine-tuning set.
* `clip_to_ytvis` / `write_ytvis`: ground truth in the layout `sam3video track` writes
  (`sam3video.io.export.ytvis`): one video per clip (``id`` 0, 1, ...), one annotation per
  (object, phrase level) with ``obj_id`` (the clip's object id), ``noun_phrase``,
  ``category_id`` (one category per phrase, numbered from 1 in order of first use), compressed
  RLE ``segmentations`` of the visible masks, pixel ``bboxes`` ``[x, y, w, h]`` and ``areas``
  (``null`` on frames where the object is not visible), ``score`` 1.0 and
  ``per_frame_scores`` 1.0 where visible. Objects never visible get no annotation, like
  `YtvisWriter`. ``video_np_pairs`` lists every (video, phrase) with its masklet count, also
  phrases of the vocabulary with no instance in that video when ``negatives=True`` (SA-Co's
  way of stating that a phrase has no instance).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_util

from sam3video import __version__
from sam3video.data.shapes import PHRASE_LEVELS, vocabulary
from sam3video.data.world import Clip
from sam3video.errors import InvalidInputError
from sam3video.io.export.overlay import OverlayWriter

__all__ = ["clip_to_ytvis", "write_dataset", "write_frames", "write_video", "write_ytvis"]


def write_frames(clip: Clip, folder: str | os.PathLike[str], ext: str = "png") -> Path:
    """Write the frames as ``<folder>/00000.<ext>``, ...; returns the folder."""
    if ext not in ("png", "jpg"):
        raise InvalidInputError(f"ext: expected 'png' or 'jpg', got {ext!r}")
    out = Path(os.fspath(folder)).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == "jpg" else []
    for t, frame in enumerate(clip.frames):
        ok, data = cv2.imencode(f".{ext}", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
        if not ok:  # pragma: no cover (OpenCV always encodes uint8 RGB)
            raise InvalidInputError(f"frame {t}: OpenCV could not encode it as .{ext}")
        (out / f"{t:05d}.{ext}").write_bytes(data.tobytes())
    return out


def write_video(clip: Clip, path: str | os.PathLike[str], fps: float | None = None) -> Path:
    """Write the frames as an MP4 at ``fps`` (default: the clip's); returns the path."""
    _, height, width, _ = clip.frames.shape
    writer = OverlayWriter(path, fps or clip.fps, height, width, source=clip.frames)
    writer.close()
    return writer.path


def _levels(levels: Sequence[str]) -> tuple[int, ...]:
    if isinstance(levels, str) or not levels:
        raise InvalidInputError(
            f"levels: expected a non-empty list of names from {PHRASE_LEVELS}, got {levels!r}"
        )
    picked = []
    for level in levels:
        if level not in PHRASE_LEVELS:
            raise InvalidInputError(f"levels: expected names from {PHRASE_LEVELS}, got {level!r}")
        picked.append(PHRASE_LEVELS.index(level))
    return tuple(dict.fromkeys(picked))


def clip_to_ytvis(
    clips: Clip | Sequence[Clip],
    video_names: Sequence[str] | None = None,
    levels: Sequence[str] = ("colour_shape",),
    negatives: bool = False,
    ext: str = "jpg",
) -> dict[str, Any]:
    """The SA-Co/YTVIS ground-truth dict of ``clips`` (see the module notes).

    Args:
        clips: one clip or a list (one video each).
        video_names: one name per clip; default ``"shapes_<seed>"`` (``_<k>`` added when two
            clips share a seed).
        levels: which phrases annotate each object, from `PHRASE_LEVELS`.
        negatives: also list, in ``video_np_pairs``, the phrases of the full vocabulary (at
            the chosen levels) that have no instance in the video (``num_masklets`` 0).
        ext: extension of the ``file_names`` (``"<video_name>/00000.<ext>"``).
    """
    clips = [clips] if isinstance(clips, Clip) else list(clips)
    picked = _levels(levels)
    if video_names is None:
        names, seen = [], set()
        for k, clip in enumerate(clips):
            name = f"shapes_{clip.seed}"
            names.append(name if name not in seen else f"{name}_{k}")
            seen.add(name)
    else:
        names = list(video_names)
        if len(names) != len(clips) or len(set(names)) != len(names):
            raise InvalidInputError(
                f"video_names: expected {len(clips)} distinct names, got {video_names!r}"
            )
    category_of: dict[str, int] = {}
    videos, annotations, pairs = [], [], []

    def category(phrase: str) -> int:
        return category_of.setdefault(phrase, len(category_of) + 1)

    for video_id, (clip, name) in enumerate(zip(clips, names)):
        n, t_, h, w = clip.masks.shape
        videos.append(
            {
                "id": video_id,
                "video_name": name,
                "file_names": [f"{name}/{t:05d}.{ext}" for t in range(t_)],
                "height": h,
                "width": w,
                "length": t_,
                "fps": clip.fps,
            }
        )
        masklets: dict[str, int] = {}
        for i, inst in enumerate(clip.instances):
            if not clip.masks[i].any():
                continue
            rles = mask_util.encode(np.asfortranarray(clip.masks[i].transpose(1, 2, 0), np.uint8))
            areas = mask_util.area(rles)
            boxes = mask_util.toBbox(rles)
            visible = [bool(a > 0) for a in areas]
            segmentations = [
                {"size": [h, w], "counts": rle["counts"].decode("ascii")} if v else None
                for rle, v in zip(rles, visible)
            ]
            for level in picked:
                phrase = inst.phrases[level]
                masklets[phrase] = masklets.get(phrase, 0) + 1
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "video_id": video_id,
                        "obj_id": inst.obj_id,
                        "category_id": category(phrase),
                        "noun_phrase": phrase,
                        "iscrowd": 0,
                        "height": h,
                        "width": w,
                        "score": 1.0,
                        "bboxes": [
                            [float(x) for x in box] if v else None for box, v in zip(boxes, visible)
                        ],
                        "areas": [float(a) if v else None for a, v in zip(areas, visible)],
                        "per_frame_scores": [1.0 if v else None for v in visible],
                        "segmentations": segmentations,
                    }
                )
        if negatives:
            wanted = {PHRASE_LEVELS[k] for k in picked}
            for phrase in vocabulary():
                if PHRASE_LEVELS[_level_of(phrase)] in wanted:
                    masklets.setdefault(phrase, 0)
        for phrase in sorted(masklets, key=lambda p: (masklets[p] == 0, category(p))):
            pairs.append(
                {
                    "id": len(pairs) + 1,
                    "video_id": video_id,
                    "category_id": category(phrase),
                    "noun_phrase": phrase,
                    "num_masklets": masklets[phrase],
                }
            )
    return {
        "info": {
            "description": "sam3video shapes world ground truth",
            "version": __version__,
            "date": date.today().isoformat(),
        },
        "videos": videos,
        "annotations": annotations,
        "categories": [{"id": i, "name": p} for p, i in category_of.items()],
        "video_np_pairs": pairs,
    }


def _level_of(phrase: str) -> int:
    """Index in `PHRASE_LEVELS` of a phrase's form."""
    words = phrase.split()
    if len(words) == 1:
        return 3 if phrase == "shape" else 1
    return 2 if words[1] == "shape" else 0


def write_ytvis(
    clips: Clip | Sequence[Clip],
    path: str | os.PathLike[str],
    video_names: Sequence[str] | None = None,
    levels: Sequence[str] = ("colour_shape",),
    negatives: bool = False,
    ext: str = "jpg",
) -> Path:
    """Write `clip_to_ytvis` as JSON at ``path``; returns the path."""
    out = Path(os.fspath(path)).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    data = clip_to_ytvis(clips, video_names, levels, negatives, ext)
    out.write_text(json.dumps(data), encoding="utf-8")
    return out


def write_dataset(
    root: str | os.PathLike[str],
    clips: Sequence[Clip],
    levels: Sequence[str] = ("colour_shape",),
    negatives: bool = False,
    ext: str = "jpg",
) -> Path:
    """A fine-tuning dataset in the SA-Co layout: ``<root>/<video_name>/00000.<ext>``, ...
    for each clip and ``<root>/annotations.json`` (`clip_to_ytvis`, whose ``file_names``
    are relative to ``root``). Returns the JSON's path."""
    out = Path(os.fspath(root)).expanduser()
    data = clip_to_ytvis(list(clips), None, levels, negatives, ext)
    for clip, video in zip(clips, data["videos"]):
        write_frames(clip, out / video["video_name"], ext)
    path = out / "annotations.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
