"""Shared helpers of the benchmark scripts (not part of the product, never imported by it).

- `machine_info()`: CPU model and SIMD flags, torch version, threads, load average.
- `append_results(title, lines)`: appends a dated section to ``benchmarks/RESULTS.md``.
- `SplitTimer`: exclusive (self-time) timing of nested named regions, so that a backbone call
  made from inside the detector counts as backbone only.
- `bikes_jpeg_folder(n)`: the first ``n`` frames of ``shared/data/videos/bikes.mp4`` as a JPEG
  folder (the input both implementations read identically; the official cv2 MP4 loader skips
  the /255 scaling, sam3 issue #493, so MP4 is not used for side-by-side runs).
- `synthetic_video(path, n)`: a small MP4 of ``n`` moving-pattern frames (memory runs).

Runs under the project's python and under the reference venv's python (no sam3video import).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SHARED = ROOT.parent / "shared"
VIDEOS = SHARED / "data" / "videos"
RESULTS = BENCH / "RESULTS.md"
CACHE = Path(os.environ.get("SAM3VIDEO_BENCH_CACHE", "/tmp/sam3video_bench"))
REFERENCE_PYTHON = Path.home() / ".cache" / "sam3-reference-venv" / "bin" / "python"


# ------------------------------------------------------------------------------------ machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The SIMD flags that matter for GEMM speed (avx2, avx512*, amx*)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                keep = [f for f in flags if f == "avx2" or f.startswith(("avx512", "amx"))]
                return " ".join(sorted(keep)) or "none of avx2/avx512/amx"
    except OSError:
        pass
    return "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info(device: str = "cpu", threads: int | None = None) -> dict[str, str]:
    """Where and how a benchmark ran; ``threads``: the workers' torch threads if not ours."""
    import torch

    return {
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical cores visible)",
        "flags": cpu_flags(),
        "torch": torch.__version__,
        "threads": str(threads or torch.get_num_threads()),
        "device": device,
        "load average (1/5/15 min)": load_average(),
        "python": platform.python_version(),
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ------------------------------------------------------------------------------------ results


def markdown_table(header: list[str], rows: list[list[object]]) -> list[str]:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return lines


def append_results(title: str, info: dict[str, str], command: str, lines: list[str]) -> None:
    """Print ``lines`` and append them, dated, with the machine description to RESULTS.md."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = [f"## {title} — {stamp}", "", f"`{command}`", ""]
    section += [f"- {k}: {v}" for k, v in info.items()]
    section += ["", *lines, ""]
    text = "\n".join(section)
    print(text)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in this folder.\n\n")
    with RESULTS.open("a") as f:
        f.write(text + "\n")


def report(title: str, lines: list[str], record: bool = True, threads: int | None = None) -> None:
    """Print ``lines``; with ``record``, append them as a dated RESULTS.md section with the
    machine description (``threads``: the workers' torch threads when not this process's)."""
    if not record:
        print("\n".join(lines))
        return
    append_results(title, machine_info(threads=threads), command_line(), lines)


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


# ------------------------------------------------------------------------------------ timing


class SplitTimer:
    """Exclusive time per named region; regions nest (time of a child is not its parent's).

    ``with timer("backbone"): ...`` adds the region's self-time to ``timer.current`` (a dict
    name -> seconds), which the caller swaps per frame with `frame`. With ``flops`` set (a
    callable returning a running FLOP total, e.g. a live ``FlopCounterMode``'s), each
    region's exclusive FLOPs go to ``timer.current_flops`` the same way.
    """

    def __init__(self) -> None:
        self._stack: list[list[float]] = []  # [start, child seconds, start flops, child flops]
        self.current: dict[str, float] = defaultdict(float)
        self.current_flops: dict[str, float] = defaultdict(float)
        self.flops = None

    @contextmanager
    def __call__(self, name: str):
        flops = self.flops() if self.flops else 0
        entry = [time.perf_counter(), 0.0, flops, 0]
        self._stack.append(entry)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = time.perf_counter() - entry[0]
            self.current[name] += elapsed - entry[1]
            counted = (self.flops() - entry[2]) if self.flops else 0
            self.current_flops[name] += counted - entry[3]
            if self._stack:
                self._stack[-1][1] += elapsed
                self._stack[-1][3] += counted

    @contextmanager
    def frame(self, record: dict[str, float], flops_record: dict[str, float] | None = None):
        """Charge the regions run inside to ``record`` (e.g. one frame's splits)."""
        saved, self.current = self.current, record
        saved_flops = self.current_flops
        if flops_record is not None:
            self.current_flops = flops_record
        try:
            yield
        finally:
            self.current = saved
            self.current_flops = saved_flops


def flop_counter():
    """A ``FlopCounterMode`` that also counts the CPU flash-attention kernel (torch's
    registry knows the CUDA SDPA kernels, not ``_scaled_dot_product_flash_attention_for_cpu``,
    so attention on the CPU would count as zero)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_flash(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    cpu_kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return FlopCounterMode(display=False, custom_mapping={cpu_kernel: cpu_flash})


def gemm_rate(size: int = 2048, seconds: float = 2.0) -> float:
    """Best observed float32 matmul rate (FLOP/s) at the current torch thread count."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - t0))
    return best


def median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


# ------------------------------------------------------------------------------------ media


def bikes_jpeg_folder(num_frames: int) -> Path:
    """``num_frames`` consecutive frames of bikes.mp4 (640x272) as ``00000.jpg``... (cached)."""
    import av
    from PIL import Image

    folder = CACHE / f"bikes_{num_frames}"
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == num_frames:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with av.open(str(VIDEOS / "bikes.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == num_frames:
                break
            rgb = frame.to_ndarray(format="rgb24")
            Image.fromarray(rgb).save(folder / f"{i:05d}.jpg", quality=95)
    return folder


def synthetic_video(num_frames: int, height: int = 180, width: int = 320) -> Path:
    """An H.264 MP4 of ``num_frames`` moving gradients with a moving square (cached)."""
    import av

    path = CACHE / f"synthetic_{num_frames}_{width}x{height}.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "30"}
        for t in range(num_frames):
            img = np.empty((height, width, 3), np.uint8)
            img[..., 0] = (x + 2 * t) % 256
            img[..., 1] = (y + 3 * t) % 256
            img[..., 2] = 128
            cx = (t * 3) % (width - 40)
            img[60:100, cx : cx + 40] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)
    return path


def click_points(n: int, height: int, width: int) -> list[tuple[float, float]]:
    """``n`` distinct click positions (pixels) on a grid over the frame."""
    if n <= 0:
        return []
    cols = min(n, 4)
    rows = -(-n // cols)
    return [
        ((k % cols + 0.5) * width / cols, (k // cols + 0.5) * height / rows) for k in range(n)
    ]


def run_json(cmd: list[str], timeout: float | None = None) -> dict:
    """Run a benchmark worker that prints one JSON line last; return it parsed."""
    import json

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])
