"""Parity fixtures for `sam3video.evaluation`: the official evaluators on SA-Co/VEval GT.

Two ground truths, both from the toy SA-Co/VEval SA-V test file (one video, 8 video-phrase
pairs, one of them negative, 33 objects):

* ``toy``: the committed ``tests/fixtures/toy_saco_veval_sav_test_gt.json.gz`` as it is (its
  masks are kept on frames 0 and 40 only);
* ``dense``: the full ``../shared/data/ytvis/toy_saco_veval_sav_test_gt.json`` with every
  12th annotated frame (13 frames, masks on most of them) and only the categories it uses,
  written to ``tests/fixtures/eval/gt_dense.json.gz``.

Deterministic perturbations of each are the predictions: the GT itself, dropped objects,
eroded masks, swapped ids, false positives on negative pairs, and a mix (shifted masks,
spread scores, drops, false positives). For each, this script runs

* Meta's ``sam3`` 0.1.4 evaluators (``sam3/eval/saco_veval_evaluators.py``, masks only):
  YT-VIS class mAP, phrase AP, cgF1 (``VideoCGF1Evaluator``) and phrase HOTA;
* on ``dense``, SAM 2's J&F (``sav_dataset/utils/sav_benchmark.py``, the SA-V/DAVIS
  evaluator) on PNG folders in the SA-V layout, objects matched by id, with the first and
  last frames skipped (objects visible on neither of the others are left out: that
  evaluator asserts on them) and without skipping.

and writes ``tests/fixtures/eval/pred_<gt>_<case>.json.gz`` (the predictions) and
``tests/fixtures/eval/expected.json`` (the official numbers).

numpy 2: the official ``VideoCGF1Evaluator.extract_video_np_level_results`` calls
``int(np.where(...)[0])`` (a 1-element array to int), deprecated since numpy 1.25 and an
error once that deprecation expires. This script PATCHES that line at run time (the method's
source with ``[0])`` -> ``[0][0])``, recompiled in the module's namespace); numpy is not pinned.

Run from the repository root, in the reference venv (see ``../shared/reference/README.md``)::

    git clone https://github.com/facebookresearch/sam2 /tmp/sam2    # for sav_benchmark.py
    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_eval.py \\
        --sav-benchmark /tmp/sam2/sav_dataset/utils/sav_benchmark.py

Takes a few minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib
import inspect
import io
import json
import os
import sys
import tempfile
import textwrap
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
GT_FIXTURE = ROOT / "tests" / "fixtures" / "toy_saco_veval_sav_test_gt.json.gz"
SHARED_GT = ROOT.parent / "shared" / "data" / "ytvis" / "toy_saco_veval_sav_test_gt.json"
OUT = ROOT / "tests" / "fixtures" / "eval"
DENSE_STEP = 12  # keep every 12th annotated frame of the full toy file
CASES = ("identity", "dropped", "eroded", "swapped_ids", "false_positives", "mixed")


# ----------------------------------------------------------------------------- masks


def decode(rle: dict | None, height: int, width: int) -> np.ndarray:
    if rle is None:
        return np.zeros((height, width), bool)
    if isinstance(rle["counts"], list):
        rle = mask_util.frPyObjects(rle, height, width)
    return mask_util.decode(rle).astype(bool)


def encode(mask: np.ndarray) -> dict | None:
    """Compressed RLE with str counts; None for an empty mask (the SA-Co convention)."""
    if not mask.any():
        return None
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def prediction(ann: dict, segmentations: list, score: float, obj_id: int, category: int) -> dict:
    """A SAM 3 prediction record (what ``YtvisWriter`` writes per object)."""
    bboxes, areas = [], []
    for rle in segmentations:
        if rle is None:
            bboxes.append(None)
            areas.append(None)
        else:
            bboxes.append([float(v) for v in mask_util.toBbox(rle)])
            areas.append(float(mask_util.area(rle)))
    return {
        "video_id": ann["video_id"],
        "category_id": category,
        "obj_id": obj_id,
        "score": round(float(score), 4),
        "segmentations": segmentations,
        "bboxes": bboxes,
        "areas": areas,
    }


def transformed(ann: dict, change) -> list:
    """``ann``'s masks passed through ``change(mask, t) -> mask``, re-encoded."""
    h, w = ann["height"], ann["width"]
    return [encode(change(decode(rle, h, w), t)) for t, rle in enumerate(ann["segmentations"])]


