"""The ``"pyav"`` loader: PyAV decodes, frames are recognised by their key (`video_index`)."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from sam3video.io.decoder import Decoder, rotate
from sam3video.io.video_container import describe_av_error, open_container
from sam3video.io.video_index import VideoIndex


class PyAVDecoder(Decoder):
    """PyAV decoding. With position keys, each packet's pts is set to its byte position before
    it is decoded, so the frame it produces carries the position (`video_index`)."""

    def __init__(self, path: Path, index: VideoIndex) -> None:
        super().__init__(index)
        self._path = path
        self._tokens = index.key_kind == "position"
        self._container: Any = None
        self._stream: Any = None
        self._packets: Iterator[Any] = iter(())
        self._pending: deque[Any] = deque()
        self.restart()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._pending.clear()
        self._next = self._sought = None

    def restart(self) -> None:
        self.close()
        self._container = open_container(self._path)
        self._stream = self._container.streams[self._index.stream_index]
        self._stream.thread_type = "AUTO"
        self._packets = self._container.demux(self._stream)
        self._started_from_beginning()

    @property
    def can_seek(self) -> bool:
        return self._keys_agree and self._index.key_kind is not None

    def seek(self, index: int) -> None:
        target = self._index.seek_target(index) if self.can_seek else None
        if target is None or self._container is None:
            self.restart()
            return
        stamps, keyframe = target
        fallback = None  # a timestamp that lands on an earlier keyframe (more to decode)
        for stamp in stamps:
            landing = self._seek_to(stamp)
            if landing == keyframe:
                self._seeked(landing, index)
                return
            if landing is not None and landing < keyframe and fallback is None:
                fallback = stamp
        landing = self._seek_to(fallback) if fallback is not None else None
        if landing is None:
            self.restart()  # no seek lands on a keyframe a sequential read finds
            return
        self._seeked(landing, index)

    def _seek_to(self, stamp: int) -> int | None:
        """Seek back from ``stamp``; the keyframe (a frame index) it landed on, or None."""
        try:
            self._container.seek(stamp, stream=self._stream, backward=True, any_frame=False)
            self._stream.codec_context.flush_buffers()
            packets = self._container.demux(self._stream)
            first = next(packets, None)
        except av.error.FFmpegError:
            return None
        self._pending.clear()
        self._packets = itertools.chain([first], packets) if first is not None else iter(())
        return None if first is None else self._index.landing(first)

    def next_frame(self) -> tuple[int | None, Any]:
        while not self._pending:
            try:
                packet = next(self._packets, None)
                if packet is None:
                    raise self.stopped("end of stream")
                if self._tokens:
                    packet.pts = packet.pos
                self._pending.extend(self._stream.decode(packet))
            except av.error.FFmpegError as error:
                raise self.stopped(describe_av_error(error)) from None
        frame = self._pending.popleft()
        return self._name(self._index.index_of(frame.pts)), frame

    def to_rgb(self, frame: Any) -> np.ndarray:
        return rotate(frame.to_ndarray(format="rgb24"), self._index.rotation)
