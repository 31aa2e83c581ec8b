"""Do the mask decoder's high-resolution skips keep it from reading clicks? A held-out probe.

    python tools/probe_decoder_skips.py WEIGHTS [--steps 1000] [--no-skips] [--save OUT]

The ``demo`` model of WEIGHTS with its image encoder and necks fixed; a freshly initialised
(Xavier) prompt encoder and mask decoder train alone (AdamW, lr 1e-3) on single positive
clicks inside the objects of fresh training frames of the shapes world (8 clicks per frame,
BCE x 20 + dice on the one output mask). Every 200 steps: the mean IoU of one click at the
most interior pixel (`eval_demo.interior_click`) of each object of 12 held-out frames.
``--no-skips`` zeroes the high-resolution features the decoder adds while upscaling
(``conv_s0``/``conv_s1`` outputs). ``--save OUT`` writes the whole model with the probe's
prompt encoder and mask decoder (and, with ``--no-skips``, zeroed skip projections) as
safetensors: the demo recipe's click warm start for a tracker stage.

Measured 2026-12-07 (Intel Xeon, 1 thread, 1,000 steps, the trkB-stage weights of the demo
recipe, whose tracker neck is its initial one): held-out IoU 0.26 with the skips, 0.56
without (README, "The demo model").
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from demo_recipe import SKIPS  # tools/ is the script's own folder
from eval_demo import interior_click
from probe_decoder_capacity import click_loss

from sam3video.data import heldout_seed, sample_training_clip
from sam3video.model.build import build_sam3_video_model
from sam3video.model.tracker import FrameFeatures
from sam3video.train.data import ShapesSource, prepare_clip, step_rng
from sam3video.train.forward import _sam_heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--no-skips", action="store_true", help="zero the high-res features")
    parser.add_argument("--save", help="write the model with the probe's decoder here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_sam3_video_model("demo", checkpoint_path=args.weights, device="cpu")
    tracker, side = model.tracker, model.config.image_size
    params = [*tracker.sam_mask_decoder.parameters(), *tracker.sam_prompt_encoder.parameters()]
    for p in params:
        if p.dim() > 1:
            torch.nn.init.xavier_uniform_(p)
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    scale = 0.0 if args.no_skips else 1.0

    def features(images: torch.Tensor) -> FrameFeatures:
        """The first frame's fixed decoder inputs."""
        with torch.no_grad():
            neck = model.detector.backbone.forward_image(images)
            prep = tracker.prepare_features(neck.tracker_feats, neck.tracker_pos)
            pix = prep.vision[0:1] + tracker.no_mem_embed.reshape(1, -1, 1, 1)
        return FrameFeatures(tuple(scale * h[0:1] for h in prep.high_res), pix, prep.vision_pos)

    def heldout_iou(clips: int = 12) -> float:
        values = []
        with torch.no_grad():
            for i in range(clips):
                sample = sample_training_clip(
                    heldout_seed(i), num_frames=1, size=(side, side), allow_heldout=True
                )
                clip = prepare_clip(sample, side)
                frame = features(clip.images)
                for gt in clip.masks[:, 0].numpy():
                    if gt.sum() < 20:
                        continue
                    x, y = interior_click(gt)
                    click = torch.tensor([[[x + 0.5, y + 0.5]]])
                    out = _sam_heads(
                        tracker, frame.vision, frame, click, torch.ones(1, 1, dtype=torch.int32),
                        None, False,
                    )  # fmt: skip
                    pred = (out.raw_multimasks[0, 0] > 0).numpy()
                    values.append((pred & gt).sum() / max((pred | gt).sum(), 1))
        return float(np.mean(values))

    source, gen, batch = ShapesSource(size=side), torch.Generator().manual_seed(0), 8
    print(f"step 0: held-out click IoU {heldout_iou():.3f}", flush=True)
    for step in range(args.steps):
        clip = prepare_clip(source.sample(step_rng(5, step), 1), side)
        masks = clip.masks[:, 0]
        visible = [i for i in range(masks.shape[0]) if masks[i].sum() > 10]
        if not visible:
            continue
        picks = [visible[int(j)] for j in torch.randint(len(visible), (batch,), generator=gen)]
        coords = []
        for k in picks:
            inside = torch.nonzero(masks[k].flatten()).squeeze(1)
            y, x = divmod(int(inside[torch.randint(len(inside), (1,), generator=gen)]), side)
            coords.append([[x + 0.5, y + 0.5]])
        frame = features(clip.images).expand(batch)
        labels = torch.ones(batch, 1, dtype=torch.int32)
        out = _sam_heads(tracker, frame.vision, frame, torch.tensor(coords), labels, None, False)
        loss = click_loss(out.raw_multimasks[:, 0], masks[picks].float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 200 == 199:
            print(f"step {step + 1}: held-out click IoU {heldout_iou():.3f}", flush=True)
    if args.save:
        from safetensors.torch import save_file

        state = model.state_dict()
        if args.no_skips:  # the zeroed features, as weights: the skips' projections output 0
            for key in state:
                if key.startswith(SKIPS):
                    state[key] = torch.zeros_like(state[key])
        save_file({k: v.contiguous() for k, v in state.items()}, args.save)
        print(f"saved {args.save}", flush=True)


if __name__ == "__main__":
    main()
