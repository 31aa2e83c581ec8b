"""Box and mask operations in pure PyTorch: conversions, IoUs, NMS and ROI-align.

Nothing here needs torchvision (its compiled ops are not available everywhere). `roi_align`
reproduces ``torchvision.ops.roi_align`` (the CPU/CUDA kernels, including the adaptive sampling
grid and the border rules), and the NMS helpers follow the greedy rule of the official SAM 3
code: walk the candidates by descending score and drop every later one whose IoU with a kept
one is strictly greater than the threshold.

Every function takes its device from its inputs and works on CPU, CUDA and MPS.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sam3video.errors import InvalidInputError

__all__ = [
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_nms",
    "box_xyxy_to_cxcywh",
    "greedy_nms",
    "mask_iou",
    "mask_nms",
    "masks_to_boxes",
    "roi_align",
]


# ----------------------------------------------------------------------------------------------
# Box formats
# ----------------------------------------------------------------------------------------------


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` boxes ``(cx, cy, w, h)`` -> ``(x0, y0, x1, y1)``."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` boxes ``(x0, y0, x1, y1)`` -> ``(cx, cy, w, h)``."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``(..., 4)`` xyxy boxes -> ``(...)`` (negative for inverted boxes, as given)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes ``(N, 4)`` and ``(M, 4)`` -> ``(N, M)``."""
    _check_boxes("boxes1", boxes1)
    _check_boxes("boxes2", boxes2)
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def _check_boxes(name: str, boxes: Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise InvalidInputError(f"{name}: expected a (N, 4) tensor, got shape {tuple(boxes.shape)}")


# ----------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------


def _check_masks(name: str, masks: Tensor) -> None:
    if masks.dim() != 3:
        raise InvalidInputError(
            f"{name}: expected a (N, H, W) bool tensor, got shape {tuple(masks.shape)}"
        )
    if masks.dtype != torch.bool:
        raise InvalidInputError(f"{name}: expected dtype torch.bool, got {masks.dtype}")


def mask_iou(masks1: Tensor, masks2: Tensor) -> Tensor:
    """Pairwise IoU of binary masks ``(N, H, W)`` and ``(M, H, W)`` -> float32 ``(N, M)``.

    IoU = intersection / max(union, 1), so two empty masks have IoU 0.
    """
    _check_masks("masks1", masks1)
    _check_masks("masks2", masks2)
    if masks1.shape[-2:] != masks2.shape[-2:]:
        raise InvalidInputError(
            f"masks2: expected spatial size {tuple(masks1.shape[-2:])} like masks1, "
            f"got {tuple(masks2.shape[-2:])}"
        )
    a = masks1.flatten(1).float()
    b = masks2.flatten(1).float()
    # 0/1 products summed in float32 are exact integers up to 2**24 pixels.
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / union.clamp(min=1)


def masks_to_boxes(masks: Tensor, inclusive: bool = False) -> Tensor:
    """Tight xyxy boxes around binary masks ``(N, H, W)`` -> float32 ``(N, 4)``.

    By default ``x1``/``y1`` are exclusive (one past the last pixel, so ``x1 - x0`` is the
    width in pixels). ``inclusive=True`` gives the index of the last pixel instead (the
    ``torchvision.ops.masks_to_boxes`` convention). Empty masks give ``(0, 0, 0, 0)``.
    """
    _check_masks("masks", masks)
    n, h, w = masks.shape
    if masks.numel() == 0:
        return torch.zeros(n, 4, device=masks.device)
    rows = masks.any(dim=2)  # (N, H)
    cols = masks.any(dim=1)  # (N, W)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    # First/last occupied index via masked min/max (sentinels only matter for empty masks).
    x0 = torch.where(cols, xs, w).amin(dim=1)
    y0 = torch.where(rows, ys, h).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1)
    boxes = torch.stack((x0, y0, x1, y1), dim=1).float()
    if not inclusive:
        boxes[:, 2:] += 1
    nonempty = rows.any(dim=1, keepdim=True)
    return torch.where(nonempty, boxes, torch.zeros_like(boxes))


# ----------------------------------------------------------------------------------------------
# Non-maximum suppression
# ----------------------------------------------------------------------------------------------


