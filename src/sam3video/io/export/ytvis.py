"""Exporting results: SA-Co/YTVIS JSON, indexed PNG masks and an overlay MP4.

The predictor streams one result per frame: ``frame_index`` and
``outputs = {obj_id: {"mask": bool (H, W), "score": float, "bbox": [x0, y0, x1, y1]}}`` at the
video's resolution, frames in any order (forward then backward for ``"both"``, so a frame may
come twice). Each writer here takes those results one frame at a time with
``writer.write(frame_index, outputs)``, keeps its memory bounded whatever the length of the
video, and is a context manager whose ``close()`` is idempotent.

Decisions
---------
All writers
  * A frame written twice replaces the first write for that frame: **the last write wins**,
    whole frame (an object of the first write that the second lacks is gone from that frame).
  * ``obj_id`` is an ``int`` (or numpy integer) ``>= 0``; ``mask`` is a 2-D array of the
    writer's ``(height, width)``, bool, or any dtype read as ``mask != 0``. The ``"bbox"`` field
    is not used: boxes are recomputed from the masks, so boxes, areas and masks always agree
    (they equal the product's boxes, which are its masks' boxes).
  * Writers create missing parent folders. An output path that cannot be created (a path
    under a file, a folder where a file is expected, no permission) raises
    `InvalidInputError` naming the path, when the writer is created.
  * ``close()`` also runs when the ``with`` block exits on an exception, ``KeyboardInterrupt``
    included, so the frames written so far are saved; the exception then propagates. Final
    files are written to a temporary file beside the target and renamed over it, so the
    target is either the complete previous file or the complete new one, never a partial one.
  * ``write()`` after ``close()`` raises `InvalidInputError`.

SA-Co / YTVIS JSON (`YtvisWriter`, `read_ytvis`, `decode_ytvis_masks`)
  * The file has the layout of the SA-Co/VEval ground-truth files (``info``, ``videos``,
    ``annotations``, ``categories``, ``video_np_pairs``), one video (``"id": 0``) and one
    category (``"id": 1``) whose ``name``, like each annotation's ``noun_phrase``, is the text
    prompt (``"object"`` when there is none, i.e. visual prompts only). ``file_names`` are
    ``"<video_name>/00000.jpg"``, ... (one per frame); ``fps`` is stored when known.
  * One annotation per object id that was present on at least one frame, in ascending id
    order, ``"id"`` = 1, 2, ... and ``"obj_id"`` = the predictor's id. Its ``segmentations``
    (COCO compressed RLE ``{"size": [H, W], "counts": str}``), ``bboxes`` (pixel
    ``[x, y, w, h]``, ``w = x1 - x0`` with ``x1`` exclusive, so a 1-pixel-wide mask has
    ``w = 1``) and ``areas`` (pixel counts) are lists of ``num_frames`` entries, ``null``
    where the object is absent **or its mask is empty** (the SA-Co convention for an object
    that is not visible). Coordinates and areas are written as floats, as in SA-Co files.
  * ``score`` is the **mean** of the object's per-frame scores over the frames where it was
    in ``outputs`` (empty masks included), which is how SAM 3's own evaluation turns
    per-frame scores into one track score; ``per_frame_scores`` keeps them (``null`` where
    absent). The ``annotations`` list alone is a valid SAM 3 prediction file
    (``video_id``, ``category_id``, ``score``, ``segmentations``, ``bboxes``, ``areas``).
  * Streaming: each ``write()`` encodes the masks to RLE at once and appends them to a
    JSON-lines spool file beside the output (``.<name>.*.spool.jsonl``); memory holds only
    numbers (spool offsets, scores, boxes, areas: about 60 bytes per object and frame). The
    final JSON is assembled on ``close()`` by reading the spool back object by object, then
    the spool is deleted.
  * `decode_ytvis_masks` decodes with pycocotools (compressed or uncompressed RLE, ``null``
    skipped) and returns every frame of the video (``{}`` where no object is visible), or the
    frames asked for with ``frames=``: all masks of a video are held in memory at once, so ask
    for a few frames of a long video. Object keys are ``"obj_id"`` when present, else the
    annotation ``"id"``.

Indexed PNGs (`PngWriter`, `read_png_masks`)
  * One 8-bit palette (``"P"``) PNG per written frame, named ``00000.png`` by frame index
    (``123456.png`` beyond five digits), with the DAVIS palette (the PASCAL VOC colour map).
  * **Pixel value = obj_id + 1**, 0 = background: SAM 3's object ids start at 0, so the plain
    id cannot be the pixel value. Ids 0..254 fit; a larger id raises `InvalidInputError`
    naming it (use the JSON export for more objects).
  * Overlapping masks (the product's masks normally do not overlap): **the higher id wins**.
  * Each PNG is written to a temporary name and renamed, so an interrupted run never leaves
    a truncated PNG. `read_png_masks` reads ``<digits>.png`` files (palette or grayscale) and
    returns ``{frame_index: {obj_id: mask}}`` with ``obj_id = pixel value - 1``.

Overlay video (`OverlayWriter`, `render_overlay`, `color_for_id`)
  * `render_overlay` blends each mask's colour into the frame (opacity 0.5; the higher id on
    top where masks overlap), draws its contour in full colour and labels it with
    ``"<id> <score>"`` on a box of its colour above its bounding box (inside when there is no
    room). Empty masks draw nothing.
  * `color_for_id` is the DAVIS palette entry of the PNG pixel value, ``obj_id % 255 + 1``,
    so the overlay and the PNGs show an object in the same colour, for every run.
  * `OverlayWriter` renders each frame as it arrives and keeps it as a JPEG (quality 95) in
    a temporary folder beside the output (last write wins); ``close()`` encodes the MP4 in
    frame order, so frames may arrive in any order while memory stays bounded. With
    ``source`` (a `FrameSource` or any sequence of RGB frames) the video has
    ``len(source)`` frames and frames without results are the plain source frames; without
    it, the video holds the written frames only, in frame order. No frame at all: no file.
  * Codec: H.264 (PyAV ``libx264``, crf 18, ``yuv420p``; ``yuv444p`` for odd sizes, which
    4:2:0 cannot hold, and which some players such as browsers do not play) when FFmpeg has
    it, else MPEG-4 Part 2 (``mpeg4``). The video has the source's size and ``fps``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import weakref
from array import array
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av
import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from sam3video import __version__
from sam3video.errors import (
    DecodeError,
    FrameIndexError,
    InvalidInputError,
    SourceNotFoundError,
    UnsupportedSourceError,
)

__all__ = [
    "DAVIS_PALETTE",
    "OverlayWriter",
    "PngWriter",
    "YtvisWriter",
    "color_for_id",
    "decode_ytvis_masks",
    "read_png_masks",
    "read_ytvis",
    "render_overlay",
]

MAX_PNG_ID = 254  # pixel value = id + 1 must fit in 8 bits


def _davis_palette() -> np.ndarray:
    """(256, 3) uint8: the PASCAL VOC / DAVIS colour map (bits of the index spread over RGB)."""
    index = np.arange(256)
    palette = np.zeros((256, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


DAVIS_PALETTE: np.ndarray = _davis_palette()
DAVIS_PALETTE.flags.writeable = False


# ----------------------------------------------------------------------------- validation


def _check_int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{field}: expected an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidInputError(f"{field}: expected an int >= {minimum}, got {int(value)}")
    return int(value)


def _check_frame_index(frame_index: Any, num_frames: int | None) -> int:
    bound = "" if num_frames is None else f" and < {num_frames}"
    if isinstance(frame_index, (bool, np.bool_)) or not isinstance(frame_index, (int, np.integer)):
        raise FrameIndexError(f"frame_index: expected an int >= 0{bound}, got {frame_index!r}")
    if frame_index < 0 or (num_frames is not None and frame_index >= num_frames):
        raise FrameIndexError(f"frame_index: expected an int >= 0{bound}, got {int(frame_index)}")
    return int(frame_index)


def _check_outputs(
    outputs: Any, height: int, width: int, need_score: bool
) -> list[tuple[int, np.ndarray, float | None]]:
    """``outputs`` -> ``[(obj_id, bool (H, W) mask, score or None)]`` in ascending id order."""
    if not isinstance(outputs, Mapping):
        raise InvalidInputError(
            f"outputs: expected a mapping obj_id -> {{'mask', 'score'}}, got "
            f"{type(outputs).__name__}"
        )
    items = []
    for obj_id, entry in outputs.items():
        obj_id = _check_int(obj_id, "outputs: obj_id", 0)
        if not isinstance(entry, Mapping) or "mask" not in entry:
            raise InvalidInputError(
                f"outputs[{obj_id}]: expected a mapping with a 'mask', got {entry!r:.80}"
            )
        mask = np.asarray(entry["mask"])
        if mask.shape != (height, width):
            raise InvalidInputError(
                f"outputs[{obj_id}]['mask']: expected shape ({height}, {width}), got "
                f"{tuple(mask.shape)}"
            )
        if mask.dtype != np.bool_:
            mask = mask != 0
        score = entry.get("score")
        if score is not None or need_score:
            if isinstance(score, (bool, np.bool_)) or not isinstance(
                score, (int, float, np.integer, np.floating)
            ):
                raise InvalidInputError(
                    f"outputs[{obj_id}]['score']: expected a finite float, got {score!r}"
                )
            score = float(score)
            if not math.isfinite(score):
                raise InvalidInputError(
                    f"outputs[{obj_id}]['score']: expected a finite float, got {score}"
                )
        items.append((obj_id, mask, score))
    items.sort(key=lambda item: item[0])
    return items


def _output_file(path: Any, field: str) -> Path:
    """Validated output file path whose parent folder exists (created if needed)."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInputError(f"{field}: expected a str or os.PathLike, got {path!r}")
    target = Path(os.fspath(path)).expanduser()
    if target.is_dir():
        raise InvalidInputError(f"{field}: expected a file path, got the folder {str(target)!r}")
    _make_folder(target.parent, field)
    return target


