"""Write the packaged demo weights (``src/sam3video/assets/demo.safetensors``) from a training run.

    python tools/export_demo.py RUN/model.safetensors            # or RUN/last.pt, or RUN/
    python tools/export_demo.py RUN/ --command "sam3video train ..." --meta machine="2-core EPYC"

The input is what ``sam3video train`` writes: ``model.safetensors`` (weights only) or
``last.pt`` (full state; its ``"model"`` entry is used), or the run folder (``last.pt`` is
then preferred, for its step and config), or a file merged from several runs (pass its
step and time with ``--meta``). The weights must fit the ``demo`` preset strictly.

Decisions
  * float16 on disk (half of the training run's float32 file): the predictor
    loads it back to its dtype (float32 on the CPU). The export refuses a tensor whose
    values do not fit float16 (|x| > 65504) and prints the largest relative rounding error.
  * Metadata in the safetensors header (strings): ``format`` (``sam3video-demo``),
    ``model_config`` (``demo``), ``step``, ``training_command``, ``source_commit``,
    ``train_step_seconds`` (the sum of the step times in ``log.jsonl`` up to the step),
    ``training_config`` (JSON, from ``last.pt``), ``source`` (the input's file name),
    ``exported`` (UTC time) and any ``--meta KEY=VALUE``. The run folder's ``commit.txt``
    gives the commit when present, else ``git rev-parse HEAD``; without ``--command`` the
    command is rebuilt from ``last.pt``'s config (marked as rebuilt).
  * The written file is loaded back through ``Sam3VideoPredictor(model_config="demo",
    checkpoint_path=...)``'s loader (strict) before the tool reports success.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "sam3video" / "assets" / "demo.safetensors"
FP16_MAX = 65504.0

# TrainConfig field -> `sam3video train` flag (rebuilding a command from last.pt's config).
_FLAGS = {
    "model": "--model",
    "init": "--init",
    "task": "--task",
    "batch": "--batch",
    "num_frames": "--frames",
    "queries_per_frame": "--queries",
    "p_negative": "--p-negative",
    "steps": "--steps",
    "lr": "--lr",
    "weight_decay": "--weight-decay",
    "warmup": "--warmup",
    "grad_clip": "--grad-clip",
    "save_every": "--save-every",
    "log_every": "--log-every",
    "seed": "--seed",
    "device": "--device",
    "dtype": "--dtype",
    "out": "--out",
}


def read_run(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The weights of a training output and what is known about the run (metadata strings)."""
    from safetensors.torch import load_file

    path = path.expanduser()
    if path.is_dir():
        path = path / "last.pt" if (path / "last.pt").is_file() else path / "model.safetensors"
    if not path.is_file():
        raise SystemExit(f"export_demo: no training output at {str(path)!r}")
    run = path.parent
    meta: dict[str, str] = {"source": path.name}
    state = None
    if path.suffix == ".safetensors":
        weights = load_file(str(path))
        if (run / "last.pt").is_file():  # saved together by Trainer.save: its step and config
            state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise SystemExit(f"export_demo: {str(path)!r} is not a training checkpoint")
        weights = state["model"]
    if state is not None:
        meta["step"] = str(int(state["step"]))
        if isinstance(state.get("config"), dict):
            meta["training_config"] = json.dumps(state["config"], sort_keys=True)
    log = run / "log.jsonl"
    if log.is_file():
        seconds, last_step = 0.0, None
        upto = int(meta["step"]) if "step" in meta else None
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a running job
                continue
            if upto is not None and record.get("step", 0) > upto:
                continue  # steps logged after the checkpoint (a run stopped between saves)
            seconds += float(record.get("seconds", 0.0))
            last_step = record.get("step", last_step)
        meta["train_step_seconds"] = f"{seconds:.0f}"
        meta.setdefault("step", str(last_step))
    if (run / "commit.txt").is_file():
        meta["source_commit"] = (run / "commit.txt").read_text().strip()
    return weights, meta


def rebuilt_command(config_json: str | None) -> str:
    """``sam3video train ...`` from a TrainConfig dict (the data source is not stored)."""
    if not config_json:
        return "unknown"
    config = json.loads(config_json)
    parts = ["sam3video train", "--data shapes"]
    for key, flag in _FLAGS.items():
        value = config.get(key)
        if value is not None:
            parts.append(f"{flag} {value}")
    parts += [f"--freeze {prefix}" for prefix in config.get("freeze") or []]
    return " ".join(parts) + "   (rebuilt from last.pt's config)"


def to_float16(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float]:
    """Floating tensors as contiguous float16 (others unchanged) and the largest relative
    rounding error; refuses values beyond float16's range."""
    out, worst = {}, 0.0
    for key, value in weights.items():
        value = value.detach().cpu()
        if value.is_floating_point():
            peak = float(value.abs().max()) if value.numel() else 0.0
            if peak > FP16_MAX:
                raise SystemExit(f"export_demo: {key} holds {peak:g}, beyond float16's range")
            half = value.to(torch.float16)
            error = (half.float() - value.float()).abs().max() / max(peak, 1e-12)
            worst = max(worst, float(error)) if value.numel() else worst
            value = half
        out[key] = value.contiguous()
    return out, worst


def check_fits(weights: dict[str, torch.Tensor]) -> None:
    """Strict key and shape check against the ``demo`` architecture."""
    from sam3video.model.build import build_model_skeleton, load_state_dict_checked

    model = build_model_skeleton("demo", device="meta")
    load_state_dict_checked(model, dict(weights), strict=True, source="the training output")


def git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="RUN/model.safetensors, RUN/last.pt or RUN/")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--command", help="the training command (default: rebuilt)")
    parser.add_argument("--commit", help="the commit the run trained (default: commit.txt)")
    parser.add_argument(
        "--meta", action="append", default=[], metavar="KEY=VALUE", help="more metadata"
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    from safetensors.torch import save_file

    weights, meta = read_run(args.source)
    check_fits(weights)
    half, worst = to_float16(weights)
    meta["training_command"] = args.command or rebuilt_command(meta.get("training_config"))
    meta["source_commit"] = args.commit or meta.get("source_commit") or git_head()
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"export_demo: --meta expects KEY=VALUE, got {item!r}")
        meta[key] = value
    meta.update(
        format="sam3video-demo",
        model_config="demo",
        dtype="float16",
        exported=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    save_file(half, str(tmp), metadata=meta)
    tmp.chmod(0o644)  # package data: readable by everyone (save_file makes it private)
    tmp.replace(args.out)

    from sam3video.model.build import build_sam3_video_model

    model = build_sam3_video_model("demo", args.out, device="cpu", dtype=torch.float32)
    loaded = model.state_dict()
    assert all(loaded[k].dtype == torch.float32 for k in half if half[k].is_floating_point())
    size = args.out.stat().st_size / 2**20
    print(f"wrote {args.out} ({size:.1f} MiB, float16; largest relative rounding {worst:.1e})")
    for key in ("step", "training_command", "source_commit", "train_step_seconds"):
        print(f"  {key}: {meta.get(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
