"""Progress of ``sam3video track`` on stderr: a redrawn bar on a terminal, log lines otherwise.

Decisions
  * Frames count when they are *tracked*, not when the hotstart buffer releases them to the
    files (15 frames later), so the display moves from the first frame on (the caller
    reports what it knows with `Progress.advance_to`).
  * The speed and the time left are measured from the first tracked frame of a pass (the
    first frame pays for warm-up) and shown once `eta_after` more frames were tracked; before
    that the display says "estimating".
  * A run with a concept prompt and clicks has two passes; each has its own count and label
    ("pass 1 of 2: text", "pass 2 of 2: clicks"), so no count runs past the frames of a pass.
  * A stream followed without ``--max-frames`` has no total (``total=None``): the display
    shows the frames tracked and frames/s, without a bar, a percentage or a time left.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from typing import IO

__all__ = ["Progress", "clock", "plural"]

PROG = "sam3video"


def plural(count: int, noun: str, suffix: str = "s") -> str:
    """``"1 frame"``, ``"2 frames"``; ``plural(3, "PNG")`` -> ``"3 PNGs"``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}{suffix}"


def clock(seconds: float) -> str:
    """``"1:05"`` or ``"2:01:05"``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Frames tracked, objects, frames/s and time left on stderr.

    On a terminal (``tty``) one line is redrawn at most every 0.1 s; otherwise a log line is
    printed for the first frame, then every ``log_every`` seconds, and by `end_pass`.
    ``enabled=False`` prints nothing. `begin` starts a pass; `advance_to` / `update` report
    frames; `end_pass` shows the final numbers of a pass.
    """

    def __init__(
        self,
        total: int | None,
        *,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        enabled: bool = True,
        label: str = "tracking",
        log_every: float = 10.0,
        eta_after: int = 3,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(tty if tty is not None else getattr(self.stream, "isatty", bool)())
        self.enabled = enabled
        self.log_every = log_every
        self.eta_after = eta_after
        self.objects = 0
        self._drawn = False
        self.total: int | None = None  # None: open-ended (a stream)
        self.begin(label, total)

    def begin(self, label: str | None = None, total: int | None = None) -> None:
        """Start a pass: the count restarts at 0 (and the clock at its first frame)."""
        if label is not None:
            self.label = label
        if total is not None:
            self.total = max(int(total), 0)
        if self._drawn:  # keep the finished bar of the previous pass
            self.stream.write("\n")
            self._drawn = False
        self.done = 0
        self._first: tuple[float, int] | None = None  # (time, frames) at the first frame
        self._last_draw = -math.inf
        self._logged = 0  # the count of the last log line

    def update(self, frames: int = 1, objects: int | None = None, label: str | None = None) -> None:
        """``frames`` more frames were tracked."""
        if label is not None:
            self.label = label
        self.advance_to(self.done + frames, objects)

    def advance_to(self, done: int, objects: int | None = None) -> None:
        """``done`` frames of this pass were tracked (a count never goes back)."""
        if objects is not None:
            self.objects = objects
        now = time.perf_counter()
        if done > self.done:
            if self._first is None:
                self._first = (now, done)
            self.done = done
        elif objects is None:
            return
        if not self.enabled or self.done == 0:
            return
        if self.tty:
            if self.done >= (self.total or math.inf) or now - self._last_draw >= 0.1:
                self._draw_bar()
                self._last_draw = now
        elif self.done != self._logged and (
            self._logged == 0 or now - self._last_draw >= self.log_every
        ):
            self._log_line()
            self._logged, self._last_draw = self.done, now

    def end_pass(self) -> None:
        """The pass is over (every frame released): show its final numbers."""
        if not self.enabled or self.done == 0:
            return
        if self.tty:
            self._draw_bar()
        else:
            self._log_line()
            self._logged = self.done

    @property
    def rate(self) -> float | None:
        """Frames/s since the first frame, once `eta_after` frames followed it; else None."""
        if self._first is None:
            return None
        start, frames = self._first
        elapsed = time.perf_counter() - start
        counted = self.done - frames
        if counted < self.eta_after or elapsed <= 0:
            return None
        return counted / elapsed

    def _numbers(self) -> tuple[str, str]:
        rate = self.rate
        objects = plural(self.objects, "object")
        if self.total is None:  # open-ended: no time left to tell
            return objects if rate is None else f"{objects}, {rate:.2f} frames/s", ""
        if rate is None:
            return objects, "estimating time left"
        left = (self.total - self.done) / rate if self.total > self.done else 0.0
        return f"{objects}, {rate:.2f} frames/s", f"{clock(left)} left"

    def _draw_bar(self) -> None:
        stats, left = self._numbers()
        if self.total is None:
            self._draw(f"{self.label} {plural(self.done, 'frame')} | {stats}")
            return
        total = max(self.total, self.done, 1)
        count = f"{self.done}/{total}"
        tail = f" {100 * self.done / total:3.0f}% | {stats} | {left}"
        columns = shutil.get_terminal_size((80, 24)).columns
        width = max(columns - len(self.label) - len(count) - len(tail) - 5, 0)
        bar = ""
        if width >= 5:
            filled = int(width * self.done / total)
            bar = " [" + "#" * filled + "." * (width - filled) + "]"
        self._draw(f"{self.label} {count}{bar}{tail}")

    def _draw(self, line: str) -> None:
        columns = shutil.get_terminal_size((80, 24)).columns
        self.stream.write("\r" + line[: columns - 1] + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def _log_line(self) -> None:
        stats, left = self._numbers()
        if self.total is None:
            self.stream.write(f"{PROG}: {self.label} {plural(self.done, 'frame')}, {stats}\n")
            self.stream.flush()
            return
        total = max(self.total, self.done, 1)
        self.stream.write(
            f"{PROG}: {self.label} {self.done}/{plural(total, 'frame')} "
            f"({100 * self.done / total:.0f}%), {stats}, {left}\n"
        )
        self.stream.flush()

    def close(self) -> None:
        """End the display (a newline after a bar)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
