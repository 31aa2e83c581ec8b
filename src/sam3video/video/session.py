"""One video session: SAM 3's detection–tracking logic over a lazily read video.

A `VideoSession` owns the frames (a `FrameSource`), the concept prompt, the tracker states,
the planning metadata and a compact cache of per-frame outputs. It implements the official
video semantics (sam3 0.1.4, ``apply_temporal_disambiguation=True`` by default):

- **Concept prompts** (text and/or exemplar boxes) reset the session, then run one
  detection–tracking step on the prompt frame: every detection above 0.5 becomes an object.
- **Full propagation** runs, per frame: backbone (once, for detector and tracker) ->
  detector + mask NMS -> every tracker state advances one frame -> planning
  (`sam3video.video.planner.plan_frame`: association, births, hotstart removal,
  reconditioning, occlusion suppression) -> execution (reconditioning prompts, deferred memory
  update with shrinkage suppression, newborn state, removals) -> outputs. Outputs are held
  ``hotstart_delay`` (15) frames before they are yielded, so objects removed by hotstart are
  hidden from the frames already processed.
- **Clicks** add an object (a new tracker state holding it) or refine one; the following
  propagation is *partial*: only the affected states are re-tracked and their objects' masks
  merged into the cached outputs. After both directions have run, a further propagation
  *fetches* the cached outputs (the official action-history dispatch).

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
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.errors import InvalidInputError, UnknownIdError
from sam3video.io.frames import FrameSource
from sam3video.io.transforms import to_model_input
from sam3video.model.build import Sam3VideoModel
from sam3video.model.detector import GeometryPrompt
from sam3video.model.ops import mask_nms, masks_to_boxes
from sam3video.video.metadata import TrackerMetadata
from sam3video.video.planner import (
    VideoHeuristics,
    build_frame_masks,
    plan_frame,
    postprocess_frame,
    prepare_memory_update,
)
from sam3video.video.postprocess import fill_holes_in_mask_scores
from sam3video.video.tracking import FeatureCache, TrackingState, track_states

TEXT_PLACEHOLDER = "<text placeholder>"
VISUAL_TEXT = "visual"
# Detector-born conditioning frames within this many frames of a click are cleared.
REFINEMENT_WINDOW = 16

Outputs = dict[int, dict[str, object]]


@dataclass
class _Action:
    kind: str  # add | refine | remove | propagation_full | propagation_partial | ...
    frame_idx: int | None = None
    obj_ids: list[int] | None = None


@dataclass
class _Detections:
    masks: Tensor  # (D, h, w) logits
    scores: Tensor  # (D,) probabilities
    boxes: Tensor  # (D, 4) normalised xyxy


@dataclass
class _ConceptPrompt:
    text: str | None = None
    geometry: GeometryPrompt | None = None
    text_feats: Tensor | None = None  # (1, 32, C)
    text_mask: Tensor | None = None  # (1, 32)

    @property
    def active(self) -> bool:
        return self.text is not None or self.geometry is not None


@dataclass
class _FrameCache:
    """Bit-packed ``obj_id -> mask`` per frame (the official ``cached_frame_outputs``)."""

    shape: tuple[int, int]
    frames: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)

    def put(self, frame_idx: int, masks: dict[int, Tensor]) -> None:
        h, w = self.shape
        self.frames[frame_idx] = {
            int(i): np.packbits(m.reshape(h, w).cpu().numpy()) for i, m in masks.items()
        }

    def get(self, frame_idx: int) -> dict[int, Tensor] | None:
        packed = self.frames.get(frame_idx)
        if packed is None:
            return None
        h, w = self.shape
        return {
            i: torch.from_numpy(np.unpackbits(p, count=h * w).reshape(h, w).astype(bool))
            for i, p in packed.items()
        }

    def drop_object(self, obj_id: int) -> None:
        for masks in self.frames.values():
            masks.pop(obj_id, None)

    def nbytes(self) -> int:
        return sum(p.nbytes for masks in self.frames.values() for p in masks.values())


class VideoSession:
    """State and logic of one video (see module doc). Not thread-safe by itself: the
    predictor holds ``lock`` around every call."""

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
        self.num_frames = len(frames)
        self.video_size = (frames.height, frames.width)
        self.image_size = model.config.image_size
        self.lock = threading.RLock()
        # frame index -> (3, S, S) model input; replaceable (parity tests feed the official
        # loader's exact frames)
        self.transform = self._default_transform
        self._feature_cache: tuple[int, object] | None = None
        self._detection_cache: tuple[tuple[int, int], _Detections] | None = None
        self._prompt_version = 0
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Back to a fresh session on the same frames (the official ``reset_state``)."""
        self.concept = _ConceptPrompt()
        self.states: list[TrackingState] = []
        self.metadata = TrackerMetadata()
        self.cache = _FrameCache(self.video_size)
        self.processed: set[int] = set()
        self.history: list[_Action] = []
        self._detection_cache = None
        self._tracker_feature_cache = FeatureCache()
        self._prompt_version += 1

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
            "cached_output_bytes": self.cache.nbytes(),
            "cached_frames": len(self.cache.frames),
            "states": len(self.states),
        }

    # ------------------------------------------------------------------ features

    @torch.inference_mode()
    def _features(self, frame_idx: int, need_detector: bool = False):
        """Backbone output of a frame: one trunk pass for detector and tracker. The detector
        pyramid is computed only while a concept prompt is active (or when asked)."""
        cached = self._feature_cache
        if cached is not None and cached[0] == frame_idx:
            if cached[1].detector_feats is not None or not need_detector:
                return cached[1]
        image = self.transform(frame_idx).to(device=self.device, dtype=self.dtype)
        neck = self.model.detector.backbone.forward_image(
            image[None], need_detector=need_detector or self.concept.active, need_tracker=True
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
            self.num_frames,
            self.video_size,
            feature_cache=self._tracker_feature_cache,  # a frame is prepared once for all
        )

    # ------------------------------------------------------------------ detector

    @torch.inference_mode()
    def _detect(self, frame_idx: int) -> _Detections:
        """Kept detections of a frame: prob > 0.5 after mask NMS (IoU > 0.1), query order."""
        key = (frame_idx, self._prompt_version)
        if self._detection_cache is not None and self._detection_cache[0] == key:
            return self._detection_cache[1]
        h = self.heuristics
        neck = self._features(frame_idx, need_detector=True)
        c = self.concept
        out = self.model.detector.forward_grounding(
            neck.detector_feats, neck.detector_pos, c.text_feats, c.text_mask, c.geometry
        )
        logits, masks = out.pred_logits[0].float(), out.pred_masks[0].float()
        probs = logits.sigmoid()
        cand = torch.nonzero(probs > h.score_threshold_detection).squeeze(1)
        if h.det_nms_thresh > 0 and cand.numel() > 1:
            kept = cand[mask_nms(masks[cand] > 0, probs[cand], h.det_nms_thresh)]
            cand = kept.sort().values
        dets = _Detections(masks[cand], probs[cand], out.pred_boxes_xyxy[0, cand].float())
        self._detection_cache = (key, dets)
        return dets

    def _no_detections(self) -> _Detections:
        s = self.model.config.low_res_mask_size
        return _Detections(
            torch.zeros(0, s, s, device=self.device),
            torch.zeros(0, device=self.device),
            torch.zeros(0, 4, device=self.device),
        )

    # ------------------------------------------------------------------ prompts

    @torch.inference_mode()
    def add_concept_prompt(
        self, frame_idx: int, text: str | None, geometry: GeometryPrompt | None
    ) -> Outputs:
        """Text and/or exemplar boxes: reset, then detect and track on ``frame_idx``."""
        self.reset()
        detector_text = text if text is not None and text != VISUAL_TEXT else None
        rows = [detector_text or TEXT_PLACEHOLDER, VISUAL_TEXT]
        feats, mask = self.model.detector.backbone.forward_text(rows, device=self.device)
        row = 0 if detector_text is not None else 1
        self.concept = _ConceptPrompt(
            text=detector_text,
            geometry=geometry,
            text_feats=feats[row : row + 1],
            text_mask=mask[row : row + 1],
        )  # reset() above already invalidated the cached detections
        masks, _ = self._det_track_one_frame(frame_idx, reverse=False)
        self.processed.add(frame_idx)
        return self._format(frame_idx, masks, hidden=())

    @torch.inference_mode()
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
            obj_id = meta.max_obj_id + 1
        if new:
            state = self._new_state()
            out = state.add_points(frame_idx, obj_id, points, labels)  # validates first
            self.states.append(state)
            kind = "add"
        else:
            state = self._state_of(obj_id)
            out = state.add_points(frame_idx, obj_id, points, labels)
            kind = "refine"
        meta.register_click(obj_id, frame_idx)  # stored and frame score 1.0, un-hidden
        self.history.append(_Action(kind, frame_idx, [obj_id]))

        k = out.obj_ids.index(obj_id)
        logits = fill_holes_in_mask_scores(
            out.video_res_logits[k : k + 1].float(), max_area=self.heuristics.fill_hole_area
        )
        state.preflight()
        self._clear_detector_frames_near(state, obj_id, frame_idx)
        masks = self.cache.get(frame_idx) or {}
        masks[obj_id] = (logits[0] > 0).cpu()
        self.cache.put(frame_idx, masks)
        self.processed.add(frame_idx)
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

    def remove_object(self, obj_id: int, is_user_action: bool = True) -> None:
        state = self._state_of(obj_id)
        if not state.remove_object(obj_id):
            self.states.remove(state)
        if is_user_action:
            self.history.append(_Action("remove", None, [obj_id]))
        self.metadata.remove_object(obj_id)
        self.cache.drop_object(obj_id)

    def _state_of(self, obj_id: int) -> TrackingState:
        for state in self.states:
            if obj_id in state.obj_ids:
                return state
        raise UnknownIdError(f"obj_id: expected one of {self.obj_ids}, got {obj_id!r}")

    # ------------------------------------------------------------------ one frame

    def _det_track_one_frame(self, frame_idx: int, reverse: bool) -> tuple[dict, list[int]]:
        """Detection, tracking, planning and execution on one frame (full propagation).

        Returns the frame's unfiltered ``obj_id -> (1, H, W)`` masks (also cached) and this
        frame's suppressed ids.
        """
        h = self.heuristics
        meta = self.metadata
        dets = self._detect(frame_idx) if self.concept.active else self._no_detections()

        # Every tracker state advances one frame (objects batched across states); memory is
        # encoded after planning.
        ids, low_res, scores = [], [], []
        active = [state for state in self.states if state.num_objects]
        for state in active:
            state.preflight()
        for out in track_states(active, frame_idx, reverse, run_mem_encoder=False):
            ids += out.obj_ids
            low_res.append(out.low_res_masks.float())
            scores.append(out.object_score_logits.float())
        s = self.model.config.low_res_mask_size
        if ids:
            order = [ids.index(i) for i in meta.obj_ids]
            trk = torch.cat(low_res)[order]
            trk = fill_holes_in_mask_scores(trk, max_area=h.fill_hole_area)[:, 0]
            trk_scores = torch.cat(scores)[order][:, 0]
        else:
            trk = torch.zeros(0, s, s, device=self.device)
            trk_scores = torch.zeros(0, device=self.device)

        plan = plan_frame(
            dets.masks,
            dets.scores,
            trk,
            trk_scores,
            meta,
            frame_idx,
            reverse,
            self.is_image_only,
            dets.boxes,
            h,
        )
        prev_ids = list(meta.obj_ids)
        side = self.model.config.input_mask_size

        # (a) reconditioning with high-confidence detections
        touched = []
        for obj_id, d in plan.recondition.items():
            state = self._state_of(obj_id)
            state.add_mask(frame_idx, obj_id, self._det_mask_for_tracker(dets.masks[d], side))
            if state not in touched:
                touched.append(state)
        for state in touched:
            state.preflight()
        # (b) deferred memory update of the tracks that entered the frame
        if prev_ids:
            masks_in, score_in = prepare_memory_update(plan.trk_masks, side)
            for state in self.states:
                rows = [prev_ids.index(i) for i in state.obj_ids]
                if rows:
                    state.update_memory(frame_idx, masks_in[rows], score_in[rows])
        # (c) newborns in one new state; removals
        if plan.new_obj_ids:
            state = self._new_state()
            for obj_id, d in zip(plan.new_obj_ids, plan.new_det_inds):
                state.add_mask(frame_idx, obj_id, self._det_mask_for_tracker(dets.masks[d], side))
            state.preflight()
            self.states.append(state)
        for obj_id in plan.removed_obj_ids:
            for state in list(self.states):
                if obj_id in state.obj_ids and not state.remove_object(obj_id):
                    self.states.remove(state)
        # (d) outputs
        masks = build_frame_masks(
            plan.trk_masks,
            prev_ids,
            dets.masks,
            plan.new_det_inds,
            plan.new_obj_ids,
            self.video_size,
            h.fill_hole_area,
        )
        masks = {i: m.cpu() for i, m in masks.items()}
        self.cache.put(frame_idx, masks)
        self.metadata = plan.metadata
        return masks, plan.suppressed_obj_ids

    @staticmethod
    def _det_mask_for_tracker(mask: Tensor, side: int) -> Tensor:
        """A detection's low-res logits -> the binary input-size mask the tracker is given."""
        up = F.interpolate(
            mask[None, None].float(), size=(side, side), mode="bilinear", align_corners=False
        )
        return (up[0, 0] > 0).float()

    # ------------------------------------------------------------------ propagation

    def processing_order(
        self, start: int | None, max_frames: int | None, reverse: bool
    ) -> tuple[list[int], int]:
        if start is None:
            if not self.processed:
                raise InvalidInputError(
                    "start_frame_index: no prompt has been added on any frame; add a prompt "
                    "first or give start_frame_index"
                )
            start = min(self.processed)
        n = self.num_frames if max_frames is None else max_frames
        if reverse:
            end = max(start - n, 0)
            return list(range(start - 1, end - 1, -1)), end
        end = min(start + n, self.num_frames - 1)
        return list(range(start, end + 1)), end

    def _dispatch(self) -> tuple[str, list[int] | None]:
        """Which propagation the official action history asks for."""
        hist = self.history
        if not hist:
            return "propagation_full", None
        last = hist[-1]
        if last.kind.startswith("propagation"):
            if last.kind == "propagation_fetch":
                return "propagation_fetch", None
            twice = len(hist) > 1 and hist[-2].kind in ("propagation_partial", "propagation_full")
            if twice or last.frame_idx in (0, self.num_frames - 1):
                return "propagation_fetch", None
            return last.kind, last.obj_ids
        obj_ids: list[int] = []
        for action in reversed(hist):
            if action.kind.startswith("propagation"):
                break
            if action.kind in ("add", "refine"):
                obj_ids += [i for i in action.obj_ids or [] if i not in obj_ids]
        obj_ids = [i for i in obj_ids if i in self.metadata.obj_ids]
        return ("propagation_partial", obj_ids) if obj_ids else ("propagation_fetch", None)

    def propagate(
        self, start: int | None, max_frames: int | None, reverse: bool
    ) -> Iterator[tuple[int, Outputs]]:
        """One direction of ``propagate_in_video``; yields ``(frame_index, outputs)``."""
        order, end = self.processing_order(start, max_frames, reverse)
        mode, obj_ids = self._dispatch()
        self.history.append(_Action(mode, start, obj_ids))
        if mode == "propagation_full":
            return self._propagate_full(order, end, reverse)
        if mode == "propagation_partial":
            return self._propagate_partial(order, reverse, obj_ids or [])
        return self._fetch(order)

    @torch.inference_mode()
    def _propagate_full(
        self, order: list[int], end: int, reverse: bool
    ) -> Iterator[tuple[int, Outputs]]:
        delay = self.heuristics.hotstart_delay
        buffer: list[tuple[int, list[int]]] = []
        for frame_idx in order:
            _, suppressed = self._det_track_one_frame(frame_idx, reverse)
            self.processed.add(frame_idx)
            buffer.append((frame_idx, suppressed))
            if delay <= 0:
                ready, buffer = buffer, []
            elif frame_idx == end:
                ready, buffer = buffer, []
            elif len(buffer) >= delay:
                ready, buffer = buffer[:1], buffer[1:]
            else:
                ready = []
            for f, suppressed_f in ready:
                hidden = set(self.metadata.removed_ids) | set(suppressed_f)
                masks = self.cache.get(f) or {}
                masks = {i: m for i, m in masks.items() if i not in hidden}
                self.cache.put(f, masks)
                yield f, self._format(f, masks, hidden=())

    @torch.inference_mode()
    def _propagate_partial(
        self, order: list[int], reverse: bool, obj_ids: list[int]
    ) -> Iterator[tuple[int, Outputs]]:
        states = [s for s in self.states if any(i in s.obj_ids for i in obj_ids)]
        for state in states:
            state.preflight()
        for frame_idx in order:
            refined: dict[int, Tensor] = {}
            for state in states:
                state.preflight()
            for out in track_states(states, frame_idx, reverse, run_mem_encoder=True):
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
            masks = self.cache.get(frame_idx) or {}
            masks.update(refined)
            suppressed = self.metadata.suppressed_at(frame_idx)
            masks = {i: m for i, m in masks.items() if i not in suppressed}
            self.cache.put(frame_idx, masks)
            self.processed.add(frame_idx)
            yield frame_idx, self._format(frame_idx, masks, hidden=())

    def _fetch(self, order: list[int]) -> Iterator[tuple[int, Outputs]]:
        for frame_idx in order:
            masks = self.cache.get(frame_idx) or {}
            hidden = self.metadata.suppressed_at(frame_idx)
            yield frame_idx, self._format(frame_idx, masks, hidden=hidden)

    # ------------------------------------------------------------------ outputs

    def _format(self, frame_idx: int, masks: dict[int, Tensor], hidden) -> Outputs:
        """The product's output dict for a frame's ``obj_id -> mask`` map."""
        meta = self.metadata
        known = {i: m for i, m in masks.items() if i in meta.obj_id_to_score}
        out = postprocess_frame(
            known,
            meta.obj_id_to_score,
            meta.frame_tracker_scores(frame_idx),
            self.video_size,
            hidden,
        )
        result: Outputs = {}
        if out.obj_ids.numel() == 0:
            return result
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
            }
        return result
