"""Where sessions read their video from: the media root and the server's upload folder.

A ``resource_path`` is relative to the media root, or absolute inside it. It must not contain
``..`` and its real path (symlinks followed) must stay inside the root: anything else is a
403, decided before the file system is asked whether the path exists, so a client learns
nothing about files outside the root. A frame folder counts as leaving the root when one of
its entries is a symlink pointing out.

Uploads are written under a server-owned temporary folder, one sub-folder per upload, removed
when its session closes.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path, PurePath
from typing import BinaryIO

from sam3video.errors import InvalidInputError, SourceNotFoundError, UnsupportedSourceError
from sam3video.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from sam3video.server.errors import ForbiddenPathError, PayloadTooLargeError

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK = 1 << 20


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_media_path(root: Path, resource_path: str, field: str = "resource_path") -> str:
    """The real path of ``resource_path`` under ``root`` (which must be a real path).

    Raises:
        ForbiddenPathError: ``..`` in the path, or a real path outside ``root``.
    """
    if "\x00" in resource_path:
        raise InvalidInputError(f"{field}: expected a path, got one with a NUL character")
    given = PurePath(resource_path)
    if ".." in given.parts:
        raise ForbiddenPathError(f"{field}: '..' is not allowed, got {resource_path!r}")
    candidate = Path(resource_path) if given.is_absolute() else root / given
    real = Path(os.path.realpath(candidate))
    if not _inside(real, root):
        raise ForbiddenPathError(f"{field}: {resource_path!r} is outside the media root")
    try:
        entries = list(os.scandir(real)) if real.is_dir() else []
    except OSError as exc:  # too long, unreadable: as if it were not there
        raise SourceNotFoundError(f"{field}: cannot read {resource_path!r}") from exc
    for entry in entries:
        if entry.is_symlink() and not _inside(Path(os.path.realpath(entry.path)), root):
            raise ForbiddenPathError(
                f"{field}: {resource_path!r} holds a link that leaves the media root"
            )
    return str(real)


def display_name(root: Path, real_path: str) -> str:
    """A path as clients know it: relative to the media root (never the server's layout)."""
    try:
        return str(Path(real_path).relative_to(root)) or "."
    except ValueError:
        return Path(real_path).name


def list_media(root: Path, limit: int = 1000) -> list[dict[str, str]]:
    """Videos, images and frame folders under the root (sorted, at most ``limit``), for the
    page's "open" list. Symlinks are not followed, so the list never leaves the root."""
    found: list[dict[str, str]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        images = [f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        if len(images) > 1:
            found.append({"path": display_name(root, folder), "kind": "frames"})
        for name in sorted(files):
            suffix = Path(name).suffix.lower()
            if suffix in VIDEO_EXTENSIONS or (suffix in IMAGE_EXTENSIONS and len(images) == 1):
                kind = "video" if suffix in VIDEO_EXTENSIONS else "image"
                found.append({"path": display_name(root, str(here / name)), "kind": kind})
        if len(found) >= limit:
            break
    return found[:limit]


class UploadStore:
    """A temporary folder holding uploaded videos, one sub-folder per upload."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sam3video-uploads-"))

    def save(self, source: BinaryIO, filename: str | None, max_bytes: int) -> Path:
        """Copy an uploaded file (at most ``max_bytes``) and return its path.

        Raises:
            UnsupportedSourceError: a name without a video or image extension.
            PayloadTooLargeError: more than ``max_bytes``.
        """
        name = _SAFE_NAME.sub("_", PurePath(filename or "").name).lstrip(".") or "upload"
        suffix = Path(name).suffix.lower()
        if suffix not in VIDEO_EXTENSIONS and suffix not in IMAGE_EXTENSIONS:
            known = ", ".join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)
            raise UnsupportedSourceError(
                f"file: expected a video or image file name ({known}), got {filename!r}"
            )
        folder = self.root / uuid.uuid4().hex
        folder.mkdir()
        target = folder / name
        written = 0
        try:
            with open(target, "wb") as out:
                while chunk := source.read(_CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise PayloadTooLargeError(
                            f"file: larger than the server's limit of {max_bytes} bytes"
                        )
                    out.write(chunk)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if written == 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise InvalidInputError("file: the uploaded file is empty")
        return target

    def remove(self, path: str | Path) -> None:
        """Delete one upload (the folder `save` made for it); paths elsewhere are ignored."""
        folder = Path(path).parent
        if folder.parent == self.root:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
