"""Throughput of ``sam3video batch``: videos per hour on the tiny model, and its overhead.

Runs the same manifest (``--videos`` synthetic 320x180 clips of ``--frames`` frames or a few
more, text prompt, tiny model, CPU, one torch thread per worker, YTVIS output) through

* the bare work: each video's ``track`` job in this process with the model already loaded
  (the sum of these single-video times is the reference);
* ``sam3video track`` once per video as a command (process start and model load each time:
  what running one job per video by hand costs);
* ``sam3video batch`` in this process (1 worker), with 2 local worker processes, and on Ray
  with 2 actors on a local cluster started beforehand (its start is timed apart);
* a rerun of the 1-worker batch when every video is done (the resume check alone).

Each batch row: wall time, videos per hour, and the ratio wall / (sum of single-video times):
above 1 is what the batch machinery costs (model loads, process or actor start, hashing,
commits, summary), below 1 is parallel speed-up. Every batch writes to a fresh folder.

    python benchmarks/batch.py                      # 8 videos, appends to RESULTS.md
    python benchmarks/batch.py --videos 4 --no-record --no-ray
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import markdown_table, report, synthetic_video

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sam3video.batch import BatchOptions, read_manifest, run_batch  # noqa: E402
from sam3video.batch.job import LazyPredictor, run_job  # noqa: E402
from sam3video.batch.store import LocalStore  # noqa: E402

TEXT = "object"


def make_manifest(folder: Path, videos: int, frames: int) -> Path:
    rows = [
        {"video": str(synthetic_video(frames + i % 4)), "id": f"clip{i:03d}", "text": TEXT}
        for i in range(videos)
    ]
    path = folder / "videos.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def single_video_seconds(manifest: Path, options: BatchOptions, folder: Path) -> list[float]:
    """Each video's job alone, model loaded beforehand (and warmed on the first video)."""
    jobs = read_manifest(manifest)
    predictor = LazyPredictor(options)
    predictor.get()
    run_job(jobs[0], options, LocalStore(folder / "warm-up"), predictor)
    times = []
    for job in jobs:
        store = LocalStore(folder / f"single-{job.id}")
        store.prepare()
        start = time.perf_counter()
        result = run_job(job, options, store, predictor)
        times.append(time.perf_counter() - start)
        assert result.status == "ok", result
    predictor.close()
    return times


def command_seconds(manifest: Path, folder: Path) -> float:
    """``sam3video track`` as a command, once per video, one after another."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    for job in read_manifest(manifest):
        argv = [sys.executable, "-m", "sam3video.cli", "track", job.video, "--text", TEXT,
                "--model", "tiny", "--device", "cpu", "--threads", "1", "--quiet",
                "--out", str(folder / f"cmd-{job.id}")]  # fmt: skip
        subprocess.run(argv, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def batch_seconds(manifest: Path, out: Path, options: BatchOptions, **how) -> float:
    start = time.perf_counter()
    code = run_batch(manifest, str(out), options, quiet=True, stdout=io.StringIO(), **how)
    seconds = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0 and summary["counts"]["failed"] == 0, summary["counts"]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16, help="frames of the shortest clip")
    parser.add_argument("--no-ray", action="store_true", help="leave the Ray row out")
    parser.add_argument("--no-command", action="store_true", help="leave the per-video command out")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()

    options = BatchOptions(model="tiny", device="cpu", threads=1)
    folder = Path(tempfile.mkdtemp(prefix="sam3video-batch-bench-"))
    manifest = make_manifest(folder, args.videos, args.frames)
    singles = single_video_seconds(manifest, options, folder)
    total = sum(singles)
    n = args.videos

    rows: list[list[object]] = [
        ["sum of single-video times (model loaded)", total, n / total * 3600, 1.0],
    ]
    if not args.no_command:
        seconds = command_seconds(manifest, folder)
        rows.append(["`sam3video track` per video (command)", seconds, n / seconds * 3600,
                     seconds / total])  # fmt: skip
    runs = [("batch, 1 worker (this process)", "one", {"workers": 1}),
            ("batch, 2 local worker processes", "two", {"workers": 2})]  # fmt: skip
    ray_start = None
    if not args.no_ray:
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False)  # fmt: skip
        ray_start = time.perf_counter() - start
        runs.append(("batch, Ray, 2 actors (local cluster)", "ray", {"workers": 2, "ray": True}))
    for label, name, how in runs:
        seconds = batch_seconds(manifest, folder / name, options, **how)
        rows.append([label, seconds, n / seconds * 3600, seconds / total])
        if name == "one":
            rerun = batch_seconds(manifest, folder / name, options, **how)
            rows.append(["batch rerun, every video done (1 worker)", rerun, "", rerun / total])
    if ray_start is not None:
        import ray

        ray.shutdown()

    lines = [
        "### Batch throughput (tiny model, CPU, 1 torch thread per worker)",
        "",
        *markdown_table(["run", "wall s", "videos / hour", "wall / sum of singles"], rows),
        "",
        f"{n} synthetic 320x180 clips of {args.frames}-{args.frames + 3} frames, text prompt "
        f"{TEXT!r}, direction both, YTVIS output; single-video times: median "
        f"{sorted(singles)[n // 2]:.2f} s, sum {total:.1f} s (each video's track job with the "
        "model already loaded). Ratios above 1 are the batch machinery's cost, below 1 "
        "parallel speed-up."
        + (
            f" The local Ray cluster took {ray_start:.1f} s to start (not in its row)."
            if ray_start is not None
            else ""
        ),  # fmt: skip
    ]
    report("sam3video batch", lines, record=not args.no_record, threads=1)


if __name__ == "__main__":
    main()
