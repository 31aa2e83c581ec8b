"""SA-Co / YTVIS JSON: streaming writer, reader and mask decoder.

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
"""

from __future__ import annotations

import json
import math
import os
import weakref
from array import array
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import IO, Any

import numpy as np
from pycocotools import mask as mask_util

from sam3video import __version__
from sam3video.errors import (
    DecodeError,
    InvalidInputError,
    SourceNotFoundError,
    UnsupportedSourceError,
)
from sam3video.io.export.common import (
    check_frame_index,
    check_int,
    check_outputs,
    output_file,
    temp_in,
    unlink_quietly,
)

__all__ = ["YtvisWriter", "decode_ytvis_masks", "read_ytvis"]


class _Track:
    """Per-frame numbers of one object; the RLEs themselves live in the spool file."""

    __slots__ = ("offsets", "scores", "boxes", "areas", "concept")

    def __init__(self, num_frames: int) -> None:
        self.concept: str | None = None  # the noun phrase that found it (None: clicks)
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
        text: the text prompt, stored as the category name and ``noun_phrase``; a list for
            several concepts: one category each, and each annotation in the category of the
            concept that found its object (``outputs[obj]["concept"]``; clicked objects go to
            the first).

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
        text: str | list[str] | None = None,
    ) -> None:
        if not isinstance(video_name, str) or not video_name:
            raise InvalidInputError(f"video_name: expected a non-empty str, got {video_name!r}")
        self.height = check_int(height, "height", 1)
        self.width = check_int(width, "width", 1)
        self.num_frames = check_int(num_frames, "num_frames", 1)
        if fps is not None and (
            isinstance(fps, bool)
            or not isinstance(fps, (int, float, np.integer, np.floating))
            or not math.isfinite(fps)
            or fps <= 0
        ):
            raise InvalidInputError(f"fps: expected None or a float > 0, got {fps!r}")
        if text is not None and not (
            isinstance(text, str)
            or (isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text))
        ):
            raise InvalidInputError(
                f"text: expected None, a str or a list of str, got {text!r:.80}"
            )
        self.path = output_file(path, "path")
        self.video_name = video_name
        self.fps = None if fps is None else float(fps)
        self.text = text
        self._spool_path = temp_in(self.path.parent, f".{self.path.name}.", ".spool.jsonl", "path")
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
        t = check_frame_index(frame_index, self.num_frames)
        items = check_outputs(outputs, self.height, self.width, need_score=True)
        concepts = {int(k): v.get("concept") for k, v in outputs.items() if isinstance(v, Mapping)}
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
            track.concept = track.concept or concepts.get(obj_id)
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
            temp = temp_in(self.path.parent, f".{self.path.name}.", ".tmp", "path")
            with open(temp, "w", encoding="utf-8") as out:
                self._write_json(out)
            os.replace(temp, self.path)
            temp = None
        finally:
            if temp is not None:
                unlink_quietly(temp)
            self._finalizer()
            self._tracks.clear()
            self._frame_ids.clear()

    def __enter__(self) -> YtvisWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _categories(self) -> list[str]:
        """Category names: the prompt's texts, then any other concept an object came from."""
        names = [self.text] if isinstance(self.text, str) else list(self.text or [])
        for track in self._tracks.values():
            if track.concept is not None and track.concept not in names:
                names.append(track.concept)
        return names or ["object"]

    def _write_json(self, out: IO[str]) -> None:
        names = self._categories()
        category_of = {n: i + 1 for i, n in enumerate(names)}
        masklets = dict.fromkeys(names, 0)
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
            name = track.concept if track.concept in category_of else names[0]
            masklets[name] += 1
            head = {
                "id": count,
                "video_id": 0,
                "obj_id": obj_id,
                "category_id": category_of[name],
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
        categories = [{"id": category_of[n], "name": n} for n in names]
        pairs = [
            {
                "id": category_of[n],
                "video_id": 0,
                "category_id": category_of[n],
                "noun_phrase": n,
                "num_masklets": masklets[n],
            }
            for n in names
        ]
        out.write('], "categories": ' + json.dumps(categories))
        out.write(', "video_np_pairs": ' + json.dumps(pairs) + "}\n")


def _drop_spool(spool: IO[bytes], path: Path) -> None:
    spool.close()
    unlink_quietly(path)


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
    index = check_int(video_index, "video_index", 0)
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
        wanted = sorted({check_frame_index(t, length) for t in frames})
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
