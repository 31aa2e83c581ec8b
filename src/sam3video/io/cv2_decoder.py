"""The ``"cv2"`` loader: OpenCV's FFmpeg backend decodes (BGR converted to RGB)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sam3video.errors import DecodeError
from sam3video.io.decoder import Decoder, rotate
from sam3video.io.video_index import VideoIndex


class Cv2Decoder(Decoder):
    """OpenCV decoding; a frame's key is its time, ``CAP_PROP_POS_MSEC``, matched against the
    index's timestamps (so only timestamp-keyed indices let it seek or check its frames)."""

    def __init__(self, path: Path, index: VideoIndex) -> None:
        super().__init__(index)
        self._path = path
        self._cap: Any = None
        self._held: tuple[int | None] | None = None  # a grabbed frame not handed out yet
        self._times: np.ndarray | None = None  # frame times as CAP_PROP_POS_MSEC reports them
        if index.pts is not None:
            ticks = (index.pts - index.start_time).astype(np.float64)
            self._times = ticks * float(index.time_base) * 1000.0
        self._offset_ms = 0.0
        self.restart()
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        # OpenCV seeks by frame number = time x fps, which is only exact for constant-rate
        # files; and its landing cannot be checked against byte positions, so files whose index
        # had to be built by decoding (damaged, truncated, variable-rate, reordered without
        # timestamps) are read from the start.
        self._can_seek = False
        if self._times is not None and fps > 0 and index.verified_by != "full-decode":
            slots = np.round(self._times * fps / 1000.0)
            self._can_seek = bool(np.array_equal(slots - slots[0], np.arange(len(slots))))
        # Calibrate the times on the first frame (it is frame 0) and hold it for the first read.
        self._grab_or_stop()
        if self._times is not None:
            self._offset_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC) - float(self._times[0])
        self._held = (self._name(0),)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._next = self._sought = None

    def restart(self) -> None:
        self.close()
        cap = cv2.VideoCapture(str(self._path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise DecodeError(f"OpenCV cannot open video {str(self._path)!r}")
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # the rotation is applied as in PyAV
        self._cap = cap
        self._held = None
        self._started_from_beginning()

    @property
    def can_seek(self) -> bool:
        return self._can_seek and self._keys_agree

    def seek(self, index: int) -> None:
        # OpenCV seeks itself: it decodes from a keyframe before ``index`` up to ``index``.
        if index == 0 or not self.can_seek or self._cap is None:
            self.restart()
            return
        # Land on the frame, or just before it when its time is unknown (OpenCV reports 0 ms
        # for frames flushed out at the end of some streams); then decode forward.
        for landing in range(index, max(index - 3, 0), -1):
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, landing)
            if not self._cap.grab():
                break
            if self._match() == landing:
                self._seeked(landing, index)
                self._held = (self._name(landing),)
                return
        self.restart()  # OpenCV landed elsewhere: decode from the start instead

    def next_frame(self) -> tuple[int | None, None]:
        if self._held is not None:
            (index,), self._held = self._held, None
            return index, None
        self._grab_or_stop()
        return self._name(self._match()), None

    def to_rgb(self, _: None) -> np.ndarray:
        ok, bgr = self._cap.retrieve()
        if not ok:
            raise self.stopped("OpenCV could not convert the frame")
        return rotate(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self._index.rotation)

    def _grab_or_stop(self) -> None:
        if not self._cap.grab():
            raise self.stopped("OpenCV could not read another frame")

    def _match(self) -> int | None:
        """The frame whose time OpenCV reports for the frame just grabbed, or None."""
        if self._times is None:
            return None
        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC) - self._offset_ms
        k = int(np.searchsorted(self._times, ms - 1e-3))
        return k if k < len(self._times) and abs(self._times[k] - ms) <= 1e-3 else None
