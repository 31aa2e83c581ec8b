"""Training losses and matching: each against brute force or a hand-computed value."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from sam3video.train.losses import (
    DetectorLayerOutput,
    DetectorLoss,
    DetectorLossWeights,
    DetectorTargets,
    TrackerLoss,
    dice_loss,
    mask_iou,
    sigmoid_focal_loss,
)
from sam3video.train.matcher import (
    HungarianMatcher,
    generalized_box_iou,
    linear_sum_assignment,
)


def brute_force(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n <= m:
        perms = itertools.permutations(range(m), n)
        return min(sum(cost[i, p[i]] for i in range(n)) for p in perms)
    return brute_force(cost.T)


@pytest.mark.parametrize("seed", range(40))
def test_hungarian_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 7, size=2)
    cost = rng.normal(size=(n, m))
    if seed % 4 == 0:
        cost = np.round(cost)  # ties
    rows, cols = linear_sum_assignment(cost)
    assert len(rows) == len(cols) == min(n, m)
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    assert list(rows) == sorted(rows)
    assert cost[rows, cols].sum() == pytest.approx(brute_force(cost), abs=1e-9)


def test_hungarian_edge_cases():
    rows, cols = linear_sum_assignment(np.zeros((0, 3)))
    assert rows.shape == cols.shape == (0,)
    # More rows than columns: row 0 takes column 1 (cost 1), row 2 column 0 (cost 0).
    rows, cols = linear_sum_assignment(torch.tensor([[5.0, 1.0], [1.0, 5.0], [0.0, 0.0]]))
    assert rows.tolist() == [0, 2] and cols.tolist() == [1, 0]
    with pytest.raises(Exception, match="finite"):
        linear_sum_assignment(np.array([[np.nan]]))


def test_generalized_box_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 4.0, 1.0]])
    g = generalized_box_iou(a, b)[0]
    # inter 1, union 7, hull 9 | identical | disjoint: inter 0, union 5, hull 8
    assert g.tolist() == pytest.approx([1 / 7 - 2 / 9, 1.0, 0 - 3 / 8])


def test_matcher_cost_by_hand_and_assignment():
    m = HungarianMatcher()
    logits = torch.tensor([0.0])
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    gt = torch.tensor([[0.6, 0.5, 0.2, 0.2]])
    ln2 = math.log(2)
    cls = 0.25 * 0.25 * ln2 - 0.75 * 0.25 * ln2
    l1 = 0.1
    # xyxy: [0.4, 0.4, 0.6, 0.6] vs [0.5, 0.4, 0.7, 0.6]: inter 0.02, union 0.06, hull 0.06
    giou = 0.02 / 0.06
    expected = 2 * cls + 5 * l1 - 2 * giou
    assert m.cost_matrix(logits, boxes, gt).item() == pytest.approx(expected, rel=1e-5)
    # Query 2 sits on object 0 and query 0 on object 1: the matching finds both.
    q = torch.tensor([[[0.7, 0.7, 0.1, 0.1], [0.9, 0.1, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]]])
    targets = [torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.1, 0.1]])]
    ((src, tgt),) = m(torch.zeros(1, 3), q, targets)
    assert dict(zip(src.tolist(), tgt.tolist())) == {0: 1, 2: 0}


def test_focal_dice_iou_by_hand():
    ln2 = math.log(2)
    assert sigmoid_focal_loss(torch.tensor(0.0), torch.tensor(1.0)).item() == pytest.approx(
        0.25 * 0.25 * ln2
    )
    p = 1 / (1 + math.exp(-2))
    expected = 0.75 * p**2 * math.log(1 + math.exp(2))
    assert sigmoid_focal_loss(torch.tensor(2.0), torch.tensor(0.0)).item() == pytest.approx(
        expected, rel=1e-6
    )
    logits = torch.full((4, 4), 50.0)  # sigmoid == 1
    target = torch.zeros(4, 4)
    target[:2] = 1
    assert dice_loss(logits, target).item() == pytest.approx(1 - (2 * 8 + 1) / (16 + 8 + 1))
    pred = torch.full((4, 4), -1.0)
    pred[:1] = 1.0
    assert mask_iou(pred, target).item() == pytest.approx(4 / 8)
    assert mask_iou(torch.full((2, 2), -1.0), torch.zeros(2, 2)).item() == 0.0


def test_detector_loss_terms():
    loss = DetectorLoss(DetectorLossWeights(aux=False))
    gt_box = torch.tensor([[0.3, 0.3, 0.2, 0.2]])
    gt_mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    gt_mask[0, 1:4, 1:4] = True
    boxes = torch.tensor([[[0.3, 0.3, 0.2, 0.2], [0.8, 0.8, 0.1, 0.1]]] * 2)
    logits = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    presence = torch.tensor([[2.0], [-1.0]])
    masks = torch.where(gt_mask, 30.0, -30.0).float().expand(2, 2, 8, 8).clone()
    out = DetectorLayerOutput(logits, boxes, presence, masks)
    targets = DetectorTargets([gt_box, torch.zeros(0, 4)], [gt_mask, gt_mask[:0]])
    terms = loss.layer_terms(out, targets, num_boxes=1.0)
    # Image 0: query 0 matched (label 1), query 1 negative; image 1 has no object: no cls.
    focal = sigmoid_focal_loss(torch.tensor([1.0, -1.0]), torch.tensor([1.0, 0.0])).sum()
    assert terms["cls"].item() == pytest.approx(focal.item(), rel=1e-6)
    assert terms["bbox"].item() == pytest.approx(0.0, abs=1e-7)
    assert terms["giou"].item() == pytest.approx(0.0, abs=1e-6)
    bce = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    assert terms["presence"].item() == pytest.approx(bce, rel=1e-6)
    assert terms["mask"].item() < 1e-6 and terms["dice"].item() < 1e-6
    total, parts = loss([out], targets)
    w = loss.weights
    expected = w.cls * focal.item() + w.presence * bce + terms["mask"].item() * w.mask
    expected += w.dice * terms["dice"].item()
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert parts["total"] == pytest.approx(total.item())


def test_tracker_loss_picks_best_candidate():
    loss = TrackerLoss()
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[0, 2:6, 2:6] = True  # object 0 visible, object 1 not
    good = torch.where(target[0], 40.0, -40.0)
    bad = torch.full((8, 8), -40.0)
    masks = torch.stack([torch.stack([bad, good]), torch.stack([bad, bad])])  # (2, 2, 8, 8)
    ious = torch.tensor([[0.5, 0.9], [0.2, 0.2]])
    scores = torch.tensor([[3.0], [-2.0]])
    t = loss.step_terms(masks, ious, scores, target)
    assert t["mask"].item() < 1e-6 and t["dice"].item() < 1e-6  # the perfect candidate
    # IoU: candidates' actual IoUs 0 and 1 -> |0.5 - 0| and |0.9 - 1|, averaged; object 1 off.
    assert t["iou"].item() == pytest.approx((0.5 + 0.1) / 2, rel=1e-5)
    bce = math.log(1 + math.exp(-3.0)) + math.log(1 + math.exp(-2.0))
    assert t["score"].item() == pytest.approx(bce, rel=1e-5)
    total, parts = loss.combine([t, t], num_objects=2)
    assert parts["iou"] == pytest.approx(2 * 0.3 / 2, rel=1e-5)
    assert total.item() == pytest.approx(
        sum(getattr(loss.weights, k) * parts[k] for k in ("mask", "dice", "iou", "score")),
        rel=1e-5,
    )
