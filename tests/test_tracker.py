"""Parity of the SAM 3 memory tracker (top level + tracking state) with the official predictor.

Fixture: ``tools/reference/gen_tracker.py`` (official ``Sam3TrackerPredictor`` at tiny sizes,
synthetic weights, pure float32) on 10 frames of bikes.mp4 at 320x136. The same frames go
through OUR tiny vision backbone (tracker neck) and OUR `TrackingState`; every prompt call and
every propagated frame is compared:

- low-res mask logits: scenario ``a_click`` is stored in float32, max abs diff <= 1e-3; the
  others in float16, ``|ours - ref| <= 2e-3 + 1e-3 |ref|`` (float16 rounding is 4.9e-4 |ref|);
- object-score logits: max abs diff <= 1e-4;
- video-resolution binary masks: >= 99.5 % pixel agreement per frame and object.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _manifest import manifest_lines

from sam3video.errors import InvalidInputError
from sam3video.model.build import build_vision_backbone
from sam3video.model.config import full_config, tiny_config
from sam3video.model.neck import DualViTDetNeck
from sam3video.model.position_encoding import PositionEmbeddingSine
from sam3video.model.tracker import (
    FrameFeatures,
    FrameMemory,
    Sam3Tracker,
    build_tracker,
    memory_score,
    select_closest_cond_frames,
)
from sam3video.model.weights import synthetic_state_dict
from sam3video.video.tracking import TrackingState

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PREFIX = "tracker."
NECK_PREFIX = "detector.backbone.vision_backbone."

LOGIT_ATOL_FP32 = 1e-3
LOGIT_ATOL_FP16, LOGIT_RTOL_FP16 = 2e-3, 1e-3
SCORE_ATOL = 1e-4
MIN_AGREEMENT = 0.995


pytestmark = pytest.mark.usefixtures("one_thread", "no_grad")  # tests/conftest.py


@lru_cache(maxsize=1)
def fixture() -> tuple[dict, dict]:
    data = torch.load(FIXTURES / "tracker_video.pt", weights_only=True)
    return data["tensors"], data["meta"]


def tiny_tracker(seed: int = 0) -> Sam3Tracker:
    model = build_tracker(tiny_config())
    model.load_state_dict(synthetic_state_dict(model, seed=seed, prefix=PREFIX), strict=True)
    return model.eval()


def tiny_neck() -> DualViTDetNeck:
    neck = build_vision_backbone(tiny_config())
    neck.load_state_dict(synthetic_state_dict(neck, prefix=NECK_PREFIX), strict=True)
    return neck.eval()


def fixture_frames_u8() -> torch.Tensor:
    """The loader's resized uint8 images ``(N, 3, 224, 224)``, decoded from lossless PNG."""
    tensors, _ = fixture()
    data, ends = tensors["frames_png"].numpy(), tensors["frames_png_ends"].tolist()
    images = []
    for start, end in zip([0] + ends[:-1], ends):
        array = cv2.imdecode(data[start:end], cv2.IMREAD_UNCHANGED)
        images.append(torch.from_numpy(array).permute(2, 0, 1))
    return torch.stack(images)


def fixture_mask() -> torch.Tensor:
    tensors, _ = fixture()
    return tensors["mask_ellipse_u8"].float() / 255.0


def loader_frames(u8: torch.Tensor) -> torch.Tensor:
    """SAM 3's stored frames (float16, mean = std = 0.5) from the resized uint8 images."""
    x = (u8.float() / 255.0).to(torch.float16)
    half = torch.tensor(0.5, dtype=torch.float16)
    return (x - half) / half


def unpack(bits: torch.Tensor, h: int, w: int) -> torch.Tensor:
    flat = np.unpackbits(bits.numpy(), axis=-1)[..., : h * w].astype(bool)
    return torch.from_numpy(flat).reshape(*bits.shape[:-1], h, w)


@pytest.fixture(scope="module")
def tracker() -> Sam3Tracker:
    return tiny_tracker()


@pytest.fixture(scope="module")
def frame_features() -> dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """Tracker-neck levels of every fixture frame, from OUR tiny backbone (computed once)."""
    frames = loader_frames(fixture_frames_u8())
    neck = tiny_neck()
    out = {}
    with torch.inference_mode():
        for i in range(frames.shape[0]):
            res = neck(frames[i : i + 1].float(), need_detector=False)
            out[i] = (res.tracker_feats, res.tracker_pos)
    return out


# ---------------------------------------------------------------------------------------------
# state-dict keys


