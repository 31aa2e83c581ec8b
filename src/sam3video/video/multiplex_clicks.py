"""Clicks on a SAM 3.1 tracker state: new objects, refinements, extraction of a shared object.

`MultiplexClicks` is a part of `sam3video.video.multiplex_tracking.MultiplexTrackingState`
(its click methods, kept here to keep that module small). The official behaviour reproduced
(docs/sam31_video_logic.md 2.2.1, recorded by the "refine" and "shared" sessions
of ``tools/reference/gen_video31.py``):

- a click on a new object id creates it in an empty state of its own (`add_points`);
- a click on an object that shares its state with others and was never clicked moves it to a
  state of its own first (`extract_object`, the official video model's extraction): its rows
  of every stored frame (masks, scores, pointers, conditioning) go with it, its slot in the
  old state becomes ``REMOVED``; its memories do not (the official demux of a bucket memory
  ``(B, C, h, w)`` fails, the memory is dropped): such frames are read for their pointers only
  until tracked again, and the new state has tracked no frame yet;
- further clicks on an object alone in its state (`refine_points`): "refine" on a frame the
  state has tracked, "gap fill" elsewhere; both decode the clicks alone (interactive heads, no
  memory). Deviation: on a frame refined before and tracked since, the official code would
  feed the previous clicks' logits back as a mask prompt but fails an assertion
  (``iter_use_prev_mask_pred`` is off in the 3.1 builder; observed with the reference); we
  decode the new clicks alone there too.

Packing clicked objects (ours, opt-in: ``pack_clicked_objects``, docs/sam31_video_logic.md
section 9): `join_object` takes a fresh one-object state (its click decoded by `add_points`
exactly as above) into a free slot of a state that has the click frame stored, the inverse
of `extract_object`; `refine_points` with ``in_place=True`` refines an object of a shared
state in that state (clicks decoded alone, its row of the frame replaced).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.errors import InvalidInputError, UnknownIdError, UnsupportedModelError
from sam3video.video.multiplex_frames import MultiplexStepOutput, StoredFrame
from sam3video.video.multiplex_state import MultiplexState


class MultiplexClicks:
    """Click methods of `MultiplexTrackingState` (module doc)."""

    def add_points(
        self, frame_idx: int, obj_id: int, points: Tensor, labels: Tensor
    ) -> MultiplexStepOutput:
        """A new object from clicks, in this (empty) state: the official path of a click on
        an unknown object id, which always gets a state of its own.

        ``points (P, 2)``: ``(x, y)`` in pixels of the model's ``image_size`` square (the
        caller scales relative coordinates); ``labels (P,)``: 1 positive, 0 negative, 2/3 box
        corners. Decoded without memory by the interactive heads (3 candidates when
        ``P <= 1``, as ``multimask_min_pt_num=0``/``max=1``); the frame becomes the state's
        prompted frame; its low-res logits go to the video resolution and back (antialiased),
        as the official consolidation does. Further clicks: `refine_points`.
        """
        frame_idx = self._check_frame(frame_idx)
        if self.num_objects:
            raise InvalidInputError(
                f"obj_id: clicks create an object in an empty state only (further clicks: "
                f"refine_points), this state holds {self.obj_ids}"
            )
        model = self.model
        self.multiplex = MultiplexState.for_objects(
            1, model.multiplex_count, self.capacity, object_ids=[int(obj_id)]
        )
        self._inputs[int(obj_id)] = {frame_idx: True}
        return self._click_frame(frame_idx, int(obj_id), points, labels)

    def refine_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: Tensor,
        labels: Tensor,
        *,
        in_place: bool = False,
    ) -> MultiplexStepOutput:
        """New clicks (replacing the frame's earlier ones) on the object of a one-object state
        (official ``add_new_points`` on an existing object; docs/sam31_video_logic.md 2.2.1).

        On a frame in ``frames_already_tracked`` ("refine": extraction to a singleton state,
        decode, merge-back, which for one object restores the same layout and memories) or
        elsewhere ("gap fill"), the clicks are decoded alone as in `add_points` and the frame
        becomes a conditioning frame. A frame refined before and tracked since is decoded the
        same way (ours: the official decoder asserts ``iter_use_prev_mask_pred``, which the
        3.1 builder leaves False, and fails there). Side effects kept: the extraction empties
        ``frames_already_tracked`` when the object's input frames were all the conditioning
        frames; every click forgets mask-only input frames (those conditioning frames stay in
        memory but are re-tracked by the next propagation). `UnsupportedModelError`: a state
        of several objects (the session moves a shared object to a state of its own first,
        `extract_object`), unless ``in_place``.

        ``in_place`` (ours, packed clicked objects, no official counterpart): in a state of
        several objects the clicks are decoded alone the same way and replace the object's
        row of the frame, which must be stored by the state (prompted or tracked); the frame
        becomes (or stays) a prompted frame of the state holding the other objects' rows as
        they were, the clicked object its conditioning object; its memory is encoded again by
        the next `preflight`. `InvalidInputError` on a frame the state has not stored (the
        other objects would have no output there; the session extracts the object instead).
        """
        frame_idx = self._check_frame(frame_idx)
        obj_id = int(obj_id)
        if obj_id not in self.obj_ids:
            raise UnknownIdError(f"obj_id: expected one of {self.obj_ids}, got {obj_id}")
        if in_place and self.num_objects > 1 and self.stored(frame_idx) is None:
            raise InvalidInputError(
                f"frame_idx: refining object {obj_id} in place needs a frame its shared state "
                f"has stored ({self.stored_frames()}), got {frame_idx}"
            )
        if self.num_objects != 1 and not in_place:
            raise UnsupportedModelError(
                f"obj_id: refining object {obj_id} in its SAM 3.1 tracker state shared with "
                f"{self.num_objects - 1} other object(s) is not supported (the official code "
                "re-muxes the state's memories per object there)"
            )
        inputs = self._inputs.setdefault(obj_id, {})
        if frame_idx in self._already:  # official "refine" path
            inputs_now = set(inputs) | {frame_idx}
            if set(self._cond) <= inputs_now:
                self._already.clear()
            else:
                self._already -= inputs_now & set(self._cond)
            self._refined.add(frame_idx)
        self._stale |= {f for f, pts in inputs.items() if not pts and f in self._cond}
        self._inputs[obj_id] = {f: True for f, pts in inputs.items() if pts}
        self._inputs[obj_id][frame_idx] = True
        return self._click_frame(frame_idx, obj_id, points, labels)

    def extract_object(self, obj_id: int):
        """Move ``obj_id`` out of this shared state into a new state of its own, returned.

        The official video model's extraction before a click on an object that shares its
        state (and was never clicked): the new state holds, for every stored frame that has
        the object, its rows (masks, scores, pointer re-muxed to slot 0, conditioning flag) in
        the same store (prompted or tracked), the frame's image features, but no memory
        (dropped: `StoredFrame.memory_dropped`); it has tracked no frame yet (the official new
        state starts with an empty ``frames_already_tracked``) and keeps the object's inputs.
        In this state the object's slot becomes ``REMOVED`` (`remove_objects`).
        """
        obj_id = int(obj_id)
        current = self.obj_ids
        if obj_id not in current or len(current) < 2:
            raise InvalidInputError(
                f"obj_id: expected an object of this shared state {current}, got {obj_id}"
            )
        index = current.index(obj_id)
        single = type(self)(
            self.model,
            self.get_features,
            self.num_frames,
            video_size=self.video_size,
            bounded_memory=self.bounded_memory,
            capacity=self.capacity,
        )
        single.multiplex = MultiplexState.for_objects(
            1, self.model.multiplex_count, self.capacity, object_ids=[obj_id]
        )
        for source, target in ((self._cond, single._cond), (self._non_cond, single._non_cond)):
            for t, frame in source.items():
                if obj_id not in frame.obj_ids:
                    continue
                row = frame.rows([obj_id])[0]
                ptr = self.multiplex.demux(frame.obj_ptr)[index : index + 1]
                target[t] = StoredFrame(
                    obj_ids=(obj_id,),
                    pred_masks=frame.pred_masks[row : row + 1].clone(),
                    object_score_logits=frame.object_score_logits[row : row + 1].clone(),
                    obj_ptr=single.multiplex.mux(ptr.clone()),
                    maskmem_features=None,
                    image_features=frame.image_features,
                    image_pos=frame.image_pos,
                    conditioning=frame.conditioning & {obj_id},
                    memory_dropped=True,
                )
        inputs = dict(self._inputs.get(obj_id, {}))
        single._inputs[obj_id] = inputs
        single._tracked = set(single._cond) | set(single._non_cond)
        # Prompted frames without an input of the object: their stored outputs are not the
        # official consolidated ones; the next propagation tracks them again.
        single._stale = {t for t in single._cond if t not in inputs}
        single._last = self._last
        self.remove_objects([obj_id])
        return single

    def join_object(self, single) -> None:
        """Take the object of ``single``, a one-object state fresh from `add_points`, into a
        free slot of this state (ours, packed clicked objects; the inverse of
        `extract_object`, no official counterpart).

        The object takes the first free slot (`MultiplexState.add_objects`, never a new
        bucket); its row of each frame ``single`` stores (its prompted click frame) joins this
        state's entry of that frame, which must exist (prompted or tracked: a state that
        yields a frame must have every object's output there, the same rule as births): the
        frame becomes, or stays, a prompted frame of this state, with the other objects'
        rows as they were and the object its conditioning object; its memory is encoded by
        the next `preflight`. The object's inputs come along; ``single`` is left as it was
        (the caller drops it).
        """
        ids = single.obj_ids
        frames = single.stored_frames()
        if len(ids) != 1 or ids[0] in self.obj_ids or single._non_cond:
            raise InvalidInputError(
                f"single: expected a one-object state with prompted frames only and an object "
                f"new here {self.obj_ids}, got objects {ids}, tracked frames "
                f"{sorted(single._non_cond)}"
            )
        missing = [t for t in frames if self.stored(t) is None]
        if self.free_slots < 1 or missing:
            raise InvalidInputError(
                f"single: expected a free slot (have {self.free_slots}) and its frames stored "
                f"here, frames {missing} are not"
            )
        obj_id = ids[0]
        self.multiplex.add_objects(1, object_ids=[obj_id], allow_new_buckets=False)
        for t in frames:
            frame = single._cond[t]
            ptr = single.multiplex.demux(frame.obj_ptr)
            self._put_row(t, obj_id, frame.pred_masks, frame.object_score_logits, ptr)
        self._inputs[obj_id] = dict(single._inputs.get(obj_id, {}))

    def _put_row(
        self, frame_idx: int, obj_id: int, low_res: Tensor, score_logits: Tensor, ptr: Tensor
    ) -> StoredFrame:
        """Write one object's clicked outputs (``(1, 1, s, s)`` logits, ``(1, 1)`` score,
        ``(1, C)`` pointer) into the stored entry of a frame of this shared state (the object
        is one of its objects) and make it a prompted frame, the object conditioning."""
        base = self.stored(frame_idx)
        keep = [k for k, i in enumerate(base.obj_ids) if i != obj_id]
        pointers = self.multiplex.demux(base.obj_ptr).clone()
        pointers[self.obj_ids.index(obj_id)] = ptr[0].to(pointers.dtype)
        frame = StoredFrame(
            obj_ids=tuple(base.obj_ids[k] for k in keep) + (obj_id,),
            pred_masks=torch.cat([base.pred_masks[keep], low_res.to(base.pred_masks.dtype)]),
            object_score_logits=torch.cat(
                [
                    base.object_score_logits[keep],
                    score_logits.to(base.object_score_logits.dtype),
                ]
            ),
            obj_ptr=self.multiplex.mux(pointers),
            maskmem_features=None,
            image_features=base.image_features,
            image_pos=base.image_pos,
            conditioning=base.conditioning | {obj_id},
        )
        self._cond[frame_idx] = frame
        self._tracked.add(frame_idx)
        self._non_cond.pop(frame_idx, None)
        self._stale.discard(frame_idx)
        return frame

    def _click_frame(
        self, frame_idx: int, obj_id: int, points: Tensor, labels: Tensor
    ) -> MultiplexStepOutput:
        """Decode clicks for the state's only object; store the frame as a prompted frame."""
        points = torch.as_tensor(points, dtype=torch.float32)
        labels = torch.as_tensor(labels, dtype=torch.int32)
        if points.ndim != 2 or points.shape[-1] != 2 or labels.shape != points.shape[:1]:
            raise InvalidInputError(
                f"points/labels: expected (P, 2) and (P,), got {tuple(points.shape)} and "
                f"{tuple(labels.shape)}"
            )
        inter, prop = self.get_features(frame_idx)
        model = self.model
        device = inter.vision.device
        heads = model.forward_interactive_heads(
            model.interactive_features(inter.vision),
            inter.high_res,
            point_coords=points[None].to(device),
            point_labels=labels[None].to(device),
            multimask_output=points.shape[0] <= 1,
        )
        low = heads.low_res_masks.float()
        s = low.shape[-1]
        video = F.interpolate(low, size=self.video_size, mode="bilinear")
        if self.num_objects > 1:  # ours: in-place refinement of a packed object
            pred = F.interpolate(video, size=(s, s), mode="bilinear", antialias=True)
            self._put_row(frame_idx, obj_id, pred, heads.object_score_logits, heads.obj_ptr)
            return MultiplexStepOutput(frame_idx, [obj_id], pred, heads.object_score_logits, video)
        frame = StoredFrame(
            obj_ids=(obj_id,),
            pred_masks=F.interpolate(video, size=(s, s), mode="bilinear", antialias=True),
            object_score_logits=heads.object_score_logits,
            obj_ptr=self.multiplex.mux(heads.obj_ptr),
            maskmem_features=None,
            image_features=prop.vision,
            image_pos=prop.vision_pos,
            conditioning=frozenset([obj_id]),
        )
        self._cond[frame_idx] = frame
        self._tracked.add(frame_idx)
        self._non_cond.pop(frame_idx, None)
        self._stale.discard(frame_idx)
        return MultiplexStepOutput(
            frame_idx, self.obj_ids, frame.pred_masks, heads.object_score_logits, video
        )