# ----------------------------------------------------------------------------- the cases


def make_cases(gt: dict) -> dict[str, list[dict]]:
    anns = gt["annotations"]
    by_pair: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for ann in anns:
        by_pair[ann["video_id"], ann["category_id"]].append(ann)
    negatives = [p for p in gt["video_np_pairs"] if p["num_masklets"] == 0]
    first_of_video = {ann["video_id"]: ann for ann in reversed(anns)}
    extra_id = 10_000

    def same(ann, score=0.9):
        return prediction(ann, ann["segmentations"], score, ann["id"], ann["category_id"])

    cases: dict[str, list[dict]] = {}
    cases["identity"] = [same(ann) for ann in anns]
    cases["dropped"] = [same(ann) for i, ann in enumerate(anns) if i % 3 != 1]

    kernel = np.ones((5, 5), np.uint8)

    def erode(mask, t):
        return cv2.erode(mask.astype(np.uint8), kernel).astype(bool)

    cases["eroded"] = [
        prediction(
            ann, transformed(ann, erode), 0.55 + 0.1 * (i % 5), ann["id"], ann["category_id"]
        )
        for i, ann in enumerate(anns)
    ]

    swapped = []
    for members in by_pair.values():
        records = [same(ann) for ann in members]
        if len(members) >= 2:  # an identity switch halfway through the video
            a, b = records[0]["segmentations"], records[1]["segmentations"]
            half = len(a) // 2
            records[0] = prediction(members[0], a[:half] + b[half:], 0.9, members[0]["id"],
                                    members[0]["category_id"])  # fmt: skip
            records[1] = prediction(members[1], b[:half] + a[half:], 0.9, members[1]["id"],
                                    members[1]["category_id"])  # fmt: skip
        swapped += records
    cases["swapped_ids"] = swapped

    fps = [same(ann) for ann in anns]
    for pair in negatives:  # two detections where the phrase has no object (one below 0.5)
        source = first_of_video[pair["video_id"]]
        for score in (0.8, 0.3):
            fps.append(prediction(source, source["segmentations"], score, extra_id,
                                  pair["category_id"]))  # fmt: skip
            extra_id += 1
    # a positive pair gets another pair's object as an extra detection
    pairs = list(by_pair)
    source, target = by_pair[pairs[0]][0], pairs[1]
    fps.append(prediction(source, source["segmentations"], 0.6, extra_id, target[1]))
    extra_id += 1
    cases["false_positives"] = fps

    mixed = []
    for i, ann in enumerate(anns):
        if i % 7 == 0:
            continue
        score = 0.15 + (i * 0.137) % 0.8
        if i % 2:
            segs = transformed(ann, lambda m, t: np.roll(m, (3, -2), axis=(0, 1)))
            mixed.append(prediction(ann, segs, score, ann["id"], ann["category_id"]))
        else:
            mixed.append(same(ann, score))
    for pair in negatives:
        source = first_of_video[pair["video_id"]]
        mixed.append(prediction(source, source["segmentations"], 0.95, extra_id,
                                pair["category_id"]))  # fmt: skip
        extra_id += 1
    cases["mixed"] = mixed
    return cases


# ----------------------------------------------------------------------------- official code


def patch_numpy2() -> None:
    """Make ``int(np.where(...)[0])`` in the official cgF1 evaluator take element 0."""
    from sam3.eval import saco_veval_evaluators as module

    cls = module.VideoCGF1Evaluator
    source = textwrap.dedent(inspect.getsource(cls.extract_video_np_level_results))
    fixed = source.replace("== 0.5)[0])", "== 0.5)[0][0])").replace(
        "== 0.75)[0])", "== 0.75)[0][0])"
    )
    assert fixed != source, "the official line changed: review the numpy-2 patch"
    namespace: dict = {}
    exec(compile(fixed, inspect.getsourcefile(cls), "exec"), vars(module), namespace)
    cls.extract_video_np_level_results = namespace["extract_video_np_level_results"]


