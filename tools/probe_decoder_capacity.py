"""Can the tracker's SAM decoder of a given width learn to follow clicks? An overfit probe.

    python tools/probe_decoder_capacity.py [--d-model 32 64 128] [--steps 400]

For each width: the ``tiny`` preset with ``d_model`` (detector and tracker; FFN/MLP widths
2x, memory width d/4) on synthetic weights, one shapes-world frame, its backbone features
fixed; only the prompt encoder and the mask decoder train (Adam, lr 1e-3, freshly
initialised), on batches of 8 random positive clicks inside its objects, BCE x 20 + dice on
the single output mask. Prints the training-batch IoU: a decoder that can use clicks
memorises which object each click selects within a few hundred steps.

Measured 2026-12-07 (Intel Xeon, 1 thread, 400 steps, one frame with 4 objects): d_model 32
(the ``tiny`` preset; mask embeddings of 32 / 8 = 4 channels) J 0.00; 64: 0.80; 128: 0.87.
The demo model (issue 18) therefore needs a wider preset than ``tiny``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch
import torch.nn.functional as F

from sam3video.model.build import build_sam3_video_model
from sam3video.model.config import tiny_config
from sam3video.model.tracker import FrameFeatures
from sam3video.train.data import ShapesSource, prepare_clip, step_rng
from sam3video.train.forward import _sam_heads


def click_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE x 20 + dice of ``(B, S, S)`` mask logits against float targets."""
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * target).sum((1, 2)) + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)
    return 20 * F.binary_cross_entropy_with_logits(logits, target) + dice.mean()


def overfit(d_model: int, steps: int, batch: int = 8, seed: int = 0) -> list[tuple[int, float]]:
    """Train the decoder of a ``d_model``-wide tiny model on one frame; (step, batch IoU)."""
    torch.manual_seed(seed)
    base = tiny_config()
    config = base.replace(
        detector=replace(base.detector, d_model=d_model, ffn_dim=2 * d_model),
        tracker=replace(
            base.tracker,
            decoder_mlp_dim=2 * d_model,
            memory_attention_ffn_dim=2 * d_model,
            mem_dim=max(16, d_model // 4),
        ),
    )
    model = build_sam3_video_model(config, device="cpu")
    tracker = model.tracker
    side = config.image_size
    clip = prepare_clip(ShapesSource(size=side).sample(step_rng(123, 0), 1), side)
    with torch.no_grad():
        neck = model.detector.backbone.forward_image(clip.images)
        prep = tracker.prepare_features(neck.tracker_feats, neck.tracker_pos)
        pix = prep.vision[0:1] + tracker.no_mem_embed.reshape(1, -1, 1, 1)
    frame = FrameFeatures(tuple(h[0:1] for h in prep.high_res), pix, prep.vision_pos[0:1])
    params = [*tracker.sam_mask_decoder.parameters(), *tracker.sam_prompt_encoder.parameters()]
    for p in params:
        if p.dim() > 1:
            torch.nn.init.xavier_uniform_(p)
    optimizer = torch.optim.Adam(params, lr=1e-3)
    masks = clip.masks[:, 0]  # (N, S, S) bool
    gen = torch.Generator().manual_seed(seed)
    history = []
    for step in range(steps):
        picks = torch.randint(masks.shape[0], (batch,), generator=gen)
        coords = []
        for k in picks:
            inside = torch.nonzero(masks[k].flatten()).squeeze(1)
            y, x = divmod(int(inside[torch.randint(len(inside), (1,), generator=gen)]), side)
            coords.append([[x + 0.5, y + 0.5]])
        feats = frame.expand(batch)
        heads = _sam_heads(
            tracker,
            feats.vision,
            feats,
            torch.tensor(coords),
            torch.ones(batch, 1, dtype=torch.int32),
            None,
            False,
        )
        logits = heads.raw_multimasks[:, 0]
        loss = click_loss(logits, masks[picks].float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 99 or step == steps - 1:
            pred, gt = logits.detach() > 0, masks[picks]
            iou = (pred & gt).sum((1, 2)).float() / (pred | gt).sum((1, 2)).clamp(min=1)
            history.append((step + 1, float(iou.mean())))
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-model", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for d_model in args.d_model:
        history = overfit(d_model, args.steps)
        trace = ", ".join(f"{step}: {iou:.2f}" for step, iou in history)
        print(f"d_model {d_model}: batch IoU after steps {trace}", flush=True)


if __name__ == "__main__":
    main()
