"""Memory selection: which stored frames the tracker's memory attention reads.

`MemoryRule` holds the tracker's memory settings and decides, from frame indices and
per-frame selection scores only (no tensors), which earlier frames a tracking step reads
(`MemoryRule.plan`, with `MemoryRule.frame_filter` for SAM 3's score-based selection).
A caller can therefore know which stored memories can still be used; the video layer's
bounded memory (`sam3video.video.tracking.TrackingState`) keeps what this rule may pick.
`Sam3Tracker.memory_rule` gives the rule of a tracker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from sam3video.errors import InvalidInputError


class MemoryRef(NamedTuple):
    """One memory item of a plan: ``frame``, taken from the prompted-frame store when
    ``from_cond`` (else from the tracked-frame store), at temporal slot / pointer position
    ``pos``."""

    frame: int
    from_cond: bool
    pos: int


class MemoryPlan(NamedTuple):
    """Which stored frames a tracking step reads, in the order they enter the memory bank.

    ``spatial``: spatial memories (``pos`` = temporal slot: 0 for selected prompted frames,
    1..num_maskmem-1 for earlier frames, oldest first). ``pointers``: object pointers
    (``pos`` = signed temporal distance used by the sine encoding).
    """

    spatial: list[MemoryRef]
    pointers: list[MemoryRef]


def memory_score(object_score_logits: Tensor, iou_score: Tensor) -> Tensor:
    """The frame's memory-selection score, a 0-d tensor (SAM2Long-style).

    ``(2 * sigmoid(logit) - 1 if logit > 0 else 0) * iou``, averaged. As in the official code
    the two factors broadcast: ``(B, 1)`` scores with ``(B,)`` IoUs give the mean of the outer
    product (= mean score x mean IoU), ``(B, 1)`` with ``(B, 1)`` the mean of the products.
    """
    norm = torch.where(
        object_score_logits > 0,
        object_score_logits.sigmoid() * 2 - 1,
        torch.zeros_like(object_score_logits),
    )
    return (norm * iou_score).mean()


def select_closest_cond_frames(
    frame_idx: int, cond_frames: Sequence[int], max_cond_frames: int
) -> tuple[list[int], list[int]]:
    """Split prompted frames into those attended to from ``frame_idx`` and the rest.

    At most ``max_cond_frames`` (-1: all) are kept: the closest one before ``frame_idx``, the
    closest one at or after it, then the others by distance (ties keep their order).
    ``cond_frames`` keeps its (insertion) order when all fit.
    """
    if max_cond_frames == -1 or len(cond_frames) <= max_cond_frames:
        return list(cond_frames), []
    if max_cond_frames < 2:
        raise InvalidInputError(
            f"max_cond_frames: expected -1 or at least 2, got {max_cond_frames}"
        )
    selected: list[int] = []
    before = [t for t in cond_frames if t < frame_idx]
    after = [t for t in cond_frames if t >= frame_idx]
    if before:
        selected.append(max(before))
    if after:
        selected.append(min(after))
    rest = sorted((t for t in cond_frames if t not in selected), key=lambda t: abs(t - frame_idx))
    selected += rest[: max_cond_frames - len(selected)]
    unselected = [t for t in cond_frames if t not in selected]
    return selected, unselected


@dataclass(frozen=True)
class MemoryRule:
    """The tracker's memory settings (official names, see `Sam3Tracker`) and the selection
    they imply."""

    num_maskmem: int = 7
    max_cond_frames_in_attn: int = 4
    max_obj_ptrs_in_encoder: int = 16
    memory_temporal_stride: int = 1
    use_memory_selection: bool = True
    memory_selection_threshold: float = 0.01

    def frame_filter(
        self,
        frame_idx: int,
        non_cond_scores: Mapping[int, float | None],
        num_frames: int,
        reverse: bool,
    ) -> list[int]:
        """Memory selection: earlier tracked frames worth remembering, oldest first.

        Scans from the adjacent frame away from ``frame_idx`` (forward: down to frame 1,
        frame 0 is never scanned; reverse: up to the last frame) and keeps frames whose score
        exceeds ``memory_selection_threshold``, stopping at ``min(num_frames,
        max_obj_ptrs_in_encoder) - 1`` of them; the adjacent frame is always appended.
        ``non_cond_scores``: tracked frame -> its ``eff_iou_score`` (None: never qualifies).
        """
        if (frame_idx == 0 and not reverse) or (frame_idx == num_frames - 1 and reverse):
            return []
        max_num = min(num_frames, self.max_obj_ptrs_in_encoder)
        r = self.memory_temporal_stride
        if reverse:
            scan, adjacent = range(frame_idx + 1, num_frames, r), frame_idx + 1
        else:
            scan, adjacent = range(frame_idx - 1, 0, -r), frame_idx - 1
        valid: list[int] = []
        for i in scan:
            score = non_cond_scores.get(i)
            if score is None:
                continue
            if score > self.memory_selection_threshold:
                valid.insert(0, i)
            if len(valid) >= max_num - 1:
                break
        if adjacent not in valid:
            valid.append(adjacent)
        return valid

    def plan(
        self,
        frame_idx: int,
        cond_frames: Sequence[int],
        non_cond_scores: Mapping[int, float | None],
        num_frames: int,
        reverse: bool = False,
    ) -> MemoryPlan:
        """The stored frames that tracking ``frame_idx`` reads, and their positions.

        ``cond_frames``: prompted frames in insertion order (at least one);
        ``non_cond_scores``: every stored tracked frame -> its ``eff_iou_score`` or None.
        """
        if not cond_frames:
            raise InvalidInputError("cond_frames: expected at least one prompted frame, got none")
        sign = -1 if reverse else 1
        selected, unselected = select_closest_cond_frames(
            frame_idx, cond_frames, self.max_cond_frames_in_attn
        )
        unselected_set = set(unselected)

        def lookup(t: int, pos: int) -> MemoryRef | None:
            if t in non_cond_scores:
                return MemoryRef(t, False, pos)
            if t in unselected_set:
                return MemoryRef(t, True, pos)
            return None

        spatial = [MemoryRef(t, True, 0) for t in selected]
        valid = (
            self.frame_filter(frame_idx, non_cond_scores, num_frames, reverse)
            if self.use_memory_selection
            else []
        )
        r = self.memory_temporal_stride
        for t_pos in range(1, self.num_maskmem):
            t_rel = self.num_maskmem - t_pos  # frames back from frame_idx
            if self.use_memory_selection:
                if t_rel > len(valid):
                    continue
                prev = valid[-t_rel]
            elif t_rel == 1:
                prev = frame_idx - t_rel * sign
            elif not reverse:
                prev = ((frame_idx - 2) // r) * r - (t_rel - 2) * r
            else:
                prev = -(-(frame_idx + 2) // r) * r + (t_rel - 2) * r
            ref = lookup(prev, t_pos)
            if ref is not None:
                spatial.append(ref)

        max_ptrs = min(num_frames, self.max_obj_ptrs_in_encoder)
        pointers = [
            MemoryRef(t, True, (frame_idx - t) * sign)
            for t in selected
            if (t >= frame_idx if reverse else t <= frame_idx)
        ]
        for t_diff in range(1, max_ptrs):
            if self.use_memory_selection:
                if t_diff >= len(valid):
                    break
                t = valid[-t_diff]
            else:
                t = frame_idx - t_diff * sign
                if t < 0 or t >= num_frames:
                    break
            ref = lookup(t, t_diff)
            if ref is not None:
                pointers.append(ref)
        return MemoryPlan(spatial, pointers)
