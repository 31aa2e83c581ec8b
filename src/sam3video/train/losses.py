"""Loss functions of detector and tracker training (SAM 3 / SAM 2 recipes, written anew).

Elementary losses (all float32, all differentiable in their first argument):

* `sigmoid_focal_loss`: RetinaNet focal loss on logits, ``alpha`` weighting positives and
  ``(1 - p_t)^gamma`` down-weighting easy pixels/queries; ``alpha < 0`` disables the weighting.
* `dice_loss`: ``1 - (2 |P.T| + 1) / (|P| + |T| + 1)`` on sigmoid probabilities per mask.
* `mask_iou`: the IoU of the binarized prediction (logit > 0) with the target, the regression
  target of the IoU head.

`DetectorLoss` (one image per find-query, DETR-style): Hungarian matching per image and
decoder layer, focal classification over all queries normalized by the number of objects
(no classification loss for a query without objects: presence carries that signal), L1 and
GIoU on matched boxes, BCE on the presence logit (is the concept in the image), focal + dice
on the matched queries' masks (last layer only, as SAM 3 does). `TrackerLoss`: per frame and
per object, focal + dice of the best of the candidate masks (lowest weighted focal + dice),
L1 between predicted and actual IoU (all candidates), BCE of the object score; mask and IoU
terms count only where the object is visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.model.ops import box_cxcywh_to_xyxy
from sam3video.train.matcher import HungarianMatcher, generalized_box_iou

__all__ = [
    "DetectorLoss",
    "DetectorLossWeights",
    "TrackerLoss",
    "TrackerLossWeights",
    "dice_loss",
    "mask_iou",
    "sigmoid_focal_loss",
]


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Element-wise focal loss: ``logits`` and ``targets`` (in [0, 1]) of the same shape."""
    logits, targets = logits.float(), targets.float()
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """``(..., H, W)`` logits and targets -> ``(...)`` dice loss per mask (smoothing 1)."""
    prob = logits.float().sigmoid().flatten(-2)
    t = targets.float().flatten(-2)
    return 1 - (2 * (prob * t).sum(-1) + 1) / (prob.sum(-1) + t.sum(-1) + 1)


def mask_iou(logits: Tensor, targets: Tensor) -> Tensor:
    """``(..., H, W)`` -> ``(...)`` IoU of ``logits > 0`` with ``targets``; 0 when both are
    empty (the union is floored at 1), no gradient."""
    pred = (logits.detach() > 0).flatten(-2)
    t = (targets > 0.5).flatten(-2)
    inter = (pred & t).sum(-1).float()
    union = (pred | t).sum(-1).float()
    return inter / union.clamp(min=1)


# ----------------------------------------------------------------------------- detector


@dataclass(frozen=True)
class DetectorLossWeights:
    """Weights of the detector loss terms (aux layers use class, box and presence terms)."""

    cls: float = 2.0
    bbox: float = 5.0
    giou: float = 2.0
    presence: float = 2.0
    mask: float = 20.0
    dice: float = 1.0
    aux: bool = True


@dataclass
class DetectorTargets:
    """Ground truth of a batch of B find-queries (one image and one noun phrase each).

    ``boxes[b] (N_b, 4)`` normalized cxcywh, ``masks[b] (N_b, H, W)`` bool (any size; the
    predictions are resized to it); ``N_b = 0`` for a phrase absent from the image.
    """

    boxes: list[Tensor]
    masks: list[Tensor]

    def to(self, device: torch.device) -> DetectorTargets:
        return DetectorTargets(
            [b.to(device) for b in self.boxes], [m.to(device) for m in self.masks]
        )


@dataclass
class DetectorLayerOutput:
    """One decoder layer's predictions: ``logits (B, Q)`` raw class logits (not joint with
    presence), ``boxes (B, Q, 4)`` cxcywh, ``presence (B, 1)`` logit or None, ``masks
    (B, Q, h, w)`` logits or None (only the last layer has masks)."""

    logits: Tensor
    boxes: Tensor
    presence: Tensor | None
    masks: Tensor | None = None


