"""The prompt half of `TrackingState`: clicks, boxes and masks given to objects.

Prompts are given in ORIGINAL-FRAME PIXELS and converted to the model's ``image_size``
square as the official code does (see `sam3video.video.tracking`). Each prompt is decoded
without memory, as on an image; its output waits in the object's ``pending`` buffer until
`TrackingState.preflight` merges the pending outputs of all objects into conditioning frames.
Removing prompts or objects edits the memory bank in place.

`TrackerPrompts` is a mixin of `TrackingState` (it reads the state's objects, memory bank
and features); it is split out only to keep each file about one thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.errors import InvalidInputError
from sam3video.model.tracker import NO_OBJ_SCORE, memory_score
from sam3video.validation import check_clicks, check_pixel_box

if TYPE_CHECKING:
    from sam3video.video.tracking import TrackerFrameOutput

PREV_LOGITS_CLAMP = 32.0


def _on_host(values: object) -> object:
    """A tensor (on any device) as a numpy array, for the request layer's checks."""
    return values.detach().cpu().numpy() if isinstance(values, Tensor) else values


@dataclass
class _PromptOutput:
    """A prompt's decoding for one object, before merging (batch 1)."""

    pred_masks: Tensor | None  # (1, 1, 4h, 4w); None for a mask prompt
    video_res_masks: Tensor | None  # (1, 1, H, W) +-1024, mask prompts only
    obj_ptr: Tensor  # (1, C)
    object_score_logits: Tensor  # (1, 1)
    iou_score: Tensor  # (1,)


@dataclass
class _ObjectPrompts:
    """Prompts of one object, per frame, and its not yet merged outputs."""

    points: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)  # model coords
    mask_frames: set[int] = field(default_factory=set)
    pending: dict[int, _PromptOutput] = field(default_factory=dict)

    def frames(self) -> set[int]:
        return set(self.points) | self.mask_frames


