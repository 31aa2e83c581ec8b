"""``sam3video info``: versions, devices, threads, and which checkpoint ``track`` would use
and its SAM version (nothing is downloaded; only a checkpoint's key list is read)."""

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
    if args.model in ("tiny", "sam3.1-tiny") and not args.checkpoint:
        lines.append(
            f"  none needed: --model {args.model} runs on synthetic weights (meaningless masks)"
        )
    elif args.model == "demo" and not args.checkpoint:
        state = "packaged demo weights" if checkpoints.DEMO_WEIGHTS.is_file() else "MISSING"
        lines.append(f"  {checkpoints.DEMO_WEIGHTS} ({state})")
    elif args.model == "sam3.1" and not args.checkpoint:
        lines.extend(_sam31_lines(checkpoints))
    else:
        lines.extend(_checkpoint_lines(args.checkpoint, checkpoints))
        lines.extend(_version_lines(args.checkpoint, checkpoints))
    print("\n".join(lines))
    return EXIT_OK


def _overlay_codec() -> str:
    try:
        import av

        av.codec.Codec("libx264", "w")
        return "H.264 (libx264)"
    except Exception:  # FFmpeg without x264
        return "MPEG-4 Part 2 (FFmpeg has no libx264)"


def _hub_state() -> str | None:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return None
    return "possible (huggingface_hub installed; the repository is gated)"


def _sam31_lines(checkpoints: Any) -> list[str]:
    """``--model sam3.1`` without --checkpoint: ``sam3.1_multiplex.pt`` of facebook/sam3.1,
    from the hub cache or downloaded (as `checkpoints.load_predictor`)."""
    repo, filename = checkpoints.HF_FILES["sam3.1"]
    cached = checkpoints.find_in_hf_cache(version="sam3.1")
    hub = _hub_state()
    env_value = os.environ.get(checkpoints.ENV_VAR) or None
    lines = [
        "  discovery order (the first found wins):",
        "    1. --checkpoint            not given",
        f"    2. Hugging Face cache      "
        f"{cached or f'no {filename} in ' + str(checkpoints.hf_cache_dir())}",
        f"    3. download {repo:<14} {hub or 'impossible: huggingface_hub is not installed'}",
    ]
    if env_value:
        lines.append(
            f"  ${checkpoints.ENV_VAR} ({env_value}) is not used by --model sam3.1 (it names "
            "the SAM 3 checkpoint); pass a 3.1 file with --checkpoint"
        )
    if cached is not None:
        lines.append(f"  would use: {cached} (Hugging Face cache)")
        try:
            checkpoints.verify_checkpoint(cached, "hf-cache")
            lines.append("  file check: ok (a readable checkpoint archive; not loaded)")
        except Sam3VideoError as error:
            lines.append(f"  problem: {one_line(error)}")
    elif hub is None:
        lines.append(
            "  would use: nothing, 'track --model sam3.1' would fail: pip install "
            "'sam3video[hub]' and `hf auth login` to download, or pass --checkpoint"
        )
    else:
        lines.append(
            f"  would use: not found locally: {filename} will be downloaded from the gated "
            f"Hugging Face repository {repo} (accept its licence at https://huggingface.co/"
            f"{repo}, then `hf auth login`; cache {checkpoints.hf_cache_dir()})"
        )
    return lines


def _version_lines(explicit: str | None, checkpoints: Any) -> list[str]:
    """The SAM version of the checkpoint that would be used, read from its keys (the tensors
    are memory-mapped, not loaded): it picks the 3.0 or 3.1 model whatever --model says."""
    try:
        location = checkpoints.locate_checkpoint(explicit)
        if location.path is None:
            return []
        from sam3video.model.build import checkpoint_version

        version = checkpoint_version(location.path)
    except Sam3VideoError as error:
        return [f"  version: unknown ({one_line(error)})"]
    except Exception as error:  # unreadable archive: the file check above said so
        return [f"  version: unknown ({type(error).__name__})"]
    return [f"  version: {version} (read from its keys; it picks the model whatever --model)"]


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
