"""`sam3video.evaluation` against the official evaluators, and its own parts.

The fixtures (``tests/fixtures/eval/``, from ``tools/reference/gen_eval.py``) hold the official
numbers on two SA-Co/VEval ground truths (the committed toy file, and a denser excerpt of the
full toy file) for six deterministic prediction sets each: the ground truth itself, dropped
objects, eroded masks, swapped ids, false positives on negative pairs, and a mix. Every
number must agree to 1e-4: cgF1 and its parts, phrase HOTA and its parts, YT-VIS mask mAP,
phrase AP (sam3 0.1.4 ``sam3/eval``), and J&F per object and overall (SAM 2's SA-V evaluator).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sam3video.evaluation import EvalInputError, evaluate, load_json
from sam3video.evaluation.ap import mask_map, phrase_ap
from sam3video.evaluation.cgf1 import cgf1
from sam3video.evaluation.hota import phrase_hota
from sam3video.evaluation.jf import boundary_f, boundary_map, disk, frame_jf, j_and_f

FIXTURES = Path(__file__).parent / "fixtures"
EVAL = FIXTURES / "eval"
EXPECTED = json.loads((EVAL / "expected.json").read_text())
GT_FILES = {
    "toy": FIXTURES / "toy_saco_veval_sav_test_gt.json.gz",
    "dense": EVAL / "gt_dense.json.gz",
}
CASES = [(gt, case) for gt in ("toy", "dense") for case in sorted(EXPECTED[gt])]
TOL = 1e-4
HOTA_FIELDS = ("HOTA", "DetA", "AssA", "DetRe", "DetPr", "AssRe", "AssPr", "LocA", "OWTA")


def load(gt: str, case: str) -> tuple[dict, list]:
    return load_json(GT_FILES[gt]), load_json(EVAL / f"pred_{gt}_{case}.json.gz")


def assert_close(ours: dict, official: dict) -> None:
    assert set(ours) <= set(official), sorted(set(ours) - set(official))
    wrong = {k: (v, official[k]) for k, v in ours.items() if abs(v - official[k]) > TOL}
    assert not wrong, wrong


# ----------------------------------------------------------------------------- parity


def dataset_metrics(gt: dict, preds: list) -> dict[str, float]:
    """Our numbers under the official evaluator's names."""
    cg = cgf1(gt, preds)
    out = {
        "video_mask_demo_cgf1_micro_50_95": cg.cgf1,
        "video_mask_demo_cgf1_micro_50": cg.at(0.5),
        "video_mask_demo_cgf1_micro_75": cg.at(0.75),
        "video_mask_demo_ilmcc_50_95": cg.il_mcc,
        "video_mask_demo_positive_micro_f1_50_95": float(cg.positive_micro_f1.mean()),
        "video_mask_demo_positive_micro_f1_50": cg.positive_f1_at(0.5),
        "video_mask_demo_positive_micro_f1_75": cg.positive_f1_at(0.75),
        "video_mask_mAP_50_95": mask_map(gt, preds),
    }
    ap, ap50, ap75 = phrase_ap(gt, preds)
    out.update(
        {
            "video_mask_phrase_ap_50_95": ap,
            "video_mask_phrase_ap_50": ap50,
            "video_mask_phrase_ap_75": ap75,
        }
    )
    hota = phrase_hota(gt, preds).summary()
    out.update({f"video_mask_all_phrase_{k}": hota[k] for k in HOTA_FIELDS})
    return out


@pytest.mark.parametrize(("gt_name", "case"), CASES)
def test_dataset_metrics_match_the_official_evaluator(gt_name, case):
    gt, preds = load(gt_name, case)
    ours = dataset_metrics(gt, preds)
    official = EXPECTED[gt_name][case]["dataset"]
    assert len(ours) == 20
    assert_close(ours, official)


@pytest.mark.parametrize(("gt_name", "case"), CASES)
def test_per_pair_metrics_match_the_official_evaluator(gt_name, case):
    gt, preds = load(gt_name, case)
    official = EXPECTED[gt_name][case]["pairs"]
    cg = cgf1(gt, preds).pairs
    hota = phrase_hota(gt, preds).pairs
    names = {"TP": "mask_TP_50_95", "FP": "mask_FP_50_95", "FN": "mask_FN_50_95",
             "F1": "mask_F1_50_95", "F1@50": "mask_F1_50", "F1@75": "mask_F1_75"}  # fmt: skip
    ours: dict[str, dict[str, float]] = {}
    for (video, category), values in cg.items():
        ours.setdefault(f"{video}/{category}", {}).update({names[k]: v for k, v in values.items()})
    for (video, category), values in hota.items():
        ours.setdefault(f"{video}/{category}", {}).update(
            {f"mask_{k}": values[k] for k in HOTA_FIELDS}
        )
    assert set(ours) == set(official)
    for pair, values in ours.items():
        assert_close(values, official[pair])


