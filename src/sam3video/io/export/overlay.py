"""The overlay: masks, contours and labels drawn on the frames, written as an MP4 (or a PNG).

Overlay video (`OverlayWriter`, `render_overlay`, `color_for_id`)
  * `render_overlay` blends each mask's colour into the frame (opacity 0.5; the higher id on
    top where masks overlap), draws its contour in full colour and labels it ``#<id> <score>``
    on a filled box of its colour, font scaled to the frame, placed so that labels do not
    cover one another (`sam3video.io.export.labels`). Empty masks draw nothing.
  * `color_for_id` is the DAVIS palette entry of the PNG pixel value, ``obj_id % 255 + 1``,
    so the overlay and the PNGs show an object in the same colour, for every run.
  * `OverlayWriter` renders each frame as it arrives and keeps it as a JPEG (quality 95) in
    a temporary folder beside the output (last write wins); ``close()`` encodes the MP4 in
    frame order, so frames may arrive in any order while memory stays bounded. With
    ``source`` (a `FrameSource` or any sequence of RGB frames) the video has
    ``len(source)`` frames and frames without results are the plain source frames; without
    it, the video holds the written frames only, in frame order. No frame at all: no file.
  * A ``.png`` path (the overlay of a single image) writes that one frame as a PNG, kept
    losslessly until ``close()``; a second frame is an error.
  * Codec: H.264 (PyAV ``libx264``, crf 18, ``yuv420p``; ``yuv444p`` for odd sizes, which
    4:2:0 cannot hold, and which some players such as browsers do not play) when FFmpeg has
    it, else MPEG-4 Part 2 (``mpeg4``). The video has the source's size and ``fps``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from PIL import Image

from sam3video.errors import InvalidInputError
from sam3video.io.export.common import (
    DAVIS_PALETTE,
    check_frame_index,
    check_int,
    check_outputs,
    label_map,
    output_file,
    temp_in,
    unlink_quietly,
)
from sam3video.io.export.labels import FONT, label_style, label_text, place_labels

__all__ = ["OverlayWriter", "color_for_id", "render_overlay"]


def color_for_id(obj_id: int) -> tuple[int, int, int]:
    """RGB colour of an object: the DAVIS palette entry ``obj_id % 255 + 1``."""
    obj_id = check_int(obj_id, "obj_id", 0)
    r, g, b = DAVIS_PALETTE[obj_id % 255 + 1]
    return int(r), int(g), int(b)


def render_overlay(
    frame_rgb: np.ndarray, outputs: Mapping[int, Mapping[str, Any]], alpha: float = 0.5
) -> np.ndarray:
    """Draw the masks, contours, ids and scores of one frame (see the module notes).

    Args:
        frame_rgb: uint8 (H, W, 3) RGB frame; not modified.
        outputs: ``{obj_id: {"mask": bool (H, W), "score": float (optional)}}``.
        alpha: opacity of the mask colours.

    Returns:
        A new uint8 (H, W, 3) RGB image.
    """
    frame = np.asarray(frame_rgb)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InvalidInputError(
            f"frame_rgb: expected a uint8 (H, W, 3) array, got {frame.dtype} {frame.shape}"
        )
    height, width = frame.shape[:2]
    items = check_outputs(outputs, height, width, need_score=False)
    image = frame.copy()
    if not items:
        return image
    colors = np.array([(0, 0, 0)] + [color_for_id(obj_id) for obj_id, _, _ in items], np.float32)
    labels = label_map(items, height, width)
    covered = labels > 0
    blended = (1.0 - alpha) * frame[covered] + alpha * colors[labels[covered]]
    image[covered] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)

    style = label_style(height, width)
    visible = [(obj_id, mask, score) for obj_id, mask, score in items if mask.any()]
    for obj_id, mask, _ in visible:  # contours first: labels are drawn over them
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(image, contours, -1, color_for_id(obj_id), style.line, cv2.LINE_AA)
    texts = [label_text(obj_id, score) for obj_id, _, score in visible]
    boxes = [_mask_box(mask) for _, mask, _ in visible]
    places = place_labels(boxes, [style.size(text) for text in texts], height, width)
    for (obj_id, _, _), text, (x0, y0, x1, y1) in zip(visible, texts, places):
        color = color_for_id(obj_id)
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), color, cv2.FILLED)
        luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        ink = (0, 0, 0) if luma > 140 else (255, 255, 255)
        (_, text_height), _ = cv2.getTextSize(text, FONT, style.scale, style.thickness)
        origin = (x0 + style.pad, y0 + style.pad + text_height)
        cv2.putText(image, text, origin, FONT, style.scale, ink, style.thickness, cv2.LINE_AA)
    return image


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of a non-empty mask, x1/y1 exclusive."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _pick_codec() -> str:
    try:
        av.codec.Codec("libx264", "w")
    except Exception:  # FFmpeg built without x264
        return "mpeg4"
    return "libx264"


class OverlayWriter:
    """Write an MP4 of the video with the results drawn on it (see the module notes).

    Args:
        path: the MP4 file to write (parent folders are created); a ``.png`` path writes
            the one frame of a single image as a PNG instead.
        fps: frame rate of the output (the source's).
        height, width: frame size in pixels.
        source: optional frames (a `FrameSource` or a sequence of uint8 (H, W, 3) RGB
            arrays): gives the frame count, the frames of ``write(t, outputs)`` called without
            ``frame``, and the plain frames of frames without results.

    ``write(frame_index, outputs, frame=None)`` renders one frame (last write wins);
    ``close()`` encodes the MP4 in frame order (idempotent; also on leaving a ``with`` block).
    """

    JPEG_QUALITY = 95

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        height: int,
        width: int,
        *,
        source: Sequence[np.ndarray] | None = None,
    ) -> None:
        if (
            isinstance(fps, bool)
            or not isinstance(fps, (int, float, np.integer, np.floating))
            or not math.isfinite(fps)
            or fps <= 0
        ):
            raise InvalidInputError(f"fps: expected a float > 0, got {fps!r}")
        self.height = check_int(height, "height", 1)
        self.width = check_int(width, "width", 1)
        if source is not None and not (
            hasattr(source, "__len__") and hasattr(source, "__getitem__")
        ):
            raise InvalidInputError(
                f"source: expected None or a sequence of frames, got {type(source).__name__}"
            )
        self.path = output_file(path, "path")
        self.still = self.path.suffix.lower() == ".png"
        if self.still and source is not None and len(source) != 1:
            raise InvalidInputError(
                f"path: a .png overlay holds one frame, got a source of {len(source)} frames "
                "(use an .mp4 path)"
            )
        self.fps = float(fps)
        self.source = source
        try:
            self._folder = Path(
                tempfile.mkdtemp(
                    prefix=f".{self.path.name}.", suffix=".frames", dir=self.path.parent
                )
            )
        except OSError as error:
            raise InvalidInputError(
                f"path: cannot write in the folder {str(self.path.parent)!r} "
                f"({error.strerror or error})"
            ) from error
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._folder, True)
        self._written: set[int] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def _kept(self) -> str:
        """Format of the rendered frames kept until ``close()`` (lossless for a still)."""
        return "png" if self.still else "jpg"

    def write(
        self,
        frame_index: int,
        outputs: Mapping[int, Mapping[str, Any]],
        frame: np.ndarray | None = None,
    ) -> None:
        """Render one frame and keep it until ``close()``; replaces an earlier write.

        Args:
            frame_index: int >= 0 (and < ``len(source)`` with a source).
            outputs: ``{obj_id: {"mask": bool (H, W), "score": float}}``.
            frame: uint8 (H, W, 3) RGB; ``None``: ``source[frame_index]``.
        """
        if self._closed:
            raise InvalidInputError(f"OverlayWriter({str(self.path)!r}): write() after close()")
        t = check_frame_index(frame_index, None if self.source is None else len(self.source))
        if self.still and self._written - {t}:
            raise InvalidInputError(
                f"frame_index: a .png overlay holds one frame, got frame {t} after frame "
                f"{min(self._written)} (use an .mp4 path)"
            )
        if frame is None:
            if self.source is None:
                raise InvalidInputError("frame: expected a uint8 (H, W, 3) array (no source given)")
            frame = self.source[t]
        frame = self._check_frame(frame, "frame")
        image = render_overlay(frame, outputs)
        params = [] if self.still else [cv2.IMWRITE_JPEG_QUALITY, self.JPEG_QUALITY]
        _, data = cv2.imencode(f".{self._kept}", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
        target = self._folder / f"{t:08d}.{self._kept}"
        temp = self._folder / f".{t:08d}.tmp"
        try:
            temp.write_bytes(data.tobytes())
            os.replace(temp, target)
        finally:
            unlink_quietly(temp)
        self._written.add(t)

    def close(self) -> None:
        """Encode the MP4 (or the PNG) atomically from the kept frames and delete them.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        temp = None
        try:
            indices = sorted(self._written) if self.source is None else range(len(self.source))
            if len(indices) == 0:
                return
            temp = temp_in(self.path.parent, f".{self.path.name}.", self.path.suffix, "path")
            if self.still:
                Image.fromarray(self._frame(indices[0])).save(temp, format="PNG")
            else:
                self._encode(temp, indices)
            os.replace(temp, self.path)
            temp = None
        finally:
            if temp is not None:
                unlink_quietly(temp)
            self._finalizer()

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_frame(self, frame: Any, field: str) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise InvalidInputError(
                f"{field}: expected a uint8 ({self.height}, {self.width}, 3) RGB array, got "
                f"{frame.dtype} {tuple(frame.shape)}"
            )
        return frame

    def _frame(self, t: int) -> np.ndarray:
        """RGB frame ``t`` of the output: the rendered one, else the plain source frame."""
        if t in self._written:
            data = np.fromfile(self._folder / f"{t:08d}.{self._kept}", np.uint8)
            return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return self._check_frame(self.source[t], f"source[{t}]")

    def _encode(self, file: Path, indices: Iterable[int]) -> None:
        codec = _pick_codec()
        odd = self.height % 2 or self.width % 2
        with av.open(str(file), "w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height = self.width, self.height
            if codec == "libx264":
                stream.pix_fmt = "yuv444p" if odd else "yuv420p"
                stream.options = {"crf": "18", "preset": "veryfast"}
            else:
                stream.pix_fmt = "yuv420p"
                stream.codec_context.qmax = 5  # keep text and contours sharp
            for t in indices:
                frame = av.VideoFrame.from_ndarray(self._frame(t), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
