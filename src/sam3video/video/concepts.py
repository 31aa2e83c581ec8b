"""Concepts of a session and their detections: what the detector is asked on each frame.

A `Concept` is a noun phrase and/or exemplar boxes, encoded once for the detector
(`concept_tokens` tokenizes the text outside any session lock). `ConceptDetector` runs the
detector heads of a session's concepts on a frame from the shared backbone output, batching
text-only concepts, and keeps the current frame's kept detections (`Detections`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from sam3video.model.build import Sam3VideoModel
from sam3video.model.detector import GeometryPrompt
from sam3video.model.ops import mask_nms
from sam3video.video.planner import VideoHeuristics

__all__ = [
    "CONCEPT_BATCH",
    "TEXT_PLACEHOLDER",
    "VISUAL_TEXT",
    "Concept",
    "ConceptDetector",
    "Detections",
    "concept_tokens",
]

# The detector's text rows: the user's noun phrase (or a placeholder that is never used when
# there is none) and the word the official code encodes for box-only prompts.
TEXT_PLACEHOLDER = "<text placeholder>"
VISUAL_TEXT = "visual"
# Text-only concepts whose detector heads run as one batch: larger batches buy nothing on a
# CPU at full size and cost memory traffic (benchmarks/concepts.py: 8 at once took 2x longer
# than two batches of 4 would).
CONCEPT_BATCH = 4


@dataclass
class Detections:
    """One concept's kept detections on a frame (``D`` of them, ascending query order)."""

    masks: Tensor  # (D, h, w) logits
    scores: Tensor  # (D,) probabilities
    boxes: Tensor  # (D, 4) normalised xyxy


@dataclass
class Concept:
    """One concept of a session: a noun phrase and/or exemplar boxes, encoded for the
    detector. ``name`` is the text, or ``"visual"`` for a box-only concept (the word the
    detector reads then); it is what outputs report as an object's ``"concept"``."""

    name: str
    text: str | None
    geometry: GeometryPrompt | None
    text_feats: Tensor  # (1, 32, C)
    text_mask: Tensor  # (1, 32)
    version: int  # detections are cached per (frame, name, version)


def concept_tokens(model: Sam3VideoModel, texts: str | None | list[str | None]) -> Tensor:
    """The detector's text rows for concept prompts, tokenized: ``LongTensor (K + 1, L)``: one
    row per text (a placeholder for a box-only concept) and the word ``"visual"`` last.

    Pure CPU work on user input, so callers do it before taking a session's lock.
    """
    if texts is None or isinstance(texts, str):
        texts = [texts]
    tokenizer = model.detector.backbone.language_backbone.tokenizer
    return tokenizer([TEXT_PLACEHOLDER if t is None else t for t in texts] + [VISUAL_TEXT])


class ConceptDetector:
    """The detector heads of a session's concepts, with the current frame's results cached
    (one entry per concept and version)."""

    def __init__(self, model: Sam3VideoModel, heuristics: VideoHeuristics) -> None:
        self.model = model
        self.heuristics = heuristics
        self.cache: dict[tuple[int, str, int], Detections] = {}

    def clear(self) -> None:
        self.cache = {}

    def detect(
        self,
        frame_idx: int,
        concepts: Mapping[str, Concept],
        names: list[str],
        backbone: Callable[[], object],
    ) -> dict[str, Detections]:
        """Kept detections of concepts ``names`` on a frame: prob > 0.5 after mask NMS (IoU >
        0.1), query order. ``backbone()`` gives the frame's backbone output with the detector
        pyramid (called only when something is not cached). The backbone output is shared by
        every concept and the tracker; only the text-conditioned heads run per concept, as one
        batch for the text-only concepts (concepts with exemplar boxes have prompts of their
        own lengths: one run each)."""
        keys = {name: (frame_idx, name, concepts[name].version) for name in names}
        todo = [name for name in names if keys[name] not in self.cache]
        # Only the current frame's detections are worth keeping (one entry per concept).
        cache = {k: v for k, v in self.cache.items() if k[0] == frame_idx}
        text_only = [n for n in todo if concepts[n].geometry is None]
        batches = [
            text_only[i : i + CONCEPT_BATCH] for i in range(0, len(text_only), CONCEPT_BATCH)
        ]
        batches += [[n] for n in todo if concepts[n].geometry is not None]
        neck = backbone() if todo else None
        for batch in [b for b in batches if b]:
            group = [concepts[n] for n in batch]
            out = self.model.detector.forward_grounding_on_image(
                neck,
                torch.cat([c.text_feats for c in group]),
                torch.cat([c.text_mask for c in group]),
                group[0].geometry,
            )
            for row, name in enumerate(batch):
                cache[keys[name]] = self._kept(out, row)
        self.cache = cache
        return {name: cache[keys[name]] for name in names}

    def _kept(self, out, row: int) -> Detections:
        """One prompt's detections above the threshold, after mask NMS, in query order."""
        h = self.heuristics
        logits, masks = out.pred_logits[row].float(), out.pred_masks[row].float()
        probs = logits.sigmoid()
        cand = torch.nonzero(probs > h.score_threshold_detection).squeeze(1)
        if h.det_nms_thresh > 0 and cand.numel() > 1:
            kept = cand[mask_nms(masks[cand] > 0, probs[cand], h.det_nms_thresh)]
            cand = kept.sort().values
        return Detections(masks[cand], probs[cand], out.pred_boxes_xyxy[row, cand].float())
