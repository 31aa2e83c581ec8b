"""A whole batch: read the manifest, run the videos (here or on Ray), write the summary.

`run_batch` is ``sam3video batch`` without the command line. The exit code says how it went:
0 every video is done (ran now or already there), 1 at least one failed (its row in
``summary.json`` says why), 130 interrupted (the finished videos are kept; a rerun does the
rest). ``summary.json`` and ``predictions.json`` are written in every case, interrupted
runs included.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from sam3video import __version__
from sam3video.batch.job import NOT_RUN, VideoResult, describe
from sam3video.batch.local import run_in_process, run_workers
from sam3video.batch.manifest import VideoJob, read_manifest
from sam3video.batch.options import BatchOptions, job_key, video_digest
from sam3video.batch.progress import BatchProgress
from sam3video.batch.store import open_store
from sam3video.batch.summary import PREDICTIONS, SUMMARY, summary, write_merged_predictions

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "BatchPlan", "plan", "run_batch"]

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass
class BatchPlan:
    """What a run would do with one row: ``run`` (no result yet), ``rerun`` (its result is
    out of date), ``done`` (current result there) or ``missing`` (the video is not there)."""

    job: VideoJob
    action: str


def plan(jobs: list[VideoJob], options: BatchOptions, store: Any) -> list[BatchPlan]:
    """Each row's action (reads every video to compute its key)."""
    rows = []
    for job in jobs:
        try:
            key = job_key(job, options, video_digest(job.video))
        except OSError:
            rows.append(BatchPlan(job, "missing"))
            continue
        marker = store.marker(job.id)
        if marker is None:
            action = "run"
        else:
            action = "done" if marker.get("key") == key else "rerun"
        rows.append(BatchPlan(job, action))
    return rows


def run_batch(
    manifest: str | Path,
    out: str,
    options: BatchOptions,
    *,
    workers: int = 1,
    ray: bool = False,
    ray_address: str | None = None,
    gpus_per_worker: float = 0.0,
    retries: int = 2,
    dry_run: bool = False,
    quiet: bool = False,
    stdout: IO[str] | None = None,
) -> int:
    """Run (or with ``dry_run`` list) the batch; the exit code (module notes)."""
    stdout = sys.stdout if stdout is None else stdout
    jobs = read_manifest(manifest)
    store = open_store(out)
    if dry_run:
        return _dry_run(jobs, options, store, stdout)
    store.prepare()
    _check_model(options, quiet)
    started = datetime.now(timezone.utc)
    tick = time.perf_counter()
    progress = BatchProgress(len(jobs), enabled=not quiet)
    try:
        if ray:
            from sam3video.batch.ray_runner import run_ray

            results, interrupted = run_ray(
                jobs, options, store.location, address=ray_address, workers=workers,
                gpus_per_worker=gpus_per_worker, retries=retries, on_result=progress.update,
            )  # fmt: skip
        elif workers > 1:
            results, interrupted = run_workers(
                jobs, options, store.location, workers, progress.update
            )
        else:
            show = not quiet and getattr(sys.stderr, "isatty", bool)()
            results, interrupted = run_in_process(jobs, options, store, progress.update, show)
    finally:
        progress.close()
    ordered = [results.get(job.id) or VideoResult(job.id, job.video, NOT_RUN) for job in jobs]
    content = summary(
        ordered,
        manifest=str(Path(manifest).resolve()),
        out=store.location,
        options=options.to_dict(),
        runner="ray" if ray else f"local, {workers} worker{'s' if workers > 1 else ''}",
        sam3video=__version__,
        started=started.isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - tick, 3),
        interrupted=interrupted,
    )
    _write_outputs(jobs, ordered, options, store, content)
    store.finish()
    counts = content["counts"]
    print(
        f"videos   {counts['ok']} ran, {counts['skipped']} already done, {counts['failed']} "
        f"failed" + (f", {counts['not run']} not run (interrupted)" if counts["not run"] else ""),
        file=stdout,
    )
    print(f"results  {store.location}: {SUMMARY}"
          + (f", {PREDICTIONS}" if "ytvis" in options.formats else ""), file=stdout)  # fmt: skip
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if counts["failed"] else EXIT_OK


def _write_outputs(
    jobs: list[VideoJob], results: list[VideoResult], options: BatchOptions, store: Any,
    content: dict,
) -> None:  # fmt: skip
    if "ytvis" in options.formats:
        try:
            with store.open_output(PREDICTIONS) as out:
                write_merged_predictions(jobs, results, store, out)
        except (OSError, ValueError, KeyError) as error:  # a results.json went missing
            content["predictions_error"] = describe(error)
    with store.open_output(SUMMARY) as out:
        out.write(json.dumps(content, indent=1) + "\n")


def _check_model(options: BatchOptions, quiet: bool) -> None:
    """Find the checkpoint once, before any worker starts (a missing one fails the run)."""
    if options.model == "full":
        from sam3video.checkpoints import resolve_checkpoint

        resolve_checkpoint(options.checkpoint)
    elif options.model == "sam3.1" and options.checkpoint is None:
        from sam3video.checkpoints import download_checkpoint

        download_checkpoint(version="sam3.1")  # the hub's cache first
    elif not quiet and options.checkpoint is None:
        print(
            f"sam3video batch: warning: --model {options.model} runs on SYNTHETIC weights: the "
            "masks are meaningless",
            file=sys.stderr,
        )


def _dry_run(jobs: list[VideoJob], options: BatchOptions, store: Any, stdout: IO[str]) -> int:
    rows = plan(jobs, options, store)
    width = max(len(r.job.id) for r in rows)
    for row in rows:
        prompt = row.job.text if row.job.text is not None else "(boxes/points)"
        print(f"{row.action:<8} {row.job.id:<{width}}  {row.job.video}  {prompt!r}", file=stdout)
    counts = {a: sum(r.action == a for r in rows) for a in ("run", "rerun", "done", "missing")}
    print(
        f"would run {counts['run'] + counts['rerun']} of {len(rows)} videos ({counts['done']} "
        f"done, {counts['rerun']} out of date, {counts['missing']} missing); nothing was run",
        file=stdout,
    )
    return EXIT_OK
