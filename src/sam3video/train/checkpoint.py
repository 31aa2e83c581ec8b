"""Training checkpoints: the full state (resumable) and the weights-only export.

* ``last.pt`` (`save_state`): ``{"model", "optimizer", "scheduler", "scaler", "step",
  "rng", "config"}`` written with ``torch.save`` to a temporary file and renamed, so a run
  killed while saving keeps its previous checkpoint. Everything in it loads with
  ``weights_only=True`` (tensors, numbers, strings, lists, dicts). Its ``"model"`` entry is a
  plain state dict, so ``--init last.pt`` and `build_sam3_video_model` read it directly.
* ``model.safetensors`` (`export_weights`): the model's state dict in safetensors, loadable
  with ``build_sam3_video_model(config, checkpoint_path=...)`` (strict).
* RNG states: PyTorch's CPU and CUDA generators, Python's and numpy's global ones. Training
  draws its own randomness from per-step generators (`sam3video.train.data.step_rng`), so
  these are saved and restored for code that might use the global generators.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sam3video.errors import CheckpointError

__all__ = ["export_weights", "get_rng_state", "load_state", "save_state", "set_rng_state"]


def get_rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write a full training state (see the module notes) atomically."""
    out = Path(path)
    _atomic_save(state, out)
    return out


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a full training state written by `save_state` (on the CPU)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"resume: no training checkpoint at {str(p)!r}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/pickle/zip errors vary
        raise CheckpointError(f"resume: {str(p)!r} is not a readable checkpoint ({exc})") from exc
    missing = [k for k in ("model", "optimizer", "scheduler", "step") if k not in state]
    if missing:
        raise CheckpointError(f"resume: {str(p)!r} lacks {missing}; is it a training checkpoint?")
    return state


def export_weights(model: nn.Module, path: str | os.PathLike) -> Path:
    """The model's weights as safetensors (float tensors copied to the CPU, contiguous)."""
    from safetensors.torch import save_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = out.with_name(f".{out.name}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, out)
    return out
