"""`VideoSource`: the frames of a video file, decoded on demand by the chosen backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sam3video.errors import DecodeError
from sam3video.io.cv2_decoder import Cv2Decoder
from sam3video.io.decoder import Decoder, DecoderStopped
from sam3video.io.frame_source import FrameSource
from sam3video.io.pyav_decoder import PyAVDecoder
from sam3video.io.video_index import VideoIndex


class VideoSource(FrameSource):
    """Frames of a video file, decoded on demand by the chosen loader."""

    def __init__(
        self,
        path: Path,
        loader: str,
        index: VideoIndex,
        cache_size: int | None,
        prefetch: bool,
    ) -> None:
        self._info = index
        self._loader = loader
        decoder_class = PyAVDecoder if loader == "pyav" else Cv2Decoder
        self._decoder: Decoder | None = decoder_class(path, index)
        super().__init__(
            path, index.num_frames, index.height, index.width, index.fps, cache_size, prefetch
        )

    def _close_backend(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    def _load(self, target: int, keep_from: int) -> np.ndarray:
        decoder = self._decoder
        assert decoder is not None
        start = keep_from  # the first frame to convert: skip the cached head of the window
        while start < target and start in self._cache:
            start += 1
        # Continue the running decoder when it is between the keyframe before ``start`` (frame
        # 0 for a decoder that cannot seek) and ``start``; else seek.
        keyframe = self._info.seek_point(start) if decoder.can_seek else 0
        position = decoder.next_index
        how = "resume" if position is not None and keyframe <= position <= start else "seek"
        while True:
            if how == "seek":
                decoder.seek(start)
            elif how == "restart":
                decoder.restart()
            try:
                return self._decode_until(decoder, target, start)
            except DecoderStopped as stop:
                if how == "resume" and not stop.retry:
                    how = "seek"  # the running decoder failed: try from a fresh position
                elif how != "restart" and stop.retry:
                    how = "restart"  # the seek cannot be trusted: count from the beginning
                else:
                    raise DecodeError(
                        f"frame {target} of video {str(self._path)!r} cannot be decoded "
                        f"({self._loader} loader): {stop}"
                    ) from None

    def _decode_until(self, decoder: Decoder, target: int, keep_from: int) -> np.ndarray:
        while True:
            index, handle = decoder.next_frame()
            self._decoded += 1
            if index is None:
                continue
            if index > target:
                raise decoder.stopped(
                    f"the decoder skipped from before frame {target} to {index}", retry=True
                )
            if index >= keep_from and (index == target or index not in self._cache):
                frame = decoder.to_rgb(handle)
                if frame.shape != (self._height, self._width, 3):
                    raise DecodeError(
                        f"frame {index} of video {str(self._path)!r} decodes to shape "
                        f"{frame.shape}, expected {(self._height, self._width, 3)}"
                    )
                self._cache.put(index, frame)
                if index == target:
                    return frame
