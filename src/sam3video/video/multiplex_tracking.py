"""SAM 3.1 multiplex tracking: one tracker state's memory bank in bucket space.

The SAM 3.1 tracker (`sam3video.model.tracker_31.MultiplexTrackerModel`) tracks the objects of
a state in buckets of ``M = multiplex_count`` slots (`sam3video.video.multiplex_state`): per
frame it conditions each bucket's view of the frame on that bucket's memories, decodes all
slots of a bucket in one pass, and encodes one memory map per bucket. This module keeps what
a state remembers between frames and decides which stored frames a step reads:

- `sam3video.video.multiplex_memory.multiplex_memory_plan`: the SAM 3.1 memory read (which
  stored frames a step reads; re-exported here);
- `MultiplexTrackingState`: one state's objects, their buckets (`MultiplexState`) and, per
  stored frame (`StoredFrame`), the bucket memories, slot-order pointers and object-order
  masks/scores. Objects join fill-first (`add_masks`: a new state's birth frame becomes its
  prompted frame; a state that already tracked the frame takes newcomers in its free slots
  and that frame stays a tracked one), are reconditioned in place (`recondition`) and leave as
  the official state does (`remove_objects`: slots become ``REMOVED``, emptied buckets are
  sliced out of every stored memory and pointer tensor);
- `track_multiplex_states`: one frame for several states, states with equal memory plans run
  as one batch of buckets (exact: buckets never interact); memory is encoded after the video
  logic's planning (`MultiplexTrackingState.update_memory`) or by `preflight`.

Clicks (new objects, refinements, extraction of a shared object) are the state's
`sam3video.video.multiplex_clicks.MultiplexClicks` methods; the per-frame records
(`StoredFrame`, `MultiplexStepOutput`) live in `sam3video.video.multiplex_frames`.

Proven against the official tracker state (``Sam3VideoTrackingMultiplexDemo``, tiny, synthetic
weights; ``tests/test_multiplex_tracking.py``): births of several objects in a new state,
tracked frames with deferred memory updates, a backfill into free slots, an in-place
reconditioning and a removal that drops a bucket, on masks, scores, pointers, bucket memories
and conditioning objects; clicks creating an object in a state of its own (`add_points`) and
tracking with memory encoding. As officially, masks given to objects (births, backfill,
reconditioning) pass through the video resolution (`_consolidate`): +-1024 logits there, each
given mask losing what another one covers, then antialiased back to the low resolution; other
rows keep their logits.

Choices of ours:

- a new bucket in a state that has stored frames pads those frames' memories and pointers
  with zeros (the official code cannot read such a state; its video logic never adds buckets
  to a state with history, only the interactive merge-back does);
- a frame's image features are referenced, not copied, by every state that stores the frame.

Design and the remaining work: ``docs/sam31_video_logic.md`` (sections 2, 5 and 7).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.errors import (
    FrameIndexError,
    InvalidInputError,
    UnknownIdError,
)
from sam3video.model.tracker import (
    NO_OBJ_SCORE,
    MemoryPlan,
)
from sam3video.model.tracker_31 import MemoryFrame, PointerFrame
from sam3video.video.multiplex_clicks import MultiplexClicks
from sam3video.video.multiplex_frames import FeatureFn31, MultiplexStepOutput, StoredFrame
from sam3video.video.multiplex_memory import multiplex_memory_plan
from sam3video.video.multiplex_state import MultiplexState
from sam3video.video.postprocess import apply_non_overlapping_constraints

# ------------------------------------------------------------------------------------------
# One state's memory bank
# ------------------------------------------------------------------------------------------


class MultiplexTrackingState(MultiplexClicks):
    """The objects of one SAM 3.1 tracker state, their buckets and their memory bank.

    model: a `sam3video.model.tracker_31.MultiplexTrackerModel` (eval mode). get_features:
    `FeatureFn31`. num_frames: the video's length. video_size: ``(H, W)`` of the video (new
    objects' masks pass through it, as officially; default: the mask-prompt size).
    bounded_memory: keep a tracked frame only
    while a later step can still read it (prompted frames are always kept), see
    `retained_frames`. capacity: slots used per bucket (``multiplex_count``; the official
    inference value).

    The video logic drives it like SAM 3's `TrackingState`: `add_masks` (births, mask prompts;
    the new objects take free slots fill-first), `preflight` (encodes pending memories),
    `track_multiplex_states` (one frame for many states), `update_memory` (deferred memory
    encoding after planning), `recondition`, `remove_objects`.
    """

    def __init__(
        self,
        model,
        get_features: FeatureFn31,
        num_frames: int,
        *,
        video_size: tuple[int, int] | None = None,
        bounded_memory: bool = True,
        capacity: int | None = None,
    ) -> None:
        if int(num_frames) < 1:
            raise InvalidInputError(f"num_frames: expected >= 1, got {num_frames}")
        side = model.image_size // model.backbone_stride * 16  # the mask-prompt size
        self.video_size = (side, side) if video_size is None else tuple(int(v) for v in video_size)
        if min(self.video_size) < 1:
            raise InvalidInputError(f"video_size: expected (H, W) >= 1, got {video_size}")
        self.model = model
        self.get_features = get_features
        self.num_frames = int(num_frames)
        self.bounded_memory = bounded_memory
        self.capacity = model.multiplex_count if capacity is None else int(capacity)
        self.reset()

    def reset(self) -> None:
        """Forget every object and memory."""
        self.multiplex = MultiplexState(
            [], self.capacity, multiplex_count=self.model.multiplex_count, object_ids=[]
        )
        self._cond: dict[int, StoredFrame] = {}
        self._non_cond: dict[int, StoredFrame] = {}
        self._tracked: set[int] = set()  # frames this state has output for (official)
        # Official ``frames_already_tracked`` (frames tracked since the last reset), the
        # objects' input frames (True: clicks, False: mask only) and the refined frames.
        self._already: set[int] = set()
        self._inputs: dict[int, dict[int, bool]] = {}
        self._refined: set[int] = set()
        # Conditioning frames whose inputs a click forgot: still read as memory, but
        # re-tracked (and stored as tracked frames too) by the next propagation (official).
        self._stale: set[int] = set()
        self._last: tuple[int, bool] | None = None

    # ------------------------------------------------------------------------ queries

    @property
    def obj_ids(self) -> list[int]:
        """Object ids in object-index order."""
        return list(self.multiplex.object_ids or [])

    @property
    def num_objects(self) -> int:
        return self.multiplex.num_objects

    @property
    def num_buckets(self) -> int:
        return self.multiplex.num_buckets

    @property
    def free_slots(self) -> int:
        """New objects this state takes without a new bucket (the official best-fit test)."""
        return self.multiplex.available_slots

    def is_cond_frame(self, frame_idx: int) -> bool:
        return frame_idx in self._cond

    @property
    def cond_frames(self) -> list[int]:
        return list(self._cond)

    def stored(self, frame_idx: int) -> StoredFrame | None:
        """The frame's latest output: its tracked entry for a prompted frame tracked again
        (`_stale`), else the prompted entry, else the tracked one."""
        if frame_idx in self._stale and frame_idx in self._non_cond:
            return self._non_cond[frame_idx]
        return self._cond.get(frame_idx, self._non_cond.get(frame_idx))

    def _ref(self, ref) -> StoredFrame:
        """The stored frame a memory plan item names (a frame may be in both stores)."""
        return self._cond[ref.frame] if ref.from_cond else self._non_cond[ref.frame]

    def stored_frames(self) -> list[int]:
        return sorted(set(self._cond) | set(self._non_cond))

    def _check_frame(self, frame_idx: object) -> int:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, int):
            raise FrameIndexError(f"frame_idx: expected an int, got {frame_idx!r}")
        if not 0 <= frame_idx < self.num_frames:
            raise FrameIndexError(f"frame_idx: expected 0..{self.num_frames - 1}, got {frame_idx}")
        return frame_idx

    def memory_plan(self, frame_idx: int, reverse: bool) -> MemoryPlan:
        """What tracking ``frame_idx`` reads (SAM 3.1 rule, `multiplex_memory_plan`)."""
        m = self.model
        return multiplex_memory_plan(
            frame_idx,
            list(self._cond),
            self._non_cond.keys(),
            self.num_frames,
            reverse,
            num_maskmem=m.num_maskmem,
            max_obj_ptrs=m.max_obj_ptrs_in_encoder,
        )

    # ------------------------------------------------------------------------ objects

    def add_masks(self, frame_idx: int, obj_ids: Sequence[int], masks: Tensor) -> None:
        """New objects from binary masks ``(n, H, W)`` (the mask-prompt size) on a frame.

        An empty state takes them in ``ceil(n / capacity)`` buckets and the frame becomes a
        prompted frame. A state that already tracked the frame appends them (free slots
        first, a new bucket only when they do not fit, as the official ``add_new_masks``);
        that frame stays a tracked frame of the state, the newcomers become its conditioning
        objects. The frame's memory is encoded by the next `preflight`.
        """
        frame_idx = self._check_frame(frame_idx)
        obj_ids = [int(i) for i in obj_ids]
        taken = set(self.obj_ids) & set(obj_ids)
        if taken or len(set(obj_ids)) != len(obj_ids) or not obj_ids:
            raise InvalidInputError(
                f"obj_ids: expected new, distinct ids, got {obj_ids} (already here: "
                f"{sorted(taken)})"
            )
        if masks.ndim != 3 or masks.shape[0] != len(obj_ids):
            raise InvalidInputError(
                f"masks: expected ({len(obj_ids)}, H, W), got {tuple(masks.shape)}"
            )
        existing = self.stored(frame_idx)
        if self.num_objects and (existing is None or frame_idx not in self._tracked):
            raise InvalidInputError(
                f"frame_idx: objects join a non-empty state only on a frame it has tracked, "
                f"got frame {frame_idx}"
            )
        inter, prop = self.get_features(frame_idx)
        model = self.model
        heads = model.use_mask_as_output(
            model.interactive_features(inter.vision), inter.high_res, masks[:, None].float()
        )
        before = self.multiplex.copy()
        old_ptr = None if existing is None else before.demux(existing.obj_ptr)
        for obj_id in obj_ids:
            self._inputs.setdefault(obj_id, {})[frame_idx] = False
        if self.num_objects == 0:
            self.multiplex = MultiplexState.for_objects(
                len(obj_ids), model.multiplex_count, self.capacity, object_ids=obj_ids
            )
        else:
            self.multiplex.add_objects(
                len(obj_ids),
                object_ids=obj_ids,
                allow_new_buckets=self.multiplex.available_slots < len(obj_ids),
            )
        if existing is None:
            frame = StoredFrame(
                obj_ids=tuple(obj_ids),
                pred_masks=self._consolidate(heads.low_res_masks, list(range(len(obj_ids))), masks),
                object_score_logits=heads.object_score_logits,
                obj_ptr=self.multiplex.mux(heads.obj_ptr),
                maskmem_features=None,
                image_features=prop.vision,
                image_pos=prop.vision_pos,
                conditioning=frozenset(obj_ids),
            )
            self._cond[frame_idx] = frame
            self._tracked.add(frame_idx)
            self._non_cond.pop(frame_idx, None)
            return
        ptr = torch.cat([old_ptr, heads.obj_ptr.to(old_ptr.dtype)])
        n_old = len(existing.obj_ids)
        existing.obj_ids = existing.obj_ids + tuple(obj_ids)
        low = torch.cat([existing.pred_masks, heads.low_res_masks.to(existing.pred_masks.dtype)])
        existing.pred_masks = self._consolidate(low, list(range(n_old, low.shape[0])), masks)
        existing.object_score_logits = torch.cat(
            [existing.object_score_logits, heads.object_score_logits]
        )
        existing.obj_ptr = self.multiplex.mux(ptr)
        existing.maskmem_features = None
        existing.conditioning = existing.conditioning | frozenset(obj_ids)
        if existing.obj_ptr.shape[0] != before.num_buckets:
            # A new bucket: the other stored frames gain an empty bucket (zeros, as muxing
            # their objects would give) so that every memory keeps the state's layout.
            for _, other in self._all_frames():
                if other is not existing:
                    self._grow(other, before)

    def _consolidate(self, low_res: Tensor, rows: list[int], masks: Tensor) -> Tensor:
        """The frame's low-res logits once masks ``(n, H, W)`` are given to ``rows`` (official
        ``add_new_masks`` + preflight consolidation): each given mask becomes +-1024 logits at
        the video resolution, loses what another given mask covers, and comes back to the low
        resolution (antialiased); the other rows keep their logits (the official consolidation
        takes them from the per-object outputs of the frame)."""
        s = low_res.shape[-1]
        big = masks[:, None].float()
        if tuple(big.shape[-2:]) != self.video_size:
            big = F.interpolate(big, size=self.video_size, mode="bilinear", antialias=True)
        inside = big > 0.5
        new = torch.where(inside, -NO_OBJ_SCORE, NO_OBJ_SCORE)
        if inside.shape[0] > 1:
            covered = inside.sum(dim=0, keepdim=True)
            others = (covered - inside.to(covered.dtype)) > 0
            new = torch.where(others, NO_OBJ_SCORE, new)
        out = low_res.float().clone()
        out[torch.tensor(rows, device=out.device)] = F.interpolate(
            new, size=(s, s), mode="bilinear", antialias=True
        )
        return out

    def _all_frames(self):
        yield from self._cond.items()
        yield from self._non_cond.items()

    def _grow(self, frame: StoredFrame, before: MultiplexState) -> None:
        extra = self.multiplex.num_buckets - before.num_buckets
        pad = frame.obj_ptr.new_zeros((extra, *frame.obj_ptr.shape[1:]))
        frame.obj_ptr = torch.cat([frame.obj_ptr, pad])
        if frame.maskmem_features is not None:
            pad = frame.maskmem_features.new_zeros((extra, *frame.maskmem_features.shape[1:]))
            frame.maskmem_features = torch.cat([frame.maskmem_features, pad])

    def recondition(self, frame_idx: int, obj_ids: Sequence[int], masks: Tensor) -> None:
        """Replace tracked objects' outputs on a tracked frame by masks ``(n, H, W)`` (the
        official in-place reconditioning: no new prompted frame; the objects become the
        frame's conditioning objects; its memory is encoded again by the next
        `update_memory` or `preflight`)."""
        frame = self.stored(self._check_frame(frame_idx))
        unknown = [i for i in obj_ids if i not in self.obj_ids]
        if frame is None or unknown:
            raise InvalidInputError(
                f"recondition: expected tracked objects on a stored frame, got frame "
                f"{frame_idx} (stored: {frame is not None}), unknown ids {unknown}"
            )
        inter, _ = self.get_features(frame_idx)
        heads = self.model.use_mask_as_output(
            self.model.interactive_features(inter.vision), inter.high_res, masks[:, None].float()
        )
        rows = torch.tensor(frame.rows(obj_ids), device=frame.pred_masks.device)
        low = frame.pred_masks.index_copy(0, rows, heads.low_res_masks.to(frame.pred_masks.dtype))
        frame.pred_masks = self._consolidate(low, rows.tolist(), masks)
        frame.object_score_logits = frame.object_score_logits.index_copy(
            0, rows, heads.object_score_logits.to(frame.object_score_logits.dtype)
        )
        ptr = self.multiplex.demux(frame.obj_ptr)
        index = torch.tensor([self.obj_ids.index(i) for i in obj_ids], device=ptr.device)
        frame.obj_ptr = self.multiplex.mux(ptr.index_copy(0, index, heads.obj_ptr.to(ptr.dtype)))
        frame.conditioning = frame.conditioning | frozenset(obj_ids)
        frame.maskmem_features = None

    def remove_objects(self, obj_ids: Sequence[int]) -> bool:
        """Remove objects; False when none is left (the caller drops the state).

        As the official state: their slots become ``REMOVED``, buckets left without objects
        are dropped from every stored memory and pointer tensor, their rows leave every
        stored frame.
        """
        current = self.obj_ids
        unknown = [i for i in obj_ids if i not in current]
        if unknown:
            raise UnknownIdError(f"obj_ids: expected ids of this state {current}, got {unknown}")
        gone = set(obj_ids)
        kept = self.multiplex.remove_objects([current.index(i) for i in gone])
        for obj_id in gone:
            self._inputs.pop(obj_id, None)
        for _, frame in list(self._all_frames()):
            frame.obj_ptr = frame.obj_ptr[kept]
            if frame.maskmem_features is not None:
                frame.maskmem_features = frame.maskmem_features[kept]
            keep = [i for i, obj_id in enumerate(frame.obj_ids) if obj_id not in gone]
            frame.obj_ids = tuple(frame.obj_ids[i] for i in keep)
            frame.pred_masks = frame.pred_masks[keep]
            frame.object_score_logits = frame.object_score_logits[keep]
            frame.conditioning = frame.conditioning - gone
        return self.num_objects > 0

    def remove_object(self, obj_id: int) -> bool:
        """`remove_objects` of one id (the SAM 3 `TrackingState` method the session calls)."""
        return self.remove_objects([obj_id])

    # ------------------------------------------------------------------------ memory

    def _frame_masks(self, frame: StoredFrame) -> tuple[Tensor, Tensor, Tensor]:
        """A stored frame's rows in the state's object order (absent objects: no-object
        logits and scores), with the conditioning flags."""
        order = self.obj_ids
        where = {obj_id: i for i, obj_id in enumerate(frame.obj_ids)}
        s = frame.pred_masks.shape[-1]
        masks = frame.pred_masks.new_full((len(order), 1, s, s), NO_OBJ_SCORE)
        scores = frame.object_score_logits.new_full((len(order), 1), NO_OBJ_SCORE)
        present = [(k, where[i]) for k, i in enumerate(order) if i in where]
        if present:
            dst = torch.tensor([k for k, _ in present], device=masks.device)
            src = torch.tensor([r for _, r in present], device=masks.device)
            masks[dst] = frame.pred_masks[src]
            scores[dst] = frame.object_score_logits[src]
        cond = torch.tensor([i in frame.conditioning for i in order], device=masks.device)
        return masks, scores, cond

    def preflight(self) -> None:
        """Encode the memory of every stored frame that has none yet (new prompts, births,
        reconditioning): masks at the model's image size with pixel-wise non-overlap between
        this state's objects, as the official consolidation before propagation."""
        size = self.model.image_size
        for frame_idx, frame in self._all_frames():
            if frame.maskmem_features is not None or frame.memory_dropped or not self.num_objects:
                continue
            masks, scores, cond = self._frame_masks(frame)
            high = F.interpolate(masks.float(), size=(size, size), mode="bilinear")
            high = apply_non_overlapping_constraints(high)
            self._encode(frame_idx, frame, high, scores, cond)
        self._trim()

    def forget_tracked_prompted_frames(self) -> None:
        """Drop the tracked entry of every prompted frame (a prompted frame re-tracked by a
        propagation keeps one next to its prompted entry): what the official preflight at the
        start of a partial propagation does."""
        for t in self._cond:
            self._non_cond.pop(t, None)

    def _encode(self, frame_idx, frame, high_res_masks, scores, cond) -> None:
        _, prop = self.get_features(frame_idx)
        feats, _ = self.model.encode_memory(
            prop.vision, high_res_masks, scores, self.multiplex.slots(high_res_masks.device), cond
        )
        frame.maskmem_features = feats

    def update_memory(
        self, frame_idx: int, high_res_masks: Tensor, object_score_logits: Tensor
    ) -> None:
        """Encode a stored frame's memory from the video logic's masks (deferred encoding):
        ``high_res_masks (N, 1, H, W)`` logits and ``object_score_logits (N, 1)`` in this
        state's object order. The stored masks, scores and pointers stay as they are."""
        frame = self.stored(self._check_frame(frame_idx))
        n = self.num_objects
        if frame is None:
            raise InvalidInputError(f"frame_idx: frame {frame_idx} has no stored output")
        if high_res_masks.ndim != 4 or tuple(high_res_masks.shape[:2]) != (n, 1):
            raise InvalidInputError(
                f"high_res_masks: expected ({n}, 1, H, W), got {tuple(high_res_masks.shape)}"
            )
        if tuple(object_score_logits.shape) != (n, 1):
            raise InvalidInputError(
                f"object_score_logits: expected ({n}, 1), got {tuple(object_score_logits.shape)}"
            )
        _, _, cond = self._frame_masks(frame)
        self._encode(frame_idx, frame, high_res_masks.float(), object_score_logits.float(), cond)

    # ------------------------------------------------------------------------ bounded memory

    def retained_frames(self) -> set[int]:
        """Tracked frames a later step can still read.

        SAM 3.1 reads tracked frames by distance only (no memory selection): at most
        ``max_obj_ptrs_in_encoder - 1`` frames back (pointers; spatial memories reach 6). So
        a tracked frame is kept when it lies within that distance behind the last tracked
        frame in the direction of tracking, or on either side of a prompted frame (where a
        new pass may start).
        """
        k = self.model.max_obj_ptrs_in_encoder - 1
        keep = set()
        for t in self._non_cond:
            if any(abs(t - c) <= k for c in self._cond):
                keep.add(t)
            elif self._last is not None:
                last, reverse = self._last
                if (0 <= t - last <= k) if reverse else (0 <= last - t <= k):
                    keep.add(t)
        return keep

    def _trim(self) -> None:
        if not self.bounded_memory:
            return
        keep = self.retained_frames()
        for t in [t for t in self._non_cond if t not in keep]:
            del self._non_cond[t]

    def memory_footprint(self, include_features: bool = True) -> dict[str, int]:
        """Bytes held by stored frames (image features are shared; counted once per frame).
        ``bytes``: their sum, with the stored image features unless ``include_features`` is
        False (a session counts its shared feature cache once)."""
        total = {"frames": 0, "maskmem": 0, "pointers": 0, "masks": 0}
        features = 0
        for _, f in self._all_frames():
            total["frames"] += 1
            if f.maskmem_features is not None:
                total["maskmem"] += f.maskmem_features.numel() * f.maskmem_features.element_size()
            total["pointers"] += f.obj_ptr.numel() * f.obj_ptr.element_size()
            total["masks"] += f.pred_masks.numel() * f.pred_masks.element_size()
            if include_features:
                for t in (f.image_features, f.image_pos):
                    features += t.numel() * t.element_size()
        total["bytes"] = total["maskmem"] + total["pointers"] + total["masks"] + features
        return total


