"""What a SAM 3.1 tracker state stores per frame, and what one step returns.

`StoredFrame` (one frame of one state: object-order masks and scores, bucket-layout pointers
and memory) and `MultiplexStepOutput` are shared by `sam3video.video.multiplex_tracking`
(the state and its tracking) and `sam3video.video.multiplex_clicks` (clicks, extraction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor

from sam3video.model.tracker import FrameFeatures

# ``frame_idx -> (interactive, propagation)``: the frame's two tracker pyramids, each prepared by
# the model (`MultiplexTrackerModel.prepare_interactive` / ``prepare_propagation``), batch 1.
FeatureFn31 = Callable[[int], tuple[FrameFeatures, FrameFeatures]]


@dataclass
class StoredFrame:
    """What a state keeps of one frame.

    ``obj_ids``: the objects of the rows below, in object order at the time they were written
    (later additions append, removals drop rows), like the official per-frame
    ``local_obj_id_to_idx``. ``pred_masks (n, 1, s, s)`` low-res logits and
    ``object_score_logits (n, 1)`` in that order; ``obj_ptr (Bk, M, C)`` and
    ``maskmem_features (Bk, C, h, w)`` in the state's bucket layout (None: not encoded yet);
    ``image_features`` / ``image_pos (1, C, h, w)``: the frame's propagation level 2 and its
    encoding (shared between the states of a video, never copied); ``conditioning``: the
    objects prompted (mask, click, detector birth or reconditioning) on this frame.
    ``memory_dropped``: see the field's comment.
    """

    obj_ids: tuple[int, ...]
    pred_masks: Tensor
    object_score_logits: Tensor
    obj_ptr: Tensor
    maskmem_features: Tensor | None
    image_features: Tensor
    image_pos: Tensor
    conditioning: frozenset[int]
    # True for a frame copied into a state of its own by `extract_object`: its memory was
    # dropped (the official extraction cannot demux a bucket memory) and is not re-encoded by
    # `preflight`; a memory read skips it until the frame is tracked again.
    memory_dropped: bool = False

    def rows(self, obj_ids: Sequence[int]) -> list[int]:
        where = {obj_id: i for i, obj_id in enumerate(self.obj_ids)}
        return [where[obj_id] for obj_id in obj_ids]


class MultiplexStepOutput(NamedTuple):
    """One state's result on one frame, in its object order: ``low_res_masks (N, 1, s, s)``
    logits, ``object_score_logits (N, 1)``."""

    frame_idx: int
    obj_ids: list[int]
    low_res_masks: Tensor
    object_score_logits: Tensor
    # `MultiplexTrackingState.add_points` only: the click's logits at the video resolution,
    # ``(1, 1, H, W)``, before they come back to the low resolution (the official reply).
    video_res_logits: Tensor | None = None
