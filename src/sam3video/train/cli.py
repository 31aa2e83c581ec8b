"""``sam3video train``: train or fine-tune the detector and/or the tracker.

Examples::

    sam3video train --model tiny --data shapes --steps 2000 --out runs/tiny
    sam3video train --model full --init sam3.pt --data labels.json --frames-root frames/ \\
        --task both --steps 500 --lr 1e-5 --device cuda --out runs/ft
    sam3video train ... --resume            # continue from runs/.../last.pt

``--data shapes`` draws fresh clips of the procedural shapes world (``sam3video.data``);
a JSON path reads YTVIS / SA-Co ground truth (``.json`` or ``.json.gz``, RLE masks, noun
phrases), frames from ``--frames-root`` (default: the JSON's folder) + ``file_names``.
``--init`` loads Meta's ``sam3.pt``, a ``.safetensors`` export or a ``last.pt`` (strict);
without it the run starts from the deterministic synthetic weights of ``--seed`` (``--model
demo``: from the packaged demo weights).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import IO, Any

__all__ = ["add_train_parser", "run_train"]


def add_train_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``train`` to the ``sam3video`` subcommands (it sets ``func=run_train``)."""
    c = subparsers.add_parser(
        "train",
        parents=list(parents),
        help="train or fine-tune the detector and the tracker",
        description="Train the detector and/or tracker on the shapes world or on YTVIS / "
        "SA-Co JSON ground truth (fine-tuning: --init sam3.pt).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    c.add_argument("--model", default="tiny", help="model config: tiny, full (default tiny)")
    c.add_argument(
        "--init",
        metavar="PATH",
        help="initial weights (sam3.pt, .safetensors, last.pt); --model demo defaults to the "
        "packaged demo weights",
    )
    c.add_argument("--data", required=True, metavar="shapes|PATH.json", help="training data")
    c.add_argument("--frames-root", metavar="DIR", help="folder of the JSON's file_names")
    c.add_argument("--task", choices=("detector", "tracker", "both"), default="both")
    c.add_argument("--steps", type=int, default=1000, help="optimizer steps in all (default 1000)")
    c.add_argument("--batch", type=int, default=2, help="clips per step (default 2)")
    c.add_argument("--frames", type=int, default=4, help="frames per clip (default 4)")
    c.add_argument(
        "--queries",
        type=int,
        default=1,
        metavar="N",
        help="detector find-queries (phrases) per clip and step (default 1)",
    )
    c.add_argument(
        "--p-negative",
        type=float,
        default=0.2,
        metavar="P",
        help="share of detector queries with a phrase absent from the frame (default 0.2)",
    )
    c.add_argument(
        "--p-occlusion",
        type=float,
        default=0.0,
        metavar="P",
        help="--data shapes: share of clips that are the occlusion scenario, one object "
        "wholly hidden behind another mid-clip (default 0)",
    )
    c.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    c.add_argument("--weight-decay", type=float, default=0.05)
    c.add_argument("--warmup", type=int, default=None, help="warmup steps (default 5%% of steps)")
    c.add_argument("--grad-clip", type=float, default=1.0)
    c.add_argument(
        "--freeze",
        action="append",
        default=[],
        metavar="PREFIX",
        help="keep parameters whose name starts with PREFIX fixed (repeatable)",
    )
    c.add_argument("--out", required=True, metavar="DIR", help="checkpoints and log.jsonl")
    c.add_argument("--save-every", type=int, default=100, metavar="N")
    c.add_argument("--log-every", type=int, default=10, metavar="N")
    c.add_argument("--resume", action="store_true", help="continue from DIR/last.pt if present")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    c.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="autocast dtype (auto: bfloat16 on CUDA, float32 elsewhere)",
    )
    c.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    c.set_defaults(func=run_train)


def run_train(args: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    """``sam3video train``; errors are raised for `sam3video.cli.main`."""
    import torch

    from sam3video.cli.runtime import check_device, default_threads
    from sam3video.errors import ConfigError
    from sam3video.model.config import PRESETS
    from sam3video.train.data import ShapesSource, YtvisSource
    from sam3video.train.loop import TrainConfig, Trainer, format_record

    stdout = sys.stdout if stdout is None else stdout
    if args.model not in PRESETS:
        raise ConfigError(f"--model: expected one of {sorted(PRESETS)}, got {args.model!r}")
    torch.set_num_threads(args.threads or default_threads())
    device = check_device(args.device)
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    image_size = PRESETS[args.model]().image_size
    vocabulary: Sequence[str] = ()
    if args.data == "shapes":
        from sam3video.data import vocabulary as shapes_vocabulary

        source = ShapesSource(size=image_size, p_occlusion=args.p_occlusion)
        vocabulary = shapes_vocabulary()
    else:
        source = YtvisSource(args.data, frames_root=args.frames_root)
    init = args.init
    if init is None and args.model == "demo":
        # --model demo continues the packaged demo weights (train them further, or fine-tune
        # them on your own shapes); --init still wins.
        from sam3video.checkpoints import demo_weights

        init = str(demo_weights())
    config = TrainConfig(
        model=args.model,
        init=init,
        task=args.task,
        steps=args.steps,
        batch=args.batch,
        num_frames=args.frames,
        queries_per_frame=args.queries,
        p_negative=args.p_negative,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup if args.warmup is not None else max(args.steps // 20, 1),
        grad_clip=args.grad_clip,
        seed=args.seed,
        device=str(device),
        dtype=dtype,
        out=args.out,
        save_every=args.save_every,
        log_every=args.log_every,
        freeze=tuple(args.freeze),
    )

    def log(record: dict) -> None:
        if record["step"] % config.log_every == 0 or record["step"] == config.steps:
            print(format_record(record), file=stdout, flush=True)

    trainer = Trainer(config, source, vocabulary=vocabulary, log=log)
    if args.resume and trainer.resume():
        print(f"resumed from {args.out}/last.pt at step {trainer.step}", file=stdout)
    records = trainer.fit()
    if trainer.step >= config.steps and not records:
        print(f"already at step {trainer.step} of {config.steps}; nothing to do", file=stdout)
    print(
        f"saved {args.out}/last.pt and {args.out}/model.safetensors (step {trainer.step})",
        file=stdout,
    )
    return 0
