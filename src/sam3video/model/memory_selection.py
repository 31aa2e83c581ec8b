"""Memory selection: which stored frames the tracker's memory attention reads.

`MemoryRule` holds the tracker's memory settings and decides, from frame indices and
per-frame selection scores only (no tensors), which earlier frames a tracking step reads
(`MemoryRule.plan`, with `MemoryRule.frame_filter` for SAM 3's score-based selection).
A caller can therefore know which stored memories can still be used; the video layer's
bounded memory (`sam3video.video.tracking.TrackingState`) keeps what this rule may pick
(`MemoryRule.retained`): selection and retention are one rule, `MemoryRule.earlier_frames`.
`Sam3Tracker.memory_rule` gives the rule of a tracker.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
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

    def qualifies(self, score: float | None) -> bool:
        """Whether a tracked frame with this selection score can be selected."""
        return score is not None and score > self.memory_selection_threshold

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
        # The scanned frames (every r-th from the adjacent one), visited nearest first; only
        # stored ones can count, so the scan walks the store, not the whole video.
        if reverse:
            adjacent = frame_idx + 1
            scan = sorted(
                t for t in non_cond_scores if adjacent <= t < num_frames and (t - adjacent) % r == 0
            )
        else:
            adjacent = frame_idx - 1
            scan = sorted(
                (t for t in non_cond_scores if 1 <= t <= adjacent and (adjacent - t) % r == 0),
                reverse=True,
            )
        valid: list[int] = []
        for i in scan:
            score = non_cond_scores[i]
            if score is None:
                continue
            if self.qualifies(score):
                valid.insert(0, i)
            if len(valid) >= max_num - 1:
                break
        if adjacent not in valid:
            valid.append(adjacent)
        return valid

    def earlier_frames(
        self,
        frame_idx: int,
        non_cond_scores: Mapping[int, float | None],
        num_frames: int,
        reverse: bool,
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The earlier frames a step on ``frame_idx`` reads when they are stored, in the order
        they enter the memory bank: ``(frame, temporal slot)`` for spatial memories and
        ``(frame, signed distance)`` for object pointers (prompted frames come on top, see
        `plan`). The one rule behind both `plan` (what is read) and `retained` (what is kept).
        """
        sign = -1 if reverse else 1
        valid = (
            self.frame_filter(frame_idx, non_cond_scores, num_frames, reverse)
            if self.use_memory_selection
            else []
        )
        r = self.memory_temporal_stride
        spatial: list[tuple[int, int]] = []
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
            spatial.append((prev, t_pos))
        pointers: list[tuple[int, int]] = []
        for t_diff in range(1, min(num_frames, self.max_obj_ptrs_in_encoder)):
            if self.use_memory_selection:
                if t_diff >= len(valid):
                    break
                t = valid[-t_diff]
            else:
                t = frame_idx - t_diff * sign
                if t < 0 or t >= num_frames:
                    break
            pointers.append((t, t_diff))
        return spatial, pointers

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
        Selected prompted frames come first (`select_closest_cond_frames`), then the earlier
        frames of `earlier_frames` that are stored (as tracked frames, or as prompted frames
        left out of the selection).
        """
        if not cond_frames:
            raise InvalidInputError("cond_frames: expected at least one prompted frame, got none")
        sign = -1 if reverse else 1
        selected, unselected = select_closest_cond_frames(
            frame_idx, cond_frames, self.max_cond_frames_in_attn
        )
        unselected_set = set(unselected)

        def lookup(refs: list[tuple[int, int]]) -> list[MemoryRef]:
            found = []
            for t, pos in refs:
                if t in non_cond_scores:
                    found.append(MemoryRef(t, False, pos))
                elif t in unselected_set:
                    found.append(MemoryRef(t, True, pos))
            return found

        earlier_spatial, earlier_pointers = self.earlier_frames(
            frame_idx, non_cond_scores, num_frames, reverse
        )
        spatial = [MemoryRef(t, True, 0) for t in selected] + lookup(earlier_spatial)
        pointers = [
            MemoryRef(t, True, (frame_idx - t) * sign)
            for t in selected
            if (t >= frame_idx if reverse else t <= frame_idx)
        ]
        return MemoryPlan(spatial, pointers + lookup(earlier_pointers))

    def retained(
        self,
        cond_frames: Collection[int],
        non_cond_scores: Mapping[int, float | None],
        num_frames: int,
        last: tuple[int, bool] | None,
    ) -> set[int]:
        """The tracked frames worth keeping: those the memory selection of a next step may
        pick (`frame_filter`) or read (`earlier_frames`).

        The next steps considered are those of the usual flows: the frame after ``last``
        (``(frame, reverse)``, the last propagated frame) in its direction, and a pass
        starting at any prompted frame in ``cond_frames``, forward or backward (with a
        ``memory_temporal_stride`` r > 1: the next r frames). A tracked
        frame that none of them reads is never read again in those flows: a pass only moves
        away from it, and a new pass starts at a prompted frame (see the bounded memory of
        `sam3video.video.tracking`). With no prompted frame every stored frame is kept.
        (Assumes ``max_obj_ptrs_in_encoder >= 2``; with 1 a scan stops at the first stored
        frame, qualifying or not.)
        """
        if not cond_frames:
            return set(non_cond_scores)
        # With a temporal stride r, the next r frames each scan another residue class.
        r = max(self.memory_temporal_stride, 1)
        starts = [(c, False) for c in cond_frames] + [(c, True) for c in cond_frames]
        if last is not None:
            starts.append(last)
        steps = {(t - k if rev else t + k, rev) for t, rev in starts for k in range(1, r + 1)}
        keep: set[int] = set()
        # Steps past the video's ends count too: at the end of a pass the state keeps the
        # window it kept on the way (a live video goes on; a click there reuses its logits).
        for frame, reverse in steps:
            spatial, pointers = self.earlier_frames(frame, non_cond_scores, num_frames, reverse)
            picked = [t for t, _ in spatial + pointers]
            if self.use_memory_selection:
                # Frames selected but not read still count: they decide what is read.
                picked += self.frame_filter(frame, non_cond_scores, num_frames, reverse)
            keep.update(t for t in picked if t in non_cond_scores)
        return keep
