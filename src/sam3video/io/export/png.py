"""Indexed PNG masks: one palette PNG per frame, pixel value = object id + 1.

Indexed PNGs (`PngWriter`, `read_png_masks`)
  * One 8-bit palette (``"P"``) PNG per written frame, named ``00000.png`` by frame index
    (``123456.png`` beyond five digits), with the DAVIS palette (the PASCAL VOC colour map).
  * **Pixel value = obj_id + 1**, 0 = background: SAM 3's object ids start at 0, so the plain
    id cannot be the pixel value. Ids 0..254 fit; a larger id raises `InvalidInputError`
    naming it (use the JSON export for more objects).
  * Overlapping masks (the product's masks normally do not overlap): **the higher id wins**.
  * Each PNG is written to a temporary name and renamed, so an interrupted run never leaves
    a truncated PNG. `read_png_masks` reads ``<digits>.png`` files (palette or grayscale) and
    returns ``{frame_index: {obj_id: mask}}`` with ``obj_id = pixel value - 1``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sam3video.errors import (
    DecodeError,
    InvalidInputError,
    SourceNotFoundError,
    UnsupportedSourceError,
)
from sam3video.io.export.common import (
    DAVIS_PALETTE,
    check_frame_index,
    check_int,
    check_outputs,
    label_map,
    make_folder,
    temp_in,
    unlink_quietly,
)

__all__ = ["MAX_PNG_ID", "PngWriter", "read_png_masks"]

MAX_PNG_ID = 254  # pixel value = id + 1 must fit in 8 bits


class PngWriter:
    """Write per-frame indexed PNG masks into ``folder`` (see the module notes).

    Pixel value = ``obj_id + 1`` (0 = background), DAVIS palette, file ``<frame:05d>.png``,
    the higher id wins on overlaps, ids above 254 raise `InvalidInputError`.
    """

    def __init__(self, folder: str | os.PathLike[str], height: int, width: int) -> None:
        if not isinstance(folder, (str, os.PathLike)):
            raise InvalidInputError(f"folder: expected a str or os.PathLike, got {folder!r}")
        self.folder = Path(os.fspath(folder)).expanduser()
        self.height = check_int(height, "height", 1)
        self.width = check_int(width, "width", 1)
        make_folder(self.folder, "folder")
        unlink_quietly(temp_in(self.folder, ".", ".tmp", "folder"))  # fail now if not writable
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, frame_index: int, outputs: Mapping[int, Mapping[str, Any]]) -> Path:
        """Write ``<frame_index:05d>.png`` (replacing it); returns its path."""
        if self._closed:
            raise InvalidInputError(f"PngWriter({str(self.folder)!r}): write() after close()")
        t = check_frame_index(frame_index, None)
        items = check_outputs(outputs, self.height, self.width, need_score=False)
        for obj_id, _, _ in items:
            if obj_id > MAX_PNG_ID:
                raise InvalidInputError(
                    f"outputs: obj_id {obj_id} does not fit in an 8-bit PNG mask (pixel value "
                    f"= id + 1, ids 0..{MAX_PNG_ID}); use the JSON export for more objects"
                )
        values = np.array([0] + [obj_id + 1 for obj_id, _, _ in items], np.uint8)
        labels = values[label_map(items, self.height, self.width)]
        image = Image.fromarray(labels)  # "L", turned into "P" by the palette
        image.putpalette(DAVIS_PALETTE.tobytes())
        target = self.folder / f"{t:05d}.png"
        temp = self.folder / f".{target.name}.tmp"
        try:
            image.save(temp, format="PNG")
            os.replace(temp, target)
        finally:
            unlink_quietly(temp)
        return target

    def close(self) -> None:
        """Mark the writer closed (every PNG is already complete on disk). Idempotent."""
        self._closed = True

    def __enter__(self) -> PngWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_png_masks(folder: str | os.PathLike[str]) -> dict[int, dict[int, np.ndarray]]:
    """Read the ``<digits>.png`` masks of ``folder``.

    Returns:
        ``{frame_index: {obj_id: bool (H, W) mask}}`` in ascending frame order, with
        ``obj_id = pixel value - 1``; a PNG without objects maps to ``{}``.
    """
    source = Path(os.fspath(folder)).expanduser()
    if not source.exists():
        raise SourceNotFoundError(f"mask folder {str(source)!r} does not exist")
    if not source.is_dir():
        raise UnsupportedSourceError(f"mask folder {str(source)!r} is not a folder")
    files = sorted(
        (int(p.stem), p)
        for p in source.iterdir()
        if p.suffix.lower() == ".png" and p.stem.isdigit() and p.is_file()
    )
    result: dict[int, dict[int, np.ndarray]] = {}
    for t, file in files:
        try:
            with Image.open(file) as image:
                if image.mode not in ("P", "L"):
                    raise UnsupportedSourceError(
                        f"mask {str(file)!r}: expected a palette (P) or grayscale (L) PNG, got "
                        f"mode {image.mode!r}"
                    )
                labels = np.array(image)
        except OSError as error:
            raise DecodeError(f"mask {str(file)!r} cannot be read ({error})") from error
        values = np.unique(labels)
        result[t] = {int(v) - 1: labels == v for v in values[values > 0]}
    return result
