"""Peak resident memory of a video session vs video length and vs object count (ours only).

    python benchmarks/memory.py --lengths 100 1000 --objects 1 4 16
    python benchmarks/memory.py --lengths 5000 --objects 1            # ~5 min at tiny size

Each case runs in a fresh process (so that its peak RSS is its own): the tiny model with
synthetic weights, float32, CPU; a synthetic H.264 video (320x180, moving pattern) of the
given length; a text prompt and N clicks on frame 0; then a full propagation over the whole
video (action history cleared, births off, as in ``latency.py``), consuming the outputs as a
user would (each frame's masks dropped after use). RSS is sampled every 1 % of the frames;
"growth" is the RSS increase from 10 % of the video to its end, per 1,000 frames: the number
that must be ~0 for memory to be flat in the video length. The session's own accounting
(`VideoSession.memory_footprint`: tracker memories and bit-packed cached outputs) is reported
at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (  # noqa: E402
    append_results,
    click_points,
    command_line,
    current_rss_mib,
    machine_info,
    markdown_table,
    peak_rss_mib,
    run_json,
    synthetic_video,
)


def worker(length: int, n_objects: int, config: str, threads: int) -> None:
    import numpy as np
    import torch

    from sam3video.io.frames import open_frames
    from sam3video.model.build import build_sam3_video_model
    from sam3video.video.planner import VideoHeuristics
    from sam3video.video.session import VideoSession

    torch.set_num_threads(threads)
    rss_start = current_rss_mib()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam3_video_model(config, None, device="cpu", dtype=torch.float32)
    gc.collect()
    rss_model = current_rss_mib()
    frames = open_frames(synthetic_video(length))
    heuristics = dataclasses.replace(VideoHeuristics(), new_det_thresh=1.01)  # no births
    session = VideoSession("mem", model, frames, heuristics=heuristics)
    t0 = time.perf_counter()
    with torch.inference_mode():
        session.add_concept_prompt(0, "person", None)
        for x, y in click_points(n_objects, frames.height, frames.width):
            session.add_points(0, np.array([[x, y]]), np.array([1]), None)
        session.history.clear()  # a full propagation (see latency.py)
        step = max(1, length // 100)
        samples = []
        for k, (_, outputs) in enumerate(session.propagate(0, None, reverse=False)):
            del outputs
            if k % step == 0 or k == length - 1:
                samples.append((k, current_rss_mib()))
    elapsed = time.perf_counter() - t0
    footprint = session.memory_footprint()
    tracked = len(session.obj_ids)
    frames.close()
    tenth = min(samples, key=lambda s: abs(s[0] - length // 10))
    growth = (samples[-1][1] - tenth[1]) / max(1, samples[-1][0] - tenth[0]) * 1000
    print(json.dumps({
        "length": length, "objects": n_objects, "tracked": tracked,
        "rss_start_mib": rss_start, "rss_model_mib": rss_model, "peak_rss_mib": peak_rss_mib(),
        "rss_10pct_mib": tenth[1], "rss_end_mib": samples[-1][1],
        "growth_mib_per_1000_frames": growth, "seconds": elapsed,
        "frames_per_s": length / elapsed, "footprint": footprint, "samples": samples,
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", nargs=2, type=int, metavar=("LENGTH", "OBJECTS"))
    ap.add_argument("--model", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 4, 16],
                    help="object counts, run at the shortest length")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, args.model, args.threads)
        return
    shortest = min(args.lengths)
    cases = [(n, 1) for n in args.lengths] + [(shortest, k) for k in args.objects if k != 1]
    rows = []
    for length, k in cases:
        synthetic_video(length)
        r = run_json([sys.executable, __file__, "--worker", str(length), str(k), "--model",
                      args.model, "--threads", str(args.threads)])
        print({key: v for key, v in r.items() if key != "samples"}, flush=True)
        f = r["footprint"]
        rows.append([
            r["length"], r["objects"], r["tracked"], r["rss_model_mib"], r["peak_rss_mib"],
            r["rss_10pct_mib"], r["rss_end_mib"], r["growth_mib_per_1000_frames"],
            f["tracker_bytes"] / 2**20, f["cached_output_bytes"] / 2**20, f["cached_frames"],
            r["frames_per_s"],
        ])
    lines = markdown_table(
        ["frames", "clicked", "tracked", "RSS after build MiB", "peak RSS MiB",
         "RSS at 10 % MiB", "RSS at end MiB", "growth MiB/1000 frames", "tracker MiB",
         "cached outputs MiB", "cached frames", "frames/s"], rows)
    lines += ["", f"Model {args.model}, float32, synthetic weights, synthetic 320x180 H.264 "
              "videos, text prompt + N clicks on frame 0, full propagation over every frame."]
    if args.no_record:
        print("\n".join(lines))
    else:
        append_results(f"memory ({args.model})", machine_info(threads=args.threads),
                       command_line(), lines)


if __name__ == "__main__":
    main()
