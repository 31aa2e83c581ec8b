"""The frame index of a video, shared by both loaders: how many frames it has, how a decoded
frame is recognised (its *key*), and at which keyframes decoding may start.

Frame ``i`` is by definition the ``i``-th frame the decoder outputs when the whole file is
decoded from the start. A decoder that started at the beginning therefore needs no index to
name its frames: it counts. The index is what lets a decoder that *seeked* find out where it
landed, so its keys must be exactly what the decoder attaches to each frame:

* ``"pts"``: the frame's presentation timestamp. Trusted when the container stores
  presentation timestamps that the decoder passes through unchanged; the demuxed packets then
  give the index without decoding (one frame per non-empty, non-discarded packet, in timestamp
  order), after the checks in `_distrust`.
* ``"position"``: the byte position of the packet the decoder consumed when it produced the
  frame (the pyav loader sets each packet's pts to its position before decoding). Used when
  the timestamps cannot be trusted: AVI stores no presentation timestamps, so FFmpeg guesses
  them for streams that reorder frames; "packed" MPEG-4 B-frames (DivX/Xvid) carry one frame's
  bitstream in the packet of another and the decoder emits each frame one packet late; files
  with missing, repeated or backward-jumping timestamps. The order is then learned by decoding
  every frame once, at open (the result is cached per file).
* ``None``: neither works (no byte positions either); frames are known only by their rank, and
  reaching a frame means decoding from the start.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from sam3video.errors import DecodeError
from sam3video.io.video_container import decoded_frames, open_container, video_stream

# Most frames a decoder holds back to reorder them (the H.264/HEVC picture buffer): a packet
# whose timestamp is below that of a packet further back than this cannot be a B-frame.
REORDER_WINDOW = 16
# Frames decoded at open to check that the decoder outputs the timestamps the index lists.
HEAD_FRAMES = 16
# DivX 5 / Xvid user data announcing "packed" B-frames (the trailing 'p'); FFmpeg's MPEG-4
# decoder switches to its packed mode on the same string.
_PACKED_MARKER = re.compile(rb"DivX\d+(?:Build|b)\d+p")


@dataclass(frozen=True)
class VideoIndex:
    """The verified frame index of a video stream (see the module docstring)."""

    stream_index: int
    num_frames: int
    height: int  # after the display rotation
    width: int
    fps: float | None
    rotation: int  # quarter turns counter-clockwise to apply to decoded frames (0..3)
    time_base: Fraction
    start_time: int
    key_kind: str | None  # "pts", "position" or None
    keys: np.ndarray | None  # (num_frames,) int64, unique: the key of each frame
    seek_frames: np.ndarray  # sorted frame indices of the keyframes; always starts with 0
    # (n, 2): timestamps to try seeking to for each keyframe, its packet's pts then dts (some
    # containers index keyframes by one, some by the other); the row of frame 0 is unused.
    seek_ts: np.ndarray
    seek_pos: np.ndarray  # byte position of each keyframe packet, -1 where unknown
    verified_by: str  # "container", "tail-decode" or "full-decode": how the count was checked
    reason: str = ""  # why the index had to be built by decoding, if it was
    _sorted: tuple[np.ndarray, np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _landings: dict[tuple[str, int], int] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.keys is not None:
            order = np.argsort(self.keys, kind="stable")
            object.__setattr__(self, "_sorted", (self.keys[order], order))
        for j in range(1, len(self.seek_frames)):
            frame = int(self.seek_frames[j])
            if self.seek_pos[j] >= 0:
                self._landings["pos", int(self.seek_pos[j])] = frame
            else:
                self._landings["ts", int(self.seek_ts[j, 0])] = frame

    @property
    def pts(self) -> np.ndarray | None:
        """Presentation timestamps of the frames (strictly increasing), when keyed by pts."""
        return self.keys if self.key_kind == "pts" else None

    def index_of(self, key: int | None) -> int | None:
        """The frame whose key is ``key``, or None."""
        if key is None or self._sorted is None:
            return None
        keys, order = self._sorted
        k = int(np.searchsorted(keys, key))
        return int(order[k]) if k < len(keys) and int(keys[k]) == key else None

    def seek_point(self, index: int) -> int:
        """The last keyframe (a frame index) at or before frame ``index``."""
        k = int(np.searchsorted(self.seek_frames, index, side="right")) - 1
        return int(self.seek_frames[max(k, 0)])

    def seek_target(self, index: int) -> tuple[list[int], int] | None:
        """(timestamps to try seeking to, keyframe index) for decoding frame ``index``; None
        when decoding must start from the beginning."""
        k = int(np.searchsorted(self.seek_frames, index, side="right")) - 1
        if k <= 0:
            return None
        stamps = list(dict.fromkeys(int(t) for t in self.seek_ts[k]))
        return stamps, int(self.seek_frames[k])

    def landing(self, packet: Any) -> int | None:
        """The keyframe (a frame index) that ``packet``, the first after a seek, starts; None
        when it is not a keyframe a sequential read finds (a damaged or inexact index)."""
        if not packet.is_keyframe:
            return None
        if packet.pos is not None and packet.pos >= 0:
            return self._landings.get(("pos", int(packet.pos)))
        stamp = packet.pts if packet.pts is not None else packet.dts
        return None if stamp is None else self._landings.get(("ts", stamp))


# -- probing (cached per file) --------------------------------------------------------------------

_CACHE: OrderedDict[tuple[str, int, int], VideoIndex] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 32


def probe_video(path: Path) -> VideoIndex:
    """Build (or fetch from the per-file cache) the verified frame index of a video."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    index = _build_index(path)
    with _CACHE_LOCK:
        _CACHE[key] = index
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return index


