"""``sam3video info``: versions, devices, threads, and which checkpoint ``track`` would use
(nothing is loaded or downloaded)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from sam3video import __version__
from sam3video.cli.args import EXIT_OK, PROG
from sam3video.cli.runtime import default_threads
from sam3video.errors import Sam3VideoError

__all__ = ["one_line", "run_info"]


def one_line(error: BaseException) -> str:
    """An error's message on one line (its type name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def _version_of(module: str) -> str:
    from importlib import metadata

    names = {"cv2": "opencv-python-headless", "av": "av"}
    try:
        imported = __import__(module)
        version = getattr(imported, "__version__", None)
        if version:
            return str(version)
        return metadata.version(names.get(module, module))
    except Exception:  # not installed, or broken
        return "not installed"


def run_info(args: argparse.Namespace) -> int:
    """``sam3video info``: versions, devices and the checkpoint that ``track`` would use."""
    import platform

    import torch

    from sam3video import checkpoints

    lines = [f"{PROG} {__version__}", f"python {platform.python_version()}"]
    for module in ("torch", "numpy", "cv2", "av", "PIL", "pycocotools", "huggingface_hub"):
        label = {"cv2": "opencv", "PIL": "pillow"}.get(module, module)
        lines.append(f"{label} {_version_of(module)}")

    lines.append("devices:")
    cpu = platform.processor() or platform.machine() or "unknown"
    lines.append(
        f"  cpu    {cpu}, track uses {default_threads()} threads by default "
        f"($OMP_NUM_THREADS or the physical cores; --threads N)"
    )
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(f"  cuda:{i} {props.name}, {props.total_memory / 2**30:.0f} GiB")
    else:
        built = torch.version.cuda
        lines.append(f"  cuda   not available ({'no device' if built else 'CPU build of torch'})")
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    lines.append(f"  mps    {'available' if has_mps else 'not available'}")
    from sam3video.predictor import default_dtype, pick_device

    auto = pick_device(None)
    lines.append(f"  auto   -> {auto} ({str(default_dtype(auto)).replace('torch.', '')})")
    lines.append(f"overlay codec: {_overlay_codec()}")

    lines.append(f"checkpoint for --model {args.model}:")
    if args.model == "tiny" and not args.checkpoint:
        lines.append("  none needed: --model tiny runs on synthetic weights (meaningless masks)")
    else:
        lines.extend(_checkpoint_lines(args.checkpoint, checkpoints))
    print("\n".join(lines))
    return EXIT_OK


def _overlay_codec() -> str:
    try:
        import av

        av.codec.Codec("libx264", "w")
        return "H.264 (libx264)"
    except Exception:  # FFmpeg without x264
        return "MPEG-4 Part 2 (FFmpeg has no libx264)"


def _checkpoint_lines(explicit: str | None, checkpoints: Any) -> list[str]:
    env_value = os.environ.get(checkpoints.ENV_VAR) or None
    cached = checkpoints.find_in_hf_cache()
    try:
        import huggingface_hub  # noqa: F401

        hub = "possible (huggingface_hub installed; the repository is gated)"
    except ImportError:
        hub = None
    lines = [
        "  discovery order (the first found wins):",
        f"    1. --checkpoint            {explicit or 'not given'}",
        f"    2. ${checkpoints.ENV_VAR:<22} {env_value or 'not set'}",
        f"    3. Hugging Face cache      "
        f"{cached or 'no sam3.pt in ' + str(checkpoints.hf_cache_dir())}",
        f"    4. download {checkpoints.HF_REPO:<14} "
        f"{hub or 'impossible: huggingface_hub is not installed'}",
    ]
    try:
        location = checkpoints.locate_checkpoint(explicit)
        if location.path is None and hub is None:
            lines.append(
                "  would use: nothing, 'track --model full' would fail: "
                "pip install 'sam3video[hub]' and `hf auth login` to download, or pass --checkpoint"
            )
            return lines
        lines.append(f"  would use: {location.description}")
        if location.path is not None:
            checkpoints.verify_checkpoint(location.path, location.source)
            lines.append("  file check: ok (a readable checkpoint archive; not loaded)")
    except Sam3VideoError as error:
        lines.append(f"  problem: {one_line(error)}")
    return lines
