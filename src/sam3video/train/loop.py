"""The training loop: plain PyTorch, AdamW, warmup + cosine, clipping, checkpoints, logs.

`Trainer` trains the detector, the tracker or both (one backbone pass serves both tasks on a
step) of a model built by `build_sam3_video_model` (any config; ``init`` loads Meta's
``sam3.pt`` or one of our checkpoints strictly, none gives the deterministic synthetic
weights as the starting point).

Decisions
  * Determinism: the data and prompts of step ``s`` come from generators seeded by
    ``(seed, s)`` (`step_rng`), the initial weights from ``seed``; nothing reads the global
    generators. On the CPU a run is bit-identical to another with the same settings and
    thread count, and a run resumed from ``last.pt`` continues bit-identically.
  * Precision: weights and optimizer state stay float32; ``dtype`` bfloat16 / float16 runs
    the forward under autocast (float16 only on CUDA, with a gradient scaler); losses are
    computed in float32.
  * Weight decay only on matrices (ndim >= 2), not on norms, biases and 1-D embeddings.
  * Learning rate: linear warmup from 0 over ``warmup`` steps, then a cosine from ``lr`` to
    ``lr * min_lr_ratio`` at ``steps``; a pure function of the step.
  * Output folder: ``log.jsonl`` (one line per step: step, lr, seconds, losses), ``last.pt``
    (full state, every ``save_every`` steps and at the end) and ``model.safetensors``
    (weights only, same times).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sam3video.errors import ConfigError
from sam3video.model.build import build_sam3_video_model
from sam3video.train.checkpoint import (
    export_weights,
    get_rng_state,
    load_state,
    save_state,
    set_rng_state,
)
from sam3video.train.data import (
    ClipSource,
    PreparedClip,
    detector_queries,
    prepare_clip,
    step_rng,
)
from sam3video.train.forward import RolloutConfig, detector_layers, tracker_rollout
from sam3video.train.losses import (
    DetectorLoss,
    DetectorLossWeights,
    TrackerLoss,
    TrackerLossWeights,
)

__all__ = ["TrainConfig", "Trainer", "lr_factor"]

TASKS = ("detector", "tracker", "both")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainConfig:
    """Everything a run depends on (saved in the checkpoint)."""

    model: str = "tiny"
    init: str | None = None
    task: str = "both"
    steps: int = 100
    batch: int = 2  # clips per step (= find-queries of the detector)
    num_frames: int = 4  # frames per clip for the tracker
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup: int = 10
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    out: str | None = None
    save_every: int = 100
    log_every: int = 1
    p_negative: float = 0.2
    queries_per_frame: int = 1  # detector find-queries (phrases) per clip, on one frame
    freeze: tuple[str, ...] = ()  # parameter-name prefixes kept fixed
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    detector_weights: DetectorLossWeights = field(default_factory=DetectorLossWeights)
    tracker_weights: TrackerLossWeights = field(default_factory=TrackerLossWeights)

    def check(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task: expected one of {TASKS}, got {self.task!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: expected one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.dtype == "float16" and not str(self.device).startswith("cuda"):
            raise ConfigError(f"dtype: float16 autocast needs a CUDA device, got {self.device!r}")
        for name in (
            "steps",
            "batch",
            "num_frames",
            "save_every",
            "log_every",
            "queries_per_frame",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}: expected an int >= 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.p_negative <= 1.0:
            raise ConfigError(
                f"p_negative: expected a probability in [0, 1], got {self.p_negative}"
            )
        if self.warmup < 0 or self.lr <= 0:
            raise ConfigError(
                f"lr/warmup: expected lr > 0 and warmup >= 0, got {self.lr}, {self.warmup}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["freeze"] = list(self.freeze)
        return d


def lr_factor(step: int, steps: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(steps - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """Train ``config.task`` on clips from ``source`` (see the module notes).

    ``vocabulary``: phrases for negative find-queries when a clip names none.
    ``log``: called with each step's record (default: print a line every ``log_every``).
    """

    def __init__(
        self,
        config: TrainConfig,
        source: ClipSource,
        vocabulary: Sequence[str] = (),
        log: Callable[[dict], None] | None = None,
    ) -> None:
        config.check()
        self.config = config
        self.source = source
        self.vocabulary = tuple(vocabulary)
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device: {config.device!r} requested but CUDA is not available")
        self.model = build_sam3_video_model(
            config.model, checkpoint_path=config.init, device=self.device, seed=config.seed
        )
        self.model.train()
        from sam3video.model.tracker import Sam3Tracker

        if config.task != "detector" and not isinstance(self.model.tracker, Sam3Tracker):
            raise ConfigError(
                f"model: tracker training supports the SAM 3 tracker, model {config.model!r} has "
                f"{type(self.model.tracker).__name__} (use --task detector)"
            )
        self.image_size = self.model.config.image_size
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if any(name.startswith(prefix) for prefix in config.freeze):
                p.requires_grad_(False)
                continue
            (decay if p.ndim >= 2 else no_decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.lr,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, config.steps, config.warmup, config.min_lr_ratio),
        )
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=config.dtype == "float16" and self.device.type == "cuda"
        )
        self.detector_loss = DetectorLoss(config.detector_weights)
        self.tracker_loss = TrackerLoss(config.tracker_weights)
        self.step = 0
        self.out = Path(config.out) if config.out else None
        self._log = log

    # ------------------------------------------------------------------ one step

    def _autocast(self):
        dtype = DTYPES[self.config.dtype]
        return torch.autocast(
            device_type=self.device.type, dtype=dtype, enabled=dtype != torch.float32
        )

    def compute_loss(self, clips: list[PreparedClip], step: int) -> tuple[Tensor, dict]:
        """The loss of one step on prepared clips (forward only)."""
        cfg = self.config
        detector = self.model.detector
        want_det = cfg.task in ("detector", "both")
        want_trk = cfg.task in ("tracker", "both")
        rng = step_rng(cfg.seed, step, 1)
        parts: dict[str, float] = {}
        total = torch.zeros((), device=self.device)
        if want_det:
            queries, texts, targets = detector_queries(
                clips, rng, cfg.p_negative, self.vocabulary, cfg.queries_per_frame
            )
        t = clips[0].images.shape[0]
        if want_trk:  # every frame of every clip
            images = torch.cat([c.images for c in clips])
            rows = [k * t + i for k, i in queries] if want_det else []
        else:  # only the queried frames (one per clip)
            images = torch.stack(
                [c.images[i] for c, (_, i) in zip(clips, queries[:: cfg.queries_per_frame])]
            )
            rows = [k for k, _ in queries]
        images = images.to(self.device)
        with self._autocast():
            neck = detector.backbone.forward_image(
                images, need_detector=want_det, need_tracker=want_trk
            )
            if want_det:
                feats = [f[rows] for f in neck.detector_feats]
                pos = [p[rows] for p in neck.detector_pos]
                text_feats, text_mask = detector.backbone.forward_text(texts, device=self.device)
                layers = detector_layers(detector, feats, pos, text_feats, text_mask)
            if want_trk:
                results = []
                for k, clip in enumerate(clips):
                    sl = slice(k * t, (k + 1) * t)
                    res = tracker_rollout(
                        self.model.tracker,
                        [f[sl] for f in neck.tracker_feats],
                        [p[sl] for p in neck.tracker_pos],
                        clip.masks,
                        self.tracker_loss,
                        rng,
                        cfg.rollout,
                    )
                    if res is not None:
                        results.append(res)
        if want_det:
            det_total, det_parts = self.detector_loss(layers, targets.to(self.device))
            total = total + det_total
            parts.update({f"det_{k}": v for k, v in det_parts.items()})
        if want_trk and results:
            trk_total = sum(r[0] for r in results) / len(results)
            total = total + trk_total
            for key in results[0][1]:
                parts[f"trk_{key}"] = sum(r[1][key] for r in results) / len(results)
        parts["loss"] = float(total.detach())
        return total, parts

    def sample_clips(self, step: int) -> list[PreparedClip]:
        rng = step_rng(self.config.seed, step, 0)
        return [
            prepare_clip(self.source.sample(rng, self.config.num_frames), self.image_size)
            for _ in range(self.config.batch)
        ]

    def train_step(
        self, clips: list[PreparedClip] | None = None, prompt_step: int | None = None
    ) -> dict[str, float]:
        """One optimizer step on ``clips`` (default: the step's own sample), with the queries
        and prompts of ``prompt_step`` (default: the current step)."""
        start = time.perf_counter()
        if clips is None:
            clips = self.sample_clips(self.step)
        total, parts = self.compute_loss(clips, self.step if prompt_step is None else prompt_step)
        self.optimizer.zero_grad(set_to_none=True)
        if total.requires_grad:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            parts["grad_norm"] = float(norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        parts["lr"] = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        parts["step"] = self.step
        parts["seconds"] = time.perf_counter() - start
        return parts

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "rng": get_rng_state(),
            "config": _plain(self.config.to_dict()),
            "model_config": self.model.config.name,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        name = state.get("model_config")
        if name is not None and name != self.model.config.name:
            raise ConfigError(
                f"resume: the checkpoint is of model {name!r}, this run builds "
                f"{self.model.config.name!r}"
            )
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        if "rng" in state:
            set_rng_state(state["rng"])

    def save(self, path: str | Path | None = None) -> Path:
        """Write ``last.pt`` and ``model.safetensors`` (in ``out``, or ``path``'s folder)."""
        target = Path(path) if path is not None else self._out() / "last.pt"
        save_state(target, self.state_dict())
        export_weights(self.model, target.parent / "model.safetensors")
        return target

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``path`` (default ``out/last.pt``); False when there is none to load."""
        target = Path(path) if path is not None else self._out() / "last.pt"
        if path is None and not target.exists():
            return False
        self.load_state_dict(load_state(target))
        return True

    def _out(self) -> Path:
        if self.out is None:
            raise ConfigError("out: expected an output folder for checkpoints, got none")
        return self.out

    # ------------------------------------------------------------------ the loop

    def fit(self) -> list[dict]:
        """Train until ``config.steps``; log every step, checkpoint periodically."""
        cfg = self.config
        records = []
        log_file = None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            log_file = open(self.out / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        try:
            while self.step < cfg.steps:
                record = self.train_step()
                records.append(record)
                if log_file is not None:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                if self._log is not None:
                    self._log(record)
                elif record["step"] % cfg.log_every == 0 or record["step"] == cfg.steps:
                    print(format_record(record), flush=True)
                if self.out is not None and (
                    self.step % cfg.save_every == 0 or self.step == cfg.steps
                ):
                    self.save()
        finally:
            if log_file is not None:
                log_file.close()
        return records


def format_record(record: dict) -> str:
    """One log line: step, loss, the main terms, lr and seconds."""
    keys = [k for k in record if k.startswith(("det_", "trk_")) and "aux" not in k]
    keys = [k for k in keys if not k.endswith("total")]
    terms = " ".join(f"{k}={record[k]:.4g}" for k in keys)
    return (
        f"step {record['step']} loss={record['loss']:.4f} {terms} "
        f"lr={record['lr']:.3g} {record['seconds']:.2f}s"
    )


def _plain(value: Any) -> Any:
    """Dataclass dicts with tuples -> lists (loadable with weights_only)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
