"""Held-out evaluation of the demo model (or any weights) on the procedural shapes world.

    nice -n 10 python tools/eval_demo.py --clips 10 --occlusion 5 --out eval_demo/
    python tools/eval_demo.py --checkpoint RUN/model.safetensors --clips 3 --occlusion 2

What it does, per held-out clip (seeds ``heldout_seed(k)``, never trained on):

  * renders it (`render_clip`, ``--frames`` frames at 224 px) and writes its frames as PNGs
    (lossless) and the SA-Co/YTVIS ground truth (`clip_to_ytvis`, ``"<colour> <shape>"``
    phrases) into ``OUT/gt_click.json`` / ``OUT/gt_text.json``;
  * (a) click-prompted: one positive click at the most interior pixel (the maximum of the
    distance transform) of each object on the first frame where it is visible, ``obj_id`` =
    the ground truth's; one session per distinct first frame, propagated forward from it
    (``--separate``: one session per object, so that no other object's mask competes for
    its pixels: SAM 3 gives each pixel to one object);
  * (b) text-prompted: one session with every ``"<colour> <shape>"`` phrase present in the
    clip plus ``--absent`` phrases that are not (one concept each, frame 0, forward);
  * writes the predictions as ``sam3video track`` does (`YtvisWriter`:
    ``OUT/pred/<mode>/<video>/results.json``) and merges them per mode
    (``OUT/pred_<mode>.json``; clicked objects take their ground-truth phrase);
  * scores them with `sam3video.evaluation`: click J&F (objects paired by ``obj_id``), text
    J&F (paired by video IoU), cgF1, IL_MCC, and concept precision / recall at video mask
    IoU 0.5 (`concept_precision_recall`; detections with score >= 0.5).

Occlusion scenarios (``--occlusion M``, `occlusion_clip` on held-out seeds, 24 frames, 8
hidden): the occludee passes wholly behind a large occluder. For clicks (each object clicked
on frame 0) and for its text phrase, the prediction that covers the occludee (IoU >= 0.5) on
its last frame before and its first frame after the occlusion with at least half of it
visible is compared:
``kept`` (same id), ``switch`` (two different ids), ``lost`` (none after, or none before).
The id-switch rate is switches / scenarios.

The table goes to stdout; everything (summary, per clip, timings) to ``OUT/report.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def interior_click(mask: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the pixel farthest from the mask's outside (ties: the first in raster
    order)."""
    import cv2

    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def absent_phrases(clip: Any, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` ``"<colour> <shape>"`` phrases of the vocabulary with no object in ``clip``."""
    from sam3video.data import vocabulary

    used = {p for inst in clip.instances for p in inst.phrases}
    pool = [p for p in vocabulary() if len(p.split()) == 2 and p not in used]
    pool = [p for p in pool if not p.endswith(" shape")]  # "<colour> <shape>" only
    picks = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    return [pool[int(k)] for k in sorted(picks)]


def _propagate(predictor: Any, sid: str, start: int) -> dict[int, dict]:
    """Every frame's final outputs of one forward propagation from ``start``."""
    frames: dict[int, dict] = {}
    stream = predictor.handle_stream_request(
        {
            "type": "propagate_in_video",
            "session_id": sid,
            "propagation_direction": "forward",
            "start_frame_index": start,
        }
    )
    for item in stream:
        frames[item["frame_index"]] = item["outputs"]
    return frames


def track_clicks(
    predictor: Any, folder: Path, clip: Any, separate: bool = False
) -> dict[int, dict]:
    """Outputs per frame of the click protocol (see the module notes), sessions merged;
    ``separate``: one session per object (no other object competes for its pixels)."""
    present = clip.present  # (N, T)
    first = {k: int(np.argmax(present[k])) for k in range(len(clip.obj_ids)) if present[k].any()}
    merged: dict[int, dict] = {t: {} for t in range(clip.num_frames)}
    groups = [[k] for k in first] if separate else [
        [k for k in first if first[k] == start] for start in sorted(set(first.values()))
    ]  # fmt: skip
    for group in groups:
        start = first[group[0]]
        sid = predictor.handle_request({"type": "start_session", "resource_path": str(folder)})[
            "session_id"
        ]
        try:
            for k in group:
                x, y = interior_click(clip.masks[k, start])
                predictor.handle_request(
                    {
                        "type": "add_prompt",
                        "session_id": sid,
                        "frame_index": start,
                        "points": [[x, y]],
                        "point_labels": [1],
                        "obj_id": clip.obj_ids[k],
                    }
                )
            for t, outputs in _propagate(predictor, sid, start).items():
                merged[t].update(outputs)
        finally:
            predictor.handle_request({"type": "close_session", "session_id": sid})
    return merged


def track_text(predictor: Any, folder: Path, phrases: list[str]) -> dict[int, dict]:
    """Outputs per frame of one session with every phrase as a concept (frame 0, forward)."""
    sid = predictor.handle_request({"type": "start_session", "resource_path": str(folder)})[
        "session_id"
    ]
    try:
        predictor.handle_request(
            {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": phrases}
        )
        return _propagate(predictor, sid, 0)
    finally:
        predictor.handle_request({"type": "close_session", "session_id": sid})


def write_results(path: Path, name: str, clip: Any, frames: dict, text: Any) -> dict:
    """``results.json`` as ``sam3video track`` writes it; returns the written dict."""
    from sam3video.io.export import YtvisWriter

    _, h, w, _ = clip.frames.shape
    with YtvisWriter(path, name, h, w, clip.num_frames, fps=clip.fps, text=text) as writer:
        for t in sorted(frames):
            writer.write(t, frames[t])
    return json.loads(path.read_text())


def merge(files: list[tuple[dict, dict[int, str] | None]]) -> dict:
    """One prediction file from per-clip ``results.json`` dicts; ``phrase_of`` (obj_id ->
    phrase) renames clicked objects' categories to their ground-truth phrase."""
    videos, annotations, categories = [], [], {}
    for data, phrase_of in files:
        video_id = len(videos)
        videos.append(dict(data["videos"][0], id=video_id))
        names = {c["id"]: c["name"] for c in data["categories"]}
        for ann in data["annotations"]:
            name = names[ann["category_id"]]
            if phrase_of is not None:
                name = phrase_of.get(int(ann["obj_id"]), name)
            category = categories.setdefault(name, len(categories) + 1)
            annotations.append(
                dict(
                    ann,
                    id=len(annotations) + 1,
                    video_id=video_id,
                    category_id=category,
                    noun_phrase=name,
                )
            )
    return {
        "videos": videos,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for n, i in categories.items()],
    }


def add_negatives(gt: dict, absent: dict[str, list[str]]) -> dict:
    """``gt`` with the queried absent phrases as negative video-phrase pairs (no objects)."""
    category_of = {c["name"]: c["id"] for c in gt["categories"]}
    video_of = {v["video_name"]: v["id"] for v in gt["videos"]}
    for name, phrases in absent.items():
        for phrase in phrases:
            if phrase not in category_of:
                category_of[phrase] = len(category_of) + 1
                gt["categories"].append({"id": category_of[phrase], "name": phrase})
            gt["video_np_pairs"].append(
                {
                    "id": len(gt["video_np_pairs"]) + 1,
                    "video_id": video_of[name],
                    "category_id": category_of[phrase],
                    "noun_phrase": phrase,
                    "num_masklets": 0,
                }
            )
    return gt


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def around_occlusion(clip: Any) -> tuple[int, int]:
    """The occludee's last frame before and first frame after its full occlusion on which at
    least half of it is visible (not a sliver at the occluder's edge)."""
    k = clip.obj_ids.index(clip.meta["occludee"])
    share = clip.masks[k].sum(axis=(1, 2)) / np.maximum(clip.amodal[k].sum(axis=(1, 2)), 1)
    empty = clip.meta["empty_frames"]
    before = max(t for t in range(empty[0]) if share[t] >= 0.5)
    after = min(t for t in range(empty[-1] + 1, clip.num_frames) if share[t] >= 0.5)
    return before, after


def occlusion_outcome(clip: Any, frames: dict[int, dict]) -> dict[str, Any]:
    """``kept`` / ``switch`` / ``lost`` for the occludee (see the module notes)."""
    k = clip.obj_ids.index(clip.meta["occludee"])
    gt = clip.masks[k]
    before, after = around_occlusion(clip)

    def owner(t: int) -> int | None:
        best = max(
            ((_iou(gt[t], np.asarray(o["mask"])), oid) for oid, o in frames.get(t, {}).items()),
            default=(0.0, None),
        )
        return best[1] if best[0] >= 0.5 else None

    ids = [owner(before), owner(after)]
    if ids[0] is None or ids[1] is None:
        outcome = "lost"
    else:
        outcome = "kept" if ids[0] == ids[1] else "switch"
    return {"seed": clip.seed, "before": before, "after": after, "ids": ids, "outcome": outcome}


def _rate(rows: list[dict], outcome: str) -> float:
    return sum(r["outcome"] == outcome for r in rows) / len(rows) if rows else math.nan


def _parse_bool(value: str) -> bool:
    """``true``/``1`` or ``false``/``0`` (any case); anything else is a ValueError."""
    flag = {"true": True, "1": True, "false": False, "0": False}.get(value.lower())
    if flag is None:
        raise ValueError(value)
    return flag


def override_heuristics(heuristics: Any, overrides: list[str], parser: Any) -> Any:
    """``heuristics`` with ``NAME=VALUE`` fields replaced (the value cast to the field's type)."""
    fields = {f.name for f in dataclasses.fields(heuristics)}
    changes = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            parser.error(
                f"--heuristic: expected NAME=VALUE with NAME in {sorted(fields)}, got {item!r}"
            )
        kind = type(getattr(heuristics, name))
        try:
            changes[name] = _parse_bool(value) if kind is bool else kind(value)
        except ValueError:
            parser.error(f"--heuristic {name}: expected a {kind.__name__}, got {value!r}")
    try:
        return dataclasses.replace(heuristics, **changes)
    except ValueError as err:  # the heuristics' own checks (ConfigError)
        parser.error(f"--heuristic: {err}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=10, help="random held-out clips")
    parser.add_argument("--frames", type=int, default=16, help="frames per random clip")
    parser.add_argument("--occlusion", type=int, default=5, help="occlusion scenarios")
    parser.add_argument("--absent", type=int, default=2, help="absent phrases per clip")
    parser.add_argument("--first", type=int, default=0, help="first held-out index")
    parser.add_argument("--model", default="demo", help="model config (default demo)")
    parser.add_argument("--checkpoint", default=None, help="weights (default: the packaged)")
    parser.add_argument(
        "--separate",
        action="store_true",
        help="clicks: one session per object (default: the objects of a first frame share one)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("eval_demo"))
    parser.add_argument(
        "--heuristic",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a field of the video heuristics (e.g. new_det_thresh=0.5); repeatable",
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from sam3video import Sam3VideoPredictor
    from sam3video.data import (
        clip_to_ytvis,
        heldout_seed,
        occlusion_clip,
        render_clip,
        write_frames,
    )
    from sam3video.evaluation import evaluate
    from sam3video.evaluation.concepts import concept_precision_recall
    from sam3video.evaluation.data import align

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    predictor = Sam3VideoPredictor(
        checkpoint_path=args.checkpoint, model_config=args.model, device=args.device
    )
    predictor.heuristics = override_heuristics(predictor.heuristics, args.heuristic, parser)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    clips, click_files, text_files, absent, per_clip = [], [], [], {}, []
    track_seconds = {"click": 0.0, "text": 0.0}
    frames_tracked = {"click": 0, "text": 0}
    for i in range(args.first, args.first + args.clips):
        clip = render_clip(heldout_seed(i), num_frames=args.frames, size=(224, 224))
        name = f"shapes_{clip.seed}"
        folder = write_frames(clip, out / "frames" / name)
        clips.append(clip)
        phrase_of = {inst.obj_id: f"{inst.colour} {inst.shape}" for inst in clip.instances}
        present = sorted({phrase_of[clip.obj_ids[k]] for k in np.flatnonzero(clip.present.any(1))})
        absent[name] = absent_phrases(clip, args.absent, rng)
        begin = tick = time.perf_counter()
        clicked = track_clicks(predictor, folder, clip, args.separate)
        track_seconds["click"] += time.perf_counter() - tick
        frames_tracked["click"] += clip.num_frames
        tick = time.perf_counter()
        texted = track_text(predictor, folder, present + absent[name])
        track_seconds["text"] += time.perf_counter() - tick
        frames_tracked["text"] += clip.num_frames
        pred_dir = out / "pred"
        click_files.append(
            (
                write_results(
                    pred_dir / "click" / name / "results.json", name, clip, clicked, None
                ),
                phrase_of,
            )  # fmt: skip
        )
        text_files.append(
            (
                write_results(
                    pred_dir / "text" / name / "results.json",
                    name,
                    clip,
                    texted,
                    present + absent[name],
                ),
                None,
            )  # fmt: skip
        )
        per_clip.append({"video": name, "objects": len(clip.obj_ids), "phrases": present,
                         "absent": absent[name]})  # fmt: skip
        print(f"clip {name}: {len(clip.obj_ids)} objects, {time.perf_counter() - begin:.1f} s",
              file=sys.stderr)  # fmt: skip

    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    summary: dict[str, Any] = {}
    if clips:
        gt = clip_to_ytvis(clips, levels=("colour_shape",), ext="png")
        (out / "gt_click.json").write_text(json.dumps(gt))
        gt_text = add_negatives(clip_to_ytvis(clips, levels=("colour_shape",), ext="png"), absent)
        (out / "gt_text.json").write_text(json.dumps(gt_text))
        pred_click, pred_text = merge(click_files), merge(text_files)
        (out / "pred_click.json").write_text(json.dumps(pred_click))
        (out / "pred_text.json").write_text(json.dumps(pred_text))
        click = evaluate(gt, pred_click, metrics=("jf",), jf_match="id")
        text = evaluate(gt_text, pred_text, metrics=("jf", "cgf1"), jf_match="iou")
        pr = concept_precision_recall(gt_text, align(gt_text, pred_text).predictions)
        summary.update(
            {
                "click J&F": click["summary"]["J&F"],
                "click J": click["summary"]["J"],
                "click F": click["summary"]["F"],
                "text J&F": text["summary"]["J&F"],
                "text cgF1": text["summary"]["cgF1"],
                "text cgF1@50": text["summary"]["cgF1@50"],
                "text IL_MCC": text["summary"]["IL_MCC"],
                "text precision@50": pr["precision"],
                "text recall@50": pr["recall"],
            }
        )
        report.update(click_report=click, text_report=text, precision_recall=pr)

    occlusion: dict[str, list] = {"click": [], "text": []}
    for j in range(args.occlusion):
        tick = time.perf_counter()
        clip = occlusion_clip(heldout_seed(args.first + 10_000 + j), num_frames=24, hidden=8)
        name = f"occlusion_{clip.seed}"
        folder = write_frames(clip, out / "frames" / name)
        clicked = track_clicks(predictor, folder, clip, args.separate)
        occlusion["click"].append(occlusion_outcome(clip, clicked))
        k = clip.obj_ids.index(clip.meta["occludee"])
        phrase = f"{clip.instances[k].colour} {clip.instances[k].shape}"
        occlusion["text"].append(occlusion_outcome(clip, track_text(predictor, folder, [phrase])))
        print(f"occlusion {name}: {time.perf_counter() - tick:.1f} s", file=sys.stderr)
    for mode, rows in occlusion.items():
        if rows:
            summary[f"occlusion {mode} kept"] = _rate(rows, "kept")
            summary[f"occlusion {mode} id switches"] = _rate(rows, "switch")
            summary[f"occlusion {mode} lost"] = _rate(rows, "lost")

    seconds = time.perf_counter() - start
    timing = {
        "seconds": round(seconds, 1),
        **{
            f"{m} s/frame": round(track_seconds[m] / max(frames_tracked[m], 1), 3)
            for m in track_seconds
        },  # fmt: skip
        "threads": args.threads,
        "device": args.device,
    }
    report.update(summary=summary, timing=timing, clips=per_clip, occlusion=occlusion)
    report["heuristics"] = dataclasses.asdict(predictor.heuristics)
    text = json.dumps(_finite(report), indent=2, default=_json_default, allow_nan=False)
    (out / "report.json").write_text(text + "\n")
    print(f"{'metric':<28} value")
    for key, value in summary.items():
        print(f"{key:<28} {value:.3f}")
    print(f"{args.clips} clips x {args.frames} frames, {args.occlusion} occlusion scenarios, "
          f"clicks {'one session per object' if args.separate else 'sharing sessions'}; "
          f"{seconds:.0f} s in all ({timing})")  # fmt: skip
    return 0


def _finite(value: Any) -> Any:
    """``value`` with NaN (undefined metrics) as None, so that the JSON is standard."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
