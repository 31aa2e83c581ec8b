"""`GrowingYtvisWriter`: the SA-Co/YTVIS JSON of a stream, whose length is not known ahead.

`sam3video.io.export.YtvisWriter` is made for a video of ``num_frames`` frames: it keeps a
fixed-size array of numbers per object. Here the room doubles whenever a frame past it is
written, and closing trims it to the last frame written, so the file's ``length`` and
``file_names`` are the frames the stream gave. Memory stays what the writer promises (numbers
only, about 60 bytes per object and frame; the masks are spooled to disk).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from sam3video.io.export import YtvisWriter

__all__ = ["GrowingYtvisWriter"]

# The writer's per-object arrays (`_Track` fields): values per frame and the "none" value.
_TRACK_FIELDS = (("offsets", 1, -1), ("scores", 1, math.nan), ("boxes", 4, 0.0), ("areas", 1, 0.0))


class GrowingYtvisWriter(YtvisWriter):
    """A `YtvisWriter` without ``num_frames``: it grows as frames are written."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        video_name: str,
        height: int,
        width: int,
        fps: float | None = None,
        text: str | None = None,
        room: int = 64,
    ) -> None:
        super().__init__(path, video_name, height, width, room, fps=fps, text=text)
        self._last = -1

    def write(self, frame_index: int, outputs: Mapping[int, Mapping[str, Any]]) -> None:
        if isinstance(frame_index, int) and frame_index >= self.num_frames:
            self._resize(max(frame_index + 1, 2 * self.num_frames))
        super().write(frame_index, outputs)
        self._last = max(self._last, frame_index)

    def close(self) -> None:
        if not self.closed and self._last >= 0:
            self._resize(self._last + 1)  # the file lists the frames the stream gave
        super().close()

    def _resize(self, num_frames: int) -> None:
        """Room for ``num_frames`` frames in every object's arrays (grown or trimmed)."""
        for track in self._tracks.values():
            for name, per_frame, none in _TRACK_FIELDS:
                values = getattr(track, name)
                size = per_frame * num_frames
                if len(values) < size:
                    values.extend([none] * (size - len(values)))
                else:
                    del values[size:]
        self.num_frames = num_frames
