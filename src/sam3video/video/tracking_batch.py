"""Tracking one frame for several `TrackingState`s of a video, objects batched across states.

The SAM 3 video logic keeps clicked objects in states of their own and detected ones in
others; `track_states` runs the states whose memory plans agree as one batch through the
tracker, then lets each state store its own part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from sam3video.model.tracker import FrameMemory, MemoryPlan, TrackStepOutput, memory_score

if TYPE_CHECKING:
    from sam3video.video.tracking import TrackerFrameOutput, TrackingState


def track_states(
    states: Sequence[TrackingState], frame_idx: int, reverse: bool, run_mem_encoder: bool
) -> list[TrackerFrameOutput]:
    """Track one frame for several states of a video, batching objects across states.

    The SAM 3 video logic keeps clicked objects in states of their own (one per click) and
    detected ones in others; each state has its own memory bank, but on a given frame most
    states read the same stored frames. States whose memory plans are equal (and that share
    the tracker and the frame features) run as ONE batch through the memory attention, the
    SAM heads and the memory encoder: their objects are concatenated, the outputs split back.
    Each state then stores its own memory and its own selection score, exactly as if it had
    been tracked alone (the batch changes the arithmetic only by float rounding).

    The states must have been preflighted (`TrackingState.propagate` does it; the session
    calls `preflight` before each frame). Returns one output per state, in order.
    """
    outputs: list[TrackerFrameOutput | None] = [None] * len(states)
    groups: dict[tuple, tuple[MemoryPlan, list[int]]] = {}
    for i, state in enumerate(states):
        if state.is_cond_frame(frame_idx):
            outputs[i] = state.cond_frame_output(frame_idx, reverse)
            continue
        plan = state.memory_plan(frame_idx, reverse)
        key = (
            id(state.tracker),
            state.get_features,
            state.num_frames,
            tuple(plan.spatial),
            tuple(plan.pointers),
        )
        groups.setdefault(key, (plan, []))[1].append(i)
    for plan, members in groups.values():
        group = [states[i] for i in members]
        first = group[0]
        sizes = [state.num_objects for state in group]
        if len(group) == 1:
            cond, non_cond = first.cond_memories, first.non_cond_memories
        else:
            cond, non_cond = {}, {}
            for ref in (*plan.spatial, *plan.pointers):
                store, attr = (
                    (cond, "cond_memories") if ref.from_cond else (non_cond, "non_cond_memories")
                )
                if ref.frame not in store:
                    store[ref.frame] = _concat_memories(
                        [getattr(state, attr)[ref.frame] for state in group]
                    )
        step = first.tracker.track_step(
            frame_idx,
            first.frame_features(frame_idx).expand(sum(sizes)),
            cond,
            non_cond,
            first.num_frames,
            reverse=reverse,
            use_memory=True,
            run_mem_encoder=run_mem_encoder,
            plan=plan,
        )
        for i, state, part in zip(members, group, _split_step(step, sizes)):
            outputs[i] = state.store_step(frame_idx, reverse, part)
    return outputs  # type: ignore[return-value]


def _concat_memories(memories: Sequence[FrameMemory]) -> FrameMemory:
    """The memories of several states on one frame as one batch (what the attention reads)."""
    maskmem = [m.maskmem_features for m in memories]
    return FrameMemory(
        maskmem_features=None if any(m is None for m in maskmem) else torch.cat(maskmem),
        obj_ptr=torch.cat([m.obj_ptr for m in memories]),
        object_score_logits=torch.cat([m.object_score_logits for m in memories]),
        iou_score=torch.cat([m.iou_score.reshape(-1) for m in memories]),
    )


def _split_step(step: TrackStepOutput, sizes: Sequence[int]) -> list[TrackStepOutput]:
    """A batched step's rows per state; each part's selection score is its own (a mean)."""
    if len(sizes) == 1:
        return [step]
    parts, start = [], 0
    for n in sizes:
        rows = slice(start, start + n)
        start += n
        scores, ious = step.object_score_logits[rows], step.iou_score[rows]
        maskmem = step.maskmem_features
        parts.append(
            TrackStepOutput(
                pred_masks=step.pred_masks[rows],
                pred_masks_high_res=step.pred_masks_high_res[rows],
                obj_ptr=step.obj_ptr[rows],
                object_score_logits=scores,
                iou_score=ious,
                eff_iou_score=memory_score(scores, ious),
                maskmem_features=None if maskmem is None else maskmem[rows],
            )
        )
    return parts
