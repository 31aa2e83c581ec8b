"""The batch manifest: one row per video, as JSON lines or CSV.

Columns (the names of the request API's ``add_prompt`` fields):

``video`` (required)
    a video file, frame folder or image; a relative path resolves against the manifest's
    folder.
``id``
    the output folder's name, ``DIR/<id>/`` (default: the video's file stem). Ids are unique,
    at most 200 characters, and cannot contain ``/`` or ``\\``, start with ``.`` or hold
    control characters.
``text``
    a noun phrase.
``frame_index``
    the frame the prompts are on (default 0).
``points``, ``point_labels``, ``bounding_boxes``, ``bounding_box_labels``
    exactly as in ``add_prompt``: points ``[[x, y], ...]`` in pixels with labels 1/0; boxes
    ``[[cx, cy, w, h], ...]`` normalized to [0, 1] with optional labels 1/0.

Each row needs a prompt: ``text``, ``bounding_boxes`` and/or ``points``. As in ``sam3video
track``, text and boxes form one concept prompt, points click one more object (a second pass).

JSON lines (``.jsonl``, ``.ndjson``, ``.json``): one object per line; blank lines are skipped.
CSV (``.csv``): a header row with the column names; a list-valued cell holds JSON
(``"[[320, 180]]"``); an empty cell is a missing value. Other extensions are read as JSON
lines when the first non-blank character is ``{``, else as CSV.

Every problem is a `ManifestError` naming the manifest, the line and the column: a line that
is not JSON, a missing ``video``, an unknown column (with the closest name), a value of the
wrong type, two rows with one id. Prompts are checked by the request API's own validation.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sam3video.errors import InvalidInputError
from sam3video.requests import parse_request

__all__ = ["COLUMNS", "ManifestError", "VideoJob", "read_manifest"]

COLUMNS = (
    "video",
    "id",
    "text",
    "frame_index",
    "points",
    "point_labels",
    "bounding_boxes",
    "bounding_box_labels",
)
_LIST_COLUMNS = ("points", "point_labels", "bounding_boxes", "bounding_box_labels")
_MAX_ID = 200


class ManifestError(InvalidInputError):
    """A manifest that cannot be read: the message names the file, the line and the column."""


@dataclass(frozen=True)
class VideoJob:
    """One manifest row, checked; ``video`` is an absolute path, ``line`` the row's line."""

    id: str
    video: str
    line: int
    text: str | None = None
    frame_index: int = 0
    points: list | None = None
    point_labels: list | None = None
    bounding_boxes: list | None = None
    bounding_box_labels: list | None = None

    def prompts(self) -> dict[str, Any]:
        """The prompt fields that are set (what the outputs depend on besides the video)."""
        fields = {"text": self.text, "frame_index": self.frame_index}
        fields.update({name: getattr(self, name) for name in _LIST_COLUMNS})
        return {k: v for k, v in fields.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoJob:
        return cls(**data)


def read_manifest(path: str | os.PathLike[str]) -> list[VideoJob]:
    """The rows of a JSON-lines or CSV manifest, checked (see the module notes).

    Raises:
        ManifestError: the file is missing, unreadable or holds a bad row.
    """
    source = Path(os.fspath(path)).expanduser()
    if not source.is_file():
        raise ManifestError(f"manifest {str(source)!r} does not exist or is not a file")
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"manifest {str(source)!r} cannot be read ({error})") from None
    rows = _csv_rows(text, source) if _is_csv(source, text) else _jsonl_rows(text, source)
    jobs: list[VideoJob] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        job = _job(row, line, source)
        if job.id in seen:
            raise ManifestError(
                f"{source.name} line {line}: id {job.id!r} is already the id of line "
                f"{seen[job.id]}; give one of them another 'id'"
            )
        seen[job.id] = line
        jobs.append(job)
    if not jobs:
        raise ManifestError(f"manifest {str(source)!r} has no rows")
    return jobs


# ----------------------------------------------------------------------------- formats


def _is_csv(source: Path, text: str) -> bool:
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return True
    if suffix in (".jsonl", ".ndjson", ".json"):
        return False
    return not text.lstrip().startswith("{")


