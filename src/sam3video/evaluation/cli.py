"""``sam3video eval --gt GT.json --pred PRED.json``: metrics against ground truth.

`add_eval_parser` adds the subcommand to the ``sam3video`` parser (light: the metrics load
when it runs); `run_eval` prints the summary table (and with ``--out`` writes the whole
report as JSON) and returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["add_eval_parser", "run_eval"]

_EPILOG = """\
examples:
  sam3video eval --gt saco_veval_sav_test.json --pred runs/a/predictions.json
  sam3video eval --gt davis.json --pred out/results.json --metrics jf --jf-match id
  sam3video eval --gt gt.json --pred preds.json --out report.json --objects

PRED is a SAM 3 prediction list (ground-truth ids) or a file written by 'sam3video track'
or 'sam3video batch' (videos matched by name, phrases by text, frames by file name).
Metrics, all in [0, 1]: J&F (DAVIS/SA-V, first and last frame skipped), cgF1 (micro, IoU
0.50:0.95), pHOTA (phrase HOTA), mAP (YT-VIS class mask mAP) and phrase AP, as the official
SA-Co and SA-V evaluators compute them.
"""

_ORDER = (
    "J&F", "J", "F", "cgF1", "cgF1@50", "cgF1@75", "IL_MCC", "pmF1",
    "pHOTA", "pDetA", "pAssA", "mAP", "phrase_AP", "phrase_AP@50", "phrase_AP@75",
)  # fmt: skip


def _metric_list(text: str) -> tuple[str, ...]:
    from sam3video.evaluation.report import METRICS

    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in METRICS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(METRICS)}, got {text!r}"
        )
    return names


def add_eval_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``eval`` to the ``sam3video`` subcommands (it sets ``func=run_eval``)."""
    command = subparsers.add_parser(
        "eval",
        parents=list(parents),
        help="score predictions against ground truth (J&F, cgF1, pHOTA, mAP)",
        description="Compare a prediction file with a YTVIS / SA-Co ground-truth file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    command.add_argument("--gt", metavar="GT.json", required=True, help="ground truth (.gz ok)")
    command.add_argument("--pred", metavar="PRED.json", required=True, help="predictions")
    command.add_argument(
        "--metrics",
        metavar="LIST",
        type=_metric_list,
        default=("jf", "cgf1", "phota", "map"),
        help="comma-separated: jf, cgf1, phota, map (default: all)",
    )
    command.add_argument(
        "--jf-match",
        choices=("iou", "id"),
        default="iou",
        help="J&F: pair objects and predictions by video IoU (default; concept prompts) or "
        "by obj_id (predictions prompted from the objects)",
    )
    command.add_argument(
        "--all-frames",
        action="store_true",
        help="J&F: score the first and last annotated frames too (skipped by default)",
    )
    command.add_argument("--out", metavar="REPORT.json", help="write the whole report as JSON")
    command.add_argument(
        "--objects", action="store_true", help="also print J&F per object and per pair"
    )
    command.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    """``sam3video eval``: prints the summary; errors are raised for `sam3video.cli.main`."""
    from sam3video.evaluation import evaluate, load_json

    stdout = sys.stdout if stdout is None else stdout
    report = evaluate(
        load_json(args.gt),
        load_json(args.pred),
        metrics=args.metrics,
        jf_match=args.jf_match,
        skip_first_last=not args.all_frames,
    )
    for name in _ORDER:
        if name in report["summary"]:
            print(f"{name:<13} {_number(report['summary'][name])}", file=stdout)
    info = report["info"]
    print(
        f"compared      {info['predictions']} predictions with {info['objects']} objects in "
        f"{info['videos']} videos"
        + (
            f" ({info['dropped_predictions']} predictions of other videos dropped)"
            if info["dropped_predictions"]
            else ""
        ),  # fmt: skip
        file=stdout,
    )
    if args.objects:
        _print_details(report, stdout)
    if args.out:
        Path(args.out).write_text(json.dumps(_finite(report), indent=1) + "\n", encoding="utf-8")
        print(f"report        {args.out}", file=stdout)
    return 0


def _print_details(report: dict, stdout: IO[str]) -> None:
    for pair in report["pairs"]:
        values = "  ".join(
            f"{k} {_number(pair[k])}" for k in ("F1", "HOTA") if k in pair
        )  # fmt: skip
        print(f"pair  video {pair['video_id']} {pair['noun_phrase']!r}: {values}", file=stdout)
    for obj in report["objects"]:
        print(
            f"object video {obj['video_id']} id {obj['obj_id']} (pred {obj['pred_obj_id']}): "
            f"J&F {_number(obj['J&F'])}  J {_number(obj['J'])}  F {_number(obj['F'])}",
            file=stdout,
        )


def _number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _finite(value: Any) -> Any:
    """The report with NaN as None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
