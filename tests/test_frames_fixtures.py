"""Frame sources on the committed fixture videos (``tests/fixtures/media``, made by
``tools/make_test_videos.py``). Each file misleads a loader about which frame is which in its
own way; both loaders must return, for every index and in any access order, exactly the frame
a plain sequential decode of the file yields.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import random
import re
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from _media import read_code

from sam3video.io import open_frames
from sam3video.io.frames import _probe_video
from sam3video.io.video_source import VideoSource

MEDIA = Path(__file__).parent / "fixtures" / "media"
TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_test_videos.py"
LOADERS = ("cv2", "pyav")
# name -> (frames, how the index is built and frames are recognised)
FIXTURES = {
    "xvid_packed_bframes.avi": (96, ("full-decode", "position")),
    "h264_bframes.mp4": (60, ("container", "pts")),
    "vfr.mp4": (60, ("container", "pts")),
    "h264_bframes.avi": (60, ("full-decode", "position")),
    "pts_backward.mp4": (60, ("full-decode", "position")),
    "rotated90.mp4": (30, ("container", "pts")),
    "count_lies.avi": (40, ("full-decode", "position")),
}


def plain_decode(path: Path, loader: str) -> list[np.ndarray]:
    """The reference: every frame read in order by plain OpenCV (which turns frames upright
    itself) or plain PyAV (turned upright here by the rotation PyAV reports)."""
    frames = []
    if loader == "cv2":
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        capture.release()
        return frames
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            for frame in stream.decode(packet):
                turns = round((frame.rotation or 0) / 90) % 4
                upright = np.rot90(frame.to_ndarray(format="rgb24"), turns)
                frames.append(np.ascontiguousarray(upright))
    return frames


def upright_code(frame: np.ndarray) -> int:
    """The index a fixture frame shows (the rotated fixture is turned back first)."""
    return read_code(frame if frame.shape[:2] == (48, 64) else np.rot90(frame, -1))


@pytest.fixture(scope="module")
def reference() -> dict[tuple[str, str], list[np.ndarray]]:
    return {(name, loader): plain_decode(MEDIA / name, loader)
            for name in FIXTURES for loader in LOADERS}


def packets_and_frames(path: Path) -> tuple[list[av.Packet], list[av.VideoFrame], dict]:
    """Every non-empty packet, every decoded frame, and the stream's codec, tag and count."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets, frames = [], []
        for packet in container.demux(stream):
            if packet.size:
                packets.append(packet)
            frames += stream.decode(packet)
        codec = stream.codec_context
        about = {"codec": codec.name, "tag": codec.codec_tag, "declared": stream.frames}
        return packets, frames, about


# -- the fixtures are what they claim to be -------------------------------------------------------


def test_packed_fixture_has_packed_b_frames() -> None:
    packets, frames, about = packets_and_frames(MEDIA / "xvid_packed_bframes.avi")
    assert (about["codec"], about["tag"]) == ("mpeg4", "XVID")
    data = [bytes(p) for p in packets]
    assert re.search(rb"DivX\d+b\d+p", data[0])  # the 'p' that announces packed B-frames
    assert any(d.count(b"\x00\x00\x01\xb6") == 2 for d in data)  # two pictures in one packet
    assert sum(len(d) <= 8 for d in data) >= 20  # the not-coded placeholders
    pts = [p.pts for p in packets]
    assert pts != sorted(pts) and [f.pts for f in frames] != sorted(f.pts for f in frames)


def test_timestamp_fixtures_mislead() -> None:
    # B-frames: packets come in decoding order, frames in timestamp order.
    packets, frames, _ = packets_and_frames(MEDIA / "h264_bframes.mp4")
    assert [p.pts for p in packets] != sorted(p.pts for p in packets)
    assert [f.pts for f in frames] == sorted(f.pts for f in frames)
    # Variable frame rate.
    _, frames, _ = packets_and_frames(MEDIA / "vfr.mp4")
    assert len(set(np.diff([f.pts for f in frames]).tolist())) > 2
    # AVI stores no presentation timestamps: FFmpeg's guesses come out of order.
    _, frames, about = packets_and_frames(MEDIA / "h264_bframes.avi")
    assert about["codec"] == "h264"
    assert [f.pts for f in frames] != sorted(f.pts for f in frames)
    # Timestamps that jump back: frames 20-39 are stamped after frames 40-59.
    _, frames, _ = packets_and_frames(MEDIA / "pts_backward.mp4")
    stamps = [f.pts for f in frames]
    assert stamps[39] > stamps[40] and len(set(stamps)) == 60
    # Rotation in the display matrix.
    _, frames, _ = packets_and_frames(MEDIA / "rotated90.mp4")
    assert frames[0].rotation in (90, -90, 270)
    # A frame count that lies, to PyAV and to OpenCV.
    _, frames, about = packets_and_frames(MEDIA / "count_lies.avi")
    capture = cv2.VideoCapture(str(MEDIA / "count_lies.avi"))
    assert about["declared"] == capture.get(cv2.CAP_PROP_FRAME_COUNT) == 120
    assert len(frames) == 40
    capture.release()


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_plain_decode_shows_every_frame_in_order(name: str, reference: dict) -> None:
    # The reference itself is right: frame k shows k, with either library.
    count = FIXTURES[name][0]
    for loader in LOADERS:
        assert [upright_code(f) for f in reference[name, loader]] == list(range(count))


