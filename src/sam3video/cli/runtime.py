"""Where ``sam3video track`` runs: the device it asked for and the number of CPU threads.

Threads: PyTorch's default intra-op thread count can exceed the physical cores (SMT) and
ignores other load; on a small shared machine that makes small models many times slower.
The default here is ``$OMP_NUM_THREADS`` when set (the variable PyTorch itself reads), else
the number of physical cores this process may use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sam3video.errors import InvalidInputError

__all__ = ["check_device", "default_threads"]


def default_threads(env: Mapping[str, str] | None = None) -> int:
    """``$OMP_NUM_THREADS`` when it is a positive int, else the physical cores available."""
    env = os.environ if env is None else env
    value = env.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) >= 1:
        return int(value)
    import psutil

    logical = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    try:
        usable = len(os.sched_getaffinity(0))  # a container or taskset may allow fewer
    except AttributeError:  # macOS, Windows
        usable = logical
    # With SMT, the usable logical CPUs hold about usable * physical / logical cores.
    return max(1, min(physical, round(usable * physical / logical)))


def check_device(name: str) -> Any:
    """The ``torch.device`` of ``--device`` (``auto``: CUDA, then MPS, then CPU): the
    predictor's `pick_device`, its errors named after the option.

    Raises:
        InvalidInputError: the device is not available here (one line naming ``--device``).
    """
    from sam3video.predictor import pick_device

    try:
        return pick_device(name)
    except InvalidInputError as exc:
        message = str(exc)
        if message.startswith("device:"):
            message = message[len("device:") :].lstrip()
        raise InvalidInputError(f"--device: {message}") from None
