"""The `Decoder` contract the two video backends share, and how a decoder names its frames.

A decoder names every frame it outputs with its frame index. Started from the beginning of
the file it simply counts: frame ``i`` *is* the ``i``-th frame out, whatever timestamps it
carries. After a seek it looks up the key of the frames coming out (see `video_index`) until
one names a frame at or after the keyframe it landed on, and counts from there. Either way
every key that comes out is checked against the count; a disagreement means the index cannot
locate frames in this file, so the decoder stops seeking, and a read that relied on a seek is
decoded again from the beginning.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sam3video.io.video_index import VideoIndex


class DecoderStopped(Exception):
    """The decoder ended before the wanted frame: end of stream, a packet it rejected, or
    (``retry``) a seek whose landing turned out not to be trustworthy."""

    def __init__(self, reason: str, *, retry: bool = False) -> None:
        super().__init__(reason)
        self.retry = retry


class Decoder:
    """A decoder positioned by frame index; subclasses feed `_name` with what each output
    frame's key says."""

    def __init__(self, index: VideoIndex) -> None:
        self._index = index
        self._next: int | None = None  # index of the next frame out, once located
        self._sought: int | None = None  # the frame a seek was for, until located
        self._landing = 0  # after a seek: the keyframe; frames before it are skipped
        self._located_by_key = False  # located after a seek (not counted from the start)
        self._keys_agree = True  # False once a key named another frame than the count

    @property
    def next_index(self) -> int | None:
        """Index of the next frame out, when known (right after a seek: the frame sought)."""
        return self._next if self._next is not None else self._sought

    @property
    def can_seek(self) -> bool:
        """False when `seek` always restarts from the beginning."""
        raise NotImplementedError

    def restart(self) -> None:
        """Decode from the beginning of the file."""
        raise NotImplementedError

    def seek(self, index: int) -> None:
        """Position the decoder so that frame ``index`` comes out (decoding from the keyframe
        before it, or from the start of the file)."""
        raise NotImplementedError

    def next_frame(self) -> tuple[int | None, Any]:
        """(index or None for a frame to skip, a handle for `to_rgb`) of the next frame out;
        raises `DecoderStopped` at the end of the stream or on a decoding error."""
        raise NotImplementedError

    def to_rgb(self, handle: Any) -> np.ndarray:
        """uint8 (H, W, 3) RGB of the frame just returned by `next_frame`, rotated upright."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- naming frames --------------------------------------------------------------------------

    def _started_from_beginning(self) -> None:
        self._next, self._sought, self._landing, self._located_by_key = 0, None, 0, False

    def _seeked(self, landing: int, sought: int) -> None:
        self._next, self._sought, self._landing, self._located_by_key = None, sought, landing, True

    def _name(self, found: int | None) -> int | None:
        """The index of the frame just decoded; ``found`` is the frame its key names."""
        if self._next is None:  # after a seek, before the first frame a key names
            if found is None or found < self._landing:
                return None  # unknown, or a leading picture of the keyframe (may be broken)
            self._next, self._sought = found, None
        index = self._next
        self._next += 1
        if found is not None and found != index:
            self._keys_agree = False
            if self._located_by_key:
                raise self.stopped(
                    f"frame {found} came out where frame {index} was due", retry=True
                )
        return index if index < self._index.num_frames else None

    def stopped(self, reason: str, *, retry: bool = False) -> DecoderStopped:
        """The error to raise when decoding ends early; the position becomes unknown."""
        self._next = self._sought = None
        return DecoderStopped(reason, retry=retry)


def rotate(frame: np.ndarray, quarter_turns: int) -> np.ndarray:
    """``frame`` turned ``quarter_turns`` x 90 degrees counter-clockwise."""
    if quarter_turns == 0:
        return frame
    return np.ascontiguousarray(np.rot90(frame, k=quarter_turns))
