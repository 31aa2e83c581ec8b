"""Box / mask ops against torchvision and the official sam3 helpers (fixtures), and loops.

Fixtures: ``tests/fixtures/ops_roi_align.pt`` and ``ops_nms.pt`` from
``tools/reference/gen_geometry.py``. Tolerance for ROI-align: max abs diff <= 1e-5 (float32;
measured ~5e-7). NMS indices, IoUs and boxes must match exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from sam3video.errors import InvalidInputError
from sam3video.model.ops import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_nms,
    box_xyxy_to_cxcywh,
    greedy_nms,
    mask_iou,
    mask_nms,
    masks_to_boxes,
    roi_align,
)
from tests._manifest import FIXTURES

ROI_TOL = 1e-5


@pytest.fixture(scope="module")
def roi_fx():
    return torch.load(FIXTURES / "ops_roi_align.pt")


@pytest.fixture(scope="module")
def nms_fx():
    return torch.load(FIXTURES / "ops_nms.pt")


# ----------------------------------------------------------------------------------------------
# conversions
# ----------------------------------------------------------------------------------------------


def test_box_conversions_values_and_round_trip():
    cxcywh = torch.tensor([[0.5, 0.5, 0.2, 0.4], [10.0, 20.0, 4.0, 6.0]])
    xyxy = box_cxcywh_to_xyxy(cxcywh)
    assert torch.allclose(xyxy, torch.tensor([[0.4, 0.3, 0.6, 0.7], [8.0, 17.0, 12.0, 23.0]]))
    assert torch.allclose(box_xyxy_to_cxcywh(xyxy), cxcywh)
    batched = torch.rand(2, 3, 5, 4)
    assert box_cxcywh_to_xyxy(batched).shape == (2, 3, 5, 4)
    assert box_cxcywh_to_xyxy(torch.zeros(0, 4)).shape == (0, 4)


# ----------------------------------------------------------------------------------------------
# roi_align
# ----------------------------------------------------------------------------------------------


def _bilinear(feat: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """One sample with torchvision's border rules, written out plainly. feat (C, H, W)."""
    _, h, w = feat.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return torch.zeros(feat.shape[0], dtype=feat.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    return (
        hy * hx * feat[:, y0, x0]
        + hy * lx * feat[:, y0, x1]
        + ly * hx * feat[:, y1, x0]
        + ly * lx * feat[:, y1, x1]
    )


def _roi_align_loop(feats, rois, out_hw, scale, sampling_ratio, aligned):
    """Straightforward per-ROI / per-bin / per-sample reference."""
    oh, ow = out_hw
    out = torch.zeros(rois.shape[0], feats.shape[1], oh, ow, dtype=torch.float64)
    off = 0.5 if aligned else 0.0
    for k, (b, x0, y0, x1, y1) in enumerate(rois.double().tolist()):
        sx, sy, ex, ey = x0 * scale - off, y0 * scale - off, x1 * scale - off, y1 * scale - off
        rw, rh = ex - sx, ey - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / oh, rw / ow
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / oh)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / ow)
        count = max(gh * gw, 1)
        feat = feats[int(b)].double()
        for ph in range(oh):
            for pw in range(ow):
                acc = torch.zeros(feats.shape[1], dtype=torch.float64)
                for iy in range(gh):
                    y = sy + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sx + pw * bw + (ix + 0.5) * bw / gw
                        acc += _bilinear(feat, y, x)
                out[k, :, ph, pw] = acc / count
    return out


def test_roi_align_matches_torchvision_fixture(roi_fx):
    t, cases = roi_fx["tensors"], roi_fx["meta"]["cases"]
    assert len(cases) == 16
    worst = 0.0
    for case in cases:
        out = roi_align(
            t["input"],
            t["rois"],
            case["output_size"],
            case["spatial_scale"],
            case["sampling_ratio"],
            case["aligned"],
        )
        ref = t[case["name"]]
        assert out.shape == ref.shape, case
        diff = (out - ref).abs().max().item()
        assert diff <= ROI_TOL, (case, diff)
        worst = max(worst, diff)
    # The fixture is not trivially zero: most ROIs overlap the map.
    assert (t["out_0"].abs().flatten(1).amax(1) > 0).float().mean() > 0.5


