"""The same requests through the official predictor (sam3 0.1.4) and ours, timed; prints ratios.

    python benchmarks/official_side_by_side.py --model tiny --frames 8 --objects 1 4
    python benchmarks/official_side_by_side.py --model full --frames 1 --objects 1 --repeat 1

The orchestrator (any python) runs two workers, one after the other, never at the same time:

- ``--worker official`` under the reference venv (``~/.cache/sam3-reference-venv/bin/python``):
  the official ``Sam3VideoInferenceWithInstanceInteractivity`` built at the config's sizes by
  ``tools/reference/official_builders.py``, filled with the synthetic weights, wrapped in an
  official ``Sam3VideoPredictor`` and run in float32 on the CPU with the patches of
  ``tools/reference/gen_video.py`` (CUDA calls rerouted to the CPU, the tracker's bf16 autocast
  context exited, the explicit bf16 casts neutralised, empty connected-components guarded,
  no progress bars). None of them changes the amount of work.
- ``--worker ours`` under the project's python: `sam3video.predictor.Sam3VideoPredictor` with
  the same synthetic weights, float32, CPU.

Both play the same request sequence on the same JPEG folder (the first K+1 frames of
shared/data/videos/bikes.mp4, 640x272), ``--repeat`` times (the first runs warm up; the last
is reported):

1. ``start_session`` (the official predictor decodes and resizes every frame here; ours
   opens the folder lazily);
2. ``add_prompt`` text on frame 0 (text encoder + detector + tracker on frame 0);
3. ``propagate_in_video`` forward from frame 0: a FULL propagation (detector + tracker of the
   detected objects on frames 0..K);
4. N clicks on frame 0, each a new object (``obj_id`` 1000 + k), one request each;
5. ``propagate_in_video`` forward from frame 0: a PARTIAL propagation (tracker of the clicked
   objects only, frames 0..K).

Per-frame times are the step's wall time divided by the frames it yielded. The object ids
with a non-empty mask yielded per frame are compared between both (they must agree in
float32: parity; the official outputs also list ids whose mask the non-overlap rule emptied,
which the product omits by design, so those are not counted).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (  # noqa: E402
    REFERENCE_PYTHON,
    ROOT,
    append_results,
    bikes_jpeg_folder,
    click_points,
    command_line,
    machine_info,
    markdown_table,
    run_json,
)

VIDEO_H, VIDEO_W = 272, 640
TEXT = "person"


# ------------------------------------------------------------------------------------ workers


def _official_predictor(config: str):
    """The official predictor at ``config``'s sizes, float32 on the CPU (gen_video's patches)."""
    sys.path.insert(0, str(ROOT / "tools" / "reference"))
    import logging

    import _common
    import official_builders as ob
    import sam3.model.sam3_video_inference as svi
    import torch
    from sam3.model.sam3_video_predictor import Sam3VideoPredictor

    from sam3video.model.config import get_config

    _common.drop_bf16_casts()
    _common.guard_empty_connected_components()
    svi.tqdm = lambda iterable, *a, **k: iterable
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("sam3"):
            logging.getLogger(name).setLevel(logging.WARNING)

    model = ob.build_official_video_model(get_config(config), bpe_path=str(_common.BPE_PATH))
    model.tracker.bf16_context.__exit__(None, None, None)  # pure float32
    # The synthetic weights of `_common.load_synthetic`, copied in place (no second copy of
    # the full model in memory); computed buffers (RoPE ``freqs_cis``) keep their values.
    from sam3video.model.weights import synthetic_tensor

    with torch.no_grad():
        for key, tensor in model.state_dict(keep_vars=True).items():
            try:
                tensor.copy_(synthetic_tensor(key, tensor.shape, 0))
            except KeyError:
                pass
    predictor = Sam3VideoPredictor.__new__(Sam3VideoPredictor)
    predictor.model = model
    predictor.async_loading_frames = False
    predictor.video_loader_type = "cv2"
    predictor._get_torch_and_gpu_properties = lambda: ""
    predictor._get_session_stats = lambda: ""
    return predictor


def _our_predictor(config: str):
    import warnings

    import torch

    from sam3video.predictor import Sam3VideoPredictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Sam3VideoPredictor(model_config=config, device="cpu", dtype=torch.float32)


def _ids(kind: str, outputs: dict) -> list[int]:
    """Ids shown with a non-empty mask (the official outputs keep ids that the non-overlap
    rule emptied; the product omits them, by design)."""
    if kind == "official":
        masks = outputs["out_binary_masks"]
        ids = outputs["out_obj_ids"]
        return sorted(int(i) for k, i in enumerate(ids) if masks[k].any())
    return sorted(int(i) for i in outputs)


def _play(kind: str, predictor, folder: Path, n_objects: int) -> dict:
    """One run of the request sequence (module doc); wall times and ids per frame."""
    import torch

    timings: dict[str, float] = {}
    ids: dict[str, list] = {}

    def timed(name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t0
        return out

    def propagate(name: str, sid: str) -> None:
        req = {"type": "propagate_in_video", "session_id": sid, "start_frame_index": 0,
               "propagation_direction": "forward"}
        replies = timed(name, lambda: list(predictor.handle_stream_request(req)))
        timings[name + "_frames"] = len(replies)
        ids[name] = [[r["frame_index"], _ids(kind, r["outputs"])] for r in replies]

    with torch.inference_mode():
        sid = timed("start_session", lambda: predictor.handle_request(
            {"type": "start_session", "resource_path": str(folder)}))["session_id"]
        reply = timed("text_prompt", lambda: predictor.handle_request(
            {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": TEXT}))
        ids["text_prompt"] = _ids(kind, reply["outputs"])
        propagate("full_propagation", sid)
        t0 = time.perf_counter()
        for k, (x, y) in enumerate(click_points(n_objects, VIDEO_H, VIDEO_W)):
            point = [x / VIDEO_W, y / VIDEO_H] if kind == "official" else [x, y]
            predictor.handle_request(
                {"type": "add_prompt", "session_id": sid, "frame_index": 0,
                 "points": [point], "point_labels": [1], "obj_id": 1000 + k})
        timings["clicks"] = time.perf_counter() - t0
        propagate("partial_propagation", sid)
        predictor.handle_request({"type": "close_session", "session_id": sid})
    return {"timings": timings, "ids": ids}


def worker(kind: str, config: str, frames: int, objects: list[int], repeat: int,
           threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    folder = bikes_jpeg_folder(frames + 1)
    t0 = time.perf_counter()
    predictor = _official_predictor(config) if kind == "official" else _our_predictor(config)
    build_s = time.perf_counter() - t0
    runs = {}
    for n in objects:
        for _ in range(repeat):
            runs[n] = _play(kind, predictor, folder, n)
        print(n, runs[n]["timings"], file=sys.stderr, flush=True)
    print(json.dumps({"build_s": build_s, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "runs": runs}))


# ------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=["official", "ours"])
    ap.add_argument("--model", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--frames", type=int, default=8, help="frames after the prompt frame")
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeat", type=int, default=2, help="runs per object count (last kept)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of each worker (1: see README, shared-machine noise)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.frames, args.objects, args.repeat, args.threads)
        return
    if not REFERENCE_PYTHON.exists():
        sys.exit(f"the reference venv is missing ({REFERENCE_PYTHON}); see shared/reference")
    common = [__file__, "--model", args.model, "--frames", str(args.frames), "--repeat",
              str(args.repeat), "--threads", str(args.threads), "--objects",
              *map(str, args.objects)]
    bikes_jpeg_folder(args.frames + 1)
    loads = {}
    results = {}
    for kind, python in (("official", str(REFERENCE_PYTHON)), ("ours", sys.executable)):
        loads[kind] = machine_info()["load average (1/5/15 min)"]
        results[kind] = run_json([python, *common, "--worker", kind])
        print(kind, json.dumps(results[kind]["runs"])[:2000], flush=True)
    off, ours = results["official"], results["ours"]

    rows, agree = [], True
    for n in args.objects:
        a, b = off["runs"][str(n)], ours["runs"][str(n)]
        ta, tb = a["timings"], b["timings"]
        steps = ["start_session", "text_prompt", "full_propagation"]
        steps += ["clicks", "partial_propagation"] if n else []  # N = 0: a cheap fetch
        for step in steps:
            div_a = ta.get(step + "_frames", 1) or 1
            div_b = tb.get(step + "_frames", 1) or 1
            unit = "per frame" if step.endswith("propagation") else "per step"
            rows.append([n, step, unit, ta[step] / div_a, tb[step] / div_b,
                         (ta[step] / div_a) / (tb[step] / div_b)])
        same = a["ids"] == b["ids"]
        agree &= same
        if not same:
            print(f"N={n}: object ids differ\n official {a['ids']}\n ours     {b['ids']}")
    lines = markdown_table(
        ["clicked N", "step", "unit", "official s", "ours s", "speed-up (official/ours)"], rows)
    lines += [
        "",
        f"Model {args.model}, float32, synthetic weights, {args.frames + 1} JPEG frames of bikes "
        f"(640x272), text {TEXT!r} + N clicks; last of {args.repeat} run(s). Build: official "
        f"{off['build_s']:.1f} s, ours {ours['build_s']:.1f} s. Object ids per frame "
        f"{'AGREE' if agree else 'DIFFER'} between both. Load average before each worker: "
        f"official {loads['official']}, ours {loads['ours']}. Official torch {off['torch']}.",
    ]
    if args.no_record:
        print("\n".join(lines))
    else:
        info = machine_info(threads=args.threads)
        append_results(f"official side by side ({args.model}, float32)", info,
                       command_line(), lines)


if __name__ == "__main__":
    main()
