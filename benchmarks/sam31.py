"""SAM 3 (our 3.0 path) vs SAM 3.1 (ours) vs the official SAM 3.1: per-frame time and model
FLOPs for N clicked objects, CPU, float32, one run.

    python benchmarks/sam31.py --model tiny                 # smoke, ~30 s (1 and 4 objects)
    python benchmarks/sam31.py --model full --measure30 1 4 --measure-ours31-clicks 1 4 \
        --measure-official-clicks 1 4 --measure-packed 1 16 128       # ~30 min, loaded 2 cores

What one frame costs (the level where the object count lives; no detector, clicked objects):
one backbone pass (ViT trunk + the tracker's neck: 3.0 ``sam2_convs``, 3.1
``propagation_convs`` and the SAM decoder's ``conv_s0``/``conv_s1``) + ONE tracking step of
all N objects with a FULL memory bank, memory encoding included (as the session's deferred
``update_memory`` does after planning).

The memory bank is CONSTRUCTED, not tracked: the objects are prompted on frame 0 (one click
each, or masks for the packed 3.1 layout), preflighted (frame 0's memory encoded), and their
frame-0 memories are stored again as tracked frames 1..15 (same tensors, no conditioning
objects). The step runs on frame 16: it reads the prompted frame + the 6 previous frames'
spatial memories (num_maskmem = 7) and 16 frames of object pointers (max_obj_ptrs_in_encoder),
the largest read either model makes. Every frame has the same features (one backbone output of
a seeded random image): the shapes, not the values, set the cost.

Implementations and layouts:

- ``3.0 ours``: `TrackingState` per clicked object (one state per click, as the product and
  the official 3.0 do), all states in one `track_states` batch;
- ``3.1 ours clicks``: `MultiplexTrackingState.add_points` per clicked object: a click on a new
  object gets a state of its own (official ``add_sam2_new_points``), i.e. N states of one
  bucket each (1 of 16 slots used); one `track_multiplex_states` batch of N buckets;
- ``3.1 ours packed``: the N objects in one state, ``ceil(N / 16)`` buckets (what detector
  births on one frame get, `place_births` + `add_masks`): the layout multiplexing is made for;
- ``3.1 ours clicks packed``: N clicks as in ``clicks`` (each decoded alone in a state of its
  own), each then joining a state of clicked objects with a free slot
  (`MultiplexTrackingState.join_object`, best fit by `place_births`: what
  ``Sam3VideoPredictor(pack_clicked_objects=True)`` does), i.e. ``ceil(N / 16)`` states of one
  bucket; measured at the ``--measure-packed`` counts (ours only, no official counterpart);
- ``3.1 official clicks`` / ``packed``: the official ``Sam3VideoTrackingMultiplexDemo`` (overlay
  at the pinned 3.1 release, `tools/reference/official_builders_31.py`), the same prompts
  through ``add_new_points`` / ``add_new_masks`` + ``propagate_in_video_preflight``, the bank
  built the same way in its ``output_dict``, and ``propagate_in_video`` of one frame per state
  (the official video logic loops over its states); its predictor's 16-object cap lives in the
  video logic, which this level does not use. Runs in the 3.1 reference interpreter
  (``~/.cache/sam3-reference-31/bin/python``, worker mode), after ours, never concurrently.

FLOPs are counted on the executed run (`FlopCounterMode`, matmul/conv/attention; elementwise
not counted). For 3.0 ours the model count adds back what the folded value projection and the
shared first self-attention save (`latency.count_folded_flops`); the 3.1 code folds nothing,
executed = model. The bound is FLOPs / the fp32 GEMM rate (2048^3, same threads) measured
right before and after each measured part (the better of the two). Object counts that are not
measured for an implementation (``--measure30``, ``--measure-ours31-clicks``,
``--measure-official-clicks``) are extrapolated linearly in N from its two largest measured
counts (time and FLOPs; FLOPs are affine in N here because every op is batched per object or
per bucket) and marked ``extrap.`` in the table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (  # noqa: E402
    ROOT,
    click_points,
    flop_counter,
    gemm_rate,
    markdown_table,
    peak_rss_mib,
    report,
)

PY31 = Path.home() / ".cache" / "sam3-reference-31" / "bin" / "python"
NUM_FRAMES = 32
LAST_TRACKED = 15  # tracked frames 1..15 in the bank (16 pointer frames with the prompt frame)
STEP_FRAME = 16
VIDEO_HW = (272, 640)  # bikes' size: clicks and the masks' video resolution
CONFIGS = {"tiny": ("tiny", "sam3.1-tiny"), "full": ("full", "sam3.1")}
RATE_SECONDS = [1.0]  # GEMM-rate probe length around each measured part (tiny: 0.2)


def seeded_image(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(31)
    return torch.randn(1, 3, size, size, generator=g)


def measure(fn, folded: list[float] | None = None) -> tuple[dict, object]:
    """Run ``fn`` once under a FLOP counter; seconds, FLOPs and the GEMM rate around it."""
    rate0 = gemm_rate(seconds=RATE_SECONDS[0])
    counter = flop_counter()
    start = folded[0] if folded else 0.0
    with counter:
        t0 = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t0
    rate1 = gemm_rate(seconds=RATE_SECONDS[0])
    executed = float(counter.get_total_flops())
    model = executed + ((folded[0] - start) if folded else 0.0)
    return {"s": secs, "flops": model, "executed": executed, "rate": max(rate0, rate1)}, out


def grid_masks(n: int, size: int) -> torch.Tensor:
    """``n`` disjoint rectangles on a ``size x size`` grid (packed-layout prompts)."""
    side = math.ceil(math.sqrt(n))
    cell = size // side
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for k in range(n):
        r, c = divmod(k, side)
        masks[k, r * cell + 1 : (r + 1) * cell - 1, c * cell + 1 : (c + 1) * cell - 1] = True
    return masks


def clicks(n: int) -> list[tuple[float, float]]:
    return click_points(n, *VIDEO_HW)


# ------------------------------------------------------------------------------------ ours


def run_ours(args) -> dict:
    import numpy as np
    from latency import count_folded_flops

    from sam3video.model.build import build_sam3_video_model
    from sam3video.video.multiplex_tracking import (
        MultiplexTrackingState,
        place_births,
        track_multiplex_states,
    )
    from sam3video.video.tracking import FeatureCache, TrackingState
    from sam3video.video.tracking_batch import track_states

    name30, name31 = CONFIGS[args.model]
    out: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model30 = build_sam3_video_model(name30, None, device="cpu")
    # the latency hooks add to latency.FOLDED; read it through that module
    import latency

    count_folded_flops(model30)
    image = seeded_image(model30.config.image_size)
    with torch.inference_mode():
        bb, neck = measure(
            lambda: model30.detector.backbone.forward_image(
                image, need_detector=False, need_tracker=True
            ),
            latency.FOLDED,
        )
        out["3.0 ours"] = {"backbone": bb, "steps": {}}
        feats = (neck.tracker_feats, neck.tracker_pos)
        cache = FeatureCache()
        for n in args.measure30:
            states = []
            for k, (x, y) in enumerate(clicks(n)):
                st = TrackingState(
                    model30.tracker, lambda t: feats, NUM_FRAMES, VIDEO_HW, feature_cache=cache
                )
                st.add_points(0, k, np.array([[x, y]]), np.array([1]))
                states.append(st)
            for st in states:
                st.preflight()
                mem = st._cond[0]
                for t in range(1, LAST_TRACKED + 1):
                    st._non_cond[t] = dataclasses.replace(mem, eff_iou_score=1.0)
            plan = states[0].memory_plan(STEP_FRAME, False)
            step, _ = measure(
                lambda states=states: track_states(states, STEP_FRAME, False, True),
                latency.FOLDED,
            )
            step["reads"] = [len(plan.spatial), len(plan.pointers)]
            out["3.0 ours"]["steps"][n] = step
            print(f"3.0 ours N={n}: {step}", flush=True)
            states = None
    model30 = neck = feats = cache = None  # free the 3.0 model before building 3.1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model31 = build_sam3_video_model(name31, None, device="cpu")
    vb, tm = model31.detector.backbone.vision_backbone, model31.tracker.model
    image = seeded_image(model31.config.image_size)
    with torch.inference_mode():

        def backbone31():
            o = vb(image, need_detector=False, need_propagation=True)
            return o, tm.prepare_propagation(o.propagation_feats, o.propagation_pos)

        bb, (o, prop) = measure(backbone31)
        # Clicks read the interactive pyramid: the propagation one's tensors stand in for it
        # (same shapes, so the same cost; values do not matter here): no second trunk pass.
        inter = tm.prepare_interactive(o.propagation_feats, o.propagation_pos)
        del o
        for key in ("3.1 ours clicks", "3.1 ours packed", "3.1 ours clicks packed"):
            out[key] = {"backbone": bb, "steps": {}}

        def get(t):
            return inter, prop

        side = tm.image_size // tm.backbone_stride * 16  # the mask-prompt size
        s = model31.config.image_size
        for layout, counts in (
            ("clicks", args.measure_ours31_clicks),
            ("packed", args.measure_packed),
            ("clicks packed", args.measure_packed),
        ):
            for n in counts:
                if layout in ("clicks", "clicks packed"):
                    states = []
                    for k, (x, y) in enumerate(clicks(n)):
                        st = MultiplexTrackingState(tm, get, NUM_FRAMES, video_size=VIDEO_HW)
                        pts = torch.tensor([[x * s / VIDEO_HW[1], y * s / VIDEO_HW[0]]])
                        st.add_points(0, k, pts, torch.tensor([1]))
                        where = place_births(states, 1) if layout == "clicks packed" else None
                        if where is None:
                            states.append(st)
                        else:
                            states[where].join_object(st)
                else:
                    st = MultiplexTrackingState(tm, get, NUM_FRAMES, video_size=VIDEO_HW)
                    st.add_masks(0, list(range(n)), grid_masks(n, side))
                    states = [st]
                for st in states:
                    st.preflight()
                    f0 = st._cond[0]
                    for t in range(1, LAST_TRACKED + 1):
                        st._non_cond[t] = dataclasses.replace(f0, conditioning=frozenset())
                        st._tracked.add(t)
                plan = states[0].memory_plan(STEP_FRAME, False)
                step, _ = measure(
                    lambda states=states: track_multiplex_states(
                        states, STEP_FRAME, False, run_mem_encoder=True
                    )
                )
                step["reads"] = [len(plan.spatial), len(plan.pointers)]
                step["buckets"] = sum(st.num_buckets for st in states)
                out[f"3.1 ours {layout}"]["steps"][n] = step
                print(f"3.1 ours {layout} N={n}: {step}", flush=True)
                states = None
    return out


# ------------------------------------------------------------------------------------ official


def run_official(args) -> dict:
    sys.path.insert(0, str(ROOT / "tools" / "reference"))
    import _common31
    import official_builders_31 as ob31
    from sam3.model.data_misc import NestedTensor

    from sam3video.model.config import get_config

    cfg = get_config(CONFIGS[args.model][1])
    neck = ob31.build_official_tri_neck(cfg)
    _common31.load_synthetic(neck, "detector.backbone.vision_backbone.")
    model = ob31.build_official_31_tracker_model(cfg)
    _common31.load_synthetic(model, "tracker.model.")
    model.eval()
    _common31.drop_bf16_casts()
    image = seeded_image(cfg.image_size)
    out: dict = {}

    def pyramid(levels, pos, dec):
        levels = [getattr(x, "tensors", x) for x in levels]  # the trunk's NestedTensors
        pos = [getattr(x, "tensors", x) for x in pos]
        fpn = [dec.conv_s0(levels[0]), dec.conv_s1(levels[1]), levels[2]]
        return {
            "vision_features": fpn[-1],
            "vision_mask": None,
            "vision_pos_enc": pos,
            "backbone_fpn": [NestedTensor(x, None) for x in fpn],
        }

    with torch.inference_mode():

        def backbone():
            o = neck(
                image, need_sam3_out=False, need_interactive_out=False, need_propagation_out=True
            )
            return o, pyramid(o[4], o[5], model.sam_mask_decoder)

        bb, (o, prop) = measure(backbone)
        # the propagation pyramid stands in for the interactive one (as in run_ours)
        interactive = pyramid(o[4], o[5], model.interactive_sam_mask_decoder)
        del o
        for key in ("3.1 official clicks", "3.1 official packed"):
            out[key] = {"backbone": bb, "steps": {}}
        entry = (
            torch.zeros(1, 3, cfg.image_size, cfg.image_size),
            {
                "interactive": interactive,
                "sam2_backbone_out": prop,
            },
        )
        cache = {t: entry for t in range(NUM_FRAMES)}
        h, w = VIDEO_HW

        def new_state():
            return model.init_state(
                video_height=h, video_width=w, num_frames=NUM_FRAMES, cached_features=cache
            )

        for layout, counts in (
            ("clicks", args.measure_official_clicks),
            ("packed", args.measure_packed),
        ):
            for n in counts:
                states = []
                if layout == "clicks":
                    for k, (x, y) in enumerate(clicks(n)):
                        st = new_state()
                        model.add_new_points(
                            st,
                            0,
                            k,
                            torch.tensor([[x / w, y / h]], dtype=torch.float32),
                            torch.tensor([1], dtype=torch.int32),
                            clear_old_points=True,
                            rel_coordinates=True,
                        )
                        states.append(st)
                else:
                    st = new_state()
                    masks = grid_masks(n, cfg.input_mask_size)
                    model.add_new_masks(st, frame_idx=0, obj_ids=list(range(n)), masks=masks)
                    states.append(st)
                for st in states:
                    model.propagate_in_video_preflight(st, run_mem_encoder=True)
                    od = st["output_dict"]
                    c0 = od["cond_frame_outputs"][0]
                    for t in range(1, LAST_TRACKED + 1):
                        d = copy.copy(c0)
                        d["conditioning_objects"] = set()
                        od["non_cond_frame_outputs"][t] = d

                def step(states=states):
                    for st in states:
                        for _ in model.propagate_in_video(
                            st,
                            STEP_FRAME,
                            0,
                            reverse=False,
                            tqdm_disable=True,
                            run_mem_encoder=True,
                        ):
                            pass

                result, _ = measure(step)
                result["buckets"] = sum(
                    st["multiplex_state"].num_buckets if "multiplex_state" in st else -1
                    for st in states
                )
                out[f"3.1 official {layout}"]["steps"][n] = result
                print(f"3.1 official {layout} N={n}: {result}", file=sys.stderr, flush=True)
                states = None
    return out


# ------------------------------------------------------------------------------------ table


def step_at(steps: dict, n: int) -> tuple[dict, bool]:
    """The measured step at ``n`` objects, or a linear extrapolation from the two largest
    measured counts (one measured count: proportional to N)."""
    steps = {int(k): v for k, v in steps.items()}
    if n in steps:
        return steps[n], False
    ks = sorted(steps)
    if len(ks) == 1:
        a = steps[ks[0]]
        f = n / ks[0]
        return {"s": a["s"] * f, "flops": a["flops"] * f, "rate": a["rate"]}, True
    k1, k2 = ks[-2], ks[-1]
    a, b = steps[k1], steps[k2]
    f = (n - k1) / (k2 - k1)
    return {
        "s": a["s"] + f * (b["s"] - a["s"]),
        "flops": a["flops"] + f * (b["flops"] - a["flops"]),
        "rate": max(a["rate"], b["rate"]),
    }, True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=list(CONFIGS), default="tiny")
    ap.add_argument(
        "--objects",
        type=int,
        nargs="+",
        default=None,
        help="object counts in the table (default: full 1 16 64 128, tiny 1 4)",
    )
    ap.add_argument(
        "--measure30",
        type=int,
        nargs="+",
        default=None,
        help="object counts measured for 3.0 ours (default: --objects)",
    )
    ap.add_argument(
        "--measure-ours31-clicks",
        type=int,
        nargs="+",
        default=None,
        help="object counts measured for 3.1 ours, clicks layout (default: --objects)",
    )
    ap.add_argument(
        "--measure-official-clicks",
        type=int,
        nargs="+",
        default=None,
        help="object counts measured for the official, clicks layout",
    )
    ap.add_argument(
        "--measure-packed",
        type=int,
        nargs="+",
        default=None,
        help="object counts measured for the 3.1 packed layouts (ours: births and clicks "
        "packed; official: births) (default: --objects)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-official", action="store_true")
    ap.add_argument("--worker", choices=["official"], help=argparse.SUPPRESS)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.objects is None:
        args.objects = [1, 16, 64, 128] if args.model == "full" else [1, 4]
    if args.model == "tiny":
        RATE_SECONDS[0] = 0.2
    for name in ("measure30", "measure_ours31_clicks", "measure_official_clicks", "measure_packed"):
        if getattr(args, name) is None:
            setattr(args, name, list(args.objects))
    if args.worker == "official":
        print(json.dumps(run_official(args)))
        return

    t0 = time.perf_counter()
    results = run_ours(args)
    rss_ours = peak_rss_mib()
    load_ours = os.getloadavg()
    if not args.no_official:
        if not PY31.exists():
            sys.exit(
                f"the SAM 3.1 reference interpreter is missing ({PY31}); see "
                "tools/reference/setup_reference_31.sh"
            )
        cmd = [
            str(PY31),
            __file__,
            "--worker",
            "official",
            "--model",
            args.model,
            "--threads",
            str(args.threads),
            "--objects",
            *map(str, args.objects),
            "--measure-packed",
            *map(str, args.measure_packed),
            "--measure-official-clicks",
            *map(str, args.measure_official_clicks),
        ]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"official worker failed:\n{proc.stderr[-4000:]}")
        results.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    wall = time.perf_counter() - t0
    load_end = os.getloadavg()

    impls = list(results)
    rows, frame = [], {}
    for n in args.objects:
        for impl in impls:
            bb = results[impl]["backbone"]
            st, extrap = step_at(results[impl]["steps"], n)
            secs = bb["s"] + st["s"]
            flops = bb["flops"] + st["flops"]
            bound = bb["flops"] / bb["rate"] + st["flops"] / st["rate"]
            frame[impl, n] = secs
            buckets = results[impl]["steps"].get(n, results[impl]["steps"].get(str(n), {}))
            rows.append(
                [
                    n,
                    impl,
                    "extrap." if extrap else "measured",
                    bb["s"],
                    st["s"],
                    secs,
                    flops / 1e9,
                    st["flops"] / 1e9,
                    secs / bound,
                    buckets.get("buckets", "-") if isinstance(buckets, dict) else "-",
                ]
            )
    lines = markdown_table(
        [
            "objects",
            "implementation",
            "step",
            "backbone s",
            "tracker step s",
            "s/frame",
            "GFLOP/frame",
            "tracker GFLOP",
            "frame / FLOP bound",
            "buckets",
        ],
        rows,
    )
    top = max(args.objects)
    lines += ["", f"Ratios at {top} objects (s/frame):", ""]
    for a, b in (
        ("3.0 ours", "3.1 ours packed"),
        ("3.0 ours", "3.1 ours clicks"),
        ("3.0 ours", "3.1 ours clicks packed"),
        ("3.1 ours clicks", "3.1 ours clicks packed"),
        ("3.1 ours packed", "3.1 ours clicks packed"),
        ("3.1 official packed", "3.1 ours packed"),
        ("3.1 official clicks", "3.1 ours clicks"),
        ("3.1 official clicks", "3.1 ours packed"),
    ):
        if (a, top) in frame and (b, top) in frame:
            lines.append(f"- {a} / {b}: {frame[a, top] / frame[b, top]:.2f}x")
    rates = [x["rate"] for r in results.values() for x in [r["backbone"], *r["steps"].values()]]
    reads = {impl: next(iter(r["steps"].values())).get("reads") for impl, r in results.items()}
    lines += [
        "",
        f"Model {args.model}, float32, synthetic weights, CPU, {args.threads} thread(s); "
        f"per frame = backbone (trunk + tracker neck) + one tracking step of all objects on "
        f"frame {STEP_FRAME} with a constructed full bank (prompted frame 0 + tracked frames "
        f"1..{LAST_TRACKED}; reads spatial/pointer frames: "
        f"{ {k: v for k, v in reads.items() if v} }), memory encoding included. GEMM rates "
        f"{min(rates) / 1e9:.1f}-{max(rates) / 1e9:.1f} GFLOP/s. "
        f"Load average at the end of ours: {' '.join(f'{x:.2f}' for x in load_ours)}, at the "
        f"end: {' '.join(f'{x:.2f}' for x in load_end)}; wall {wall:.0f} s; peak RSS "
        f"(ours) {rss_ours:.0f} MiB.",
    ]
    report(f"SAM 3 vs SAM 3.1 per frame ({args.model})", lines, not args.no_record)


if __name__ == "__main__":
    main()