@pytest.mark.parametrize("skip", [True, False], ids=["skip-first-last", "all-frames"])
@pytest.mark.parametrize("case", sorted(EXPECTED["dense"]))
def test_j_and_f_matches_sam2s_evaluator(case, skip):
    gt, preds = load("dense", case)
    official = EXPECTED["dense"][case]["jf" if skip else "jf_all_frames"]
    result = j_and_f(gt, preds, match="id", skip_first_last=skip)
    assert abs(result.jf - official["J&F"]) <= TOL
    assert abs(result.j - official["J"]) <= TOL
    assert abs(result.f - official["F"]) <= TOL
    ours = {f"{o.video_id}/{o.key}": [o.j, o.f] for o in result.objects}
    assert set(ours) == set(official["objects"])
    for key, (j, f) in ours.items():
        assert abs(j - official["objects"][key][0]) <= TOL
        assert abs(f - official["objects"][key][1]) <= TOL


def test_the_fixtures_are_not_trivial():
    """The perturbations move every metric away from the perfect score."""
    base = EXPECTED["dense"]["identity"]["dataset"]
    assert base["video_mask_mAP_50_95"] == pytest.approx(1.0)
    assert EXPECTED["dense"]["identity"]["jf"]["J&F"] == pytest.approx(1.0)
    for case in ("dropped", "eroded", "swapped_ids", "mixed"):
        values = EXPECTED["dense"][case]
        assert values["dataset"]["video_mask_all_phrase_HOTA"] < 0.99
        assert values["jf"]["J&F"] < 0.99
    assert EXPECTED["toy"]["false_positives"]["dataset"]["video_mask_demo_ilmcc_50_95"] < 0.5


# ----------------------------------------------------------------------------- the report


def track_style_file(gt: dict, preds: list, video_name: str) -> dict:
    """``preds`` as a YTVIS file like ``sam3video track`` writes: every frame of the video,
    its own video and category ids, categories by name."""
    (video,) = gt["videos"]
    numbers = [int(Path(n).stem) for n in video["file_names"]]
    length = max(numbers) + 1
    names = {c["id"]: c["name"] for c in gt["categories"]}
    annotations = []
    for pred in preds:
        record = dict(pred, video_id=5, category_id=100 + pred["category_id"] % 97)
        for key in ("segmentations", "bboxes", "areas"):
            spread = [None] * length
            for t, value in zip(numbers, pred[key]):
                spread[t] = value
            record[key] = spread
        annotations.append(record)
    used = {p["category_id"] for p in preds}
    return {
        "videos": [{"id": 5, "video_name": video_name, "height": video["height"],
                    "width": video["width"],
                    "file_names": [f"{video_name}/{t:05d}.jpg" for t in range(length)]}],
        "annotations": annotations,
        "categories": [{"id": 100 + c % 97, "name": names[c]} for c in used],
    }  # fmt: skip


def test_a_track_style_file_lines_up_with_the_ground_truth():
    gt, preds = load("dense", "eroded")
    direct = evaluate(gt, preds, jf_match="id")["summary"]
    whole = track_style_file(gt, preds, gt["videos"][0]["video_name"])
    lined_up = evaluate(gt, whole, jf_match="id")
    assert lined_up["summary"] == pytest.approx(direct, abs=1e-12)
    assert lined_up["info"]["dropped_predictions"] == 0
    other = track_style_file(gt, preds, "some_other_video")
    report = evaluate(gt, other, metrics=["cgf1"])
    assert report["info"]["dropped_predictions"] == len(preds)
    assert report["summary"]["cgF1"] == 0.0


def test_report_summary_and_iou_matching():
    gt, preds = load("dense", "identity")
    shuffled = [dict(p, obj_id=1000 - i) for i, p in enumerate(preds)]
    report = evaluate(gt, shuffled)  # J&F pairs objects by IoU by default
    summary = report["summary"]
    assert summary["J&F"] == pytest.approx(1.0)
    assert summary["mAP"] == pytest.approx(1.0) and summary["pHOTA"] == pytest.approx(1.0)
    assert summary["cgF1"] == pytest.approx(1.0, abs=1e-3)  # the evaluator's epsilons
    assert {o["pred_obj_id"] for o in report["objects"]} == {p["obj_id"] for p in shuffled}
    by_id = evaluate(gt, shuffled, metrics=["jf"], jf_match="id")["summary"]
    assert by_id["J&F"] < 0.5  # no id in common: every object against empty masks
    assert [p["noun_phrase"] for p in report["pairs"]][:1] and report["info"]["jf_match"] == "iou"


