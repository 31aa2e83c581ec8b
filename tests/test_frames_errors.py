"""Frame sources: every failure is a typed sam3video error naming the path or the value."""

from __future__ import annotations

from pathlib import Path

import av
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


def test_path_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SourceNotFoundError, match="a parent is a file"):
        open_frames(tmp_path / "file.txt" / "clip.mp4")


@pytest.mark.parametrize("where", ["video", "folder"])
def test_file_name_too_long(tmp_path: Path, where: str) -> None:
    # A 300-character name component: the OS says ENAMETOOLONG (errno 36) for any look-up.
    long = "a" * 296
    path = tmp_path / f"{long}.mp4" if where == "video" else tmp_path / long / "clip.mp4"
    with pytest.raises(InvalidInputError, match="300 characters long|296 characters long") as e:
        open_frames(path)
    message = str(e.value)
    assert "more than the file system allows" in message and "Errno" not in message
    assert len(message) < 250  # the path is shown cut, not in full


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
@pytest.mark.parametrize("name", ["garbage.mp4", "garbage.avi", "garbage.mkv", "zeros.webm"])
def test_corrupt_video(tmp_path: Path, name: str, loader: str) -> None:
    path = tmp_path / name
    rng = np.random.default_rng(0)
    path.write_bytes(bytes(4096) if name.startswith("zeros") else rng.bytes(4096))
    with pytest.raises(DecodeError, match=name) as error:
        open_frames(path, loader)
    assert isinstance(error.value, RuntimeError) and isinstance(error.value, Sam3VideoError)
    message = str(error.value)
    assert "not a video file, or damaged" in message
    assert "Errno" not in message and "1094995529" not in message


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("name", ["empty.mp4", "empty.webm", "empty.avi"])
def test_empty_video_file(tmp_path: Path, name: str, loader: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DecodeError, match=rf"{name}' is empty \(0 bytes\)"):
        open_frames(tmp_path / name, loader)


def test_text_file_named_like_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mov"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(DecodeError, match="notes.mov.*not a video file, or damaged"):
        open_frames(path)


@pytest.mark.parametrize("fraction", [0.67, 0.2])
def test_truncated_mp4_with_index_at_the_end(tmp_path: Path, fraction: float) -> None:
    # Without faststart the moov box (the sample index, and the codec's parameters) is last:
    # a cut file holds frames that nothing can locate or decode, and the error says so.
    full = write_video(tmp_path / "full.mp4", 100)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * fraction)])
    for loader in LOADERS:
        with pytest.raises(DecodeError, match="cut.mp4") as error:
            open_frames(cut, loader)
        message = str(error.value)
        assert "cut short" in message and "'moov' box" in message and "faststart" in message
        assert "Errno" not in message


def test_mp4_whose_index_is_cut(tmp_path: Path) -> None:
    full = write_video(tmp_path / "full.mp4", 100)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: data.rfind(b"moov") + 40])  # the index is last: cut inside it
    with pytest.raises(DecodeError, match=r"index \(the 'moov' box\) is cut short"):
        open_frames(cut)


def write_fragmented_mp4(path: Path, num_frames: int) -> Path:
    """An MP4 written as fragments (as recorders do), each with its own small index."""
    options = {"movflags": "frag_keyframe+empty_moov"}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = 10
        for k in range(num_frames):
            frame = av.VideoFrame.from_ndarray(coded_frame(k), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("name", ["faststart.mp4", "fragmented.mp4", "cut.mkv", "cut.avi"])
def test_truncated_video_yields_the_frames_that_decode(tmp_path: Path, name: str) -> None:
    options = {"faststart": True} if name.startswith("faststart") else {}
    if name.endswith(".avi"):
        options["codec"] = "mpeg4"
    if name.startswith("fragmented"):
        full = write_fragmented_mp4(tmp_path / f"full_{name}", 150)
    else:
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


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_frame_in_a_folder(tmp_path: Path, damage: str) -> None:
    # Opening succeeds (the header of a damaged file may not even be readable); reading that
    # frame raises a typed error naming the frame and the file; the other frames stay readable.
    write_images(tmp_path, ["0.png", "1.png", "2.png", "3.png"])
    data = (tmp_path / "2.png").read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "garbage": bytes(200), "empty": b""}
    (tmp_path / "2.png").write_bytes(damaged[damage])
    with open_frames(tmp_path) as source:
        assert len(source) == 4
        assert read_code(source[1]) == 1 and read_code(source[3]) == 3
        with pytest.raises(DecodeError, match=r"frame 2 \('.*2\.png'\) cannot be decoded"):
            source[2]
        assert read_code(source[0]) == 0


def test_folder_frames_of_different_sizes(tmp_path: Path) -> None:
    # Found when the folder is opened, from the image headers: the first odd file is named,
    # with both sizes.
    for k in range(5):
        Image.fromarray(coded_frame(k, 56 if k in (3, 4) else 48, 64)).save(tmp_path / f"{k}.png")
    with pytest.raises(UnsupportedSourceError, match="3.png") as error:
        open_frames(tmp_path)
    message = str(error.value)
    assert "frame 3" in message and "56x64" in message and "48x64" in message
    assert "0.png" in message and "4.png" not in message


def test_folder_size_check_reads_headers_only(tmp_path: Path, monkeypatch) -> None:
    write_images(tmp_path, [f"{k}.jpg" for k in range(20)])
    loads = []
    original = Image.Image.load

    def counting_load(self):  # noqa: ANN001, ANN202
        loads.append(self)
        return original(self)

    monkeypatch.setattr(Image.Image, "load", counting_load)
    with open_frames(tmp_path) as source:
        assert len(source) == 20 and not loads  # no pixels decoded to open the folder
        source[5]
    assert loads


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
