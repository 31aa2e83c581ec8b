"""The worker pool that runs model work off the event loop.

Prompts and propagation steps of all sessions share these threads, so the number of model
calls running at once is bounded by the device (see `config.default_workers`), while the
event loop stays free to serve frames, metrics and other clients. A propagation runs here one
frame at a time, so a slow client never holds a worker while it reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

T = TypeVar("T")


class ModelPool:
    """``await pool.run(fn, *args, **kwargs)`` runs ``fn`` in one of ``workers`` threads."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="sam3video-model")

    async def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
