"""Per-frame latency of a video session, split into backbone, detector heads, tracker,
planning and post-processing, for N clicked objects.

    python benchmarks/latency.py --model tiny --objects 1 4 16 --frames 8
    python benchmarks/latency.py --model full --objects 1 --frames 2      # ~1-2 min per frame

Scenario (per object count N), on the first frames of shared/data/videos/bikes.mp4 (JPEG
folder, 640x272):

1. text prompt ``--text`` on frame 0 (the detector then runs on every frame);
2. N clicks on frame 0, each a new object (each click creates its own tracker state, as the
   product and the official code do for clicked objects);
3. full propagation over frames 0..K (no frame was detected since the text prompt, so the
   session detects and tracks every frame with every tracker state, i.e. the steady state of
   a video with N objects). Births are switched off (``new_det_thresh`` above 1) so that
   exactly N objects are tracked whatever the synthetic weights detect.

Frame 0 is the prompt frame (its tracker outputs are the clicks' cached ones); the reported
per-frame numbers are medians over frames ``--steady-from``..K (default 1..K; the memory bank
is full from frame 7 on: 1 prompted + 6 tracked frames, so ``--frames 9 --steady-from 7`` is
the steady state of a long video). The parts are the session's own stages, reported to its
step observers (`VideoSession.observers`, `StepEvent.stages`; nothing is wrapped or patched):

- backbone: decode, ViT and both necks (once per frame);
- detector: the concept heads (fusion encoder, decoder, scoring, segmentation head), mask NMS;
- tracker: every tracker state's step (objects batched across states), the deferred memory
  encoding, reconditioning and newborn states;
- planning: ``plan_frame`` (association, hotstart, suppression);
- post: the rest of the step (hole filling, upsampling to video size, the bit-packed
  ledger). Output formatting runs when a frame is released and is not in the step.

With ``--flops`` each part's FLOPs are counted live and its time is reported as a multiple of
its FLOP bound (FLOPs / this run's fp32 GEMM rate). The bound is taken on the **model's**
FLOPs, the textbook computation of the official code: on the CPU sam3video's memory
cross-attention applies the value projection after the attention (`RoPEAttention`), which
executes fewer FLOPs for the same result; a forward hook adds the difference back, and the
executed count is reported beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
import warnings

import numpy as np
import torch
from _bench import (
    bikes_jpeg_folder,
    click_points,
    flop_counter,
    gemm_rate,
    markdown_table,
    median,
    peak_rss_mib,
    report,
)

from sam3video.io.frames import open_frames
from sam3video.model.build import build_sam3_video_model
from sam3video.model.memory_attention import MemoryAttention, RoPEAttention
from sam3video.video.planner import VideoHeuristics
from sam3video.video.session import VideoSession

PARTS = ("backbone", "detector", "tracker", "planning", "post")
STAGE_PART = {
    "backbone": "backbone",
    "detector": "detector",
    "tracker": "tracker",
    "plan": "planning",
    "post": "post",
}
FOLDED = [0.0]  # running total of textbook-minus-executed FLOPs (see count_folded_flops)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class StepRecorder:
    """Per-frame seconds (and FLOPs) of the session's detect steps, from its step observers.

    ``observe`` is a `VideoSession.observers` entry (one `StepEvent` per step); ``stage`` a
    `VideoSession.stage_listeners` entry that charges the FLOPs counted since the last stage
    boundary to the stage that just ended. ``rate`` (optional) measures the GEMM rate after
    each step, i.e. right before the next frame (outside every step's timing).
    """

    def __init__(self, flops=None, rate=None) -> None:
        self.flops, self.rate = flops, rate
        self.records: dict[int, dict[str, float]] = {}
        self.flop_records: dict[int, dict[str, float]] = {}
        self.folded_records: dict[int, float] = {}
        self.rate_records: dict[int, float] = {}
        self._pending = {p: 0.0 for p in PARTS}
        self._mark = self._folded = 0.0

    def stage(self, name: str) -> None:
        if self.flops is None:
            return
        total = self.flops()
        if name == "":  # a step begins
            self._pending = {p: 0.0 for p in PARTS}
            self._folded = FOLDED[0]
        else:
            self._pending[STAGE_PART[name]] += total - self._mark
        self._mark = total

    def observe(self, event) -> None:
        if event.kind == "detect":
            f = event.frame_index
            record = {p: 0.0 for p in PARTS}
            for name, secs in event.stages.items():
                record[STAGE_PART[name]] += secs
            record["post"] += event.seconds - sum(event.stages.values())  # step bookkeeping
            self.records[f] = record
            counted = self.flops is not None
            self.flop_records[f] = self._pending if counted else {p: 0.0 for p in PARTS}
            self.folded_records[f] = FOLDED[0] - self._folded if counted else 0.0
        if self.rate is not None:  # the GEMM rate right before the next frame (untimed)
            self.rate_records[event.frame_index + (-1 if event.reverse else 1)] = self.rate()


def count_folded_flops(model: torch.nn.Module) -> None:
    """Add to `FOLDED` the FLOPs that sam3video saves against the textbook computation:
    folded value projections and the first self-attention shared by the objects of a frame.

    Textbook: values projected on the Lk keys (2 Lk m C) and ``attn @ v`` over C channels
    (2 Lq Lk C). Folded: ``attn @ memories`` per head over m channels (2 H Lq Lk m) and the
    value projection on the Lq outputs (2 Lq m C).
    """

    def hook(module: RoPEAttention, args, output) -> None:
        if not module._folds_values(output):
            return
        (b, lq, _), lk = args[0].shape, args[1].shape[1]
        c, m, h = module.internal_dim, module.kv_in_dim, module.num_heads
        textbook = 2 * b * lk * m * c + 2 * b * lq * lk * c
        executed = 2 * b * h * lq * lk * m + 2 * b * lq * m * c
        FOLDED[0] += textbook - executed

    def shared_frame_hook(module: MemoryAttention, args, output) -> None:
        # The first self-attention runs once for objects that share the frame: the textbook
        # model runs it per object (4 C x C projections and QK^T, attn @ V over n tokens).
        src, src_pos = args[0], args[1]
        b, n, c = src.shape
        if b > 1 and src.stride(0) == 0 and src_pos.stride(0) == 0:
            FOLDED[0] += (b - 1) * (8 * n * c * c + 4 * n * n * c)

    for module in model.modules():
        if isinstance(module, RoPEAttention):
            module.register_forward_hook(hook)
        elif isinstance(module, MemoryAttention):
            module.register_forward_hook(shared_frame_hook)


def build_model(config: str, dtype: torch.dtype):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam3_video_model(config, None, device="cpu", dtype=dtype)
    return model, time.perf_counter() - t0


@torch.inference_mode()  # as the predictor's public methods (the session leaves it to callers)
def run_case(
    model,
    dtype,
    folder,
    n_objects: int,
    n_frames: int,
    text: str | None,
    count_flops: bool = False,
    steady_from: int = 1,
) -> dict:
    frames = open_frames(folder)
    heuristics = dataclasses.replace(VideoHeuristics(), new_det_thresh=1.01)  # no births
    session = VideoSession("bench", model, frames, heuristics=heuristics, dtype=dtype)

    t0 = time.perf_counter()
    if text is not None:
        session.add_concept_prompt(0, text, None)
    t_text = time.perf_counter() - t0
    t0 = time.perf_counter()
    for x, y in click_points(n_objects, frames.height, frames.width):
        session.add_points(0, np.array([[x, y]]), np.array([1]), None)
    t_clicks = time.perf_counter() - t0

    # No frame was detected since the text prompt: the propagation detects and tracks every
    # frame with every object (the ledger decides; see VideoSession.propagate).
    counter = flop_counter() if count_flops else contextlib.nullcontext()
    rec = StepRecorder(
        flops=(lambda: counter.get_total_flops() + FOLDED[0]) if count_flops else None,
        rate=(lambda: gemm_rate(seconds=1.0)) if count_flops else None,
    )
    session.observers.append(rec.observe)
    session.stage_listeners.append(rec.stage)
    if count_flops:
        rec.rate_records[0] = gemm_rate(seconds=1.0)
    t0 = time.perf_counter()
    with counter:
        yielded = sum(1 for _ in session.propagate(0, n_frames, [False]))
    t_prop = time.perf_counter() - t0
    final_rate = gemm_rate(seconds=1.0) if count_flops else None
    frames.close()
    session.records, session.flop_records = rec.records, rec.flop_records
    session.folded_records, session.rate_records = rec.folded_records, rec.rate_records
    first = max(steady_from, 1)
    steady_idx = [f for f in sorted(session.records) if f >= first]
    steady = [session.records[f] for f in steady_idx]
    split = {p: median([r[p] for r in steady]) for p in PARTS}
    split_flops = {p: median([session.flop_records[f][p] for f in steady_idx]) for p in PARTS}
    folded = median([session.folded_records.get(f, 0.0) for f in steady_idx])
    ratios, bounds, rates = {}, {}, []
    if count_flops:
        # Each frame against the GEMM rate measured right before and right after it (the
        # better of the two): the machine's speed drifts by +-10% over a long run.
        for f in steady_idx:
            rates.append(max(session.rate_records[f], session.rate_records.get(f + 1, final_rate)))
        for p in (*PARTS, "frame"):
            per_frame = []
            for f, rate in zip(steady_idx, rates):
                flops = (
                    sum(session.flop_records[f].values())
                    if p == "frame"
                    else (session.flop_records[f][p])
                )
                secs = sum(session.records[f].values()) if p == "frame" else session.records[f][p]
                per_frame.append((flops / rate, secs))
            bounds[p] = median([b for b, _ in per_frame])
            ratios[p] = median([t / b if b else float("nan") for b, t in per_frame])
    totals = [sum(r.values()) for r in steady]
    return {
        "objects": n_objects,
        "tracked": len(session.obj_ids),
        "states": len(session.states),
        "frames": len(steady),
        "yielded": yielded,
        "text_prompt_s": t_text,
        "clicks_s": t_clicks,
        "propagation_s": t_prop,
        "frame_s": median(totals),
        "frame_min_s": min(totals) if totals else float("nan"),
        **split,
        "flops": split_flops if count_flops else None,
        "folded_flops": folded if count_flops else None,
        "bounds": bounds,
        "ratios": ratios,
        "rates": rates,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--dtype", choices=list(DTYPES), default="float32")
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--frames", type=int, default=None, help="propagated frames after frame 0")
    ap.add_argument("--text", default="person", help="text prompt; '' for clicks only")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: see README)")
    ap.add_argument(
        "--flops",
        action="store_true",
        help="count each part's FLOPs during the propagation (FlopCounterMode) and "
        "report time / FLOP bound at this run's fp32 GEMM rate",
    )
    ap.add_argument(
        "--steady-from",
        type=int,
        default=1,
        help="medians over frames F..K (7: a full memory bank)",
    )
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_frames = args.frames if args.frames is not None else (2 if args.model == "full" else 8)
    dtype = DTYPES[args.dtype]
    folder = bikes_jpeg_folder(n_frames + 1)
    model, t_build = build_model(args.model, dtype)
    if args.flops:
        count_folded_flops(model)
    print(f"model {args.model} {args.dtype} built in {t_build:.1f} s", flush=True)
    rates = [gemm_rate()] if args.flops else []
    rows = []
    for n in args.objects:
        r = run_case(
            model, dtype, folder, n, n_frames, args.text or None, args.flops, args.steady_from
        )
        print(r, flush=True)
        rows.append(r)
    if args.flops:
        rates.append(gemm_rate())
    header = [
        "clicked",
        "tracked",
        "states",
        "frames",
        "frame s (median)",
        *[f"{p} s" for p in PARTS],
        "text prompt s",
        "clicks s",
    ]
    table = [
        [
            r["objects"],
            r["tracked"],
            r["states"],
            r["frames"],
            r["frame_s"],
            *[r[p] for p in PARTS],
            r["text_prompt_s"],
            r["clicks_s"],
        ]
        for r in rows
    ]
    lines = markdown_table(header, table)
    if args.flops:
        bound_rows = []
        for r in rows:
            parts = [*PARTS, "frame"]
            flops = {**r["flops"], "frame": sum(r["flops"].values())}
            executed = dict(flops)
            executed["tracker"] -= r["folded_flops"]
            executed["frame"] -= r["folded_flops"]
            secs = {**{p: r[p] for p in PARTS}, "frame": r["frame_s"]}
            for p in parts:
                bound_rows.append(
                    [
                        r["objects"],
                        r["tracked"],
                        p,
                        flops[p] / 1e9,
                        executed[p] / 1e9,
                        secs[p],
                        r["bounds"][p],
                        r["ratios"][p],
                    ]
                )
        frame_rates = [x for r in rows for x in r["rates"]]
        lines += [
            "",
            *markdown_table(
                [
                    "clicked",
                    "tracked",
                    "part",
                    "GFLOP (model)",
                    "GFLOP (executed)",
                    "measured s",
                    "FLOP bound s",
                    "measured / bound",
                ],
                bound_rows,
            ),
        ]
        lines += [
            "",
            f"FLOPs counted live (FlopCounterMode: matmul/conv/attention; element-"
            f"wise ops not counted), medians over frames {args.steady_from}..{n_frames}; "
            f"model = the textbook computation (executed + what sam3video saves: folded "
            f"value projections, the first self-attention shared by a frame's objects); "
            f"the bound is on it, each frame at the fp32 GEMM rate (2048^3, "
            f"{args.threads} thread(s)) measured right before / after it, the better of "
            f"the two ({min(frame_rates) / 1e9:.1f}-{max(frame_rates) / 1e9:.1f} GFLOP/s "
            f"over these frames; {', '.join(f'{x / 1e9:.1f}' for x in rates)} GFLOP/s at "
            f"the start / end of the run).",
        ]
    lines += [
        "",
        f"Model {args.model}, {args.dtype}, synthetic weights, bikes 640x272 JPEG frames, text "
        f"prompt {args.text!r} + N clicks on frame 0, full propagation over {n_frames} more "
        f"frames (medians over frames {args.steady_from}..{n_frames}); build {t_build:.1f} s; "
        f"peak RSS {peak_rss_mib():.0f} MiB.",
    ]
    report(f"latency ({args.model}, {args.dtype})", lines, not args.no_record)


if __name__ == "__main__":
    main()
