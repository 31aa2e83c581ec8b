"""SAM 3.1's memory read: which stored frames one tracking step of a multiplex state reads.

`multiplex_memory_plan` follows the official ``VideoTrackingMultiplex.
_prepare_memory_conditioned_features`` with the 3.1 builder's settings (proven frame by frame
against the official method by ``tests/test_multiplex_tracking.py``); `tpos_row` is the row of
the temporal encoding table a memory gets.

Differences from SAM 3's read (`sam3video.model.memory_selection`): memory selection is off in
SAM 3.1 (the plain window of the previous ``num_maskmem - 1`` frames); a prompted frame's
spatial memory carries its signed distance (the v2 temporal encoding gives it a distance row
when it is 1..6 frames away, the "out of range" row otherwise); pointers come from every
selected prompted frame, also ones after the current frame, at unsigned distance.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sam3video.errors import InvalidInputError
from sam3video.model.tracker import MemoryPlan, MemoryRef, select_closest_cond_frames

__all__ = ["multiplex_memory_plan", "tpos_row"]


def tpos_row(t_pos: int, num_maskmem: int = 7) -> int:
    """Row of the temporal encoding table for a memory at position ``t_pos`` (SAM 3.1's
    "v2" rule): ``num_maskmem - t_pos - 1`` for ``1 <= t_pos < num_maskmem``, else the last
    row (prompted frames at distance 0, behind, or farther than the window)."""
    if t_pos <= 0 or t_pos >= num_maskmem:
        return num_maskmem - 1
    return num_maskmem - t_pos - 1


def multiplex_memory_plan(
    frame_idx: int,
    cond_frames: Sequence[int],
    stored_frames: Collection[int],
    num_frames: int,
    reverse: bool = False,
    *,
    num_maskmem: int = 7,
    max_cond_frames: int = 4,
    max_obj_ptrs: int = 16,
    stride: int = 1,
    only_past_pointers: bool = False,
    signed_pointer_distance: bool = False,
) -> MemoryPlan:
    """The stored frames that tracking ``frame_idx`` reads, in the order they enter the bank.

    ``cond_frames``: the state's prompted frames in insertion order (at least one);
    ``stored_frames``: its tracked (non-prompted) frames that still hold an output.
    Spatial refs: selected prompted frames first (``pos`` = signed distance
    ``(frame_idx - f)``, negated in reverse), then the previous ``num_maskmem - 1`` frames
    oldest first (``pos`` = slot ``1..num_maskmem-1``; every ``stride``-th frame beyond the
    adjacent one; an unselected prompted frame there is read like a tracked one). Pointer refs:
    the selected prompted frames (only those at or before ``frame_idx`` in the direction of
    tracking when ``only_past_pointers``) at ``|frame_idx - f|`` (signed when
    ``signed_pointer_distance``), then tracked frames at distance ``1..max_obj_ptrs-1``
    (bounded by ``num_frames``), nearest first. The defaults are SAM 3.1's.
    """
    if not cond_frames:
        raise InvalidInputError("cond_frames: expected at least one prompted frame, got none")
    if stride < 1:
        raise InvalidInputError(f"stride: expected >= 1, got {stride}")
    sign = -1 if reverse else 1
    selected, unselected = select_closest_cond_frames(frame_idx, cond_frames, max_cond_frames)
    unselected_set = set(unselected)
    stored = set(stored_frames)

    def lookup(t: int, pos: int) -> MemoryRef | None:
        if t in stored:
            return MemoryRef(t, False, pos)
        if t in unselected_set:
            return MemoryRef(t, True, pos)
        return None

    spatial = [MemoryRef(t, True, (frame_idx - t) * sign) for t in selected]
    for t_pos in range(1, num_maskmem):
        t_rel = num_maskmem - t_pos  # frames back from frame_idx
        if t_rel == 1:
            prev = frame_idx - sign
        elif not reverse:
            prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        else:
            prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        ref = lookup(prev, t_pos)
        if ref is not None:
            spatial.append(ref)

    limit = min(num_frames, max_obj_ptrs)
    pointers = []
    for t in selected:
        if only_past_pointers and (t < frame_idx if reverse else t > frame_idx):
            continue
        dist = (frame_idx - t) * sign if signed_pointer_distance else abs(frame_idx - t)
        pointers.append(MemoryRef(t, True, dist))
    for t_diff in range(1, limit):
        t = frame_idx - t_diff * sign
        if t < 0 or t >= num_frames:
            break
        ref = lookup(t, t_diff)
        if ref is not None:
            pointers.append(ref)
    return MemoryPlan(spatial, pointers)