def _jsonl_rows(text: str, source: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ManifestError(
                f"{source.name} line {line}: not valid JSON ({error.msg} at column {error.colno})"
            ) from None
        if not isinstance(row, dict):
            raise ManifestError(
                f"{source.name} line {line}: expected a JSON object, got {type(row).__name__}"
            )
        yield line, row


def _csv_rows(text: str, source: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    if not header:
        raise ManifestError(f"{source.name}: expected a header row naming the columns")
    reader.fieldnames = header
    for row in reader:
        line = reader.line_num
        if None in row:  # more cells than columns
            raise ManifestError(f"{source.name} line {line}: more cells than header columns")
        values: dict[str, Any] = {}
        for name, cell in row.items():
            cell = (cell or "").strip()
            if not cell:
                continue
            values[name] = _csv_value(name, cell, source, line)
        if values:
            yield line, values


def _csv_value(name: str, cell: str, source: Path, line: int) -> Any:
    if name in _LIST_COLUMNS:
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            raise ManifestError(
                f"{source.name} line {line}: column {name!r}: expected a JSON list such as "
                f"[[320, 180]], got {cell[:60]!r}"
            ) from None
    if name == "frame_index":
        try:
            return int(cell)
        except ValueError:
            raise ManifestError(
                f"{source.name} line {line}: column 'frame_index': expected an int >= 0, got "
                f"{cell[:60]!r}"
            ) from None
    return cell


# ----------------------------------------------------------------------------- one row


def _job(row: Mapping[str, Any], line: int, source: Path) -> VideoJob:
    where = f"{source.name} line {line}"
    unknown = [name for name in row if name not in COLUMNS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), COLUMNS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ManifestError(
            f"{where}: unknown column {unknown[0]!r}{hint}; expected some of {', '.join(COLUMNS)}"
        )
    video = row.get("video")
    if video is None:
        raise ManifestError(f"{where}: missing the required column 'video'")
    if not isinstance(video, str) or not video.strip():
        raise ManifestError(f"{where}: column 'video': expected a path, got {video!r:.60}")
    path = Path(video).expanduser()
    if not path.is_absolute():
        path = source.parent / path
    job_id = _check_id(row.get("id", path.stem), where)
    text = row.get("text")
    if isinstance(text, list) and (
        not text or not all(isinstance(t, str) and t.strip() for t in text)
    ):
        raise ManifestError(
            f"{where}: column 'text': expected a noun phrase or a non-empty list of them "
            "(several concepts in one pass), got an empty list or an empty phrase"
        )
    frame_index = row.get("frame_index", 0)
    job = VideoJob(
        id=job_id,
        video=str(path.resolve()),
        line=line,
        text=text,
        frame_index=frame_index,
        **{name: row.get(name) for name in _LIST_COLUMNS},
    )
    _check_prompts(job, where)
    return job


def _check_id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ManifestError(f"{where}: column 'id': expected a name, got {value!r:.60}")
    text = str(value)
    problem = None
    if not text.strip():
        problem = "it is empty"
    elif len(text) > _MAX_ID:
        problem = f"it is longer than {_MAX_ID} characters"
    elif "/" in text or "\\" in text:
        problem = "it contains a path separator"
    elif text.startswith("."):
        problem = "it starts with '.' (names starting with '.' are the batch's own)"
    elif any(ord(c) < 32 for c in text):
        problem = "it contains a control character"
    if problem:
        raise ManifestError(f"{where}: column 'id': {text[:60]!r} cannot name a folder: {problem}")
    return text


def _check_prompts(job: VideoJob, where: str) -> None:
    """The request API's checks, per pass as ``track`` sends them (concept, then clicks)."""
    if job.text is None and job.bounding_boxes is None and job.points is None:
        raise ManifestError(
            f"{where}: no prompt: expected 'text', 'bounding_boxes' and/or 'points'"
        )
    base = {"type": "add_prompt", "session_id": "manifest", "frame_index": job.frame_index}
    requests = []
    if job.text is not None or job.bounding_boxes is not None or job.bounding_box_labels:
        concept = dict(base)
        for name in ("text", "bounding_boxes", "bounding_box_labels"):
            if getattr(job, name) is not None:
                concept[name] = getattr(job, name)
        requests.append(concept)
    if job.points is not None or job.point_labels is not None:
        clicks = dict(base)
        for name in ("points", "point_labels"):
            if getattr(job, name) is not None:
                clicks[name] = getattr(job, name)
        requests.append(clicks)
    for request in requests:
        try:
            parse_request(request, stream=False)
        except InvalidInputError as error:
            raise ManifestError(f"{where}: {error}") from None
