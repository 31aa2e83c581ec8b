"""Exports: SA-Co/YTVIS JSON, indexed PNG masks and the overlay MP4 (`sam3video.io.export`)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from _manifest import FIXTURES
from _media import coded_frame, read_code, write_video
from PIL import Image
from pycocotools import mask as mask_util

from sam3video.errors import (
    DecodeError,
    FrameIndexError,
    InvalidInputError,
    SourceNotFoundError,
    UnsupportedSourceError,
)
from sam3video.io import export, open_frames
from sam3video.io.export import (
    DAVIS_PALETTE,
    OverlayWriter,
    PngWriter,
    YtvisWriter,
    color_for_id,
    decode_ytvis_masks,
    labels,
    read_png_masks,
    read_ytvis,
    render_overlay,
)

H, W, T = 64, 96, 20
# Meta's SA-Co/VEval toy ground truth (one 146-frame 720x1280 video, 33 masklets) with the
# masks of frames 0 and 40 kept (null elsewhere) and the categories it uses: a real file of
# the format users exchange, cut to 8 kB gzipped.
TOY = FIXTURES / "toy_saco_veval_sav_test_gt.json.gz"


def ellipse(t: int, obj_id: int) -> np.ndarray:
    """A moving ellipse in the lower part of the frame (the frame code stays visible above)."""
    y, x = np.mgrid[0:H, 0:W]
    cx, cy = 12 + 3 * t + 20 * (obj_id % 3), 44 + (obj_id % 2) * 6
    return ((x - cx) / (6 + obj_id % 4)) ** 2 + ((y - cy) / 7) ** 2 <= 1


def frame_outputs(t: int, ids: tuple[int, ...] = (0, 1, 4), shift: float = 0.0) -> dict:
    return {
        i: {"mask": ellipse(t, i), "score": 0.25 + 0.05 * i + 0.01 * t + shift, "bbox": None}
        for i in ids
        if (t + i) % 7 != 3  # every object misses some frames
    }


def xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() + 1 - xs.min()),
        float(ys.max() + 1 - ys.min()),
    ]


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ----------------------------------------------------------------------------- JSON


def test_ytvis_round_trip_out_of_order_and_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "pred.json"
    order = list(range(10, T)) + list(range(10, -1, -1))  # forward, then backward from 10
    expected: dict[int, dict] = {}
    with YtvisWriter(path, "clip", H, W, T, fps=25.0, text="a fish") as writer:
        writer.write(5, frame_outputs(5, ids=(0, 1, 4, 9), shift=0.5))  # replaced below
        for t in order:
            outputs = frame_outputs(t)
            if t == 12:
                outputs[4] = {"mask": np.zeros((H, W), bool), "score": 0.9}  # present, not visible
            writer.write(t, outputs)
            expected[t] = outputs  # last write wins
        assert leftovers(path.parent, set()) != []  # the spool exists while writing
    assert leftovers(path.parent, {"pred.json"}) == []  # spool and temp file removed

    data = read_ytvis(path)
    video = data["videos"][0]
    assert video["length"] == T and video["height"] == H and video["width"] == W
    assert video["fps"] == 25.0 and len(video["file_names"]) == T
    assert data["categories"] == [{"id": 1, "name": "a fish"}]
    annotations = data["annotations"]
    assert [a["obj_id"] for a in annotations] == [0, 1, 4]  # id 9 only in the replaced write
    assert data["video_np_pairs"][0]["num_masklets"] == 3

    for ann in annotations:
        obj_id = ann["obj_id"]
        assert ann["noun_phrase"] == "a fish" and ann["category_id"] == 1
        assert len(ann["segmentations"]) == len(ann["bboxes"]) == len(ann["areas"]) == T
        scores = [expected[t][obj_id]["score"] for t in range(T) if obj_id in expected[t]]
        assert ann["score"] == pytest.approx(np.mean(scores), abs=1e-12)
        for t in range(T):
            entry = expected[t].get(obj_id)
            assert ann["per_frame_scores"][t] == (None if entry is None else entry["score"])
            if entry is None or not entry["mask"].any():
                assert ann["segmentations"][t] is None and ann["bboxes"][t] is None
                assert ann["areas"][t] is None
                continue
            rle = ann["segmentations"][t]
            assert rle["size"] == [H, W]
            assert ann["areas"][t] == float(entry["mask"].sum())
            assert ann["bboxes"][t] == xywh(entry["mask"])
            coco = {"size": rle["size"], "counts": rle["counts"].encode()}
            assert list(mask_util.toBbox(coco)) == ann["bboxes"][t]

    masks = decode_ytvis_masks(data)
    assert sorted(masks) == list(range(T))
    for t in range(T):
        visible = {i: e["mask"] for i, e in expected[t].items() if e["mask"].any()}
        assert sorted(masks[t]) == sorted(visible)
        for obj_id, mask in visible.items():
            assert masks[t][obj_id].dtype == bool and masks[t][obj_id].shape == (H, W)
            np.testing.assert_array_equal(masks[t][obj_id], mask)
    assert sorted(decode_ytvis_masks(data, frames=[3, 1])) == [1, 3]


def test_ytvis_rewrite_removes_object_and_no_text(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    with YtvisWriter(path, "v", H, W, 4) as writer:
        writer.write(1, frame_outputs(1, ids=(2, 3)))
        writer.write(1, frame_outputs(1, ids=(3,)))
    data = read_ytvis(path)
    assert [a["obj_id"] for a in data["annotations"]] == [3]
    assert data["categories"][0]["name"] == "object" and "fps" not in data["videos"][0]


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_ytvis_interrupted_leaves_readable_json(tmp_path: Path, error: type) -> None:
    path = tmp_path / "pred.json"
    with pytest.raises(error), YtvisWriter(path, "v", H, W, T, text="x") as writer:
        for t in range(3):
            writer.write(t, frame_outputs(t))
        raise error("stop")
    masks = decode_ytvis_masks(read_ytvis(path))
    for t in range(T):
        want = frame_outputs(t) if t < 3 else {}
        assert sorted(masks[t]) == sorted(want)
        for obj_id, entry in want.items():
            np.testing.assert_array_equal(masks[t][obj_id], entry["mask"])
    assert leftovers(tmp_path, {"pred.json"}) == []
    writer.close()  # idempotent: the file is not rewritten
    assert read_ytvis(path)["annotations"]
    with pytest.raises(InvalidInputError, match="after close"):
        writer.write(0, {})


def test_ytvis_empty(tmp_path: Path) -> None:
    with YtvisWriter(tmp_path / "none.json", "v", H, W, 5):
        pass
    with YtvisWriter(tmp_path / "empty.json", "v", H, W, 5) as writer:
        for t in range(5):
            writer.write(t, {})
    for name in ("none.json", "empty.json"):
        data = read_ytvis(tmp_path / name)
        assert data["annotations"] == [] and data["video_np_pairs"][0]["num_masklets"] == 0
        assert decode_ytvis_masks(data) == {t: {} for t in range(5)}


def test_ytvis_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InvalidInputError, match="file.txt"):
        YtvisWriter(blocker / "sub" / "p.json", "v", H, W, T)
    with pytest.raises(InvalidInputError, match="folder"):
        YtvisWriter(tmp_path, "v", H, W, T)
    with pytest.raises(InvalidInputError, match="num_frames"):
        YtvisWriter(tmp_path / "p.json", "v", H, W, 0)
    with YtvisWriter(tmp_path / "p.json", "v", H, W, T) as writer:
        with pytest.raises(FrameIndexError, match=f"< {T}, got {T}"):
            writer.write(T, {})
        with pytest.raises(FrameIndexError):
            writer.write(-1, {})
        with pytest.raises(
            InvalidInputError, match=r"outputs\[2\]\['mask'\].*\(64, 96\).*\(64, 95\)"
        ):
            writer.write(0, {2: {"mask": np.zeros((H, W - 1), bool), "score": 0.5}})
        with pytest.raises(InvalidInputError, match=r"outputs\[2\]\['score'\]"):
            writer.write(0, {2: {"mask": np.zeros((H, W), bool), "score": float("nan")}})
        with pytest.raises(InvalidInputError, match="obj_id"):
            writer.write(0, {-1: {"mask": np.zeros((H, W), bool), "score": 0.5}})
        writer.write(1, frame_outputs(1))  # still usable after rejected writes
    assert len(read_ytvis(tmp_path / "p.json")["annotations"]) == 3

    with pytest.raises(SourceNotFoundError):
        read_ytvis(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DecodeError, match="bad.json"):
        read_ytvis(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(UnsupportedSourceError, match="videos"):
        read_ytvis(tmp_path / "list.json")


def test_decode_saco_toy_file(tmp_path: Path) -> None:
    path = tmp_path / TOY.stem
    path.write_bytes(gzip.decompress(TOY.read_bytes()))
    data = read_ytvis(path)
    video = data["videos"][0]
    frames = [0, 40]
    masks = decode_ytvis_masks(data, frames=frames)
    assert sorted(masks) == frames
    checked = 0
    for ann in data["annotations"]:
        for t in frames:
            if ann["segmentations"][t] is None:
                assert ann["id"] not in masks[t]
                continue
            mask = masks[t][ann["id"]]  # no "obj_id": keyed by annotation id
            assert mask.shape == (video["height"], video["width"])
            assert mask.sum() == ann["areas"][t]
            assert xywh(mask) == ann["bboxes"][t]
            checked += 1
    assert checked > 5


# ----------------------------------------------------------------------------- PNG

PNG_IDS = (0, 1, 2)  # non-overlapping masks, as the product's


def test_png_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "masks"
    with PngWriter(folder, H, W) as writer:
        writer.write(7, frame_outputs(7, ids=(0, 1, 2, 5)))  # replaced below
        for t in [3, 2, 1, 0, 4, 5, 7]:
            writer.write(t, frame_outputs(t, ids=PNG_IDS))
        writer.write(6, {})
    assert sorted(p.name for p in folder.iterdir()) == [f"{t:05d}.png" for t in range(8)]
    image = Image.open(folder / "00001.png")
    assert image.mode == "P" and image.size == (W, H)
    assert image.getpalette()[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
    labels = np.array(image)
    assert set(np.unique(labels)) == {0} | {
        i + 1 for i in frame_outputs(1, ids=PNG_IDS)
    }  # value = id + 1

    masks = read_png_masks(folder)
    assert sorted(masks) == list(range(8)) and masks[6] == {}
    for t in [0, 1, 2, 3, 4, 5, 7]:
        want = frame_outputs(t, ids=PNG_IDS)
        assert sorted(masks[t]) == sorted(want)
        for obj_id, entry in want.items():
            np.testing.assert_array_equal(masks[t][obj_id], entry["mask"])


def test_png_overlap_ids_and_errors(tmp_path: Path) -> None:
    low, high = np.zeros((H, W), bool), np.zeros((H, W), bool)
    low[10:30, 10:30] = True
    high[20:40, 20:40] = True
    with PngWriter(tmp_path, H, W) as writer:
        writer.write(0, {254: {"mask": high}, 3: {"mask": low}})  # ids out of order
        with pytest.raises(InvalidInputError, match="obj_id 255"):
            writer.write(1, {255: {"mask": low}})
        with pytest.raises(InvalidInputError, match="mask"):
            writer.write(1, {2: {"mask": np.zeros((W, H), bool)}})
        with pytest.raises(FrameIndexError):
            writer.write(-2, {})
    masks = read_png_masks(tmp_path)
    assert sorted(masks) == [0]  # rejected writes left nothing behind
    np.testing.assert_array_equal(masks[0][254], high)  # the higher id wins
    np.testing.assert_array_equal(masks[0][3], low & ~high)

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InvalidInputError, match="file.txt"):
        PngWriter(blocker / "masks", H, W)
    with pytest.raises(InvalidInputError, match="file.txt"):
        PngWriter(blocker, H, W)
    with pytest.raises(SourceNotFoundError):
        read_png_masks(tmp_path / "missing")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "00009.png")
    with pytest.raises(UnsupportedSourceError, match="00009.png"):
        read_png_masks(tmp_path)


# ----------------------------------------------------------------------------- overlay


def test_color_for_id() -> None:
    assert color_for_id(0) == (128, 0, 0) and color_for_id(1) == (0, 128, 0)
    assert color_for_id(254) == tuple(DAVIS_PALETTE[255])
    assert color_for_id(255) == color_for_id(0)  # the palette cycles
    assert len({color_for_id(i) for i in range(40)}) == 40
    assert color_for_id(np.int64(7)) == color_for_id(7)
    with pytest.raises(InvalidInputError, match="obj_id"):
        color_for_id(-1)


def test_render_overlay() -> None:
    h, w = 120, 200
    frame = coded_frame(3, h, w)
    original = frame.copy()
    square = np.zeros((h, w), bool)
    square[50:110, 20:100] = True
    above = np.zeros((h, w), bool)
    above[70:110, 60:140] = True
    outputs = {5: {"mask": above, "score": 0.5}, 2: {"mask": square}}
    image = render_overlay(frame, outputs)
    np.testing.assert_array_equal(frame, original)  # input untouched
    assert image.shape == (h, w, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[:, 150:], frame[:, 150:])  # far from every mask
    # The labels: "#2" and "#5 0.50" on filled boxes of the objects' colours, not overlapping.
    style = labels.label_style(h, w)
    sizes = [style.size("#2"), style.size("#5 0.50")]
    rects = labels.place_labels([(20, 50, 100, 110), (60, 70, 140, 110)], sizes, h, w)
    for (x0, y0, x1, y1), obj_id in zip(rects, (2, 5)):
        patch = image[y0:y1, x0:x1].reshape(-1, 3)
        assert (patch == color_for_id(obj_id)).all(axis=1).mean() > 0.6, obj_id
    inner = (slice(95, 105), slice(25, 55))  # inside id 2 only, away from contours and labels
    blend2 = 0.5 * frame[inner] + 0.5 * np.array(color_for_id(2))
    assert np.abs(image[inner] - blend2).max() <= 0.5
    overlap = (slice(95, 105), slice(70, 95))  # the higher id is on top
    blend5 = 0.5 * frame[overlap] + 0.5 * np.array(color_for_id(5))
    assert np.abs(image[overlap] - blend5).max() <= 0.5
    np.testing.assert_array_equal(render_overlay(frame, {}), frame)
    np.testing.assert_array_equal(render_overlay(frame, {1: {"mask": np.zeros((h, w))}}), frame)
    with pytest.raises(InvalidInputError, match="frame_rgb"):
        render_overlay(frame[..., 0], {})


def test_label_text_and_font_size() -> None:
    assert labels.label_text(2, 0.587) == "#2 0.59" and labels.label_text(7, None) == "#7"
    small, wide = labels.label_style(64, 96), labels.label_style(272, 640)
    assert small.size("#2 0.59")[1] < wide.size("#2 0.59")[1]
    (_, text_height), _ = cv2.getTextSize("#2 0.59", labels.FONT, wide.scale, wide.thickness)
    assert text_height >= 15, "legible on a 640x272 frame (it was ~10 px)"
    full_hd = labels.label_style(1080, 1920)
    assert 2.5 < full_hd.size("#2")[1] / wide.size("#2")[1] < 3.5  # scales with the frame


def test_labels_do_not_collide() -> None:
    h, w = 272, 640
    size = (90, 24)
    same = [(100, 100, 200, 200)] * 4  # four objects with one box: four different spots
    rects = labels.place_labels(same, [size] * 4, h, w)
    for i, a in enumerate(rects):
        assert 0 <= a[0] and a[2] <= w and 0 <= a[1] and a[3] <= h
        for b in rects[:i]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert rects[0] == (100, 76, 190, 100), "the first label sits above its box"
    top = labels.place_labels([(10, 0, 300, 50)], [size], h, w)
    assert top == [(10, 0, 100, 24)], "no room above: inside the top edge"
    corner = labels.place_labels([(600, 260, 640, 272)], [size], h, w)
    assert corner[0][2] <= w and corner[0][3] <= h, "kept inside the frame"
    crowded = labels.place_labels([(0, 0, 640, 272)] * 30, [size] * 30, h, w)
    assert len(crowded) == 30, "more labels than room: every label still gets a spot"


def test_overlay_video(tmp_path: Path) -> None:
    source = open_frames(write_video(tmp_path / "in.mp4", T, height=H, width=W))
    path = tmp_path / "out" / "overlay.mp4"
    order = list(range(10, T)) + list(range(10, -1, -1))
    with OverlayWriter(path, source.fps, H, W, source=source) as writer:
        writer.write(8, {})  # replaced below
        for t in order:
            if t % 5 == 4:  # frames without results
                continue
            writer.write(t, frame_outputs(t))
    assert leftovers(path.parent, {"overlay.mp4"}) == []
    with open_frames(path) as video:
        assert (len(video), video.height, video.width) == (T, H, W)
        assert video.fps == pytest.approx(source.fps)
        assert [read_code(video[t]) for t in range(T)] == list(range(T))  # in frame order
        for t in (4, 8, 9):  # each decoded frame is nearer its expected image than the other
            expected = source[t] if t % 5 == 4 else render_overlay(source[t], frame_outputs(t))
            other = render_overlay(source[t], frame_outputs(t)) if t % 5 == 4 else source[t]
            near = np.abs(video[t].astype(int) - expected).mean()
            far = np.abs(video[t].astype(int) - other).mean()
            assert near * 1.5 < far, (t, near, far)


def test_overlay_without_source_odd_size_and_interrupt(tmp_path: Path) -> None:
    h, w = 49, 67  # odd sizes are kept
    path = tmp_path / "o.mp4"
    with pytest.raises(KeyboardInterrupt), OverlayWriter(path, 10, h, w) as writer:
        for t in (4, 0, 2):
            writer.write(
                t, {1: {"mask": np.ones((h, w), bool), "score": 1.0}}, frame=coded_frame(t, h, w)
            )
        raise KeyboardInterrupt
    with open_frames(path) as video:
        assert (len(video), video.height, video.width) == (3, h, w)  # the written frames
    assert leftovers(tmp_path, {"o.mp4"}) == []
    writer.close()
    with pytest.raises(InvalidInputError, match="after close"):
        writer.write(0, {}, frame=coded_frame(0, h, w))

    with OverlayWriter(tmp_path / "none.mp4", 10, h, w) as writer:
        with pytest.raises(InvalidInputError, match="frame"):
            writer.write(0, {})  # no frame and no source
        with pytest.raises(InvalidInputError, match="frame"):
            writer.write(0, {}, frame=np.zeros((h, w + 1, 3), np.uint8))
    assert not (tmp_path / "none.mp4").exists()  # nothing written, no file

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InvalidInputError, match="file.txt"):
        OverlayWriter(blocker / "o.mp4", 10, h, w)
    with pytest.raises(InvalidInputError, match="fps"):
        OverlayWriter(tmp_path / "o2.mp4", 0, h, w)
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "o.mp4"]


def test_json_is_plain_json(tmp_path: Path) -> None:
    """The file parses with the standard library (no NaN/Infinity) and has one video."""
    with YtvisWriter(tmp_path / "p.json", "v", H, W, 3, fps=29.97) as writer:
        writer.write(0, frame_outputs(0))
    text = (tmp_path / "p.json").read_text()
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard {name}"))
    assert len(data["videos"]) == 1 and data["videos"][0]["fps"] == 29.97


@pytest.mark.parametrize("size", [(48, 64), (49, 67)])
def test_overlay_mpeg4_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size) -> None:
    """Without libx264 the MPEG-4 Part 2 encoder is used, at the same size and frame count."""
    monkeypatch.setattr(export.overlay, "_pick_codec", lambda: "mpeg4")
    h, w = size
    frames = [coded_frame(t, h, w) for t in range(6)]
    with OverlayWriter(tmp_path / "m.mp4", 12.5, h, w, source=frames) as writer:
        writer.write(2, {0: {"mask": np.ones((h, w), bool), "score": 0.5}})
    with av.open(str(tmp_path / "m.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    with open_frames(tmp_path / "m.mp4") as video:
        assert (len(video), video.height, video.width) == (6, h, w)
        assert video.fps == pytest.approx(12.5)
        assert [read_code(video[t]) for t in (0, 1, 3, 4, 5)] == [0, 1, 3, 4, 5]


def test_overlay_of_a_single_image_is_a_png(tmp_path: Path) -> None:
    h, w = 48, 64
    frame = coded_frame(0, h, w)
    mask = np.zeros((h, w), bool)
    mask[20:40, 10:30] = True
    path = tmp_path / "overlay.png"
    outputs = {3: {"mask": mask, "score": 0.9}}
    with OverlayWriter(path, 25.0, h, w, source=[frame]) as writer:
        writer.write(0, outputs)
    with Image.open(path) as image:  # lossless
        assert image.format == "PNG" and image.size == (w, h)
        np.testing.assert_array_equal(np.array(image), render_overlay(frame, outputs))
    assert leftovers(tmp_path, {"overlay.png"}) == []
    with pytest.raises(InvalidInputError, match="one frame"):
        OverlayWriter(tmp_path / "two.png", 25.0, h, w, source=[frame, frame])
    with OverlayWriter(tmp_path / "free.png", 25.0, h, w) as writer:
        writer.write(4, {}, frame=frame)
        with pytest.raises(InvalidInputError, match="one frame"):
            writer.write(5, {}, frame=frame)