def place_births(states: Sequence[MultiplexTrackingState], count: int) -> int | None:
    """Which state takes ``count`` objects born on one frame (the official best fit of
    ``_tracker_add_new_objects`` with dynamic multiplexing): among the states with at least
    ``count`` free slots, the one with the fewest (the first of equals); None when none has
    room (the caller starts a new state). Returns an index into ``states``."""
    best, best_free = None, None
    for i, state in enumerate(states):
        free = state.free_slots
        if free >= count and (best_free is None or free < best_free):
            best, best_free = i, free
    return best


# ------------------------------------------------------------------------------------------
# One frame for many states
# ------------------------------------------------------------------------------------------


def track_multiplex_states(
    states: Sequence[MultiplexTrackingState],
    frame_idx: int,
    reverse: bool,
    run_mem_encoder: bool = False,
) -> list[MultiplexStepOutput]:
    """Track one frame for several states of a video.

    States whose memory plans are equal (and that share the model and the frame features) run
    as ONE batch of buckets: buckets never interact (memory attention, decoder and memory
    encoder are per bucket), so this is each state tracked alone up to float rounding. A
    prompted frame of a state yields its stored outputs. Memory is encoded now only with
    ``run_mem_encoder`` (the video logic encodes after planning, `update_memory`). The
    states must have been preflighted. Returns one output per state, in order.
    """
    outputs: list[MultiplexStepOutput | None] = [None] * len(states)
    groups: dict[tuple, tuple[MemoryPlan, list[int]]] = {}
    for i, state in enumerate(states):
        state._check_frame(frame_idx)
        state._already.add(frame_idx)
        if state.is_cond_frame(frame_idx) and frame_idx not in state._stale:
            outputs[i] = _output(state, frame_idx, reverse, state._cond[frame_idx])
            continue
        plan = state.memory_plan(frame_idx, reverse)
        # Which spatial memories exist (an unencoded or dropped one is skipped) is part of the
        # plan: states differing there cannot share a batch.
        encoded = tuple(state._ref(r).maskmem_features is not None for r in plan.spatial)
        key = (
            id(state.model),
            state.get_features,
            tuple(plan.spatial),
            tuple(plan.pointers),
            encoded,
        )
        groups.setdefault(key, (plan, []))[1].append(i)
    for plan, members in groups.values():
        group = [states[i] for i in members]
        first = group[0]
        model = first.model
        _, prop = first.get_features(frame_idx)
        memories, pointers = [], []
        for ref in plan.spatial:
            frames = [s._ref(ref) for s in group]
            if any(f.maskmem_features is None for f in frames):
                continue  # not encoded: skipped, as the official read does
            memories.append(
                MemoryFrame(
                    torch.cat([f.maskmem_features for f in frames]),
                    frames[0].image_features,
                    frames[0].image_pos,
                    ref.pos,
                )
            )
        for ref in plan.pointers:
            frames = [s._ref(ref) for s in group]
            pointers.append(PointerFrame(torch.cat([f.obj_ptr for f in frames]), ref.pos))
        buckets = [s.num_buckets for s in group]
        sizes = [s.num_objects for s in group]
        slots = _joint_slots(group, prop.vision.device)
        features = model.condition_on_memory(
            prop.vision, prop.vision_pos, sum(buckets), memories, pointers, first.num_frames
        )
        heads = model.forward_propagation_heads(features, prop.high_res, slots)
        maskmem = None
        if run_mem_encoder:
            maskmem, _ = model.encode_memory(
                prop.vision,
                heads.high_res_masks,
                heads.object_score_logits,
                slots,
                torch.zeros(sum(sizes), dtype=torch.bool, device=slots.device),
            )
        row = bucket = 0
        for i, state, n, b in zip(members, group, sizes, buckets):
            rows = slice(row, row + n)
            frame = StoredFrame(
                obj_ids=tuple(state.obj_ids),
                pred_masks=heads.low_res_masks[rows],
                object_score_logits=heads.object_score_logits[rows],
                obj_ptr=state.multiplex.mux(heads.obj_ptr[rows]),
                maskmem_features=None if maskmem is None else maskmem[bucket : bucket + b],
                image_features=prop.vision,
                image_pos=prop.vision_pos,
                conditioning=frozenset(),
            )
            state._non_cond[frame_idx] = frame
            state._tracked.add(frame_idx)
            outputs[i] = _output(state, frame_idx, reverse, frame)
            row, bucket = row + n, bucket + b
    return outputs  # type: ignore[return-value]


def _joint_slots(group: Sequence[MultiplexTrackingState], device) -> Tensor:
    """The slot tables of several states stacked, object indices offset per state."""
    tables, offset = [], 0
    for state in group:
        table = state.multiplex.slots(device)
        tables.append(torch.where(table >= 0, table + offset, table))
        offset += state.num_objects
    return torch.cat(tables)


def _output(state, frame_idx, reverse, frame: StoredFrame) -> MultiplexStepOutput:
    state._last = (frame_idx, reverse)
    state._trim()
    masks, scores, _ = state._frame_masks(frame)
    return MultiplexStepOutput(frame_idx, state.obj_ids, masks, scores)
