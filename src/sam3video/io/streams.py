"""Camera and network streams, decoded on a background thread for a live session.

`is_stream` tells a stream ``resource_path`` from a file path; `StreamReader` opens one,
decodes it on a daemon thread into a bounded queue, and hands out RGB frames with `read`.

Sources
  * ``webcam:N``: camera N through OpenCV (``cv2.VideoCapture(N)``).
  * ``rtsp://``, ``rtsps://``, ``http://``, ``https://``, ``udp://``, ``tcp://``: through
    PyAV (FFmpeg). Every URL is read sequentially, as a stream, also an ``http(s)://`` URL
    of a plain video file: no seeking and no frame count.

When the consumer is slower than the source (decided per kind; ``drop_oldest`` overrides it)
  * Real-time sources (a camera, ``rtsp``, ``rtsps``, ``udp``, ``tcp``) drop the oldest
    queued frame: what is tracked stays close to now, and the source is never stalled (a
    stalled network source loses packets anyway, and a camera's driver would serve stale
    frames).
  * ``http(s)://`` is read like a file: the decoder waits for the consumer (TCP holds the
    rest back) and no frame is ever dropped.

Opening and errors
  * The constructor returns once the first frame is decoded (so the size is known, and a
    source that connects but sends nothing fails now), or raises within about
    ``open_timeout`` seconds: `SourceNotFoundError` (no such camera, HTTP 4xx, connection
    refused, no answer in time), `UnsupportedSourceError` (a protocol FFmpeg lacks, no video
    stream, a malformed ``webcam:`` name), `DecodeError` (the first frame cannot be
    decoded). Messages are one line and never show the password of a URL.
  * A failure after the first frame (the network dropped, a corrupt packet) is raised by
    `read` as a `DecodeError`, after every frame decoded before it.
  * Frames keep the first frame's size: a source that changes resolution mid-stream (adaptive
    HTTP streaming) is resized back to it.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
from collections.abc import Iterator
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import av
import cv2
import numpy as np

from sam3video.errors import (
    DecodeError,
    Sam3VideoError,
    SourceNotFoundError,
    UnsupportedSourceError,
)
from sam3video.io.video_container import describe_av_error

__all__ = ["STREAM_SCHEMES", "StreamReader", "is_stream", "stream_name"]

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https", "udp", "tcp")
REAL_TIME_SCHEMES = ("rtsp", "rtsps", "udp", "tcp")
WEBCAM_PREFIX = "webcam:"

_END = object()  # queued after the last frame


def is_stream(resource_path: object) -> bool:
    """True for ``webcam:...`` and for URLs of the schemes in `STREAM_SCHEMES`."""
    if not isinstance(resource_path, str):
        return False
    return resource_path.startswith(WEBCAM_PREFIX) or _scheme(resource_path) in STREAM_SCHEMES


def stream_name(resource_path: str) -> str:
    """A short name for outputs: ``webcam0``, or the URL's file stem (``clip`` for
    ``http://host/clip.mp4``), else its host."""
    if resource_path.startswith(WEBCAM_PREFIX):
        name = "webcam" + resource_path[len(WEBCAM_PREFIX) :]
    else:
        parts = urlsplit(resource_path)
        name = PurePosixPath(parts.path).stem or parts.hostname or "stream"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "stream"


def _scheme(path: str) -> str:
    head, sep, _ = path.partition("://")
    return head.lower() if sep else ""


def _shown(resource_path: str) -> str:
    """The path for messages: cut to 100 characters, a URL's user and password left out."""
    parts = urlsplit(resource_path) if "://" in resource_path else None
    if parts is not None and "@" in parts.netloc:
        resource_path = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return resource_path[:100]