def test_tiny_state_dict_matches_official(tracker):
    _, meta = fixture()
    ours = {k: list(v.shape) for k, v in tracker.state_dict().items()}
    assert list(ours.items()) == list(meta["official_tracker_keys"].items())


def test_full_state_dict_on_meta_matches_manifest():
    with torch.device("meta"):
        model = build_tracker(full_config())
    ours = [(PREFIX + k, tuple(v.shape)) for k, v in model.state_dict().items()]
    official = []
    for line in manifest_lines():
        parts = line.split("\t")
        if parts[0].startswith(PREFIX):
            official.append((parts[0], tuple(ast.literal_eval(parts[1]))))
    assert len(official) == 309
    assert ours == official


# ---------------------------------------------------------------------------------------------
# scenario parity


def play(
    tracker: Sam3Tracker,
    features: dict,
    name: str,
    bounded_memory: bool = True,
):
    """Run a fixture scenario on our state; yield (key, op, output) per compared result."""
    tensors, meta = fixture()
    h, w = meta["video_size"]
    state = TrackingState(
        tracker, lambda i: features[i], meta["num_frames"], (h, w), bounded_memory=bounded_memory
    )
    for k, op in enumerate(meta["scenarios"][name]):
        key = f"{name}/{k}"
        kind = op["op"]
        if kind == "points":
            out = state.add_points(
                op["frame"],
                op["obj"],
                op["points"],
                op["labels"],
                clear_old_points=op.get("clear", True),
            )
            yield key, op, out
        elif kind == "box":
            yield key, op, state.add_box(op["frame"], op["obj"], op["box"])
        elif kind == "mask":
            yield key, op, state.add_mask(op["frame"], op["obj"], fixture_mask())
        elif kind == "remove":
            yield key, op, state.remove_object(op["obj"])
        elif kind == "propagate":
            outs = list(state.propagate(op["start"], op["max"], op["reverse"]))
            yield key, op, outs
        else:
            raise AssertionError(kind)


def check_masks(ours: torch.Tensor, bits: torch.Tensor, h: int, w: int, where: str) -> float:
    ref = unpack(bits, h, w)
    assert ours.shape == (ref.shape[0], 1, h, w), where
    agreement = (ours[:, 0] == ref).float().mean(dim=(1, 2))
    assert agreement.min() >= MIN_AGREEMENT, f"{where}: agreement {agreement.tolist()}"
    return agreement.min().item()


@pytest.mark.parametrize("name", ["a_click", "b_box", "c_two_objects", "d_mask", "e_many_clicks"])
def test_scenario_parity(tracker, frame_features, name):
    tensors, meta = fixture()
    h, w = meta["video_size"]
    worst = {"logits": 0.0, "scores": 0.0, "agreement": 1.0}
    for key, op, result in play(tracker, frame_features, name):
        if op["op"] == "remove":
            assert result == tensors[f"{key}/obj_ids"].tolist()
            continue
        if op["op"] != "propagate":
            assert result.obj_ids == tensors[f"{key}/obj_ids"].tolist(), key
            a = check_masks(result.masks, tensors[f"{key}/masks"], h, w, key)
            worst["agreement"] = min(worst["agreement"], a)
            continue
        assert [o.frame_idx for o in result] == tensors[f"{key}/frames"].tolist(), key
        for out in result:
            fk = f"{key}/{out.frame_idx}"
            assert out.obj_ids == tensors[f"{fk}/obj_ids"].tolist(), fk
            ref = tensors[f"{fk}/low_res"]
            assert out.low_res_masks.shape == ref.shape, fk
            if ref.is_floating_point():
                diff = (out.low_res_masks - ref).abs()
                assert diff.max() <= LOGIT_ATOL_FP32, f"{fk}: {diff.max():.3g}"
                worst["logits"] = max(worst["logits"], diff.max().item())
            else:  # float16 bits
                ref = ref.view(torch.float16).float()
                diff = (out.low_res_masks - ref).abs()
                bound = LOGIT_ATOL_FP16 + LOGIT_RTOL_FP16 * ref.abs()
                assert (diff <= bound).all(), f"{fk}: {(diff - bound).max():.3g} over"
            score_diff = (out.object_score_logits - tensors[f"{fk}/scores"]).abs().max().item()
            assert score_diff <= SCORE_ATOL, f"{fk}: score diff {score_diff:.3g}"
            worst["scores"] = max(worst["scores"], score_diff)
            a = check_masks(out.masks, tensors[f"{fk}/masks"], h, w, fk)
            worst["agreement"] = min(worst["agreement"], a)
            assert torch.equal(out.masks, out.video_res_logits > 0)
    print(name, worst)