def _make_folder(folder: Path, field: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidInputError(
            f"{field}: cannot create the folder {str(folder)!r} ({error.strerror or error})"
        ) from error
    if not folder.is_dir():
        raise InvalidInputError(f"{field}: {str(folder)!r} exists and is not a folder")


def _temp_in(folder: Path, prefix: str, suffix: str, field: str) -> Path:
    """Create an empty temporary file in ``folder`` (same file system: atomic rename)."""
    try:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    except OSError as error:
        raise InvalidInputError(
            f"{field}: cannot write in the folder {str(folder)!r} ({error.strerror or error})"
        ) from error
    os.close(handle)
    os.chmod(name, 0o644)  # mkstemp creates 0600; results are ordinary readable files
    return Path(name)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# ----------------------------------------------------------------------------- YTVIS JSON


class _Track:
    """Per-frame numbers of one object; the RLEs themselves live in the spool file."""

    __slots__ = ("offsets", "scores", "boxes", "areas")

    def __init__(self, num_frames: int) -> None:
        self.offsets = array("q", [-1]) * num_frames  # spool offset of the RLE; -1: none
        self.scores = array("d", [math.nan]) * num_frames  # NaN: not in outputs
        self.boxes = array("d", [0.0]) * (4 * num_frames)
        self.areas = array("d", [0.0]) * num_frames

    def clear(self, t: int) -> None:
        self.offsets[t] = -1
        self.scores[t] = math.nan


class YtvisWriter:
    """Stream per-frame results into one SA-Co/YTVIS-style JSON file (see the module notes).

    Args:
        path: the JSON file to write (parent folders are created).
        video_name: the video's name (``videos[0].video_name`` and the ``file_names`` folder).
        height, width: frame size in pixels; every mask must have this shape.
        num_frames: number of frames of the video; frame indices are in ``[0, num_frames)``.
        fps: the video's frame rate, stored in ``videos[0]`` when given.
        text: the text prompt, stored as the category name and ``noun_phrase``.

    ``write(frame_index, outputs)`` records one frame (last write wins); ``close()`` writes
    the file (idempotent; also on leaving a ``with`` block, exceptions included).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        video_name: str,
        height: int,
        width: int,
        num_frames: int,
        fps: float | None = None,
        text: str | None = None,
    ) -> None:
        if not isinstance(video_name, str) or not video_name:
            raise InvalidInputError(f"video_name: expected a non-empty str, got {video_name!r}")
        self.height = _check_int(height, "height", 1)
        self.width = _check_int(width, "width", 1)
        self.num_frames = _check_int(num_frames, "num_frames", 1)
        if fps is not None and (
            isinstance(fps, bool)
            or not isinstance(fps, (int, float, np.integer, np.floating))
            or not math.isfinite(fps)
            or fps <= 0
        ):
            raise InvalidInputError(f"fps: expected None or a float > 0, got {fps!r}")
        if text is not None and not isinstance(text, str):
            raise InvalidInputError(f"text: expected None or a str, got {text!r}")
        self.path = _output_file(path, "path")
        self.video_name = video_name
        self.fps = None if fps is None else float(fps)
        self.text = text
        self._spool_path = _temp_in(self.path.parent, f".{self.path.name}.", ".spool.jsonl", "path")
        self._spool: IO[bytes] = open(self._spool_path, "w+b")  # noqa: SIM115 (closed in close)
        # Delete the spool even if close() is never called (the JSON is then not written).
        self._finalizer = weakref.finalize(self, _drop_spool, self._spool, self._spool_path)
        self._tracks: dict[int, _Track] = {}
        self._frame_ids: dict[int, tuple[int, ...]] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, frame_index: int, outputs: Mapping[int, Mapping[str, Any]]) -> None:
        """Record the results of one frame, replacing an earlier write of that frame.

        Args:
            frame_index: int in ``[0, num_frames)``.
            outputs: ``{obj_id: {"mask": bool (H, W), "score": float, ...}}``.
        """
        if self._closed:
            raise InvalidInputError(f"YtvisWriter({str(self.path)!r}): write() after close()")
        t = _check_frame_index(frame_index, self.num_frames)
        items = _check_outputs(outputs, self.height, self.width, need_score=True)
        records = []
        if items:
            # One encode call for all objects: (H, W, N) Fortran-ordered uint8.
            stack = np.asfortranarray(np.stack([mask for _, mask, _ in items], axis=-1), np.uint8)
            rles = mask_util.encode(stack)
            areas = mask_util.area(rles)
            boxes = mask_util.toBbox(rles)
            self._spool.seek(0, os.SEEK_END)
            for (obj_id, _, score), rle, area, box in zip(items, rles, areas, boxes):
                offset = -1
                if area > 0:
                    offset = self._spool.tell()
                    line = {
                        "frame_index": t,
                        "obj_id": obj_id,
                        "score": score,
                        "segmentation": {
                            "size": [self.height, self.width],
                            "counts": rle["counts"].decode("ascii"),
                        },
                    }
                    self._spool.write(json.dumps(line).encode("ascii") + b"\n")
                records.append((obj_id, offset, score, float(area), box))
        # The spool is written first, so an interrupt before this point changes nothing.
        for obj_id in self._frame_ids.pop(t, ()):
            self._tracks[obj_id].clear(t)
        for obj_id, offset, score, area, box in records:
            track = self._tracks.get(obj_id)
            if track is None:
                track = self._tracks[obj_id] = _Track(self.num_frames)
            track.offsets[t] = offset
            track.scores[t] = score
            track.areas[t] = area
            track.boxes[4 * t : 4 * t + 4] = array("d", (float(v) for v in box))
        self._frame_ids[t] = tuple(obj_id for obj_id, *_ in records)

    def close(self) -> None:
        """Write the JSON file (atomically) and delete the spool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        temp = None
        try:
            self._spool.flush()
            temp = _temp_in(self.path.parent, f".{self.path.name}.", ".tmp", "path")
            with open(temp, "w", encoding="utf-8") as out:
                self._write_json(out)
            os.replace(temp, self.path)
            temp = None
        finally:
            if temp is not None:
                _unlink(temp)
            self._finalizer()
            self._tracks.clear()
            self._frame_ids.clear()

    def __enter__(self) -> YtvisWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write_json(self, out: IO[str]) -> None:
        name = self.text if self.text is not None else "object"
        info = {
            "description": "sam3video predictions",
            "version": __version__,
            "date": date.today().isoformat(),
        }
        video: dict[str, Any] = {
            "id": 0,
            "video_name": self.video_name,
            "file_names": [f"{self.video_name}/{t:05d}.jpg" for t in range(self.num_frames)],
            "height": self.height,
            "width": self.width,
            "length": self.num_frames,
        }
        if self.fps is not None:
            video["fps"] = self.fps
        out.write('{"info": ' + json.dumps(info) + ', "videos": [' + json.dumps(video))
        out.write('], "annotations": [')
        count = 0
        for obj_id in sorted(self._tracks):
            track = self._tracks[obj_id]
            present = [s for s in track.scores if not math.isnan(s)]
            if not present:  # every frame that had it was rewritten without it
                continue
            count += 1
            head = {
                "id": count,
                "video_id": 0,
                "obj_id": obj_id,
                "category_id": 1,
                "noun_phrase": name,
                "iscrowd": 0,
                "height": self.height,
                "width": self.width,
                "score": sum(present) / len(present),
            }
            visible = [offset >= 0 for offset in track.offsets]
            bboxes = [
                list(track.boxes[4 * t : 4 * t + 4]) if v else None for t, v in enumerate(visible)
            ]
            areas = [track.areas[t] if v else None for t, v in enumerate(visible)]
            scores = [None if math.isnan(s) else s for s in track.scores]
            out.write(("," if count > 1 else "") + json.dumps(head)[:-1])
            out.write(', "bboxes": ' + json.dumps(bboxes))
            out.write(', "areas": ' + json.dumps(areas))
            out.write(', "per_frame_scores": ' + json.dumps(scores))
            out.write(', "segmentations": [')
            for t, offset in enumerate(track.offsets):
                if t:
                    out.write(", ")
                if offset < 0:
                    out.write("null")
                    continue
                self._spool.seek(offset)
                out.write(json.dumps(json.loads(self._spool.readline())["segmentation"]))
            out.write("]}")
        category = {"id": 1, "name": name}
        pair = {
            "id": 1,
            "video_id": 0,
            "category_id": 1,
            "noun_phrase": name,
            "num_masklets": count,
        }
        out.write('], "categories": [' + json.dumps(category) + "]")
        out.write(', "video_np_pairs": [' + json.dumps(pair) + "]}\n")


def _drop_spool(spool: IO[bytes], path: Path) -> None:
    spool.close()
    _unlink(path)


def read_ytvis(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a YTVIS / SA-Co JSON file (ours or SA-Co's) as a dict.

    Raises:
        SourceNotFoundError: no such file.
        DecodeError: the file is not valid JSON.
        UnsupportedSourceError: valid JSON without ``videos`` and ``annotations`` lists.
    """
    source = Path(os.fspath(path)).expanduser()
    if not source.is_file():
        raise SourceNotFoundError(f"YTVIS file {str(source)!r} does not exist or is not a file")
    try:
        with open(source, encoding="utf-8") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DecodeError(f"YTVIS file {str(source)!r} is not valid JSON ({error})") from error
    if not (
        isinstance(data, dict)
        and isinstance(data.get("videos"), list)
        and isinstance(data.get("annotations"), list)
    ):
        raise UnsupportedSourceError(
            f"YTVIS file {str(source)!r}: expected an object with 'videos' and 'annotations' "
            f"lists, got {type(data).__name__}"
            + (f" with keys {sorted(data)[:8]}" if isinstance(data, dict) else "")
        )
    return data


def decode_ytvis_masks(
    data: Mapping[str, Any], video_index: int = 0, *, frames: Iterable[int] | None = None
) -> dict[int, dict[int, np.ndarray]]:
    """Decode the masks of one video of a YTVIS / SA-Co dict (see the module notes).

    Args:
        data: a dict from `read_ytvis` (or ``json.load``).
        video_index: position of the video in ``data["videos"]``.
        frames: frame indices to decode; ``None``: every frame of the video.

    Returns:
        ``{frame_index: {obj_id: bool (H, W) mask}}`` in ascending frame order; a frame
        without visible objects maps to ``{}``.
    """
    videos = data.get("videos") if isinstance(data, Mapping) else None
    if not isinstance(videos, list):
        raise InvalidInputError("data: expected a YTVIS dict with a 'videos' list")
    index = _check_int(video_index, "video_index", 0)
    if index >= len(videos):
        raise InvalidInputError(
            f"video_index: expected an int < {len(videos)} (the number of videos), got {index}"
        )
    video = videos[index]
    annotations = [a for a in data.get("annotations", []) if a.get("video_id") == video["id"]]
    length = video.get("length")
    if length is None:
        length = len(video.get("file_names") or []) or max(
            (len(a["segmentations"]) for a in annotations), default=0
        )
    length = int(length)
    if frames is None:
        wanted = list(range(length))
    else:
        wanted = sorted({_check_frame_index(t, length) for t in frames})
    height, width = int(video["height"]), int(video["width"])
    result: dict[int, dict[int, np.ndarray]] = {t: {} for t in wanted}
    for annotation in annotations:
        obj_id = int(annotation.get("obj_id", annotation["id"]))
        segmentations = annotation["segmentations"]
        for t in wanted:
            segmentation = segmentations[t] if t < len(segmentations) else None
            if segmentation is None:
                continue
            rle = segmentation
            if isinstance(rle["counts"], list):  # uncompressed RLE
                rle = mask_util.frPyObjects(rle, *rle["size"])
            elif isinstance(rle["counts"], str):
                rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            mask = mask_util.decode(rle).astype(bool)
            if mask.shape != (height, width):
                raise UnsupportedSourceError(
                    f"annotation {annotation['id']}, frame {t}: expected a ({height}, {width}) "
                    f"mask, got {mask.shape}"
                )
            result[t][obj_id] = mask
    return result


# ----------------------------------------------------------------------------- PNG masks


def _label_map(items: Sequence[tuple[int, np.ndarray, Any]], height: int, width: int) -> np.ndarray:
    """int64 (H, W): position + 1 in ``items`` of the last (highest-id) mask covering a pixel."""
    if not items:
        return np.zeros((height, width), np.int64)
    stack = np.stack([mask for _, mask, _ in items])  # (N, H, W)
    last = len(items) - np.argmax(stack[::-1], axis=0)  # 1-based position of the last True
    return np.where(stack.any(axis=0), last, 0)


class PngWriter:
    """Write per-frame indexed PNG masks into ``folder`` (see the module notes).

    Pixel value = ``obj_id + 1`` (0 = background), DAVIS palette, file ``<frame:05d>.png``,
    the higher id wins on overlaps, ids above 254 raise `InvalidInputError`.
    """

    def __init__(self, folder: str | os.PathLike[str], height: int, width: int) -> None:
        if not isinstance(folder, (str, os.PathLike)):
            raise InvalidInputError(f"folder: expected a str or os.PathLike, got {folder!r}")
        self.folder = Path(os.fspath(folder)).expanduser()
        self.height = _check_int(height, "height", 1)
        self.width = _check_int(width, "width", 1)
        _make_folder(self.folder, "folder")
        _unlink(_temp_in(self.folder, ".", ".tmp", "folder"))  # fail now if not writable
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, frame_index: int, outputs: Mapping[int, Mapping[str, Any]]) -> Path:
        """Write ``<frame_index:05d>.png`` (replacing it); returns its path."""
        if self._closed:
            raise InvalidInputError(f"PngWriter({str(self.folder)!r}): write() after close()")
        t = _check_frame_index(frame_index, None)
        items = _check_outputs(outputs, self.height, self.width, need_score=False)
        for obj_id, _, _ in items:
            if obj_id > MAX_PNG_ID:
                raise InvalidInputError(
                    f"outputs: obj_id {obj_id} does not fit in an 8-bit PNG mask (pixel value "
                    f"= id + 1, ids 0..{MAX_PNG_ID}); use the JSON export for more objects"
                )
        values = np.array([0] + [obj_id + 1 for obj_id, _, _ in items], np.uint8)
        labels = values[_label_map(items, self.height, self.width)]
        image = Image.fromarray(labels)  # "L", turned into "P" by the palette
        image.putpalette(DAVIS_PALETTE.tobytes())
        target = self.folder / f"{t:05d}.png"
        temp = self.folder / f".{target.name}.tmp"
        try:
            image.save(temp, format="PNG")
            os.replace(temp, target)
        finally:
            _unlink(temp)
        return target

    def close(self) -> None:
        """Mark the writer closed (every PNG is already complete on disk). Idempotent."""
        self._closed = True

    def __enter__(self) -> PngWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_png_masks(folder: str | os.PathLike[str]) -> dict[int, dict[int, np.ndarray]]:
    """Read the ``<digits>.png`` masks of ``folder``.

    Returns:
        ``{frame_index: {obj_id: bool (H, W) mask}}`` in ascending frame order, with
        ``obj_id = pixel value - 1``; a PNG without objects maps to ``{}``.
    """
    source = Path(os.fspath(folder)).expanduser()
    if not source.exists():
        raise SourceNotFoundError(f"mask folder {str(source)!r} does not exist")
    if not source.is_dir():
        raise UnsupportedSourceError(f"mask folder {str(source)!r} is not a folder")
    files = sorted(
        (int(p.stem), p)
        for p in source.iterdir()
        if p.suffix.lower() == ".png" and p.stem.isdigit() and p.is_file()
    )
    result: dict[int, dict[int, np.ndarray]] = {}
    for t, file in files:
        try:
            with Image.open(file) as image:
                if image.mode not in ("P", "L"):
                    raise UnsupportedSourceError(
                        f"mask {str(file)!r}: expected a palette (P) or grayscale (L) PNG, got "
                        f"mode {image.mode!r}"
                    )
                labels = np.array(image)
        except OSError as error:
            raise DecodeError(f"mask {str(file)!r} cannot be read ({error})") from error
        values = np.unique(labels)
        result[t] = {int(v) - 1: labels == v for v in values[values > 0]}
    return result


# ----------------------------------------------------------------------------- overlay


def color_for_id(obj_id: int) -> tuple[int, int, int]:
    """RGB colour of an object: the DAVIS palette entry ``obj_id % 255 + 1``."""
    obj_id = _check_int(obj_id, "obj_id", 0)
    r, g, b = DAVIS_PALETTE[obj_id % 255 + 1]
    return int(r), int(g), int(b)


def render_overlay(
    frame_rgb: np.ndarray, outputs: Mapping[int, Mapping[str, Any]], alpha: float = 0.5
) -> np.ndarray:
    """Draw the masks, contours, ids and scores of one frame (see the module notes).

    Args:
        frame_rgb: uint8 (H, W, 3) RGB frame; not modified.
        outputs: ``{obj_id: {"mask": bool (H, W), "score": float (optional)}}``.
        alpha: opacity of the mask colours.

    Returns:
        A new uint8 (H, W, 3) RGB image.
    """
    frame = np.asarray(frame_rgb)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InvalidInputError(
            f"frame_rgb: expected a uint8 (H, W, 3) array, got {frame.dtype} {frame.shape}"
        )
    height, width = frame.shape[:2]
    items = _check_outputs(outputs, height, width, need_score=False)
    image = frame.copy()
    if not items:
        return image
    colors = np.array([(0, 0, 0)] + [color_for_id(obj_id) for obj_id, _, _ in items], np.float32)
    labels = _label_map(items, height, width)
    covered = labels > 0
    blended = (1.0 - alpha) * frame[covered] + alpha * colors[labels[covered]]
    image[covered] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)

    line = max(1, round(min(height, width) / 360))
    scale = max(0.3, min(height, width) / 800)
    thick = max(1, round(scale * 1.5))
    pad = max(1, round(3 * scale))
    for obj_id, mask, score in items:  # drawing, not a model forward
        if not mask.any():
            continue
        color = color_for_id(obj_id)
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(image, contours, -1, color, line, cv2.LINE_AA)
        text = f"{obj_id}" if score is None else f"{obj_id} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        box_h, box_w = th + base + 2 * pad, tw + 2 * pad
        x = int(min(max(xs[0], 0), max(width - box_w, 0)))
        y = int(ys[0]) - box_h
        if y < 0:  # no room above the mask: label inside its top edge
            y = int(min(ys[0], max(height - box_h, 0)))
        cv2.rectangle(image, (x, y), (x + box_w - 1, y + box_h - 1), color, cv2.FILLED)
        luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        ink = (0, 0, 0) if luma > 140 else (255, 255, 255)
        cv2.putText(
            image,
            text,
            (x + pad, y + pad + th),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            ink,
            thick,
            cv2.LINE_AA,
        )
    return image


def _pick_codec() -> str:
    try:
        av.codec.Codec("libx264", "w")
    except Exception:  # FFmpeg built without x264
        return "mpeg4"
    return "libx264"


class OverlayWriter:
    """Write an MP4 of the video with the results drawn on it (see the module notes).

    Args:
        path: the MP4 file to write (parent folders are created).
        fps: frame rate of the output (the source's).
        height, width: frame size in pixels.
        source: optional frames (a `FrameSource` or a sequence of uint8 (H, W, 3) RGB
            arrays): gives the frame count, the frames of ``write(t, outputs)`` called without
            ``frame``, and the plain frames of frames without results.

    ``write(frame_index, outputs, frame=None)`` renders one frame (last write wins);
    ``close()`` encodes the MP4 in frame order (idempotent; also on leaving a ``with`` block).
    """

    JPEG_QUALITY = 95

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        height: int,
        width: int,
        *,
        source: Sequence[np.ndarray] | None = None,
    ) -> None:
        if (
            isinstance(fps, bool)
            or not isinstance(fps, (int, float, np.integer, np.floating))
            or not math.isfinite(fps)
            or fps <= 0
        ):
            raise InvalidInputError(f"fps: expected a float > 0, got {fps!r}")
        self.height = _check_int(height, "height", 1)
        self.width = _check_int(width, "width", 1)
        if source is not None and not (
            hasattr(source, "__len__") and hasattr(source, "__getitem__")
        ):
            raise InvalidInputError(
                f"source: expected None or a sequence of frames, got {type(source).__name__}"
            )
        self.path = _output_file(path, "path")
        self.fps = float(fps)
        self.source = source
        try:
            self._folder = Path(
                tempfile.mkdtemp(
                    prefix=f".{self.path.name}.", suffix=".frames", dir=self.path.parent
                )
            )
        except OSError as error:
            raise InvalidInputError(
                f"path: cannot write in the folder {str(self.path.parent)!r} "
                f"({error.strerror or error})"
            ) from error
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._folder, True)
        self._written: set[int] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def write(
        self,
        frame_index: int,
        outputs: Mapping[int, Mapping[str, Any]],
        frame: np.ndarray | None = None,
    ) -> None:
        """Render one frame and keep it until ``close()``; replaces an earlier write.

        Args:
            frame_index: int >= 0 (and < ``len(source)`` with a source).
            outputs: ``{obj_id: {"mask": bool (H, W), "score": float}}``.
            frame: uint8 (H, W, 3) RGB; ``None``: ``source[frame_index]``.
        """
        if self._closed:
            raise InvalidInputError(f"OverlayWriter({str(self.path)!r}): write() after close()")
        t = _check_frame_index(frame_index, None if self.source is None else len(self.source))
        if frame is None:
            if self.source is None:
                raise InvalidInputError("frame: expected a uint8 (H, W, 3) array (no source given)")
            frame = self.source[t]
        frame = self._check_frame(frame, "frame")
        image = render_overlay(frame, outputs)
        _, data = cv2.imencode(
            ".jpg",
            cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, self.JPEG_QUALITY],
        )
        target = self._folder / f"{t:08d}.jpg"
        temp = self._folder / f".{t:08d}.tmp"
        try:
            temp.write_bytes(data.tobytes())
            os.replace(temp, target)
        finally:
            _unlink(temp)
        self._written.add(t)

    def close(self) -> None:
        """Encode the MP4 (atomically) from the kept frames and delete them. Idempotent."""
        if self._closed:
            return
        self._closed = True
        temp = None
        try:
            indices = sorted(self._written) if self.source is None else range(len(self.source))
            if len(indices) == 0:
                return
            temp = _temp_in(self.path.parent, f".{self.path.name}.", ".mp4", "path")
            self._encode(temp, indices)
            os.replace(temp, self.path)
            temp = None
        finally:
            if temp is not None:
                _unlink(temp)
            self._finalizer()

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_frame(self, frame: Any, field: str) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise InvalidInputError(
                f"{field}: expected a uint8 ({self.height}, {self.width}, 3) RGB array, got "
                f"{frame.dtype} {tuple(frame.shape)}"
            )
        return frame

    def _encode(self, file: Path, indices: Iterable[int]) -> None:
        codec = _pick_codec()
        odd = self.height % 2 or self.width % 2
        with av.open(str(file), "w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height = self.width, self.height
            if codec == "libx264":
                stream.pix_fmt = "yuv444p" if odd else "yuv420p"
                stream.options = {"crf": "18", "preset": "veryfast"}
            else:
                stream.pix_fmt = "yuv420p"
                stream.codec_context.qmax = 5  # keep text and contours sharp
            for t in indices:
                if t in self._written:
                    data = np.fromfile(self._folder / f"{t:08d}.jpg", np.uint8)
                    frame = av.VideoFrame.from_ndarray(
                        cv2.imdecode(data, cv2.IMREAD_COLOR), format="bgr24"
                    )
                else:
                    plain = self._check_frame(self.source[t], f"source[{t}]")
                    frame = av.VideoFrame.from_ndarray(plain, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
