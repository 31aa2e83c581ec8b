"""Frame sources: lazy, random-access RGB frames from a video file, a frame folder or one image.

``open_frames(path, loader="cv2", *, cache_size=None, prefetch=False)`` returns a `FrameSource`
with ``len(source)``, ``source.height``, ``source.width``, ``source.fps`` (``None`` where
unknown), ``source.path``, ``source[i]`` -> ``np.ndarray`` uint8 ``(H, W, 3)`` **RGB** at the
original resolution, iteration, ``close()`` and the context-manager protocol.

Decisions
---------
Sources
  * A video is recognised by its extension: ``.mp4 .mov .avi .mkv .webm`` (any case).
  * An image file (``.jpg .jpeg .png .bmp .tif .tiff .webp``) is a one-frame source.
  * A folder holds frames as image files with those extensions; hidden files (names starting
    with ``.``), other files and sub-folders are ignored. Frames are ordered by the last
    integer in the file name, so ``00000.jpg``, ``1.jpg`` and ``frame_12.png`` sort
    numerically (ties broken by name). If some name has no digits at all, the folder is sorted
    "naturally" instead (runs of digits compared as numbers).
  * Images are decoded by PIL with ``convert("RGB")`` whatever the loader, as SAM 3 does: EXIF
    orientation is not applied and alpha is dropped. Every frame of a folder must have the
    size of the first one (else `UnsupportedSourceError` when the odd frame is read).

Videos
  * ``loader`` picks the decoder that produces the pixels: ``"cv2"`` (OpenCV's FFmpeg backend,
    BGR converted to RGB) or ``"pyav"`` (PyAV, ``rgb24``). Both loaders share one frame index,
    read with PyAV, so they agree on the count and on which frame an index means.
  * Frame ``i`` is the ``i``-th frame the decoder outputs when the whole file is decoded from
    the start, which is what SAM 3's own cv2 loader sees. Variable-frame-rate files keep their
    coded frames: ``tree.avi`` holds 68 coded frames spread over 444 frame slots of its
    nominal 15 fps, and has 68 frames here (empty "repeat the last frame" slots are not
    invented). ``fps`` is the container's nominal rate.
  * The display rotation of the stream (phone videos) is applied, in both loaders, so frames
    come upright; ``height``/``width`` are those of the rotated frames. The storage size is
    returned for anamorphic (non-square-pixel) videos, as OpenCV does.
  * The frame count is exact. Opening a video demuxes the container once (no decoding) to
    list its frames (one per non-empty, non-discarded packet, in timestamp order) and their
    keyframes, and decodes the first frame (to validate the stream and read its rotation).
    The demuxed list is then checked against the container's frame count: when both agree it
    is used as is; when the container gives no count (mkv, webm) the last group of pictures
    (from the last keyframe to the end) is decoded and must match; when they disagree
    (truncated, variable-frame-rate or edited files), or the tail check fails, every frame is
    decoded once to build the list. The verified index is cached per file (path, size,
    mtime), so re-opening a file costs nothing.
  * Decoding stops at the first packet the decoder rejects, as OpenCV does: a truncated file
    yields the frames that decode before the damage, and ``len`` counts exactly those.
  * A video that cannot be opened, has no video stream or whose first frame cannot be
    decoded raises `DecodeError` (no video stream: `UnsupportedSourceError`). A frame listed
    in the index that the decoder then fails to produce (damage inside the file) raises
    `DecodeError` naming the frame and the path when it is read; other frames stay readable.
    Inside a damaged group of pictures the decoder conceals errors from what it decoded
    before, so such frames may differ between a seek and a read from the start.

Access, caching and memory
  * Nothing but the probe above is decoded until a frame is asked for. Decoded frames go to a
    bounded LRU cache of ``cache_size`` frames (default: as many as fit in 256 MiB, between
    4 and 64), so memory is bounded whatever the length of the video.
  * Reading forward continues the running decoder (one decode per frame). A jump seeks to the
    nearest keyframe at or before the frame and decodes forward from there. A seek must land
    on the keyframe packet a sequential read finds under that timestamp (same byte position),
    else the decoder restarts from the beginning. OpenCV's own seek (by frame number = time x
    fps) is used only for constant-rate files whose index needed no full decode; otherwise
    the cv2 loader restarts from the beginning when it must go back (slower, still exact;
    prefer "pyav" for variable-frame-rate files read out of order). Reading backward
    (a step back of less than a window) decodes the part of the group of pictures that ends
    at the frame once and caches a window of up to ``cache_size // 2`` frames
    (``cache_size // 3`` with prefetch), so stepping back through a video costs about
    ``gop_length / window`` decodes per frame instead of a decode from the start.
  * ``source[i]`` takes an ``int`` (or numpy integer) in ``[0, len)``. Negative indices are
    rejected (`FrameIndexError`) rather than counted from the end: a frame index is an
    absolute position in the video, and a wrapped ``-1`` usually hides a bug. Bools, floats,
    strings and slices are rejected too.
  * Each ``source[i]`` returns a new array that the caller owns (the cache keeps its own).
  * ``prefetch=True`` starts one background thread that decodes ahead of the reader in its
    current direction (a window ahead, skipping frames already cached). The decoder is shared
    under a lock and decoding is deterministic, so results are identical with and without
    prefetch. Errors in the thread are dropped (the reader decodes the frame itself and gets
    the error). ``close()`` stops and joins the thread and releases the decoder; reading a
    closed source raises `InvalidInputError`.
  * Sources are thread-safe: several threads may read the same source.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import av
import cv2
import numpy as np
from PIL import Image

from sam3video.errors import (
    DecodeError,
    FrameIndexError,
    InvalidInputError,
    SourceNotFoundError,
    UnsupportedSourceError,
)

__all__ = [
    "CacheInfo",
    "FrameSource",
    "IMAGE_EXTENSIONS",
    "LOADERS",
    "VIDEO_EXTENSIONS",
    "open_frames",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LOADERS = ("cv2", "pyav")

_DEFAULT_CACHE_BYTES = 256 * 2**20
_MIN_AUTO_CACHE, _MAX_AUTO_CACHE = 4, 64


def open_frames(
    path: str | os.PathLike[str],
    loader: str = "cv2",
    *,
    cache_size: int | None = None,
    prefetch: bool = False,
) -> FrameSource:
    """Open a video file, a folder of frames or one image as a lazy `FrameSource`.

    Args:
        path: a video (.mp4 .mov .avi .mkv .webm), a folder of JPEG/PNG/... frames, or an image.
        loader: ``"cv2"`` or ``"pyav"``, the video decoder (SAM 3's ``video_loader_type``);
            folders and images are always read with PIL.
        cache_size: most decoded frames kept in memory; ``None`` picks as many as fit in
            256 MiB, between 4 and 64.
        prefetch: decode ahead of the reader in a background thread.

    Raises:
        InvalidInputError: a bad argument (unknown loader, non-positive cache size, ...).
        SourceNotFoundError: ``path`` does not exist.
        UnsupportedSourceError: an unsupported extension, a folder without images, a file
            without a video stream.
        DecodeError: a video or image that cannot be read.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInputError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    if not isinstance(loader, str) or loader not in LOADERS:
        raise InvalidInputError(f"loader: expected one of {LOADERS}, got {loader!r}")
    if cache_size is not None and (
        isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1
    ):
        raise InvalidInputError(f"cache_size: expected None or an int >= 1, got {cache_size!r}")
    if not isinstance(prefetch, bool):
        raise InvalidInputError(f"prefetch: expected a bool, got {prefetch!r}")

    source_path = Path(os.fspath(path)).expanduser()
    if not source_path.exists():
        raise SourceNotFoundError(f"frame source {str(source_path)!r} does not exist")
    if source_path.is_dir():
        files = _list_frame_files(source_path)
        if not files:
            raise UnsupportedSourceError(
                f"folder {str(source_path)!r} holds no image frames "
                f"(expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
            )
        return _ImageSource(source_path, files, cache_size, prefetch)
    suffix = source_path.suffix.lower()
    if not source_path.is_file() or suffix not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        given = repr(suffix or "no extension") if source_path.is_file() else "a special file"
        raise UnsupportedSourceError(
            f"{str(source_path)!r} is not a supported source: expected a video "
            f"({', '.join(VIDEO_EXTENSIONS)}), an image ({', '.join(IMAGE_EXTENSIONS)}) "
            f"or a folder of images, got {given}"
        )
    if suffix in IMAGE_EXTENSIONS:
        return _ImageSource(source_path, [source_path], cache_size, prefetch)
    info = _probe_video(source_path)
    return _VideoSource(source_path, loader, info, cache_size, prefetch)


class CacheInfo(NamedTuple):
    """Counters of a source's frame cache (for monitoring and tests)."""

    size: int  # frames held now
    capacity: int  # most frames it may hold (cache_size)
    peak: int  # most frames it has held at once
    hits: int  # reads served from the cache
    misses: int  # reads that had to decode
    decoded: int  # frames produced by the decoder (including the ones skipped over)


class _FrameCache:
    """Thread-safe LRU map index -> frame holding at most ``capacity`` frames."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.peak = 0
        self.hits = 0
        self.misses = 0

    def get(self, index: int) -> np.ndarray | None:
        """Return the frame and mark it most recently used; counts a hit or a miss."""
        with self._lock:
            frame = self._frames.get(index)
            if frame is None:
                self.misses += 1
            else:
                self._frames.move_to_end(index)
                self.hits += 1
            return frame

    def peek(self, index: int) -> np.ndarray | None:
        """Return the frame without touching its recency or the counters."""
        with self._lock:
            return self._frames.get(index)

    def __contains__(self, index: int) -> bool:
        with self._lock:
            return index in self._frames

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def put(self, index: int, frame: np.ndarray) -> None:
        with self._lock:
            if index not in self._frames:
                # Evict before inserting so the cache never holds more than capacity frames.
                while len(self._frames) >= self.capacity:
                    self._frames.popitem(last=False)
            self._frames[index] = frame
            self._frames.move_to_end(index)
            self.peak = max(self.peak, len(self._frames))

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()


class FrameSource:
    """Random access to the RGB frames of a video, a frame folder or an image.

    Built by `open_frames`; see the module docstring for the decisions it implements.
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
        self._cache = _FrameCache(cache_size)
        # Backward reads cache a window ending at the frame; leave room for the prefetched one.
        self._window = max(1, cache_size // (3 if prefetch else 2))
        self._decode_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._last_index: int | None = None
        self._direction = 1
        self._decoded = 0
        self._closed = False
        self._prefetcher = _Prefetcher(self) if prefetch else None

    # -- public API ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The video file, frame folder or image this source reads."""
        return self._path

    @property
    def height(self) -> int:
        return self._height

    @property
    def width(self) -> int:
        return self._width

    @property
    def fps(self) -> float | None:
        """Nominal frame rate of a video; ``None`` for folders, images and unknown rates."""
        return self._fps

    @property
    def closed(self) -> bool:
        return self._closed

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

    # -- internals ----------------------------------------------------------------------------

    def _check_index(self, index: object) -> int:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise FrameIndexError(
                f"frame index: expected an int in [0, {self._num_frames}), "
                f"got {type(index).__name__} {index!r} (source {str(self._path)!r})"
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

    def _load(self, target: int, keep_from: int) -> np.ndarray:
        """Decode frame ``target`` (and cache those in ``[keep_from, target]``); return it.

        Called with the decode lock held.
        """
        raise NotImplementedError

    def _close_backend(self) -> None:
        pass


class _Prefetcher:
    """One daemon thread that decodes a window ahead of the last read, in its direction."""

    def __init__(self, source: FrameSource) -> None:
        self._source = weakref.ref(source)  # the thread must not keep the source alive
        self._cond = threading.Condition()
        self._request: tuple[int, int] | None = None
        self._generation = 0
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, name=f"sam3video-prefetch:{source.path.name}", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def request(self, index: int, direction: int) -> None:
        with self._cond:
            self._request = (index, direction)
            self._generation += 1
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._request is None and not self._stopped:
                    self._cond.wait(timeout=1.0)
                    if self._source() is None:
                        return
                if self._stopped:
                    return
                (index, direction), generation = self._request, self._generation
                self._request = None
            source = self._source()
            if source is None:
                return
            try:
                for step in range(1, source._window + 1):
                    j = index + direction * step
                    if self._stopped or self._generation != generation or not 0 <= j < len(source):
                        break
                    source._prefetch(j, direction)
            except Exception:  # noqa: BLE001 - the reader decodes the frame itself and raises
                pass
            del source


# -- images ---------------------------------------------------------------------------------------


class _ImageSource(FrameSource):
    """Frames read one by one with PIL from image files."""

    def __init__(
        self, path: Path, files: list[Path], cache_size: int | None, prefetch: bool
    ) -> None:
        self._files = files
        width, height = _image_size(files[0])
        super().__init__(path, len(files), height, width, None, cache_size, prefetch)

    def _load(self, target: int, keep_from: int) -> np.ndarray:
        file = self._files[target]
        frame = _read_image(file)
        self._decoded += 1
        if frame.shape[:2] != (self._height, self._width):
            raise UnsupportedSourceError(
                f"frame {target} ({str(file)!r}) is {frame.shape[0]}x{frame.shape[1]} (HxW), "
                f"but the first frame ({str(self._files[0])!r}) is {self._height}x{self._width}; "
                "all frames of a folder must have one size"
            )
        self._cache.put(target, frame)
        return frame


def _image_size(file: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    try:
        with Image.open(file) as image:
            return image.size
    except Exception as error:  # PIL raises OSError, ValueError, DecompressionBombError, ...
        raise DecodeError(f"cannot read image {str(file)!r}: {error}") from error


def _read_image(file: Path) -> np.ndarray:
    try:
        with Image.open(file) as image:
            return np.array(image.convert("RGB"))
    except Exception as error:
        raise DecodeError(f"cannot decode image {str(file)!r}: {error}") from error


_DIGITS = re.compile(r"(\d+)")


def _natural_key(name: str) -> tuple[Any, ...]:
    # Parts alternate text/number, so tuples compare position by position without type errors.
    return tuple(int(p) if k % 2 else p for k, p in enumerate(_DIGITS.split(name)))


def _list_frame_files(folder: Path) -> list[Path]:
    """Image files of ``folder`` in frame order (see the module docstring)."""
    try:
        entries = [
            e for e in os.scandir(folder)
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
            and e.is_file()
        ]
    except OSError as error:
        raise UnsupportedSourceError(f"cannot list folder {str(folder)!r}: {error}") from error
    names = [e.name for e in entries]
    numbers = [_DIGITS.findall(os.path.splitext(n)[0]) for n in names]
    if all(numbers):
        keys = [(int(num[-1]), _natural_key(name)) for num, name in zip(numbers, names)]
    else:
        keys = [(0, _natural_key(name)) for name in names]
    order = sorted(range(len(names)), key=keys.__getitem__)
    return [folder / names[k] for k in order]


# -- videos: probing and the frame index ----------------------------------------------------------


@dataclass(frozen=True)
class _VideoInfo:
    """The verified frame index of a video stream (shared by both loaders)."""

    stream_index: int
    num_frames: int
    height: int  # after the display rotation
    width: int
    fps: float | None
    rotation: int  # quarter turns counter-clockwise to apply to decoded frames (0..3)
    time_base: Fraction
    start_time: int
    # Presentation timestamps of the frames, strictly increasing, or None when the stream has
    # no usable timestamps (frames are then identified by their rank from the start).
    pts: np.ndarray | None
    seek_points: np.ndarray  # sorted frame indices of keyframes; always holds 0
    # Byte position of each keyframe packet (by timestamp) in a sequential read: a seek must
    # land on the same packet, else the container's index disagrees with its data (damage).
    key_positions: dict[int, int]
    verified_by: str  # "container", "tail-decode" or "full-decode": how the count was checked

    def seek_point(self, index: int) -> int:
        """The last keyframe index at or before ``index``."""
        k = int(np.searchsorted(self.seek_points, index, side="right")) - 1
        return int(self.seek_points[max(k, 0)])

    def index_of(self, pts: int | None) -> int | None:
        if pts is None or self.pts is None:
            return None
        k = int(np.searchsorted(self.pts, pts))
        return k if k < len(self.pts) and int(self.pts[k]) == pts else None


class _DecoderStopped(Exception):
    """The decoder ended (end of stream or a rejected packet) before the wanted frame."""


_PROBE_CACHE: OrderedDict[tuple[str, int, int], _VideoInfo] = OrderedDict()
_PROBE_CACHE_LOCK = threading.Lock()
_PROBE_CACHE_SIZE = 32


def _probe_video(path: Path) -> _VideoInfo:
    """Build (or fetch from the per-file cache) the verified frame index of a video."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _PROBE_CACHE_LOCK:
        if key in _PROBE_CACHE:
            _PROBE_CACHE.move_to_end(key)
            return _PROBE_CACHE[key]
    info = _build_video_info(path)
    with _PROBE_CACHE_LOCK:
        _PROBE_CACHE[key] = info
        while len(_PROBE_CACHE) > _PROBE_CACHE_SIZE:
            _PROBE_CACHE.popitem(last=False)
    return info


def _open_container(path: Path) -> Any:
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as error:
        raise DecodeError(f"cannot open video {str(path)!r}: {error}") from error


def _video_stream(container: Any, path: Path) -> Any:
    streams = container.streams.video
    if not streams:
        raise UnsupportedSourceError(f"{str(path)!r} holds no video stream")
    return streams[0]


def _packet_ts(packet: Any) -> int | None:
    return packet.pts if packet.pts is not None else packet.dts


def _build_video_info(path: Path) -> _VideoInfo:
    container = _open_container(path)
    try:
        stream = _video_stream(container, path)
        stream_index = stream.index
        time_base = stream.time_base or Fraction(1, 1)
        start_time = stream.start_time or 0
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        declared = int(stream.frames or 0)
        # Demux once, without decoding: one frame per non-empty, non-discarded packet.
        stamps: list[int | None] = []
        key_stamps: set[int] = set()
        key_positions: dict[int, int] = {}
        demux_failed = False
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                ts = _packet_ts(packet)
                stamps.append(ts)
                if packet.is_keyframe and ts is not None:
                    key_stamps.add(ts)
                    if packet.pos is not None and packet.pos >= 0:
                        key_positions[ts] = packet.pos
        except av.error.FFmpegError:
            demux_failed = True  # a damaged container: the decode scan below decides
    finally:
        container.close()

    first_pts, rotation, frame_size = _decode_first_frame(path, stream_index)
    rotation = int(round(rotation / 90.0)) % 4
    height, width = frame_size if rotation % 2 == 0 else frame_size[::-1]

    pts: np.ndarray | None = None
    verified_by = "container"
    usable = bool(stamps) and None not in stamps and len(set(stamps)) == len(stamps)
    if usable:
        pts = np.sort(np.asarray(stamps, dtype=np.int64))
        if int(pts[0]) != first_pts:
            usable = False  # the decoder does not start where the demuxer says
    if usable and not demux_failed and declared == len(stamps):
        pass  # the container's count and the demuxed packets agree
    elif usable and not demux_failed and declared == 0:
        verified_by = "tail-decode"
        if not _tail_matches(path, stream_index, pts, key_stamps, key_positions):
            usable = False
    else:
        usable = False
    if usable:
        num_frames = len(stamps)
    else:
        verified_by = "full-decode"
        pts, num_frames = _decode_all_timestamps(path, stream_index)
    if pts is not None:
        keys = np.fromiter(key_stamps, np.int64, len(key_stamps))
        seek_points = np.flatnonzero(np.isin(pts, keys))
    else:
        seek_points = np.zeros(1, dtype=np.int64)
    if num_frames == 0:
        raise DecodeError(f"video {str(path)!r} holds no decodable frame")
    if len(seek_points) == 0 or seek_points[0] != 0:
        seek_points = np.concatenate([np.zeros(1, dtype=np.int64), seek_points])
    return _VideoInfo(
        stream_index=stream_index,
        num_frames=num_frames,
        height=height,
        width=width,
        fps=fps,
        rotation=rotation,
        time_base=Fraction(time_base),
        start_time=int(start_time),
        pts=pts,
        seek_points=seek_points.astype(np.int64),
        key_positions=key_positions,
        verified_by=verified_by,
    )


def _decode_frames(
    path: Path,
    stream_index: int,
    seek_pts: int | None = None,
    key_positions: dict[int, int] | None = None,
) -> Iterator[Any]:
    """Decoded frames from the start (or from the keyframe at or before ``seek_pts``) until the
    end of the stream or the first packet the decoder rejects. A seek that does not land on a
    known keyframe packet yields nothing."""
    container = _open_container(path)
    try:
        stream = container.streams[stream_index]
        stream.thread_type = "AUTO"
        if seek_pts is not None:
            container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        packets = container.demux(stream)
        if seek_pts is not None:
            first = next(packets, None)
            if first is None or not _landed_well(first, seek_pts, key_positions or {}):
                return
            packets = itertools.chain([first], packets)
        for packet in packets:
            try:
                frames = stream.decode(packet)
            except av.error.FFmpegError:
                return
            yield from frames
    except av.error.FFmpegError:
        return
    finally:
        container.close()


def _decode_first_frame(path: Path, stream_index: int) -> tuple[int | None, int, tuple[int, int]]:
    with contextlib.closing(_decode_frames(path, stream_index)) as frames:
        for frame in frames:
            return frame.pts, int(frame.rotation or 0), (frame.height, frame.width)
    raise DecodeError(f"video {str(path)!r}: its first frame cannot be decoded")


def _landed_well(packet: Any, target: int, key_positions: dict[int, int]) -> bool:
    """Whether the first packet after a seek to ``target`` is a keyframe at or before it, and
    the same packet that a sequential read finds under that timestamp."""
    ts = _packet_ts(packet)
    if not packet.is_keyframe or ts is None or ts > target:
        return False
    expected = key_positions.get(ts)
    return expected is None or packet.pos is None or packet.pos < 0 or packet.pos == expected


def _tail_matches(
    path: Path,
    stream_index: int,
    pts: np.ndarray,
    key_stamps: set[int],
    key_positions: dict[int, int],
) -> bool:
    """Decode from the last keyframe to the end; True when exactly the listed frames come out."""
    keys = [i for i in range(len(pts)) if int(pts[i]) in key_stamps]
    start = keys[-1] if keys else 0
    first = int(pts[start])
    frames = _decode_frames(
        path, stream_index, seek_pts=first if start > 0 else None, key_positions=key_positions
    )
    seen = [f.pts for f in frames if f.pts is not None and f.pts >= first]
    return seen == [int(p) for p in pts[start:]]


def _decode_all_timestamps(path: Path, stream_index: int) -> tuple[np.ndarray | None, int]:
    """Decode every frame once: (timestamps in output order or None if unusable, count)."""
    stamps = [frame.pts for frame in _decode_frames(path, stream_index)]
    if None in stamps:
        return None, len(stamps)
    pts = np.asarray(stamps, dtype=np.int64)
    if len(pts) > 1 and not bool(np.all(np.diff(pts) > 0)):
        return None, len(stamps)
    return pts, len(stamps)


# -- videos: decoders -----------------------------------------------------------------------------


def _rotate(frame: np.ndarray, quarter_turns: int) -> np.ndarray:
    if quarter_turns == 0:
        return frame
    return np.ascontiguousarray(np.rot90(frame, k=quarter_turns))


class _Decoder:
    """A decoder positioned by frame index. Subclasses feed `_name` with the timestamp match
    of each output frame; this class turns it into a frame index.

    A frame is identified by its timestamp; a frame without a usable timestamp (none, or one
    that contradicts the output order) that follows an identified frame is the next frame,
    since decoders output frames in presentation order. After a seek, frames before the first
    identified one are skipped (they may be broken leading pictures of an open GOP).
    """

    def __init__(self, info: _VideoInfo) -> None:
        self._info = info
        self._last: int | None = None  # index of the last identified frame of this run
        self.next_index: int | None = None  # index of the next frame out, when known

    def _started_from_beginning(self) -> None:
        self._last = -1
        self.next_index = 0

    def _name(self, match: int | None) -> int | None:
        index = match
        last = self._last
        if last is not None and (index is None or index <= last):
            index = last + 1 if last + 1 < self._info.num_frames else None
        if index is not None:
            self._last = index
            self.next_index = index + 1
        return index

    def _stopped(self, reason: str) -> _DecoderStopped:
        self._last = None
        self.next_index = None
        return _DecoderStopped(reason)

    @property
    def can_seek(self) -> bool:
        """False when `seek` always restarts from the beginning."""
        raise NotImplementedError

    def seek(self, index: int) -> None:
        """Position the decoder so that frame ``index`` is the next identified frame out
        (decoding from the keyframe before it, or from the start of the file)."""
        raise NotImplementedError

    def next_frame(self) -> tuple[int | None, Any]:
        """(index or None for a frame to skip, a handle for `to_rgb`) of the next frame out;
        raises `_DecoderStopped` at the end of the stream or on a decoding error."""
        raise NotImplementedError

    def to_rgb(self, handle: Any) -> np.ndarray:
        """uint8 (H, W, 3) RGB of the frame just returned by `next_frame`, rotated upright."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _PyAVDecoder(_Decoder):
    """PyAV decoding; frames are identified by their timestamps."""

    def __init__(self, path: Path, info: _VideoInfo) -> None:
        super().__init__(info)
        self._path = path
        self._container: Any = None
        self._stream: Any = None
        self._packets: Iterator[Any] = iter(())
        self._pending: deque[Any] = deque()
        self._min_pts: int | None = None
        self._restart()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._pending.clear()
        self._last = self.next_index = None

    def _restart(self) -> None:
        self.close()
        self._container = _open_container(self._path)
        self._stream = self._container.streams[self._info.stream_index]
        self._stream.thread_type = "AUTO"
        self._packets = self._container.demux(self._stream)
        self._min_pts = None
        self._started_from_beginning()

    @property
    def can_seek(self) -> bool:
        return self._info.pts is not None

    def seek(self, index: int) -> None:
        info = self._info
        if index == 0 or info.pts is None or self._container is None:
            self._restart()
            return
        target = int(info.pts[index])
        try:
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
            self._stream.codec_context.flush_buffers()
            packets = self._container.demux(self._stream)
            first = next(packets, None)
        except av.error.FFmpegError:
            self._restart()
            return
        if first is None or not _landed_well(first, target, info.key_positions):
            self._restart()  # the seek did not land where a sequential read would be
            return
        self._packets = itertools.chain([first], packets)
        self._pending.clear()
        # Skip what comes before the frame; that includes the keyframe's leading pictures of an
        # open GOP, which reference frames before the keyframe and may come out broken.
        self._min_pts = target
        self._last = None
        self.next_index = index

    def next_frame(self) -> tuple[int | None, Any]:
        """The next decoded frame and its index (None for a frame to skip)."""
        while not self._pending:
            try:
                packet = next(self._packets, None)
                if packet is not None:
                    self._pending.extend(self._stream.decode(packet))
            except av.error.FFmpegError as error:
                raise self._stopped(str(error)) from None
            if packet is None:
                raise self._stopped("end of stream")
        frame = self._pending.popleft()
        if frame.pts is not None and self._min_pts is not None and frame.pts < self._min_pts:
            return None, frame
        return self._name(self._info.index_of(frame.pts)), frame

    def to_rgb(self, frame: Any) -> np.ndarray:
        return _rotate(frame.to_ndarray(format="rgb24"), self._info.rotation)


class _Cv2Decoder(_Decoder):
    """OpenCV decoding; frames are identified by CAP_PROP_POS_MSEC."""

    def __init__(self, path: Path, info: _VideoInfo) -> None:
        super().__init__(info)
        self._path = path
        self._cap: Any = None
        self._held: tuple[int | None] | None = None  # a grabbed frame not handed out yet
        self._times: np.ndarray | None = None  # frame times as CAP_PROP_POS_MSEC reports them
        if info.pts is not None:
            ticks = (info.pts - info.start_time).astype(np.float64)
            self._times = ticks * float(info.time_base) * 1000.0
        self._offset_ms = 0.0
        self._restart()
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        # OpenCV seeks by frame number = time x fps, which is only exact for constant-rate files;
        # and its landing cannot be checked against byte positions, so files whose index had
        # to be rebuilt by decoding (damaged, truncated, variable-rate) are read from the start.
        self._can_seek = False
        if self._times is not None and fps > 0 and info.verified_by != "full-decode":
            slots = np.round(self._times * fps / 1000.0)
            self._can_seek = bool(np.array_equal(slots - slots[0], np.arange(len(slots))))
        # Calibrate the times on the first frame (it is frame 0) and hold it for the first read.
        self._grab_or_stop()
        if self._times is not None:
            self._offset_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC) - float(self._times[0])
        self._held = (self._name(0),)
        self.next_index = 0

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._last = self.next_index = None

    def _restart(self) -> None:
        self.close()
        cap = cv2.VideoCapture(str(self._path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise DecodeError(f"OpenCV cannot open video {str(self._path)!r}")
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # the rotation is applied as in PyAV
        self._cap = cap
        self._held = None
        self._started_from_beginning()

    def _grab_or_stop(self) -> None:
        if not self._cap.grab():
            raise self._stopped("OpenCV could not read another frame")

    def _match(self) -> int | None:
        if self._times is None:
            return None
        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC) - self._offset_ms
        k = int(np.searchsorted(self._times, ms - 1e-3))
        return k if k < len(self._times) and abs(self._times[k] - ms) <= 1e-3 else None

    @property
    def can_seek(self) -> bool:
        return self._can_seek

    def seek(self, index: int) -> None:
        # OpenCV seeks itself: it decodes from a keyframe before ``index`` up to ``index``.
        if index == 0 or not self._can_seek or self._cap is None:
            self._restart()
            return
        # Land on the frame, or just before it when its time is unknown (OpenCV reports 0 ms
        # for frames flushed out at the end of some streams); then decode forward.
        for landing in range(index, max(index - 3, 0), -1):
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, landing)
            if not self._cap.grab():
                break
            if self._match() == landing:
                self._last = None
                self._held = (self._name(landing),)
                self.next_index = landing
                return
        self._restart()  # OpenCV landed elsewhere: decode from the start instead

    def next_frame(self) -> tuple[int | None, None]:
        if self._held is not None:
            (index,), self._held = self._held, None
            return index, None
        self._grab_or_stop()
        return self._name(self._match()), None

    def to_rgb(self, _: None) -> np.ndarray:
        ok, bgr = self._cap.retrieve()
        if not ok:
            raise self._stopped("OpenCV could not convert the frame")
        return _rotate(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self._info.rotation)


class _VideoSource(FrameSource):
    """Frames of a video file, decoded on demand by the chosen loader."""

    def __init__(
        self, path: Path, loader: str, info: _VideoInfo, cache_size: int | None, prefetch: bool
    ) -> None:
        self._info = info
        self._loader = loader
        decoder_class = _PyAVDecoder if loader == "pyav" else _Cv2Decoder
        self._decoder: _Decoder | None = decoder_class(path, info)
        super().__init__(
            path, info.num_frames, info.height, info.width, info.fps, cache_size, prefetch
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
        # Decoding has to start at the keyframe before ``start`` (or at frame 0 for a decoder
        # that cannot seek), unless the running decoder is already between that and ``start``.
        keyframe = self._info.seek_point(start) if decoder.can_seek else 0
        position = decoder.next_index
        fresh = position is None or position > start or keyframe > position
        if fresh:
            decoder.seek(start)
        while True:
            try:
                return self._decode_until(decoder, target, start)
            except _DecoderStopped as stop:
                if fresh:
                    raise DecodeError(
                        f"frame {target} of video {str(self._path)!r} cannot be decoded "
                        f"({self._loader} loader): {stop}"
                    ) from None
                decoder.seek(start)  # retry once from a fresh position
                fresh = True

    def _decode_until(self, decoder: _Decoder, target: int, keep_from: int) -> np.ndarray:
        while True:
            index, handle = decoder.next_frame()
            self._decoded += 1
            if index is None:
                continue
            if index > target:
                raise decoder._stopped(f"the decoder skipped from before frame {target} to {index}")
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
