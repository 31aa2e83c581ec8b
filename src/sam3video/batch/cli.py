"""``sam3video batch MANIFEST --out DIR``: many videos, on this machine or a Ray cluster.

`add_batch_parser` adds the subcommand to the ``sam3video`` parser (it imports nothing
heavy); `run_batch` runs it and returns the exit code.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from sam3video.cli.args import MODEL_CHOICES, MODEL_HELP, parse_formats

__all__ = ["add_batch_parser", "run_batch"]

_EPILOG = """\
manifest (JSON lines, or CSV with the same column names):
  {"video": "clips/a.mp4", "text": "person"}
  {"video": "clips/b.mp4", "id": "b-dogs", "text": "dog", "frame_index": 10}
  {"video": "clips/c.mp4", "points": [[320, 180]], "point_labels": [1]}
columns: video (required; relative to the manifest), id (default: the file stem), text,
frame_index, points, point_labels, bounding_boxes, bounding_box_labels (as in add_prompt)

examples:
  sam3video batch videos.jsonl --out runs/a --dry-run
  sam3video batch videos.jsonl --out runs/a --format ytvis,png
  sam3video batch videos.jsonl --out runs/a --workers 2
  sam3video batch videos.jsonl --out runs/a --model sam3.1
  sam3video batch videos.jsonl --out s3://bucket/runs/a --ray auto --workers 8 --gpus-per-worker 1

Outputs: DIR/<id>/ as 'sam3video track' writes it, DIR/summary.json (per video: status,
frames, objects, seconds, error) and DIR/predictions.json (all videos, SA-Co/YTVIS; read by
'sam3video eval'). A rerun skips videos whose inputs and options did not change.
Exit codes: 0 all done, 1 some videos failed, 2 bad command line or manifest, 130 interrupted.
"""


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}")
    return int(text)


def _gpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")


def add_batch_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``batch`` to the ``sam3video`` subcommands (it sets ``func=run_batch``)."""
    batch = subparsers.add_parser(
        "batch",
        parents=list(parents),
        help="segment and track many videos from a manifest (resumable; local or Ray)",
        description="Run 'track' on every row of MANIFEST (JSON lines or CSV), writing each "
        "video's outputs to DIR/<id>/ as they finish, then DIR/summary.json and "
        "DIR/predictions.json.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    batch.add_argument("manifest", metavar="MANIFEST", help="a .jsonl or .csv manifest")
    batch.add_argument(
        "--out", metavar="DIR", required=True, help="output folder or fsspec URL (s3://...)"
    )
    run = batch.add_argument_group("tracking (as 'track')")
    run.add_argument("--direction", choices=("forward", "backward", "both"), default="both")
    run.add_argument(
        "--max-frames", metavar="N", type=_positive, default=None, help="per direction"
    )
    model = batch.add_argument_group("model (as 'track')")
    model.add_argument("--model", choices=MODEL_CHOICES, default="full", help=MODEL_HELP)
    model.add_argument(
        "--checkpoint", metavar="PATH", default=None, help="as 'track' (its version wins)"
    )
    model.add_argument("--device", type=_device, default="auto", metavar="{auto,cpu,cuda,mps}")
    model.add_argument(
        "--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto"
    )
    model.add_argument(
        "--threads", metavar="N", type=_positive, default=None, help="CPU threads per worker"
    )
    model.add_argument("--loader", choices=("cv2", "pyav"), default="cv2")
    scale = batch.add_argument_group("where it runs")
    scale.add_argument(
        "--workers",
        metavar="N",
        type=_positive,
        default=1,
        help="model replicas: processes on this machine, or Ray actors with --ray (default 1)",
    )
    scale.add_argument(
        "--ray",
        metavar="ADDRESS",
        nargs="?",
        const="",
        default=None,
        help="run on Ray (the 'ray' extra): a cluster address such as 'auto' or "
        "'ray://host:10001'; without one, the cluster of $RAY_ADDRESS or a local one",
    )
    scale.add_argument(
        "--gpus-per-worker", metavar="G", type=_gpus, default=0.0, help="with --ray (default 0)"
    )
    scale.add_argument(
        "--retries",
        metavar="N",
        type=_count,
        default=2,
        help="with --ray: times a video is resent after its worker was lost (default 2)",
    )
    output = batch.add_argument_group("output")
    output.add_argument(
        "--format",
        metavar="LIST",
        type=parse_formats,
        default=("ytvis",),
        help="as 'track': ytvis (default), png, overlay",
    )
    output.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    output.add_argument("--quiet", action="store_true", help="no progress output")
    batch.set_defaults(func=run_batch)


def run_batch(args: argparse.Namespace) -> int:
    """``sam3video batch``: the exit code (errors are raised for `sam3video.cli.main`)."""
    from sam3video.batch.options import BatchOptions
    from sam3video.batch.run import run_batch as run

    options = BatchOptions(
        model=args.model,
        checkpoint=args.checkpoint,
        device=args.device,
        dtype=args.dtype,
        formats=tuple(args.format),
        direction=args.direction,
        max_frames=args.max_frames,
        loader=args.loader,
        threads=args.threads,
    )
    return run(
        args.manifest,
        args.out,
        options,
        workers=args.workers,
        ray=args.ray is not None,
        ray_address=args.ray or None,
        gpus_per_worker=args.gpus_per_worker,
        retries=args.retries,
        dry_run=args.dry_run,
        quiet=args.quiet,
    )
