"""What a live session gives up: the hotstart buffer (no lookahead), measured against an
offline propagation of the same clip.

The same frames, the same text prompt on frame 0: (a) offline, the default heuristics
(hotstart buffer of 15 frames: objects the hotstart rule removes are hidden from the frames
already processed); (b) a live session fed frame by frame (`add_frame`, hotstart buffer off).
Reported: frames whose outputs differ, object-frames shown live that offline hides, object
ids seen, and seconds per frame of each. Synthetic weights: the numbers show the mechanism,
not the quality of real masks.

    python benchmarks/live.py --model tiny --frames 60
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from _bench import markdown_table, report, synthetic_video

from sam3video.io import open_frames
from sam3video.predictor import Sam3VideoPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--text", default="person")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = Sam3VideoPredictor(model_config=args.model, device="cpu", dtype=torch.float32)
    video = str(synthetic_video(args.frames))

    t0 = time.perf_counter()
    sid = p.handle_request({"type": "start_session", "resource_path": video})["session_id"]
    p.handle_request({"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": args.text})
    offline = {
        r["frame_index"]: r["outputs"]
        for r in p.handle_stream_request(
            {"type": "propagate_in_video", "session_id": sid, "propagation_direction": "forward"}
        )
    }
    t_offline = time.perf_counter() - t0

    t0 = time.perf_counter()
    live: dict[int, dict] = {}
    lsid = p.handle_request({"type": "start_session", "live": True})["session_id"]
    with open_frames(video) as frames:
        for i in range(len(frames)):
            reply = p.handle_request({"type": "add_frame", "session_id": lsid, "frame": frames[i]})
            if i == 0:
                reply = p.handle_request(
                    {"type": "add_prompt", "session_id": lsid, "frame_index": 0, "text": args.text}
                )
            live[i] = reply["outputs"]
    t_live = time.perf_counter() - t0

    differ = sum(
        1
        for f in offline
        if sorted(offline[f]) != sorted(live.get(f, {}))
        or any((offline[f][i]["mask"] != live[f][i]["mask"]).any() for i in offline[f])
    )
    hidden = sum(len(set(live.get(f, {})) - set(offline[f])) for f in offline)
    shown = sum(len(out) for out in live.values())
    ids_off = sorted({i for out in offline.values() for i in out})
    ids_live = sorted({i for out in live.values() for i in out})
    n = len(offline)
    rows = [
        ["offline, hotstart buffer 15", f"{t_offline / n:.3f}", ids_off, "-", "-"],
        [
            "live (add_frame), buffer off",
            f"{t_live / n:.3f}",
            ids_live,
            f"{differ}/{n}",
            f"{hidden} of {shown}",
        ],
    ]
    lines = [
        f"model {args.model}, {n} frames, text {args.text!r} on frame 0, synthetic weights",
        "",
        *markdown_table(
            [
                "run",
                "s/frame",
                "object ids seen",
                "frames differing from offline",
                "object-frames shown live that offline hides",
            ],
            rows,
        ),
    ]
    report(
        f"Live vs offline ({args.model})", lines, record=not args.no_record, threads=args.threads
    )


if __name__ == "__main__":
    main()
