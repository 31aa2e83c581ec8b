"""``sam3video serve`` benchmarks: what the server adds to the predictor, and how it holds load.

Parts (each optional, all by default except ``--click``):

- ``rle``: COCO RLE encoding (and decoding) of one 1920x1080 mask, as the server does for
  every mask it sends; pycocotools' usual recipe beside it.
- ``overhead``: per streamed frame, a server on this machine (a subprocess on loopback)
  against the in-process predictor, same tiny model, same video and clicks, runs interleaved;
  the ratio server / in-process, for raw NDJSON lines and through `RemotePredictor` (masks
  decoded back to numpy).
- ``load``: ``--clients`` clients on as many sessions for ``--seconds``: each clicks a random
  frame and propagates 4 frames from it, again and again. Errors, p50/p95 latency of
  ``add_prompt`` and of a streamed frame (time since the previous line), the server's RSS per
  idle session afterwards (the model's weights are in the baseline once).
- ``click`` (``--click``, slow): full-size model, synthetic weights, CPU: a click on the frame
  being viewed after its features were computed; its latency, its FLOPs and FLOP bound at
  the measured GEMM rate, and how many trunk passes it ran (0 expected).

Run from the repository root: ``python benchmarks/server.py``; ``--no-record`` to print only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (  # noqa: E402
    CACHE,
    click_points,
    flop_counter,
    gemm_rate,
    markdown_table,
    median,
    report,
    synthetic_video,
)

# ------------------------------------------------------------------------------------ rle


def bench_rle(repeat: int = 200) -> list[str]:
    from pycocotools import mask as mask_utils

    from sam3video.server.rle import decode_mask, encode_mask

    height, width = 1080, 1920
    y, x = np.mgrid[0:height, 0:width]
    mask = ((x - 900) / 500.0) ** 2 + ((y - 560) / 330.0) ** 2 < 1  # a large smooth blob
    mask |= ((x - 300) / 120.0) ** 2 + ((y - 200) / 180.0) ** 2 < 1
    rle = encode_mask(mask)

    def timed(fn) -> tuple[float, float]:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e3 * median(times), 1e3 * min(times)

    rows = [
        ["encode_mask (server)", *timed(lambda: encode_mask(mask))],
        [
            "pycocotools encode(np.asfortranarray(mask.astype(uint8)))",
            *timed(lambda: mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))),
        ],
        ["decode_mask (client)", *timed(lambda: decode_mask(rle))],
    ]
    return [
        "### RLE of one 1920x1080 mask",
        "",
        *markdown_table(["operation", "ms (median)", "ms (best)"], rows),
        "",
        f"{repeat} runs each; the mask is two ellipses ({int(mask.sum())} pixels, "
        f"{len(rle['counts'])} RLE characters). Target: encoding under 2 ms.",
    ]


# ------------------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m sam3video.server --model tiny`` on a free loopback port."""

    def __init__(self, media_root: Path, threads: int, workers: int | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        env.pop("SAM3VIDEO_TOKEN", None)
        cmd = [
            sys.executable,
            "-m",
            "sam3video.server",
            "--model",
            "tiny",
            "--device",
            "cpu",
            "--port",
            str(self.port),
            "--media-root",
            str(media_root),
            "--max-sessions",
            "64",
            "--log-level",
            "warning",
        ]
        if workers:
            cmd += ["--workers", str(workers)]
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)

    def __enter__(self) -> ServerProcess:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.proc.kill()
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)

    def rss_mib(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20


def tiny_predictor():
    from sam3video import Sam3VideoPredictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Sam3VideoPredictor(model_config="tiny", device="cpu")


def _prompted(predictor, video: str, objects: int, height: int, width: int) -> str:
    sid = predictor.handle_request({"type": "start_session", "resource_path": video})["session_id"]
    for x, y in click_points(objects, height, width):
        predictor.handle_request(
            {
                "type": "add_prompt",
                "session_id": sid,
                "frame_index": 0,
                "points": [[x, y]],
                "point_labels": [1],
            }
        )
    return sid


class Clock:
    """Wall time, and CPU time of this process and (optionally) of the server process."""

    def __init__(self, server: ServerProcess | None = None) -> None:
        self.server = server

    def now(self) -> tuple[float, float, float]:
        server_cpu = 0.0
        if self.server is not None:
            import psutil

            times = psutil.Process(self.server.proc.pid).cpu_times()
            server_cpu = times.user + times.system
        return time.perf_counter(), time.process_time(), server_cpu


def _run_once(predictor, video: str, objects: int, size, clock: Clock, raw_http=None):
    """One prompted session, one forward propagation; per frame: (wall, own CPU, server
    CPU) seconds. ``raw_http``: read the NDJSON lines with httpx instead of the client."""
    sid = _prompted(predictor, video, objects, *size)
    request = {"type": "propagate_in_video", "session_id": sid, "propagation_direction": "forward"}
    before = clock.now()
    if raw_http is None:
        count = sum(1 for _ in predictor.handle_stream_request(request))
    else:
        with raw_http.stream("POST", "/v1/requests/stream", json=request) as response:
            count = sum(1 for line in response.iter_lines() if line and json.loads(line))
    after = clock.now()
    predictor.handle_request({"type": "close_session", "session_id": sid})
    return tuple((b - a) / count for a, b in zip(before, after))


def bench_overhead(args: argparse.Namespace) -> list[str]:
    import httpx
    import torch

    from sam3video.client import RemotePredictor

    torch.set_num_threads(args.threads)
    height, width = 240, 320
    size = (height, width)
    video = synthetic_video(args.frames, height, width)
    predictor = tiny_predictor()
    runs: dict[str, list[tuple[float, float, float]]] = {"local": [], "client": [], "raw": []}
    with ServerProcess(CACHE, args.threads, workers=1) as server:
        remote = RemotePredictor(server.url)
        http = httpx.Client(base_url=server.url, timeout=None)
        paths = {
            "local": lambda: _run_once(predictor, str(video), args.objects, size, Clock()),
            "client": lambda: _run_once(remote, video.name, args.objects, size, Clock(server)),
            "raw": lambda: _run_once(
                remote, video.name, args.objects, size, Clock(server), raw_http=http
            ),
        }
        for run in paths.values():
            run()  # warm-up (first-call costs)
        for _ in range(args.repeats):  # interleaved, so machine load hits all three alike
            for name, run in paths.items():
                runs[name].append(run())
        remote.shutdown()
        http.close()

    def col(name: str, k: int) -> float:
        return median([r[k] for r in runs[name]])

    wall, cpu = col("local", 0), col("local", 1)
    rows = [["in-process predictor", 1e3 * wall, 1.0, 1e3 * cpu, "", 1.0]]
    for name, label in (
        ("raw", "server, NDJSON lines read (json.loads)"),
        ("client", "server, RemotePredictor (masks decoded)"),
    ):
        server_cpu = col(name, 2)
        rows.append(
            [
                label,
                1e3 * col(name, 0),
                col(name, 0) / wall,
                1e3 * server_cpu,
                1e3 * col(name, 1),
                server_cpu / cpu,
            ]
        )
    return [
        "### Per streamed frame: server over loopback vs in-process",
        "",
        *markdown_table(
            [
                "path",
                "wall ms / frame",
                "wall ratio",
                "server (or in-process) CPU ms / frame",
                "client CPU ms / frame",
                "CPU ratio",
            ],
            rows,
        ),
        "",
        f"Medians of {args.repeats} interleaved runs per path after one warm-up. Tiny model, "
        f"CPU, {args.threads} torch thread(s) and OMP_NUM_THREADS={args.threads} on both "
        f"sides; a {width}x{height} synthetic video of {args.frames} frames, {args.objects} "
        "clicked objects, forward propagation; the server (1 model worker) runs in a "
        "subprocess on the same machine. The CPU ratio (the server process's CPU time over "
        "the in-process run's) is what the server adds to the predictor's work; the wall ratio "
        "also holds the client's process competing for the same cores. Target: at most 1.05.",
    ]


# ------------------------------------------------------------------------------------ load


def _client_loop(url: str, video: str, deadline: float, seed: int, out: dict) -> None:
    import httpx

    rng = random.Random(seed)
    prompts, frames, errors = [], [], []
    with httpx.Client(base_url=url, timeout=120) as http:
        try:
            response = http.post("/v1/sessions", json={"resource_path": video})
            response.raise_for_status()
            info = response.json()
            sid, n = info["session_id"], info["num_frames"]
            height, width = info["height"], info["width"]
        except Exception as exc:  # noqa: BLE001 - counted
            out[seed] = {"prompts": [], "frames": [], "errors": [repr(exc)], "sid": None}
            return
        obj_id = None
        while time.monotonic() < deadline:
            try:
                frame = rng.randrange(n)
                body = {
                    "frame_index": frame,
                    "points": [[rng.randrange(width), rng.randrange(height)]],
                    "point_labels": [1],
                }
                if obj_id is not None:
                    body["obj_id"] = obj_id
                start = time.perf_counter()
                response = http.post(f"/v1/sessions/{sid}/prompts", json=body)
                prompts.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
                obj_id = (
                    int(next(iter(response.json()["outputs"]), 0)) if obj_id is None else obj_id
                )
                options = {"propagation_direction": "forward", "max_frame_num_to_track": 4}
                last = time.perf_counter()
                with http.stream("POST", f"/v1/sessions/{sid}/propagate", json=options) as r:
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.read()[:200]!r}")
                        continue
                    for line in r.iter_lines():
                        if not line:
                            continue
                        if "error" in json.loads(line):
                            errors.append(line[:200])
                        now = time.perf_counter()
                        frames.append(now - last)
                        last = now
            except Exception as exc:  # noqa: BLE001 - counted
                errors.append(repr(exc))
    out[seed] = {"prompts": prompts, "frames": frames, "errors": errors, "sid": sid}


