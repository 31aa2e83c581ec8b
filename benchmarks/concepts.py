"""Cost of K concepts per frame: one session with K noun phrases vs the upstream workaround
(K sessions, one concept each), against the bound backbone + K x detector heads.

Per K in ``--concepts`` (default 1 2 4 8): a session prompted with K noun phrases on frame 0,
then a forward propagation over ``--frames`` more frames; births are switched off
(``new_det_thresh`` above 1) so that every frame costs the same (no tracked objects: the
backbone and the K text-conditioned heads). Per propagated frame the session's step observers
(`VideoSession.observers`, `StepEvent.stages`) give the backbone and detector seconds.

Columns: ``frame`` = seconds per frame with K concepts in one session; ``bound`` = backbone +
K x heads, both measured with K = 1 in the same run; ``K sessions`` = K x the K = 1 frame (every
session runs its own backbone); the two ratios. Synthetic weights, float32.

    python benchmarks/concepts.py --model tiny               # seconds
    python benchmarks/concepts.py --model full --frames 2    # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings

import torch
from _bench import markdown_table, median, report, synthetic_video

from sam3video.model.build import build_sam3_video_model
from sam3video.predictor import Sam3VideoPredictor
from sam3video.video.session import StepEvent

PHRASES = ["person", "car", "dog", "bicycle", "tree", "house", "bird", "boat"]


def run(predictor: Sam3VideoPredictor, video: str, k: int, frames: int) -> dict[str, float]:
    """Median seconds per propagated frame: total, backbone, detector (K concepts)."""
    sid = predictor.handle_request({"type": "start_session", "resource_path": video})["session_id"]
    events: list[StepEvent] = []
    predictor.get_session(sid).observers.append(events.append)
    predictor.handle_request(
        {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": PHRASES[:k]}
    )
    for _ in predictor.handle_stream_request(
        {
            "type": "propagate_in_video",
            "session_id": sid,
            "propagation_direction": "forward",
            "max_frame_num_to_track": frames,
        }
    ):
        pass
    predictor.handle_request({"type": "close_session", "session_id": sid})
    steps = [e for e in events if e.frame_index > 0 and e.kind == "detect"]
    return {
        "frame": median([e.seconds for e in steps]),
        "backbone": median([e.stages.get("backbone", 0.0) for e in steps]),
        "detector": median([e.stages.get("detector", 0.0) for e in steps]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--frames", type=int, default=3, help="propagated frames per run")
    parser.add_argument("--concepts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Synthetic weights at either size (the full preset would otherwise ask for sam3.pt).
        model = build_sam3_video_model(args.model, None, device="cpu", dtype=torch.float32)
        predictor = Sam3VideoPredictor(model=model, device="cpu", dtype=torch.float32)
    predictor.heuristics = dataclasses.replace(predictor.heuristics, new_det_thresh=1.01)
    video = str(synthetic_video(args.frames + 1))

    results = {k: run(predictor, video, k, args.frames) for k in args.concepts}
    one = results.get(1) or run(predictor, video, 1, args.frames)
    rows = []
    for k, r in results.items():
        bound = one["backbone"] + k * one["detector"]
        separate = k * one["frame"]
        rows.append(
            [
                k,
                f"{r['frame']:.3f}",
                f"{r['backbone']:.3f}",
                f"{r['detector']:.3f}",
                f"{bound:.3f}",
                f"{r['frame'] / bound:.2f}x",
                f"{separate:.3f}",
                f"{separate / r['frame']:.2f}x",
            ]
        )
    lines = [
        f"model {args.model}, float32, synthetic weights, {args.frames} propagated frames per "
        "K (medians), births off; seconds per frame",
        "",
        *markdown_table(
            [
                "K concepts",
                "frame",
                "backbone",
                "detector heads",
                "bound (backbone + K x heads at K=1)",
                "frame / bound",
                "K sessions",
                "K sessions / one session",
            ],
            rows,
        ),
    ]
    report(
        f"Concepts per frame ({args.model})", lines, record=not args.no_record, threads=args.threads
    )


if __name__ == "__main__":
    main()
