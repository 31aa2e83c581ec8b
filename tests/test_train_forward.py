"""The training forwards agree with the inference modules they are built from (tiny)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3video.model.build import build_sam3_video_model
from sam3video.model.decoder import inverse_sigmoid
from sam3video.train.forward import (
    RolloutConfig,
    _sam_heads,
    _sample_click,
    detector_layers,
    tracker_rollout,
)
from sam3video.train.losses import TrackerLoss

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return build_sam3_video_model("tiny", device="cpu", seed=1)


@pytest.fixture(scope="module")
def neck(model):
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.detector.backbone.forward_image(images)


def test_detector_layers_match_forward_grounding(model, neck):
    det = model.detector
    text_feats, text_mask = det.backbone.forward_text(["red square", "shape", "x"])
    with torch.no_grad():
        ref = det.forward_grounding(neck.detector_feats, neck.detector_pos, text_feats, text_mask)
        layers = detector_layers(det, neck.detector_feats, neck.detector_pos, text_feats, text_mask)
    assert len(layers) == model.config.detector.decoder_layers
    last = layers[-1]
    joint = inverse_sigmoid(last.logits.sigmoid() * last.presence.sigmoid()).clamp(-10, 10)
    torch.testing.assert_close(joint, ref.pred_logits)
    torch.testing.assert_close(last.boxes, ref.pred_boxes)
    torch.testing.assert_close(last.presence, ref.presence_logit)
    torch.testing.assert_close(last.masks, ref.pred_masks)
    for layer in layers[:-1]:  # aux layers: boxes in [0, 1], no masks
        assert layer.masks is None and layer.boxes.min() >= 0 and layer.boxes.max() <= 1


@pytest.mark.parametrize("multimask", [True, False])
def test_sam_heads_match_forward_sam_heads(model, neck, multimask):
    tracker = model.tracker
    feats = tracker.prepare_features(
        [f[:1] for f in neck.tracker_feats], [p[:1] for p in neck.tracker_pos]
    ).expand(2)
    coords = torch.tensor([[[50.0, 60.0]], [[120.0, 100.0]]])
    labels = torch.tensor([[1], [0]], dtype=torch.int32)
    pix = feats.vision + tracker.no_mem_embed.reshape(1, -1, 1, 1)
    tracker.eval()
    with torch.no_grad():
        ref = tracker.forward_sam_heads(pix, feats.high_res, coords, labels, None, multimask)
        mine = _sam_heads(tracker, pix, feats, coords, labels, None, multimask)
    torch.testing.assert_close(mine.low_res, ref.low_res_masks)
    torch.testing.assert_close(mine.high_res, ref.high_res_masks)
    torch.testing.assert_close(mine.ious, ref.ious)
    torch.testing.assert_close(mine.obj_ptr, ref.obj_ptr)
    torch.testing.assert_close(mine.object_score_logits, ref.object_score_logits)
    appearing = ref.object_score_logits[:, 0] > 0
    torch.testing.assert_close(mine.raw_multimasks[appearing], ref.high_res_multimasks[appearing])


def test_tracker_rollout_backpropagates_through_memory(model, neck):
    tracker = model.tracker
    masks = torch.zeros(2, 3, 224, 224, dtype=torch.bool)
    masks[0, :, 40:90, 40:90] = True
    masks[1, 1:, 150:200, 100:150] = True  # not visible on frame 0: not tracked
    feats = [f.detach().requires_grad_(True) for f in neck.tracker_feats]
    out = tracker_rollout(
        tracker,
        feats,
        list(neck.tracker_pos),
        masks,
        TrackerLoss(),
        np.random.default_rng(0),
        RolloutConfig(p_mask=1.0),  # a mask prompt: frame 0 itself has no loss
    )
    total, parts = out
    assert torch.isfinite(total) and parts["total"] > 0
    total.backward()
    # Frame 0 has no loss of its own: its features get a gradient through the memory only.
    assert feats[2].grad[0].abs().sum() > 0 and feats[2].grad[2].abs().sum() > 0
    none = torch.zeros(1, 3, 224, 224, dtype=torch.bool)
    assert (
        tracker_rollout(
            tracker,
            neck.tracker_feats,
            neck.tracker_pos,
            none,
            TrackerLoss(),
            np.random.default_rng(0),
        )
        is None
    )


def test_click_sampling_regions():
    gen = torch.Generator().manual_seed(0)
    target = torch.zeros(8, 8, dtype=torch.bool)
    target[2:4, 2:4] = True
    pred = torch.zeros(8, 8, dtype=torch.bool)
    pred[6:8, 6:8] = True
    for _ in range(20):
        x, y, label = _sample_click(target, pred, gen)
        inside = bool(target[int(y), int(x)])
        assert (label == 1 and inside) or (label == 0 and pred[int(y), int(x)])
    x, y, label = _sample_click(target, None, gen)
    assert label == 1 and target[int(y), int(x)]
    empty = torch.zeros(8, 8, dtype=torch.bool)
    assert _sample_click(empty, empty, gen)[2] == -1  # nothing to click: padding


@pytest.mark.parametrize("seed", [1, 2])  # corrects frame 1 (click prompt), 2 (box prompt)
def test_tracker_rollout_with_later_corrections(model, neck, seed):
    masks = torch.zeros(2, 3, 224, 224, dtype=torch.bool)
    masks[0, :2, 40:90, 40:90] = True  # leaves after frame 1
    masks[1, :, 150:200, 100:150] = True
    total, parts = tracker_rollout(
        model.tracker,
        list(neck.tracker_feats),
        list(neck.tracker_pos),
        masks,
        TrackerLoss(),
        np.random.default_rng(seed),
        RolloutConfig(p_correct_later=1.0, max_corrections=2),
    )
    assert torch.isfinite(total) and total.requires_grad
