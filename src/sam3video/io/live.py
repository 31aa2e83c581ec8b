"""`LiveFrames`: the frames of a live session, appended one by one, a bounded window kept.

A live session has no file: frames arrive (``add_frame``, a camera, a network stream) and
are tracked as they come. The source numbers them 0, 1, 2, ... and keeps only the last
``window`` frames, so memory does not grow with the stream; reading an older frame is a
typed error naming what is still held. The first frame fixes the size; every later frame
must have it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from sam3video.errors import FrameIndexError, InvalidInputError
from sam3video.io.frame_source import FramesBase

DEFAULT_WINDOW = 32


class LiveFrames(FramesBase):
    """Appendable RGB frames, ``uint8 (H, W, 3)``, the last ``window`` held (thread-safe)."""

    def __init__(self, window: int = DEFAULT_WINDOW, fps: float | None = None) -> None:
        if not isinstance(window, int) or window < 1:
            raise InvalidInputError(f"window: expected an int >= 1, got {window!r}")
        self.window = window
        self._path = Path("<live>")
        self._height = self._width = None  # set by the first frame
        self._fps = fps
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()
        self._closed = False

    # -- the frames surface the session uses (path, height, width, fps, closed: `FramesBase`)

    def __len__(self) -> int:
        """Frames received so far (the next frame's index)."""
        return self._count

    def __getitem__(self, index: int) -> np.ndarray:
        with self._lock:
            frame = self._frames.get(index)
            if frame is None:
                held = (
                    f"frames {next(iter(self._frames))}..{self._count - 1}"
                    if self._frames
                    else "no frame yet"
                )
                raise FrameIndexError(
                    f"frame_index: a live session holds its last {self.window} frames "
                    f"({held}), got {index}"
                )
            return frame

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._frames.clear()

    # -- appending

    def check(self, frame: object, field: str = "frame") -> np.ndarray:
        """The frame as a ``uint8 (H, W, 3)`` copy, checked against this stream's size."""
        if not isinstance(frame, np.ndarray):
            raise InvalidInputError(
                f"{field}: expected an np.ndarray uint8 (H, W, 3) RGB frame, got "
                f"{type(frame).__name__}"
            )
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InvalidInputError(
                f"{field}: expected an np.ndarray uint8 (H, W, 3) RGB frame, got dtype "
                f"{frame.dtype} and shape {frame.shape}"
            )
        if min(frame.shape[:2]) < 1:
            raise InvalidInputError(f"{field}: expected a non-empty frame, got shape {frame.shape}")
        if self._height is not None and frame.shape[:2] != (self._height, self._width):
            raise InvalidInputError(
                f"{field}: expected a {self._width}x{self._height} frame (the size of this "
                f"stream's first frame), got {frame.shape[1]}x{frame.shape[0]}"
            )
        return np.array(frame, copy=True)  # never a view of the caller's buffer

    def append(self, frame: np.ndarray) -> int:
        """Append a checked frame (see `check`); returns its index."""
        with self._lock:
            if self._closed:
                raise InvalidInputError("frame: this live session is closed")
            if self._height is None:
                self._height, self._width = frame.shape[0], frame.shape[1]
            index = self._count
            self._frames[index] = frame
            self._count += 1
            while len(self._frames) > self.window:
                self._frames.popitem(last=False)
            return index
