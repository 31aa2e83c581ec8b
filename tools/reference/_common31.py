"""Shared setup for the SAM 3.1 reference scripts. Runs ONLY with the SAM 3.1 reference interpreter.

Build it with ``bash tools/reference/setup_reference_31.sh`` (official 3.1 sources at the commit
pinned in ``tools/reference/sam31_sources.txt``, overlaid on the 3.0 reference venv), then run a
script from the repository root::

    ~/.cache/sam3-reference-31/bin/python tools/reference/official_builders_31.py

Importing this module:

- makes sure ``import sam3`` resolves to the 3.1 overlay (``$SAM31_OVERLAY/src``, default
  ``~/.cache/sam3-reference-31/src``), not to the 0.1.4 package of the 3.0 venv, and fails loudly
  otherwise;
- applies the 3.0 CPU patches of ``_common`` (``device="cuda"`` arguments, ``.cuda()``,
  ``pin_memory``, ``torch.cuda`` queries), plus the ones the 3.1 code needs:
  ``torch.cuda.get_device_properties`` (queried at import time to enable TF32) answers a
  pre-Ampere device, so nothing is switched on; ``pin_memory=True`` arguments of factory
  functions (pinned staging buffers of the post-processing) are dropped.

FlashAttention-3 and the Triton kernels are never imported as long as the builders pass
``use_fa3=False`` (attention then runs through ``F.scaled_dot_product_attention``) and the
post-processing keeps its CPU paths (``connected_components`` / ``nms`` choose them from the
tensor's device). Nothing here is imported by the product or by the tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

OVERLAY = Path(os.environ.get("SAM31_OVERLAY", Path.home() / ".cache" / "sam3-reference-31"))
_SRC = OVERLAY / "src"
if not (_SRC / "sam3" / "model" / "video_tracking_multiplex.py").is_file():
    raise SystemExit(
        f"SAM 3.1 sources not found under {_SRC}: run bash tools/reference/setup_reference_31.sh"
    )
if str(_SRC) not in sys.path[:2]:
    sys.path.insert(0, str(_SRC))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402,F401  (3.0 CPU patches, src/ on sys.path)
import torch  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402


def _no_ampere(*args, **kwargs):
    return SimpleNamespace(major=0, minor=0, name="cpu", total_memory=0, multi_processor_count=0)


torch.cuda.get_device_properties = _no_ampere


class NoPinnedMemory(TorchFunctionMode):
    """Drop ``pin_memory=True`` from torch factory calls: the 3.1 post-processing allocates
    pinned CPU staging buffers, which needs a CUDA driver. Pinning changes no value."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kwargs.pop("pin_memory", None)
        return func(*args, **kwargs)


_NO_PIN = NoPinnedMemory()
_NO_PIN.__enter__()  # stays active for the whole process, like _common's CudaToCpu

import sam3  # noqa: E402

if Path(sam3.__file__).resolve().parent != (_SRC / "sam3").resolve():
    raise SystemExit(f"`import sam3` gives {sam3.__file__}, not the 3.1 overlay {_SRC}")

COMMIT = (OVERLAY / "COMMIT").read_text().strip() if (OVERLAY / "COMMIT").is_file() else "unknown"
ROOT = _common.ROOT
FIXTURES = _common.FIXTURES
load_synthetic = _common.load_synthetic
save_fixture = _common.save_fixture
synthetic_tensor = _common.synthetic_tensor
drop_bf16_casts = _common.drop_bf16_casts