def bench_load(args: argparse.Namespace) -> list[str]:
    import httpx

    video = synthetic_video(32, 180, 320)
    with ServerProcess(CACHE, args.threads, workers=args.workers) as server:
        time.sleep(1.0)
        baseline = server.rss_mib()
        results: dict[int, dict] = {}
        deadline = time.monotonic() + args.seconds
        threads = [
            threading.Thread(
                target=_client_loop, args=(server.url, video.name, deadline, k, results)
            )
            for k in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(2.0)  # the sessions are idle now
        loaded = server.rss_mib()
        with httpx.Client(base_url=server.url) as http:
            infos = [
                http.get(f"/v1/sessions/{r['sid']}").json() for r in results.values() if r["sid"]
            ]
            workers = [
                line
                for line in http.get("/metrics").text.splitlines()
                if line.startswith("sam3video_workers ")
            ]
    prompts = [t for r in results.values() for t in r["prompts"]]
    frames = [t for r in results.values() for t in r["frames"]]
    errors = [e for r in results.values() for e in r["errors"]]
    own = [sum(v for k, v in i["memory"].items() if k.endswith("_bytes")) for i in infos]

    def pct(xs: list[float], q: float) -> float:
        return 1e3 * float(np.percentile(xs, q)) if xs else float("nan")

    rows = [
        ["add_prompt (click)", len(prompts), pct(prompts, 50), pct(prompts, 95)],
        ["streamed frame", len(frames), pct(frames, 50), pct(frames, 95)],
    ]
    lines = [
        f"### Load: {args.clients} clients on {args.clients} sessions for {args.seconds:g} s",
        "",
        *markdown_table(["request", "count", "p50 ms", "p95 ms"], rows),
        "",
        f"- errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""),
        f"- server RSS: {baseline:.0f} MiB with the model loaded, {loaded:.0f} MiB with "
        f"{len(infos)} idle sessions after the load: {(loaded - baseline) / max(len(infos), 1):.1f}"
        " MiB per idle session (the weights are in the baseline, once)",
        f"- the sessions' own accounting (tracker state, cached outputs): "
        f"{median(own) / 2**20:.2f} MiB per session (median)",
        f"- {workers[0] if workers else 'workers: ?'}; tiny model, CPU, "
        f"{args.threads} torch thread(s); each client: a click on a random frame of a 320x180, "
        "32-frame video, then a forward propagation of 4 frames from it, repeated",
    ]
    return lines


# ------------------------------------------------------------------------------------ click


def bench_click(args: argparse.Namespace) -> list[str]:
    import torch

    from sam3video import Sam3VideoPredictor
    from sam3video.model.build import build_sam3_video_model

    torch.set_num_threads(args.threads)
    model = build_sam3_video_model("full", None, device="cpu", dtype=torch.float32)
    predictor = Sam3VideoPredictor(model=model, device="cpu", dtype=torch.float32)
    height, width = 272, 640
    video = synthetic_video(4, height, width)
    trunk = model.detector.backbone.vision_backbone.trunk
    passes = []
    trunk.register_forward_hook(lambda *a: passes.append(1))
    sid = predictor.handle_request({"type": "start_session", "resource_path": str(video)})[
        "session_id"
    ]

    def click(x: float, y: float, obj_id: int | None = None) -> float:
        request = {
            "type": "add_prompt",
            "session_id": sid,
            "frame_index": 0,
            "points": [[x, y]],
            "point_labels": [1],
        }
        if obj_id is not None:
            request["obj_id"] = obj_id
        start = time.perf_counter()
        predictor.handle_request(request)
        return time.perf_counter() - start

    first = click(320, 136)  # computes the frame's features
    first_passes = len(passes)
    times, counts = [], []
    for k in range(args.click_repeats):
        before = len(passes)
        times.append(click(300 + 10 * k, 120, obj_id=0))  # refine the object on that frame
        counts.append(len(passes) - before)
    before = len(passes)
    new_object = click(100, 60)
    new_passes = len(passes) - before
    with flop_counter() as counter:
        click(310, 130, obj_id=0)
    flops = counter.get_total_flops()
    rate = gemm_rate()
    bound = flops / rate
    rows = [
        ["first click (computes the frame's features)", first, first_passes, "", ""],
        [
            "refining click on the viewed frame (median)",
            median(times),
            max(counts),
            flops / 1e9,
            median(times) / bound,
        ],
        ["new object by a click on the viewed frame", new_object, new_passes, "", ""],
    ]
    return [
        "### Interactive click at full size (CPU, float32, synthetic weights)",
        "",
        *markdown_table(["click", "s", "trunk passes", "GFLOP", "time / FLOP bound"], rows),
        "",
        f"FLOP bound = the click's counted FLOPs / the fp32 GEMM rate measured right after "
        f"({rate / 1e9:.0f} GFLOP/s, {args.threads} thread(s)); {args.click_repeats} refining "
        f"clicks on frame 0 of a {width}x{height} video.",
    ]


# ------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["rle", "overhead", "load"],
        choices=["rle", "overhead", "load", "click"],
    )
    parser.add_argument("--click", action="store_true", help="add the full-size click part")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (each side)")
    parser.add_argument("--frames", type=int, default=48, help="overhead: frames per run")
    parser.add_argument("--objects", type=int, default=3, help="overhead: clicked objects")
    parser.add_argument("--repeats", type=int, default=5, help="overhead: runs per path")
    parser.add_argument("--clients", type=int, default=16, help="load: clients = sessions")
    parser.add_argument("--seconds", type=float, default=60, help="load: duration")
    parser.add_argument("--workers", type=int, default=None, help="load: server workers")
    parser.add_argument("--click-repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != str(args.threads):
        # The same thread settings as the server subprocess: torch.set_num_threads alone
        # leaves OpenMP's pool at its default (here: 1.7x slower tiny frames at 1 thread).
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    parts = list(args.parts) + (["click"] if args.click and "click" not in args.parts else [])
    lines: list[str] = []
    for part in parts:
        print(f"running {part}...", file=sys.stderr, flush=True)
        lines += {
            "rle": lambda: bench_rle(),
            "overhead": lambda: bench_overhead(args),
            "load": lambda: bench_load(args),
            "click": lambda: bench_click(args),
        }[part]()
        lines.append("")
    report("sam3video serve", lines, record=not args.no_record, threads=args.threads)


if __name__ == "__main__":
    main()
