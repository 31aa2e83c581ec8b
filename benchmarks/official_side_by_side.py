"""The same requests through the official predictor (sam3 0.1.4) and ours, timed; prints ratios.

    python benchmarks/official_side_by_side.py --model tiny --frames 8 --objects 1 4
    python benchmarks/official_side_by_side.py --model full --frames 2 --objects 6 --repeat 1 \
        --threads 2 --official-modes fp32 bf16

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
   text-born objects on frames 0..K);
4. N clicks on frame 0, each a new object (``obj_id`` 1000 + k), one request each;
5. ``propagate_in_video`` forward from frame 0: a PARTIAL propagation (tracker of the clicked
   objects only, frames 0..K).

Per-frame times are the step's wall time over the frames it yielded (outputs are yielded
with SAM 3's hotstart delay, so per-yield intervals say nothing); the trunk images each
step ran are counted for both, so that equal work is visible. The row ``frame`` is the cost
of a frame with the trunk once, the detector and 1 + N tracked objects: trunk seconds per
image + the full and the partial propagations' per-frame times less their trunk time (on a
short clip the official keeps recent frames' features and runs the trunk fewer times than
frames; this puts both at one trunk per frame). (The official predictor never runs the
detector and clicked objects in one pass: after a click its next propagation is partial,
and a propagation before any full one fails with "No cached outputs found"; so the frame
cost with N controlled objects is composed this way, for both.)

``--official-modes fp32 bf16`` runs the official predictor in both of its modes: pure float32
(explicit bf16 casts neutralised) and as shipped, its bf16 casts kept, under CPU bf16 autocast
(what its CUDA autocast does on a GPU). Ours runs float32 (the CPU default: this class of CPU
has no native bf16). The official CPU ``mask_iou`` is evaluated in row chunks
(``_common.chunk_mask_iou``; same operations): as shipped it materialises (N, N, H*W) tensors
and, with the ~200 detections that pass its threshold under synthetic weights, needs more
than 24 GB at full size. Each worker's result is saved under the bench cache; ``--reuse``
takes it from there after an interrupted run.

The object ids with a non-empty mask yielded per frame are compared between the official
float32 run and ours (they must agree: parity; the official outputs also list ids whose mask
the non-overlap rule emptied, which the product omits by design, so those are not counted).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (  # noqa: E402
    CACHE,
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


def _official_predictor(config: str, bf16: bool = False):
    """The official predictor at ``config``'s sizes on the CPU (gen_video's patches): pure
    float32, or (``bf16``) its shipped mixed precision, the explicit bf16 casts kept, to be
    run under CPU bf16 autocast (what its CUDA autocast does on a GPU)."""
    sys.path.insert(0, str(ROOT / "tools" / "reference"))
    import logging

    import _common
    import official_builders as ob
    import sam3.model.sam3_video_inference as svi

    from sam3video.model.config import get_config

    if not bf16:
        _common.drop_bf16_casts()
    _common.guard_empty_connected_components()
    _common.chunk_mask_iou()
    svi.tqdm = lambda iterable, *a, **k: iterable
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("sam3"):
            logging.getLogger(name).setLevel(logging.WARNING)

    model = ob.build_official_video_model(get_config(config), bpe_path=str(_common.BPE_PATH))
    model.tracker.bf16_context.__exit__(None, None, None)  # pure float32
    _common.load_synthetic(model, "")  # in place; computed buffers keep their values
    return _common.official_predictor(model)


def _our_predictor(config: str):
    """Ours with the synthetic weights (no checkpoint: ``build_sam3_video_model`` fills them)."""
    import warnings

    import torch

    from sam3video.model.build import build_sam3_video_model
    from sam3video.predictor import Sam3VideoPredictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam3_video_model(config, None, device="cpu", dtype=torch.float32)
        return Sam3VideoPredictor(model=model, device="cpu", dtype=torch.float32)


def _ids(kind: str, outputs: dict) -> list[int]:
    """Ids shown with a non-empty mask (the official outputs keep ids that the non-overlap
    rule emptied; the product omits them, by design)."""
    if kind.startswith("official"):
        masks = outputs["out_binary_masks"]
        ids = outputs["out_obj_ids"]
        return sorted(int(i) for k, i in enumerate(ids) if masks[k].any())
    return sorted(int(i) for i in outputs)


def _play(kind: str, predictor, folder: Path, n_objects: int) -> dict:
    """One run of the request sequence (module doc); wall times and ids per frame."""
    import contextlib

    import torch

    timings: dict[str, float] = {}
    ids: dict[str, list] = {}
    # Trunk (ViT) images and seconds per step. The official predictor keeps the features of
    # a few recent frames (and prefetches the next frame's detections), so on a short clip the
    # two sides do not run the trunk equally often; `_adjusted` puts both at 1 trunk per frame.
    trunk_images, trunk_s, started = [0], [0.0], [0.0]
    trunk = predictor.model.detector.backbone.vision_backbone.trunk

    def before(module, args):
        trunk_images[0] += args[0].shape[0]
        started[0] = time.perf_counter()

    def after(module, args, output):
        trunk_s[0] += time.perf_counter() - started[0]

    hooks = [trunk.register_forward_pre_hook(before), trunk.register_forward_hook(after)]

    def timed(name: str, fn):
        t0, n0, s0 = time.perf_counter(), trunk_images[0], trunk_s[0]
        out = fn()
        timings[name] = time.perf_counter() - t0
        timings[name + "_trunk_images"] = trunk_images[0] - n0
        timings[name + "_trunk_s"] = trunk_s[0] - s0
        return out

    def propagate(name: str, sid: str) -> None:
        req = {"type": "propagate_in_video", "session_id": sid, "start_frame_index": 0,
               "propagation_direction": "forward"}
        replies = timed(name, lambda: list(predictor.handle_stream_request(req)))
        timings[name + "_frames"] = len(replies)
        frames = max(1, len(replies))
        timings[name + "_per_frame"] = timings[name] / frames
        images = timings[name + "_trunk_images"]
        per_image = timings[name + "_trunk_s"] / images if images else 0.0
        timings[name + "_per_frame_adjusted"] = (
            (timings[name] - timings[name + "_trunk_s"]) / frames + per_image)
        timings[name + "_trunk_per_image"] = per_image
        ids[name] = [[r["frame_index"], _ids(kind, r["outputs"])] for r in replies]

    official = kind.startswith("official")
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if kind == "official-bf16"
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        sid = timed("start_session", lambda: predictor.handle_request(
            {"type": "start_session", "resource_path": str(folder)}))["session_id"]
        reply = timed("text_prompt", lambda: predictor.handle_request(
            {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": TEXT}))
        ids["text_prompt"] = _ids(kind, reply["outputs"])
        propagate("full_propagation", sid)
        t0 = time.perf_counter()
        for k, (x, y) in enumerate(click_points(n_objects, VIDEO_H, VIDEO_W)):
            point = [x / VIDEO_W, y / VIDEO_H] if official else [x, y]
            predictor.handle_request(
                {"type": "add_prompt", "session_id": sid, "frame_index": 0,
                 "points": [point], "point_labels": [1], "obj_id": 1000 + k})
        timings["clicks"] = (time.perf_counter() - t0) / max(1, n_objects)
        if n_objects:
            propagate("partial_propagation", sid)
        predictor.handle_request({"type": "close_session", "session_id": sid})
    for hook in hooks:
        hook.remove()
    return {"timings": timings, "ids": ids}


def worker(kind: str, config: str, frames: int, objects: list[int], repeat: int,
           threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    folder = bikes_jpeg_folder(frames + 1)
    t0 = time.perf_counter()
    if kind.startswith("official"):
        predictor = _official_predictor(config, bf16=kind == "official-bf16")
    else:
        predictor = _our_predictor(config)
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
    ap.add_argument("--worker", choices=["official", "official-bf16", "ours"])
    ap.add_argument("--model", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--frames", type=int, default=8, help="frames after the prompt frame")
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeat", type=int, default=2, help="runs per object count (last kept)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of each worker (1: see README, shared-machine noise)")
    ap.add_argument("--official-modes", nargs="+", choices=["fp32", "bf16"], default=["fp32"],
                    help="fp32: pure float32; bf16: its shipped casts under CPU bf16 autocast")
    ap.add_argument("--reuse", nargs="*", default=[], metavar="WORKER",
                    help="reuse the saved result of these workers (from an interrupted run)")
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
    kinds = {"fp32": "official", "bf16": "official-bf16"}
    workers = [(kinds[m], str(REFERENCE_PYTHON)) for m in args.official_modes]
    workers.append(("ours", sys.executable))
    loads, results = {}, {}
    for kind, python in workers:
        saved = CACHE / f"side_by_side_{args.model}_{kind}.json"
        if kind in args.reuse and saved.exists():
            results[kind] = json.loads(saved.read_text())
            loads[kind] = results[kind].get("load", "n/a") + " (saved run)"
            continue
        loads[kind] = machine_info()["load average (1/5/15 min)"]
        results[kind] = run_json([python, *common, "--worker", kind])
        results[kind]["load"] = loads[kind]
        saved.write_text(json.dumps(results[kind]))
        print(kind, json.dumps(results[kind]["runs"])[:2000], flush=True)
    officials = [k for k, _ in workers if k != "ours"]
    ours = results["ours"]

    def trunk_per_image(t: dict) -> float:
        """Trunk seconds per image in the full propagation; if that step ran none (a short
        clip whose frames the prompt step had already computed), over the whole session."""
        if t["full_propagation_trunk_images"]:
            return t["full_propagation_trunk_per_image"]
        steps = ("text_prompt", "full_propagation", "partial_propagation")
        images = sum(t.get(f"{s}_trunk_images", 0) for s in steps)
        return sum(t.get(f"{s}_trunk_s", 0.0) for s in steps) / max(1, images)

    def per_unit(t: dict, step: str) -> float:
        if step == "trunk":
            return trunk_per_image(t)
        if step == "frame":
            # One trunk pass + detector + text-born objects (the full propagation less its
            # trunk time) plus the N clicked objects' tracking (the partial propagation less
            # its trunk time).
            full_frames = max(1, t["full_propagation_frames"])
            partial_frames = max(1, t["partial_propagation_frames"])
            return (trunk_per_image(t)
                    + (t["full_propagation"] - t["full_propagation_trunk_s"]) / full_frames
                    + (t["partial_propagation"] - t["partial_propagation_trunk_s"])
                    / partial_frames)
        if step.endswith("propagation"):
            return t[step + "_per_frame"]
        return t[step]

    rows, agree = [], True
    for n in args.objects:
        steps = ["start_session", "text_prompt", "full_propagation", "trunk"]
        steps += ["clicks", "partial_propagation", "frame"] if n else []
        tb = ours["runs"][str(n)]["timings"]
        for step in steps:
            unit = {"clicks": "per click", "start_session": "per step",
                    "text_prompt": "per step", "trunk": "per image",
                    "frame": "1 trunk + detector + all objects"}.get(step, "per frame")
            trunk_key = step + "_trunk_images"
            row = [n, step, unit, "-" if step in ("frame", "trunk") else
                   f"{results[officials[0]]['runs'][str(n)]['timings'].get(trunk_key, '?')}"
                   f" / {tb.get(trunk_key, '?')}"]
            row += [per_unit(results[k]["runs"][str(n)]["timings"], step) for k in officials]
            row.append(per_unit(tb, step))
            row += [per_unit(results[k]["runs"][str(n)]["timings"], step) / per_unit(tb, step)
                    for k in officials]
            rows.append(row)
        a, b = results[officials[0]]["runs"][str(n)], ours["runs"][str(n)]
        same = a["ids"] == b["ids"]
        agree &= same
        if not same:
            print(f"N={n}: object ids differ\n {officials[0]} {a['ids']}\n ours {b['ids']}")
    names = {"official": "official fp32", "official-bf16": "official bf16 autocast"}
    header = ["clicked N", "step", "unit", "trunk images official / ours"]
    header += [f"{names[k]} s" for k in officials]
    header += ["ours fp32 s"] + [f"speed-up vs {names[k]}" for k in officials]
    lines = markdown_table(header, rows)
    builds = ", ".join(f"{names.get(k, k)} {results[k]['build_s']:.1f} s" for k, _ in workers)
    lines += [
        "",
        f"Model {args.model}, synthetic weights, {args.frames + 1} JPEG frames of bikes "
        f"(640x272): text {TEXT!r} on frame 0, full propagation (detector + text-born objects), "
        f"N clicks on frame 0 (new objects), partial propagation (the N clicked objects); "
        f"'propagation' rows: wall time / frames yielded; 'trunk': ViT seconds per image; "
        f"'frame': the cost of one frame with the trunk once, the detector and all 1 + N "
        f"objects (trunk per image + both propagations' per-frame time less their trunk "
        f"time; see the script's docstring); last of {args.repeat} run(s). Build: {builds}. "
        f"Object ids per "
        f"frame {'AGREE' if agree else 'DIFFER'} between {names[officials[0]]} and ours. "
        f"Load average before each worker: "
        + ", ".join(f"{names.get(k, k)} {loads[k]}" for k, _ in workers)
        + f". Official torch {results[officials[0]]['torch']}.",
    ]
    if args.no_record:
        print("\n".join(lines))
    else:
        info = machine_info(threads=args.threads)
        append_results(f"official side by side ({args.model})", info, command_line(), lines)


if __name__ == "__main__":
    main()