class StreamReader:
    """Frames of a camera or network stream, decoded on a daemon thread (see the module doc).

    Args:
        resource_path: ``webcam:N`` or a URL (`is_stream`).
        open_timeout: seconds to connect and decode the first frame.
        read_timeout: seconds a network source may stay silent mid-stream before it fails.
        drop_oldest: when the queue is full, drop its oldest frame (``True``) or wait for the
            consumer (``False``); default: by source kind.
        queue_size: frames decoded ahead (default 2 when dropping, else 16).

    ``fps`` (``None`` when the source does not say), ``height`` and ``width`` are known once
    the constructor returns. `read` gives the next frame; `close` stops the thread.
    """

    def __init__(
        self,
        resource_path: str,
        *,
        open_timeout: float = 5.0,
        read_timeout: float = 10.0,
        drop_oldest: bool | None = None,
        queue_size: int | None = None,
    ) -> None:
        self.resource_path = resource_path
        self.shown = _shown(resource_path)
        real_time = resource_path.startswith(WEBCAM_PREFIX) or (
            _scheme(resource_path) in REAL_TIME_SCHEMES
        )
        self.drop_oldest = real_time if drop_oldest is None else drop_oldest
        self.dropped = 0  # frames dropped because the consumer was slower
        self.fps: float | None = None
        self.height = self.width = 0
        self._queue: queue.Queue = queue.Queue(queue_size or (2 if self.drop_oldest else 16))
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._open_error: Sam3VideoError | None = None
        self._failure: Sam3VideoError | None = None  # raised by every read after the end
        self._ended = False
        self._source = _open_source(
            resource_path, self.shown, open_timeout, read_timeout, frame_threads=not real_time
        )
        self._thread = threading.Thread(target=self._run, name="sam3video-stream", daemon=True)
        self._thread.start()
        # The thread connects and decodes the first frame; FFmpeg enforces the timeout, and
        # this wait bounds a backend that would not.
        if not self._opened.wait(open_timeout + 1.0):
            self.close()
            raise SourceNotFoundError(
                f"resource_path: {self.shown!r} sent no frame within {open_timeout:g} s"
            )
        if self._open_error is not None:
            self.close()
            raise self._open_error

    # ------------------------------------------------------------------ consumer side

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        """The next RGB frame, ``uint8 (H, W, 3)``; ``None`` at the end of the stream (and
        after `close`). Raises `TimeoutError` when no frame came within ``timeout`` seconds,
        and `DecodeError` when the source failed (again on every later read)."""
        if self._failure is not None:
            raise self._failure
        if self._ended or self._stop.is_set():
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.shown!r}: no frame within {timeout:g} s") from None
        if item is _END:
            self._ended = True
            return None
        if isinstance(item, Sam3VideoError):
            self._failure = item
            raise item
        return item

    def close(self) -> None:
        """Stop the thread; the source is released by it. Idempotent, safe from any thread."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # unblock a thread waiting for room
                self._queue.get_nowait()
        self._thread.join(timeout=1.0)

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ decoding thread

    def _run(self) -> None:
        try:
            frames = self._source.frames()
            first = next(frames, None)
            if first is None:
                raise DecodeError(f"resource_path: {self.shown!r} ended before its first frame")
            self.height, self.width = first.shape[:2]
            self.fps = self._source.fps
        except Exception as error:
            self._open_error = self._source.error(error, opening=True)
            self._source.close()
            self._opened.set()
            return
        self._opened.set()
        try:
            self._put(first)
            for frame in frames:
                if self._stop.is_set():
                    return
                self._put(self._fit(frame))
            self._put(_END)
        except Exception as error:
            self._put(self._source.error(error, opening=False))
        finally:
            self._source.close()

    def _put(self, item: object) -> None:
        """Queue an item by the drop policy; gives up when the reader is closed."""
        while not self._stop.is_set():
            if self.drop_oldest and item is not _END:  # the end waits: no frame lost for it
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()
                        self.dropped += 1
                    continue
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape[:2] == (self.height, self.width):
            return frame
        return cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------- sources


def _open_source(
    resource_path: str,
    shown: str,
    open_timeout: float,
    read_timeout: float,
    frame_threads: bool,
) -> _Camera | _Url:
    """The source object of a path (nothing is opened yet: the thread does that)."""
    if resource_path.startswith(WEBCAM_PREFIX):
        index = resource_path[len(WEBCAM_PREFIX) :]
        if not index.isdigit():
            raise UnsupportedSourceError(
                f"resource_path: expected webcam:N with N a camera index (0, 1, ...), got "
                f"{shown!r}"
            )
        return _Camera(int(index), shown)
    if _scheme(resource_path) not in STREAM_SCHEMES:
        raise UnsupportedSourceError(
            f"resource_path: expected webcam:N or a {', '.join(STREAM_SCHEMES)} URL, got "
            f"{shown!r}"
        )
    return _Url(resource_path, shown, (open_timeout, read_timeout), frame_threads)


class _Camera:
    """A camera through OpenCV; frames converted from BGR to RGB. Used on one thread."""

    def __init__(self, index: int, shown: str) -> None:
        self.index, self.shown = index, shown
        self.fps: float | None = None
        self._capture: cv2.VideoCapture | None = None

    def frames(self) -> Iterator[np.ndarray]:
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # no backend chatter
        try:
            self._capture = cv2.VideoCapture(self.index)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not self._capture.isOpened():
            raise SourceNotFoundError(
                f"resource_path: no camera {self.shown!r} could be opened (OpenCV found no "
                f"device {self.index}, or it is busy or not permitted)"
            )
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None
        while True:
            ok, frame = self._capture.read()
            if not ok:  # unplugged, or the end of a file-backed capture
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def error(self, error: Exception, opening: bool) -> Sam3VideoError:
        if isinstance(error, Sam3VideoError):
            return error
        return DecodeError(f"resource_path: camera {self.shown!r} failed: {error}")

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()


class _Url:
    """A network stream through PyAV (FFmpeg), read sequentially. Used on one thread.

    ``frame_threads``: decode several frames at once (faster, but each frame comes out a few
    frames late: right for a file served over HTTP, not for a real-time source)."""

    def __init__(
        self, url: str, shown: str, timeouts: tuple[float, float], frame_threads: bool
    ) -> None:
        self.url, self.shown = url, shown
        self.timeouts = timeouts
        self.frame_threads = frame_threads
        self.fps: float | None = None
        self._container = None

    def frames(self) -> Iterator[np.ndarray]:
        self._container = container = av.open(self.url, timeout=self.timeouts)
        if not container.streams.video:
            raise UnsupportedSourceError(f"resource_path: {self.shown!r} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO" if self.frame_threads else "SLICE"
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")

    def error(self, error: Exception, opening: bool) -> Sam3VideoError:
        """An FFmpeg failure as a typed one-line error."""
        if isinstance(error, Sam3VideoError):
            return error
        what = describe_av_error(error)
        where = f"resource_path: {self.shown!r}"
        if isinstance(error, av.error.ExitError):  # FFmpeg's timeout
            limit = self.timeouts[0 if opening else 1]
            text = f"{where} did not answer within {limit:g} s"
            return SourceNotFoundError(text) if opening else DecodeError(text)
        if not opening:
            return DecodeError(f"{where} failed mid-stream: {what}")
        if isinstance(error, av.error.ProtocolNotFoundError):
            return UnsupportedSourceError(f"{where}: this FFmpeg cannot read the protocol")
        if isinstance(error, (av.error.HTTPClientError, ConnectionError, FileNotFoundError)):
            return SourceNotFoundError(f"{where} cannot be opened: {what}")
        if isinstance(error, av.error.InvalidDataError):
            return UnsupportedSourceError(f"{where} is not a video stream FFmpeg reads: {what}")
        if isinstance(error, av.error.FFmpegError | OSError):
            return SourceNotFoundError(f"{where} cannot be opened: {what}")
        return DecodeError(f"{where}: the first frame cannot be decoded: {what}")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
