"""Opening a video file with PyAV, with errors that say what is wrong with the file, and the
plain decode loops the frame index is built from."""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av

from sam3video.errors import DecodeError, UnsupportedSourceError

_ISO_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pdin", b"uuid", b"meta",
              b"moof", b"mfra", b"styp", b"sidx", b"prft"}


def open_container(path: Path) -> Any:
    """``av.open(path)``; raises `DecodeError` saying whether the file is empty, is not a video
    (or is damaged), or is an MP4 cut short before its index."""
    try:
        if path.stat().st_size == 0:
            raise DecodeError(f"video {str(path)!r} is empty (0 bytes)")
    except OSError as error:
        raise DecodeError(f"cannot read video {str(path)!r}: {error.strerror}") from error
    try:
        return av.open(str(path), mode="r")
    except av.error.InvalidDataError:
        problem = _mp4_index_problem(path)
        if problem is not None:
            raise DecodeError(f"video {str(path)!r} {problem}") from None
        raise DecodeError(
            f"{str(path)!r} is not a video file, or damaged (FFmpeg found no stream it can read)"
        ) from None
    except (av.error.FFmpegError, OSError) as error:
        raise DecodeError(f"cannot open video {str(path)!r}: {describe_av_error(error)}") from None


def video_stream(container: Any, path: Path) -> Any:
    """The first video stream; `UnsupportedSourceError` when there is none."""
    streams = container.streams.video
    if not streams:
        problem = _mp4_index_problem(path)  # a cut index may describe no stream at all
        if problem is not None:
            raise DecodeError(f"video {str(path)!r} {problem}")
        raise UnsupportedSourceError(f"{str(path)!r} holds no video stream")
    return streams[0]


def describe_av_error(error: BaseException) -> str:
    """An FFmpeg error as words, without the raw ``[Errno 1094995529]`` prefix."""
    text = getattr(error, "strerror", None) or str(error)
    return re.sub(r"^\[Errno -?\d+\]\s*", "", text)


def packet_ts(packet: Any) -> int | None:
    """The packet's presentation timestamp, or its decoding timestamp when it has none."""
    return packet.pts if packet.pts is not None else packet.dts


def decoded_frames(
    path: Path,
    stream_index: int,
    *,
    seek_ts: int | None = None,
    lands: Callable[[Any], bool] | None = None,
    tokens: bool = False,
) -> Iterator[Any]:
    """Decoded frames from the start (or from the keyframe reached by seeking to ``seek_ts``)
    until the end of the stream or the first packet the decoder rejects. A seek whose first
    packet fails ``lands`` yields nothing.

    With ``tokens``, each packet's pts is replaced by its byte position before decoding, so
    each frame's ``pts`` names the packet the decoder consumed when it produced the frame.
    """
    container = open_container(path)
    try:
        stream = container.streams[stream_index]
        stream.thread_type = "AUTO"
        if seek_ts is not None:
            container.seek(seek_ts, stream=stream, backward=True, any_frame=False)
        packets = container.demux(stream)
        if seek_ts is not None:
            first = next(packets, None)
            if first is None or lands is None or not lands(first):
                return
            packets = itertools.chain([first], packets)
        for packet in packets:
            if tokens:
                packet.pts = packet.pos
            try:
                frames = stream.decode(packet)
            except av.error.FFmpegError:
                return
            yield from frames
    except av.error.FFmpegError:
        return
    finally:
        container.close()


def _mp4_index_problem(path: Path) -> str | None:
    """Why an MP4/MOV file cannot be opened, when its index (the 'moov' box) is missing or
    cut short; None for other files."""
    boxes: list[bytes] = []
    cut: bytes | None = None
    with open(path, "rb") as file:
        size_left = path.stat().st_size
        offset = 0
        while offset + 8 <= size_left:
            file.seek(offset)
            header = file.read(16)
            size, kind = struct.unpack(">I4s", header[:8])
            if size == 1 and len(header) == 16:
                size = struct.unpack(">Q", header[8:16])[0]
            elif size == 0:
                size = size_left - offset
            if kind not in _ISO_BOXES or size < 8:
                break
            boxes.append(kind)
            if offset + size > size_left:
                cut = kind
                break
            offset += size
    if not boxes or boxes[0] not in (b"ftyp", b"styp", b"moov", b"mdat", b"free", b"wide"):
        return None
    if b"moov" not in boxes and b"moof" not in boxes:
        return (
            "is an MP4 cut short: its index (the 'moov' box, which this file keeps at its end) "
            "is missing, and without it the frames cannot be located or decoded. Only a file "
            "written with its index first (ffmpeg -movflags +faststart) stays readable when cut"
        )
    if cut == b"moov":
        return "is an MP4 whose index (the 'moov' box) is cut short; its frames cannot be located"
    return None
