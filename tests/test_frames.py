"""Frame sources: counts, pixels, access orders, loaders, folders, images, prefetch, memory."""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from _media import (
    VIDEOS,
    coded_frame,
    decode_all,
    digest,
    read_code,
    reference_digests,
    write_images,
    write_video,
)
from PIL import Image

from sam3video.io import FrameSource, open_frames
from sam3video.io.frames import _probe_video

LOADERS = ("cv2", "pyav")
# Stand-ins for three real videos (`_media.SAMPLES`: same names, sizes, counts, rates and
# container quirks), encoded on first use. Frames are what the decoder outputs (what SAM 3's
# cv2 read loop sees): tree.avi declares 444 frame slots at 15 fps but holds 68 coded frames
# (the other slots are empty "repeat" chunks).
SAMPLE_COUNTS = {"bikes.mp4": 250, "bigbuckbunny.mp4": 132, "tree.avi": 68}
SAMPLE_SIZES = {"bikes.mp4": (272, 640), "bigbuckbunny.mp4": (720, 1280), "tree.avi": (240, 320)}
RANDOM_READS = {"bikes.mp4": 24, "bigbuckbunny.mp4": 4, "tree.avi": 68}
# bigbuckbunny.mp4 is one 132-frame group of pictures at 720p: read back its first 64 only.
BACKWARD_FROM = {"bikes.mp4": 250, "bigbuckbunny.mp4": 64, "tree.avi": 68}


# -- the sample videos ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oracle() -> dict[tuple[str, str], tuple[list[str], dict[int, np.ndarray]]]:
    """Per (video, loader): md5 of every frame from a plain sequential read, and sample frames."""
    out = {}
    for name, count in SAMPLE_COUNTS.items():
        samples = frozenset(np.linspace(0, count - 1, 6).round().astype(int).tolist())
        for loader in LOADERS:
            out[name, loader] = reference_digests(VIDEOS / name, loader, keep=samples)
    return out


@pytest.mark.parametrize("name", sorted(SAMPLE_COUNTS))
def test_sample_counts_and_attributes(name: str, oracle: dict) -> None:
    path = VIDEOS / name
    for loader in LOADERS:
        with open_frames(path, loader) as source:
            assert isinstance(source, FrameSource)
            # Exact count: equal to a full sequential decode with either library.
            assert len(source) == SAMPLE_COUNTS[name]
            assert len(source) == len(oracle[name, "cv2"][0]) == len(oracle[name, "pyav"][0])
            assert (source.height, source.width) == SAMPLE_SIZES[name]
            assert source.path == path
            assert source.fps == pytest.approx(25.0 if name.endswith(".mp4") else 15.0, rel=1e-3)


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("name", sorted(SAMPLE_COUNTS))
def test_sample_forward_backward_random(name: str, loader: str, oracle: dict) -> None:
    path = VIDEOS / name
    expected = oracle[name, loader][0]
    n = len(expected)
    with open_frames(path, loader) as source:
        forward = [digest(frame) for frame in source]
        assert source[0].shape == (*SAMPLE_SIZES[name], 3) and source[0].dtype == np.uint8
    assert forward == expected  # identical to a plain sequential read with the same library

    m = BACKWARD_FROM[name]
    with open_frames(path, loader, cache_size=32) as source:
        backward = [digest(source[i]) for i in range(m - 1, -1, -1)][::-1]
        decoded = source.cache_info().decoded
        window = 32 // 2
        longest_gop = int(np.diff(np.append(source._info.seek_frames, n)).max())
    assert backward == expected[:m]
    if loader == "pyav":  # (OpenCV decodes inside its own seeks, out of the counter's sight)
        # Stepping back decodes each group of pictures once per window of cached frames, not
        # the video from the start for every frame (which would cost m * (m + 1) / 2 decodes).
        assert decoded <= m * (min(longest_gop, m) / window + 2)

    order = list(range(n))
    random.Random(0).shuffle(order)
    with open_frames(path, loader, cache_size=4) as source:
        for i in order[: RANDOM_READS[name]]:
            assert digest(source[i]) == expected[i], f"frame {i}"


@pytest.mark.parametrize("name", sorted(SAMPLE_COUNTS))
def test_sample_loaders_agree(name: str, oracle: dict) -> None:
    samples = oracle[name, "pyav"][1]
    with open_frames(VIDEOS / name, "cv2") as a, open_frames(VIDEOS / name, "pyav") as b:
        for i in sorted(samples):
            x, y = a[i].astype(np.int16), b[i].astype(np.int16)
            per_channel = np.abs(x - y).mean(axis=(0, 1))
            assert per_channel.max() <= 2.0, f"frame {i}: mean abs diff {per_channel}"
            assert np.array_equal(b[i], samples[i])


def test_variable_frame_rate_avi_uses_decoded_frames() -> None:
    # tree.avi's container claims 444 frames; the index is rebuilt by decoding.
    info = _probe_video(VIDEOS / "tree.avi")
    assert info.verified_by == "full-decode"
    assert "declares 444 frames" in info.reason
    assert info.num_frames == 68
    assert _probe_video(VIDEOS / "tree.avi") is info  # verified once, then cached
    assert _probe_video(VIDEOS / "bikes.mp4").verified_by == "container"