class DetectorLoss:
    """SAM 3-style detection loss (see the module notes). Returns ``(total, parts)``."""

    def __init__(
        self,
        weights: DetectorLossWeights | None = None,
        matcher: HungarianMatcher | None = None,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        self.weights = weights or DetectorLossWeights()
        self.matcher = matcher or HungarianMatcher()
        self.alpha = focal_alpha
        self.gamma = focal_gamma

    def layer_terms(
        self, out: DetectorLayerOutput, targets: DetectorTargets, num_boxes: float
    ) -> dict[str, Tensor]:
        """Unweighted terms of one layer: cls, bbox, giou, presence (+ mask, dice)."""
        logits = out.logits.float()
        b, q = logits.shape
        device = logits.device
        indices = self.matcher(logits, out.boxes, targets.boxes)
        labels = torch.zeros(b, q, device=device)
        for i, (src, _) in enumerate(indices):
            labels[i, src.to(device)] = 1.0
        has_objects = torch.tensor([float(len(t) > 0) for t in targets.boxes], device=device)[
            :, None
        ]
        focal = sigmoid_focal_loss(logits, labels, self.alpha, self.gamma) * has_objects
        terms = {"cls": focal.sum() / num_boxes}
        src_boxes = torch.cat([out.boxes[i, s.to(device)] for i, (s, _) in enumerate(indices)])
        gt_boxes = torch.cat([targets.boxes[i][t.to(device)] for i, (_, t) in enumerate(indices)])
        src_boxes, gt_boxes = src_boxes.float(), gt_boxes.float().to(device)
        terms["bbox"] = F.l1_loss(src_boxes, gt_boxes, reduction="sum") / num_boxes
        giou = generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(gt_boxes))
        terms["giou"] = (1 - giou.diagonal()).sum() / num_boxes
        if out.presence is not None:
            terms["presence"] = F.binary_cross_entropy_with_logits(
                out.presence.float().reshape(b, 1), has_objects
            )
        if out.masks is not None:
            src = [out.masks[i, s.to(device)] for i, (s, _) in enumerate(indices)]
            gts = [targets.masks[i][t.to(device)] for i, (_, t) in enumerate(indices)]
            focal_sum = logits.new_zeros(())
            dice_sum = logits.new_zeros(())
            for pred, gt in zip(src, gts):
                if pred.shape[0] == 0:
                    continue
                pred = F.interpolate(
                    pred[:, None].float(), size=gt.shape[-2:], mode="bilinear", align_corners=False
                )[:, 0]
                gt = gt.float()
                focal = sigmoid_focal_loss(pred, gt, self.alpha, self.gamma)
                focal_sum = focal_sum + focal.flatten(1).mean(1).sum()
                dice_sum = dice_sum + dice_loss(pred, gt).sum()
            terms["mask"] = focal_sum / num_boxes
            terms["dice"] = dice_sum / num_boxes
        return terms

    def __call__(
        self, layers: list[DetectorLayerOutput], targets: DetectorTargets
    ) -> tuple[Tensor, dict[str, float]]:
        """``layers``: decoder layers in order (the last one with masks)."""
        num_boxes = max(float(sum(len(t) for t in targets.boxes)), 1.0)
        w = self.weights
        weight = {
            "cls": w.cls,
            "bbox": w.bbox,
            "giou": w.giou,
            "presence": w.presence,
            "mask": w.mask,
            "dice": w.dice,
        }
        used = layers if w.aux else layers[-1:]
        total = layers[-1].logits.new_zeros((), dtype=torch.float32)
        parts: dict[str, float] = {}
        for k, layer in enumerate(used):
            last = k == len(used) - 1
            terms = self.layer_terms(layer, targets, num_boxes)
            for name, value in terms.items():
                total = total + weight[name] * value
                key = name if last else f"aux{k}_{name}"
                parts[key] = float(value.detach())
        parts["total"] = float(total.detach())
        return total, parts


# ----------------------------------------------------------------------------- tracker


@dataclass(frozen=True)
class TrackerLossWeights:
    """SAM 2's weights: mask focal 20, dice 1, IoU 1, object score 1."""

    mask: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    score: float = 1.0


class TrackerLoss:
    """Per-step tracker loss (see the module notes); steps are summed by the caller."""

    def __init__(
        self,
        weights: TrackerLossWeights | None = None,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        self.weights = weights or TrackerLossWeights()
        self.alpha = focal_alpha
        self.gamma = focal_gamma

    def step_terms(
        self,
        multimasks: Tensor,
        ious: Tensor,
        object_score_logits: Tensor,
        target: Tensor,
    ) -> dict[str, Tensor]:
        """One prediction step of B objects.

        ``multimasks (B, K, H, W)`` logits, ``ious (B, K)`` predicted IoUs,
        ``object_score_logits (B, 1)``, ``target (B, H, W)`` bool (same H, W).
        Returns the terms summed over the B objects (unweighted, not normalized).
        """
        masks = multimasks.float()
        t = target.float()[:, None].expand_as(masks)
        focal = sigmoid_focal_loss(masks, t, self.alpha, self.gamma).flatten(2).mean(-1)  # (B, K)
        dice = dice_loss(masks, t)  # (B, K)
        iou_l1 = (ious.float() - mask_iou(masks, t)).abs()  # (B, K)
        visible = target.flatten(1).any(1).float()  # (B,)
        best = (self.weights.mask * focal + self.weights.dice * dice).argmin(dim=1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        score = F.binary_cross_entropy_with_logits(
            object_score_logits.float().reshape(-1), visible, reduction="none"
        )
        return {
            "mask": (focal[rows, best] * visible).sum(),
            "dice": (dice[rows, best] * visible).sum(),
            "iou": (iou_l1.mean(1) * visible).sum(),
            "score": score.sum(),
        }

    def combine(self, steps: list[dict[str, Tensor]], num_objects: int) -> tuple[Tensor, dict]:
        """Sum the terms of all steps, divide by the number of objects, weight and add up."""
        w = self.weights
        weight = {"mask": w.mask, "dice": w.dice, "iou": w.iou, "score": w.score}
        n = max(num_objects, 1)
        sums = {k: sum(s[k] for s in steps) / n for k in weight}
        total = sum(weight[k] * v for k, v in sums.items())
        parts = {k: float(v.detach()) for k, v in sums.items()}
        parts["total"] = float(total.detach())
        return total, parts
