"""Frame sources: lazy, random-access RGB frames from a video file, a frame folder or one image.

``open_frames(path, loader="cv2", *, cache_size=None, prefetch=False)`` returns a `FrameSource`
with ``len(source)``, ``source.height``, ``source.width``, ``source.fps`` (``None`` where
unknown), ``source.path``, ``source[i]`` -> ``np.ndarray`` uint8 ``(H, W, 3)`` **RGB** at the
original resolution, iteration, ``close()`` and the context-manager protocol.

Where the parts live
--------------------
``frames`` (this module: the public entry point and the decisions), ``frame_source`` (the
shared random-access reader: index checks, cache, backward window, prefetch), ``frame_cache``
(the LRU cache and the prefetch thread), ``image_folder`` (frame folders and images),
``video_index`` (what a video's frames are, and how a decoded frame is recognised),
``video_container`` (opening files, error messages), ``decoder`` (how a decoder names its
frames), ``pyav_decoder`` and ``cv2_decoder`` (the two loaders), ``video_source`` (reading).

Decisions
---------
Sources
  * A video is recognised by its extension: ``.mp4 .mov .avi .mkv .webm`` (any case).
  * An image file (``.jpg .jpeg .png .bmp .tif .tiff .webp``) is a one-frame source.
  * A folder holds frames as image files with those extensions; hidden files, other files and
    sub-folders are ignored; frames are ordered by the last number in the file name
    (`image_folder.list_frame_files`).
  * Images are decoded by PIL with ``convert("RGB")`` whatever the loader, as SAM 3 does: EXIF
    orientation is not applied and alpha is dropped. All frames of a folder must have one size:
    opening reads every file's header and raises `UnsupportedSourceError` naming the first odd
    file and both sizes. A file that cannot be decoded raises `DecodeError` naming the frame and
    the file when that frame is read; the other frames stay readable.

Videos
  * ``loader`` picks the decoder that produces the pixels: ``"cv2"`` (OpenCV's FFmpeg backend,
    BGR converted to RGB) or ``"pyav"`` (PyAV, ``rgb24``). Both loaders share one frame index,
    built with PyAV, so they agree on the count and on which frame an index means.
  * Frame ``i`` is the ``i``-th frame the decoder outputs when the whole file is decoded from
    the start, which is what SAM 3's own cv2 loader sees: whatever the timestamps say
    (missing, repeated, going backward, guessed by FFmpeg for AVI), however the container
    packs the frames (DivX/Xvid "packed" B-frames), and whatever frame count the container
    declares. Variable-frame-rate files keep their coded frames (empty "repeat the last frame"
    slots of an AVI are not invented). ``fps`` is the container's nominal rate.
  * The display rotation of the stream (phone videos) is applied, in both loaders, so frames
    come upright; ``height``/``width`` are those of the rotated frames. The storage size is
    returned for anamorphic (non-square-pixel) videos, as OpenCV does.
  * The frame count is exact. Opening a video demuxes it once (no decoding) and decodes its
    first frames; when the demuxed packets can be trusted to list the frames and the container's
    count agrees, that is the index; else every frame is decoded once (`video_index` says when,
    and how frames are then recognised). The index is cached per file (path, size, mtime).
  * Decoding stops at the first packet the decoder rejects, as OpenCV does: a truncated file
    yields the frames that decode before the damage, and ``len`` counts exactly those. An MP4
    cut short whose index (the 'moov' box) was to be written at its end has no readable frame:
    opening it raises `DecodeError` saying so.
  * A video that cannot be opened raises `DecodeError` telling an empty file from one that is
    not a video or is damaged; no video stream: `UnsupportedSourceError`. A frame listed in the
    index that the decoder then fails to produce (damage inside the file) raises `DecodeError`
    naming the frame and the path when it is read; other frames stay readable. Inside a
    damaged group of pictures the decoder conceals errors from what it decoded before, so such
    frames may differ between a seek and a read from the start.

Access, caching and memory
  * Nothing but the probe above is decoded until a frame is asked for. Decoded frames go to a
    bounded LRU cache of ``cache_size`` frames (default: as many as fit in 256 MiB, between
    4 and 64), so memory is bounded whatever the length of the video.
  * Reading forward continues the running decoder (one decode per frame). A jump seeks to the
    nearest keyframe at or before the frame and decodes forward from there; the seek must land
    on a keyframe packet a sequential read finds (same byte position), and the frames coming
    out must carry the keys the index lists, else the frame is decoded from the beginning.
    OpenCV's own seek (by frame number = time x fps) is used only for constant-rate files whose
    index needed no full decode; otherwise the cv2 loader restarts from the beginning when it
    must go back (slower, still exact; prefer "pyav" for such files read out of order).
    Reading backward (a step back of less than a window) decodes the part of the group of
    pictures that ends at the frame once and caches a window of up to ``cache_size // 2``
    frames (``cache_size // 3`` with prefetch), so stepping back through a video costs about
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

import errno
import os
from pathlib import Path

from sam3video.errors import InvalidInputError, SourceNotFoundError, UnsupportedSourceError
from sam3video.io.frame_source import CacheInfo, FrameSource
from sam3video.io.image_folder import IMAGE_EXTENSIONS, ImageSource, list_frame_files
from sam3video.io.video_index import probe_video
from sam3video.io.video_source import VideoSource

__all__ = [
    "CacheInfo",
    "FrameSource",
    "IMAGE_EXTENSIONS",
    "LOADERS",
    "VIDEO_EXTENSIONS",
    "open_frames",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
LOADERS = ("cv2", "pyav")

_probe_video = probe_video  # the name the tests (and older callers) use


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
        InvalidInputError: a bad argument (unknown loader, non-positive cache size, a path
            whose file name is longer than the file system allows, ...).
        SourceNotFoundError: ``path`` does not exist.
        UnsupportedSourceError: an unsupported extension, a folder without images or with
            frames of different sizes, a file without a video stream, a path that cannot be
            accessed.
        DecodeError: a video or image that cannot be read (empty, not a video, damaged, an MP4
            cut short before its index).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInputError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    if not isinstance(loader, str) or loader not in LOADERS:
        raise InvalidInputError(f"loader: expected one of {LOADERS}, got {repr(loader)[:100]}")
    if cache_size is not None and (
        isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1
    ):
        raise InvalidInputError(
            f"cache_size: expected None or an int >= 1, got {repr(cache_size)[:100]}"
        )
    if not isinstance(prefetch, bool):
        raise InvalidInputError(f"prefetch: expected a bool, got {repr(prefetch)[:100]}")

    source_path = Path(os.fspath(path)).expanduser()
    kind = _kind_of(source_path)
    if kind == "dir":
        files = list_frame_files(source_path)
        if not files:
            raise UnsupportedSourceError(
                f"folder {str(source_path)!r} holds no image frames "
                f"(expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
            )
        return ImageSource(source_path, files, cache_size, prefetch)
    suffix = source_path.suffix.lower()
    if kind != "file" or suffix not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        given = repr(suffix or "no extension") if kind == "file" else "a special file"
        raise UnsupportedSourceError(
            f"{str(source_path)!r} is not a supported source: expected a video "
            f"({', '.join(VIDEO_EXTENSIONS)}), an image ({', '.join(IMAGE_EXTENSIONS)}) "
            f"or a folder of images, got {given}"
        )
    if suffix in IMAGE_EXTENSIONS:
        return ImageSource(source_path, [source_path], cache_size, prefetch)
    return VideoSource(source_path, loader, probe_video(source_path), cache_size, prefetch)


def _kind_of(path: Path) -> str:
    """Whether ``path`` is a folder ("dir"), a file ("file") or something else ("other");
    typed errors for a path that does not exist or cannot be looked at."""
    try:
        if path.is_dir():
            return "dir"
        if path.is_file():
            return "file"
        path.stat()  # raises when the path does not exist
        return "other"
    except FileNotFoundError:
        raise SourceNotFoundError(f"frame source {_shown(path)!r} does not exist") from None
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            longest = max(path.parts, key=len)
            raise InvalidInputError(
                f"path: a file name in {_shown(path)!r} is {len(longest)} characters long, "
                "more than the file system allows"
            ) from None
        if error.errno == errno.ENOTDIR:
            raise SourceNotFoundError(
                f"frame source {_shown(path)!r} does not exist (a parent is a file)"
            ) from None
        raise UnsupportedSourceError(
            f"cannot access {_shown(path)!r}: {error.strerror or error}"
        ) from None


def _shown(path: Path) -> str:
    """The path for a message, cut to about 100 characters."""
    text = str(path)
    return text if len(text) <= 100 else f"{text[:48]}...{text[-48:]}"
