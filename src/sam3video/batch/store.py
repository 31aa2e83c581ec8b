"""Where a batch's outputs go: a local folder, or any fsspec URL (``s3://...``, ``gs://...``).

Layout (both kinds): ``<out>/<video id>/`` holds what ``sam3video track`` writes
(``results.json``, ``masks/``, ``overlay.mp4``) plus the marker ``.sam3video-batch.json``
(the result's key, counts and time); ``<out>/summary.json`` and ``<out>/predictions.json``
are written at the end.

A video's outputs become visible complete or not at all:

  * local folder: they are written into ``<out>/.sam3video-partial/<id>.<token>/`` and, with
    the marker, renamed to ``<out>/<id>`` (an older result is moved aside first, then
    deleted). What an interrupted run (Ctrl-C, kill -9, a lost node) leaves in the partial
    folder is removed when the next run starts.
  * fsspec URL (object stores have no rename): they are written to a local temporary folder,
    the old marker is deleted, the files uploaded, and the marker uploaded last: a folder is
    complete exactly when its marker is there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sam3video.errors import InvalidInputError

__all__ = ["MARKER", "FsspecStore", "LocalStore", "open_store"]

MARKER = ".sam3video-batch.json"
PARTIAL = ".sam3video-partial"


def open_store(out: str) -> LocalStore | FsspecStore:
    """The store of ``--out``: a URL with a scheme (other than ``file://``) goes to fsspec."""
    if "://" in out and not out.startswith("file://"):
        return FsspecStore(out)
    return LocalStore(Path(out.removeprefix("file://")).expanduser())


class LocalStore:
    """Outputs in a local (or shared, NFS-like) folder, committed by rename."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.location = str(self.root)

    def prepare(self) -> None:
        """Create the folder; remove what an interrupted run left half-written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.root / PARTIAL, ignore_errors=True)
        except OSError as error:
            raise InvalidInputError(
                f"--out: cannot write in {self.location!r} ({error.strerror or error})"
            ) from None

    def finish(self) -> None:
        """Remove the (empty) staging folder at the end of a run."""
        with contextlib.suppress(OSError):
            (self.root / PARTIAL).rmdir()

    def marker(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.root / job_id / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def staging(self, job_id: str) -> Iterator[Path]:
        """A fresh folder to write one video's outputs into (removed unless committed)."""
        folder = self.root / PARTIAL / f"{job_id}.{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def commit(self, job_id: str, folder: Path, marker: dict[str, Any]) -> None:
        """Write the marker into ``folder`` and make it ``<out>/<id>``."""
        _write_json(folder / MARKER, marker)
        target = self.root / job_id
        old = folder.with_name(folder.name + ".old")
        if target.exists():
            os.replace(target, old)
        os.replace(folder, target)
        shutil.rmtree(old, ignore_errors=True)

    def read_bytes(self, job_id: str, name: str) -> bytes:
        return (self.root / job_id / name).read_bytes()

    @contextlib.contextmanager
    def open_output(self, name: str) -> Iterator[IO[str]]:
        """A top-level text file, written to a temporary name and renamed when complete."""
        handle, temp = tempfile.mkstemp(prefix=f".{name}.", dir=self.root)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                yield out
            os.chmod(temp, 0o644)
            os.replace(temp, self.root / name)
        finally:
            Path(temp).unlink(missing_ok=True)


class FsspecStore:
    """Outputs under an fsspec URL, committed by uploading the marker last."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError as error:
            raise InvalidInputError(
                f"--out {url!r}: a URL needs fsspec (pip install fsspec and the file system's "
                f"package, e.g. s3fs): {error}"
            ) from None
        self.location = url.rstrip("/")
        self.fs, self.base = fsspec.core.url_to_fs(self.location)

    def prepare(self) -> None:
        self.fs.makedirs(self.base, exist_ok=True)

    def finish(self) -> None:
        """Nothing to tidy: staging folders are local temporary folders."""

    def _path(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *parts])

    def marker(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self._path(job_id, MARKER)))
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def staging(self, job_id: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix=f"sam3video-{job_id[:40]}-") as folder:
            yield Path(folder)

    def commit(self, job_id: str, folder: Path, marker: dict[str, Any]) -> None:
        target = self._path(job_id)
        if self.fs.exists(target):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._path(job_id, MARKER))
            self.fs.rm(target, recursive=True)
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                remote = self._path(job_id, *path.relative_to(folder).parts)
                self.fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
                self.fs.put_file(str(path), remote)
        self.fs.pipe_file(self._path(job_id, MARKER), _json_bytes(marker))

    def read_bytes(self, job_id: str, name: str) -> bytes:
        return self.fs.cat_file(self._path(job_id, name))

    @contextlib.contextmanager
    def open_output(self, name: str) -> Iterator[IO[str]]:
        """A top-level text file, written locally and uploaded when complete."""
        with tempfile.TemporaryDirectory(prefix="sam3video-") as folder:
            local = Path(folder) / name
            with open(local, "w", encoding="utf-8") as out:
                yield out
            self.fs.put_file(str(local), self._path(name))


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=1) + "\n").encode("utf-8")


def _write_json(path: Path, data: Any) -> None:
    path.write_bytes(_json_bytes(data))
