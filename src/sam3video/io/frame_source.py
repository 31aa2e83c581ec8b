"""`FrameSource`: the random-access, cached, thread-safe frame reader every source kind shares,
and `FramesBase`, the surface it shares with the frames of a live session (`io.live`).

A subclass says how to produce frames (`FrameSource._load`); this class checks indices, keeps
the LRU cache, chooses the backward window, drives the prefetch thread and closes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sam3video.errors import FrameIndexError, InvalidInputError
from sam3video.io.frame_cache import FrameCache, Prefetcher

_DEFAULT_CACHE_BYTES = 256 * 2**20
_MIN_AUTO_CACHE, _MAX_AUTO_CACHE = 4, 64


class CacheInfo(NamedTuple):
    """Counters of a source's frame cache (for monitoring and tests)."""

    size: int  # frames held now
    capacity: int  # most frames it may hold (cache_size)
    peak: int  # most frames it has held at once
    hits: int  # reads served from the cache
    misses: int  # reads that had to decode
    decoded: int  # frames produced by the decoder (including the ones skipped over)


class FramesBase:
    """What a session reads of any frames, a file's or a live stream's: ``path``, ``height``,
    ``width``, ``fps``, ``closed``, ``len()``, ``source[i]`` (RGB ``uint8 (H, W, 3)``) and
    ``close()``. Subclasses set ``_path``, ``_height``, ``_width``, ``_fps`` and ``_closed``.
    """

    _path: Path
    _height: int | None
    _width: int | None
    _fps: float | None
    _closed: bool = False

    @property
    def path(self) -> Path:
        """The video file, frame folder or image this source reads (``<live>`` for a live
        session)."""
        return self._path

    @property
    def height(self) -> int | None:
        return self._height

    @property
    def width(self) -> int | None:
        return self._width

    @property
    def fps(self) -> float | None:
        """Nominal frame rate of a video; ``None`` for folders, images and unknown rates."""
        return self._fps

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class FrameSource(FramesBase):
    """Random access to the RGB frames of a video, a frame folder or an image.

    Built by `open_frames`; see `sam3video.io.frames` for the decisions it implements.
    ``source[i]`` -> ``np.ndarray`` uint8 ``(height, width, 3)`` RGB.
    """

    def __init__(
        self,
        path: Path,
        num_frames: int,
        height: int,
        width: int,
        fps: float | None,
        cache_size: int | None,
        prefetch: bool,
    ) -> None:
        self._path = path
        self._num_frames = num_frames
        self._height = height
        self._width = width
        self._fps = fps
        if cache_size is None:
            fitting = _DEFAULT_CACHE_BYTES // max(1, height * width * 3)
            cache_size = min(_MAX_AUTO_CACHE, max(_MIN_AUTO_CACHE, fitting))
        self._cache = FrameCache(cache_size)
        # Backward reads cache a window ending at the frame; leave room for the prefetched one.
        self._window = max(1, cache_size // (3 if prefetch else 2))
        self._decode_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._last_index: int | None = None
        self._direction = 1
        self._decoded = 0
        self._closed = False
        self._prefetcher = Prefetcher(self) if prefetch else None

    # -- public API (path, height, width, fps, closed: `FramesBase`) ---------------------------

    def __len__(self) -> int:
        return self._num_frames

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index`` as a new uint8 ``(H, W, 3)`` RGB array."""
        i = self._check_index(index)
        self._check_open()
        with self._state_lock:
            previous = self._last_index
            self._last_index = i
            if previous is not None and i != previous:
                self._direction = 1 if i > previous else -1
            direction = self._direction
        frame = self._cache.get(i)
        if frame is None:
            keep_from = i
            if previous is not None and 0 < previous - i <= self._window:
                keep_from = max(0, i - self._window + 1)  # stepping back: cache a window
            with self._decode_lock:
                self._check_open()
                frame = self._cache.peek(i)
                if frame is None:
                    frame = self._load(i, keep_from)
        if self._prefetcher is not None:
            self._prefetcher.request(i, direction)
        return frame.copy()

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def cache_info(self) -> CacheInfo:
        c = self._cache
        return CacheInfo(len(c), c.capacity, c.peak, c.hits, c.misses, self._decoded)

    def close(self) -> None:
        """Stop the prefetch thread, drop the cache and release the decoder. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._prefetcher is not None:
            self._prefetcher.stop()
        with self._decode_lock:
            self._close_backend()
            self._cache.clear()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(path={str(self._path)!r}, frames={self._num_frames}, "
            f"size={self._height}x{self._width}, fps={self._fps})"
        )

    # -- for subclasses -----------------------------------------------------------------------

    def _load(self, target: int, keep_from: int) -> np.ndarray:
        """Decode frame ``target`` (and cache those in ``[keep_from, target]``); return it.

        Called with the decode lock held.
        """
        raise NotImplementedError

    def _close_backend(self) -> None:
        """Release the decoder (called once, with the decode lock held)."""

    # -- internals ----------------------------------------------------------------------------

    def _check_index(self, index: object) -> int:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise FrameIndexError(
                f"frame index: expected an int in [0, {self._num_frames}), "
                f"got {type(index).__name__} {repr(index)[:100]} (source {str(self._path)!r})"
            )
        i = int(index)
        if not 0 <= i < self._num_frames:
            raise FrameIndexError(
                f"frame index: expected an int in [0, {self._num_frames}), got {i} "
                f"(source {str(self._path)!r} has {self._num_frames} frames)"
            )
        return i

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInputError(f"frame source {str(self._path)!r} is closed")

    def _prefetch(self, index: int, direction: int) -> None:
        """Decode ``index`` ahead of the reader (called by the prefetch thread)."""
        if index in self._cache:
            return
        keep_from = index if direction > 0 else max(0, index - self._window + 1)
        with self._decode_lock:
            if self._closed or index in self._cache:
                return
            self._load(index, keep_from)