def test_bad_inputs_are_typed_errors():
    gt, preds = load("toy", "identity")
    with pytest.raises(EvalInputError, match="unknown"):
        evaluate(gt, preds, metrics=["jf", "bleu"])
    with pytest.raises(EvalInputError, match=r"predictions\[0\]: lacks \['score'\]"):
        evaluate(gt, [{k: v for k, v in preds[0].items() if k != "score"}])
    with pytest.raises(EvalInputError, match="not a ground-truth video"):
        evaluate(gt, [dict(preds[0], video_id=99)])
    with pytest.raises(EvalInputError, match="'annotations' list"):
        evaluate({"videos": [], "categories": []}, preds)
    whole = track_style_file(gt, preds, gt["videos"][0]["video_name"])
    whole["videos"][0]["height"] = 10
    with pytest.raises(EvalInputError, match="the ground truth's is 720x1280"):
        evaluate(gt, whole)


# ----------------------------------------------------------------------------- J&F parts


def test_boundary_map_follows_davis():
    dot = np.zeros((6, 6), bool)
    dot[3, 3] = True
    edge = boundary_map(dot)
    assert {tuple(p) for p in np.argwhere(edge)} == {(2, 2), (2, 3), (3, 2), (3, 3)}
    assert not boundary_map(np.ones((6, 6), bool)).any()  # the frame's edge is no boundary
    assert not boundary_map(np.zeros((6, 6), bool)).any()
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


def test_boundary_f_cases():
    a = np.zeros((40, 40), bool)
    a[10:20, 10:20] = True
    kernel = disk(2)
    assert boundary_f(a, a, kernel) == 1.0
    near = np.roll(a, 2, axis=1)  # within the tolerance
    assert boundary_f(near, a, kernel) == 1.0
    far = np.roll(a, 15, axis=1)
    assert boundary_f(far, a, kernel) == 0.0
    assert boundary_f(np.zeros_like(a), a, kernel) == 0.0  # P = 1, R = 0
    assert boundary_f(np.zeros_like(a), np.zeros_like(a), kernel) == 1.0


def rle(mask: np.ndarray) -> dict | None:
    from pycocotools import mask as mask_util

    if not mask.any():
        return None
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


@pytest.mark.parametrize("seed", range(6))
def test_cropping_gives_the_whole_frame_numbers(seed):
    """Random blobs, some on the image border: the cropped J and F equal the full-frame ones."""
    rng = np.random.default_rng(seed)
    h, w = 90, 160
    masks = []
    for _ in range(2):
        mask = np.zeros((h, w), bool)
        for _ in range(3):
            y, x = rng.integers(0, h), rng.integers(0, w)
            mask[max(0, y - 12) : y + 12, max(0, x - 20) : x + 20] = True
        masks.append(mask)
    pred, gt = masks
    j, f = frame_jf(rle(pred), rle(gt), (h, w))
    radius = math.ceil(0.008 * math.hypot(h, w))
    union = (pred | gt).sum()
    assert j == pytest.approx((pred & gt).sum() / union)
    assert f == pytest.approx(boundary_f(pred, gt, disk(radius)))


# ----------------------------------------------------------------------------- the command


def test_the_command_line(tmp_path, capsys):
    from sam3video import cli

    gt, pred = GT_FILES["dense"], EVAL / "pred_dense_eroded.json.gz"
    out = tmp_path / "report.json"
    argv = ["eval", "--gt", str(gt), "--pred", str(pred), "--jf-match", "id", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    official = EXPECTED["dense"]["eroded"]
    assert report["summary"]["J&F"] == pytest.approx(official["jf"]["J&F"], abs=TOL)
    cgf1_official = official["dataset"]["video_mask_demo_cgf1_micro_50_95"]
    assert report["summary"]["cgF1"] == pytest.approx(cgf1_official, abs=TOL)
    assert f"cgF1          {report['summary']['cgF1']:.4f}" in printed
    assert "mAP" in printed and "pHOTA" in printed and len(report["objects"]) == 33

    assert cli.main(["eval", "--gt", str(gt), "--pred", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sam3video: error: ") and "none.json" in err
    assert len(err.strip().splitlines()) == 1
    assert cli.main(["eval", "--gt", str(gt), "--pred", str(pred), "--metrics", "bleu"]) == 2
