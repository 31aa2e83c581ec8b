"""The training loop: learning on a fixed batch, bit-identical resume, fine-tuning from an
official-format checkpoint on the toy SA-Co file, the CLI (tiny config, CPU)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sam3video.cli import main
from sam3video.model.build import build_sam3_video_model, read_checkpoint
from sam3video.model.weights import synthetic_state_dict
from sam3video.train.data import YtvisSource, detector_queries, prepare_clip, step_rng
from sam3video.train.forward import RolloutConfig
from sam3video.train.loop import TrainConfig, Trainer, lr_factor
from tests._train_clips import SquaresSource

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures"
TOY = FIXTURES / "toy_saco_veval_sav_test_gt.json.gz"


def _fixed_loss(trainer: Trainer, clips) -> float:
    with torch.no_grad():
        return trainer.compute_loss(clips, step=0)[0].item()


@pytest.mark.parametrize("task", ["detector", "tracker"])
def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(task):
    cfg = TrainConfig(
        task=task,
        steps=8,
        batch=2 if task == "detector" else 1,
        num_frames=3,
        lr=1e-3,
        warmup=0,
        min_lr_ratio=1.0,
        rollout=RolloutConfig(p_box=0.0, p_mask=0.0, max_corrections=0),
    )
    trainer = Trainer(cfg, SquaresSource(), log=lambda r: None)
    clips = trainer.sample_clips(0)
    before = _fixed_loss(trainer, clips)
    for _ in range(cfg.steps):
        trainer.train_step(clips, prompt_step=0)
    after = _fixed_loss(trainer, clips)
    assert after < 0.7 * before, (before, after)


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_resume_is_bit_identical(tmp_path):
    def config(out):
        return TrainConfig(
            task="both",
            steps=4,
            batch=1,
            num_frames=2,
            lr=1e-3,
            warmup=1,
            out=str(out),
            save_every=2,
        )

    straight = Trainer(config(tmp_path / "a"), SquaresSource(), log=lambda r: None)
    straight.fit()
    first = Trainer(config(tmp_path / "b"), SquaresSource(), log=lambda r: None)
    first.train_step()
    first.train_step()
    first.save()
    second = Trainer(config(tmp_path / "b"), SquaresSource(), log=lambda r: None)
    assert second.resume() and second.step == 2
    second.fit()
    a, b = _weights(straight), _weights(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    init = build_sam3_video_model("tiny", device="cpu", seed=0).state_dict()
    assert any(not torch.equal(a[k], init[k]) for k in a)  # it did train
    opt_a = straight.optimizer.state_dict()["state"]
    opt_b = second.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)
    # The weights export loads strictly into a fresh model and equals the trained weights.
    exported = build_sam3_video_model(
        "tiny", checkpoint_path=tmp_path / "a" / "model.safetensors", device="cpu"
    ).state_dict()
    assert all(torch.equal(exported[k], a[k]) for k in a)
    # last.pt is also a valid --init (its "model" entry is a plain state dict).
    again = build_sam3_video_model("tiny", checkpoint_path=tmp_path / "a" / "last.pt", device="cpu")
    assert all(torch.equal(again.state_dict()[k], a[k]) for k in a)
    log = (tmp_path / "a" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3, 4]


def test_lr_schedule():
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_detector_queries_targets():
    clip = prepare_clip(SquaresSource(64).sample(np.random.default_rng(3), 2), 32)
    queries, texts, targets = detector_queries([clip] * 20, np.random.default_rng(0), 0.3, (), 2)
    assert [k for k, _ in queries] == [k for k in range(20) for _ in range(2)]
    assert all(queries[2 * k][1] == queries[2 * k + 1][1] for k in range(20))  # one frame
    for (_, t), text, boxes, masks in zip(queries, texts, targets.boxes, targets.masks):
        if text == "green circle":
            assert len(boxes) == 0
        else:
            want = [i for i, ps in enumerate(clip.phrases) if text in ps and clip.masks[i, t].any()]
            assert torch.equal(masks, clip.masks[want, t])
            assert ((boxes > 0) & (boxes <= 1)).all()
    assert {"green circle", "square"} <= set(texts)


@pytest.fixture(scope="module")
def toy_frames(tmp_path_factory):
    """JPEG frames for the toy SA-Co file (its videos are not in the repository)."""
    root = tmp_path_factory.mktemp("frames")
    data = json.loads(gzip.open(TOY).read())
    video = data["videos"][0]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (video["height"], video["width"], 3), dtype=np.uint8)
    (root / video["video_name"]).mkdir()
    for name in video["file_names"]:
        cv2.imwrite(str(root / name), image)
    return root


def test_ytvis_source_reads_objects_phrases_and_negatives(toy_frames):
    source = YtvisSource(TOY, frames_root=toy_frames)
    sample = source.sample(step_rng(0, 0), 3)
    assert sample.frames.shape == (3, 3, 1280, 720)
    assert sample.masks.shape == (33, 3, 1280, 720)
    assert "thick gold chain" in sample.negative_phrases
    assert ("air jordan",) in [tuple(p) for p in sample.phrases]


def test_finetune_from_official_format_checkpoint_via_cli(tmp_path, toy_frames, capsys):
    ckpt = tmp_path / "sam3.pt"
    torch.save(synthetic_state_dict("tiny", seed=5), ckpt)
    out = tmp_path / "run"
    args = [
        "train",
        "--model",
        "tiny",
        "--init",
        str(ckpt),
        "--data",
        str(TOY),
        "--frames-root",
        str(toy_frames),
        "--steps",
        "2",
        "--batch",
        "1",
        "--frames",
        "2",
        "--task",
        "both",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--log-every",
        "1",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "step 2 loss=" in text
    trained = read_checkpoint(out / "model.safetensors")
    init = synthetic_state_dict("tiny", seed=5)
    assert trained.keys() == init.keys()
    assert any(not torch.equal(trained[k], init[k]) for k in init)
    # --resume at the last step has nothing left to do and keeps the weights.
    assert main([*args, "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    again = read_checkpoint(out / "model.safetensors")
    assert all(torch.equal(again[k], trained[k]) for k in trained)


def test_cli_rejects_unknown_model(tmp_path, capsys):
    code = main(["train", "--model", "huge", "--data", "shapes", "--out", str(tmp_path)])
    assert code == 2
    assert "--model" in capsys.readouterr().err


def test_cli_passes_p_occlusion_to_the_shapes_world(tmp_path, capsys):
    # An out-of-range share reaches ShapesSource's check (so the flag is passed through),
    # and is refused before anything is built or written.
    out = tmp_path / "run"
    code = main(["train", "--data", "shapes", "--p-occlusion", "1.5", "--out", str(out)])
    assert code == 2
    assert "p_occlusion" in capsys.readouterr().err and not out.exists()


def test_bfloat16_autocast_step(tmp_path):
    cfg = TrainConfig(task="both", steps=1, batch=1, num_frames=2, dtype="bfloat16", warmup=0)
    trainer = Trainer(cfg, SquaresSource(), log=lambda r: None)
    before = _weights(trainer)
    record = trainer.train_step()
    assert np.isfinite(record["loss"]) and np.isfinite(record["grad_norm"])
    after = _weights(trainer)
    assert all(v.dtype == before[k].dtype for k, v in after.items())  # weights stay float32
    assert any(not torch.equal(after[k], before[k]) for k in after)
    with pytest.raises(Exception, match="float16"):
        Trainer(TrainConfig(dtype="float16", device="cpu"), SquaresSource())


def test_frozen_parameters_stay_fixed():
    prefix = "detector.backbone.vision_backbone.trunk."
    cfg = TrainConfig(task="detector", steps=1, batch=1, lr=1e-2, warmup=0, freeze=(prefix,))
    trainer = Trainer(cfg, SquaresSource(), log=lambda r: None)
    before = _weights(trainer)
    trainer.train_step()
    after = _weights(trainer)
    frozen = [k for k in before if k.startswith(prefix)]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in frozen)


def test_ytvis_source_groups_annotations_of_one_object(tmp_path):
    """Our export layout: one annotation per (object, phrase), sharing ``obj_id``."""
    from pycocotools import mask as mask_util

    h, w = 20, 30
    m7 = np.zeros((h, w), dtype=np.uint8)
    m7[2:8, 3:9] = 1
    m9 = np.zeros((h, w), dtype=np.uint8)
    m9[10:15, 20:28] = 1

    def rle(m):
        r = mask_util.encode(np.asfortranarray(m))
        return {"size": [h, w], "counts": r["counts"].decode("ascii")}

    def ann(i, obj, phrase, m):
        return {
            "id": i,
            "obj_id": obj,
            "video_id": 0,
            "noun_phrase": phrase,
            "segmentations": [rle(m), None],
        }

    data = {
        "videos": [{"id": 0, "file_names": ["v/0.png", "v/1.png"], "height": h, "width": w}],
        "annotations": [
            ann(1, 7, "red circle", m7),
            ann(2, 7, "circle", m7),
            ann(3, 9, "blue square", m9),
        ],
    }
    (tmp_path / "v").mkdir()
    for name in data["videos"][0]["file_names"]:
        cv2.imwrite(str(tmp_path / name), np.zeros((h, w, 3), dtype=np.uint8))
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    sample = YtvisSource(path).sample(step_rng(0, 0), 2)
    assert [tuple(p) for p in sample.phrases] == [("red circle", "circle"), ("blue square",)]
    assert torch.equal(sample.masks[0, 0], torch.from_numpy(m7.astype(bool)))
    assert torch.equal(sample.masks[1, 0], torch.from_numpy(m9.astype(bool)))
    assert not sample.masks[:, 1].any()  # null = not visible


def test_detector_queries_index_the_same_frames_in_both_tasks():
    """The detector loss of a step is the same whether the backbone ran on the queried
    frames only (task detector) or on every frame of the clips (task both)."""
    losses = {}
    for task in ("detector", "both"):
        cfg = TrainConfig(task=task, batch=2, num_frames=3, queries_per_frame=3)
        trainer = Trainer(cfg, SquaresSource(), log=lambda r: None)
        with torch.no_grad():
            losses[task] = trainer.compute_loss(trainer.sample_clips(0), step=0)[1]
    for key in ("det_cls", "det_bbox", "det_giou", "det_presence", "det_mask", "det_dice"):
        assert losses["both"][key] == pytest.approx(losses["detector"][key], rel=1e-4, abs=1e-6)


def test_model_demo_continues_the_packaged_weights(tmp_path, capsys):
    from sam3video.checkpoints import demo_weights

    out = tmp_path / "run"
    args = ["train", "--model", "demo", "--data", "shapes", "--task", "detector", "--steps", "1",
            "--batch", "1", "--frames", "1", "--lr", "1e-12", "--warmup", "0", "--out", str(out),
            "--device", "cpu", "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    trained = read_checkpoint(out / "model.safetensors")
    packaged = read_checkpoint(demo_weights())
    # lr 1e-12: one step leaves the packaged weights (float16, loaded as float32) as they were;
    # a run from the synthetic weights would be far from them
    assert trained.keys() == packaged.keys()
    for key, value in packaged.items():
        assert torch.allclose(trained[key], value.to(trained[key].dtype), atol=1e-8), key
