"""Frame decoding throughput of both video loaders, with and without prefetch.

    python benchmarks/decode.py                       # every video of shared/data/videos
    python benchmarks/decode.py --work-ms 0 20        # also with 20 ms of "model" per frame

For each video, loader (``cv2``, ``pyav``) and prefetch (off, on), a fresh
`sam3video.io.frames.open_frames` source is read:

- forward: frames 0..n-1 in order (``--max-frames`` caps n), as a forward propagation does;
- backward: the last ``--backward`` frames of that range in reverse, as a backward
  propagation does (exercises the group-of-pictures window cache);

and, when ``--work-ms`` lists a positive value, forward again with that much simulated model
time per frame (``time.sleep``, which releases the GIL like a real forward does), to show how
much decoding prefetch hides: "overhead" is the wall time beyond the simulated work, per
frame. Opening time (index probe; the index is cached per file after the first open in a
process) is reported separately.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (  # noqa: E402
    VIDEOS,
    markdown_table,
    report,
)

from sam3video.io.frames import open_frames  # noqa: E402


def read(source, order, work_s: float) -> float:
    t0 = time.perf_counter()
    for i in order:
        frame = source[i]
        del frame
        if work_s:
            time.sleep(work_s)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", nargs="*", type=Path, default=None)
    ap.add_argument("--max-frames", type=int, default=250)
    ap.add_argument("--backward", type=int, default=60)
    ap.add_argument("--work-ms", type=float, nargs="+", default=[0, 20])
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    videos = args.videos or sorted(p for p in VIDEOS.iterdir() if p.suffix in (".mp4", ".avi"))
    rows = []
    for video in videos:
        for loader in ("cv2", "pyav"):
            for prefetch in (False, True):
                t0 = time.perf_counter()
                src = open_frames(video, loader=loader, prefetch=prefetch)
                t_open = time.perf_counter() - t0
                n = min(len(src), args.max_frames)
                fwd = read(src, range(n), 0.0)
                src.close()
                src = open_frames(video, loader=loader, prefetch=prefetch)
                back = list(range(n - 1, max(n - 1 - args.backward, -1), -1))
                src[back[0]]  # position the decoder at the end of the range first
                bwd = read(src, back[1:], 0.0)
                src.close()
                row = [video.name, f"{src.width}x{src.height}", loader,
                       "on" if prefetch else "off", t_open * 1000, n / fwd,
                       (len(back) - 1) / bwd]
                for work_ms in [w for w in args.work_ms if w > 0]:
                    src = open_frames(video, loader=loader, prefetch=prefetch)
                    m = min(n, 100)
                    wall = read(src, range(m), work_ms / 1000)
                    src.close()
                    row.append((wall / m - work_ms / 1000) * 1000)
                rows.append(row)
                print(row, flush=True)
    header = ["video", "size", "loader", "prefetch", "open ms", "forward frames/s",
              "backward frames/s"]
    header += [f"overhead ms/frame at {w:g} ms work" for w in args.work_ms if w > 0]
    lines = markdown_table(header, rows)
    lines += ["", f"Forward: first {args.max_frames} frames (or all); backward: "
              f"{args.backward} frames in reverse from the end of that range; overhead: "
              "first 100 frames with simulated per-frame work (time.sleep)."]
    report("decode", lines, not args.no_record)


if __name__ == "__main__":
    main()