def test_roi_align_list_of_boxes_matches_fixture(roi_fx):
    t = roi_fx["tensors"]
    out = roi_align(t["input"], [t["list_boxes_0"], t["list_boxes_1"]], 7)
    assert (out - t["list_out"]).abs().max().item() <= ROI_TOL


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_matches_loop_reference(aligned, sampling_ratio):
    gen = torch.Generator().manual_seed(3 + int(aligned) + 10 * sampling_ratio)
    feats = torch.randn(2, 3, 6, 7, generator=gen)
    k = 14
    xy0 = torch.rand(k, 2, generator=gen) * 10 - 2
    wh = torch.rand(k, 2, generator=gen) * 9
    wh[0] = 0.05  # tiny
    wh[1] = -0.7  # inverted
    wh[2] = 15.0  # larger than the map
    rois = torch.cat((torch.randint(0, 2, (k, 1), generator=gen).float(), xy0, xy0 + wh), 1)
    for out_hw, scale in (((3, 2), 1.0), ((2, 3), 0.75)):
        ref = _roi_align_loop(feats, rois, out_hw, scale, sampling_ratio, aligned)
        out = roi_align(feats, rois, out_hw, scale, sampling_ratio, aligned)
        assert (out.double() - ref).abs().max().item() <= ROI_TOL


def test_roi_align_empty_and_dtypes():
    feats = torch.randn(1, 4, 8, 8)
    assert roi_align(feats, torch.zeros(0, 5), 7).shape == (0, 4, 7, 7)
    assert roi_align(feats, [torch.zeros(0, 4)], (2, 3)).shape == (0, 4, 2, 3)
    rois = torch.tensor([[0.0, 1.0, 1.0, 6.0, 5.0]])
    ref = roi_align(feats, rois, 3)
    out64 = roi_align(feats.double(), rois.double(), 3)
    assert out64.dtype == torch.float64 and torch.allclose(out64.float(), ref, atol=1e-6)
    out_bf16 = roi_align(feats.bfloat16(), rois, 3)
    assert out_bf16.dtype == torch.bfloat16
    assert torch.allclose(out_bf16.float(), ref, atol=0.05)
    # The average of a constant map is that constant.
    const = roi_align(torch.full((1, 2, 8, 8), 3.0), rois, 4)
    assert torch.allclose(const, torch.full_like(const, 3.0))


def test_roi_align_is_differentiable():
    feats = torch.randn(1, 2, 8, 8, requires_grad=True)
    roi_align(feats, torch.tensor([[0.0, 1.0, 1.0, 6.0, 5.0]]), 2).sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


def test_roi_align_rejects_bad_inputs():
    feats = torch.randn(2, 3, 8, 8)
    with pytest.raises(InvalidInputError, match="input"):
        roi_align(feats[0], torch.zeros(1, 5), 7)
    with pytest.raises(InvalidInputError, match="boxes"):
        roi_align(feats, torch.zeros(3, 4), 7)
    with pytest.raises(InvalidInputError, match=r"boxes\[1\]"):
        roi_align(feats, [torch.zeros(1, 4), torch.zeros(1, 5)], 7)
    with pytest.raises(InvalidInputError, match="batch indices"):
        roi_align(feats, torch.tensor([[2.0, 0.0, 0.0, 1.0, 1.0]]), 7)


# ----------------------------------------------------------------------------------------------
# masks: IoU, NMS, boxes
# ----------------------------------------------------------------------------------------------


def test_mask_iou_matches_official(nms_fx):
    t = nms_fx["tensors"]
    assert torch.allclose(mask_iou(t["masks"], t["masks"]), t["mask_ious"], atol=1e-6)
    assert torch.allclose(mask_iou(t["masks"], t["masks_other"]), t["mask_ious_other"], atol=1e-6)
    # The fixture holds a duplicate (IoU 1) and an empty mask (IoU 0 even with itself).
    assert t["mask_ious"][0, 22] == 1.0 and t["mask_ious"][23, 23] == 0.0