@dataclass
class _Packets:
    """What demuxing the stream once (no decoding) tells, one entry per non-empty packet."""

    pts: list[int | None] = field(default_factory=list)
    dts: list[int | None] = field(default_factory=list)
    pos: list[int] = field(default_factory=list)  # -1 where unknown
    keyframes: list[int] = field(default_factory=list)  # entries that are keyframes
    failed: bool = False  # the demuxer gave up before the end (a damaged container)
    packed: bool = False  # MPEG-4 with packed B-frames

    @property
    def stamps(self) -> list[int | None]:
        return [p if p is not None else d for p, d in zip(self.pts, self.dts)]


def _build_index(path: Path) -> VideoIndex:
    container = open_container(path)
    try:
        stream = video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate
        about = {
            "stream_index": stream.index,
            "time_base": Fraction(stream.time_base or Fraction(1, 1)),
            "start_time": int(stream.start_time or 0),
            "fps": float(rate) if rate else None,
        }
        declared = int(stream.frames or 0)  # 0: the container gives no count
        stores_pts = container.format.name != "avi"
        packets = _demux(container, stream)
    finally:
        container.close()
    stream_index = about["stream_index"]

    head = _first(decoded_frames(path, stream_index), HEAD_FRAMES)
    if not head:
        raise DecodeError(f"video {str(path)!r}: its first frame cannot be decoded")
    rotation = round((head[0].rotation or 0) / 90) % 4
    size = (head[0].height, head[0].width)
    height, width = size if rotation % 2 == 0 else size[::-1]

    # The packets list the frames, unless a check below says otherwise.
    verified_by, key_kind, keys = "container", "pts", None
    reason = _distrust(packets, stores_pts, [frame.pts for frame in head])
    if reason is None:
        keys = np.sort(np.asarray(packets.stamps, dtype=np.int64))
        if declared not in (0, len(keys)):
            reason = f"the container declares {declared} frames but holds {len(keys)}"
        elif declared == 0:  # no count to compare with (mkv, webm): decode the last GOP
            verified_by = "tail-decode"
            if not _tail_matches(path, stream_index, keys, packets):
                reason = "the last group of pictures decodes to other frames than its packets"
    num_frames = len(keys) if keys is not None else 0
    if reason is not None:
        verified_by = "full-decode"
        num_frames, keys, key_kind = _decode_keys(path, stream_index, packets)
    if num_frames == 0:
        raise DecodeError(f"video {str(path)!r} holds no decodable frame")
    seek_frames, seek_ts, seek_pos = _seek_points(packets, keys, key_kind)
    return VideoIndex(
        **about,
        num_frames=num_frames,
        height=height,
        width=width,
        rotation=rotation,
        key_kind=key_kind if keys is not None else None,
        keys=keys,
        seek_frames=seek_frames,
        seek_ts=seek_ts,
        seek_pos=seek_pos,
        verified_by=verified_by,
        reason=reason or "",
    )


def _demux(container: Any, stream: Any) -> _Packets:
    """One entry per non-empty, non-discarded packet, in decoding order."""
    packets = _Packets()
    is_mpeg4 = stream.codec_context.name == "mpeg4"
    if is_mpeg4 and _PACKED_MARKER.search(bytes(stream.codec_context.extradata or b"")):
        packets.packed = True
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue
            if packet.is_keyframe:
                packets.keyframes.append(len(packets.pts))
                if is_mpeg4 and not packets.packed and len(packets.keyframes) == 1:
                    packets.packed = _PACKED_MARKER.search(bytes(packet)) is not None
            packets.pts.append(packet.pts)
            packets.dts.append(packet.dts)
            packets.pos.append(packet.pos if packet.pos is not None else -1)
    except av.error.FFmpegError:
        packets.failed = True  # a damaged container: decoding decides
    return packets


