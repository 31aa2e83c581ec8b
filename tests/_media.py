"""Test media: synthetic videos and frame folders whose frames carry their own index.

Each synthetic frame draws its index as a 16-bit code of 8x8 black/white blocks in its top two
block rows (robust to lossy codecs), over a background that changes from frame to frame, so a
decoded frame tells which frame it is (`read_code`).

``VIDEOS`` is a folder of generated stand-ins for the three real videos the tests were written
against (same names, sizes, frame counts, frame rates and container quirks; see `SAMPLES`), so
a fresh clone needs no data beside it. They are encoded once per machine into the temporary
folder (about 10 s) and reused; the folder is made on first use of ``VIDEOS``.
"""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

_BLOCK = 8
_BITS = 16
_DARK, _LIGHT = 20, 235


def coded_frame(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 (H, W, 3) RGB frame showing ``index`` as a block code; needs W >= 64, H >= 24."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (x * 3 + index * 5) % 256
    frame[..., 1] = (y * 4 + index * 3) % 256
    frame[..., 2] = ((x + y) * 2 + index * 7) % 256
    per_row = width // _BLOCK
    for bit in range(_BITS):
        row, col = divmod(bit, per_row)
        value = _LIGHT if (index >> bit) & 1 else _DARK
        frame[row * _BLOCK : (row + 1) * _BLOCK, col * _BLOCK : (col + 1) * _BLOCK] = value
    return frame


def read_code(frame: np.ndarray) -> int:
    """The index drawn by `coded_frame` (read from block centres)."""
    per_row = frame.shape[1] // _BLOCK
    index = 0
    for bit in range(_BITS):
        row, col = divmod(bit, per_row)
        top, left = row * _BLOCK, col * _BLOCK
        block = frame[top + 2 : top + _BLOCK - 2, left + 2 : left + _BLOCK - 2]
        if block.mean() > 127:
            index |= 1 << bit
    return index


def write_video(
    path: Path,
    num_frames: int,
    *,
    codec: str = "libx264",
    height: int = 48,
    width: int = 64,
    fps: int = 25,
    gop: int = 12,
    b_frames: int = 2,
    faststart: bool = False,
    rotation: int | None = None,
) -> Path:
    """Encode ``num_frames`` coded frames with PyAV."""
    container = av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {})
    options: dict[str, str] = {}
    if codec == "libx264":
        options = {"preset": "ultrafast" if b_frames == 0 else "veryfast", "crf": "18"}
    stream = container.add_stream(codec, rate=fps, options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.gop_size = gop
    if codec in ("libx264", "mpeg4", "mpeg2video"):
        stream.codec_context.max_b_frames = b_frames
    if codec == "mpeg4":
        stream.codec_context.qmax = 4  # keep the code blocks crisp
    if rotation is not None:
        stream.set_display_rotation(rotation)
    for i in range(num_frames):
        frame = av.VideoFrame.from_ndarray(coded_frame(i, height, width), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def write_audio_only(path: Path) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("flac", rate=8000)
    samples = np.zeros((1, 800), np.int16)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = 8000
    frame.pts = 0
    frame.time_base = Fraction(1, 8000)
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def write_images(
    folder: Path, names: list[str], height: int = 48, width: int = 64
) -> list[np.ndarray]:
    """Write ``coded_frame(k)`` as ``names[k]``; returns the frames."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for k, name in enumerate(names):
        frame = coded_frame(k, height, width)
        Image.fromarray(frame).save(folder / name, quality=95)
        frames.append(frame)
    return frames


def decode_all(path: Path) -> list[np.ndarray]:
    """Reference decode: every frame of ``path`` with plain PyAV, until the end or an error."""
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                for frame in stream.decode(packet):
                    frames.append(frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError:
            pass
    return frames


def reference_digests(
    path: Path, loader: str, keep: frozenset[int] = frozenset()
) -> tuple[list[str], dict[int, np.ndarray]]:
    """Oracle: digest of every frame read sequentially with plain OpenCV (the official loop)
    or plain PyAV, and the frames whose index is in ``keep``."""
    import cv2

    digests: list[str] = []
    kept: dict[int, np.ndarray] = {}

    def add(frame: np.ndarray) -> None:
        if len(digests) in keep:
            kept[len(digests)] = frame
        digests.append(digest(frame))

    if loader == "cv2":
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            add(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        capture.release()
    else:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            try:
                for packet in container.demux(stream):
                    for frame in stream.decode(packet):
                        add(frame.to_ndarray(format="rgb24"))
            except av.error.FFmpegError:
                pass
    return digests, kept


def digest(frame: np.ndarray) -> str:
    """A cheap fingerprint of a frame's shape and bytes (CRC-32)."""
    data = np.ascontiguousarray(frame)
    return f"{data.shape}:{zlib.crc32(memoryview(data).cast('B')):08x}"


# -- generated stand-ins for the real test videos --------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """How one stand-in video is encoded (the properties of the real video it replaces)."""

    frames: int
    height: int
    width: int
    fps: int
    codec: str
    gop: int
    b_frames: int
    slots: int = 0  # AVI only: frame slots the container declares (> frames: empty "repeats")


SAMPLES = {
    # 640x272 H.264 with B-frames and several groups of pictures.
    "bikes.mp4": Sample(250, 272, 640, 25, "libx264", gop=50, b_frames=2),
    # 720p H.264, one 132-frame group of pictures, no B-frames.
    "bigbuckbunny.mp4": Sample(132, 720, 1280, 25, "libx264", gop=132, b_frames=0),
    # An AVI declaring 444 frame slots at 15 fps of which 68 hold coded frames: the muxer fills
    # the gaps between timestamps with empty chunks, as in a variable-frame-rate capture.
    "tree.avi": Sample(68, 240, 320, 15, "mpeg4", gop=25, b_frames=0, slots=444),
}
MEDIA_VERSION = 1  # bump when SAMPLES or the encoders' settings change


def write_sample(path: Path, sample: Sample) -> Path:
    """Encode ``sample`` at ``path`` (MP4 via `write_video`; AVI with gaps in its timeline)."""
    if not sample.slots:
        return write_video(
            path,
            sample.frames,
            codec=sample.codec,
            height=sample.height,
            width=sample.width,
            fps=sample.fps,
            gop=sample.gop,
            b_frames=sample.b_frames,
        )
    slots = np.linspace(0, sample.slots - 1, sample.frames).round().astype(int)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(sample.codec, rate=sample.fps)
        stream.width, stream.height, stream.pix_fmt = sample.width, sample.height, "yuv420p"
        stream.codec_context.gop_size = sample.gop
        stream.codec_context.qmax = 4  # keep the code blocks crisp
        for k, pts in enumerate(slots):
            frame = av.VideoFrame.from_ndarray(
                coded_frame(k, sample.height, sample.width), format="rgb24"
            )
            frame.pts, frame.time_base = int(pts), Fraction(1, sample.fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def sample_videos() -> Path:
    """The folder holding every video of `SAMPLES`, encoded on the first call on a machine."""
    folder = Path(tempfile.gettempdir()) / f"sam3video-test-media-{getpass.getuser()}"
    folder = folder / f"v{MEDIA_VERSION}-av{av.__version__}"
    if all((folder / name).is_file() for name in SAMPLES):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    try:
        for name, sample in SAMPLES.items():
            write_sample(staging / name, sample)
        try:
            os.rename(staging, folder)  # atomic: another run sees all files or none
        except OSError:  # another run finished first (or a partial folder is in the way)
            if not all((folder / name).is_file() for name in SAMPLES):
                shutil.rmtree(folder, ignore_errors=True)
                os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def __getattr__(name: str) -> Path:
    # ``VIDEOS`` is computed on first use, so importing this module encodes nothing.
    if name == "VIDEOS":
        return sample_videos()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
