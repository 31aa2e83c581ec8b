"""Tracking state: many objects of one video tracked together by the SAM 3 memory tracker.

`TrackingState` is the equivalent of the official ``Sam3TrackerPredictor`` inference state
and its methods (prompts, consolidation, propagation, removal), in one object:

- **Prompts** are given in ORIGINAL-FRAME PIXELS: clicks ``[x, y]`` (labels 1 positive,
  0 negative), boxes ``[x0, y0, x1, y1]``, masks ``(H, W)`` at the video resolution. They are
  converted to the model's ``image_size`` square as the official code does (relative
  coordinates ``x / W``, ``y / H``, times ``image_size``). A box enters as two corner points
  (labels 2 and 3) placed before any clicks. A frame holds at most ``max_points`` clicks
  (the first half and the last half are kept, as officially). Clicks and boxes are checked
  by the request layer's own checks (`sam3video.validation.check_clicks`, `check_pixel_box`).
- **Prompt frames become conditioning frames.** A prompt is decoded without memory (as on an
  image); a refinement click on a frame already segmented for that object feeds the previous
  low-res logits (clamped to +-32) back as a mask prompt. Outputs of prompts wait in a
  per-object buffer until `preflight` (run by `propagate`) merges them for all objects
  (objects without an output on that frame keep their stored output, else nothing), and
  encodes the frame's memory from the binarized masks with pixel-wise non-overlap.
- **Propagation** (`propagate`, a generator) tracks all objects as one batch per frame,
  forward or backward from a start frame, reusing the stored outputs on conditioning frames.
  The backbone runs once per frame for all objects: frame features come from the
  ``get_features(frame_idx) -> (feats, pos)`` callable given at construction (the tracker
  neck's 3 levels, batch 1); only the current frame's are cached.

Files: this module holds the state, its memory bank and propagation;
`sam3video.video.tracking_prompts` the prompt methods (a mixin of `TrackingState`);
`sam3video.video.tracking_batch` `track_states`, which runs several states as one batch.

Each prompt call and each propagated frame returns a `TrackerFrameOutput` (object ids, low-res
mask logits, object-score logits, video-resolution logits and binary masks). The state does
not keep per-frame outputs for the caller: store what you need from the yielded values.
``propagate(run_mem_encoder=False)`` plus `TrackingState.update_memory` support the SAM 3
video model's deferred memory encoding (masks post-processed across states first).

Bounded memory
--------------
With ``bounded_memory=True`` (default) the state keeps a frame's tracked output (spatial
memory, object pointer, scores, low-res logits) only while the memory attention can still
read it. Conditioning (prompted) frames are always kept. A tracked frame is kept when the
next step of a usual flow may read it: the frame after the last propagated one (in the
direction of propagation), or a new pass starting at any conditioning frame, forward or
backward. What a step reads is decided by ONE rule, `sam3video.model.memory_selection.
MemoryRule` (`earlier_frames`): the memory plan of a step and the retention of the state
(`retained_frames`, `MemoryRule.retained`) both come from it, so the retained frames cover
whatever selection can pick in those flows (``tests/test_memory_selection.py``).

Everything else is dropped, so the state size does not grow with the number of frames. Why
this is exact for the usual flows: memory selection scans outward from the adjacent frame and
stops after 15 qualifying frames; while propagating in one direction the scan of the next
frame starts one frame further, so frames beyond the ones the current next step reads are
never reached again. Not exact: a pass started at an arbitrary frame far from both, a
refinement click on a frame whose output was dropped (no previous logits are fed back there,
and other objects have no stored output on it), or a frame tracked again that stops
qualifying (the scan then reaches further back than what was kept).
``bounded_memory=False`` keeps everything, like the official state.

Differences from the official predictor (0.1.4), on purpose
-------------------------------------------------------------
- Consolidating a frame on which an object has no output at all uses the ``no_obj_ptr``
  pointer for it (what the official empty-mask pointer evaluates to); the official code
  raises a TypeError there.
- Typed errors (`InvalidInputError`, `FrameIndexError`, `UnknownIdError`) are raised before
  any change of state; removing an unknown object is an error.
- Prompts are always decoded without memory (the official default ``use_prev_mem_frame=False``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.errors import FrameIndexError, InvalidInputError, UnknownIdError
from sam3video.model.tracker import (
    NO_OBJ_SCORE,
    FrameFeatures,
    FrameMemory,
    MemoryPlan,
    Sam3Tracker,
    TrackStepOutput,
)
from sam3video.video.postprocess import apply_non_overlapping_constraints
from sam3video.video.steps import processing_order
from sam3video.video.tracking_batch import track_states
from sam3video.video.tracking_prompts import TrackerPrompts, _ObjectPrompts

__all__ = ["FeatureCache", "FeatureFn", "TrackerFrameOutput", "TrackingState", "track_states"]

FeatureFn = Callable[[int], tuple[Sequence[Tensor], Sequence[Tensor]]]


class TrackerFrameOutput(NamedTuple):
    """Masks of all objects of a state on one frame (``B`` objects, in ``obj_ids`` order).

    ``low_res_masks (B, 1, 4h, 4w)`` logits, ``object_score_logits (B, 1)``,
    ``video_res_logits (B, 1, H, W)`` (bilinear resize of the low-res logits, or the prompt
    mask itself on a mask-prompted frame), ``masks (B, 1, H, W)`` bool (``logits > 0``).
    """

    frame_idx: int
    obj_ids: list[int]
    low_res_masks: Tensor
    object_score_logits: Tensor
    video_res_logits: Tensor
    masks: Tensor


class FeatureCache:
    """The latest frame's prepared tracker features (`Sam3Tracker.prepare_features`).

    Each `TrackingState` has one; the states of one video (same tracker, same
    ``get_features``) can share one so that a frame's features are prepared once for all.
    """

    def __init__(self) -> None:
        self.entry: tuple[int, FrameFeatures] | None = None

    def tensors(self) -> list[Tensor]:
        """The cached tensors (none when empty)."""
        if self.entry is None:
            return []
        feats = self.entry[1]
        return [*feats.high_res, feats.vision, feats.vision_pos]


class TrackingState(TrackerPrompts):
    """Prompts, memories and propagation for the objects of one video (see module doc).

    tracker: the neural model (eval mode). get_features: ``frame_idx -> (feats, pos)``, the 3
    tracker-neck levels of that frame, each ``(1, C, s, s)``. num_frames, video_size
    ``(H, W)``: the video. max_points: clicks per object and frame kept for the prompt
    encoder (16). clear_non_cond_mem_around_input / clear_non_cond_mem_for_multi_obj:
    official switches (True / False). bounded_memory: see module doc. storage_dtype: dtype
    of stored spatial memories (None: the model's; the official GPU code stores bfloat16).
    feature_cache: a `FeatureCache` shared with the video's other states (default: its own).

    Autograd is the caller's choice: the predictor runs everything under
    ``torch.inference_mode()``; called with gradients on, the state records graphs (training).
    """

    def __init__(
        self,
        tracker: Sam3Tracker,
        get_features: FeatureFn,
        num_frames: int,
        video_size: tuple[int, int],
        *,
        max_points: int = 16,
        clear_non_cond_mem_around_input: bool = True,
        clear_non_cond_mem_for_multi_obj: bool = False,
        bounded_memory: bool = True,
        storage_dtype: torch.dtype | None = None,
        feature_cache: FeatureCache | None = None,
    ) -> None:
        if int(num_frames) < 1:
            raise InvalidInputError(f"num_frames: expected >= 1, got {num_frames}")
        h, w = (int(s) for s in video_size)
        if h < 1 or w < 1:
            raise InvalidInputError(f"video_size: expected (H, W) >= 1, got {tuple(video_size)}")
        self.tracker = tracker
        self.get_features = get_features
        self.num_frames = int(num_frames)
        self.video_size = (h, w)
        self.max_points = max_points
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.clear_non_cond_mem_for_multi_obj = clear_non_cond_mem_for_multi_obj
        self.bounded_memory = bounded_memory
        self.storage_dtype = storage_dtype
        self.feature_cache = FeatureCache() if feature_cache is None else feature_cache
        self.reset()

    # ------------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every object, prompt and memory."""
        self._obj_ids: list[int] = []
        self._objects: list[_ObjectPrompts] = []
        self.feature_cache.entry = None
        self._reset_tracking()

    def _reset_tracking(self) -> None:
        for obj in getattr(self, "_objects", []):
            obj.points.clear()
            obj.mask_frames.clear()
            obj.pending.clear()
        self._cond: dict[int, FrameMemory] = {}
        self._non_cond: dict[int, FrameMemory] = {}
        # Tracked frames that objects' own lookups no longer see (the official per-object
        # clearing around a prompt frame, which leaves the batched memories untouched).
        self._hidden: set[int] = set()
        self._last: tuple[int, bool] | None = None  # last propagated frame, reverse
        self.tracking_has_started = False

    @property
    def obj_ids(self) -> list[int]:
        return list(self._obj_ids)

    @property
    def num_objects(self) -> int:
        return len(self._obj_ids)

    @property
    def cond_memories(self) -> Mapping[int, FrameMemory]:
        """The memory bank's conditioning frames (prompted), read only: frame -> memory."""
        return MappingProxyType(self._cond)

    @property
    def non_cond_memories(self) -> Mapping[int, FrameMemory]:
        """The memory bank's tracked frames it still keeps, read only: frame -> memory."""
        return MappingProxyType(self._non_cond)

    def is_cond_frame(self, frame_idx: int) -> bool:
        return frame_idx in self._cond

    @property
    def cond_frames(self) -> list[int]:
        """Conditioning (prompted, merged) frames, in the order they were added."""
        return list(self._cond)

    @property
    def stored_frames(self) -> list[int]:
        """Tracked (non-conditioning) frames whose outputs are held, ascending."""
        return sorted(self._non_cond)

    def memory_footprint(self, include_features: bool = True) -> dict[str, int]:
        """Frames, tensors and bytes held (stored outputs, pending prompts, cached features).

        ``include_features=False`` leaves out the feature cache (shared by a session's states,
        which counts it once).
        """
        entries = list(self._cond.values()) + list(self._non_cond.values())
        tensors: list[Tensor] = []
        for e in entries:
            tensors += [e.maskmem_features, e.obj_ptr, e.object_score_logits]
            tensors += [e.iou_score, e.pred_masks]
        for obj in self._objects:
            for p in obj.pending.values():
                tensors += [p.pred_masks, p.video_res_masks, p.obj_ptr]
                tensors += [p.object_score_logits, p.iou_score]
            for coords, labels in obj.points.values():
                tensors += [coords, labels]
        if include_features:
            tensors += self.feature_cache.tensors()
        tensors = [t for t in tensors if t is not None]
        return {
            "frames": len(entries),
            "tensors": len(tensors),
            "bytes": sum(t.numel() * t.element_size() for t in tensors),
        }

    # ------------------------------------------------------------------------ helpers

    @property
    def _device(self) -> torch.device:
        return self.tracker.no_obj_ptr.device

    @property
    def _dtype(self) -> torch.dtype:
        return self.tracker.no_obj_ptr.dtype

    def _check_frame(self, frame_idx: object) -> int:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise FrameIndexError(
                f"frame_idx: expected an int in [0, {self.num_frames}), got {frame_idx!r}"
            )
        if not 0 <= int(frame_idx) < self.num_frames:
            raise FrameIndexError(
                f"frame_idx: expected an int in [0, {self.num_frames}), got {frame_idx}"
            )
        return int(frame_idx)

    def _obj_index(self, obj_id: int, create: bool) -> int | None:
        """Index of ``obj_id``; None for a new id that may be created (checked, not created)."""
        if obj_id in self._obj_ids:
            return self._obj_ids.index(obj_id)
        if not create:
            raise UnknownIdError(
                f"obj_id: unknown object id {obj_id!r}; known ids: {self._obj_ids}"
            )
        if self.tracking_has_started:
            raise InvalidInputError(
                f"obj_id: cannot add the new object {obj_id!r} after tracking has started "
                f"(known ids: {self._obj_ids}); use a new TrackingState or reset()"
            )
        return None

    def _add_object(self, obj_id: int) -> int:
        self._obj_ids.append(obj_id)
        self._objects.append(_ObjectPrompts())
        return len(self._obj_ids) - 1

    def frame_features(self, frame_idx: int) -> FrameFeatures:
        """The frame's prepared features (batch 1); only the latest frame is cached."""
        cached = self.feature_cache.entry
        if cached is not None and cached[0] == frame_idx:
            return cached[1]
        feats, pos = self.get_features(frame_idx)
        device, dtype = self._device, self._dtype
        feats = [f.to(device=device, dtype=dtype) for f in feats]
        pos = [p.to(device=device, dtype=dtype) for p in pos]
        prepared = self.tracker.prepare_features(feats, pos)
        self.feature_cache.entry = (frame_idx, prepared)
        return prepared

    def _stored_output(self, obj_idx: int, frame_idx: int) -> FrameMemory | None:
        """The object's merged or tracked output on a frame, as its own lookups see it."""
        out = self._cond.get(frame_idx)
        if out is None and frame_idx not in self._hidden:
            out = self._non_cond.get(frame_idx)
        return None if out is None else out.select([obj_idx])

    def _clear_around(self, frame_idx: int) -> None:
        """Hide tracked frames within ``num_maskmem`` frames of a prompt frame from the
        objects' own lookups (official single-object behaviour)."""
        r = self.tracker.memory_temporal_stride * self.tracker.num_maskmem
        for t in range(frame_idx - r, frame_idx + r + 1):
            if t in self._non_cond:
                self._hidden.add(t)

    def _clears_around_input(self) -> bool:
        return self.clear_non_cond_mem_around_input and (
            self.clear_non_cond_mem_for_multi_obj or self.num_objects <= 1
        )

    # ------------------------------------------------------------------------ merging

    def _merge(
        self, frame_idx: int, size: tuple[int, int], run_mem_encoder: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """All objects' outputs on a frame: masks ``(B, 1, *size)``, pointers ``(B, C)``,
        scores ``(B, 1)``, IoUs ``(B, 1)`` and (``run_mem_encoder``) the spatial memory."""
        b = self.num_objects
        device, dtype = self._device, self._dtype
        masks = torch.full((b, 1, *size), NO_OBJ_SCORE, dtype=torch.float32, device=device)
        ptr = torch.full((b, self.tracker.hidden_dim), NO_OBJ_SCORE, dtype=dtype, device=device)
        scores = torch.full((b, 1), 10.0, dtype=torch.float32, device=device)
        ious = torch.zeros(b, 1, dtype=torch.float32, device=device)
        for k, obj in enumerate(self._objects):  # bookkeeping, at prompt time only
            out = obj.pending.get(frame_idx)
            from_video_res = False
            if out is not None:
                src = out.video_res_masks if out.video_res_masks is not None else out.pred_masks
                from_video_res = out.video_res_masks is not None
            else:
                out = self._stored_output(k, frame_idx)
                src = None if out is None else out.pred_masks
            if out is None:
                if run_mem_encoder:
                    # The official empty-mask pointer: no object in an empty mask.
                    ptr[k] = self.tracker.no_obj_ptr[0]
                continue
            src = src.to(device=device, dtype=torch.float32)
            if tuple(src.shape[-2:]) != tuple(size):
                src = F.interpolate(
                    src,
                    size=size,
                    mode="bilinear",
                    align_corners=False,
                    antialias=from_video_res,
                )
            masks[k : k + 1] = src
            ptr[k : k + 1] = out.obj_ptr.to(device=device, dtype=dtype)
            scores[k : k + 1] = out.object_score_logits.reshape(1, 1).float()
            ious[k : k + 1] = out.iou_score.reshape(1, 1).float()
        maskmem = None
        if run_mem_encoder:
            s = self.tracker.image_size
            high_res = F.interpolate(masks, size=(s, s), mode="bilinear", align_corners=False)
            high_res = apply_non_overlapping_constraints(high_res)
            feats = self.frame_features(frame_idx).expand(b)
            maskmem = self.tracker.encode_memory(feats.vision, high_res, scores, binarize=True)
            maskmem = self._stored(maskmem)
        return masks, ptr, scores, ious, maskmem

    def _stored(self, maskmem: Tensor) -> Tensor:
        return maskmem if self.storage_dtype is None else maskmem.to(self.storage_dtype)

    def _prompt_frame_output(self, frame_idx: int) -> TrackerFrameOutput:
        low = self.tracker.low_res_mask_size
        low_res, _, scores, _, _ = self._merge(frame_idx, (low, low), run_mem_encoder=False)
        video_res, _, _, _, _ = self._merge(frame_idx, self.video_size, run_mem_encoder=False)
        return TrackerFrameOutput(
            frame_idx, self.obj_ids, low_res, scores, video_res, video_res > 0
        )

    def preflight(self) -> None:
        """Merge pending prompt outputs into conditioning frames and encode their memory.

        Called by `propagate`; new object ids are refused from here on.
        """
        self.tracking_has_started = True
        frames: set[int] = set()
        for obj in self._objects:
            frames.update(obj.pending)
        low = self.tracker.low_res_mask_size
        for frame_idx in frames:
            masks, ptr, scores, ious, maskmem = self._merge(frame_idx, (low, low), True)
            self._cond[frame_idx] = FrameMemory(
                maskmem_features=maskmem,
                obj_ptr=ptr,
                object_score_logits=scores,
                iou_score=ious,
                pred_masks=masks,
                eff_iou_score=None,
            )
            if self._clears_around_input():
                self._clear_around(frame_idx)
        for obj in self._objects:
            obj.pending.clear()
        for frame_idx in self._cond:
            self._non_cond.pop(frame_idx, None)
            self._hidden.discard(frame_idx)
        self._trim()

    # ------------------------------------------------------------------------ propagation

    def processing_order(
        self, start_frame_idx: int | None, max_frame_num_to_track: int | None, reverse: bool
    ) -> list[int]:
        """Frames `propagate` visits (`steps.processing_order`, the start frame included in
        both directions; reverse from frame 0 visits ``[0]``)."""
        if start_frame_idx is None and not self._cond:
            raise InvalidInputError(
                "start_frame_idx: expected a frame index when no prompt has been merged yet"
            )
        start = min(self._cond) if start_frame_idx is None else start_frame_idx
        return processing_order(start, max_frame_num_to_track, self.num_frames, reverse)

    def propagate(
        self,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
        run_mem_encoder: bool = True,
    ) -> Iterator[TrackerFrameOutput]:
        """Track all objects frame by frame (a generator; runs `preflight` first).

        start_frame_idx: default the earliest conditioning frame. max_frame_num_to_track:
        frames after the start (default: to the end). reverse: backward in time.
        Conditioning frames yield their merged prompt outputs; other frames are tracked as
        one batch with the memory bank and their output replaces any earlier one.
        """
        if start_frame_idx is not None:
            start_frame_idx = self._check_frame(start_frame_idx)
        if max_frame_num_to_track is not None and (
            isinstance(max_frame_num_to_track, bool)
            or not isinstance(max_frame_num_to_track, (int, np.integer))
            or max_frame_num_to_track < 0
        ):
            raise InvalidInputError(
                "max_frame_num_to_track: expected None or an int >= 0, got "
                f"{max_frame_num_to_track!r}"
            )
        if not self._cond and not any(obj.pending for obj in self._objects):
            raise InvalidInputError("propagate: expected at least one prompt, got none")
        return self._propagate(
            start_frame_idx, max_frame_num_to_track, bool(reverse), run_mem_encoder
        )

    def _propagate(
        self, start: int | None, max_n: int | None, reverse: bool, run_mem_encoder: bool
    ) -> Iterator[TrackerFrameOutput]:
        self.preflight()
        for frame_idx in self.processing_order(start, max_n, reverse):
            yield track_states([self], frame_idx, reverse, run_mem_encoder)[0]

    # ------------------------------------------------------------------------ one step
    # The three parts of a propagated frame, split so that `track_states` can run the objects
    # of several states as one batch: the plan, the model step, the bookkeeping.

    def memory_plan(self, frame_idx: int, reverse: bool) -> MemoryPlan:
        """The stored frames that tracking ``frame_idx`` reads (not a conditioning frame)."""
        scores = {t: out.eff_iou_score for t, out in self._non_cond.items()}
        return self.tracker.plan_memory(
            frame_idx, list(self._cond), scores, self.num_frames, reverse
        )

    def cond_frame_output(self, frame_idx: int, reverse: bool) -> TrackerFrameOutput:
        """A conditioning frame reached by propagation yields its merged prompt outputs."""
        cond = self._cond[frame_idx]
        if self._clears_around_input():
            self._clear_around(frame_idx)
        return self._frame_output(frame_idx, reverse, cond.pred_masks, cond.object_score_logits)

    def store_step(
        self, frame_idx: int, reverse: bool, step: TrackStepOutput
    ) -> TrackerFrameOutput:
        """Keep a tracked frame's output as memory (it replaces any earlier one)."""
        memory = step.to_memory()
        if memory.maskmem_features is not None:
            memory.maskmem_features = self._stored(memory.maskmem_features)
        self._non_cond[frame_idx] = memory
        self._hidden.discard(frame_idx)
        return self._frame_output(frame_idx, reverse, step.pred_masks, step.object_score_logits)

    def _frame_output(
        self, frame_idx: int, reverse: bool, pred_masks: Tensor, scores: Tensor
    ) -> TrackerFrameOutput:
        self._last = (frame_idx, reverse)
        self._trim()
        pred_masks = pred_masks.to(self._device)
        video_res = F.interpolate(
            pred_masks.float(), size=self.video_size, mode="bilinear", align_corners=False
        )
        return TrackerFrameOutput(
            frame_idx, self.obj_ids, pred_masks, scores, video_res, video_res > 0
        )

    def update_memory(
        self,
        frame_idx: int,
        high_res_masks: Tensor,
        object_score_logits: Tensor,
        binarize: bool = False,
    ) -> None:
        """Re-encode a stored frame's spatial memory from given masks (deferred encoding).

        For propagation with ``run_mem_encoder=False``, where the caller post-processes the
        masks of all objects first (SAM 3 video model). ``high_res_masks (B, 1, S, S)``
        logits (any size; resized to ``input_mask_size`` inside), ``object_score_logits
        (B, 1)`` decide the no-object embedding only; ``binarize``: threshold at 0 instead of
        a sigmoid. The stored masks, pointers and scores are left as they are.
        """
        frame_idx = self._check_frame(frame_idx)
        b = self.num_objects
        if high_res_masks.ndim != 4 or tuple(high_res_masks.shape[:2]) != (b, 1):
            raise InvalidInputError(
                f"high_res_masks: expected ({b}, 1, H, W), got {tuple(high_res_masks.shape)}"
            )
        if tuple(object_score_logits.shape) != (b, 1):
            raise InvalidInputError(
                f"object_score_logits: expected ({b}, 1), got {tuple(object_score_logits.shape)}"
            )
        outs = [self._cond.get(frame_idx), self._non_cond.get(frame_idx)]
        outs = [o for o in outs if o is not None]
        if not outs:
            raise InvalidInputError(f"frame_idx: frame {frame_idx} has no stored output to update")
        feats = self.frame_features(frame_idx).expand(b)
        maskmem = self.tracker.encode_memory(
            feats.vision,
            # Logits stay float32 (sigmoid/threshold precision), whatever the model's dtype.
            high_res_masks.to(device=self._device, dtype=torch.float32),
            object_score_logits.to(device=self._device, dtype=torch.float32),
            binarize=binarize,
        )
        for out in outs:
            out.maskmem_features = self._stored(maskmem)
        self._hidden.discard(frame_idx)  # the official code re-slices this frame per object

    # ------------------------------------------------------------------------ memory bound

    def retained_frames(self) -> set[int]:
        """Tracked frames the bounded memory keeps: those the next step of a usual flow may
        read (`MemoryRule.retained`, the memory selection's own rule; see module doc)."""
        scores = {t: out.eff_iou_score for t, out in self._non_cond.items()}
        return self.tracker.memory_rule.retained(self._cond, scores, self.num_frames, self._last)

    def _trim(self) -> None:
        if not self.bounded_memory:
            return
        keep = self.retained_frames()
        for t in [t for t in self._non_cond if t not in keep]:
            del self._non_cond[t]
            self._hidden.discard(t)
