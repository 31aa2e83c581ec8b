"""Training and fine-tuning of the SAM 3 video model (``sam3video train``).

Modules: `matcher` (Hungarian assignment and the DETR matching cost), `losses` (focal,
dice, IoU; `DetectorLoss`, `TrackerLoss`), `forward` (the detector's per-layer training
forward, the tracker's clip rollout with simulated prompts), `data` (the clip-sample
interface, the shapes-world and YTVIS sources, batch builders), `loop` (`Trainer`,
`TrainConfig`), `checkpoint` (full state and safetensors export), `cli` (the subcommand).

The names below are imported lazily, so that building the ``sam3video`` parser (which
imports `sam3video.train.cli`) does not load torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ClipSample": "data",
    "ShapesSource": "data",
    "YtvisSource": "data",
    "prepare_clip": "data",
    "DetectorLoss": "losses",
    "DetectorLossWeights": "losses",
    "TrackerLoss": "losses",
    "TrackerLossWeights": "losses",
    "dice_loss": "losses",
    "sigmoid_focal_loss": "losses",
    "TrainConfig": "loop",
    "Trainer": "loop",
    "HungarianMatcher": "matcher",
    "linear_sum_assignment": "matcher",
    "RolloutConfig": "forward",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"sam3video.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'sam3video.train' has no attribute {name!r}")