def test_scenario_parity_unbounded_equals_bounded(tracker, frame_features):
    """On this short clip nothing is dropped: both modes give identical results."""
    for (_, op, a), (_, _, b) in zip(
        play(tracker, frame_features, "c_two_objects", bounded_memory=True),
        play(tracker, frame_features, "c_two_objects", bounded_memory=False),
    ):
        if op["op"] == "propagate":
            for x, y in zip(a, b):
                assert torch.equal(x.low_res_masks, y.low_res_masks)


# ---------------------------------------------------------------------------------------------
# memory-bank rules (official §9 facts, checked without tensors)


def test_select_closest_cond_frames():
    assert select_closest_cond_frames(5, [9, 1, 3], 4) == ([9, 1, 3], [])
    selected, unselected = select_closest_cond_frames(10, [0, 2, 8, 12, 30, 11], 4)
    # closest before (8), closest at/after (11), then by distance: 12, then 2 (tie order)
    assert selected == [8, 11, 12, 2]
    assert unselected == [0, 30]
    assert select_closest_cond_frames(10, [10, 0, 20, 30, 40], 2) == ([0, 10], [20, 30, 40])
    # equal distances keep the insertion order (stable sort)
    assert select_closest_cond_frames(10, [14, 6, 9, 11, 20], 3) == ([9, 11, 14], [6, 20])
    assert select_closest_cond_frames(10, [6, 14, 9, 11, 20], 3) == ([9, 11, 6], [14, 20])
    with pytest.raises(InvalidInputError):
        select_closest_cond_frames(3, [0, 1, 2], 1)


def test_frame_filter_scans_nearest_qualifying_and_never_frame_0(tracker):
    scores = {t: 0.5 for t in range(0, 40)}
    scores[38] = 0.0  # below the threshold: skipped, but the adjacent frame is always kept
    scores[39] = None
    valid = tracker.frame_filter(40, scores, num_frames=100, reverse=False)
    assert valid == list(range(23, 38)) + [39]  # 15 qualifying, oldest first, + adjacent
    assert tracker.frame_filter(5, scores, 100, reverse=False) == [1, 2, 3, 4]
    assert tracker.frame_filter(0, scores, 100, reverse=False) == []
    assert tracker.frame_filter(99, scores, 100, reverse=True) == []
    assert tracker.frame_filter(30, {31: 0.5, 35: 0.001}, 100, reverse=True) == [31]
    assert tracker.frame_filter(30, {}, 100, reverse=True) == [31]


def test_plan_memory_positions(tracker):
    scores = {t: 0.5 for t in range(1, 20)}
    plan = tracker.plan_memory(20, [0], scores, num_frames=50, reverse=False)
    # The prompted frame (slot 0), then the 6 newest selected frames, oldest first.
    assert [(r.frame, r.from_cond, r.pos) for r in plan.spatial] == [(0, True, 0)] + [
        (t, False, t - 13) for t in range(14, 20)
    ]
    # Pointers: the prompted frame at its distance, then ranks 1..15 (the oldest of the 16
    # selected frames, 4, is never a pointer).
    ptrs = [(r.frame, r.pos) for r in plan.pointers]
    assert ptrs[0] == (0, 20)
    # 15 selected frames (5..19); pointers use their ranks and skip the oldest one (5).
    assert ptrs[1:] == [(20 - d, d) for d in range(1, 15)]
    # Reverse: signs flip for prompted frames; only prompts at or after the frame give pointers.
    plan = tracker.plan_memory(5, [0, 9], {6: 0.5, 7: 0.5}, num_frames=10, reverse=True)
    assert [(r.frame, r.pos) for r in plan.pointers] == [(9, 4), (6, 1)]
    assert [(r.frame, r.pos) for r in plan.spatial] == [(0, 0), (9, 0), (7, 5), (6, 6)]


def test_memory_score_broadcasting_quirk():
    scores = torch.tensor([[2.0], [-1.0]])
    iou = torch.tensor([0.5, 1.0])
    norm = torch.tensor([2 * torch.sigmoid(torch.tensor(2.0)) - 1, 0.0])
    # (B, 1) x (B,): mean of the outer product = mean(norm) * mean(iou)
    assert torch.allclose(memory_score(scores, iou), norm.mean() * iou.mean())
    # (B, 1) x (B, 1): mean of the products
    assert torch.allclose(memory_score(scores, iou[:, None]), (norm * iou).mean())


