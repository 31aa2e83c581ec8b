"""SAM 3's concept detector: image + text/box/point prompt -> scored boxes and masks.

The official module tree (``detector.*`` keys) is kept exactly:

- ``backbone``: `VisionLanguageBackbone` with ``vision_backbone`` (ViT trunk + dual neck) and
  ``language_backbone`` (text encoder + resizer).
- ``geometry_encoder``: boxes/points + CLS token -> prompt tokens.
- ``transformer``: ``encoder`` (fusion of image and prompt) and ``decoder`` (queries).
- ``dot_prod_scoring`` and ``segmentation_head``.

One backbone pass serves the detector and the tracker: `VisionLanguageBackbone.forward_image`
returns both feature pyramids. Text features are computed separately (once per prompt) so
a video session can reuse them on every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.decoder import TransformerDecoder, inverse_sigmoid
from sam3video.model.encoder import TransformerEncoderFusion
from sam3video.model.geometry_encoder import SequenceGeometryEncoder
from sam3video.model.neck import DualViTDetNeck, NeckOutput
from sam3video.model.ops import box_cxcywh_to_xyxy
from sam3video.model.scoring import DotProductScoring
from sam3video.model.segmentation_head import UniversalSegmentationHead
from sam3video.model.text_encoder import TextEncoder


class VisionLanguageBackbone(nn.Module):
    """Official ``SAM3VLBackbone``: ``vision_backbone`` and ``language_backbone``."""

    def __init__(self, vision_backbone: DualViTDetNeck, language_backbone: TextEncoder) -> None:
        super().__init__()
        self.vision_backbone = vision_backbone
        self.language_backbone = language_backbone

    def forward_image(self, images: Tensor, need_detector: bool = True, need_tracker: bool = True):
        """``images (B, 3, S, S)`` normalised -> the neck output (both pyramids, 3 levels)."""
        return self.vision_backbone(images, need_detector=need_detector, need_tracker=need_tracker)

    def forward_text(self, texts: list[str], device: torch.device | None = None):
        """``texts`` -> ``(features (N, 32, C), pad_mask (N, 32) True = padding)``."""
        return self.language_backbone(texts, device=device)


class TransformerWrapper(nn.Module):
    """Official ``TransformerWrapper``: holds ``encoder`` and ``decoder``, no weights of its own."""

    def __init__(self, encoder: TransformerEncoderFusion, decoder: TransformerDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


@dataclass
class GeometryPrompt:
    """Visual prompt for a batch of B find-queries; coordinates normalised to [0, 1].

    boxes: (B, Nb, 4) cx, cy, w, h; box_labels: (B, Nb) 1 = positive, 0 = negative;
    box_mask: (B, Nb) True = padding. Points likewise with (B, Np, 2) x, y.
    """

    boxes: Tensor | None = None
    box_labels: Tensor | None = None
    box_mask: Tensor | None = None
    points: Tensor | None = None
    point_labels: Tensor | None = None
    point_mask: Tensor | None = None

    def to(self, device: torch.device) -> GeometryPrompt:
        """The same prompt with every tensor on ``device``."""
        return GeometryPrompt(
            **{k: None if v is None else v.to(device) for k, v in vars(self).items()}
        )


@dataclass
class DetectorOutput:
    """Raw detector outputs for B find-queries and Q object queries.

    pred_logits: (B, Q) class logits; with ``joint_scores`` the presence-weighted joint logit
        (the video model's convention), else the raw dot-product logit.
    presence_logit: (B, 1) last decoder layer's presence logit (not clamped, as official).
    pred_boxes: (B, Q, 4) normalised cx, cy, w, h; pred_boxes_xyxy: (B, Q, 4) normalised.
    pred_masks: (B, Q, 4h, 4w) mask logits at the low resolution (288 for the full model).
    queries: (B, Q, C) last decoder layer's normalised query states.
    """

    pred_logits: Tensor
    presence_logit: Tensor
    pred_boxes: Tensor
    pred_boxes_xyxy: Tensor
    pred_masks: Tensor
    queries: Tensor


class Sam3Detector(nn.Module):
    """Official ``Sam3Image`` as the video model builds it (``detector.`` keys)."""

    def __init__(
        self,
        backbone: VisionLanguageBackbone,
        geometry_encoder: SequenceGeometryEncoder,
        transformer: TransformerWrapper,
        dot_prod_scoring: DotProductScoring,
        segmentation_head: UniversalSegmentationHead,
        joint_scores: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.geometry_encoder = geometry_encoder
        self.transformer = transformer
        self.dot_prod_scoring = dot_prod_scoring
        self.segmentation_head = segmentation_head
        self.joint_scores = joint_scores

    def encode_prompt(
        self,
        img_feat: Tensor,
        img_pos: Tensor,
        text_feats: Tensor,
        text_mask: Tensor,
        geometry: GeometryPrompt | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Prompt tokens = [text (32), geometry (>= 1: always the CLS token)].

        img_feat, img_pos: (B, C, h, w) top detector level, one per find-query.
        text_feats: (B, 32, C), text_mask: (B, 32). Returns ``prompt (B, L, C)``, ``mask (B, L)``.
        """
        g = (geometry or GeometryPrompt()).to(img_feat.device)
        geo, geo_mask = self.geometry_encoder(
            img_feat,
            img_pos,
            boxes=g.boxes,
            box_labels=g.box_labels,
            box_mask=g.box_mask,
            points=g.points,
            point_labels=g.point_labels,
            point_mask=g.point_mask,
        )
        prompt = torch.cat([text_feats.to(geo.dtype), geo], dim=1)
        return prompt, torch.cat([text_mask, geo_mask], dim=1)

    def forward_grounding(
        self,
        feats: list[Tensor],
        pos: list[Tensor],
        text_feats: Tensor,
        text_mask: Tensor,
        geometry: GeometryPrompt | None = None,
    ) -> DetectorOutput:
        """Detect the prompted concept on pre-computed backbone features.

        feats, pos: the detector pyramid [(B, C, 4h, 4w), (B, C, 2h, 2w), (B, C, h, w)] and
        its sine encodings, already indexed per find-query (B = number of prompts).
        text_feats (B, 32, C), text_mask (B, 32): the text row of each prompt.
        """
        img, img_pos = feats[-1], pos[-1]
        prompt, prompt_mask = self.encode_prompt(img, img_pos, text_feats, text_mask, geometry)
        img_seq = img.flatten(2).transpose(1, 2)
        pos_seq = img_pos.flatten(2).transpose(1, 2)
        memory = self.transformer.encoder(img_seq, pos_seq, prompt, prompt_mask)
        dec = self.transformer.decoder(memory, pos_seq, prompt, prompt_mask)
        hs_last = dec.hs[-1]
        logits = self.dot_prod_scoring(hs_last, prompt, prompt_mask).squeeze(-1)
        presence = dec.presence_logits[-1]
        if self.joint_scores:
            # Video convention: logit of sigmoid(class) * sigmoid(presence), clamped.
            joint = logits.sigmoid() * presence.sigmoid()
            logits = inverse_sigmoid(joint).clamp(-10.0, 10.0)
        masks, _ = self.segmentation_head(
            feats, memory, prompt, prompt_mask, hs_last, semantic=False
        )
        boxes = dec.pred_boxes
        return DetectorOutput(
            pred_logits=logits,
            presence_logit=presence,
            pred_boxes=boxes,
            pred_boxes_xyxy=box_cxcywh_to_xyxy(boxes),
            pred_masks=masks,
            queries=hs_last,
        )

    def forward_grounding_on_image(
        self,
        neck: NeckOutput,
        text_feats: Tensor,
        text_mask: Tensor,
        geometry: GeometryPrompt | None = None,
        image: int = 0,
    ) -> DetectorOutput:
        """K prompts on one image of a computed backbone output (``forward_image``): that
        image's detector pyramid is expanded (a view, no copy) over the K rows of
        ``text_feats (K, 32, C)`` / ``text_mask (K, 32)``, so the backbone runs once per image
        whatever the number of prompts."""
        k = text_feats.shape[0]
        i = slice(image, image + 1)
        return self.forward_grounding(
            [f[i].expand(k, -1, -1, -1) for f in neck.detector_feats],
            [p[i].expand(k, -1, -1, -1) for p in neck.detector_pos],
            text_feats,
            text_mask,
            geometry,
        )

    def forward(
        self,
        images: Tensor,
        texts: list[str],
        geometry: GeometryPrompt | None = None,
    ) -> DetectorOutput:
        """Convenience: one image per prompt. ``images (B, 3, S, S)``, ``texts`` of length B."""
        neck = self.backbone.forward_image(images, need_detector=True, need_tracker=False)
        text_feats, text_mask = self.backbone.forward_text(texts, device=images.device)
        return self.forward_grounding(
            neck.detector_feats, neck.detector_pos, text_feats, text_mask, geometry
        )


# ----------------------------------------------------------------------------- user prompts


def validate_text(text: object, field: str = "text") -> str:
    """A concept prompt: a non-empty string. Longer texts are truncated by the tokenizer to
    32 tokens (start + 30 BPE tokens + end), exactly as the official tokenizer does."""
    if not isinstance(text, str):
        raise InvalidInputError(f"{field}: expected a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError(f"{field}: expected a non-empty text, got {text!r}")
    return text


def _as_float_array(value: object, field: str, width: int) -> Tensor:
    try:
        t = torch.tensor(np.array(value, dtype=np.float64))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidInputError(
            f"{field}: expected a list of [{', '.join(['number'] * width)}], got {value!r}"
        ) from exc
    if t.ndim == 1 and t.numel() == width:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != width or t.shape[0] == 0:
        raise InvalidInputError(
            f"{field}: expected shape (N, {width}) with N >= 1, got {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all():
        raise InvalidInputError(f"{field}: expected finite numbers, got {t.tolist()}")
    return t


def _labels(labels: object, n: int, field: str) -> Tensor:
    if labels is None:
        return torch.ones(n, dtype=torch.long)
    try:
        t = torch.tensor(np.array(labels))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidInputError(f"{field}: expected a list of 0/1, got {labels!r}") from exc
    if t.ndim != 1 or t.numel() != n:
        raise InvalidInputError(f"{field}: expected {n} label(s), one per prompt, got {labels!r}")
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise InvalidInputError(f"{field}: expected labels 0 or 1, got {labels!r}")
    t = t.long()
    if not ((t == 0) | (t == 1)).all():
        raise InvalidInputError(f"{field}: expected labels 0 or 1, got {t.tolist()}")
    return t


def make_geometry_prompt(
    boxes: object = None,
    box_labels: object = None,
    points: object = None,
    point_labels: object = None,
    eps: float = 1e-6,
) -> GeometryPrompt:
    """Validate user exemplars and build a one-query `GeometryPrompt`.

    boxes: ``[[cx, cy, w, h], ...]`` normalised to [0, 1], width and height > 0, the box
    inside the image (corners in [0, 1] up to ``eps``); box_labels: 1 positive, 0 negative
    (default all positive). points: ``[[x, y], ...]`` normalised; point_labels likewise.
    Raises `InvalidInputError` naming the field, what was expected and what was given.
    """
    g = GeometryPrompt()
    if boxes is not None:
        b = _as_float_array(boxes, "bounding_boxes", 4)
        cx, cy, w, h = b.unbind(1)
        if ((w <= 0) | (h <= 0)).any():
            raise InvalidInputError(
                f"bounding_boxes: expected width and height > 0, got {b.tolist()}"
            )
        corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        if ((b < 0) | (b > 1)).any() or ((corners < -eps) | (corners > 1 + eps)).any():
            raise InvalidInputError(
                "bounding_boxes: expected normalised [cx, cy, w, h] boxes inside the image "
                f"(all values and corners in [0, 1]), got {b.tolist()}"
            )
        g.boxes = b.float()[None]
        g.box_labels = _labels(box_labels, len(b), "bounding_box_labels")[None]
        g.box_mask = torch.zeros(1, len(b), dtype=torch.bool)
    elif box_labels is not None:
        raise InvalidInputError("bounding_box_labels: given without bounding_boxes")
    if points is not None:
        p = _as_float_array(points, "points", 2)
        if ((p < 0) | (p > 1)).any():
            raise InvalidInputError(
                f"points: expected normalised [x, y] in [0, 1], got {p.tolist()}"
            )
        g.points = p.float()[None]
        g.point_labels = _labels(point_labels, len(p), "point_labels")[None]
        g.point_mask = torch.zeros(1, len(p), dtype=torch.bool)
    elif point_labels is not None:
        raise InvalidInputError("point_labels: given without points")
    return g
