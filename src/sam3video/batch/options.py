"""What a batch run applies to every video, and the key that says whether a result is current.

A finished video's folder holds a marker with its **key**: a SHA-256 over the video's bytes
(every frame file's name and bytes for a frame folder), the row's prompts, the options that
change the results (model, checkpoint, dtype, loader, direction, max frames, formats) and the
sam3video version. A rerun skips a video whose marker has the same key, and runs it again when
anything in the key changed (the video was replaced, a prompt or an option changed). How it
runs (device, threads, workers, Ray) is not in the key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sam3video import __version__
from sam3video.batch.manifest import VideoJob

__all__ = ["BatchOptions", "job_key", "video_digest"]

_KEY_LAYOUT = 1  # bump when the outputs' layout changes
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BatchOptions:
    """The ``track`` options of a batch (same names and meanings as ``sam3video track``)."""

    model: str = "full"
    checkpoint: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    formats: tuple[str, ...] = ("ytvis",)
    direction: str = "both"
    max_frames: int | None = None
    loader: str = "cv2"
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchOptions:
        values = dict(data)
        values["formats"] = tuple(values.get("formats", ("ytvis",)))
        return cls(**values)

    def result_fields(self) -> dict[str, Any]:
        """The options the outputs depend on (the key's part)."""
        return {
            "model": self.model,
            "checkpoint": _file_identity(self.checkpoint),
            "dtype": self.dtype,
            "formats": list(self.formats),
            "direction": self.direction,
            "max_frames": self.max_frames,
            "loader": self.loader,
        }


def video_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a video file, or of a frame folder's file names and bytes.

    Raises:
        FileNotFoundError: the path does not exist.
    """
    source = Path(path)
    digest = hashlib.sha256()
    if source.is_dir():
        for item in sorted(p for p in source.iterdir() if p.is_file()):
            digest.update(item.name.encode("utf-8", "surrogateescape") + b"\0")
            _feed(digest, item)
    else:
        _feed(digest, source)
    return digest.hexdigest()


def job_key(job: VideoJob, options: BatchOptions, digest: str) -> str:
    """The key of one video's result (see the module notes)."""
    payload = {
        "layout": _KEY_LAYOUT,
        "sam3video": __version__,
        "video": digest,
        "prompts": job.prompts(),
        "options": options.result_fields(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _feed(digest: Any, path: Path) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


def _file_identity(path: str | None) -> Any:
    """A checkpoint by path, size and modification time (hashing gigabytes per video would
    cost more than it protects)."""
    if path is None:
        return None
    target = Path(path).expanduser()
    try:
        stat = target.stat()
    except OSError:
        return str(path)
    return [str(target.resolve()), stat.st_size, stat.st_mtime_ns]
