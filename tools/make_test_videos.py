"""Make the small videos under ``tests/fixtures/media/``: one per way a video file can mislead a
frame loader about which frame is which.

    python tools/make_test_videos.py            # (re)write tests/fixtures/media/*
    python tools/make_test_videos.py --out DIR  # write them elsewhere

Every frame shows its own index as a block code (``tests/_media.py``: `coded_frame`,
`read_code`), so a test can tell which frame a loader returned. The tests do not rely on the
exact bytes written here: they compare each loader against a plain sequential decode of the
committed file. The script needs only PyAV (no ffmpeg binary); frames are 64x48.
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _media import coded_frame  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "media"
HEIGHT, WIDTH = 48, 64

_VOP = b"\x00\x00\x01\xb6"  # MPEG-4 Part 2 start code of a picture (VOP)
_USER_DATA = b"\x00\x00\x01\xb2"
_PACKED_ID = b"DivX503b1393p"  # what Xvid writes when it packs B-frames ('p' = packed)


def encode(
    path: Path,
    codec: str,
    stamps: list[int],
    time_base: Fraction,
    *,
    gop: int = 12,
    b_frames: int = 2,
    rotation: int | None = None,
    restamp: Callable[[int, Any], None] | None = None,
) -> Path:
    """Encode ``coded_frame(k)`` at presentation time ``stamps[k]`` into ``path`` (the
    container follows the extension); ``restamp(k, packet)`` may rewrite packet k's timestamps
    before it is written."""
    with av.open(str(path), "w") as container:
        options = {"preset": "veryfast", "crf": "18", "threads": "1"} if codec == "libx264" else {}
        stream = container.add_stream(codec, rate=round(1 / time_base), options=options)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.time_base = stream.time_base = time_base
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = b_frames
        if codec == "mpeg4":
            stream.codec_context.qmax = 4  # keep the code blocks crisp
        if rotation is not None:
            stream.set_display_rotation(rotation)
        packets = []
        for k, stamp in enumerate(stamps):
            frame = av.VideoFrame.from_ndarray(coded_frame(k, HEIGHT, WIDTH), format="rgb24")
            frame.pts, frame.time_base = stamp, time_base
            packets += stream.encode(frame)
        packets += stream.encode(None)
        for k, packet in enumerate(packets):
            if restamp is not None:
                restamp(k, packet)
            container.mux(packet)
    return path


# -- the fixtures ---------------------------------------------------------------------------------


def xvid_packed_bframes(path: Path) -> Path:
    """MPEG-4 Part 2 in AVI with DivX/Xvid "packed" B-frames: a reference picture travels with
    the B-frame after it, each further B-frame one packet late, and a ~6-byte not-coded picture
    fills the slot left at the end of the run. FFmpeg guesses non-monotonic timestamps for it
    and the decoder emits each B-frame from another frame's packet."""
    fps = 25
    packets = _mpeg4_packets(96, fps, gop=12, b_frames=2)
    chunks = _pack_b_frames(packets, fps)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = WIDTH, HEIGHT
        stream.codec_context.codec_tag = "XVID"
        for k, (data, keyframe) in enumerate(chunks):
            packet = av.Packet(data)
            packet.pts = packet.dts = k
            packet.time_base = Fraction(1, fps)
            packet.is_keyframe = keyframe
            packet.stream = stream
            container.mux(packet)
    return path


def h264_bframes_mp4(path: Path) -> Path:
    """H.264 with B-frames in MP4: decoding order differs from display order."""
    return encode(path, "libx264", list(range(60)), Fraction(1, 25))


def vfr_mp4(path: Path) -> Path:
    """H.264 in MP4 at a variable frame rate (frame durations 40 to 200 ms)."""
    durations = [40, 40, 80, 40, 120, 40, 40, 200] * 8
    stamps = np.cumsum([0, *durations[:59]]).tolist()
    return encode(path, "libx264", stamps, Fraction(1, 1000))


def h264_bframes_avi(path: Path) -> Path:
    """H.264 with B-frames in AVI, which stores no presentation timestamps: FFmpeg guesses
    them, and the decoded frames come out with timestamps out of order."""
    return encode(path, "libx264", list(range(60)), Fraction(1, 25))


