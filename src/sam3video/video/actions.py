"""Carrying out a frame's plan on the tracker states: births, reconditioning, memory update,
hotstart removals.

Who owns what, per frame of a full propagation:

- `sam3video.video.planner` DECIDES (`plan_frame` -> `FramePlan`): association, which
  detections are born as which ids, hotstart removals, reconditioning, occlusion suppression.
- this module TURNS a plan into tracker edits (`plan_actions` -> `TrackerActions`, every mask
  already prepared) and APPLIES them (`apply_actions`), in the official order:
  a. reconditioning: a detection's mask re-prompts a track on this frame (then its state is
     preflighted, which encodes the frame's memory);
  b. the deferred memory update of the tracks that entered the frame (shrinkage suppression
     over all of them, then the memory encoder per state);
  c. births: the newborns become ONE new tracker state holding their detection masks;
  d. hotstart removals from every state (a state left empty is dropped).
- `sam3video.video.session` runs the step (`VideoSession._det_track_one_frame`) and keeps the
  ledger and outputs; `sam3video.video.ledger` records what is committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from sam3video.video.planner import FramePlan, prepare_memory_update
from sam3video.video.tracking import TrackingState

__all__ = [
    "MemoryUpdate",
    "TrackerActions",
    "apply_actions",
    "det_mask_for_tracker",
    "plan_actions",
]


@dataclass
class MemoryUpdate:
    """The memory encoder's inputs for the tracks that entered the frame (``T`` of them):
    ``obj_ids``, ``masks (T, 1, S, S)`` logits after shrinkage suppression and
    ``score_logits (T, 1)`` (+-10)."""

    obj_ids: list[int]
    masks: Tensor
    score_logits: Tensor


@dataclass
class TrackerActions:
    """Everything a frame's plan changes in the tracker states, in the order it is applied.

    ``recondition`` and ``births``: ``(obj_id, mask)`` with the binary ``(S, S)`` input-size
    mask the tracker is prompted with; ``memory_update``: None without tracks; ``removals``:
    ids removed by hotstart (some may no longer be tracked).
    """

    frame_idx: int
    recondition: list[tuple[int, Tensor]]
    memory_update: MemoryUpdate | None
    births: list[tuple[int, Tensor]]
    removals: list[int]


def det_mask_for_tracker(mask: Tensor, side: int) -> Tensor:
    """A detection's low-res logits ``(h, w)`` -> the binary ``(side, side)`` mask the tracker
    is given (bilinear, ``> 0``)."""
    up = F.interpolate(
        mask[None, None].float(), size=(side, side), mode="bilinear", align_corners=False
    )
    return (up[0, 0] > 0).float()


def plan_actions(
    plan: FramePlan, det_masks: Tensor, prev_ids: list[int], frame_idx: int, side: int
) -> TrackerActions:
    """The tracker edits of one concept's plan on ``frame_idx``.

    ``det_masks (D, h, w)``: the concept's kept detections (the plan's indices point there);
    ``prev_ids``: the tracks that entered the frame, in ``plan.trk_masks`` order; ``side``:
    the tracker's input mask size.
    """
    update = None
    if prev_ids:
        masks, scores = prepare_memory_update(plan.trk_masks, side)
        update = MemoryUpdate(list(prev_ids), masks, scores)
    return TrackerActions(
        frame_idx=frame_idx,
        recondition=[
            (obj_id, det_mask_for_tracker(det_masks[d], side))
            for obj_id, d in plan.recondition.items()
        ],
        memory_update=update,
        births=[
            (obj_id, det_mask_for_tracker(det_masks[d], side))
            for obj_id, d in zip(plan.new_obj_ids, plan.new_det_inds)
        ],
        removals=list(plan.removed_obj_ids),
    )


def apply_actions(
    actions: TrackerActions,
    states: list[TrackingState],
    new_state: Callable[[], TrackingState],
) -> None:
    """Apply ``actions`` to ``states`` (edited in place: a newborn state is appended, emptied
    states are removed). ``new_state()`` makes an empty state for the births."""
    frame_idx = actions.frame_idx
    touched: list[TrackingState] = []
    for obj_id, mask in actions.recondition:  # (a)
        state = next(s for s in states if obj_id in s.obj_ids)
        state.add_mask(frame_idx, obj_id, mask)
        if state not in touched:
            touched.append(state)
    for state in touched:
        state.preflight()
    update = actions.memory_update  # (b)
    if update is not None:
        for state in states:
            rows = [update.obj_ids.index(i) for i in state.obj_ids if i in update.obj_ids]
            if rows:
                state.update_memory(frame_idx, update.masks[rows], update.score_logits[rows])
    if actions.births:  # (c)
        state = new_state()
        for obj_id, mask in actions.births:
            state.add_mask(frame_idx, obj_id, mask)
        state.preflight()
        states.append(state)
    for obj_id in actions.removals:  # (d)
        for state in list(states):
            if obj_id in state.obj_ids and not state.remove_object(obj_id):
                states.remove(state)
