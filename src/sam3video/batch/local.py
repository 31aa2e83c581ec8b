"""Running a batch on this machine: in this process, or in N worker processes.

``workers == 1`` (the default): one model in this process, videos one after another, each
video's frames decoded ahead in a background thread. ``workers > 1``: N worker processes
(forked from a server process that imported torch once, so they start in a fraction of a
spawned interpreter's time; spawned where there is no fork server), each loading its own
model once and taking the next video when it is free; a worker that dies fails its video,
not the batch. On a machine
with several CUDA devices and ``--device auto`` or ``cuda``, worker k uses ``cuda:(k mod
devices)``. CPU threads are shared out: ``--threads`` per worker, else the physical cores
divided by N.

Both return ``(results by id, interrupted)``. Ctrl-C stops the videos in flight (the
terminal signals the worker processes too): their staging folders are removed, the
finished videos stay.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from typing import Any

from sam3video.batch.job import FAILED, LazyPredictor, VideoResult, describe, run_job
from sam3video.batch.manifest import VideoJob
from sam3video.batch.options import BatchOptions
from sam3video.batch.store import open_store

__all__ = ["run_in_process", "run_workers"]

Results = tuple[dict[str, VideoResult], bool]


def run_in_process(
    jobs: Sequence[VideoJob],
    options: BatchOptions,
    store: Any,
    on_result: Callable[[VideoResult], None],
    show_video_progress: bool = False,
) -> Results:
    """Every video with one model in this process."""
    results: dict[str, VideoResult] = {}
    predictor = LazyPredictor(options)
    try:
        for job in jobs:
            result = run_job(job, options, store, predictor, show_progress=show_video_progress)
            results[job.id] = result
            on_result(result)
    except KeyboardInterrupt:
        return results, True
    finally:
        predictor.close()
    return results, False


def run_workers(
    jobs: Sequence[VideoJob],
    options: BatchOptions,
    location: str,
    workers: int,
    on_result: Callable[[VideoResult], None],
) -> Results:
    """Every video on ``workers`` processes, one model each."""
    context = _worker_context()
    counter = context.Value("i", 0)
    results: dict[str, VideoResult] = {}
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(options.to_dict(), location, counter, workers),
    )
    interrupted, failure = False, None
    try:
        futures = {pool.submit(_run_one, job.to_dict()): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                result = VideoResult.from_dict(future.result())
            except KeyboardInterrupt:  # the worker was interrupted in the middle of it
                interrupted = True
                continue
            except Exception as error:  # the worker died or could not load the model
                result = VideoResult(job.id, job.video, FAILED, error=describe(error))
            results[job.id] = result
            on_result(result)
    except KeyboardInterrupt:
        interrupted = True
    except Exception as error:  # the pool broke before every video was handed out
        failure = describe(error)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        for job in jobs:
            if job.id not in results:
                results[job.id] = VideoResult(job.id, job.video, FAILED, error=failure)
                on_result(results[job.id])
    return results, interrupted


def _worker_context() -> Any:
    """Fresh processes, never forks of this one (its torch and decoder threads would not
    survive a fork): forked from a server process that imported sam3video and torch once,
    where the platform has one, else spawned (each importing torch itself)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["sam3video.batch.local"])
        return context
    return multiprocessing.get_context("spawn")


# ----------------------------------------------------------------------------- in a worker

_WORKER: dict[str, Any] = {}


def _start_worker(options: dict, location: str, counter: Any, workers: int) -> None:
    from sam3video.cli.runtime import default_threads

    with counter.get_lock():
        index = counter.value
        counter.value += 1
    chosen = BatchOptions.from_dict(options)
    chosen = replace(chosen, threads=chosen.threads or max(1, default_threads() // workers))
    _WORKER["options"] = chosen
    _WORKER["store"] = open_store(location)
    _WORKER["predictor"] = LazyPredictor(chosen, device=_device_for(index, chosen.device))


def _run_one(job: dict) -> dict:
    options, store, predictor = _WORKER["options"], _WORKER["store"], _WORKER["predictor"]
    return run_job(VideoJob.from_dict(job), options, store, predictor).to_dict()


def _device_for(index: int, device: str) -> str:
    """Spread workers over the CUDA devices when the device is ``auto`` or ``cuda``."""
    if device not in ("auto", "cuda"):
        return device
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{index % count}" if count > 1 else device