def pts_backward_mp4(path: Path) -> Path:
    """H.264 without B-frames in MP4 whose timestamps jump: frames 20-39 are stamped after
    frames 40-59, so the frames in timestamp order are not the frames the decoder outputs."""

    def restamp(k: int, packet: Any) -> None:
        if packet.dts is not None:
            packet.pts = packet.dts + 100 + (20 if 20 <= k < 40 else -20 if k >= 40 else 0)

    return encode(path, "libx264", list(range(60)), Fraction(1, 25), b_frames=0, restamp=restamp)


def rotated_mp4(path: Path) -> Path:
    """H.264 in MP4 with a display matrix turning the 64x48 picture by 90 degrees."""
    return encode(path, "libx264", list(range(30)), Fraction(1, 25), rotation=90)


def count_lies_avi(path: Path) -> Path:
    """MPEG-4 in AVI (no B-frames) whose headers declare 120 frames; it holds 40."""
    encode(path, "mpeg4", list(range(40)), Fraction(1, 25), b_frames=0)
    data = bytearray(path.read_bytes())
    for tag, offset in ((b"avih", 16), (b"strh", 32), (b"dmlh", 0)):  # the frame-count fields
        at = data.find(tag)
        if at >= 0:
            struct.pack_into("<I", data, at + 8 + offset, 120)
    path.write_bytes(bytes(data))
    return path


FIXTURES: dict[str, Callable[[Path], Path]] = {
    "xvid_packed_bframes.avi": xvid_packed_bframes,
    "h264_bframes.mp4": h264_bframes_mp4,
    "vfr.mp4": vfr_mp4,
    "h264_bframes.avi": h264_bframes_avi,
    "pts_backward.mp4": pts_backward_mp4,
    "rotated90.mp4": rotated_mp4,
    "count_lies.avi": count_lies_avi,
}


# -- packing B-frames -----------------------------------------------------------------------------


def _mpeg4_packets(n: int, fps: int, gop: int, b_frames: int) -> list[tuple[bytes, bool]]:
    """(bitstream, keyframe) of each picture in decoding order, from FFmpeg's MPEG-4 encoder."""
    context = av.CodecContext.create("mpeg4", "w")
    context.width, context.height, context.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    context.time_base, context.framerate = Fraction(1, fps), Fraction(fps, 1)
    context.gop_size, context.max_b_frames, context.qmax = gop, b_frames, 4
    context.open()
    packets = []
    for k in range(n):
        frame = av.VideoFrame.from_ndarray(coded_frame(k, HEIGHT, WIDTH), format="rgb24")
        frame.pts = k
        packets += context.encode(frame)
    packets += context.encode(None)
    return [(bytes(p), bool(p.is_keyframe)) for p in packets]


def _coding_type(data: bytes) -> str:
    """"I", "P", "B" or "S" from the first picture header in ``data``."""
    at = data.find(_VOP)
    return "IPBS"[data[at + 4] >> 6]


def _not_coded_vop(time_increment: int, increment_bits: int) -> bytes:
    """A P-VOP with vop_coded = 0 (Xvid's placeholder): no picture, only a header."""
    bits = "01" + "0" + "1" + format(time_increment, f"0{increment_bits}b") + "1" + "0"
    bits += "0" + "1" * ((8 - (len(bits) + 1) % 8) % 8)  # stuffing to a byte boundary
    return _VOP + int(bits, 2).to_bytes(len(bits) // 8, "big")


def _pack_b_frames(packets: list[tuple[bytes, bool]], fps: int) -> list[tuple[bytes, bool]]:
    increment_bits = (fps - 1).bit_length()  # FFmpeg's vop_time_increment_resolution is fps
    chunks: list[tuple[bytes, bool]] = []
    k = 0
    while k < len(packets):
        data, keyframe = packets[k]
        if keyframe:  # announce packed B-frames in the user data before the picture
            at = data.find(_VOP)
            data = data[:at] + _USER_DATA + _PACKED_ID + b"\x00" + data[at:]
        run = []
        while k + 1 + len(run) < len(packets) and _coding_type(packets[k + 1 + len(run)][0]) == "B":
            run.append(packets[k + 1 + len(run)][0])
        if run:
            chunks.append((data + run[0], keyframe))
            chunks += [(b, False) for b in run[1:]]
            chunks.append((_not_coded_vop(len(chunks) % fps, increment_bits), False))
        else:
            chunks.append((data, keyframe))
        k += 1 + len(run)
    return chunks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder (default {OUT})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in FIXTURES.items():
        path = make(args.out / name)
        print(f"{path}  {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
