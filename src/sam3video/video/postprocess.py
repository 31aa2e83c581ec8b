"""Mask post-processing shared by the tracker and the video predictor.

- `apply_non_overlapping_constraints`: pixel-wise, only the highest-scoring object keeps its
  logit; the others are pushed to at most -10.
- `fill_holes_in_mask_scores`: small background holes inside masks become foreground (+0.1)
  and small foreground specks become background (-0.1), by connected components (OpenCV,
  8-connectivity, as ``skimage.measure.label`` in the official CPU path).
- `suppress_object_pw_area_shrinkage` / `suppress_shrunk_masks` and
  `apply_object_wise_non_overlapping_constraints`: the SAM 3 video model's object-level
  variants (memory update and output assembly).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from sam3video.errors import InvalidInputError

# sigmoid(-10) ~ 4.5e-5: "surely background" without the -1024 placeholder.
SUPPRESSED_LOGIT = -10.0


def apply_non_overlapping_constraints(pred_masks: Tensor) -> Tensor:
    """Keep, at every pixel, only the object with the highest logit.

    ``pred_masks (B, 1, H, W)`` logits -> same shape; other objects get ``min(logit, -10)``.
    Ties go to the lower object index. A single object is returned unchanged.
    """
    b = pred_masks.shape[0]
    if b <= 1:
        return pred_masks
    winner = pred_masks.argmax(dim=0, keepdim=True)  # (1, 1, H, W)
    index = torch.arange(b, device=pred_masks.device)[:, None, None, None]
    return torch.where(winner == index, pred_masks, pred_masks.clamp(max=SUPPRESSED_LOGIT))


def component_areas(binary: Tensor) -> Tensor:
    """Area of the 8-connected component of every pixel of ``binary (B, 1, H, W)`` (0 off it).

    All masks go through OpenCV as one image: they are laid side by side with a one-pixel
    empty column in between, so no component crosses from one mask to the next.
    """
    if binary.ndim != 4 or binary.shape[1] != 1:
        raise InvalidInputError(f"binary: expected (B, 1, H, W), got {tuple(binary.shape)}")
    b, _, h, w = binary.shape
    if b == 0 or h == 0 or w == 0:
        return torch.zeros(binary.shape, dtype=torch.int64, device=binary.device)
    planes = binary[:, 0].to(device="cpu", dtype=torch.uint8)
    padded = torch.nn.functional.pad(planes, (0, 1))  # (B, H, W + 1), last column empty
    canvas = padded.permute(1, 0, 2).reshape(h, b * (w + 1)).contiguous().numpy()
    _, labels, stats, _ = cv2.connectedComponentsWithStats(canvas, connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    areas[0] = 0  # label 0 is the background of the canvas
    per_pixel = torch.from_numpy(areas[labels])  # (H, B * (W + 1))
    per_pixel = per_pixel.reshape(h, b, w + 1)[:, :, :w].permute(1, 0, 2)
    return per_pixel[:, None].to(binary.device)


def fill_holes_in_mask_scores(
    mask: Tensor, max_area: int, fill_holes: bool = True, remove_sprinkles: bool = True
) -> Tensor:
    """Fill small holes and remove small specks in mask logits ``(B, 1, H, W)``.

    1. Background components (logit <= 0) of area <= ``max_area`` are set to +0.1.
    2. On the result, foreground components (logit > 0) of area <= min(foreground area // 2,
       ``max_area``) (per object) are set to -0.1.

    ``max_area <= 0`` returns ``mask`` unchanged.
    """
    if max_area <= 0:
        return mask
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise InvalidInputError(f"mask: expected (B, 1, H, W) logits, got {tuple(mask.shape)}")
    if fill_holes:
        background = mask <= 0
        small = background & (component_areas(background) <= max_area)
        mask = torch.where(small, torch.full_like(mask, 0.1), mask)
    if remove_sprinkles:
        foreground = mask > 0
        limit = foreground.sum(dim=(2, 3), keepdim=True) // 2
        limit = limit.clamp(max=max_area)
        small = foreground & (component_areas(foreground) <= limit)
        mask = torch.where(small, torch.full_like(mask, -0.1), mask)
    return mask


def suppress_shrunk_masks(
    pred_masks: Tensor, new_pred_masks: Tensor, shrink_threshold: float = 0.3
) -> Tensor:
    """Push to <= -10 the objects whose foreground shrank below ``shrink_threshold`` of its
    area from ``pred_masks`` to ``new_pred_masks`` (both ``(B, 1, H, W)`` logits); the others
    keep ``pred_masks`` unchanged. An empty object counts as area 1."""
    area_before = (pred_masks > 0).sum(dim=(-1, -2)).clamp(min=1)
    area_after = (new_pred_masks > 0).sum(dim=(-1, -2))
    keep = (area_after / area_before) >= shrink_threshold  # (B, 1)
    return torch.where(keep[..., None, None], pred_masks, pred_masks.clamp(max=SUPPRESSED_LOGIT))


def suppress_object_pw_area_shrinkage(pred_masks: Tensor, shrink_threshold: float = 0.3) -> Tensor:
    """Objects that would lose most of their pixels under pixel-wise non-overlap are
    suppressed; the others keep their masks (which may still overlap). ``(B, 1, H, W)``."""
    return suppress_shrunk_masks(
        pred_masks, apply_non_overlapping_constraints(pred_masks), shrink_threshold
    )


def apply_object_wise_non_overlapping_constraints(
    pred_masks: Tensor, obj_scores: Tensor, background_value: float = SUPPRESSED_LOGIT
) -> Tensor:
    """Where objects overlap, only the one with the highest ``obj_scores (B, 1)`` keeps its
    logits; the others are pushed to at most ``background_value``. ``(B, 1, H, W)``."""
    per_object = torch.where(
        pred_masks > 0,
        obj_scores[..., None, None].to(pred_masks.dtype),
        torch.full_like(pred_masks, background_value),
    )
    winners = apply_non_overlapping_constraints(per_object)
    return torch.where(winners > 0, pred_masks, pred_masks.clamp(max=background_value))
