"""Text prompt + full propagation through Hugging Face's SAM 3 video port and ours, timed.

    python benchmarks/hf_side_by_side.py --model tiny --frames 4 --threads 1
    python benchmarks/hf_side_by_side.py --model full --frames 1 --repeat 1

The orchestrator (any python) runs two workers, one after the other, never at the same time:

- ``--worker hf`` under the reference venv (``~/.cache/sam3-reference-venv/bin/python``,
  transformers 5.23.0): ``transformers.Sam3VideoModel`` built at the config's sizes and filled
  with the synthetic weights by ``tools/reference/hf_port.py`` (the official-keyed values,
  converted to HF's layout), float32 on the CPU, with an offline ``Sam3VideoProcessor``. Used
  as HF documents it: ``processor.init_video_session(video=frames)``,
  ``processor.add_text_prompt``, then ``model.propagate_in_video_iterator`` with
  ``processor.postprocess_outputs`` (masks at the video resolution) on every yielded frame.
  CPU workarounds (``hf_port``): the hub kernel ``kernels-community/cv-utils`` (mask NMS,
  connected components for hole filling), unreachable offline, is answered by an OpenCV
  stand-in (without one HF silently skips NMS and hole filling); the one explicit bf16 cast
  (stored memories) is dropped so that the run is float32 throughout, as for the official
  worker of official_side_by_side.py; its CPU ``mask_iou`` runs in row chunks (as shipped it
  asks for a 26 GB tensor at full size under synthetic weights). None changes the amount of
  work. HF's behaviour is
  otherwise left as is (e.g. its text-only prompt has no geometry CLS token; see
  tools/reference/README.md).
- ``--worker ours`` under the project's python: `sam3video.predictor.Sam3VideoPredictor` with
  the same synthetic weights, float32, CPU.

Both play the same requests on the same JPEG folder (the first K+1 frames of
shared/data/videos/bikes.mp4, 640x272), ``--repeat`` times (the first runs warm up; the last
is reported):

1. start a session: HF decodes the JPEGs (PIL) and preprocesses every frame here; ours opens
   the folder lazily;
2. text prompt "person" on frame 0: HF only tokenizes (its detection of frame 0 happens in the
   first propagation step); ours runs the detector and the tracker on frame 0;
3. forward propagation from frame 0 over all K+1 frames (ours revisits frame 0).

Because of (2) the steps do not split the same way; "text prompt + propagation" is the
like-for-like row. Per-frame times divide by the frames yielded. The object ids with a
non-empty mask per yielded frame are compared between both.
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
    bikes_jpeg_folder,
    machine_info,
    markdown_table,
    peak_rss_mib,
    report,
    run_json,
)

TEXT = "person"


# ------------------------------------------------------------------------------------ workers


def _build(kind: str, config: str):
    import warnings

    import torch

    if kind == "hf":
        sys.path.insert(0, str(ROOT / "tools" / "reference"))
        import hf_port

        hf_port.install_cpu_cv_utils()
        hf_port.chunk_mask_iou()
        hf_port.keep_memories_float32()
        return hf_port.synthetic_hf_model(config), hf_port.hf_processor(config)
    from sam3video.model.build import build_sam3_video_model
    from sam3video.predictor import Sam3VideoPredictor

    with warnings.catch_warnings():  # no checkpoint: the synthetic weights (any config)
        warnings.simplefilter("ignore")
        model = build_sam3_video_model(config, None, device="cpu", dtype=torch.float32)
        return Sam3VideoPredictor(model=model, device="cpu", dtype=torch.float32), None


def _play_hf(model, processor, folder: Path) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    t = {}
    t0 = time.perf_counter()
    video = np.stack([np.asarray(Image.open(p).convert("RGB"))
                      for p in sorted(folder.glob("*.jpg"))])
    session = processor.init_video_session(video=video, inference_device="cpu",
                                           dtype=torch.float32)
    t["start_session"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    processor.add_text_prompt(inference_session=session, text=TEXT)
    t["text_prompt"] = time.perf_counter() - t0
    ids = []
    t0 = time.perf_counter()
    for out in model.propagate_in_video_iterator(inference_session=session):
        res = processor.postprocess_outputs(session, out)
        ids.append([out.frame_idx, sorted(int(i) for k, i in enumerate(res["object_ids"])
                                          if res["masks"][k].any())])
    t["full_propagation"] = time.perf_counter() - t0
    t["full_propagation_frames"] = len(ids)
    return {"timings": t, "ids": ids}


def _play_ours(predictor, folder: Path) -> dict:
    import torch

    t = {}
    with torch.inference_mode():
        t0 = time.perf_counter()
        sid = predictor.handle_request(
            {"type": "start_session", "resource_path": str(folder)})["session_id"]
        t["start_session"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        predictor.handle_request(
            {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": TEXT})
        t["text_prompt"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        replies = list(predictor.handle_stream_request(
            {"type": "propagate_in_video", "session_id": sid, "start_frame_index": 0,
             "propagation_direction": "forward"}))
        t["full_propagation"] = time.perf_counter() - t0
        t["full_propagation_frames"] = len(replies)
        predictor.handle_request({"type": "close_session", "session_id": sid})
    ids = [[r["frame_index"], sorted(int(i) for i in r["outputs"])] for r in replies]
    return {"timings": t, "ids": ids}


def worker(kind: str, config: str, frames: int, repeat: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    folder = bikes_jpeg_folder(frames + 1)
    t0 = time.perf_counter()
    runner, processor = _build(kind, config)
    build_s = time.perf_counter() - t0
    for _ in range(repeat):
        run = _play_hf(runner, processor, folder) if kind == "hf" else _play_ours(runner, folder)
        print(run["timings"], file=sys.stderr, flush=True)
    print(json.dumps({"build_s": build_s, "torch": torch.__version__, "run": run,
                      "threads": torch.get_num_threads(), "peak_rss_mib": peak_rss_mib()}))


# ------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=["hf", "ours"])
    ap.add_argument("--model", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--frames", type=int, default=8, help="frames after the prompt frame")
    ap.add_argument("--repeat", type=int, default=2, help="runs (the last is reported)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of each worker (1: see README, shared-machine noise)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.frames, args.repeat, args.threads)
        return
    if not REFERENCE_PYTHON.exists():
        sys.exit(f"the reference venv is missing ({REFERENCE_PYTHON}); see shared/reference")
    common = [__file__, "--model", args.model, "--frames", str(args.frames), "--repeat",
              str(args.repeat), "--threads", str(args.threads)]
    bikes_jpeg_folder(args.frames + 1)
    loads, res = {}, {}
    for kind, python in (("hf", str(REFERENCE_PYTHON)), ("ours", sys.executable)):
        loads[kind] = machine_info()["load average (1/5/15 min)"]
        res[kind] = run_json([python, *common, "--worker", kind])
        print(kind, json.dumps(res[kind]["run"])[:2000], flush=True)
    a, b = res["hf"]["run"]["timings"], res["ours"]["run"]["timings"]
    for t in (a, b):
        t["text_prompt_and_propagation"] = t["text_prompt"] + t["full_propagation"]
        t["text_prompt_and_propagation_frames"] = t["full_propagation_frames"]
    rows = []
    for step in ("start_session", "text_prompt", "full_propagation", "text_prompt_and_propagation"):
        unit = "per frame" if step.endswith("propagation") else "per step"
        ta = a[step] / (a.get(step + "_frames", 1) or 1)
        tb = b[step] / (b.get(step + "_frames", 1) or 1)
        rows.append([step.replace("_", " "), unit, ta, tb, ta / tb])
    ids_hf, ids_ours = res["hf"]["run"]["ids"], res["ours"]["run"]["ids"]
    agree = ids_hf == ids_ours
    if not agree:
        print(f"object ids differ\n HF   {ids_hf}\n ours {ids_ours}")
    lines = markdown_table(["step", "unit", "HF s", "ours s", "speed-up (HF/ours)"], rows)
    lines += [
        "",
        f"Model {args.model}, float32, synthetic weights, {args.frames + 1} JPEG frames of bikes "
        f"(640x272), text {TEXT!r}, full forward propagation; last of {args.repeat} run(s). "
        f"HF's text-prompt step only tokenizes (it detects frame 0 in the propagation), ours "
        f"runs frame 0 there: compare the last row. Build: HF {res['hf']['build_s']:.1f} s, "
        f"ours {res['ours']['build_s']:.1f} s. Peak RSS: HF {res['hf']['peak_rss_mib']:.0f} "
        f"MiB, ours {res['ours']['peak_rss_mib']:.0f} MiB. Object ids per frame "
        f"{'AGREE' if agree else 'DIFFER'} ({ids_ours}). Load average before each worker: "
        f"HF {loads['hf']}, ours {loads['ours']}. HF: transformers 5.23.0, torch "
        f"{res['hf']['torch']}; CPU cv-utils stand-in, memories kept float32.",
    ]
    report(f"HF side by side ({args.model}, float32)", lines, not args.no_record,
           threads=args.threads)


if __name__ == "__main__":
    main()
