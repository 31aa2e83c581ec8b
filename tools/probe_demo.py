"""Does a trained tiny model use its prompts, and which objects does it see? Probes on held-out
shapes-world frames.

    python tools/probe_demo.py [WEIGHTS] [--clips N] [--memory | --sizes]

WEIGHTS: a training run's ``model.safetensors`` / ``last.pt`` or the packaged demo weights
(default). Prints, per object visible on a clip's first frame:

* **clicks**: one positive click at the object's most interior pixel, the tracker's three
  candidate masks (multimask) with their IoU against the object, the predicted IoUs and the
  pixel areas. A model that follows clicks gives different candidates for different clicks;
  one that ignores them gives the same areas for every object of a frame.
* **text**: for each "<colour> <shape>" phrase of the frame and a few absent ones, the top
  detector scores and the presence probability. A model that grounds text scores present
  phrases above absent ones; one that learned phrase priors only gives the same numbers for
  every image.
* **memory** (``--memory``): each object's ground-truth mask given on frame 0 of an 8-frame
  clip (as a detection starts a track), then propagated through the tracker's memory alone;
  the mean IoU per frame. Separates "can it follow an object" from "can it read a click".
* **sizes** (``--sizes``): the detector alone on the first frames of held-out random worlds
  drawn with small objects (radius 4-6.5 % of the frame) and with the default sizes (7-18 %):
  per visible object, the top score x presence for its "<colour> <shape>" phrase; the mean
  and the share that reach 0.5 (the detection threshold) and 0.7 (the birth threshold).

Findings for the shipped pre-release weights: README, "The demo model".
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sam3video.checkpoints import demo_weights
from sam3video.data import ShapesWorld, heldout_seed, render_clip, vocabulary
from sam3video.io.transforms import to_model_batch
from sam3video.model.build import build_sam3_video_model


def memory_probe(model, clips: int, num_frames: int = 8) -> list[float]:
    """Mean IoU per frame offset of objects started from their frame-0 ground truth, through
    the tracker's own inference step (`Sam3Tracker.track_step`)."""
    from sam3video.data import sample_training_clip
    from sam3video.model.tracker import FrameFeatures
    from sam3video.train.data import prepare_clip

    tracker, side = model.tracker, model.config.image_size
    per_frame: list[list[float]] = [[] for _ in range(num_frames)]
    for i in range(clips):
        sample = sample_training_clip(
            heldout_seed(i), num_frames=num_frames, size=(side, side), allow_heldout=True
        )
        clip = prepare_clip(sample, side)
        neck = model.detector.backbone.forward_image(clip.images)
        prep = tracker.prepare_features(neck.tracker_feats, neck.tracker_pos)
        frames = [
            FrameFeatures(
                tuple(h[t : t + 1] for h in prep.high_res),
                prep.vision[t : t + 1],
                prep.vision_pos[t : t + 1],
            )
            for t in range(num_frames)
        ]
        for gt in clip.masks:  # (T, S, S) bool per object
            if gt[0].sum() < 30:
                continue
            size = (tracker.input_mask_size,) * 2
            prompt = F.interpolate(
                gt[0:1, None].float(), size=size, mode="bilinear", antialias=True
            )
            out = tracker.track_step(
                0, frames[0], {}, {}, num_frames, mask_inputs=prompt, is_init_cond_frame=True
            )
            cond, others = {0: out.to_memory()}, {}
            for t in range(1, num_frames):
                out = tracker.track_step(t, frames[t], cond, others, num_frames)
                pred = out.pred_masks_high_res[0, 0] > 0
                union = (pred | gt[t]).sum()
                if union > 0:
                    per_frame[t].append(float((pred & gt[t]).sum() / union))
                others[t] = out.to_memory()
    return [float(np.mean(v)) if v else float("nan") for v in per_frame[1:]]


def ground_phrases(detector, neck, phrases: list[str]):
    """The detector's outputs for each of ``phrases`` on the first image of a computed ``neck``
    (`Sam3Detector.forward_image`): the phrases as a batch of prompts, no backbone pass each."""
    device = neck.detector_feats[0].device
    text_feats, text_mask = detector.backbone.forward_text(phrases, device=device)
    return detector.forward_grounding_on_image(neck, text_feats, text_mask)


SIZE_RANGES = ((0.04, 0.065), (0.07, 0.18))  # small (the occludee's, the demo's) / default