# -- both loaders return the frames of a plain sequential decode ----------------------------------


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_access_order_gives_the_sequential_frames(
    name: str, loader: str, reference: dict
) -> None:
    expected = reference[name, loader]
    n = FIXTURES[name][0]
    with open_frames(MEDIA / name, loader, cache_size=4) as source:
        assert len(source) == n
        assert (source.height, source.width) == expected[0].shape[:2]
        for i in range(n):  # forward
            assert np.array_equal(source[i], expected[i]), f"forward, frame {i}"
    with open_frames(MEDIA / name, loader, cache_size=4) as source:
        for i in range(n - 1, -1, -1):  # backward
            assert np.array_equal(source[i], expected[i]), f"backward, frame {i}"
    order = list(range(n))
    random.Random(n).shuffle(order)
    with open_frames(MEDIA / name, loader, cache_size=4) as source:
        for i in order:  # random
            assert np.array_equal(source[i], expected[i]), f"random, frame {i}"
    with open_frames(MEDIA / name, loader, cache_size=6, prefetch=True) as source:
        for i in order[: n // 2] + list(range(n)):  # random then forward, with prefetch
            assert np.array_equal(source[i], expected[i]), f"prefetch, frame {i}"


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_index_says_how_frames_are_recognised(name: str) -> None:
    index = _probe_video(MEDIA / name)
    assert index.num_frames == FIXTURES[name][0]
    assert (index.verified_by, index.key_kind) == FIXTURES[name][1]
    assert (index.reason == "") == (index.verified_by == "container")


@pytest.mark.parametrize("name", ["xvid_packed_bframes.avi", "h264_bframes.avi", "count_lies.avi"])
def test_position_keys_let_pyav_seek(name: str, reference: dict) -> None:
    # Frames found by packet position after a seek: random reads decode about a group of
    # pictures each (12 frames here), not the video from the start (n / 2 on average).
    n = FIXTURES[name][0]
    order = list(range(n))
    random.Random(0).shuffle(order)
    with open_frames(MEDIA / name, "pyav", cache_size=2) as source:
        for i in order:
            assert np.array_equal(source[i], reference[name, "pyav"][i])
        assert source._decoder.can_seek
        assert source.cache_info().decoded < n * 14


def test_keys_that_disagree_with_the_decoder_are_caught(reference: dict) -> None:
    # An index whose keys name the wrong frames (frames 40 and 41 swapped) must not return a
    # wrong frame: the count from the keyframe disagrees with the keys, the read is done again
    # from the beginning, and the source stops seeking.
    path = MEDIA / "h264_bframes.mp4"
    index = _probe_video(path)
    keys = index.keys.copy()
    keys[[40, 41]] = keys[[41, 40]]
    wrong = dataclasses.replace(index, keys=keys)
    for loader in LOADERS:
        with VideoSource(path, loader, wrong, cache_size=2, prefetch=False) as source:
            for i in (45, 20, 41, 40, 59, 3):
                assert np.array_equal(source[i], reference[path.name, loader][i]), f"frame {i}"
            if loader == "pyav":
                assert not source._decoder.can_seek


def test_the_tool_makes_every_fixture(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_test_videos", TOOL)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert set(tool.FIXTURES) == set(FIXTURES)
    tool.main(["--out", str(tmp_path)])
    for name, (count, _) in FIXTURES.items():
        with open_frames(tmp_path / name, "pyav", cache_size=4) as source:
            assert len(source) == count
            assert [upright_code(source[i]) for i in (count - 1, 0, count // 2)] == [
                count - 1, 0, count // 2
            ]
