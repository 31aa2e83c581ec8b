"""Shared by the exporters: the DAVIS palette, validation of results, and file helpers.

All writers
  * A frame written twice replaces the first write for that frame: **the last write wins**,
    whole frame (an object of the first write that the second lacks is gone from that frame).
  * ``obj_id`` is an ``int`` (or numpy integer) ``>= 0``; ``mask`` is a 2-D array of the
    writer's ``(height, width)``, bool, or any dtype read as ``mask != 0``. The ``"bbox"`` field
    is not used: boxes are recomputed from the masks, so boxes, areas and masks always agree
    (they equal the product's boxes, which are its masks' boxes).
  * Writers create missing parent folders. An output path that cannot be created (a path
    under a file, a folder where a file is expected, no permission) raises
    `InvalidInputError` naming the path, when the writer is created.
  * ``close()`` also runs when the ``with`` block exits on an exception, ``KeyboardInterrupt``
    included, so the frames written so far are saved; the exception then propagates. Final
    files are written to a temporary file beside the target and renamed over it, so the
    target is either the complete previous file or the complete new one, never a partial one.
  * ``write()`` after ``close()`` raises `InvalidInputError`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sam3video.errors import FrameIndexError, InvalidInputError

__all__ = [
    "DAVIS_PALETTE",
    "check_frame_index",
    "check_int",
    "check_outputs",
    "label_map",
    "make_folder",
    "output_file",
    "temp_in",
    "unlink_quietly",
]


def _davis_palette() -> np.ndarray:
    """(256, 3) uint8: the PASCAL VOC / DAVIS colour map (bits of the index spread over RGB)."""
    index = np.arange(256)
    palette = np.zeros((256, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


DAVIS_PALETTE: np.ndarray = _davis_palette()
DAVIS_PALETTE.flags.writeable = False


# ----------------------------------------------------------------------------- validation


def check_int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{field}: expected an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidInputError(f"{field}: expected an int >= {minimum}, got {int(value)}")
    return int(value)


def check_frame_index(frame_index: Any, num_frames: int | None) -> int:
    bound = "" if num_frames is None else f" and < {num_frames}"
    if isinstance(frame_index, (bool, np.bool_)) or not isinstance(frame_index, (int, np.integer)):
        raise FrameIndexError(f"frame_index: expected an int >= 0{bound}, got {frame_index!r}")
    if frame_index < 0 or (num_frames is not None and frame_index >= num_frames):
        raise FrameIndexError(f"frame_index: expected an int >= 0{bound}, got {int(frame_index)}")
    return int(frame_index)


def check_outputs(
    outputs: Any, height: int, width: int, need_score: bool
) -> list[tuple[int, np.ndarray, float | None]]:
    """``outputs`` -> ``[(obj_id, bool (H, W) mask, score or None)]`` in ascending id order."""
    if not isinstance(outputs, Mapping):
        raise InvalidInputError(
            f"outputs: expected a mapping obj_id -> {{'mask', 'score'}}, got "
            f"{type(outputs).__name__}"
        )
    items = []
    for obj_id, entry in outputs.items():
        obj_id = check_int(obj_id, "outputs: obj_id", 0)
        if not isinstance(entry, Mapping) or "mask" not in entry:
            raise InvalidInputError(
                f"outputs[{obj_id}]: expected a mapping with a 'mask', got {entry!r:.80}"
            )
        mask = np.asarray(entry["mask"])
        if mask.shape != (height, width):
            raise InvalidInputError(
                f"outputs[{obj_id}]['mask']: expected shape ({height}, {width}), got "
                f"{tuple(mask.shape)}"
            )
        if mask.dtype != np.bool_:
            mask = mask != 0
        score = entry.get("score")
        if score is not None or need_score:
            if isinstance(score, (bool, np.bool_)) or not isinstance(
                score, (int, float, np.integer, np.floating)
            ):
                raise InvalidInputError(
                    f"outputs[{obj_id}]['score']: expected a finite float, got {score!r}"
                )
            score = float(score)
            if not math.isfinite(score):
                raise InvalidInputError(
                    f"outputs[{obj_id}]['score']: expected a finite float, got {score}"
                )
        items.append((obj_id, mask, score))
    items.sort(key=lambda item: item[0])
    return items


def output_file(path: Any, field: str) -> Path:
    """Validated output file path whose parent folder exists (created if needed)."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInputError(f"{field}: expected a str or os.PathLike, got {path!r}")
    target = Path(os.fspath(path)).expanduser()
    if target.is_dir():
        raise InvalidInputError(f"{field}: expected a file path, got the folder {str(target)!r}")
    make_folder(target.parent, field)
    return target


def make_folder(folder: Path, field: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidInputError(
            f"{field}: cannot create the folder {str(folder)!r} ({error.strerror or error})"
        ) from error
    if not folder.is_dir():
        raise InvalidInputError(f"{field}: {str(folder)!r} exists and is not a folder")


def temp_in(folder: Path, prefix: str, suffix: str, field: str) -> Path:
    """Create an empty temporary file in ``folder`` (same file system: atomic rename)."""
    try:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    except OSError as error:
        raise InvalidInputError(
            f"{field}: cannot write in the folder {str(folder)!r} ({error.strerror or error})"
        ) from error
    os.close(handle)
    os.chmod(name, 0o644)  # mkstemp creates 0600; results are ordinary readable files
    return Path(name)


def unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def label_map(items: Sequence[tuple[int, np.ndarray, Any]], height: int, width: int) -> np.ndarray:
    """int64 (H, W): position + 1 in ``items`` of the last (highest-id) mask covering a pixel."""
    if not items:
        return np.zeros((height, width), np.int64)
    stack = np.stack([mask for _, mask, _ in items])  # (N, H, W)
    last = len(items) - np.argmax(stack[::-1], axis=0)  # 1-based position of the last True
    return np.where(stack.any(axis=0), last, 0)