def greedy_nms(ious: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS on a precomputed IoU matrix ``(N, N)`` and ``scores (N,)``.

    Candidates are visited by descending score (ties: lower index first); each kept candidate
    suppresses the later ones whose IoU with it is **strictly greater** than the threshold.
    Returns the kept indices ``(K,)`` int64, in descending score order, on the scores' device.
    """
    if ious.dim() != 2 or ious.shape[0] != ious.shape[1]:
        raise InvalidInputError(f"ious: expected a square (N, N) matrix, got {tuple(ious.shape)}")
    if scores.dim() != 1 or scores.shape[0] != ious.shape[0]:
        raise InvalidInputError(
            f"scores: expected shape ({ious.shape[0]},), got {tuple(scores.shape)}"
        )
    n = scores.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=scores.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    # Suppression relation in visiting order; one transfer to the CPU for the sequential pass.
    suppress = (ious[order][:, order] > iou_threshold).cpu()
    removed = torch.zeros(n, dtype=torch.bool)
    kept = []
    for i in range(n):  # sequential by nature; N is the number of detections (small)
        if removed[i]:
            continue
        kept.append(i)
        removed |= suppress[i]
    kept_t = torch.tensor(kept, dtype=torch.long, device=scores.device)
    return order[kept_t]


def mask_nms(masks: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy mask NMS: ``masks (N, H, W)`` bool, ``scores (N,)`` -> kept indices ``(K,)``.

    IoU is ``intersection / max(union, 1)``; a candidate is suppressed when its IoU with a
    higher-scored kept mask is ``> iou_threshold``. Indices come in descending score order.
    """
    _check_masks("masks", masks)
    if scores.shape != masks.shape[:1]:
        raise InvalidInputError(
            f"scores: expected shape ({masks.shape[0]},) to match masks, got {tuple(scores.shape)}"
        )
    return greedy_nms(mask_iou(masks, masks), scores, iou_threshold)


def box_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy box NMS like ``torchvision.ops.nms``: xyxy ``boxes (N, 4)``, ``scores (N,)``.

    Returns kept indices ``(K,)`` int64 in descending score order.
    """
    _check_boxes("boxes", boxes)
    if scores.shape != boxes.shape[:1]:
        raise InvalidInputError(
            f"scores: expected shape ({boxes.shape[0]},) to match boxes, got {tuple(scores.shape)}"
        )
    return greedy_nms(box_iou(boxes, boxes), scores, iou_threshold)


# ----------------------------------------------------------------------------------------------
# ROI-align
# ----------------------------------------------------------------------------------------------


def _rois_from_boxes(boxes: Tensor | list[Tensor] | tuple[Tensor, ...], ref: Tensor) -> Tensor:
    """``(K, 5)`` rows ``[batch_idx, x0, y0, x1, y1]`` from either accepted box format."""
    if isinstance(boxes, (list, tuple)):
        parts = []
        for i, b in enumerate(boxes):
            if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[-1] != 4:
                shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
                raise InvalidInputError(f"boxes[{i}]: expected a (K_i, 4) tensor, got {shape}")
            idx = torch.full_like(b[:, :1], i, dtype=ref.dtype)
            parts.append(torch.cat((idx, b.to(ref.dtype)), dim=1))
        if not parts:
            return torch.zeros(0, 5, dtype=ref.dtype, device=ref.device)
        return torch.cat(parts, dim=0)
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 5:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise InvalidInputError(
            f"boxes: expected a (K, 5) tensor [batch_idx, x0, y0, x1, y1] or a list of (K_i, 4) "
            f"tensors, got {shape}"
        )
    return boxes.to(ref.dtype)


def _axis_weights(
    start: Tensor, bin_size: Tensor, grid: Tensor, max_grid: int, out_size: int, size: int
) -> Tensor:
    """Interpolation matrix ``(K, out_size, size)`` along one axis of the feature map.

    Bin ``p`` of ROI ``k`` averages ``grid[k]`` samples at ``start + p*bin + (i + 0.5)*bin/grid``;
    each sample spreads over its two neighbouring pixels with linear weights. Samples beyond
    ``[-1, size]`` contribute zero, coordinates below 0 are clamped to 0 and those past the
    last pixel snap to it (torchvision's rules). Because bilinear weights factor into a row
    part and a column part, the 2-D average is ``rows @ feature @ cols^T``.
    """
    k = start.shape[0]
    dtype = start.dtype
    i = torch.arange(max_grid, device=start.device, dtype=dtype)
    p = torch.arange(out_size, device=start.device, dtype=dtype)
    g = grid.to(dtype)
    # Same operation order as the kernel: start + p*bin + ((i + .5)*bin)/grid.
    coord = (
        start[:, None, None]
        + p[None, :, None] * bin_size[:, None, None]
        + (i[None, None, :] + 0.5) * bin_size[:, None, None] / g.clamp(min=1)[:, None, None]
    )  # (K, P, G)
    valid = (i[None, None, :] < g[:, None, None]) & (coord >= -1) & (coord <= size)
    c = coord.clamp(min=0, max=size)
    low = c.floor()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    c = torch.where(at_edge, low, c)
    frac = c - low
    scale = valid.to(dtype) / g.clamp(min=1)[:, None, None]
    low_i = low.long()
    high_i = torch.where(at_edge, low_i, low_i + 1)
    index = torch.cat((low_i, high_i), dim=-1).view(k, out_size, 2 * max_grid)
    weight = torch.cat(((1 - frac) * scale, frac * scale), dim=-1).view(k, out_size, -1)
    out = torch.zeros(k, out_size, size, dtype=dtype, device=start.device)
    return out.scatter_add_(2, index, weight)


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """ROI-align, numerically matching ``torchvision.ops.roi_align``.

    Args:
        input: feature maps ``(B, C, H, W)``.
        boxes: ``(K, 5)`` rows ``[batch_idx, x0, y0, x1, y1]``, or a list of ``B_i`` tensors
            ``(K_i, 4)`` of xyxy boxes for image ``i`` (concatenated in list order).
        output_size: ``oh`` or ``(oh, ow)``.
        spatial_scale: multiplies box coordinates (feature stride inverse).
        sampling_ratio: samples per bin side; ``<= 0`` picks ``ceil(roi_size / output_size)``
            per ROI and axis (adaptive).
        aligned: shift boxes by -0.5 pixel (pixel-centre convention); when False, ROIs are at
            least 1x1.

    Returns:
        ``(K, C, oh, ow)`` in the dtype of ``input`` (half/bfloat16 are computed in float32,
        as torchvision does under autocast).
    """
    if not isinstance(input, Tensor) or input.dim() != 4:
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise InvalidInputError(f"input: expected a (B, C, H, W) tensor, got {shape}")
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    if oh <= 0 or ow <= 0:
        raise InvalidInputError(f"output_size: expected positive sizes, got {output_size}")
    b, c, h, w = input.shape
    compute_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    feats = input.to(compute_dtype)
    rois = _rois_from_boxes(boxes, feats)
    k = rois.shape[0]
    if k == 0:
        return input.new_zeros(0, c, oh, ow)

    offset = 0.5 if aligned else 0.0
    x0, y0, x1, y1 = (rois[:, 1:] * spatial_scale - offset).unbind(-1)
    roi_w = x1 - x0
    roi_h = y1 - y0
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio)
        grid_w = torch.full_like(roi_w, sampling_ratio)
    else:
        # Negative sizes (inverted boxes with aligned=True) give an empty grid -> zeros.
        grid_h = torch.ceil(roi_h / oh).clamp(min=0)
        grid_w = torch.ceil(roi_w / ow).clamp(min=0)
    batch_idx = rois[:, 0].long()
    # One host sync: the padded sample count is data dependent, and the batch index is checked.
    gh_max, gw_max, bmin, bmax = torch.stack(
        (grid_h.max(), grid_w.max(), batch_idx.min().to(grid_h), batch_idx.max().to(grid_h))
    ).tolist()
    if bmin < 0 or bmax >= b:
        raise InvalidInputError(
            f"boxes: expected batch indices in [0, {b - 1}], got values in [{int(bmin)}, "
            f"{int(bmax)}]"
        )
    rows = _axis_weights(y0, roi_h / oh, grid_h, max(int(gh_max), 1), oh, h)  # (K, oh, H)
    cols = _axis_weights(x0, roi_w / ow, grid_w, max(int(gw_max), 1), ow, w)  # (K, ow, W)
    # Route each ROI to its image with a one-hot factor instead of copying a map per ROI.
    onehot = (batch_idx[:, None] == torch.arange(b, device=input.device)).to(compute_dtype)
    rows_b = onehot[:, None, :, None] * rows[:, :, None, :]  # (K, oh, B, H)
    t = torch.einsum("kpbh,bchw->kpcw", rows_b, feats)  # (K, oh, C, W)
    out = torch.einsum("kpcw,kqw->kcpq", t, cols)  # (K, C, oh, ow)
    return out.to(input.dtype)
