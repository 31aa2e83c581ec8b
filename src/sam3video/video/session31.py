"""A video session on a SAM 3.1 ("Object Multiplex") model: the same requests as SAM 3.

`VideoSession31` is a `VideoSession` whose tracker is the multiplex tracker
(`sam3video.video.multiplex_tracking`) and whose per-frame decisions are the 3.1 planner's
(`sam3video.video.planner31`). Everything else is the SAM 3 session's: request handling, the
ledger of committed outputs, the generation counter (stale streams), cancel, observers, the
hotstart output buffer, the action-history dispatch (detect / retrack / fetch) and the output
format. The predictor picks it from the model's config (``config.version == "sam3.1"``).

Per frame of a full propagation (docs/sam31_video_logic.md, section 7 item 4):

1. backbone: one trunk pass, then the detector pyramid and the propagation pyramid (tracking
   and memory); the interactive pyramid only on frames that need it (clicks, births,
   reconditioning);
2. the concept's detector heads on ALL queries -> `select_detections31` (score > 0.4, IoM NMS,
   border rule);
3. every tracker state advances one frame without memory encoding
   (`track_multiplex_states`: states with equal memory plans run as one batch of buckets);
4. `plan_frame31` (IoM association with the ambiguity rule, hotstart, reconditioning every
   16th frame, occlusion suppression, object cap, masklet confirmation);
5. execution in the official order: in-place reconditioning, deferred memory update per
   state, births placed by best fit (`place_births`: the fullest state with room takes them
   all, else a new state), hotstart removals;
6. outputs: tracker masks for existing objects, detection masks for newborns; released after
   the hotstart buffer with the objects still unconfirmed two frames later hidden
   (`hidden_ids31`; the table is local to one propagation pass, as officially).

Requests this session serves like the SAM 3 one: a text and/or box concept (``add_prompt``
with text/boxes; a box-only concept reads the detector's text row 0, as the 3.1 code),
clicks creating a NEW object (its own state, the official path), clicks refining an object
(`MultiplexTrackingState.refine_points`; an object sharing its state and never clicked is
first moved to a state of its own, `MultiplexTrackingState.extract_object`, as officially;
docs/sam31_video_logic.md 2.2.1), ``propagate_in_video`` (forward, backward, both; full,
partial and fetch steps), ``remove_object``, ``remove_concept``, ``reset_session``,
``cancel_propagation``, ``close_session``.

Extensions (no official counterpart; docs/sam31_video_logic.md section 9): several concepts
in one session (``concept_mode="add"`` or several texts), planned apart as in the SAM 3
session, each concept's births kept in states of its own objects (`_det_track_one_frame`);
live and stream sessions (`sam3video.video.multiplex_live.LiveSession31`); opt-in packing of
clicked objects into shared states (``pack_clicked_objects``: a new clicked object, decoded
alone as officially, joins a state of clicked objects that has the frame stored and a free
slot, `MultiplexTrackingState.join_object`; see `add_points`).

Not served (raise `UnsupportedModelError`, a `NotImplementedError`, before anything
changes) without ``pack_clicked_objects``: clicks on an object clicked before that now shares
its state with others (births joined it; the official code refines it inside the shared
state); with it, they are served as `add_points` says. Refining a frame again
after it was re-tracked decodes the clicks alone (the official code fails an assertion
there). SAM 3's deviations kept here: exemplar boxes act on every frame; a propagation
starts by default at the first prompted frame; objects created by clicks in a session without
a concept are tracked by partial propagation and always shown (the official 3.1 code runs a
full propagation there, detector on its text placeholder, and hides such objects, which are
never confirmed, on every frame but the prompt frame; its reply to the first click shows no
object); the reply to a click shows the clicked object also on a frame never yielded before
(officially empty there).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.errors import InvalidInputError, UnsupportedModelError
from sam3video.model.neck_31 import TriNeckOutput
from sam3video.video.actions import det_mask_for_tracker
from sam3video.video.multiplex_tracking import (
    MultiplexTrackingState,
    place_births,
    track_multiplex_states,
)
from sam3video.video.planner import build_frame_masks, prepare_memory_update, tracked_inputs
from sam3video.video.planner31 import (
    TrackerMetadata31,
    VideoHeuristics31,
    hidden_ids31,
    plan_frame31,
    register_click31,
    select_detections31,
)
from sam3video.video.postprocess import fill_holes_in_mask_scores
from sam3video.video.session import Outputs, VideoSession
from sam3video.video.steps import StageClock

__all__ = ["VideoSession31", "is_multiplex_model"]

# Prepared tracker features kept (frames): the tracked frame and a prompted frame whose memory
# is being encoded.
FEATURE_FRAMES = 2


def is_multiplex_model(model) -> bool:
    """Whether ``model`` is a SAM 3.1 (multiplex) model."""
    return getattr(model.config, "version", "sam3") == "sam3.1"


class _Lazy:
    """Prepared tracker features computed on first attribute access (the interactive pyramid
    is only read on frames with clicks, births or reconditioning)."""

    def __init__(self, make) -> None:
        self._make = make
        self._value = None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._value is None:
            self._value = self._make()
        return getattr(self._value, name)


class _Features31:
    """The latest frames' prepared tracker features ``(interactive, propagation)``."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple] = {}

    def tensors(self) -> list[Tensor]:
        out = []
        for pair in self.entries.values():
            for feats in pair:
                if isinstance(feats, _Lazy) and feats._value is None:
                    continue  # never computed
                out += [*feats.high_res, feats.vision, feats.vision_pos]
        return out