def test_mask_iou_empty_inputs_and_errors():
    a = torch.zeros(0, 5, 6, dtype=torch.bool)
    b = torch.ones(3, 5, 6, dtype=torch.bool)
    assert mask_iou(a, b).shape == (0, 3)
    assert mask_iou(b, a).shape == (3, 0)
    with pytest.raises(InvalidInputError, match="bool"):
        mask_iou(b.float(), b)
    with pytest.raises(InvalidInputError, match="spatial size"):
        mask_iou(b, torch.ones(1, 5, 7, dtype=torch.bool))


def test_mask_nms_matches_official_greedy(nms_fx):
    t, thresholds = nms_fx["tensors"], nms_fx["meta"]["thresholds"]
    for i, thr in enumerate(thresholds):
        keep = mask_nms(t["masks"], t["scores"], thr)
        assert keep.dtype == torch.long
        assert torch.equal(keep, t[f"mask_keep_{i}"]), thr
    # Different thresholds keep different sets: the comparison above is meaningful.
    assert len(t["mask_keep_0"]) < len(t["mask_keep_4"])


def test_mask_nms_strict_threshold_and_empty():
    m = torch.zeros(3, 4, 4, dtype=torch.bool)
    m[0, :2] = True
    m[1, :2] = True  # duplicate of 0: IoU exactly 1
    m[2, 1:3] = True  # IoU 1/3 with 0
    scores = torch.tensor([0.5, 0.9, 0.7])
    assert mask_nms(m, scores, 1.0).tolist() == [1, 2, 0]  # IoU == threshold is kept
    assert mask_nms(m, scores, 0.5).tolist() == [1, 2]
    assert mask_nms(m, scores, 1 / 3 - 1e-6).tolist() == [1]
    empty = mask_nms(torch.zeros(0, 4, 4, dtype=torch.bool), torch.zeros(0), 0.5)
    assert empty.dtype == torch.long and empty.shape == (0,)
    with pytest.raises(InvalidInputError, match="scores"):
        mask_nms(m, scores[:2], 0.5)


def test_greedy_nms_ties_prefer_lower_index():
    ious = torch.ones(3, 3)
    assert greedy_nms(ious, torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0]
    assert greedy_nms(torch.zeros(3, 3), torch.tensor([0.5, 0.5, 0.7]), 0.5).tolist() == [2, 0, 1]


def test_box_iou_and_nms_match_torchvision(nms_fx):
    t, thresholds = nms_fx["tensors"], nms_fx["meta"]["thresholds"]
    assert torch.allclose(box_iou(t["boxes"], t["boxes"]), t["box_ious"], atol=1e-6)
    for i, thr in enumerate(thresholds):
        assert torch.equal(box_nms(t["boxes"], t["box_scores"], thr), t[f"box_keep_{i}"]), thr
    assert box_nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)


def test_masks_to_boxes_matches_references(nms_fx):
    t = nms_fx["tensors"]
    assert torch.equal(masks_to_boxes(t["masks"], inclusive=True), t["boxes_inclusive"])
    assert torch.equal(masks_to_boxes(t["masks"]), t["boxes_exclusive"])


def test_masks_to_boxes_exclusive_convention_and_empty():
    m = torch.zeros(3, 6, 8, dtype=torch.bool)
    m[0, 2:5, 1:4] = True  # rows 2..4, cols 1..3
    m[2, 5, 7] = True  # single corner pixel
    boxes = masks_to_boxes(m)
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[1, 2, 4, 5], [0, 0, 0, 0], [7, 5, 8, 6]]
    assert masks_to_boxes(m, inclusive=True).tolist() == [[1, 2, 3, 4], [0, 0, 0, 0], [7, 5, 7, 5]]
    assert masks_to_boxes(torch.zeros(0, 6, 8, dtype=torch.bool)).shape == (0, 4)