def _distrust(packets: _Packets, stores_pts: bool, head_pts: list[int | None]) -> str | None:
    """Why the demuxed timestamps cannot be the index, or None when they can."""
    stamps = packets.stamps
    if packets.failed:
        return "the container is damaged"
    if not stamps:
        return "no packets"
    if None in stamps:
        return "some packets have no timestamp"
    if len(set(stamps)) != len(stamps):
        return "some packets share a timestamp"
    if packets.packed:
        return "MPEG-4 with packed B-frames: each frame is decoded from another frame's packet"
    if not stores_pts and any(p != d for p, d in zip(packets.pts, packets.dts)):
        return "AVI stores no presentation timestamps and this stream reorders its frames"
    values = np.asarray(stamps, dtype=np.int64)
    if len(values) > REORDER_WINDOW:
        reach = np.maximum.accumulate(values)[:-REORDER_WINDOW]
        if bool(np.any(values[REORDER_WINDOW:] <= reach)):
            return "the timestamps go back further than a decoder reorders frames"
    expected = np.sort(values)[: len(head_pts)].tolist()
    if head_pts != expected:
        return "the decoder outputs other timestamps than the packets list"
    return None


def _seek_points(
    packets: _Packets, keys: np.ndarray | None, key_kind: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame indices, (n, 2) seek timestamps, byte positions) of the keyframes whose frame
    is known.

    A keyframe's frame is the one its packet's key names: its timestamp, or its position.
    """
    frames, stamps, positions = [0], [(0, 0)], [-1]
    if keys is not None:
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        packet_keys = packets.stamps if key_kind == "pts" else packets.pos
        for k in packets.keyframes:
            key = packet_keys[k]
            pts, dts = packets.pts[k], packets.dts[k]
            stamp = (pts if pts is not None else dts, dts if dts is not None else pts)
            if key is None or stamp[0] is None or (key_kind == "position" and key < 0):
                continue
            j = int(np.searchsorted(sorted_keys, key))
            if j < len(sorted_keys) and int(sorted_keys[j]) == key and int(order[j]) > 0:
                frames.append(int(order[j]))
                stamps.append(stamp)
                positions.append(packets.pos[k])
    # Sorted by frame, keeping one entry per frame.
    unique = sorted({f: (f, *s, p) for f, s, p in zip(frames, stamps, positions)}.values())
    table = np.asarray(unique, dtype=np.int64).reshape(-1, 4)
    return table[:, 0], table[:, 1:3], table[:, 3]


def _tail_matches(path: Path, stream_index: int, keys: np.ndarray, packets: _Packets) -> bool:
    """Decode from the last keyframe to the end; True when exactly the listed frames come out."""
    frames, stamps, positions = _seek_points(packets, keys, "pts")
    start = int(frames[-1])
    if start == 0:
        seen = [f.pts for f in decoded_frames(path, stream_index)]
    else:
        expected_pos = int(positions[-1])

        def lands(packet: Any) -> bool:
            return bool(packet.is_keyframe) and (expected_pos < 0 or packet.pos == expected_pos)

        first = int(keys[start])
        frames_out = decoded_frames(path, stream_index, seek_ts=int(stamps[-1, 0]), lands=lands)
        seen = [f.pts for f in frames_out if f.pts is not None and f.pts >= first]
    return seen == [int(k) for k in keys[start:]]


def _decode_keys(
    path: Path, stream_index: int, packets: _Packets
) -> tuple[int, np.ndarray | None, str]:
    """Decode every frame once: (frame count, the key of each frame in output order, kind).

    Keys are packet positions when every packet has a distinct one and every frame comes out
    with a distinct one; else timestamps when they strictly increase; else None.
    """
    positions = [p for p in packets.pos if p >= 0]
    by_position = len(positions) == len(packets.pos) and len(set(positions)) == len(positions)
    found = [f.pts for f in decoded_frames(path, stream_index, tokens=by_position)]
    values = np.asarray([-1 if k is None else k for k in found], dtype=np.int64)
    if None in found:
        return len(found), None, ""
    if by_position and len(set(found)) == len(found):
        return len(found), values, "position"
    if not by_position and (len(values) < 2 or bool(np.all(np.diff(values) > 0))):
        return len(found), values, "pts"
    return len(found), None, ""


def _first(frames: Any, n: int) -> list[Any]:
    """The first ``n`` items of a generator, closing it (and its container) afterwards."""
    out = []
    try:
        for frame in frames:
            out.append(frame)
            if len(out) == n:
                break
    finally:
        frames.close()
    return out


