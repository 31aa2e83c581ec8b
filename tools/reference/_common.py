"""Shared setup for the fixture generators. Runs ONLY inside the reference venv.

Build the venv with ``bash ../shared/reference/setup_reference_env.sh`` (default location
``~/.cache/sam3-reference-venv``), then run a generator from the repository root, e.g.::

    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_detector.py

What this module does:
- makes the official ``sam3`` package run without CUDA (``device="cuda"`` literals, ``.cuda()``,
  ``pin_memory`` and ``torch.cuda`` queries are rerouted to the CPU);
- puts this project's ``src/`` on ``sys.path`` so that the generators draw the synthetic
  weights with the very function the tests use (`sam3video.model.weights.synthetic_tensor`);
- offers `load_synthetic` (synthetic weights into an official module) and `save_fixture`.

Nothing here is imported by the product or by the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED = ROOT.parent / "shared"
BPE_PATH = ROOT / "src" / "sam3video" / "assets" / "bpe_simple_vocab_16e6.txt.gz"
sys.path.insert(0, str(ROOT / "src"))

from sam3video.model.weights import synthetic_tensor  # noqa: E402


def _cpu(device):
    if device is None:
        return device
    return "cpu" if str(device).startswith("cuda") else device


class CudaToCpu(TorchFunctionMode):
    """Reroute ``device="cuda..."`` keyword arguments of torch functions to the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        return func(*args, **kwargs)


_orig_to = torch.Tensor.to


def _to(self, *args, **kwargs):
    args = tuple(_cpu(a) if isinstance(a, (str, torch.device)) else a for a in args)
    if "device" in kwargs:
        kwargs["device"] = _cpu(kwargs["device"])
    return _orig_to(self, *args, **kwargs)


def patch_torch_for_cpu() -> None:
    """Idempotent global patches; also enter ``CudaToCpu()`` around official code."""
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.to = _to
    torch.Tensor.pin_memory = lambda self, *a, **k: self
    torch.cuda.current_device = lambda: 0
    torch.cuda.is_available = lambda: False


patch_torch_for_cpu()
_MODE = CudaToCpu()
_MODE.__enter__()  # stays active for the whole generator process


def drop_bf16_casts() -> None:
    """Pure float32 oracle: ``Tensor.to`` ignores a ``torch.bfloat16`` dtype argument.

    The official tracker stores memories and casts features with explicit
    ``.to(torch.bfloat16)``; on CPU without autocast that breaks the next layer, and for
    parity the reference must stay float32. Idempotent.
    """
    if getattr(torch.Tensor.to, "_drops_bf16", False):
        return
    inner = torch.Tensor.to

    def to_without_bf16(self, *args, **kwargs):
        if kwargs.get("dtype") is torch.bfloat16:
            kwargs.pop("dtype")
        args = tuple(a for a in args if a is not torch.bfloat16)
        if not args and not kwargs:
            return self
        return inner(self, *args, **kwargs)

    to_without_bf16._drops_bf16 = True
    torch.Tensor.to = to_without_bf16


def guard_empty_connected_components() -> None:
    """The official CPU connected components cannot stack an empty batch (a frame with no
    newborns): answer it with empty label and area tensors. Idempotent."""
    import sam3.perflib.connected_components as cc

    if getattr(cc.connected_components, "_guarded", False):
        return
    official = cc.connected_components

    def guarded(mask):
        if mask.shape[0] == 0:
            return torch.zeros_like(mask, dtype=torch.int64), torch.zeros_like(
                mask, dtype=torch.int64
            )
        return official(mask)

    guarded._guarded = True
    cc.connected_components = guarded


def chunk_mask_iou(rows: int = 8) -> None:
    """The official CPU ``mask_iou`` materialises (N, M, H*W) bool tensors: with the ~200
    detections that pass the threshold under synthetic weights at 288x288 that is tens of GB
    (the full-size official run was OOM-killed on a 24 GB machine). Evaluate the same
    elementwise AND/OR counts ``rows`` predictions at a time: same operations, same result,
    bounded memory. Idempotent; patches every module that imported the function."""
    import sam3.perflib.masks_ops as mo

    if getattr(mo.mask_iou, "_chunked", False):
        return
    official = mo.mask_iou

    def chunked(pred_masks, gt_masks):
        return torch.cat([official(pred_masks[i:i + rows], gt_masks)
                          for i in range(0, pred_masks.shape[0], rows)] or
                         [official(pred_masks, gt_masks)])

    chunked._chunked = True
    import sam3.model.sam3_video_base as vb
    import sam3.perflib.associate_det_trk as adt
    import sam3.perflib.nms as nms

    for module in (mo, vb, adt, nms):
        module.mask_iou = chunked


def load_synthetic(module: torch.nn.Module, prefix: str, seed: int = 0) -> list[str]:
    """Fill an OFFICIAL module with synthetic weights drawn under the official key names.

    ``prefix`` is the module's official prefix in the whole video model (e.g.
    ``"detector.geometry_encoder."``), so values equal those of the whole model. Computed
    buffers (``freqs_cis``) keep the module's own values. Values are copied in place, one
    tensor at a time (no second copy of a full-size model). Returns the keys left as they were.
    """
    kept = []
    with torch.no_grad():
        for key, tensor in module.state_dict(keep_vars=True).items():
            try:
                tensor.copy_(synthetic_tensor(prefix + key, tensor.shape, seed))
            except KeyError:
                kept.append(key)
    return kept


def official_predictor(model: torch.nn.Module):
    """The official ``Sam3VideoPredictor`` around ``model`` on the CPU: its ``__init__`` calls
    ``.cuda()``, so the instance is made with ``__new__`` and given what it reads."""
    from sam3.model.sam3_video_predictor import Sam3VideoPredictor

    predictor = Sam3VideoPredictor.__new__(Sam3VideoPredictor)
    predictor.model = model
    predictor.async_loading_frames = False
    predictor.video_loader_type = "cv2"
    predictor._get_torch_and_gpu_properties = lambda: ""
    predictor._get_session_stats = lambda: ""
    return predictor


def save_fixture(name: str, tensors: dict, meta: dict | None = None) -> Path:
    """Write ``tests/fixtures/<name>.pt`` (tensors as float32/int/bool CPU, plus metadata)."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path = FIXTURES / f"{name}.pt"
    clean = {}
    for k, v in tensors.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            if v.is_floating_point() and v.dtype != torch.float32:
                v = v.float()
            v = v.contiguous().clone()
        clean[k] = v
    torch.save({"tensors": clean, "meta": meta or {}}, path)
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1024:.1f} KiB)")
    return path
