"""Frames from image files: a folder of frames, or one image (a one-frame source).

Images are decoded by PIL with ``convert("RGB")`` whatever the loader, as SAM 3 does (EXIF
orientation is not applied, alpha is dropped). Opening a folder reads the header of every
frame file (PIL reads only the header for ``.size``, not the pixels) so that a folder whose
frames differ in size fails at once, naming the odd file and both sizes, rather than in the
middle of a propagation. A file whose header cannot be read at all fails when its frame is
read, with a `DecodeError` naming the frame and the file; the other frames stay readable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sam3video.errors import DecodeError, UnsupportedSourceError
from sam3video.io.frame_source import FrameSource

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageSource(FrameSource):
    """Frames read one by one with PIL from image files, all of one size."""

    def __init__(
        self, path: Path, files: list[Path], cache_size: int | None, prefetch: bool
    ) -> None:
        self._files = files
        width, height = _frame_size(files)
        super().__init__(path, len(files), height, width, None, cache_size, prefetch)

    def _load(self, target: int, keep_from: int) -> np.ndarray:
        file = self._files[target]
        try:
            with Image.open(file) as image:
                frame = np.array(image.convert("RGB"))
        except Exception as error:  # PIL raises OSError, ValueError, SyntaxError, ...
            raise DecodeError(
                f"frame {target} ({str(file)!r}) cannot be decoded: {_describe(error)}"
            ) from error
        self._decoded += 1
        if frame.shape[:2] != (self._height, self._width):  # the file changed since opening
            expected = (self._height, self._width)
            raise UnsupportedSourceError(
                _size_mismatch(self._files, target, frame.shape[:2], expected)
            )
        self._cache.put(target, frame)
        return frame


def _frame_size(files: list[Path]) -> tuple[int, int]:
    """(width, height) shared by every frame, from the image headers.

    Raises `DecodeError` when the first frame's header cannot be read, and
    `UnsupportedSourceError` naming the first frame of another size.
    """
    sizes = [_header_size(file) for file in files]
    first = sizes[0]
    if isinstance(first, Exception):
        raise DecodeError(f"cannot read image {str(files[0])!r}: {_describe(first)}") from first
    for k, size in enumerate(sizes):
        if isinstance(size, tuple) and size != first:
            raise UnsupportedSourceError(_size_mismatch(files, k, size[::-1], first[::-1]))
    return first


def _header_size(file: Path) -> tuple[int, int] | Exception:
    """(width, height) from the image header without decoding the pixels, or why it failed."""
    try:
        with Image.open(file) as image:
            return image.size
    except Exception as error:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError...
        return error


def _size_mismatch(
    files: list[Path], k: int, size_hw: tuple[int, ...], first_hw: tuple[int, ...]
) -> str:
    return (
        f"frame {k} ({str(files[k])!r}) is {size_hw[0]}x{size_hw[1]} (HxW), but the first "
        f"frame ({str(files[0])!r}) is {first_hw[0]}x{first_hw[1]}; all frames of a folder "
        "must have one size"
    )


def _describe(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 200 else text[:200] + "..."


# -- listing a folder -----------------------------------------------------------------------------

_DIGITS = re.compile(r"(\d+)")


def _natural_key(name: str) -> tuple[Any, ...]:
    # Parts alternate text/number, so tuples compare position by position without type errors.
    return tuple(int(p) if k % 2 else p for k, p in enumerate(_DIGITS.split(name)))


def list_frame_files(folder: Path) -> list[Path]:
    """Image files of ``folder`` in frame order.

    Hidden files (names starting with ``.``), other files and sub-folders are ignored. Frames
    are ordered by the last integer in the file name, so ``00000.jpg``, ``1.jpg`` and
    ``frame_12.png`` sort numerically (ties broken by name). If some name has no digits at all,
    the folder is sorted "naturally" instead (runs of digits compared as numbers).
    """
    try:
        entries = [
            e for e in os.scandir(folder)
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
            and e.is_file()
        ]
    except OSError as error:
        raise UnsupportedSourceError(
            f"cannot list folder {str(folder)!r}: {error.strerror or error}"
        ) from error
    names = [e.name for e in entries]
    numbers = [_DIGITS.findall(os.path.splitext(n)[0]) for n in names]
    if all(numbers):
        keys = [(int(num[-1]), _natural_key(name)) for num, name in zip(numbers, names)]
    else:
        keys = [(0, _natural_key(name)) for name in names]
    order = sorted(range(len(names)), key=keys.__getitem__)
    return [folder / names[k] for k in order]
