"""``sam3video demo``: a shapes-world video, tracked with the packaged demo model, no download.

The command renders a held-out clip of the procedural shapes world (`sam3video.data`), writes
it as ``shapes.mp4``, runs ``sam3video track shapes.mp4 --text "red circle" --model demo
--format ytvis,overlay`` on it (the same job, the same writers), then compares the result with
the clip's exact masks:

  ``shapes.mp4``         the input video
  ``results.json``       the track command's SA-Co/YTVIS predictions
  ``overlay.mp4``        the track command's overlay video
  ``contact_sheet.png``  a few frames: predictions (top row) and ground truth (bottom row),
                         drawn by the overlay renderer (`sam3video.io.export.render_overlay`)
  ``summary.json``       the scene, the objects found, per-frame IoU against ground truth

Decisions
  * The scene is `sam3video.data.occlusion_world` with colours and shapes set for the
    prompt's story (`demo_world`): the occludee, which passes wholly behind a large occluder
    for a quarter of the clip, is a red circle; one distractor shares its colour (red, another
    shape), one its shape (a circle of another colour); the occluder is not red. Turning a
    shape into a circle keeps the planned occlusion: a circle lies inside the disc the
    scenario fitted around the original outline (every shape's outer radius is >= 1).
  * ``--seed N``: the world's seed, default ``heldout_seed(0)`` (a held-out world: the demo
    shows what the model was not trained on).
  * The video is written at ``--scale`` times the world's 224 px (default 2, nearest-neighbour
    masks, bilinear frames) so that the overlay's labels are readable; the model resizes it
    back to its 224 px input as it would any video.
  * Matching (summary): each ground-truth object the prompt names is paired with the
    predicted object of the highest video IoU (greedy, one to one); per-frame IoU is
    ``null`` where neither has pixels. ``id_kept_through_occlusion``: the occludee (if
    named by the prompt) has the same predicted id, with IoU >= 0.5, on its last frame
    before and its first frame after the full occlusion.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_demo_parser", "demo_clip", "demo_world", "run_demo"]

VIDEO_NAME, SHEET_NAME, SUMMARY_NAME = "shapes.mp4", "contact_sheet.png", "summary.json"
DEFAULT_OUT = "sam3video_demo"
DEFAULT_PROMPT = "red circle"
KEY_DEMO = 12  # random stream of the demo's colours (sam3video.data.seeds.make_rng)

_EPILOG = """\
examples:
  sam3video demo                                # ./sam3video_demo/overlay.mp4 and friends
  sam3video demo --seed 1000000007 --frames 32 --out demo/
  sam3video demo --prompt "circle" --device cpu

