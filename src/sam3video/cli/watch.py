"""What the command needs from a session beyond the request API: the frames it has tracked
(ahead of the frames it releases) and, after Ctrl-C, the frames its hotstart buffer holds.

A full propagation holds each frame's outputs for 15 frames (SAM 3's hotstart buffer)
before yielding them, so the request stream alone shows nothing for the first 15 frames and
loses the held frames on Ctrl-C. This adapter is the one place that goes past the request
API, to the predictor's session (`Sam3VideoPredictor.get_session`: its `observers` and
`release_pending`); with a predictor that has none (a stand-in) it observes nothing and
flushes nothing, and progress counts released frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["TrackingWatch"]


class TrackingWatch:
    """Observe one session's propagation steps; flush its held frames on demand.

    Use as a context manager around the propagation; ``on_tracked(frame_index)`` is called
    after each frame that was computed (not fetched), in the thread that iterates the stream.
    """

    def __init__(self, predictor: Any, session_id: str, on_tracked: Callable[[int], None]) -> None:
        get_session = getattr(predictor, "get_session", None)
        self.session = get_session(session_id) if get_session is not None else None
        self.on_tracked = on_tracked
        self.tracked = 0  # frames computed since the last `restart`
        self._observers = getattr(self.session, "observers", None)

    @property
    def observes(self) -> bool:
        """Whether tracked frames are seen (else only released frames are)."""
        return isinstance(self._observers, list)

    def restart(self) -> None:
        """Count from 0 (a new pass)."""
        self.tracked = 0

    def _observe(self, event: Any) -> None:
        if getattr(event, "kind", None) == "fetch":
            return
        self.tracked += 1
        self.on_tracked(event.frame_index)

    def __enter__(self) -> TrackingWatch:
        if self.observes:
            self._observers.append(self._observe)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.observes and self._observe in self._observers:
            self._observers.remove(self._observe)

    def held_frames(self) -> list[tuple[int, dict]]:
        """The frames computed but not yet released, as ``(frame_index, outputs)`` with the
        hotstart removals known so far applied; ``[]`` when the session cannot say."""
        release = getattr(self.session, "release_pending", None)
        if release is None:
            return []
        with self.session.lock:
            return list(release())
