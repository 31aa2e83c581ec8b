"""Progress of a batch on stderr: videos done, frames written, rate and time left.

On a terminal one bar line is redrawn after each video (failures are printed above it, so
they stay on screen); otherwise one log line per video. The time left is the wall time per
finished video so far times the videos left, so it includes the parallelism of the workers.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import IO

from sam3video.batch.job import FAILED, SKIPPED, VideoResult

__all__ = ["BatchProgress"]


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class BatchProgress:
    """Call `update` with each finished video's result, then `close`."""

    def __init__(
        self,
        total: int,
        *,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        enabled: bool = True,
    ) -> None:
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(tty if tty is not None else getattr(self.stream, "isatty", bool)())
        self.enabled = enabled
        self.done = self.failed = self.skipped = self.frames = 0
        self.start = time.perf_counter()
        self._drawn = False

    def update(self, result: VideoResult) -> None:
        self.done += 1
        self.frames += result.frames
        self.failed += result.status == FAILED
        self.skipped += result.status == SKIPPED
        if not self.enabled:
            return
        if self.tty:
            if result.status == FAILED:
                self._clear()
                self.stream.write(f"{result.id}: failed: {_error_text(result)}\n")
            self._clear()
            self.stream.write(self._bar())
            self._drawn = True
        else:
            self.stream.write(f"[{self.done}/{self.total}] {_line(result)} | {self._rates()}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")

    def _rates(self) -> str:
        elapsed = time.perf_counter() - self.start
        parts = [
            f"{self.frames} frames",
            f"{self.frames / elapsed:.1f} frames/s" if elapsed else "",
        ]
        left = self.total - self.done
        if left and self.done:
            parts.append(f"{_clock(elapsed / self.done * left)} left")
        return ", ".join(p for p in parts if p)

    def _bar(self) -> str:
        width = max(10, min(30, shutil.get_terminal_size((80, 20)).columns - 70))
        filled = round(width * self.done / max(self.total, 1))
        extra = [f"{self.failed} failed" if self.failed else "",
                 f"{self.skipped} skipped" if self.skipped else ""]  # fmt: skip
        notes = ", ".join(e for e in extra if e)
        return (
            f"videos {self.done}/{self.total} [{'#' * filled}{'.' * (width - filled)}]"
            + (f" {notes}" if notes else "")
            + f" | {self._rates()}"
        )


def _line(result: VideoResult) -> str:
    if result.status == FAILED:
        return f"{result.id}: failed: {_error_text(result)}"
    if result.status == SKIPPED:
        return f"{result.id}: skipped (already done)"
    return (
        f"{result.id}: {_plural(result.frames, 'frame')}, {_plural(result.objects, 'object')}, "
        f"{result.seconds:.1f} s"
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _error_text(result: VideoResult) -> str:
    error = result.error or {}
    return f"{error.get('type', 'error')}: {error.get('message', '')}"