def official_metrics(gt_path: Path, pred_path: Path) -> tuple[dict, dict]:
    """Dataset-level results and per (video, category) results of the official evaluators."""
    from sam3.eval.saco_veval_evaluators import (
        VideoCGF1Evaluator,
        VideoPhraseApEvaluator,
        VideoPhraseHotaEvaluator,
        YTVISPredFileEvaluator,
    )

    evaluators = [
        YTVISPredFileEvaluator(str(gt_path), iou_types=["segm"]),
        VideoPhraseApEvaluator(str(gt_path), iou_types=["segm"]),
        VideoCGF1Evaluator(str(gt_path), iou_types=["segm"]),
        VideoPhraseHotaEvaluator(str(gt_path), iou_types=["segm"]),
    ]
    dataset, pairs = {}, defaultdict(dict)
    for evaluator in evaluators:
        with contextlib.redirect_stdout(io.StringIO()):
            results, per_pair = evaluator.evaluate(str(pred_path))
        dataset.update({k: float(v) for k, v in results.items()})
        for (video_id, category_id), values in per_pair.items():
            pairs[f"{video_id}/{category_id}"].update({k: float(v) for k, v in values.items()})
    return dataset, dict(sorted(pairs.items()))


def load_sav_benchmark(path: Path):
    """Import ``sav_benchmark`` by name (its worker pool pickles classes by module name)."""
    sys.path.insert(0, str(path.resolve().parent))
    return importlib.import_module(path.stem)


def scored(ann: dict, skip: bool) -> bool:
    """Whether the object is visible on an evaluated frame (else SAM 2's evaluator fails)."""
    frames = ann["segmentations"][1:-1] if skip else ann["segmentations"]
    return any(rle is not None for rle in frames)


def write_sav_folder(
    root: Path, gt: dict, objects: dict[tuple[int, int], list], skip: bool
) -> None:
    """SA-V layout: ``root/<video>/<obj>/<frame>.png``, one binary PNG per scored GT object
    and annotated frame; ``objects[video_id, obj_id]`` are that object's RLEs (None: empty)."""
    for video in gt["videos"]:
        h, w = video["height"], video["width"]
        names = [Path(n).stem + ".png" for n in video["file_names"]]
        empty = Image.fromarray(np.zeros((h, w), np.uint8))
        for ann in gt["annotations"]:
            if ann["video_id"] != video["id"] or not scored(ann, skip):
                continue
            folder = root / video["video_name"] / f"{ann['id']:06d}"
            folder.mkdir(parents=True)
            rles = objects.get((video["id"], ann["id"]))
            for t, name in enumerate(names):
                rle = None if rles is None or t >= len(rles) else rles[t]
                if rle is None:
                    empty.save(folder / name)
                else:
                    Image.fromarray(decode(rle, h, w).astype(np.uint8) * 255).save(folder / name)


def official_jf(sav, gt: dict, preds: list[dict], work: Path, skip: bool) -> dict:
    """SAM 2's J&F with objects matched by id within their (video, category) pair."""
    pair_of = {(a["video_id"], a["id"]): a["category_id"] for a in gt["annotations"]}
    objects = {}
    for pred in preds:
        key = (pred["video_id"], pred["obj_id"])
        if pair_of.get(key) == pred["category_id"]:
            objects[key] = pred["segmentations"]
    gt_root, pred_root = work / "gt", work / "pred"
    truth = {(a["video_id"], a["id"]): a["segmentations"] for a in gt["annotations"]}
    write_sav_folder(gt_root, gt, truth, skip)
    write_sav_folder(pred_root, gt, objects, skip)
    with contextlib.redirect_stdout(io.StringIO()):
        jf, j, f, per_object = sav.benchmark(
            [str(gt_root)],
            [str(pred_root)],
            num_processes=2,
            verbose=False,
            skip_first_and_last=skip,
        )
    by_name = {v["video_name"]: v["id"] for v in gt["videos"]}
    rows = {}
    for name, (ious, boundaries) in per_object[0].items():
        for obj, iou in ious.items():
            rows[f"{by_name[name]}/{int(obj)}"] = [iou / 100, boundaries[obj] / 100]
    return {"J&F": jf[0] / 100, "J": j[0] / 100, "F": f[0] / 100, "objects": rows}