# -- generated videos -----------------------------------------------------------------------------

FORMATS = {
    "h264_bframes.mp4": {"codec": "libx264"},
    "mpeg4.mov": {"codec": "mpeg4"},
    "mpeg4_bframes.avi": {"codec": "mpeg4"},
    "h264.mkv": {"codec": "libx264"},
    "vp9.webm": {"codec": "libvpx-vp9"},
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for name, options in FORMATS.items():
        write_video(folder / name, 60, gop=12, **options)
    return folder


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_generated_formats_all_orders(generated: Path, name: str, loader: str) -> None:
    path = generated / name
    with open_frames(path, loader, cache_size=6) as source:
        assert len(source) == 60
        assert (source.height, source.width) == (48, 64)
        forward = [read_code(frame) for frame in source]
    assert forward == list(range(60))
    with open_frames(path, loader, cache_size=6) as source:
        backward = [read_code(source[i]) for i in range(59, -1, -1)]
    assert backward == list(range(59, -1, -1))
    order = list(range(60))
    random.Random(1).shuffle(order)
    with open_frames(path, loader, cache_size=6) as source:
        assert [read_code(source[i]) for i in order] == order
        assert source.cache_info().peak <= 6


def test_generated_count_verification_paths(generated: Path) -> None:
    # mp4/mov declare a count that matches their packets; mkv/webm declare none. An AVI stores
    # no presentation timestamps, so one whose stream reorders frames (B-frames) is decoded.
    assert _probe_video(generated / "h264_bframes.mp4").verified_by == "container"
    assert _probe_video(generated / "mpeg4.mov").verified_by == "container"
    assert _probe_video(generated / "h264.mkv").verified_by == "tail-decode"
    assert _probe_video(generated / "vp9.webm").verified_by == "tail-decode"
    avi = _probe_video(generated / "mpeg4_bframes.avi")
    assert avi.verified_by == "full-decode" and "AVI" in avi.reason


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_display_rotation_is_applied_like_opencv(tmp_path: Path, rotation: int) -> None:
    path = write_video(tmp_path / f"rotated{rotation}.mp4", 8, rotation=rotation)
    capture = cv2.VideoCapture(str(path))  # OpenCV rotates by itself by default
    upright = []
    for _ in range(8):
        ok, bgr = capture.read()
        assert ok
        upright.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    for loader in LOADERS:
        with open_frames(path, loader) as source:
            expected_hw = (48, 64) if rotation == 180 else (64, 48)
            assert (source.height, source.width) == expected_hw
            for i in (7, 3, 0):
                assert np.array_equal(source[i], upright[i])
                assert read_code(np.rot90(source[i], k=-rotation // 90)) == i


# -- folders and images ---------------------------------------------------------------------------


def test_jpeg_folder_zero_padded(tmp_path: Path) -> None:
    names = [f"{k:05d}.jpg" for k in range(12)]
    write_images(tmp_path, names)
    with open_frames(tmp_path) as source:
        assert len(source) == 12
        assert (source.height, source.width) == (48, 64)
        assert source.fps is None
        for k in (11, 0, 5, 4):
            expected = np.array(Image.open(tmp_path / names[k]).convert("RGB"))
            assert np.array_equal(source[k], expected)
            assert read_code(source[k]) == k


def test_png_folder_sorted_numerically(tmp_path: Path) -> None:
    # Written in frame order k -> name; listed on disk in a different (lexicographic) order.
    names = ["1.png", "2.png", "9.png", "10.png", "11.png", "100.png"]
    frames = write_images(tmp_path, names)
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / ".hidden_0.png").write_bytes((tmp_path / "1.png").read_bytes())
    (tmp_path / "sub").mkdir()
    write_images(tmp_path / "sub", ["0.png"])
    with open_frames(tmp_path, "pyav") as source:
        assert len(source) == len(names)
        for k in range(len(names)):
            assert np.array_equal(source[k], frames[k])  # PNG is lossless


def test_folder_with_prefixed_names(tmp_path: Path) -> None:
    names = ["frame_1.png", "frame_2.png", "frame_10.png", "frame_12.png", "frame_100.png"]
    frames = write_images(tmp_path, names)
    with open_frames(tmp_path) as source:
        assert [read_code(f) for f in source] == list(range(5))
        assert np.array_equal(source[3], frames[3])


def test_folder_natural_sort_fallback(tmp_path: Path) -> None:
    names = ["a.png", "b2.png", "b10.png", "c.png"]  # "a" has no number: natural order
    write_images(tmp_path, names)
    with open_frames(tmp_path) as source:
        assert [read_code(f) for f in source] == [0, 1, 2, 3]


def test_single_image(tmp_path: Path) -> None:
    frame = coded_frame(7, 40, 72)
    Image.fromarray(frame).save(tmp_path / "one.png")
    with open_frames(tmp_path / "one.png") as source:
        assert len(source) == 1
        assert (source.height, source.width) == (40, 72)
        assert source.fps is None
        assert np.array_equal(source[0], frame)
        assert [f.shape for f in source] == [(40, 72, 3)]


def test_image_modes_become_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 0  # alpha is dropped, not composited (as SAM 3's PIL convert("RGB"))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((10, 12), 77, np.uint8), "L").save(tmp_path / "gray.png")
    with open_frames(tmp_path / "rgba.png") as source:
        assert source[0].shape == (10, 12, 3) and (source[0] == 200).all()
    with open_frames(tmp_path / "gray.png") as source:
        assert source[0].shape == (10, 12, 3) and (source[0] == 77).all()


def test_default_cache_size_follows_frame_size(tmp_path: Path) -> None:
    write_images(tmp_path / "small", ["0.png"])
    with open_frames(tmp_path / "small") as source:
        assert source.cache_info().capacity == 64  # the cap
    Image.new("RGB", (4000, 2400)).save(tmp_path / "big.bmp")  # 27.5 MiB per frame
    with open_frames(tmp_path / "big.bmp") as source:
        assert source.cache_info().capacity == 9  # 256 MiB // 27.5 MiB
    with open_frames(tmp_path / "big.bmp", cache_size=2) as source:
        assert source.cache_info().capacity == 2


def test_numpy_integer_index_and_copies(tmp_path: Path) -> None:
    write_images(tmp_path, ["0.png", "1.png"])
    with open_frames(tmp_path) as source:
        a = source[np.int64(1)]
        a[:] = 0  # the caller owns the array: the cached frame is untouched
        assert read_code(source[1]) == 1


def test_close_and_context_manager(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", 10)
    source = open_frames(path, "pyav")
    assert not source.closed
    with source:
        assert read_code(source[3]) == 3
    assert source.closed
    source.close()  # idempotent
    assert source.cache_info().size == 0


# -- prefetch -------------------------------------------------------------------------------------


@pytest.mark.parametrize("loader", LOADERS)
def test_prefetch_gives_same_frames_and_stops(tmp_path: Path, loader: str) -> None:
    path = write_video(tmp_path / "v.mp4", 80, gop=10)
    expected = [digest(f) for f in decode_all(path)] if loader == "pyav" else None
    with open_frames(path, loader, cache_size=9) as plain:
        reference = [digest(f) for f in plain]
    if expected is not None:
        assert reference == expected
    with open_frames(path, loader, cache_size=9, prefetch=True) as source:
        thread = source._prefetcher
        assert thread is not None and thread.alive
        # The thread decodes ahead of the reader, forward then backward.
        source[20]
        assert _eventually(lambda: all(j in source._cache for j in range(21, 24)))
        source[60]
        source[59]
        assert _eventually(lambda: all(j in source._cache for j in range(56, 59)))
        assert [digest(source[i]) for i in range(80)] == reference
        assert [digest(source[i]) for i in range(79, -1, -1)] == reference[::-1]
        assert source.cache_info().peak <= 9
    assert not thread.alive  # close() stops and joins the thread


def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.mark.parametrize("prefetch", [False, True])
def test_concurrent_readers(tmp_path: Path, prefetch: bool) -> None:
    path = write_video(tmp_path / "v.mp4", 60, gop=8)
    errors: list[str] = []
    with open_frames(path, "pyav", cache_size=5, prefetch=prefetch) as source:

        def read(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(30):
                i = rng.randrange(60)
                code = read_code(source[i])
                if code != i:
                    errors.append(f"frame {i} read as {code}")

        threads = [threading.Thread(target=read, args=(seed,)) for seed in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


# -- memory ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 2,000 frames of 128x96: 74 MiB of decoded RGB if the source kept them all.
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    return write_video(path, 2000, height=96, width=128, gop=30, b_frames=0)


@pytest.mark.parametrize("loader", LOADERS)
def test_memory_is_bounded_on_a_long_video(long_video: Path, loader: str) -> None:
    process = psutil.Process()
    cache_size = 16
    with open_frames(long_video, loader, cache_size=cache_size) as source:
        assert len(source) == 2000
        for i in list(range(40)) + list(range(39, -1, -1)):  # warm up decoder buffers
            source[i]
        gc.collect()
        baseline = peak = process.memory_info().rss
        for i in range(len(source)):
            frame = source[i]
            if i % 100 == 0:
                assert read_code(frame) == i
                peak = max(peak, process.memory_info().rss)
        if loader == "pyav":  # and back through the last 500 frames, window by window
            for i in range(len(source) - 1, len(source) - 501, -1):
                frame = source[i]
                if i % 100 == 0:
                    assert read_code(frame) == i
                    peak = max(peak, process.memory_info().rss)
        info = source.cache_info()
    assert info.peak <= cache_size
    assert (peak - baseline) < 32 * 2**20, f"RSS grew by {(peak - baseline) / 2**20:.1f} MiB"