class VideoSession31(VideoSession):
    """The SAM 3.1 session (module doc). Same constructor as `VideoSession`; the heuristics
    must be `VideoHeuristics31` (default: the 3.1 builder's values)."""

    def __init__(
        self,
        session_id,
        model,
        frames,
        *,
        heuristics=None,
        pack_clicked_objects: bool = False,
        **kwargs,
    ) -> None:
        if heuristics is None:
            heuristics = VideoHeuristics31()
        if not isinstance(heuristics, VideoHeuristics31):
            raise InvalidInputError(
                f"heuristics: a SAM 3.1 session needs VideoHeuristics31, got "
                f"{type(heuristics).__name__}"
            )
        if not is_multiplex_model(model):
            raise InvalidInputError(
                f"model: expected a SAM 3.1 model, got config {model.config.name!r}"
            )
        self._trunk: tuple[int, Tensor, dict] | None = None  # frame, trunk map, its pyramids
        # Ours, opt-in (docs/sam31_video_logic.md section 9): clicked objects share states.
        self.pack_clicked_objects = bool(pack_clicked_objects)
        super().__init__(session_id, model, frames, heuristics=heuristics, **kwargs)

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        super().reset()
        self.metadata = TrackerMetadata31()
        self._tracker_feature_cache = _Features31()
        self._unconfirmed: dict[int, list[int]] = {}  # frame -> unconfirmed ids (this pass)
        self._reverse = False
        self._preflighted: set[int] = set()  # states preflighted by this pass (ids)
        # Objects clicked (created or refined) since the reset: the official action history,
        # which decides whether a click on a shared object extracts it.
        self._clicked: set[int] = set()

    # ------------------------------------------------------------------ features

    def _features(self, frame_idx: int, need_detector: bool = False):
        """Backbone output of a frame: ONE trunk pass, then the pyramids asked for: the
        detector's while a concept is active (or when asked), the propagation one always;
        the interactive one is made on demand (`_pyramid`)."""
        cached = self._trunk
        if cached is None or cached[0] != frame_idx:
            image = self.transform(frame_idx).to(device=self.device, dtype=self.dtype)
            trunk = self.model.detector.backbone.vision_backbone.trunk(image[None])
            self._trunk = cached = (frame_idx, trunk, {})
        if need_detector or self.concepts:
            self._pyramid(frame_idx, "detector")
        self._pyramid(frame_idx, "propagation")
        pyramids = cached[2]
        out: list = []
        for name in ("detector", "interactive", "propagation"):
            out += list(pyramids.get(name, (None, None)))
        return TriNeckOutput(*out)

    def _pyramid(self, frame_idx: int, name: str) -> tuple[list[Tensor], list[Tensor]]:
        """``(feats, pos)`` of one neck pyramid of a frame (its trunk pass is cached)."""
        if self._trunk is None or self._trunk[0] != frame_idx:
            self._features(frame_idx)
        _, trunk, pyramids = self._trunk
        if name not in pyramids:
            neck = self.model.detector.backbone.vision_backbone.apply_necks(
                trunk,
                need_detector=name == "detector",
                need_interactive=name == "interactive",
                need_propagation=name == "propagation",
            )
            pyramids[name] = (getattr(neck, f"{name}_feats"), getattr(neck, f"{name}_pos"))
        return pyramids[name]

    def _tracker_features(self, frame_idx: int):
        """``(interactive, propagation)`` `FrameFeatures` of a frame (`FeatureFn31`); the
        interactive ones are prepared when first read."""
        cache = self._tracker_feature_cache
        if frame_idx not in cache.entries:
            m = self.model.tracker.model
            pair = (
                _Lazy(lambda: m.prepare_interactive(*self._pyramid(frame_idx, "interactive"))),
                m.prepare_propagation(*self._pyramid(frame_idx, "propagation")),
            )
            while len(cache.entries) >= FEATURE_FRAMES:
                cache.entries.pop(next(iter(cache.entries)))
            cache.entries[frame_idx] = pair
        return cache.entries[frame_idx]

    def _new_state(self) -> MultiplexTrackingState:
        return MultiplexTrackingState(
            self.model.tracker.model,
            self._tracker_features,
            self.tracker_horizon,
            video_size=self.video_size,
        )

    @staticmethod
    def _track_states(states, frame_idx: int, reverse: bool, run_mem_encoder: bool) -> list:
        return track_multiplex_states(states, frame_idx, reverse, run_mem_encoder=run_mem_encoder)

    # ------------------------------------------------------------------ prompts

    @staticmethod
    def _concept_row(k: int, text: str | None, num_prompts: int) -> int:
        return k  # 3.1: a box-only prompt reads row 0, the text placeholder

    def add_points(
        self, frame_idx: int, points: np.ndarray, labels: np.ndarray, obj_id: int | None
    ) -> tuple[int, Outputs]:
        """Clicks creating a new object (``obj_id`` new or None) in a state of its own, or
        refining an existing object (`MultiplexTrackingState.refine_points`); an object that
        shares its state and was never clicked moves to a state of its own first
        (`MultiplexTrackingState.extract_object`, the official extraction).

        With ``pack_clicked_objects`` (ours, docs/sam31_video_logic.md section 9): a new
        object, decoded alone in a state of its own as above, then joins a state of clicked
        objects (no concept) that has the frame stored and a free slot (`place_births`' best
        fit for one object; `MultiplexTrackingState.join_object`), else keeps its own state;
        a clicked object sharing its state is refined in place on a frame the state has stored
        (``refine_points(in_place=True)``), elsewhere extracted to a state of its own first.
        """
        meta = self.metadata
        h = self.heuristics
        new = obj_id is None or obj_id not in meta.obj_ids
        extract = in_place = False
        if not new:
            state = self._state_of(obj_id)
            if state.num_objects > 1:
                if obj_id in self._clicked and self.pack_clicked_objects:
                    in_place = state.stored(state._check_frame(frame_idx)) is not None
                    extract = not in_place
                elif obj_id in self._clicked:
                    # Official: no extraction for an object clicked before; its refinement
                    # runs in the shared state (memories re-muxed per object): not served.
                    raise UnsupportedModelError(
                        f"obj_id: refining object {obj_id}, clicked before and now sharing its "
                        f"tracker state with {state.num_objects - 1} other object(s), is not "
                        "supported for SAM 3.1 models"
                    )
                else:
                    extract = True
        if new and not meta.can_add_object(h.max_num_objects):
            raise InvalidInputError(
                f"obj_id: the session already tracks the maximum of {h.max_num_objects} objects"
            )
        if obj_id is None:
            obj_id = self.next_obj_id()
        side = self.image_size
        hgt, wid = self.video_size
        pts = torch.tensor(np.asarray(points, dtype=np.float32))
        pts = pts * torch.tensor([side / wid, side / hgt])  # video pixels -> model square
        lab = torch.tensor(np.asarray(labels))
        if new:
            state = self._new_state()
            out = state.add_points(frame_idx, obj_id, pts, lab)
            host = self._click_host(frame_idx) if self.pack_clicked_objects else None
            if host is None:
                self.states.append(state)
            else:  # ours: the clicked object joins a state of clicked objects
                host.join_object(state)
                state = host
        else:
            if extract:  # official: the object moves to a state of its own first
                state._check_frame(frame_idx)
                state = state.extract_object(obj_id)
                self.states.append(state)
            out = state.refine_points(frame_idx, obj_id, pts, lab, in_place=in_place)
        self._clicked.add(obj_id)
        self.generation += 1
        self.object_concept.setdefault(obj_id, None)
        register_click31(meta, obj_id, frame_idx, h)
        self.ledger.click(obj_id)
        state.preflight()
        masks = self.ledger.get(frame_idx)
        # The reply shows the click's video-resolution logits (official), not the stored
        # low-resolution ones.
        logits = fill_holes_in_mask_scores(out.video_res_logits.float(), max_area=h.fill_hole_area)
        masks[obj_id] = (logits[0] > 0).cpu()
        self.ledger.put(frame_idx, masks)
        self.prompted.add(frame_idx)
        return obj_id, self._format(frame_idx, masks, hidden=())

    def _click_host(self, frame_idx: int) -> MultiplexTrackingState | None:
        """The state a new clicked object joins when packing: among the states holding only
        clicked objects without a concept that have ``frame_idx`` stored and a free slot, the
        best fit (`place_births` for one object); None: it keeps a state of its own."""
        hosts = [
            s
            for s in self.states
            if s.num_objects
            and s.stored(frame_idx) is not None
            and all(i in self._clicked and self.object_concept.get(i) is None for i in s.obj_ids)
        ]
        where = place_births(hosts, 1)
        return None if where is None else hosts[where]

    def _video_mask(self, low_res: Tensor) -> Tensor:
        """``(1, 1, s, s)`` logits -> the ``(1, H, W)`` binary video mask."""
        logits = fill_holes_in_mask_scores(low_res.float(), max_area=self.heuristics.fill_hole_area)
        video = F.interpolate(logits, size=self.video_size, mode="bilinear", align_corners=False)
        return (video[0] > 0).cpu()

    # ------------------------------------------------------------------ one frame

    def _det_track_one_frame(
        self,
        frame_idx: int,
        reverse: bool,
        names: list[str] | None = None,
        stages: dict[str, float] | None = None,
    ) -> tuple[dict, list[int]]:
        """Detection, tracking, planning and execution on one frame (module doc) for the
        concepts ``names`` (default: all) and their objects. Returns the frame's
        ``obj_id -> (1, H, W)`` masks (also in the ledger) and no suppressed ids (the 3.1 video
        logic hides nothing by suppression).

        Several concepts (ours, no official counterpart): as in the SAM 3 session, each
        concept is planned apart over its group of objects (`group`) with its own metadata
        (`_subset31`), and its births go only to states of its own group, so a state never
        mixes concepts; the tracker states of all groups advance as one batch. Each concept
        thus gets what a session of that concept alone gets (up to the ids).
        """
        h = self.heuristics
        names = list(self.concepts) if names is None else names
        clock = StageClock(stages, self.stage_listeners)
        neck = self._features(frame_idx, need_detector=True)
        clock.lap("backbone")
        detections = {}
        for name in names:
            concept = self.concepts[name]
            out = self.model.detector.forward_grounding(
                neck.detector_feats,
                neck.detector_pos,
                concept.text_feats,
                concept.text_mask,
                concept.geometry,
            )
            det_masks = out.pred_masks[0].float()
            probs, keep = select_detections31(
                out.pred_logits[0].float().reshape(-1),
                det_masks,
                out.pred_boxes_xyxy[0].float(),
                h,
            )
            detections[name] = (det_masks, probs, keep)
        clock.lap("detector")

        single = len(self.concepts) == 1  # the official case: one plan over every object
        groups = {name: self.group(name) for name in names}
        members = set().union(*groups.values())
        active = [s for s in self.states if s.num_objects and (single or s.obj_ids[0] in members)]
        low_res, scores = self._advance(active, frame_idx, reverse)
        clock.lap("tracker")

        s = self.model.config.low_res_mask_size
        masks = {i: m for i, m in self.ledger.get(frame_idx).items() if i not in members}
        unconfirmed: list[int] = []
        for name in names:
            det_masks, probs, keep = detections[name]
            group = groups[name]
            meta = self.metadata if single else _subset31(self.metadata, group)
            prev_ids = list(meta.obj_ids)
            trk, trk_scores = tracked_inputs(prev_ids, low_res, scores, s, self.device)
            plan = plan_frame31(
                det_masks,
                probs,
                keep,
                trk,
                trk_scores,
                meta,
                frame_idx,
                reverse,
                self.is_image_only,
                h,
            )
            clock.lap("plan")
            states = [
                st for st in self.states if single or (st.num_objects and st.obj_ids[0] in group)
            ]
            self._execute(plan, det_masks, prev_ids, frame_idx, states)
            clock.lap("tracker")
            for obj_id in plan.new_obj_ids:
                self.object_concept[obj_id] = name
            built = build_frame_masks(
                plan.trk_masks,
                prev_ids,
                det_masks,
                plan.new_det_inds,
                plan.new_obj_ids,
                self.video_size,
                h.fill_hole_area,
            )
            masks.update((i, m.cpu()) for i, m in built.items())
            if single:
                self.metadata = plan.metadata
            else:
                self.metadata = _merged31(self.metadata, plan.metadata, group)
            unconfirmed += plan.unconfirmed_obj_ids
        self._unconfirmed[frame_idx] = unconfirmed
        self.ledger.put(frame_idx, masks)
        planned = members | {i for i, c in self.object_concept.items() if c in groups}
        self.ledger.stamp(frame_idx, [i for i in self.obj_ids if single or i in planned])
        clock.lap("post")
        return masks, []

    def _execute(
        self, plan, det_masks: Tensor, prev_ids: list[int], frame_idx: int, states: list
    ) -> None:
        """Apply a frame's plan to ``states`` (the planned group's; births may add one), in
        the official order (module doc, step 5)."""
        side = self.model.config.input_mask_size
        if plan.recondition:  # (a) in place, then the touched states' memory
            touched: list[MultiplexTrackingState] = []
            for state in states:
                ids = [i for i in plan.recondition if i in state.obj_ids]
                if ids:
                    masks = torch.stack(
                        [det_mask_for_tracker(det_masks[plan.recondition[i]], side) for i in ids]
                    )
                    state.recondition(frame_idx, ids, masks)
                    touched.append(state)
            for state in touched:
                state.preflight()
        if prev_ids:  # (b) deferred memory update, rows in each state's object order
            masks, score_logits = prepare_memory_update(plan.trk_masks, side)
            for state in states:
                rows = [prev_ids.index(i) for i in state.obj_ids if i in prev_ids]
                if rows and len(rows) == state.num_objects and state.stored(frame_idx):
                    state.update_memory(frame_idx, masks[rows], score_logits[rows])
        if plan.new_obj_ids:  # (c) births: best fit, else a new state
            hosts = [s for s in states if s.stored(frame_idx) is not None]
            where = place_births(hosts, len(plan.new_obj_ids))
            if where is None:
                state = self._new_state()
                self.states.append(state)
            else:
                state = hosts[where]
            masks = torch.stack(
                [det_mask_for_tracker(det_masks[d], side) for d in plan.new_det_inds]
            )
            state.add_masks(frame_idx, plan.new_obj_ids, masks)
            state.preflight()
        if plan.removed_obj_ids:  # (d) hotstart removals
            gone = set(plan.removed_obj_ids)
            for state in list(self.states):
                ids = [i for i in state.obj_ids if i in gone]
                if ids and not state.remove_objects(ids):
                    self.states.remove(state)

    # ------------------------------------------------------------------ propagation

    def _pass(self, generation, start, max_frames, reverse):
        # The official unconfirmed-object table lives for one propagation pass.
        self._unconfirmed = {}
        self._reverse = reverse
        self._preflighted: set[int] = set()
        yield from super()._pass(generation, start, max_frames, reverse)

    def _retrack(self, frame_idx: int, reverse: bool, obj_ids: list[int]) -> None:
        # Official partial propagation: each call (one direction) starts with the preflight of
        # the clicked objects' states, which forgets the tracked entries of their prompted
        # frames (a prompted frame re-tracked by the previous pass is read by this one through
        # its prompted entry only).
        for state in self.states:
            if id(state) not in self._preflighted and any(i in state.obj_ids for i in obj_ids):
                state.forget_tracked_prompted_frames()
                self._preflighted.add(id(state))
        super()._retrack(frame_idx, reverse, obj_ids)

    def _release(self, frame_idx: int, fetched: bool) -> Outputs:
        """A frame leaves the hotstart buffer: objects still unconfirmed two frames later are
        hidden, and the committed result no longer has them (the official cache stores the
        yielded outputs: a later fetch does not show them either). Nothing is hidden by
        hotstart removal or suppression (3.1 leaves those sets empty)."""
        masks = self.ledger.get(frame_idx)
        if frame_idx in self.ledger.pending:
            self.ledger.pending.pop(frame_idx)
            hidden = hidden_ids31(
                frame_idx, self._reverse, self.num_frames, self._unconfirmed, self.heuristics
            )
            if hidden:
                masks = {i: m for i, m in masks.items() if i not in hidden}
                self.ledger.put(frame_idx, masks)
        return self._format(frame_idx, masks, hidden=())


def _subset31(meta: TrackerMetadata31, group: set[int]) -> TrackerMetadata31:
    """The 3.1 metadata of the objects in ``group`` (a copy; `TrackerMetadata.subset` plus
    the confirmation tables)."""
    base = meta.subset(group)
    return TrackerMetadata31(
        **vars(base),
        det_streak={i: v for i, v in meta.det_streak.items() if i in group},
        confirmed={i for i in meta.confirmed if i in group},
    )


def _merged31(
    meta: TrackerMetadata31, planned: TrackerMetadata31, group: set[int]
) -> TrackerMetadata31:
    """``meta`` with the objects of ``group`` replaced by ``planned`` (`TrackerMetadata.merged`
    plus the confirmation tables)."""
    out = meta.merged(planned, group)
    group = group | set(planned.obj_ids)
    out.det_streak = {
        i: v for i, v in meta.det_streak.items() if i not in group
    } | planned.det_streak
    out.confirmed = {i for i in meta.confirmed if i not in group} | planned.confirmed
    return out
