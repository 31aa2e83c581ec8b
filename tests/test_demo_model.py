"""Semantic tests of the packaged demo model: what a user sees, against exact ground truth.

The clips come from the procedural shapes world (`sam3video.data`, held-out seeds: never
trained on); the ground truth is exact. Where parity tests compare with the official code,
these compare with what the video contains: a clicked object is followed through a full
occlusion and keeps its id, a text concept finds its instances and not the others, a removed
object stops, and masks overlap the objects.

THRESHOLDS. Each constant below comes from the held-out metrics measured on the shipped
weights (``python tools/eval_demo.py``, README "The demo model") with a margin, and must be
re-measured whenever ``src/sam3video/assets/demo.safetensors`` changes. The values now are
those of the PRE-RELEASE weights (the ``demo`` preset, d_model 128, staged CPU runs of
``tools/demo_recipe.py``: held-out click J&F 0.54 sharing sessions / 0.56 one session per
object, concept precision 0.74 at recall 0.54); behaviours they cannot show are marked
``xfail(strict=True)`` so that better weights turn them into failures to un-mark.
"""

from __future__ import annotations

import numpy as np
import pytest

from sam3video.data import concept_clip, heldout_seed, occlusion_clip, render_clip, write_frames

pytestmark = pytest.mark.usefixtures("one_thread")

# Mean per-frame IoU of objects clicked once on frame 0, each in its own session, over three
# held-out clips (the pre-release weights: 0.829 here; held-out click J&F 0.54, 0.56 in
# separate sessions, in tools/eval_demo.py; the previous pre-releases 0.815, 0.74, 0.73, 0.62
# and 0.32, the earlier d_model-32 stand-in 0.35): margin 0.159.
CLICK_MEAN_IOU_MIN = 0.67
# The same measure with synthetic (untrained) demo-preset weights (0.04) must stay below the demo
# model's by at least this much (0.829 - 0.04 now): the packaged weights are trained.
TRAINED_MARGIN = 0.6
# IoU of the occludee's mask under its own id on the frames around the full occlusion where
# at least half of it shows (the target: id switches <= 5 %; the pre-release weights lose the
# small occludee: 20 of 20 lost in tools/eval_demo.py, 17 of 20 with one session per object).
OCCLUSION_IOU_MIN = 0.5
# A text concept: each target matched by a prediction of video IoU >= CONCEPT_IOU_MIN, no
# prediction on a distractor (IoU >= 0.5 with it); the pre-release detector misses most
# instances (concept recall 0.54 at precision 0.74 in tools/eval_demo.py).
CONCEPT_IOU_MIN = 0.5
# After another object's removal, the kept object's mean IoU over the frames that follow
# (the pre-release weights: 0.93 on this clip, the previous ones 0.92, 0.92, 0.93, 0.88 and
# 0.81; the d_model-32 stand-in gave both clicks the same mask and kept one: 0.0).
KEPT_IOU_MIN = 0.75

STANDIN_XFAIL = (
    "the pre-release demo weights cannot do this yet (README, 'The demo model'); "
    "re-check with weights that track"
)


@pytest.fixture(scope="module")
def demo():
    from sam3video import Sam3VideoPredictor

    p = Sam3VideoPredictor(model_config="demo", device="cpu")
    yield p
    p.shutdown()


def _iou(a: np.ndarray, b: np.ndarray) -> float | None:
    union = np.logical_or(a, b).sum()
    return None if union == 0 else float(np.logical_and(a, b).sum() / union)


def _interior(mask: np.ndarray) -> list[int]:
    """The pixel farthest from the outside (numpy only: independent of the tools)."""
    ys, xs = np.nonzero(mask)
    outside = np.argwhere(~np.pad(mask, 1))
    d = (ys[:, None] + 1 - outside[None, :, 0]) ** 2 + (xs[:, None] + 1 - outside[None, :, 1]) ** 2
    k = int(np.argmax(d.min(axis=1)))
    return [int(xs[k]), int(ys[k])]