# ----------------------------------------------------------------------------- main


def write_gz(path: Path, data) -> None:
    raw = json.dumps(data, separators=(",", ":")).encode()
    with open(path, "wb") as handle, gzip.GzipFile(fileobj=handle, mode="wb", mtime=0) as gz:
        gz.write(raw)


def dense_ground_truth() -> dict:
    """The full toy file with every `DENSE_STEP`-th annotated frame and the used categories."""
    full = json.loads(SHARED_GT.read_text())
    (video,) = full["videos"]
    keep = list(range(0, len(video["file_names"]), DENSE_STEP))
    annotations = []
    for ann in full["annotations"]:
        ann = dict(ann)
        for key in ("segmentations", "bboxes", "areas"):
            ann[key] = [ann[key][t] for t in keep]
        annotations.append(ann)
    used = {a["category_id"] for a in annotations}
    used |= {p["category_id"] for p in full["video_np_pairs"]}
    names = [video["file_names"][t] for t in keep]
    return dict(
        full,
        info=dict(
            full["info"],
            description=full["info"]["description"] + f" (every {DENSE_STEP}th annotated frame)",
        ),  # fmt: skip
        videos=[dict(video, file_names=names, length=len(names))],
        annotations=annotations,
        categories=[c for c in full["categories"] if c["id"] in used],
    )


def run_cases(name: str, gt: dict, sav, tmp: Path, with_jf: bool) -> dict:
    gt_path = tmp / f"{name}_gt.json"
    gt_path.write_text(json.dumps(gt))
    results = {}
    for case, preds in make_cases(gt).items():
        pred_path = tmp / f"{name}_{case}.json"
        pred_path.write_text(json.dumps(preds))
        write_gz(OUT / f"pred_{name}_{case}.json.gz", preds)
        dataset, pairs = official_metrics(gt_path, pred_path)
        results[case] = {"dataset": dataset, "pairs": pairs}
        line = f"{name} {case}: cgF1 {dataset['video_mask_demo_cgf1_micro_50_95']:.4f}"
        if with_jf:
            for skip in (True, False):
                work = tmp / f"jf_{name}_{case}_{skip}"
                jf = official_jf(sav, gt, preds, work, skip)
                results[case]["jf" if skip else "jf_all_frames"] = jf
                line += f", J&F {jf['J&F']:.4f} (skip {skip})"
        print(line, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sav-benchmark", type=Path, required=True,
                        help="SAM 2's sav_dataset/utils/sav_benchmark.py")  # fmt: skip
    args = parser.parse_args()
    patch_numpy2()
    sav = load_sav_benchmark(args.sav_benchmark)
    OUT.mkdir(parents=True, exist_ok=True)
    toy = json.loads(gzip.decompress(GT_FIXTURE.read_bytes()))
    dense = dense_ground_truth()
    write_gz(OUT / "gt_dense.json.gz", dense)
    expected = {
        "official": "sam3 0.1.4 sam3/eval/saco_veval_evaluators.py (segm); "
        "SAM 2 sav_dataset/utils/sav_benchmark.py (J&F)",
        "ground_truths": {"toy": GT_FIXTURE.name, "dense": "eval/gt_dense.json.gz"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        expected["toy"] = run_cases("toy", toy, sav, Path(tmp), with_jf=False)
        expected["dense"] = run_cases("dense", dense, sav, Path(tmp), with_jf=True)
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