@torch.inference_mode()
def test_track_step_shapes_and_gating(tracker, frame_features):
    feats = tracker.prepare_features(*frame_features[0]).expand(3)
    out = tracker.track_step(
        0,
        feats,
        {},
        {},
        num_frames=10,
        point_coords=torch.tensor([[[50.0, 60.0]]] * 3),
        point_labels=torch.ones(3, 1, dtype=torch.int32),
        use_memory=False,
    )
    assert out.pred_masks.shape == (3, 1, 64, 64)
    assert out.pred_masks_high_res.shape == (3, 1, 224, 224)
    assert out.obj_ptr.shape == (3, 32) and out.object_score_logits.shape == (3, 1)
    assert out.maskmem_features.shape == (3, 16, 16, 16)
    absent = out.object_score_logits[:, 0] <= 0
    assert (out.pred_masks[absent] == -1024).all()
    assert torch.allclose(out.obj_ptr[absent], tracker.no_obj_ptr.expand(int(absent.sum()), -1))
    # the three objects saw the same prompt: identical results (batched, no cross-talk)
    assert torch.allclose(out.pred_masks[0], out.pred_masks[2])


def test_prepare_features_rejects_wrong_levels(tracker, frame_features):
    feats, pos = frame_features[0]
    with pytest.raises(InvalidInputError, match="feats"):
        tracker.prepare_features(feats[:2], pos[:2])
    with pytest.raises(InvalidInputError, match=r"feats\[2\]"):
        tracker.prepare_features([feats[0], feats[1], feats[1]], pos)


def test_frame_memory_select_keeps_order():
    mem = FrameMemory(
        maskmem_features=torch.arange(3.0)[:, None, None, None],
        obj_ptr=torch.arange(3.0)[:, None],
        object_score_logits=torch.arange(3.0)[:, None],
        iou_score=torch.arange(3.0),
        pred_masks=None,
        eff_iou_score=0.5,
    )
    sub = mem.select([2, 0])
    assert sub.obj_ptr.flatten().tolist() == [2.0, 0.0]
    assert sub.iou_score.tolist() == [2.0, 0.0] and sub.pred_masks is None


# ---------------------------------------------------------------------------------------------
# memory bank in isolation (official _prepare_memory_conditioned_features)


@lru_cache(maxsize=1)
def memory_fixture() -> tuple[dict, dict]:
    data = torch.load(FIXTURES / "tracker_memory_bank.pt", weights_only=True)
    return data["tensors"], data["meta"]


def bank_maskmem(bases: torch.Tensor, t: int) -> torch.Tensor:
    return bases[t % 3] * (1.0 + 0.02 * t)  # as in the generator


@pytest.mark.parametrize(
    "case", ["fwd_selection", "rev_selection", "fwd_far", "fwd_plain", "rev_plain"]
)
@torch.inference_mode()
def test_memory_conditioned_features_parity(tracker, case):
    """Selection of prompted/earlier frames, temporal slots, pointer positions, attention.

    Max abs diff <= 1e-4 (float32).
    """
    tensors, meta = memory_fixture()
    spec = next(c for c in meta["cases"] if c["name"] == case)
    bank = meta["banks"][spec["bank"]]
    num_frames = 40
    cond, non_cond = {}, {}
    for t in range(num_frames):
        if t in bank["missing"] or t == spec["frame"] or t in bank["cond"]:
            continue
        non_cond[t] = FrameMemory(
            maskmem_features=bank_maskmem(tensors["maskmem_bases"], t),
            obj_ptr=tensors["obj_ptr"][t],
            object_score_logits=torch.zeros(2, 1),
            iou_score=torch.zeros(2),
            eff_iou_score=None if t in bank["unscored"] else float(tensors["eff"][t]),
        )
    for t in bank["cond"]:
        cond[t] = FrameMemory(
            maskmem_features=bank_maskmem(tensors["maskmem_bases"], t),
            obj_ptr=tensors["obj_ptr"][t],
            object_score_logits=torch.zeros(2, 1),
            iou_score=torch.zeros(2, 1),
        )
    vision = tensors["vision"].expand(2, -1, -1, -1)
    pos = PositionEmbeddingSine(32)(vision)
    assert torch.allclose(pos[:1], tensors["vision_pos"], atol=1e-6)
    dummy = torch.zeros(2, 1, 1, 1)
    feats = FrameFeatures(high_res=(dummy, dummy), vision=vision, vision_pos=pos)
    tracker.use_memory_selection = spec["selection"]
    try:
        out = tracker.prepare_memory_conditioned_features(
            spec["frame"], feats, cond, non_cond, num_frames, reverse=spec["reverse"]
        )
    finally:
        tracker.use_memory_selection = True
    diff = (out - tensors[f"{case}/out"]).abs().max().item()
    assert diff <= 1e-4, f"{case}: {diff:.3g}"