def _run(predictor, folder, prompts, start=0, frames=None):
    """Open a session on ``folder``, send ``prompts`` (dicts without type/session), propagate
    forward; returns ({frame: outputs}, session_id) with the session still open."""
    sid = predictor.handle_request({"type": "start_session", "resource_path": str(folder)})[
        "session_id"
    ]
    for prompt in prompts:
        predictor.handle_request({"type": "add_prompt", "session_id": sid, **prompt})
    return _propagate(predictor, sid, start, frames), sid


def _propagate(predictor, sid, start=0, frames=None):
    request = {"type": "propagate_in_video", "session_id": sid, "start_frame_index": start,
               "propagation_direction": "forward"}  # fmt: skip
    if frames is not None:
        request["max_frame_num_to_track"] = frames - 1
    return {item["frame_index"]: item["outputs"] for item in
            predictor.handle_stream_request(request)}  # fmt: skip


def _close(predictor, sid):
    predictor.handle_request({"type": "close_session", "session_id": sid})


def _click(clip, obj_id, t=0):
    k = clip.obj_ids.index(obj_id)
    return {"frame_index": t, "points": [_interior(clip.masks[k, t])], "point_labels": [1],
            "obj_id": obj_id}  # fmt: skip


def _mask(outputs, obj_id, shape):
    entry = outputs.get(obj_id)
    return np.asarray(entry["mask"], bool) if entry is not None else np.zeros(shape, bool)


def _click_mean_iou(predictor, tmp_path, seeds=(0, 1, 2), num_frames=8):
    """Mean per-frame IoU (frames where object or prediction has pixels) of every object
    visible on frame 0, each clicked once there in a session of its own (what the model
    segments and follows, without other objects' masks competing for its pixels), over
    held-out clips."""
    values = []
    for i in seeds:
        clip = render_clip(heldout_seed(i), num_frames=num_frames)
        folder = write_frames(clip, tmp_path / f"clip{i}")
        for o in [o for k, o in enumerate(clip.obj_ids) if clip.masks[k, 0].any()]:
            out, sid = _run(predictor, folder, [_click(clip, o)])
            _close(predictor, sid)
            gt = clip.masks[clip.obj_ids.index(o)]
            ious = [_iou(gt[t], _mask(out[t], o, gt[t].shape)) for t in range(num_frames)]
            values += [v for v in ious if v is not None]
    return float(np.mean(values))


@pytest.fixture(scope="module")
def demo_click_iou(demo, tmp_path_factory):
    return _click_mean_iou(demo, tmp_path_factory.mktemp("clicks"))


def test_clicked_objects_are_segmented_and_followed(demo_click_iou):
    assert demo_click_iou >= CLICK_MEAN_IOU_MIN


def test_the_packaged_weights_are_trained(demo_click_iou, tmp_path):
    import warnings

    from sam3video import Sam3VideoPredictor, build_sam3_video_model

    # The same architecture with synthetic weights: what training added, not what a preset did.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam3_video_model("demo", device="cpu")
    synthetic = Sam3VideoPredictor(model=model, device="cpu")
    try:
        untrained = _click_mean_iou(synthetic, tmp_path)
    finally:
        synthetic.shutdown()
    assert demo_click_iou >= untrained + TRAINED_MARGIN


