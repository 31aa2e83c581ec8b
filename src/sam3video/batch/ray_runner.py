"""Running a batch on a Ray cluster with Ray Data (the ``ray`` extra).

The manifest rows become a Ray Dataset, one block per video, mapped by a pool of stateful
actors (`map_batches` with the callable class `VideoActor`, one video per call): each actor
loads the model once, then runs videos as they come, with `run_job` (the same code as the
local path) writing each video's folder to the shared output location itself.

Scaling past one machine:

  * shipped to the actors: the options (a small dict, once per actor) and one manifest row per
    video (a JSON string); no frames and no masks travel through Ray.
  * read by each node: the videos, at the manifest's paths (so on storage every node mounts
    at the same path), and the checkpoint (``--checkpoint`` on shared storage, or each
    node's Hugging Face cache). sam3video must be installed on every node.
  * outputs: written by the actor that ran the video, to ``--out``: a folder every node
    mounts (committed by rename) or an fsspec URL such as ``s3://bucket/run`` (committed by
    uploading the marker last); the driver only reads them back to write ``summary.json``
    and ``predictions.json``.
  * failures: a video's own error is a result like any other (no retry: it would fail
    again); a lost actor or node is retried ``--retries`` times (Ray restarts the actor and
    resends the video), after which the video is recorded as failed (``WorkerLost``) and the
    others go on.
"""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from sam3video.batch.job import FAILED, LazyPredictor, VideoResult, describe, run_job
from sam3video.batch.manifest import VideoJob
from sam3video.batch.options import BatchOptions
from sam3video.batch.store import open_store
from sam3video.errors import InvalidInputError

__all__ = ["VideoActor", "run_ray"]


class VideoActor:
    """Ray Data's callable class: one model per actor (loaded for its first video that runs),
    one video per call."""

    def __init__(self, options: dict, location: str) -> None:
        self.options = BatchOptions.from_dict(options)
        self.store = open_store(location)
        self.predictor = LazyPredictor(self.options)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        results = []
        for text in batch["job"]:
            job = VideoJob.from_dict(json.loads(str(text)))
            result = run_job(job, self.options, self.store, self.predictor)
            results.append(json.dumps(result.to_dict()))
        return {"result": results}


def run_ray(
    jobs: Sequence[VideoJob],
    options: BatchOptions,
    location: str,
    *,
    address: str | None,
    workers: int,
    gpus_per_worker: float,
    retries: int,
    on_result: Callable[[VideoResult], None],
) -> tuple[dict[str, VideoResult], bool]:
    """Every video on ``workers`` Ray actors; ``(results by id, interrupted)``."""
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:  # else: the caller's cluster (a notebook, a test)
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    threads = options.threads or 1
    options = replace(options, threads=threads)
    context = ray.data.DataContext.get_current()
    saved = (context.enable_progress_bars, context.max_errored_blocks)
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its execution log would scroll over our progress
    context.enable_progress_bars = False  # ours shows videos and frames
    context.max_errored_blocks = len(jobs)  # a lost video must not stop the others
    results: dict[str, VideoResult] = {}
    interrupted, failure = False, _lost(retries)
    try:
        rows = [{"job": json.dumps(job.to_dict())} for job in jobs]
        dataset = ray.data.from_items(rows, **_one_block_each(ray, len(rows)))
        with warnings.catch_warnings():  # restart limits are still only ray_remote_args
            warnings.simplefilter("ignore")
            dataset = dataset.map_batches(
                VideoActor,
                fn_constructor_kwargs={"options": options.to_dict(), "location": location},
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=threads,
                num_gpus=gpus_per_worker or None,
                max_restarts=retries,
                max_task_retries=retries,
            )
        for row in dataset.iter_rows():
            result = VideoResult.from_dict(json.loads(str(row["result"])))
            results[result.id] = result
            on_result(result)
    except KeyboardInterrupt:
        interrupted = True
    except Exception as error:  # the run itself failed (an actor could not start, ...)
        failure = describe(error)
    finally:
        context.enable_progress_bars, context.max_errored_blocks = saved
        logger.setLevel(level)
        if started:
            ray.shutdown()
    if not interrupted:
        for job in jobs:  # never came back: lost more often than --retries allows, or worse
            if job.id not in results:
                lost = VideoResult(job.id, job.video, FAILED, error=failure)
                results[job.id] = lost
                on_result(lost)
    return results, interrupted


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise InvalidInputError(
            f"--ray needs Ray Data ({error}); pip install 'sam3video[ray]'"
        ) from None
    return ray


def _one_block_each(ray: Any, count: int) -> dict[str, int]:
    """One block per video, so that every actor gets work (the keyword changed in Ray 2.10)."""
    parameters = inspect.signature(ray.data.from_items).parameters
    key = "override_num_blocks" if "override_num_blocks" in parameters else "parallelism"
    return {key: max(1, count)}


def _lost(retries: int) -> dict[str, str]:
    return {
        "type": "WorkerLost",
        "message": f"the Ray worker running this video was lost {retries + 1} times "
        f"(--retries {retries})",
    }
