"""The demo model's plumbing: the ``demo`` preset and its packaged weights, ``sam3video demo``,
``tools/export_demo.py`` and the concept precision/recall of ``tools/eval_demo.py``.

What the weights can do is tested in ``test_demo_model.py``; here, that the right weights
are loaded (compared with the file read independently), that a missing asset is a typed
error, that the command writes what it says, and the export's round trip.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sam3video import checkpoints, cli
from sam3video.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------- the preset


def test_the_demo_preset_loads_the_packaged_weights_as_float32():
    from sam3video import Sam3VideoPredictor

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "synthetic weights" warning
        predictor = Sam3VideoPredictor(model_config="demo", device="cpu")
    stored = load_file(str(checkpoints.DEMO_WEIGHTS))
    state = predictor.model.state_dict()
    assert predictor.model.config.name == "demo" and set(stored) == set(state)
    for key, value in stored.items():
        assert state[key].dtype == (torch.float32 if value.is_floating_point() else value.dtype)
        assert torch.equal(state[key], value.to(state[key].dtype)), key
    with safe_open(str(checkpoints.DEMO_WEIGHTS), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "sam3video-demo" and int(meta["step"]) > 0
    # one `sam3video train` run, or the staged recipe of the shipped weights
    assert meta["training_command"].startswith(("sam3video train", "python tools/demo_recipe.py"))
    predictor.shutdown()


def test_the_model_builder_gives_float32_from_the_float16_file():
    from sam3video.model.build import build_sam3_video_model

    model = build_sam3_video_model("demo", checkpoint_path=checkpoints.DEMO_WEIGHTS, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    half = build_sam3_video_model(
        "demo", checkpoint_path=checkpoints.DEMO_WEIGHTS, device="cpu", dtype=torch.bfloat16
    )
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}  # an explicit dtype wins
    with pytest.warns(UserWarning, match=r"synthetic weights.*demo_weights\(\)"):
        build_sam3_video_model("demo", device="cpu")  # the builder itself does not look


def test_an_explicit_checkpoint_wins_over_the_packaged_weights(tmp_path):
    from sam3video import Sam3VideoPredictor
    from sam3video.model.build import build_sam3_video_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synthetic = build_sam3_video_model("demo", device="cpu").state_dict()
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in synthetic.items()}, str(path))
    predictor = Sam3VideoPredictor(model_config="demo", checkpoint_path=path, device="cpu")
    state = predictor.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in synthetic.items())
    predictor.shutdown()


def test_missing_demo_weights_are_a_typed_error(tmp_path, monkeypatch, capsys):
    from sam3video import Sam3VideoPredictor

    monkeypatch.setattr(checkpoints, "DEMO_WEIGHTS", tmp_path / "demo.safetensors")
    with pytest.raises(CheckpointError, match="packaged demo weights are missing"):
        Sam3VideoPredictor(model_config="demo", device="cpu")
    with pytest.raises(CheckpointError, match="export_demo"):
        checkpoints.load_predictor("demo", None, device="cpu")
    assert cli.main(["info", "--model", "demo"]) == 0
    assert f"{tmp_path / 'demo.safetensors'} (MISSING)" in capsys.readouterr().out


def test_info_names_the_packaged_weights(capsys):
    assert cli.main(["info", "--model", "demo"]) == 0
    assert f"{checkpoints.DEMO_WEIGHTS} (packaged demo weights)" in capsys.readouterr().out


def test_the_package_data_ships_the_weights():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"assets/*.safetensors"' in text
    assert checkpoints.DEMO_WEIGHTS.parent == ROOT / "src" / "sam3video" / "assets"


# --------------------------------------------------------------------- sam3video demo


def test_the_demo_scene_tells_the_red_circle_story():
    from sam3video.cli.demo import demo_clip

    clip = demo_clip(1_000_000_000, 24, scale=1)
    kinds = {inst.obj_id: (inst.colour, inst.shape) for inst in clip.instances}
    assert kinds[1] == ("red", "circle") and kinds[2][0] != "red"
    assert clip.objects_for("red circle") == [1]
    assert any(c == "red" and s != "circle" for c, s in kinds.values())  # colour distractor
    assert any(c != "red" and s == "circle" for i, (c, s) in kinds.items() if i != 2)
    hidden = clip.meta["hidden_frames"]
    assert len(hidden) >= 24 // 4 and hidden == list(range(hidden[0], hidden[-1] + 1))
    assert not clip.masks[0, hidden].any() and clip.amodal[0, hidden].any(axis=(1, 2)).all()
    assert clip.masks[0, 0].any() and clip.masks[0, -1].any()
    big = demo_clip(1_000_000_000, 24, scale=2)
    assert big.frames.shape == (24, 448, 448, 3)
    assert np.array_equal(big.masks[:, :, ::2, ::2], clip.masks)


def test_sam3video_demo_writes_its_files(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--frames", "12", "--device", "cpu", "--quiet"]
    assert cli.main([*argv, "--threads", "1"]) == 0
    stdout = capsys.readouterr().out
    assert "prompt 'red circle' names 1" in stdout
    for name in ("shapes.mp4", "overlay.mp4", "results.json", "contact_sheet.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["targets"] == [1] and summary["model"] == "demo"
    assert len(summary["objects"][0]["per_frame_iou"]) == 12
    results = json.loads((out / "results.json").read_text())
    assert results["videos"][0]["length"] == 12 and results["videos"][0]["width"] == 448
    # The summary's IoUs are those of results.json against the scene's masks.
    from sam3video.cli.demo import demo_clip

    clip = demo_clip(summary["seed"], 12, scale=2)
    pred = {a["obj_id"]: a["segmentations"] for a in results["annotations"]}
    for entry in summary["objects"]:
        gt = clip.masks[clip.obj_ids.index(entry["gt_id"])]
        for t, value in enumerate(entry["per_frame_iou"]):
            rle = pred[entry["pred_id"]][t] if entry["pred_id"] is not None else None
            mask = np.zeros(gt[t].shape, bool) if rle is None else mask_util.decode(
                {"size": rle["size"], "counts": rle["counts"].encode()}
            ).astype(bool)  # fmt: skip
            union = (mask | gt[t]).sum()
            assert value == (None if union == 0 else pytest.approx((mask & gt[t]).sum() / union))
    import cv2

    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 2 * 300


def test_sam3video_demo_click_prompts_the_object(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--frames", "6", "--device", "cpu", "--quiet", "--click"]
    assert cli.main([*argv, "--scale", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [a["obj_id"] for a in results["annotations"]] == [0]  # the clicked object, tracked
    assert cli.main([*argv, "--prompt", "green star"]) == 2  # named by nothing in the scene
    assert "--click: no object named 'green star'" in capsys.readouterr().err


# --------------------------------------------------------------------- tools/export_demo.py


def test_export_demo_round_trip(tmp_path, capsys):
    from sam3video.model.build import build_sam3_video_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = build_sam3_video_model("demo", device="cpu", seed=3).state_dict()
    run = tmp_path / "run"
    run.mkdir()
    config = {"model": "demo", "task": "both", "steps": 9, "lr": 0.0005, "num_frames": 4}
    torch.save({"model": weights, "step": 7, "config": config}, run / "last.pt")
    (run / "commit.txt").write_text("abc123\n")
    steps = [{"step": s, "seconds": 1.5} for s in range(1, 10)]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in steps) + "\n")
    out = tmp_path / "demo.safetensors"
    assert _tool("export_demo").main([str(run), "--out", str(out), "--meta", "machine=ci"]) == 0
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
        stored = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["step"] == "7" and meta["source_commit"] == "abc123"
    assert meta["train_step_seconds"] == "10"  # steps 1..7 of the log, 1.5 s each
    assert meta["machine"] == "ci" and json.loads(meta["training_config"]) == config
    assert meta["training_command"].startswith("sam3video train --data shapes --model demo")
    assert "--steps 9" in meta["training_command"] and "--frames 4" in meta["training_command"]
    for key, value in weights.items():
        expected = value.to(torch.float16) if value.is_floating_point() else value
        assert stored[key].dtype == expected.dtype and torch.equal(stored[key], expected), key
    assert out.stat().st_size < 0.6 * sum(v.numel() * v.element_size() for v in weights.values())


def test_export_demo_refuses_weights_of_another_architecture(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"detector.foo": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        _tool("export_demo").main([str(path), "--out", str(tmp_path / "x.safetensors")])


# --------------------------------------------------------------------- concept P/R


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode()}


def test_concept_precision_recall_counts_by_hand():
    from sam3video.evaluation.concepts import concept_precision_recall

    def box(y0, y1, x0, x1):
        m = np.zeros((10, 10), bool)
        m[y0:y1, x0:x1] = True
        return m

    a1, a2 = box(0, 4, 0, 4), box(6, 10, 6, 10)
    gt = {
        "videos": [{"id": 0, "height": 10, "width": 10, "length": 1}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 1, "video_id": 0, "category_id": 1, "segmentations": [_rle(a1)]},
            {"id": 2, "video_id": 0, "category_id": 1, "segmentations": [_rle(a2)]},
        ],
        "video_np_pairs": [
            {"id": 1, "video_id": 0, "category_id": 1, "noun_phrase": "a", "num_masklets": 2},
            {"id": 2, "video_id": 0, "category_id": 2, "noun_phrase": "b", "num_masklets": 0},
        ],
    }
    # "a": one exact (TP), one IoU 4/16 with a2 (FP + a2 missed), one below the score
    # threshold (ignored); "b" (absent): one detection (FP).
    preds = [
        {"video_id": 0, "category_id": 1, "score": 0.9, "segmentations": [_rle(a1)]},
        {"video_id": 0, "category_id": 1, "score": 0.8, "segmentations": [_rle(box(6, 8, 6, 8))]},
        {"video_id": 0, "category_id": 1, "score": 0.2, "segmentations": [_rle(a2)]},
        {"video_id": 0, "category_id": 2, "score": 0.7, "segmentations": [_rle(a2)]},
    ]
    result = concept_precision_recall(gt, preds)
    assert (result["TP"], result["FP"], result["FN"]) == (1, 2, 1)
    assert result["precision"] == pytest.approx(1 / 3) and result["recall"] == pytest.approx(1 / 2)
    # With a lower score threshold the third detection counts: a2 is found.
    low = concept_precision_recall(gt, preds, score_threshold=0.1)
    assert (low["TP"], low["FP"], low["FN"]) == (2, 2, 0)
    none = concept_precision_recall(gt, [])
    assert math.isnan(none["precision"]) and none["recall"] == 0.0


# --------------------------------------------------------------------- tools/eval_demo.py


def test_eval_demo_scores_the_ground_truth_as_perfect(tmp_path):
    """The evaluation's plumbing (track-layout files, merge, negatives, occlusion outcome)
    with the ground truth itself as the prediction: every metric at its best."""
    from sam3video.data import clip_to_ytvis, heldout_seed, occlusion_clip, render_clip
    from sam3video.evaluation import align, evaluate
    from sam3video.evaluation.concepts import concept_precision_recall

    tool = _tool("eval_demo")
    clips = [render_clip(heldout_seed(k), num_frames=5) for k in range(2)]
    clicks, texts, absent = [], [], {}
    for clip in clips:
        name = f"shapes_{clip.seed}"
        phrase = {i.obj_id: f"{i.colour} {i.shape}" for i in clip.instances}
        frames = {
            t: {o: {"mask": clip.masks[k, t], "score": 1.0, "concept": phrase[o]}
                for k, o in enumerate(clip.obj_ids) if clip.masks[k, t].any()}
            for t in range(clip.num_frames)
        }  # fmt: skip
        absent[name] = tool.absent_phrases(clip, 2, np.random.default_rng(0))
        assert not set(absent[name]) & set(phrase.values()) and len(absent[name]) == 2
        path = tmp_path / name
        clicks.append((tool.write_results(path / "c.json", name, clip, frames, None), phrase))
        names = sorted(set(phrase.values())) + absent[name]
        texts.append((tool.write_results(path / "t.json", name, clip, frames, names), None))
    gt = clip_to_ytvis(clips, ext="png")
    click = evaluate(gt, tool.merge(clicks), metrics=("jf",), jf_match="id")
    assert click["summary"]["J&F"] == pytest.approx(1.0)
    assert click["objects"] and all(o["J&F"] == pytest.approx(1.0) for o in click["objects"])
    gt_text = tool.add_negatives(clip_to_ytvis(clips, ext="png"), absent)
    assert sum(p["num_masklets"] == 0 for p in gt_text["video_np_pairs"]) == 4
    pred = tool.merge(texts)
    pr = concept_precision_recall(gt_text, align(gt_text, pred).predictions)
    assert (pr["precision"], pr["recall"], pr["FP"]) == (1.0, 1.0, 0)
    assert evaluate(gt_text, pred, metrics=("cgf1",))["summary"]["IL_MCC"] > 0.99

    clip = occlusion_clip(heldout_seed(0), num_frames=24, hidden=8)
    k = clip.obj_ids.index(clip.meta["occludee"])
    before, after = tool.around_occlusion(clip)
    assert before < clip.meta["empty_frames"][0] and after > clip.meta["empty_frames"][-1]
    same = {t: {7: {"mask": clip.masks[k, t]}} for t in range(24)}
    assert tool.occlusion_outcome(clip, same)["outcome"] == "kept"
    swapped = {t: {7 if t < 12 else 8: {"mask": clip.masks[k, t]}} for t in range(24)}
    assert tool.occlusion_outcome(clip, swapped)["outcome"] == "switch"
    assert tool.occlusion_outcome(clip, {})["outcome"] == "lost"
    x, y = tool.interior_click(clip.masks[k, 0])
    assert clip.masks[k, 0, y, x]


def test_eval_demo_overrides_heuristic_fields_by_name_and_type():
    import argparse

    from sam3video.video.planner import VideoHeuristics

    tool = _tool("eval_demo")
    parser = argparse.ArgumentParser()
    base = VideoHeuristics()
    got = tool.override_heuristics(
        base, ["new_det_thresh=0.5", "hotstart_delay=20", "suppress_det_close_to_boundary=true"],
        parser,
    )  # fmt: skip
    assert (got.new_det_thresh, got.hotstart_delay) == (0.5, 20)
    assert type(got.hotstart_delay) is int and got.suppress_det_close_to_boundary is True
    assert got.assoc_iou_thresh == base.assoc_iou_thresh  # the rest unchanged
    assert tool.override_heuristics(base, [], parser) == base
    off = tool.override_heuristics(got, ["suppress_det_close_to_boundary=FALSE"], parser)
    assert off.suppress_det_close_to_boundary is False and off.new_det_thresh == 0.5
    # unknown, no value, wrong types, and refused by the heuristics' own checks
    bad_items = ("no_such_field=1", "new_det_thresh", "hotstart_delay=0.5",
                 "suppress_det_close_to_boundary=yes", "hotstart_delay=3")  # fmt: skip
    for bad in bad_items:
        with pytest.raises(SystemExit):
            tool.override_heuristics(base, [bad], parser)


# --------------------------------------------------------------------- tools/demo_recipe.py


def test_demo_recipe_merges_by_ownership_and_zeroes_the_skips(tmp_path):
    recipe = _tool("demo_recipe")
    det = {"detector.backbone.vision_backbone.trunk.w": torch.ones(2),
           "detector.head.w": torch.full((2,), 2.0), "tracker.a.w": torch.full((2,), 3.0),
           "tracker.sam_mask_decoder.conv_s0.weight": torch.full((2,), 4.0)}  # fmt: skip
    trunk = "detector.backbone.vision_backbone.trunk.w"
    trk = {k: v if k == trunk else v + 10 for k, v in det.items()}
    save_file(det, str(tmp_path / "det.safetensors"))
    save_file(trk, str(tmp_path / "trk.safetensors"))
    out = tmp_path / "merged.safetensors"
    recipe.main(["merge", str(tmp_path / "det.safetensors"), str(tmp_path / "trk.safetensors"),
                 str(out)])  # fmt: skip
    merged = load_file(str(out))
    assert torch.equal(merged["detector.head.w"], det["detector.head.w"])  # the detector's
    assert torch.equal(merged["tracker.a.w"], trk["tracker.a.w"])  # the tracker's
    recipe.main(["zero-skips", str(out), str(tmp_path / "zero.safetensors")])
    zeroed = load_file(str(tmp_path / "zero.safetensors"))
    assert not zeroed["tracker.sam_mask_decoder.conv_s0.weight"].any()
    assert torch.equal(zeroed["tracker.a.w"], trk["tracker.a.w"])
    trk[trunk] = torch.zeros(2)  # trunks that differ
    save_file(trk, str(tmp_path / "trk.safetensors"))
    with pytest.raises(SystemExit, match="frozen trunk differs"):
        recipe.main(["merge", str(tmp_path / "det.safetensors"),
                     str(tmp_path / "trk.safetensors"), str(out)])  # fmt: skip


def test_demo_recipe_stage_freezes_the_trunk_unless_asked_to_train_it():
    recipe = _tool("demo_recipe")
    common = ["stage", "--task", "tracker", "--init", "w.safetensors", "--out", "o"]
    args = recipe.build_parser().parse_args([*common, "--freeze", "a.", "b."])
    assert recipe.frozen_prefixes(args) == (recipe.TRUNK, "a.", "b.")
    args = recipe.build_parser().parse_args([*common, "--train-trunk", "--freeze", "a."])
    assert recipe.frozen_prefixes(args) == ("a.",)


# --------------------------------------------------------------------- tools/probe_demo.py


def test_probe_demo_grounds_a_batch_of_phrases_as_one_call_per_phrase():
    import warnings

    from sam3video.model.build import build_sam3_video_model

    probe = _tool("probe_demo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # synthetic weights
        detector = build_sam3_video_model("tiny", device="cpu").detector.eval()
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    phrases = ["red circle", "blue star", "shape"]
    with torch.no_grad():
        neck = detector.backbone.forward_image(images, need_tracker=False)
        batched = probe.ground_phrases(detector, neck, phrases)
        for j, phrase in enumerate(phrases):
            single = detector(images, [phrase])
            torch.testing.assert_close(batched.pred_logits[j], single.pred_logits[0])
            torch.testing.assert_close(batched.presence_logit[j], single.presence_logit[0])
