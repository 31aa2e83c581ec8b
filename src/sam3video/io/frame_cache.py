"""The memory of a frame source: a bounded LRU cache of decoded frames, and the prefetch thread
that fills it ahead of the reader."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sam3video.io.frame_source import FrameSource


class FrameCache:
    """Thread-safe LRU map frame index -> uint8 ``(H, W, 3)`` frame, at most ``capacity`` frames."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.peak = 0
        self.hits = 0
        self.misses = 0

    def get(self, index: int) -> np.ndarray | None:
        """Return the frame and mark it most recently used; counts a hit or a miss."""
        with self._lock:
            frame = self._frames.get(index)
            if frame is None:
                self.misses += 1
            else:
                self._frames.move_to_end(index)
                self.hits += 1
            return frame

    def peek(self, index: int) -> np.ndarray | None:
        """Return the frame without touching its recency or the counters."""
        with self._lock:
            return self._frames.get(index)

    def __contains__(self, index: int) -> bool:
        with self._lock:
            return index in self._frames

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def put(self, index: int, frame: np.ndarray) -> None:
        with self._lock:
            if index not in self._frames:
                # Evict before inserting so the cache never holds more than capacity frames.
                while len(self._frames) >= self.capacity:
                    self._frames.popitem(last=False)
            self._frames[index] = frame
            self._frames.move_to_end(index)
            self.peak = max(self.peak, len(self._frames))

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()


class Prefetcher:
    """One daemon thread that decodes a window ahead of the last read, in its direction.

    It holds the source weakly, so an abandoned source is still collected (and the thread ends).
    """

    def __init__(self, source: FrameSource) -> None:
        self._source = weakref.ref(source)
        self._cond = threading.Condition()
        self._request: tuple[int, int] | None = None
        self._generation = 0
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, name=f"sam3video-prefetch:{source.path.name}", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def request(self, index: int, direction: int) -> None:
        """Prefetch the window after (``direction`` 1) or before (-1) frame ``index``."""
        with self._cond:
            self._request = (index, direction)
            self._generation += 1
            self._cond.notify()

    def stop(self) -> None:
        """Stop the thread and wait for it (unless called from the thread itself)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._request is None and not self._stopped:
                    self._cond.wait(timeout=1.0)
                    if self._source() is None:
                        return
                if self._stopped:
                    return
                (index, direction), generation = self._request, self._generation
                self._request = None
            source = self._source()
            if source is None:
                return
            try:
                for step in range(1, source._window + 1):
                    j = index + direction * step
                    if self._stopped or self._generation != generation or not 0 <= j < len(source):
                        break
                    source._prefetch(j, direction)
            except Exception:  # noqa: BLE001 - the reader decodes the frame itself and raises
                pass
            del source
