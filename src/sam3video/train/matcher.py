"""Hungarian matching of detector queries to ground-truth objects (DETR-style).

`linear_sum_assignment` solves the rectangular assignment problem exactly with the
shortest-augmenting-path method and row/column potentials (O(n^2 m) for an ``n x m`` cost
matrix, ``n <= m``), in numpy: the matrices of training are small (queries x objects of one
image), and scipy stays an optional dependency. `HungarianMatcher` builds the cost matrix the
way SAM 3's training matcher weighs it: focal-style classification cost (alpha 0.25,
gamma 2), L1 box cost and negative generalized IoU, weighted 2 / 5 / 2 by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sam3video.errors import InvalidInputError
from sam3video.model.ops import box_cxcywh_to_xyxy

__all__ = ["HungarianMatcher", "generalized_box_iou", "linear_sum_assignment"]


def linear_sum_assignment(cost: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment of the rows and columns of ``cost (n, m)``.

    Returns ``(rows, cols)`` int64 arrays of length ``min(n, m)``, sorted by row, such that
    ``cost[rows, cols].sum()`` is minimal (scipy's convention). Costs must be finite.
    """
    c = np.asarray(cost.detach().cpu() if isinstance(cost, Tensor) else cost, dtype=np.float64)
    if c.ndim != 2:
        raise InvalidInputError(f"cost: expected a 2-D matrix, got shape {c.shape}")
    if not np.isfinite(c).all():
        raise InvalidInputError("cost: expected finite values, got NaN or inf")
    n, m = c.shape
    if n == 0 or m == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    transposed = n > m
    if transposed:
        c, n, m = c.T, m, n
    # Potentials u (rows), v (columns); column 0 is a virtual column holding the free row.
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j]: row (1-based) assigned to column j
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        way = np.zeros(m + 1, dtype=np.int64)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            # Reduced costs of the row just reached, for the columns not yet in the tree.
            cur = c[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            # Shift potentials so that the tree stays tight and column j1 joins it.
            tree = np.flatnonzero(used)
            u[owner[tree]] += delta
            v[tree] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:  # augment along the alternating path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    cols = np.flatnonzero(owner[1:]) + 0
    rows = owner[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows, kind="stable")
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU of xyxy boxes ``(N, 4)`` and ``(M, 4)`` -> ``(N, M)``.

    ``GIoU = IoU - (|C| - |A u B|) / |C|`` with ``C`` the smallest box enclosing both;
    degenerate (zero-area) pairs are floored by ``1e-7`` so that the gradient stays finite.
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    iou = inter / union.clamp(min=1e-7)
    lt_c = torch.minimum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb_c = torch.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh_c = (rb_c - lt_c).clamp(min=0)
    enclosing = (wh_c[..., 0] * wh_c[..., 1]).clamp(min=1e-7)
    return iou - (enclosing - union) / enclosing


@dataclass(frozen=True)
class HungarianMatcher:
    """Query-to-object matching cost: ``class * C_cls + bbox * L1 + giou * (-GIoU)``.

    ``C_cls`` is the focal-loss cost of calling the query positive minus that of calling it
    negative: ``alpha (1-p)^gamma (-log p) - (1-alpha) p^gamma (-log(1-p))``.
    """

    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    alpha: float = 0.25
    gamma: float = 2.0

    def cost_matrix(self, logits: Tensor, boxes: Tensor, gt_boxes: Tensor) -> Tensor:
        """``logits (Q,)``, ``boxes (Q, 4)`` cxcywh, ``gt_boxes (N, 4)`` cxcywh -> ``(Q, N)``."""
        prob = logits.detach().float().sigmoid()
        pos = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
        neg = (1 - self.alpha) * prob**self.gamma * -(1 - prob + 1e-8).log()
        cls = (pos - neg)[:, None].expand(-1, gt_boxes.shape[0])
        boxes, gt_boxes = boxes.detach().float(), gt_boxes.float()
        l1 = torch.cdist(boxes, gt_boxes, p=1)
        giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(gt_boxes))
        return self.cost_class * cls + self.cost_bbox * l1 - self.cost_giou * giou

    @torch.no_grad()
    def __call__(
        self, logits: Tensor, boxes: Tensor, gt_boxes: list[Tensor]
    ) -> list[tuple[Tensor, Tensor]]:
        """Match each image of a batch: ``logits (B, Q)``, ``boxes (B, Q, 4)`` cxcywh,
        ``gt_boxes[b] (N_b, 4)`` cxcywh -> per image ``(query indices, object indices)``
        (int64, CPU, sorted by query)."""
        out = []
        for b, gt in enumerate(gt_boxes):
            if gt.shape[0] == 0:
                empty = torch.zeros(0, dtype=torch.long)
                out.append((empty, empty))
                continue
            cost = self.cost_matrix(logits[b], boxes[b], gt.to(boxes.device))
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            out.append((torch.from_numpy(rows), torch.from_numpy(cols)))
        return out