@pytest.mark.xfail(strict=True, reason=STANDIN_XFAIL)
def test_a_clicked_object_keeps_its_id_through_a_full_occlusion(demo, tmp_path):
    clip = occlusion_clip(heldout_seed(0), num_frames=24, hidden=8)
    occludee = clip.meta["occludee"]
    gt = clip.masks[clip.obj_ids.index(occludee)]
    folder = write_frames(clip, tmp_path / "occlusion")
    out, sid = _run(demo, folder, [_click(clip, occludee)])
    _close(demo, sid)
    # The frames around the occlusion where at least half of the occludee shows.
    k = clip.obj_ids.index(occludee)
    share = clip.masks[k].sum(axis=(1, 2)) / np.maximum(clip.amodal[k].sum(axis=(1, 2)), 1)
    empty = clip.meta["empty_frames"]
    before = max(t for t in range(empty[0]) if share[t] >= 0.5)
    after = min(t for t in range(empty[-1] + 1, clip.num_frames) if share[t] >= 0.5)
    # Under its own id on both sides of the occlusion, nowhere else during it.
    assert _iou(gt[before], _mask(out[before], occludee, gt[0].shape)) >= OCCLUSION_IOU_MIN
    assert _iou(gt[after], _mask(out[after], occludee, gt[0].shape)) >= OCCLUSION_IOU_MIN
    for t in clip.meta["hidden_frames"]:
        assert _mask(out[t], occludee, gt[0].shape).sum() <= 0.2 * gt[before].sum()


@pytest.mark.xfail(strict=True, reason=STANDIN_XFAIL)
def test_a_text_concept_finds_its_instances_and_not_the_others(demo, tmp_path):
    clip = concept_clip(heldout_seed(0), num_frames=6, target=("red", "circle"), num_targets=2)
    folder = write_frames(clip, tmp_path / "concept")
    out, sid = _run(demo, folder, [{"frame_index": 0, "text": clip.meta["phrase"]}])
    _close(demo, sid)
    predicted = {o for frame in out.values() for o in frame}
    masks = {
        o: np.stack([_mask(out[t], o, clip.masks.shape[2:]) for t in range(clip.num_frames)])
        for o in predicted
    }
    row = {o: k for k, o in enumerate(clip.obj_ids)}
    for target in clip.meta["targets"]:
        best = max((_iou(clip.masks[row[target]], m) or 0.0 for m in masks.values()), default=0)
        assert best >= CONCEPT_IOU_MIN, f"target {target} not found"
    for other in (o for o in clip.obj_ids if o not in clip.meta["targets"]):
        for m in masks.values():
            assert (_iou(clip.masks[row[other]], m) or 0.0) < 0.5, f"distractor {other} found"


def _remove_one(demo, tmp_path):
    """Two objects clicked on frame 0, 4 frames tracked, one removed, the rest tracked."""
    clip = concept_clip(heldout_seed(1), num_frames=8, num_targets=1, num_distractors=1)
    folder = write_frames(clip, tmp_path / "remove")
    kept, removed = clip.obj_ids[:2]
    first, sid = _run(demo, folder, [_click(clip, kept), _click(clip, removed)], frames=4)
    try:
        demo.handle_request({"type": "remove_object", "session_id": sid, "obj_id": removed})
        rest = _propagate(demo, sid, 3)
    finally:
        _close(demo, sid)
    return clip, kept, removed, first, rest


def test_a_removed_object_stops(demo, tmp_path):
    clip, kept, removed, first, rest = _remove_one(demo, tmp_path)
    assert removed in {o for outputs in first.values() for o in outputs}
    assert sorted(rest) == list(range(3, 8))
    assert all(removed not in outputs for outputs in rest.values())


def test_the_other_object_goes_on_after_a_removal(demo, tmp_path):
    clip, kept, removed, first, rest = _remove_one(demo, tmp_path)
    gt = clip.masks[clip.obj_ids.index(kept)]
    ious = [_iou(gt[t], _mask(rest[t], kept, gt[t].shape)) or 0.0 for t in rest]
    assert float(np.mean(ious)) >= KEPT_IOU_MIN
    # Nothing took the removed object over, under any id (the d_model-32 stand-in's kept
    # track sat on the removed object: both clicks gave it the same mask).
    gone = clip.masks[clip.obj_ids.index(removed)]
    for t, outputs in rest.items():
        for entry in outputs.values():
            assert (_iou(gone[t], np.asarray(entry["mask"], bool)) or 0.0) < 0.5