outputs (in --out): shapes.mp4 (input), results.json and overlay.mp4 (as 'sam3video track'),
contact_sheet.png (predictions over ground truth), summary.json (per-frame IoU, ids).
--click prompts with one click on the object instead of the text (tracking only).
"""


def add_demo_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``demo`` to the ``sam3video`` subcommands (it sets ``func=run_demo``)."""
    from sam3video.cli.args import MODEL_CHOICES, MODEL_HELP, _device_name, _positive

    command = subparsers.add_parser(
        "demo",
        parents=list(parents),
        help="track 'red circle' in a generated video with the packaged demo model",
        description="Render a shapes-world video, track a concept in it with the packaged "
        "demo model (no download), and compare with the exact ground truth.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    command.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help="output folder")
    command.add_argument(
        "--seed", type=int, default=None, help="world seed (default: the first held-out one)"
    )
    command.add_argument(
        "--frames", metavar="N", type=_positive, default=24, help="clip length (default 24)"
    )
    command.add_argument(
        "--prompt", metavar="TEXT", default=DEFAULT_PROMPT, help=f'default "{DEFAULT_PROMPT}"'
    )
    command.add_argument(
        "--click",
        action="store_true",
        help="prompt with one click inside the prompt's first object on frame 0 instead of the "
        "text (tracking only, no detection)",
    )
    command.add_argument(
        "--scale", metavar="K", type=_positive, default=2, help="video size x K (default 2)"
    )
    command.add_argument("--model", choices=MODEL_CHOICES, default="demo", help=MODEL_HELP)
    command.add_argument("--checkpoint", metavar="PATH", default=None, help="other weights")
    command.add_argument(
        "--device", type=_device_name, default="auto", metavar="{auto,cpu,cuda,mps}"
    )
    command.add_argument("--threads", metavar="N", type=_positive, default=None)
    command.add_argument("--quiet", action="store_true", help="no progress output")
    command.set_defaults(func=run_demo)


# ----------------------------------------------------------------------------- the scene


def demo_world(seed: int, num_frames: int = 24, size: tuple[int, int] = (224, 224)) -> Any:
    """`occlusion_world` recoloured for the demo (see the module notes): object 1, the
    occludee, is a red circle; object 2, the occluder, is not red; the first distractor is
    red (unless it is a circle), the second a circle of another colour."""
    from sam3video.data import ShapesWorld, occlusion_world, seeds
    from sam3video.data.world import jitter_colour

    base = occlusion_world(seed, num_frames=num_frames, size=size, hidden=max(1, num_frames // 4))
    rng = seeds.make_rng(seed, KEY_DEMO)
    specs = list(base.specs)

    def recolour(k: int, colour: str, shape: str | None = None) -> None:
        specs[k] = replace(
            specs[k], colour=colour, rgb=jitter_colour(rng, colour), shape=shape or specs[k].shape
        )

    recolour(0, "red", "circle")
    if specs[1].colour == "red":
        recolour(1, "blue")
    if len(specs) > 2:
        recolour(2, "white" if specs[2].shape == "circle" else "red")
    if len(specs) > 3:
        recolour(3, specs[3].colour if specs[3].colour != "red" else "green", "circle")
    return ShapesWorld(
        seed,
        num_frames,
        size,
        objects=specs,
        meta={"occludee": 1, "occluder": 2},
        noise=(base.noise, base.noise),
        fps=base.fps,
    )


def demo_clip(seed: int, num_frames: int = 24, scale: int = 1) -> Any:
    """The rendered `demo_world`, frames and masks enlarged ``scale`` times; ``meta`` holds
    ``hidden_frames`` (the occludee has no visible pixel although it is in the scene)."""
    import cv2

    clip = demo_world(seed, num_frames).render()
    visible = clip.masks[0].any(axis=(1, 2))
    present = clip.amodal[0].any(axis=(1, 2))
    clip.meta["hidden_frames"] = [int(t) for t in np.flatnonzero(present & ~visible)]
    if scale == 1:
        return clip
    t, h, w, _ = clip.frames.shape
    size = (w * scale, h * scale)
    frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in clip.frames])
    masks = clip.masks.repeat(scale, axis=2).repeat(scale, axis=3)
    amodal = clip.amodal.repeat(scale, axis=2).repeat(scale, axis=3)
    return replace(clip, frames=frames, masks=masks, amodal=amodal)


# ----------------------------------------------------------------------------- the command


def run_demo(args: argparse.Namespace) -> int:
    """``sam3video demo``; returns the exit code (errors are raised for `sam3video.cli.main`)."""
    from sam3video.cli.args import EXIT_OK, PROG, build_parser
    from sam3video.cli.track import track
    from sam3video.data import heldout_seed, write_video
    from sam3video.errors import InvalidInputError

    if not args.prompt.strip():
        raise InvalidInputError(f"--prompt: expected a non-empty noun phrase, got {args.prompt!r}")
    seed = heldout_seed(0) if args.seed is None else args.seed
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    clip = demo_clip(seed, args.frames, args.scale)
    video = write_video(clip, out / VIDEO_NAME)
    prompt = ["--text", args.prompt]
    if args.click:
        prompt = ["--points", "{},{}".format(*interior_point(clip, args.prompt, 0))]
    argv = ["track", str(video), *prompt, "--direction", "forward"]
    argv += ["--format", "ytvis,overlay", "--out", str(out), "--model", args.model]
    argv += ["--device", args.device] + (["--quiet"] if args.quiet else [])
    argv += ["--checkpoint", args.checkpoint] if args.checkpoint else []
    argv += ["--threads", str(args.threads)] if args.threads else []
    track_args = build_parser().parse_args(argv)
    tracked = track(track_args)
    summary = summarize(clip, out / "results.json", args.prompt)
    summary.update(
        seed=seed,
        frames=args.frames,
        model=args.model,
        checkpoint=args.checkpoint,
        seconds=round(time.perf_counter() - start, 2),
        seconds_per_frame=round(tracked.track_seconds / max(tracked.tracked, 1), 4),
    )
    write_contact_sheet(clip, out / "results.json", summary, out / SHEET_NAME)
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    mean = summary["mean_iou"]
    kept = summary.get("id_kept_through_occlusion")
    print(f"scene    seed {seed}, {args.frames} frames, {len(clip.obj_ids)} objects; prompt "
          f"{args.prompt!r} names {len(summary['targets'])}")  # fmt: skip
    print(f"found    {len(summary['predicted_ids'])} object(s): ids {summary['predicted_ids']}")
    print(
        f"quality  mean IoU vs ground truth {'n/a' if mean is None else f'{mean:.3f}'}"
        + ("" if kept is None else f"; id kept through the occlusion: {'yes' if kept else 'no'}")
    )
    print(f"results  {out}: {VIDEO_NAME}, overlay.mp4, results.json, {SHEET_NAME}, {SUMMARY_NAME}")
    if not args.quiet:
        print(f"{PROG}: demo done in {summary['seconds']:.1f} s", file=sys.stderr)
    return EXIT_OK


def interior_point(clip: Any, prompt: str, frame: int) -> tuple[int, int]:
    """``(x, y)`` of the pixel farthest from the background in the mask of the first object
    ``prompt`` names that is visible on ``frame`` (the click of `--click`)."""
    import cv2

    from sam3video.errors import InvalidInputError

    row = {obj_id: k for k, obj_id in enumerate(clip.obj_ids)}
    for obj_id in clip.objects_for(prompt.strip()):
        mask = clip.masks[row[obj_id], frame]
        if mask.any():
            dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
            y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
            return int(x), int(y)
    raise InvalidInputError(
        f"--click: no object named {prompt!r} is visible on frame {frame} of this scene"
    )


def _predictions(results: Path) -> tuple[dict[int, np.ndarray], dict[int, list]]:
    """``{obj_id: bool (T, H, W)}`` and ``{obj_id: per-frame scores}`` of a results.json."""
    from sam3video.io.export import decode_ytvis_masks, read_ytvis

    data = read_ytvis(results)
    video = data["videos"][0]
    h, w = int(video["height"]), int(video["width"])
    frames = decode_ytvis_masks(data)
    ids = sorted({int(a.get("obj_id", a["id"])) for a in data["annotations"]})
    masks = {i: np.zeros((len(frames), h, w), bool) for i in ids}
    for t, objects in frames.items():
        for obj_id, mask in objects.items():
            masks[obj_id][t] = mask
    scores = {int(a.get("obj_id", a["id"])): a.get("per_frame_scores") for a in data["annotations"]}
    return masks, scores


def _iou(a: np.ndarray, b: np.ndarray) -> float | None:
    union = np.logical_or(a, b).sum()
    return None if union == 0 else float(np.logical_and(a, b).sum() / union)


def summarize(clip: Any, results: Path, prompt: str) -> dict[str, Any]:
    """Predictions against the clip's masks (see the module notes)."""
    predicted, _ = _predictions(results)
    targets = clip.objects_for(prompt.strip())
    row = {obj_id: k for k, obj_id in enumerate(clip.obj_ids)}
    pairs = sorted(
        ((_iou(clip.masks[row[g]], predicted[p]) or 0.0, g, p) for g in targets for p in predicted),
        reverse=True,
    )
    match: dict[int, int] = {}
    for iou, g, p in pairs:
        if iou > 0 and g not in match and p not in match.values():
            match[g] = p
    objects, all_ious = [], []
    for g in targets:
        p = match.get(g)
        gt = clip.masks[row[g]]
        per_frame = [
            _iou(gt[t], predicted[p][t] if p is not None else np.zeros_like(gt[t]))
            for t in range(clip.num_frames)
        ]
        visible = [v for t, v in enumerate(per_frame) if gt[t].any() and v is not None]
        all_ious += visible
        inst = clip.instances[row[g]]
        objects.append(
            {
                "gt_id": g,
                "phrase": f"{inst.colour} {inst.shape}",
                "pred_id": p,
                "video_iou": None if p is None else _iou(gt, predicted[p]),
                "mean_iou": float(np.mean(visible)) if visible else None,
                "per_frame_iou": per_frame,
            }
        )
    summary: dict[str, Any] = {
        "prompt": prompt,
        "targets": targets,
        "others": [i for i in clip.obj_ids if i not in targets],
        "predicted_ids": sorted(predicted),
        "unmatched_predictions": sorted(set(predicted) - set(match.values())),
        "mean_iou": float(np.mean(all_ious)) if all_ious else None,
        "hidden_frames": clip.meta.get("hidden_frames", []),
        "objects": objects,
    }
    occludee = clip.meta.get("occludee")
    hidden = summary["hidden_frames"]
    if occludee in targets and hidden:
        gt = clip.masks[row[occludee]]
        before = max((t for t in range(hidden[0]) if gt[t].any()), default=None)
        after = min(
            (t for t in range(hidden[-1] + 1, clip.num_frames) if gt[t].any()), default=None
        )
        ids = []
        for t in (before, after):
            best = max(
                ((_iou(gt[t], m[t]) or 0.0, p) for p, m in predicted.items()), default=(0.0, None)
            )
            ids.append(best[1] if t is not None and best[0] >= 0.5 else None)
        summary["id_before_after_occlusion"] = ids
        summary["id_kept_through_occlusion"] = ids[0] is not None and ids[0] == ids[1]
    return summary


def write_contact_sheet(
    clip: Any,
    results: Path,
    summary: dict[str, Any],
    path: Path,
    columns: int = 5,
    tile_width: int = 320,
) -> Path:
    """Predictions (top row) over ground truth (bottom row) on ``columns`` frames spread over
    the clip, the hidden span included, drawn by `render_overlay`."""
    import cv2

    from sam3video.io.export import render_overlay

    predicted, scores = _predictions(results)
    t_max = clip.num_frames - 1
    hidden = summary.get("hidden_frames") or []
    picks = {0, t_max} | (
        {hidden[0] - 1, hidden[len(hidden) // 2], hidden[-1] + 1} if hidden else set()
    )
    picks |= {round(t_max * k / (columns - 1)) for k in range(columns)}
    frames = sorted(t for t in picks if 0 <= t <= t_max)
    if len(frames) > columns:  # keep the ends and the occlusion, thin the rest evenly
        keep = np.linspace(0, len(frames) - 1, columns).round().astype(int)
        frames = [frames[k] for k in keep]
    targets = set(summary["targets"])
    row = {obj_id: k for k, obj_id in enumerate(clip.obj_ids)}
    tiles = []
    for t in frames:
        pred = {
            p: {"mask": m[t], "score": (scores.get(p) or [None] * (t + 1))[t]}
            for p, m in predicted.items()
        }
        truth = {g: {"mask": clip.masks[row[g]][t]} for g in targets}
        top = _caption(render_overlay(clip.frames[t], pred), f"frame {t}: predicted")
        bottom = _caption(render_overlay(clip.frames[t], truth), f"frame {t}: ground truth")
        tile = np.concatenate([top, bottom], axis=0)
        if tile.shape[1] > tile_width:  # a readable, small PNG
            size = (tile_width, round(tile.shape[0] * tile_width / tile.shape[1]))
            tile = cv2.resize(tile, size, interpolation=cv2.INTER_AREA)
        tiles.append(tile)
    sheet = np.concatenate([np.pad(x, ((0, 0), (0, 4), (0, 0))) for x in tiles], axis=1)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with a black strip above it holding ``text``."""
    import cv2

    strip = np.zeros((22, image.shape[1], 3), np.uint8)
    cv2.putText(
        strip, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA
    )
    return np.concatenate([strip, image], axis=0)
