"""What is committed: a session's per-frame results and how far each frame is done.

Propagation is transactional per frame. One step (a frame detected and tracked, or clicked
objects re-tracked on it) changes the tracker states, the metadata and this ledger together,
between two yields of the propagation; a closed generator, an exception or a stale stream
therefore stops *between* steps and leaves every finished step in place. Nothing records a
propagation as done when it starts: a later propagation reads the ledger and computes exactly
what is missing.

Per frame the ledger holds:

- the **masks** (``obj_id -> bool (H, W)``, bit-packed; the official ``cached_frame_outputs``);
- whether the frame is **pending**: detected and tracked, but not yet released by the hotstart
  buffer, so objects that the hotstart rule removes later may still be hidden in it. A pending
  frame keeps the ids suppressed on it; it becomes *final* when released (what the user is
  shown from then on);
- for each concept, whether the frame was **detected** since that concept was prompted (a
  full detection–tracking step of the concept ran on it; never twice);
- the **click version** each object's result was computed with. Clicking an object bumps its
  version; its results on other frames are then stale and the next propagation re-tracks it
  there (the official "partial propagation"), frame by frame, in the propagation's direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


@dataclass
class FrameLedger:
    """Committed per-frame state of one session (see the module doc)."""

    shape: tuple[int, int]  # (H, W) of the video
    masks: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    pending: dict[int, tuple[int, ...]] = field(default_factory=dict)  # in processing order
    detected: dict[str, set[int]] = field(default_factory=dict)  # concept -> frames
    versions: dict[int, int] = field(default_factory=dict)  # obj_id -> click version (>= 1)
    stamps: dict[int, dict[int, int]] = field(default_factory=dict)  # frame -> obj -> version

    # -- masks

    def put(self, frame_idx: int, masks: dict[int, Tensor]) -> None:
        """Store a frame's ``obj_id -> bool mask`` map (replaces what the frame had)."""
        h, w = self.shape
        self.masks[frame_idx] = {
            int(i): np.packbits(m.reshape(h, w).cpu().numpy()) for i, m in masks.items()
        }

    def get(self, frame_idx: int) -> dict[int, Tensor]:
        """A frame's ``obj_id -> bool (H, W)`` masks (empty when it has none)."""
        packed = self.masks.get(frame_idx, {})
        h, w = self.shape
        return {
            i: torch.from_numpy(np.unpackbits(p, count=h * w).reshape(h, w).astype(bool))
            for i, p in packed.items()
        }

    def nbytes(self) -> int:
        return sum(p.nbytes for masks in self.masks.values() for p in masks.values())

    # -- progress

    def is_final(self, frame_idx: int) -> bool:
        return frame_idx not in self.pending

    def click(self, obj_id: int) -> None:
        """A click on ``obj_id``: its results on every frame become stale."""
        self.versions[obj_id] = self.versions.get(obj_id, 0) + 1

    def stale(self, frame_idx: int, obj_ids: list[int]) -> list[int]:
        """Clicked objects among ``obj_ids`` whose result on the frame predates their last
        click (or that have none there)."""
        stamps = self.stamps.get(frame_idx, {})
        return [i for i in obj_ids if self.versions.get(i, 0) > stamps.get(i, 0)]

    def stamp(self, frame_idx: int, obj_ids: list[int]) -> None:
        """``obj_ids`` have results on the frame computed with their current clicks."""
        stamps = self.stamps.setdefault(frame_idx, {})
        for i in obj_ids:
            stamps[i] = self.versions.get(i, 0)

    def drop_object(self, obj_id: int) -> None:
        for masks in self.masks.values():
            masks.pop(obj_id, None)
        for stamps in self.stamps.values():
            stamps.pop(obj_id, None)
        self.versions.pop(obj_id, None)