class TrackerPrompts:
    """Prompt methods of `TrackingState` (see module doc)."""

    def _to_model_coords(self, xy: Tensor) -> Tensor:
        """Pixels ``(..., 2)`` of the video frame -> pixels of the model's square (float32)."""
        h, w = self.video_size
        rel = xy.to(torch.float64) / torch.tensor([w, h], dtype=torch.float64)
        return rel.float() * self.tracker.image_size

    # ------------------------------------------------------------------------ validation
    # The request layer's checks (sam3video.validation): one place validates prompts.

    def _validate_points(self, points: object, labels: object) -> tuple[Tensor, Tensor] | None:
        if points is None and labels is None:
            return None
        if (points is None) != (labels is None):
            raise InvalidInputError(
                "points/labels: expected both or neither, got "
                f"points={'None' if points is None else 'given'}, "
                f"labels={'None' if labels is None else 'given'}"
            )
        h, w = self.video_size
        xy, lab = check_clicks(
            _on_host(points), _on_host(labels), w, h, fields=("points", "labels"), dtype=np.float64
        )
        return torch.from_numpy(xy.copy()), torch.from_numpy(lab.astype(np.int32))

    def _validate_box(self, box: object) -> Tensor | None:
        if box is None:
            return None
        h, w = self.video_size
        return torch.from_numpy(check_pixel_box(_on_host(box), w, h, "box").copy())

    # ------------------------------------------------------------------------ prompts

    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: object | None = None,
        labels: object | None = None,
        *,
        box: object | None = None,
        clear_old_points: bool = True,
    ) -> TrackerFrameOutput:
        """Clicks and/or a box for one object on one frame (a new object or a refinement).

        points ``(N, 2)`` ``[x, y]`` in original-frame pixels, labels ``(N,)`` 1/0; box
        ``[x0, y0, x1, y1]`` pixels (needs ``clear_old_points=True``). With
        ``clear_old_points=False`` the clicks are added to the object's earlier clicks on this
        frame. Returns all objects' masks on this frame (merged as `preflight` will).
        """
        frame_idx = self._check_frame(frame_idx)
        pts = self._validate_points(points, labels)
        b = self._validate_box(box)
        if pts is None and b is None:
            raise InvalidInputError("points/box: expected at least one of them, got neither")
        if b is not None and not clear_old_points:
            raise InvalidInputError(
                "clear_old_points: expected True with a box (a box must come before any "
                "click), got False"
            )
        obj_idx = self._obj_index(obj_id, create=True)
        if obj_idx is None:
            obj_idx = self._add_object(obj_id)
        obj = self._objects[obj_idx]

        coords = torch.zeros(1, 0, 2)
        labs = torch.zeros(1, 0, dtype=torch.int32)
        if b is not None:
            coords = self._to_model_coords(b.reshape(1, 2, 2))
            labs = torch.tensor([[2, 3]], dtype=torch.int32)
        if pts is not None:
            coords = torch.cat([coords, self._to_model_coords(pts[0][None])], dim=1)
            labs = torch.cat([labs, pts[1][None]], dim=1)
        coords = coords.to(self._device)
        labs = labs.to(self._device)
        if not clear_old_points and frame_idx in obj.points:
            old_coords, old_labels = obj.points[frame_idx]
            coords = torch.cat([old_coords, coords], dim=1)
            labs = torch.cat([old_labels, labs], dim=1)
        n = coords.shape[1]
        if n > self.max_points > 0:
            first = self.max_points // 2
            last = self.max_points - first
            coords = torch.cat([coords[:, :first], coords[:, -last:]], dim=1)
            labs = torch.cat([labs[:, :first], labs[:, -last:]], dim=1)
        obj.points[frame_idx] = (coords, labs)
        obj.mask_frames.discard(frame_idx)

        # Earlier logits of this object on this frame are fed back with the clicks.
        prev_logits = None
        pending = obj.pending.get(frame_idx)
        if pending is not None:
            prev_logits = pending.pred_masks
        else:
            stored = self._stored_output(obj_idx, frame_idx)
            if stored is not None:
                prev_logits = stored.pred_masks
        if prev_logits is not None:
            prev_logits = prev_logits.to(self._device).clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)

        step = self.tracker.track_step(
            frame_idx,
            self.frame_features(frame_idx),
            self._cond,
            self._non_cond,
            self.num_frames,
            point_coords=coords,  # float32: the prompt encoder's PE needs the precision
            point_labels=labs,
            prev_mask_logits=prev_logits,
            use_memory=False,
            run_mem_encoder=False,
        )
        obj.pending[frame_idx] = _PromptOutput(
            pred_masks=step.pred_masks,
            video_res_masks=None,
            obj_ptr=step.obj_ptr,
            object_score_logits=step.object_score_logits,
            iou_score=step.iou_score,
        )
        return self._prompt_frame_output(frame_idx)

    def add_box(
        self,
        frame_idx: int,
        obj_id: int,
        box: object,
        points: object | None = None,
        labels: object | None = None,
    ) -> TrackerFrameOutput:
        """A box ``[x0, y0, x1, y1]`` (original-frame pixels), optionally with clicks."""
        return self.add_points(frame_idx, obj_id, points, labels, box=box)

    def add_mask(self, frame_idx: int, obj_id: int, mask: object) -> TrackerFrameOutput:
        """A mask for one object (bool or float in [0, 1]): ``(H, W)`` at the video resolution,
        or ``(S, S)`` at the tracker's ``input_mask_size`` (how SAM 3 passes detections).

        The mask is the object's output on this frame (resized to the video resolution with
        antialias, then binarized at 0.5); its soft version resized to ``input_mask_size``
        gives the object pointer and, after merging, the frame's memory. Its pixels are
        removed from other objects' mask prompts on this frame.
        """
        frame_idx = self._check_frame(frame_idx)
        if isinstance(mask, Tensor):
            m = mask.detach().to(device="cpu", dtype=torch.float32)
        else:
            try:
                m = torch.as_tensor(np.asarray(mask, dtype=np.float32))
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f"mask: expected an (H, W) array, got {type(mask).__name__}"
                ) from exc
        side = self.tracker.input_mask_size
        if tuple(m.shape) not in (self.video_size, (side, side)):
            raise InvalidInputError(
                f"mask: expected shape {self.video_size} (the video's H, W) or {(side, side)} "
                f"(the tracker's input size), got {tuple(m.shape)}"
            )
        if not torch.isfinite(m).all():
            raise InvalidInputError("mask: expected finite values, got NaN or inf")
        obj_idx = self._obj_index(obj_id, create=True)
        if obj_idx is None:
            obj_idx = self._add_object(obj_id)
        obj = self._objects[obj_idx]

        m = m.to(self._device)[None, None]
        mask_inputs = m
        if tuple(m.shape[-2:]) != (side, side):
            mask_inputs = F.interpolate(
                m, size=(side, side), mode="bilinear", align_corners=False, antialias=True
            )
        video = m
        if tuple(m.shape[-2:]) != self.video_size:
            video = F.interpolate(
                m, size=self.video_size, mode="bilinear", align_corners=False, antialias=True
            )
        binary = video > 0.5
        obj.mask_frames.add(frame_idx)
        obj.points.pop(frame_idx, None)

        step = self.tracker.track_step(
            frame_idx,
            self.frame_features(frame_idx),
            self._cond,
            self._non_cond,
            self.num_frames,
            mask_inputs=mask_inputs,  # float32 in [0, 1]; the tracker casts for its convs
            use_memory=False,
            run_mem_encoder=False,
        )
        obj.pending[frame_idx] = _PromptOutput(
            pred_masks=None,
            video_res_masks=torch.where(binary, -NO_OBJ_SCORE, NO_OBJ_SCORE),
            obj_ptr=step.obj_ptr,
            object_score_logits=step.object_score_logits,
            iou_score=step.iou_score,
        )
        for k, other in enumerate(self._objects):
            p = other.pending.get(frame_idx)
            if k != obj_idx and p is not None and p.video_res_masks is not None:
                p.video_res_masks = torch.where(binary, NO_OBJ_SCORE, p.video_res_masks)
        return self._prompt_frame_output(frame_idx)

    def mask_prompt_frames(self, obj_id: int) -> list[int]:
        """Frames where ``obj_id`` has a mask prompt and no clicks (detector-born or
        reconditioned frames in SAM 3), ascending."""
        obj = self._objects[self._obj_index(obj_id, create=False)]
        return sorted(obj.mask_frames - set(obj.points))

    def clear_frame_prompts(self, frame_idx: int, obj_id: int) -> TrackerFrameOutput:
        """Remove one object's prompts on a frame.

        A frame left without any prompt stops being a conditioning frame (its merged output
        stays as a tracked one); with no conditioning frame left, all memories are cleared.
        """
        frame_idx = self._check_frame(frame_idx)
        obj_idx = self._obj_index(obj_id, create=False)
        self._clear_frame(frame_idx, obj_idx)
        return self._prompt_frame_output(frame_idx)

    def _clear_frame(self, frame_idx: int, obj_idx: int) -> None:
        obj = self._objects[obj_idx]
        obj.points.pop(frame_idx, None)
        obj.mask_frames.discard(frame_idx)
        obj.pending.pop(frame_idx, None)
        if any(frame_idx in o.frames() for o in self._objects):
            return
        out = self._cond.pop(frame_idx, None)
        if out is not None:
            self._non_cond[frame_idx] = out  # downgraded to a tracked frame
            self._hidden.discard(frame_idx)
        if not self._cond:
            self._reset_tracking()

    def remove_object(self, obj_id: int) -> list[int]:
        """Remove an object everywhere; returns the remaining ids. The last one resets."""
        obj_idx = self._obj_index(obj_id, create=False)
        if self.num_objects == 1:
            self.reset()
            return []
        for frame_idx in sorted(self._objects[obj_idx].frames()):
            self._clear_frame(frame_idx, obj_idx)
        keep = [k for k in range(self.num_objects) if k != obj_idx]
        self._obj_ids = [self._obj_ids[k] for k in keep]
        self._objects = [self._objects[k] for k in keep]
        for store in (self._cond, self._non_cond):
            for t, out in store.items():
                out = out.select(keep)
                out.eff_iou_score = float(memory_score(out.object_score_logits, out.iou_score))
                store[t] = out
        self._hidden.clear()  # the official code rebuilds every per-object view here
        return self.obj_ids
