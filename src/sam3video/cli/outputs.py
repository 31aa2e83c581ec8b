"""The output folder of ``sam3video track`` and the writers that fill it.

Decisions
  * ``--out`` is created with its missing parents; each folder this run created is
    remembered, and a run that fails before writing any file removes them again (no empty
    folder is left behind). A folder that existed before is never removed.
  * ``--out`` naming a file, or a path under a file, says so; other failures (permissions)
    say the folder cannot be written.
  * The writers are opened at the first result, so that a run failing before any result
    writes nothing. A frame is written while Ctrl-C is held back (`hold_sigint`), so no
    frame is half-written.
  * The exports remember which objects each written frame holds (the last write of a frame
    wins, as in the files), so the summary counts exactly what the files hold.
  * A stream (``stream=True``) has no frame count: ``results.json`` grows with it
    (`sam3video.cli.growing.GrowingYtvisWriter`) and lists the frames up to the last one
    written; the overlay holds the written frames, drawn on the frames the session still
    holds when each is written.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sam3video.cli.args import JSON_NAME, OVERLAY_IMAGE_NAME, OVERLAY_NAME, PNG_DIR, PROG
from sam3video.cli.progress import plural
from sam3video.errors import InvalidInputError

__all__ = ["Exports", "OutputFolder", "hold_sigint"]


class OutputFolder:
    """The ``--out`` folder: `create` makes it writable, `discard` undoes what it created."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()
        self.created: list[Path] = []  # outermost first

    def create(self) -> Path:
        """Create the folder (and missing parents) and check that files can be written in it.

        Raises:
            InvalidInputError: ``--out`` is a file, lies under a file, or is not writable.
        """
        out = self.path
        if out.exists() and not out.is_dir():
            raise InvalidInputError(
                f"--out: {str(out)!r} is a file, not a folder; choose a folder with --out DIR"
            )
        blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise InvalidInputError(
                f"--out: cannot create the folder {str(out)!r}: {str(blocker)!r} is a file; "
                "choose a folder with --out DIR"
            )
        missing = [p for p in (*reversed(out.parents), out) if not p.exists()]
        try:
            for folder in missing:
                folder.mkdir()
                self.created.append(folder)
            probe = out / f".{PROG}-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            self.discard()
            reason = error.strerror or str(error)
            raise InvalidInputError(
                f"--out: cannot write in the folder {str(out)!r} ({reason}); choose another "
                "folder with --out DIR"
            ) from None
        return out

    def discard(self) -> None:
        """Remove the folders `create` made, innermost first, as long as they are empty."""
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): keep it and its parents
                break
        self.created.clear()


@contextlib.contextmanager
def hold_sigint() -> Iterator[None]:
    """Delay Ctrl-C until the block ends, so that a frame is never half-written."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


class Exports:
    """The requested writers, opened at the first result and closed together.

    Args:
        out: the output folder.
        formats: ``ytvis``, ``png`` and/or ``overlay``.
        frames: the video's `FrameSource` (size, count, fps, frames of the overlay).
        text: the text prompt (the JSON's category name).
        still: the input is a single image: the overlay is a PNG.
        stream: the input is a stream of unknown length (see the module notes).
    """

    def __init__(
        self,
        out: Path,
        formats: Sequence[str],
        frames: Any,
        text: str | None,
        still: bool = False,
        stream: bool = False,
    ) -> None:
        self.out = out
        self.stream = stream
        self.formats = tuple(formats)
        self.frames = frames
        self.text = text
        self.overlay_name = OVERLAY_IMAGE_NAME if still else OVERLAY_NAME
        self.writers: list[Any] = []
        self.overlay: Any = None
        self.objects_of: dict[int, frozenset[int]] = {}  # frame -> ids with a non-empty mask
        self._frames_of: Counter[int] = Counter()  # obj_id -> frames holding it
        self.seconds = 0.0
        self._open = False

    @property
    def written(self) -> set[int]:
        """The frames written so far."""
        return set(self.objects_of)

    @property
    def objects(self) -> set[int]:
        """The ids of the objects the files hold (on at least one written frame)."""
        return {obj_id for obj_id, count in self._frames_of.items() if count > 0}

    def _start(self) -> None:
        from sam3video.cli.growing import GrowingYtvisWriter
        from sam3video.io.export import OverlayWriter, PngWriter, YtvisWriter

        frames = self.frames
        h, w, n = frames.height, frames.width, len(frames)
        self._open = True
        if "ytvis" in self.formats:
            name = Path(frames.path).stem or "video"
            path = self.out / JSON_NAME
            self.writers.append(
                GrowingYtvisWriter(path, name, h, w, fps=frames.fps, text=self.text)
                if self.stream
                else YtvisWriter(path, name, h, w, n, fps=frames.fps, text=self.text)
            )
        if "png" in self.formats:
            folder = self.out / PNG_DIR
            if folder.is_dir():  # a previous run's frames would mix with this run's
                for old in folder.glob("*.png"):
                    if old.stem.isdigit():
                        old.unlink()
            self.writers.append(PngWriter(folder, h, w))
        if "overlay" in self.formats:
            fps = frames.fps or 25.0
            self.overlay = OverlayWriter(self.out / self.overlay_name, fps, h, w, source=frames)
            self.writers.append(self.overlay)

    def write(self, frame_index: int, outputs: dict) -> None:
        """Write one frame's results to every writer (replacing an earlier write)."""
        start = time.perf_counter()
        with hold_sigint():
            if not self._open:
                self._start()
            for writer in self.writers:
                writer.write(frame_index, outputs)
            ids = frozenset(obj_id for obj_id, entry in outputs.items() if entry["mask"].any())
            self._frames_of.subtract(self.objects_of.get(frame_index, ()))
            self._frames_of.update(ids)
            self.objects_of[frame_index] = ids
        self.seconds += time.perf_counter() - start

    def close(self, complete: bool) -> None:
        """Close every writer; after an interruption the overlay holds the written frames
        only (encoding the rest of the video would delay stopping)."""
        if self.overlay is not None and (self.stream or not complete):
            self.overlay.source = None
        errors = []
        for writer in self.writers:
            try:
                writer.close()
            except Exception as error:  # close every writer, report the first failure
                errors.append(error)
        if errors:
            raise errors[0]

    def files(self) -> list[str]:
        """What is in the folder, in words: ``["results.json", "masks/ (7 PNGs)", ...]``."""
        names = []
        if "ytvis" in self.formats and (self.out / JSON_NAME).is_file():
            names.append(JSON_NAME)
        if "png" in self.formats and self._open:
            names.append(f"{PNG_DIR}/ ({plural(len(self.objects_of), 'PNG')})")
        if "overlay" in self.formats and (self.out / self.overlay_name).is_file():
            names.append(self.overlay_name)
        return names