def size_probe(model, clips: int) -> dict[tuple[float, float], list[float]]:
    """Per radius range of `SIZE_RANGES`: each visible object's best detection score x
    presence for its own phrase, on frame 0 of ``clips`` held-out random worlds (seeds
    ``heldout_seed(500 + j)``, away from the other probes' and `tools/eval_demo.py`'s)."""
    side = model.config.image_size
    scores: dict[tuple[float, float], list[float]] = {}
    for radius in SIZE_RANGES:
        scores[radius] = []
        for j in range(clips):
            clip = ShapesWorld(heldout_seed(500 + j), 1, (side, side), radius=radius).render()
            visible = [o for k, o in enumerate(clip.instances) if clip.masks[k, 0].any()]
            if not visible:
                continue
            image = to_model_batch(clip.frames[:1], side)
            neck = model.detector.backbone.forward_image(image, need_tracker=False)
            out = ground_phrases(model.detector, neck, [f"{o.colour} {o.shape}" for o in visible])
            joint = out.pred_logits.sigmoid() * out.presence_logit.sigmoid().reshape(-1, 1)
            scores[radius] += [float(v) for v in joint.max(dim=1).values]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="?", help="default: the packaged demo weights")
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="the memory probe only")
    parser.add_argument("--sizes", action="store_true", help="the object-size probe only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = args.weights or str(demo_weights())
    model = build_sam3_video_model("demo", checkpoint_path=path, device="cpu").eval()
    if args.memory:
        with torch.no_grad():
            ious = memory_probe(model, args.clips)
        print(f"memory: IoU on frames 1..{len(ious)} {[round(v, 2) for v in ious]}, "
              f"mean {np.mean(ious):.3f}")  # fmt: skip
        return
    if args.sizes:
        with torch.no_grad():
            by_size = size_probe(model, args.clips)
        for (lo, hi), v in by_size.items():
            v = np.asarray(v)
            print(f"sizes: radius {lo}-{hi}, {v.size} objects: mean top score x presence "
                  f"{v.mean():.3f}, >= 0.5: {np.mean(v >= 0.5):.2f}, "
                  f">= 0.7: {np.mean(v >= 0.7):.2f}")  # fmt: skip
        return
    tracker, detector = model.tracker, model.detector
    side = model.config.image_size
    absent_pool = [p for p in vocabulary() if " " in p]
    chosen, best_of_three = [], []  # the IoU of the candidate the model picks / the best one
    with torch.no_grad():
        for i in range(args.clips):
            clip = render_clip(heldout_seed(i), num_frames=1, size=(side, side))
            images = to_model_batch(clip.frames, side)
            neck = detector.backbone.forward_image(images)
            prep = tracker.prepare_features(neck.tracker_feats, neck.tracker_pos)
            pix = prep.vision[0:1] + tracker.no_mem_embed.reshape(1, -1, 1, 1)
            high_res = [f[0:1] for f in prep.high_res]
            print(f"clip {i}: {[(o.colour, o.shape) for o in clip.instances]}")
            for k, inst in enumerate(clip.instances):
                gt = clip.masks[k, 0]
                if not gt.any():
                    continue
                dist = cv2.distanceTransform(gt.astype(np.uint8), cv2.DIST_L2, 3)
                y, x = np.unravel_index(np.argmax(dist), dist.shape)
                heads = tracker.forward_sam_heads(
                    pix,
                    high_res,
                    torch.tensor([[[x + 0.5, y + 0.5]]]),
                    torch.tensor([[1]], dtype=torch.int32),
                    multimask_output=tracker.use_multimask(1, is_init_cond_frame=True),
                )
                masks = (heads.high_res_multimasks[0] > 0).numpy()
                ious = [float((m & gt).sum() / max((m | gt).sum(), 1)) for m in masks]
                predicted = [round(float(v), 2) for v in heads.ious[0]]
                chosen.append(ious[int(heads.ious[0].argmax())])
                best_of_three.append(max(ious))
                print(
                    f"  click {inst.colour} {inst.shape} at ({x}, {y}): IoU per candidate "
                    f"{[round(v, 2) for v in ious]}, predicted {predicted}, "
                    f"areas {[int(m.sum()) for m in masks]}"
                )
            present = sorted({f"{o.colour} {o.shape}" for o in clip.instances})
            absent = [p for p in absent_pool if p not in present][:3]
            phrases = present + absent
            out = ground_phrases(detector, neck, phrases)
            for j, phrase in enumerate(phrases):
                top = [round(float(v), 2) for v in out.pred_logits[j].sigmoid().topk(3).values]
                presence = float(out.presence_logit[j].sigmoid())
                tag = "present" if phrase in present else "absent"
                print(f"  text {phrase!r} ({tag}): top scores {top}, presence {presence:.2f}")
    print(
        f"clicks: mean IoU of the chosen candidate {np.mean(chosen):.3f}, "
        f"of the best candidate {np.mean(best_of_three):.3f} ({len(chosen)} clicks)"
    )


if __name__ == "__main__":
    main()
