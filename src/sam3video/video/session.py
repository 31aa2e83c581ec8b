"""One video session: SAM 3's detection–tracking logic over a lazily read video.

A `VideoSession` owns the frames (a `FrameSource`), the concept prompt, the tracker states,
the planning metadata and a compact cache of per-frame outputs. It implements the official
video semantics (sam3 0.1.4, ``apply_temporal_disambiguation=True`` by default):

- **Concept prompts** (text and/or exemplar boxes) reset the session, then run one
  detection–tracking step on the prompt frame: every detection above 0.5 becomes an object.
- **Full propagation** runs, per frame: backbone (once, for detector and tracker) ->
  detector + mask NMS -> every tracker state advances one frame -> planning
  (`sam3video.video.planner.plan_frame`: association, births, hotstart removal,
  reconditioning, occlusion suppression) -> execution (`sam3video.video.actions`:
  reconditioning prompts, deferred memory update with shrinkage suppression, newborn state,
  removals) -> outputs. Outputs are held
  ``hotstart_delay`` (15) frames before they are yielded, so objects removed by hotstart are
  hidden from the frames already processed.
- **Clicks** add an object (a new tracker state holding it) or refine one; the following
  propagation is *partial*: only the affected states are re-tracked and their objects' masks
  merged into the cached outputs. After both directions have run, a further propagation
  *fetches* the cached outputs (the official action-history dispatch).

Files: the concepts and their detector runs are in `sam3video.video.concepts`, the step
events observers receive in `sam3video.video.steps`, the decisions per frame (births,
hotstart, suppression) in `sam3video.video.planner`, how a plan edits the tracker states in
`sam3video.video.actions`, what is committed in `sam3video.video.ledger`.

Where the product goes beyond the official code (documented in the README):

- exemplar boxes are kept for the whole session and used on every frame (officially they act
  on the prompt frame only, so box-only objects vanish: sam3 issues #263, #405); several
  boxes, positive or negative, are allowed;
- clicks without ``obj_id`` create a new object with a fresh id, on any frame (also one no
  concept prompt ever ran on); partial propagation then starts the cached outputs afresh on
  frames that have none (officially an assertion error);
- outputs are ``{obj_id: {"mask", "score", "bbox"}}`` with the box computed from the final
  (non-overlapping) mask, and objects whose final mask is empty are omitted;
- memory is bounded: frames are read lazily, only the current frame's features are kept, the
  tracker states drop memories the attention can no longer use, and cached outputs are
  bit-packed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.errors import InvalidInputError, Sam3VideoError, StaleStreamError, UnknownIdError
from sam3video.io.frames import FrameSource
from sam3video.io.transforms import to_model_input
from sam3video.model.build import Sam3VideoModel
from sam3video.model.detector import GeometryPrompt
from sam3video.model.ops import masks_to_boxes
from sam3video.requests import MAX_OBJ_ID
from sam3video.video.actions import apply_actions, plan_actions
from sam3video.video.concepts import (
    VISUAL_TEXT,
    Concept,
    ConceptDetector,
    Detections,
    concept_tokens,
)
from sam3video.video.ledger import FrameLedger
from sam3video.video.metadata import TrackerMetadata
from sam3video.video.planner import (
    VideoHeuristics,
    build_frame_masks,
    plan_frame,
    postprocess_frame,
    tracked_inputs,
)
from sam3video.video.postprocess import fill_holes_in_mask_scores
from sam3video.video.steps import StageClock, StepEvent, processing_order
from sam3video.video.tracking import FeatureCache, TrackingState, track_states

# Detector-born conditioning frames within this many frames of a click are cleared.
REFINEMENT_WINDOW = 16

Outputs = dict[int, dict[str, object]]

__all__ = ["Concept", "Outputs", "StepEvent", "VideoSession", "concept_tokens"]


class VideoSession:
    """State and logic of one video (see module doc). Not thread-safe by itself: the
    predictor holds ``lock`` around every call.

    Every state-changing call (prompts, removals, resets, a new propagation, closing) bumps
    ``generation``; a propagation stream made before it then ends with `StaleStreamError` at
    its next frame and changes nothing.
    """

    def __init__(
        self,
        session_id: str,
        model: Sam3VideoModel,
        frames: FrameSource,
        *,
        heuristics: VideoHeuristics | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        is_image_only: bool = False,
    ) -> None:
        self.session_id = session_id
        self.model = model
        self.frames = frames
        self.heuristics = heuristics or VideoHeuristics()
        self.device = device or next(model.parameters()).device
        self.dtype = dtype
        self.is_image_only = is_image_only
        self.video_size = (frames.height, frames.width)
        self.image_size = model.config.image_size
        self.lock = threading.RLock()
        # frame index -> (3, S, S) model input; replaceable (parity tests feed the official
        # loader's exact frames)
        self.transform = self._default_transform
        # Called with a `StepEvent` after every propagation step (progress, benchmarks).
        self.observers: list[Callable[[StepEvent], None]] = []
        # Called at each stage boundary of an observed detect step (see `StageClock`).
        self.stage_listeners: list[Callable[[str], None]] = []
        self.generation = 0
        self._cancelled = -1  # the generation whose stream was asked to stop
        self.closed = False
        self._feature_cache: tuple[int, object] | None = None
        self._detector = ConceptDetector(model, self.heuristics)
        self._prompt_version = 0
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Back to a fresh session on the same frames (the official ``reset_state``)."""
        self.concepts: dict[str, Concept] = {}  # in the order they were added
        # obj_id -> the concept that found it (None: created by clicks); kept after removals,
        # because the planner's hotstart counts outlive the tracking of an object.
        self.object_concept: dict[int, str | None] = {}
        self.states: list[TrackingState] = []
        self.metadata = TrackerMetadata()
        self.ledger = FrameLedger(self.video_size)
        self.prompted: set[int] = set()  # frames with prompts: the default propagation start
        self._detector.clear()
        self._tracker_feature_cache = FeatureCache()
        self._prompt_version += 1
        self.generation += 1

    def close(self) -> None:
        """Release the frames; streams of this session become stale."""
        self.closed = True
        self.generation += 1
        self.frames.close()

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def tracker_horizon(self) -> int:
        """The frame count tracker states are made for (a live session's is open-ended)."""
        return self.num_frames

    @property
    def obj_ids(self) -> list[int]:
        return list(self.metadata.obj_ids)

    def memory_footprint(self) -> dict[str, int]:
        """Bytes held by the session besides the model (for the bounded-memory tests)."""
        tracker = sum(s.memory_footprint(include_features=False)["bytes"] for s in self.states)
        # The states share one prepared-feature cache: counted once.
        tracker += sum(t.numel() * t.element_size() for t in self._tracker_feature_cache.tensors())
        return {
            "tracker_bytes": tracker,
            "cached_output_bytes": self.ledger.nbytes(),
            "cached_frames": len(self.ledger.masks),
            "states": len(self.states),
        }

    def cancel(self) -> None:
        """Ask the running propagation (if any) to stop at its next frame boundary. Safe from
        any thread without the lock: it only marks the current stream's generation."""
        self._cancelled = self.generation

    def stops(self, generation: int) -> bool:
        """At a frame boundary: True when the stream of ``generation`` was cancelled (it then
        ends cleanly); raises `StaleStreamError` when the session changed since it started."""
        self.check_current(generation)
        return self._cancelled == generation

    def check_current(self, generation: int) -> None:
        """Raise `StaleStreamError` unless ``generation`` is the session's current one."""
        if self.closed:
            raise StaleStreamError("propagate_in_video: this session was closed while streaming")
        if generation != self.generation:
            raise StaleStreamError(
                "propagate_in_video: this stream is stale: the session changed after it started "
                "(a prompt, a removal, a reset or another propagation); frames already received "
                "stay valid, start a new propagation for the rest"
            )

    # ------------------------------------------------------------------ features

    def _features(self, frame_idx: int, need_detector: bool = False):
        """Backbone output of a frame: one trunk pass for detector and tracker. The detector
        pyramid is computed only while a concept prompt is active (or when asked)."""
        cached = self._feature_cache
        if cached is not None and cached[0] == frame_idx:
            if cached[1].detector_feats is not None or not need_detector:
                return cached[1]
        image = self.transform(frame_idx).to(device=self.device, dtype=self.dtype)
        neck = self.model.detector.backbone.forward_image(
            image[None], need_detector=need_detector or bool(self.concepts), need_tracker=True
        )
        self._feature_cache = (frame_idx, neck)
        return neck

    def _default_transform(self, frame_idx: int) -> Tensor:
        return to_model_input(self.frames[frame_idx], self.image_size, self.device, self.dtype)

    def _tracker_features(self, frame_idx: int) -> tuple[list[Tensor], list[Tensor]]:
        neck = self._features(frame_idx)
        return neck.tracker_feats, neck.tracker_pos

    def _new_state(self) -> TrackingState:
        return TrackingState(
            self.model.tracker,
            self._tracker_features,
            self.tracker_horizon,
            self.video_size,
            feature_cache=self._tracker_feature_cache,  # a frame is prepared once for all
        )

    # ------------------------------------------------------------------ detector

    def _detect(self, frame_idx: int, names: list[str]) -> dict[str, Detections]:
        """Kept detections of concepts ``names`` on a frame (`ConceptDetector.detect`)."""
        return self._detector.detect(
            frame_idx,
            self.concepts,
            names,
            lambda: self._features(frame_idx, need_detector=True),
        )

    # ------------------------------------------------------------------ prompts

    def add_concept_prompt(
        self,
        frame_idx: int,
        text: str | None,
        geometry: GeometryPrompt | None,
        tokens: Tensor | None = None,
    ) -> Outputs:
        """One concept (text and/or exemplar boxes) replacing the session's: the seed's
        ``add_prompt`` with text or boxes. See `add_concepts`."""
        return self.add_concepts(frame_idx, [(text, geometry)], tokens, mode="replace")

    def add_concepts(
        self,
        frame_idx: int,
        prompts: list[tuple[str | None, GeometryPrompt | None]],
        tokens: Tensor | None = None,
        mode: str = "replace",
    ) -> Outputs:
        """Concepts ``(text, boxes)``: ``mode="replace"`` resets the session first (the seed
        and upstream behaviour); ``"add"`` keeps the session's concepts, objects, ids and
        clicks, and the new concepts join them. Then one detection–tracking step of the new
        concepts on ``frame_idx``: with no track of its own yet, every detection of a new
        concept above 0.5 becomes an object.

        ``tokens`` are `concept_tokens` of the texts (computed here when not given). Nothing
        changes before the frame is decoded and the names are checked.
        """
        names = [VISUAL_TEXT if text is None else text for text, _ in prompts]
        if mode == "add":
            for name in names:
                if name in self.concepts:
                    raise InvalidInputError(
                        f"text: {name[:100]!r} is already a concept of this session; remove "
                        "it first (remove_concept) to prompt it again"
                    )
        if tokens is None:
            tokens = concept_tokens(self.model, [text for text, _ in prompts])
        self._features(frame_idx, need_detector=True)  # may raise DecodeError: nothing changed
        feats, mask = self.model.detector.backbone.language_backbone.encode_tokens(
            tokens.to(self.device)
        )
        if mode == "replace":
            self.reset()
        else:
            self.generation += 1
        for k, (name, (text, geometry)) in enumerate(zip(names, prompts)):
            row = self._concept_row(k, text, len(prompts))
            self._prompt_version += 1
            self.concepts[name] = Concept(
                name,
                text,
                geometry,
                feats[row : row + 1],
                mask[row : row + 1],
                self._prompt_version,
            )
            self.ledger.detected[name] = set()
        masks, _ = self._det_track_one_frame(frame_idx, reverse=False, names=names)
        self.prompted.add(frame_idx)
        return self._format(frame_idx, masks, hidden=())

    @staticmethod
    def _concept_row(k: int, text: str | None, num_prompts: int) -> int:
        """Row of `concept_tokens` encoding prompt ``k``: its text, or for a box-only prompt
        the word "visual" (the last row)."""
        return k if text is not None else num_prompts

    def remove_concept(self, name: str) -> None:
        """Stop tracking a concept and every object it found (as `remove_object`)."""
        if name not in self.concepts:
            known = ", ".join(repr(n[:100]) for n in self.concepts) or "none"
            raise UnknownIdError(
                f"text: unknown concept {name[:100]!r}; the session's concepts: {known}"
            )
        self.generation += 1
        for obj_id in [i for i in self.obj_ids if self.object_concept.get(i) == name]:
            self.remove_object(obj_id)
        del self.concepts[name]
        del self.ledger.detected[name]

    def next_obj_id(self) -> int:
        """The id a click without ``obj_id`` gets: one above the largest id ever used, or the
        smallest free id once that would leave the int32 range."""
        candidate = self.metadata.max_obj_id + 1
        if candidate <= MAX_OBJ_ID:
            return candidate
        used = set(self.metadata.obj_ids)
        return next(i for i in range(MAX_OBJ_ID + 1) if i not in used)

    def add_points(
        self, frame_idx: int, points: np.ndarray, labels: np.ndarray, obj_id: int | None
    ) -> tuple[int, Outputs]:
        """Clicks (pixels) for a new (``obj_id`` new or None) or an existing object."""
        meta = self.metadata
        new = obj_id is None or obj_id not in meta.obj_ids
        if new and not meta.can_add_object(self.heuristics.max_num_objects):
            raise InvalidInputError(
                f"obj_id: the session already tracks the maximum of "
                f"{self.heuristics.max_num_objects} objects"
            )
        if obj_id is None:
            obj_id = self.next_obj_id()
        if new:
            state = self._new_state()
            out = state.add_points(frame_idx, obj_id, points, labels)  # validates first
            self.states.append(state)
        else:
            state = self._state_of(obj_id)
            out = state.add_points(frame_idx, obj_id, points, labels)
        self.generation += 1
        self.object_concept.setdefault(obj_id, None)
        meta.register_click(obj_id, frame_idx)  # stored and frame score 1.0, un-hidden
        self.ledger.click(obj_id)

        k = out.obj_ids.index(obj_id)
        logits = fill_holes_in_mask_scores(
            out.video_res_logits[k : k + 1].float(), max_area=self.heuristics.fill_hole_area
        )
        state.preflight()
        self._clear_detector_frames_near(state, obj_id, frame_idx)
        masks = self.ledger.get(frame_idx)
        masks[obj_id] = (logits[0] > 0).cpu()
        self.ledger.put(frame_idx, masks)
        self.prompted.add(frame_idx)
        return obj_id, self._format(frame_idx, masks, hidden=())

    def _clear_detector_frames_near(
        self, state: TrackingState, obj_id: int, frame_idx: int
    ) -> None:
        """The clicked object's detector-born conditioning frames (mask prompts without
        clicks) within `REFINEMENT_WINDOW` frames of the click are cleared for every object of
        its state, so that the clicks are not overruled (official behaviour)."""
        for t in state.mask_prompt_frames(obj_id):
            if abs(t - frame_idx) <= REFINEMENT_WINDOW:
                for other in state.obj_ids:
                    state.clear_frame_prompts(t, other)

    def remove_object(self, obj_id: int) -> None:
        state = self._state_of(obj_id)
        self.generation += 1
        if not state.remove_object(obj_id):
            self.states.remove(state)
        self.metadata.remove_object(obj_id)
        self.ledger.drop_object(obj_id)

    def _state_of(self, obj_id: int) -> TrackingState:
        for state in self.states:
            if obj_id in state.obj_ids:
                return state
        raise UnknownIdError(f"obj_id: expected one of {self.obj_ids}, got {obj_id!r}")

    # ------------------------------------------------------------------ one frame

    def group(self, name: str | None) -> set[int]:
        """Ids (ever) planned with concept ``name``: the objects it found, and the clicked
        objects when it is the session's first concept (so that a one-concept session plans
        every object together, as upstream). ``None``: the clicked objects of a session
        without concepts."""
        first = next(iter(self.concepts), None)
        return {
            i for i, c in self.object_concept.items() if c == name or (c is None and name == first)
        }

    def _det_track_one_frame(
        self,
        frame_idx: int,
        reverse: bool,
        names: list[str] | None = None,
        stages: dict[str, float] | None = None,
    ) -> tuple[dict, list[int]]:
        """Detection, tracking, planning and execution on one frame (full propagation) for the
        concepts ``names`` (default: all) and their objects.

        One backbone pass serves every concept and the tracker. Each concept is planned apart
        (association, births, hotstart, suppression: the official logic, per concept) over
        its group of objects (`group`). Returns the frame's unfiltered ``obj_id -> (1, H, W)``
        masks (also in the ledger) and this frame's suppressed ids. ``stages``, when given,
        receives seconds per stage.
        """
        h = self.heuristics
        names = list(self.concepts) if names is None else names
        clock = StageClock(stages, self.stage_listeners)
        self._features(frame_idx, need_detector=True)  # decode first
        clock.lap("backbone")
        dets = self._detect(frame_idx, names)
        clock.lap("detector")

        # The tracker states of these groups advance one frame (objects batched across
        # states); memory is encoded after planning.
        groups = {name: self.group(name) for name in names}
        members = set().union(*groups.values())
        active = [s for s in self.states if s.num_objects and s.obj_ids[0] in members]
        low_res, scores = self._advance(active, frame_idx, reverse)
        clock.lap("tracker")

        s = self.model.config.low_res_mask_size
        side = self.model.config.input_mask_size
        masks = {
            i: m for i, m in self.ledger.get(frame_idx).items() if i not in members
        }  # other concepts' results on this frame stay
        suppressed: list[int] = []
        for name in names:
            group = groups[name]
            sub = self.metadata.subset(group)
            prev_ids = list(sub.obj_ids)
            trk, trk_scores = tracked_inputs(prev_ids, low_res, scores, s, self.device)
            d = dets[name]
            plan = plan_frame(
                d.masks,
                d.scores,
                trk,
                trk_scores,
                sub,
                frame_idx,
                reverse,
                self.is_image_only,
                d.boxes,
                h,
            )
            clock.lap("plan")
            # births, reconditioning, memory update, hotstart removals (video/actions.py)
            apply_actions(
                plan_actions(plan, d.masks, prev_ids, frame_idx, side), self.states, self._new_state
            )
            clock.lap("tracker")
            for obj_id in plan.new_obj_ids:
                self.object_concept[obj_id] = name
            built = build_frame_masks(
                plan.trk_masks,
                prev_ids,
                d.masks,
                plan.new_det_inds,
                plan.new_obj_ids,
                self.video_size,
                h.fill_hole_area,
            )
            masks.update((i, m.cpu()) for i, m in built.items())
            self.metadata = self.metadata.merged(plan.metadata, group)
            suppressed += plan.suppressed_obj_ids
        self.ledger.put(frame_idx, masks)
        # Results computed now: the groups' objects, newborns included (not the other
        # concepts' results carried over in ``masks``).
        planned = members | {i for i, c in self.object_concept.items() if c in groups}
        self.ledger.stamp(frame_idx, [i for i in self.obj_ids if i in planned])
        clock.lap("post")
        return masks, suppressed

    @staticmethod
    def _track_states(states, frame_idx: int, reverse: bool, run_mem_encoder: bool) -> list:
        """One frame for several tracker states (`track_states`; the SAM 3.1 session uses the
        multiplex tracker's). Outputs have ``obj_ids``, ``low_res_masks (N, 1, s, s)`` and
        ``object_score_logits (N, 1)``."""
        return track_states(states, frame_idx, reverse, run_mem_encoder=run_mem_encoder)

    def _advance(
        self, states: list, frame_idx: int, reverse: bool
    ) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
        """A full-propagation frame's tracker step: the states advance one frame without
        memory encoding (it follows planning). Per object id: its hole-filled low-resolution
        logits ``(s, s)`` and its object-score logit ``()``."""
        for state in states:
            state.preflight()
        low_res: dict[int, Tensor] = {}
        scores: dict[int, Tensor] = {}
        for out in self._track_states(states, frame_idx, reverse, run_mem_encoder=False):
            filled = fill_holes_in_mask_scores(
                out.low_res_masks.float(), max_area=self.heuristics.fill_hole_area
            )[:, 0]
            for k, obj_id in enumerate(out.obj_ids):
                low_res[obj_id] = filled[k]
                scores[obj_id] = out.object_score_logits[k].float().reshape(())
        return low_res, scores

    def _retrack(self, frame_idx: int, reverse: bool, obj_ids: list[int]) -> None:
        """Re-track clicked objects on a frame (the official partial propagation step): their
        tracker states advance one frame and their masks replace theirs in the ledger."""
        self._features(frame_idx)  # decode first: nothing changes if this fails
        states = [s for s in self.states if any(i in s.obj_ids for i in obj_ids)]
        for state in states:
            state.preflight()
        refined: dict[int, Tensor] = {}
        for out in self._track_states(states, frame_idx, reverse, run_mem_encoder=True):
            for k, obj_id in enumerate(out.obj_ids):
                if obj_id not in obj_ids:
                    continue
                logits = fill_holes_in_mask_scores(
                    out.low_res_masks[k : k + 1].float(),
                    max_area=self.heuristics.fill_hole_area,
                )
                video = F.interpolate(
                    logits, size=self.video_size, mode="bilinear", align_corners=False
                )
                refined[obj_id] = (video[0] > 0).cpu()
                score = float(out.object_score_logits[k].reshape(()))
                self.metadata.set_frame_scores(frame_idx, {obj_id: score})
        masks = self.ledger.get(frame_idx)
        masks.update(refined)
        if self.ledger.is_final(frame_idx):
            suppressed = self.metadata.suppressed_at(frame_idx)
            masks = {i: m for i, m in masks.items() if i not in suppressed}
        self.ledger.put(frame_idx, masks)
        self.ledger.stamp(frame_idx, obj_ids)

    # ------------------------------------------------------------------ propagation

    def processing_order(
        self, start: int | None, max_frames: int | None, reverse: bool
    ) -> list[int]:
        """Frames of one direction (`steps.processing_order`): ``"forward"``
        start..start+max, ``"backward"`` start-1 down to start-max (the start frame is not
        repeated). ``start`` defaults to the first prompted frame (officially the first frame
        with outputs, which moves as propagations run: an interrupted propagation would then
        change where the next one starts)."""
        if start is None:
            if not self.prompted:
                raise InvalidInputError(
                    "start_frame_index: no prompt has been added on any frame; add a prompt "
                    "first or give start_frame_index"
                )
            start = min(self.prompted)
        return processing_order(start, max_frames, self.num_frames, reverse, include_start=False)

    def propagate(
        self, start: int | None, max_frames: int | None, directions: list[bool]
    ) -> Iterator[tuple[int, Outputs]]:
        """``propagate_in_video``: yields ``(frame_index, outputs)`` per frame, for each
        direction in ``directions`` (``reverse`` flags) in turn.

        Validated now (a missing prompt raises before the first frame); starting the stream
        makes older streams stale. Each frame is one of three steps, read from the ledger:
        *detect* (a concept is active and the frame was not detected since the concept prompt:
        detection and tracking of every object, the official full propagation), *retrack*
        (clicked objects whose result there predates their last click: the official partial
        propagation), or *fetch* (nothing new: the committed result). Detected frames wait in
        the hotstart buffer (``hotstart_delay`` frames) before they are released; objects the
        hotstart rule removes meanwhile are hidden in them.

        Deviations from the official action history, on purpose: a frame is never detected
        twice for one concept prompt (officially a second ``"forward"`` re-runs the pipeline on
        the advanced state and changes ids), and each direction computes what it lacks
        (officially ``"forward"`` then ``"both"`` re-runs forward and skips backward).
        """
        for reverse in directions:
            self.processing_order(start, max_frames, reverse)
        self.generation += 1
        return self._stream(self.generation, start, max_frames, directions)

    def _stream(
        self, generation: int, start: int | None, max_frames: int | None, directions: list[bool]
    ) -> Iterator[tuple[int, Outputs]]:
        for reverse in directions:
            if self.stops(generation):
                return
            yield from self._pass(generation, start, max_frames, reverse)

    def _pass(
        self, generation: int, start: int | None, max_frames: int | None, reverse: bool
    ) -> Iterator[tuple[int, Outputs]]:
        order = self.processing_order(start, max_frames, reverse)
        delay = self.heuristics.hotstart_delay
        held: list[int] = []  # stepped frames not yet yielded, in order (the hotstart buffer)
        fetched: set[int] = set()  # frames final before this pass: shown as committed
        try:
            for frame_idx in order:
                if self.stops(generation):
                    return  # cancelled: held frames stay pending, released by a later pass
                self._step(frame_idx, reverse, fetched)
                held.append(frame_idx)
                while held and (delay <= 0 or len(held) >= delay or self.ledger.is_final(held[0])):
                    if self.stops(generation):  # the consumer may have changed things
                        return
                    f = held.pop(0)
                    yield f, self._release(f, f in fetched)
        except Sam3VideoError as exc:
            if isinstance(exc, StaleStreamError):
                raise
            # A frame that cannot be read (or another typed failure) ends the pass: first
            # every frame finished before it is released, then the error.
            while held:
                self.check_current(generation)
                f = held.pop(0)
                yield f, self._release(f, f in fetched)
            raise
        while held:
            if self.stops(generation):
                return
            f = held.pop(0)
            yield f, self._release(f, f in fetched)

    def _step(self, frame_idx: int, reverse: bool, fetched: set[int]) -> None:
        """One committed step on a frame (see `propagate`)."""
        timed = bool(self.observers)
        stages: dict[str, float] = {}
        clock = StageClock(stages if timed else None)
        kind = "fetch"
        due = [n for n in self.concepts if frame_idx not in self.ledger.detected[n]]
        if due:
            _, suppressed = self._det_track_one_frame(
                frame_idx, reverse, due, stages if timed else None
            )
            for name in due:
                self.ledger.detected[name].add(frame_idx)
            held = self.ledger.pending.get(frame_idx, ())
            self.ledger.pending[frame_idx] = held + tuple(suppressed)
            kind = "detect"
        stale = self.ledger.stale(frame_idx, self.obj_ids)
        if stale:
            self._retrack(frame_idx, reverse, stale)
            kind = "retrack" if kind == "fetch" else kind
        elif kind == "fetch" and self.ledger.is_final(frame_idx):
            fetched.add(frame_idx)
        if timed:
            event = StepEvent(frame_idx, reverse, kind, clock.total(), stages)
            for observer in list(self.observers):
                observer(event)

    def _release(self, frame_idx: int, fetched: bool) -> Outputs:
        """A frame leaves the hotstart buffer: a pending frame becomes final with the objects
        removed or suppressed so far hidden (what is shown from now on); a final one is shown
        as committed."""
        masks = self.ledger.get(frame_idx)
        if frame_idx in self.ledger.pending:
            hidden = set(self.metadata.removed_ids) | set(self.ledger.pending.pop(frame_idx))
            masks = {i: m for i, m in masks.items() if i not in hidden}
            self.ledger.put(frame_idx, masks)
            return self._format(frame_idx, masks, hidden=())
        if fetched:
            return self._format(frame_idx, masks, hidden=self.metadata.suppressed_at(frame_idx))
        return self._format(frame_idx, masks, hidden=())

    def release_pending(self) -> list[tuple[int, Outputs]]:
        """Release every frame still held by the hotstart buffer of an interrupted
        propagation (in processing order), with the heuristics applied to what is known: for a
        caller that stops early and wants every computed frame (e.g. the CLI on Ctrl-C)."""
        return [(f, self._release(f, False)) for f in list(self.ledger.pending)]

    # ------------------------------------------------------------------ outputs

    def _format(self, frame_idx: int, masks: dict[int, Tensor], hidden) -> Outputs:
        """The product's output dict for a frame's ``obj_id -> mask`` map.

        Objects of one concept never overlap (the official non-overlap rule, by tracker
        score); objects of different concepts may (a child is a "person" and a "child").
        Clicked objects count with the session's first concept.
        """
        meta = self.metadata
        known = {i: m for i, m in masks.items() if i in meta.obj_id_to_score}
        first = next(iter(self.concepts), None)
        by_group: dict[str | None, dict[int, Tensor]] = {}
        for i, m in known.items():
            by_group.setdefault(self.object_concept.get(i) or first, {})[i] = m
        result: Outputs = {}
        for group_masks in by_group.values():
            out = postprocess_frame(
                group_masks,
                meta.obj_id_to_score,
                meta.frame_tracker_scores(frame_idx),
                self.video_size,
                hidden,
            )
            if out.obj_ids.numel() == 0:
                continue
            final = out.masks.cpu()
            boxes = masks_to_boxes(final).tolist()  # exclusive x1/y1, from the final masks
            present = final.flatten(1).any(dim=1).tolist()
            for k, obj_id in enumerate(out.obj_ids.tolist()):
                if not present[k]:
                    continue
                result[int(obj_id)] = {
                    "mask": final[k].numpy(),
                    "score": float(out.probs[k]),
                    "bbox": [int(round(v)) for v in boxes[k]],
                    "concept": self.object_concept.get(int(obj_id)),
                }
        return dict(sorted(result.items()))
