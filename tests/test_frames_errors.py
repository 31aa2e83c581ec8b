"""Frame sources: every failure is a typed sam3video error naming the path or the value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _media import coded_frame, decode_all, read_code, write_audio_only, write_images, write_video
from PIL import Image

from sam3video.errors import (
    DecodeError,
    FrameIndexError,
    InvalidInputError,
    Sam3VideoError,
    SourceNotFoundError,
    UnsupportedSourceError,
)
from sam3video.io import open_frames
from sam3video.io.frames import _probe_video

LOADERS = ("cv2", "pyav")


# -- arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("loader", ["torchcodec", "CV2", "", None, 1])
def test_unknown_loader(tmp_path: Path, loader: object) -> None:
    path = write_video(tmp_path / "v.mp4", 3)
    with pytest.raises(InvalidInputError, match="loader") as error:
        open_frames(path, loader)  # type: ignore[arg-type]
    assert repr(loader) in str(error.value)


@pytest.mark.parametrize("cache_size", [0, -1, 2.5, True, "8"])
def test_bad_cache_size(tmp_path: Path, cache_size: object) -> None:
    with pytest.raises(InvalidInputError, match="cache_size"):
        open_frames(tmp_path, cache_size=cache_size)  # type: ignore[arg-type]


def test_bad_prefetch_and_path_types(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="prefetch"):
        open_frames(tmp_path, prefetch="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="path"):
        open_frames(123)  # type: ignore[arg-type]


# -- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["missing.mp4", "missing_folder", "missing.jpg"])
def test_missing_path(tmp_path: Path, name: str) -> None:
    with pytest.raises(SourceNotFoundError, match=name) as error:
        open_frames(tmp_path / name)
    assert isinstance(error.value, FileNotFoundError)


def test_empty_folder_and_folder_without_images(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnsupportedSourceError, match="empty"):
        open_frames(empty)
    other = tmp_path / "other"
    other.mkdir()
    (other / "readme.txt").write_text("hi")
    (other / "clip.mp4").write_bytes(b"")  # videos are not frames of a folder
    (other / ".0001.jpg").write_bytes(b"")  # hidden
    with pytest.raises(UnsupportedSourceError, match="no image frames"):
        open_frames(other)


@pytest.mark.parametrize("name", ["notes.txt", "anim.gif", "noextension", "clip.MP3"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(UnsupportedSourceError, match="not a supported source") as error:
        open_frames(path)
    assert name in str(error.value)


def test_file_without_video_stream(tmp_path: Path) -> None:
    path = write_audio_only(tmp_path / "audio.mkv")
    with pytest.raises(UnsupportedSourceError, match="no video stream"):
        open_frames(path)


# -- damaged files --------------------------------------------------------------------------------


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("name", ["garbage.mp4", "garbage.avi", "garbage.mkv", "empty.webm"])
def test_corrupt_video(tmp_path: Path, name: str, loader: str) -> None:
    path = tmp_path / name
    rng = np.random.default_rng(0)
    path.write_bytes(b"" if name.startswith("empty") else rng.bytes(4096))
    with pytest.raises(DecodeError, match=name) as error:
        open_frames(path, loader)
    assert isinstance(error.value, RuntimeError) and isinstance(error.value, Sam3VideoError)


def test_text_file_named_like_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mov"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(DecodeError, match="notes.mov"):
        open_frames(path)


def test_truncated_mp4_with_index_at_the_end(tmp_path: Path) -> None:
    # Without faststart the moov box (the sample index) is last: a cut file cannot be opened.
    full = write_video(tmp_path / "full.mp4", 100)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    for loader in LOADERS:
        with pytest.raises(DecodeError, match="cut.mp4"):
            open_frames(cut, loader)


@pytest.mark.parametrize("name", ["faststart.mp4", "cut.mkv", "cut.avi"])
def test_truncated_video_yields_the_frames_that_decode(tmp_path: Path, name: str) -> None:
    options = {"faststart": True} if name.endswith(".mp4") else {}
    if name.endswith(".avi"):
        options["codec"] = "mpeg4"
    full = write_video(tmp_path / f"full_{name}", 150, gop=10, **options)
    cut = tmp_path / name
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    reference = decode_all(cut)  # plain PyAV until the end or the first error
    assert 0 < len(reference) < 150
    info = _probe_video(cut)
    assert info.num_frames == len(reference)
    for loader in LOADERS:
        with open_frames(cut, loader, cache_size=6) as source:
            assert len(source) == len(reference)  # the true count, not the declared one
            n = len(source)
            for i in [n - 1, 0, n // 2, n - 2]:
                diff = np.abs(source[i].astype(np.int16) - reference[i]).mean(axis=(0, 1))
                assert diff.max() <= (0 if loader == "pyav" else 2), f"frame {i}"
            codes = [read_code(source[i]) for i in range(n - 2, -1, -1)]
            assert codes == list(range(n - 2, -1, -1))  # all but the possibly partial last one
            with pytest.raises(FrameIndexError, match=str(n)):
                source[n]


def test_damaged_middle_gives_arrays_or_decode_errors(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.avi", 120, gop=10, codec="mpeg4")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = np.random.default_rng(1).bytes(3000)
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    counts, results = {}, {}
    for loader in LOADERS:
        results[loader] = []
        with open_frames(damaged, loader, cache_size=4) as source:
            counts[loader] = len(source)
            for i in [*range(0, len(source), 7), len(source) - 1]:
                try:
                    frame = source[i]
                except DecodeError as error:
                    assert "damaged.avi" in str(error) and f"frame {i}" in str(error)
                    results[loader].append(None)
                else:
                    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
                    results[loader].append(frame)
    assert counts["cv2"] == counts["pyav"] == len(decode_all(damaged))
    # Before the damage the loaders agree exactly. (Inside a damaged group of pictures the
    # decoder conceals errors from whatever it decoded before, so a frame reached by a seek
    # may differ from the same frame reached by reading from the start.)
    for a, b in zip(results["cv2"][:4], results["pyav"][:4]):
        assert a is not None and b is not None and np.array_equal(a, b)


def test_corrupt_image_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DecodeError, match="broken.jpg"):
        open_frames(path)


def test_truncated_image_in_a_folder(tmp_path: Path) -> None:
    write_images(tmp_path, ["0.png", "1.png", "2.png"])
    data = (tmp_path / "1.png").read_bytes()
    (tmp_path / "1.png").write_bytes(data[: len(data) // 2])
    with open_frames(tmp_path) as source:
        assert len(source) == 3
        assert read_code(source[0]) == 0 and read_code(source[2]) == 2
        with pytest.raises(DecodeError, match="1.png"):
            source[1]


def test_folder_frames_of_different_sizes(tmp_path: Path) -> None:
    Image.fromarray(coded_frame(0, 48, 64)).save(tmp_path / "0.png")
    Image.fromarray(coded_frame(1, 56, 64)).save(tmp_path / "1.png")
    with open_frames(tmp_path) as source:
        source[0]
        with pytest.raises(UnsupportedSourceError, match="1.png"):
            source[1]


# -- indices and closed sources -------------------------------------------------------------------


@pytest.mark.parametrize("loader", LOADERS)
def test_bad_indices(tmp_path: Path, loader: str) -> None:
    path = write_video(tmp_path / "v.mp4", 5)
    with open_frames(path, loader) as source:
        for index in [-1, -5, 5, 6, 10**9]:
            with pytest.raises(FrameIndexError, match=str(index)) as error:
                source[index]
            assert isinstance(error.value, IndexError) and isinstance(error.value, ValueError)
        for index in [1.0, 2.5, "3", True, False, np.bool_(True), None, slice(0, 2), [1]]:
            with pytest.raises(FrameIndexError, match="expected an int"):
                source[index]  # type: ignore[index]
        assert read_code(source[np.int32(4)]) == 4


def test_reading_a_closed_source(tmp_path: Path) -> None:
    write_images(tmp_path, ["0.png"])
    source = open_frames(tmp_path)
    source.close()
    with pytest.raises(InvalidInputError, match="closed"):
        source[0]
