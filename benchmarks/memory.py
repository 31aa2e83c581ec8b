"""Peak resident memory of a video session vs video length and object count, ours and official.

    python benchmarks/memory.py --lengths 100 1000 5000 --objects 1 4 --object-lengths 100 1000
    python benchmarks/memory.py --impl ours --lengths 100 1000 --objects 1 4 16 --media mp4

One process per (implementation, length, object count) point, one after the other, so that
each peak RSS (``ru_maxrss``) is that point's own. Both implementations: the tiny model with
the same synthetic weights, float32, CPU, ``--threads`` torch threads (default 1). The
official one is ``sam3`` 0.1.4's ``Sam3VideoPredictor`` built as in
``official_side_by_side.py`` (``_official_predictor``), run under the reference venv.

Media: the synthetic 320x180 H.264 video of ``_bench.synthetic_video`` (moving gradients and
a moving square), by default written once as a JPEG folder (``--media jpeg``) and read as such
by both: the official MP4 loader (cv2) skips the /255 scaling (sam3 issue #493), on which
the clicked objects' masks are empty after frame 0, so on the MP4 the two would not track
the same thing. The official predictor decodes every frame into one float16 tensor in
``start_session`` (as shipped; measured as it is); ours reads frames lazily.

Request sequence, the same on both sides:

1. ``start_session`` on the video;
2. text prompt ``person`` on frame 0;
3. N clicks on frame 0, each a new object;
4. one forward propagation over every frame, run as a FULL propagation (detector + tracker
   of the clicked objects on every frame): ours does that by itself (no frame was detected
   since the text prompt), the official worker clears ``inference_state["action_history"]``;
   without that the official predictor would run a partial propagation, which fails with
   "No cached outputs found" when no full propagation came before. The official hotstart
   bookkeeping has no first-frame entry for clicked objects (its clicks are meant to follow a
   full propagation) and its full propagation then fails with a KeyError: the worker records
   them as never within hotstart, which is ours's rule for clicked objects.

Both sides run with ``score_threshold_detection`` and ``new_det_thresh`` at 1.01: the detector
runs in full on every frame but no detection passes, so no object is born (on a frame
without tracks the official predictor births every detection above
``score_threshold_detection`` whatever ``new_det_thresh`` says, and the synthetic weights
detect data-dependent junk), and the tracked set is exactly the N clicked objects on both.

The streamed outputs are consumed as a user would (each frame's masks dropped after use).
RSS is sampled every 1 % of the frames; "growth" is the RSS increase from 10 % of the video
to its end, per 1,000 frames: the number that must be ~0 for memory to be flat in the video
length. Each side's own accounting is reported at the end: ours ``memory_footprint()``
(tracker memories, bit-packed cached outputs); the official ``inference_state``'s tensors
(decoded frames, ``cached_frame_outputs``, the rest: tracker states and others). "peak less
outputs" is the peak RSS less the cached outputs (the output cache of either side grows
linearly in frames x objects by design); "peak 5000/100" is the ratio asked by the target
(within 1.10x).

The orchestrator watches every worker (``/proc`` RSS every 0.5 s) and stops it when its RSS
passes ``--max-rss-gib``, when it runs past ``--max-minutes`` or when the machine's available
memory falls under ``--min-available-gib``; such a point is recorded with what it reached.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (  # noqa: E402
    CACHE,
    REFERENCE_PYTHON,
    ROOT,
    click_points,
    current_rss_mib,
    machine_info,
    markdown_table,
    peak_rss_mib,
    report,
    synthetic_video,
)

TEXT = "person"
NO_DETECTION = 1.01  # score_threshold_detection and new_det_thresh: nothing passes
MIB = 2**20


# ------------------------------------------------------------------------------------ media


def synthetic_jpeg_folder(num_frames: int) -> Path:
    """The frames of ``synthetic_video(num_frames)`` as ``00000.jpg``... (cached)."""
    import av
    from PIL import Image

    folder = CACHE / f"synthetic_{num_frames}_320x180_jpg"
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == num_frames:
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    with av.open(str(synthetic_video(num_frames))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            Image.fromarray(frame.to_ndarray(format="rgb24")).save(tmp / f"{i:05d}.jpg",
                                                                   quality=95)
    tmp.rename(folder)
    return folder


def media_path(kind: str, num_frames: int) -> Path:
    return synthetic_jpeg_folder(num_frames) if kind == "jpeg" else synthetic_video(num_frames)


# ------------------------------------------------------------------------------------ workers


class _Sampler:
    """RSS every 1 % of the frames (printed as progress lines for the orchestrator)."""

    def __init__(self, length: int) -> None:
        self.length, self.step, self.samples = length, max(1, length // 100), []

    def __call__(self, k: int) -> None:
        if k % self.step == 0 or k == self.length - 1:
            self.samples.append((k, current_rss_mib()))
            print(json.dumps({"progress": k, "rss_mib": self.samples[-1][1]}), flush=True)

    def summary(self) -> dict:
        samples = self.samples
        tenth = min(samples, key=lambda s: abs(s[0] - self.length // 10))
        growth = (samples[-1][1] - tenth[1]) / max(1, samples[-1][0] - tenth[0]) * 1000
        return {"rss_10pct_mib": tenth[1], "rss_end_mib": samples[-1][1],
                "growth_mib_per_1000_frames": growth, "samples": samples}


def _ours(media: Path, length: int, n_objects: int, config: str) -> dict:
    import numpy as np
    import torch

    from sam3video.io.frames import open_frames
    from sam3video.model.build import build_sam3_video_model
    from sam3video.video.planner import VideoHeuristics
    from sam3video.video.session import VideoSession

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam3_video_model(config, None, device="cpu", dtype=torch.float32)
    gc.collect()
    rss_model = current_rss_mib()
    heuristics = dataclasses.replace(VideoHeuristics(), new_det_thresh=NO_DETECTION,
                                     score_threshold_detection=NO_DETECTION)
    t0 = time.perf_counter()
    frames = open_frames(media)
    session = VideoSession("mem", model, frames, heuristics=heuristics)
    start_s = time.perf_counter() - t0
    rss_session = current_rss_mib()
    sampler = _Sampler(length)
    with torch.inference_mode():
        session.add_concept_prompt(0, TEXT, None)
        for x, y in click_points(n_objects, frames.height, frames.width):
            session.add_points(0, np.array([[x, y]]), np.array([1]), None)
        # every frame is detected and tracked: none was since the text prompt
        t0 = time.perf_counter()
        shown = 0
        for k, (_, outputs) in enumerate(session.propagate(0, None, [False])):
            shown = len(outputs)
            del outputs
            sampler(k)
    seconds = time.perf_counter() - t0
    footprint = session.memory_footprint()
    tracked = len(session.obj_ids)
    frames.close()
    return {
        "rss_model_mib": rss_model, "rss_session_mib": rss_session, "start_s": start_s,
        "seconds": seconds, "frames": k + 1, "tracked": tracked, "shown_last": shown,
        "tracker_mib": footprint["tracker_bytes"] / MIB,
        "cached_outputs_mib": footprint["cached_output_bytes"] / MIB,
        "frames_mib": float("nan"), **sampler.summary(),
    }


def _tensor_mib(obj, seen: set, skip: tuple = ()) -> float:
    """Bytes of the distinct tensor storages reachable from ``obj`` (dicts, lists, objects)."""
    import torch

    total, stack = 0, [obj]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            ptr = ("storage", x.untyped_storage().data_ptr())
            if ptr not in seen:
                seen.add(ptr)
                total += x.untyped_storage().nbytes()
        elif isinstance(x, dict):
            stack += [v for k, v in x.items() if k not in skip]
        elif isinstance(x, (list, tuple, set)):
            stack += list(x)
        elif hasattr(x, "__dict__") and not isinstance(x, (torch.nn.Module, type)):
            stack += list(vars(x).values())
    return total / MIB


def _official(media: Path, length: int, n_objects: int, config: str) -> dict:
    import torch
    from official_side_by_side import _official_predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = _official_predictor(config)
    model = predictor.model
    model.score_threshold_detection = model.new_det_thresh = NO_DETECTION
    gc.collect()
    rss_model = current_rss_mib()
    sampler = _Sampler(length)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        sid = predictor.handle_request(
            {"type": "start_session", "resource_path": str(media)})["session_id"]
        start_s = time.perf_counter() - t0
        rss_session = current_rss_mib()
        state = predictor._ALL_INFERENCE_STATES[sid]["state"]
        height, width = state["orig_height"], state["orig_width"]
        predictor.handle_request(
            {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": TEXT})
        clicked = [1000 + k for k in range(n_objects)]
        for obj_id, (x, y) in zip(clicked, click_points(n_objects, height, width)):
            predictor.handle_request(
                {"type": "add_prompt", "session_id": sid, "frame_index": 0,
                 "points": [[x / width, y / height]], "point_labels": [1], "obj_id": obj_id})
        # Full propagation with the clicked objects (module docstring).
        first_frame = state["tracker_metadata"]["rank0_metadata"]["obj_first_frame_idx"]
        for obj_id in clicked:
            first_frame[obj_id] = -(10**9)  # never within hotstart
        state["action_history"].clear()
        request = {"type": "propagate_in_video", "session_id": sid, "start_frame_index": 0,
                   "propagation_direction": "forward"}
        t0 = time.perf_counter()
        shown = 0
        for k, reply in enumerate(predictor.handle_stream_request(request)):
            masks = reply["outputs"]["out_binary_masks"]
            shown = int(sum(bool(m.any()) for m in masks))
            del reply, masks
            sampler(k)
        seconds = time.perf_counter() - t0
    seen: set = set()
    frames_mib = _tensor_mib(state["input_batch"].img_batch, seen)
    cached_mib = _tensor_mib(state["cached_frame_outputs"], seen)
    other_mib = _tensor_mib(state, seen)
    return {
        "rss_model_mib": rss_model, "rss_session_mib": rss_session, "start_s": start_s,
        "seconds": seconds, "frames": k + 1,
        "tracked": len(state["tracker_metadata"]["obj_ids_all_gpu"]), "shown_last": shown,
        "tracker_mib": other_mib, "cached_outputs_mib": cached_mib, "frames_mib": frames_mib,
        **sampler.summary(),
    }


def worker(impl: str, media: str, length: int, n_objects: int, config: str,
           threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    rss_start = current_rss_mib()
    run = _official if impl == "official" else _ours
    result = run(media_path(media, length), length, n_objects, config)
    print(json.dumps({
        "impl": impl, "length": length, "objects": n_objects, "rss_start_mib": rss_start,
        "peak_rss_mib": peak_rss_mib(), "frames_per_s": result["frames"] / result["seconds"],
        "torch": torch.__version__, "stopped": "", **result,
    }), flush=True)


# ------------------------------------------------------------------------------------ watch


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def watch(cmd: list[str], length: int, max_rss_gib: float, max_minutes: float,
          min_available_gib: float) -> dict:
    """Run a worker; stop it at the bounds and return what it reached (``stopped`` says why)."""
    out_path = CACHE / "memory_worker.out"
    with out_path.open("w") as out, open(CACHE / "memory_worker.err", "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, start_new_session=True)
        t0, peak, stopped = time.monotonic(), 0.0, ""
        while proc.poll() is None:
            rss = _rss_mib(proc.pid)
            peak = max(peak, rss)
            minutes = (time.monotonic() - t0) / 60
            if rss > max_rss_gib * 1024:
                stopped = f"RSS {rss / 1024:.1f} GiB > {max_rss_gib} GiB"
            elif minutes > max_minutes:
                stopped = f"ran past {max_minutes} min"
            elif _available_gib() < min_available_gib:
                stopped = f"machine's available memory < {min_available_gib} GiB"
            if stopped:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.5)
    lines = out_path.read_text().splitlines()
    if not stopped:
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                               f"{(CACHE / 'memory_worker.err').read_text()[-3000:]}")
        return json.loads(lines[-1])
    progress = [json.loads(line) for line in lines if line.startswith('{"progress"')]
    reached = progress[-1]["progress"] + 1 if progress else 0
    return {"stopped": f"stopped at frame {reached}/{length}: {stopped}", "peak_rss_mib": peak,
            "rss_end_mib": progress[-1]["rss_mib"] if progress else float("nan"),
            "seconds": time.monotonic() - t0, "frames": reached}


# ------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", nargs=4, metavar=("IMPL", "MEDIA", "LENGTH", "OBJECTS"))
    ap.add_argument("--impl", nargs="+", choices=["official", "ours"],
                    default=["official", "ours"])
    ap.add_argument("--model", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 4],
                    help="object counts, run at --object-lengths (1 runs at every length)")
    ap.add_argument("--object-lengths", type=int, nargs="+",
                    help="lengths at which the other object counts run (default: shortest)")
    ap.add_argument("--media", choices=["jpeg", "mp4"], default="jpeg",
                    help="JPEG folder of the synthetic video (default) or the H.264 MP4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-rss-gib", type=float, default=16.0)
    ap.add_argument("--max-minutes", type=float, default=25.0)
    ap.add_argument("--min-available-gib", type=float, default=1.5)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if args.worker:
        impl, media, length, k = args.worker
        worker(impl, media, int(length), int(k), args.model, args.threads)
        return
    if "official" in args.impl and not REFERENCE_PYTHON.exists():
        sys.exit(f"the reference venv is missing ({REFERENCE_PYTHON}); see shared/reference")
    object_lengths = args.object_lengths or [min(args.lengths)]
    cases = [(n, 1) for n in args.lengths]
    cases += [(n, k) for n in object_lengths for k in args.objects if k != 1]
    results: dict[tuple[str, int, int], dict] = {}
    loads = []
    for length, k in cases:
        media_path(args.media, length)
        for impl in args.impl:
            python = str(REFERENCE_PYTHON) if impl == "official" else sys.executable
            loads.append(machine_info()["load average (1/5/15 min)"])
            r = watch([python, __file__, "--worker", impl, args.media, str(length), str(k),
                       "--model", args.model, "--threads", str(args.threads)], length,
                      args.max_rss_gib, args.max_minutes, args.min_available_gib)
            r.setdefault("impl", impl)
            r.setdefault("length", length)
            r.setdefault("objects", k)
            results[impl, length, k] = r
            print({key: v for key, v in r.items() if key != "samples"}, flush=True)

    nan = float("nan")
    rows = []
    for (impl, length, k), r in results.items():
        g = r.get
        cached = g("cached_outputs_mib", nan)
        rows.append([
            impl, length, k, g("tracked", "-"), g("shown_last", "-"), g("rss_model_mib", nan),
            g("rss_session_mib", nan), r["peak_rss_mib"], r["peak_rss_mib"] - cached,
            g("rss_10pct_mib", nan), r["rss_end_mib"], g("growth_mib_per_1000_frames", nan),
            g("frames_mib", nan), g("tracker_mib", nan), cached, g("start_s", nan),
            r["frames"] / r["seconds"] if r["frames"] else nan, r["stopped"] or "-",
        ])
    lines = markdown_table(
        ["impl", "frames", "clicked", "tracked", "shown on last frame", "RSS after build MiB",
         "RSS after start_session MiB", "peak RSS MiB", "peak less outputs MiB",
         "RSS at 10 % MiB", "RSS at end MiB", "growth MiB/1000 frames", "decoded frames MiB",
         "tracker / other state MiB", "cached outputs MiB", "start_session s", "frames/s",
         "stopped"], rows)
    ratios = []
    lo, hi = min(args.lengths), max(args.lengths)
    for impl in args.impl:
        a, b = results.get((impl, lo, 1)), results.get((impl, hi, 1))
        if a and b and lo != hi:
            less = [r["peak_rss_mib"] - r.get("cached_outputs_mib", nan) for r in (a, b)]
            note = f" (run stopped: {b['stopped']})" if b["stopped"] else ""
            if impl == "official":
                both = [x - r.get("frames_mib", nan) for x, r in zip(less, (a, b))]
                note = f", less the outputs and the decoded frames {both[1] / both[0]:.2f}x" + note
            ratios.append(f"{impl}: peak RSS {hi}/{lo} frames = "
                          f"{b['peak_rss_mib'] / a['peak_rss_mib']:.2f}x, less the cached "
                          f"outputs {less[1] / less[0]:.2f}x{note}")
    torches = {r["impl"]: r.get("torch", "?") for r in results.values()}
    lines += [
        "",
        f"Model {args.model}, float32, synthetic weights, synthetic 320x180 video "
        f"({'JPEG folder' if args.media == 'jpeg' else 'H.264 MP4'}), 1 worker process per "
        f"row, one at a time: start_session, text {TEXT!r} + N clicks on frame 0, one full "
        f"forward propagation over every frame (no detection passes: score and birth "
        f"thresholds 1.01 on both sides; the tracked objects are the N clicked ones), outputs "
        f"dropped as they stream. 'decoded frames' / 'tracker / other state' / 'cached "
        f"outputs': the side's own accounting (official: tensors in its inference_state; "
        f"ours: memory_footprint(), tracker memories and bit-packed outputs). 'peak less "
        f"outputs': peak RSS less the cached outputs. 'frames/s': propagation only. "
        + "; ".join(ratios) + ". Torch: "
        + ", ".join(f"{k} {v}" for k, v in torches.items())
        + ". Load average before each worker: " + ", ".join(loads) + ".",
    ]
    report(f"memory ({args.model}, official and ours)", lines, not args.no_record,
           threads=args.threads)


if __name__ == "__main__":
    main()
