"""Training forwards of the detector and the tracker, built from the inference modules.

`detector_layers` runs the detector like `Sam3Detector.forward_grounding` but keeps what the
losses need: every decoder layer's *raw* class logits (not joined with presence), boxes and
presence logit, and the last layer's masks.

`tracker_rollout` is SAM 2-style sequence training on one clip: the objects visible on frame
0 are prompted there (one click sampled from the ground truth, a noisy box, or the mask
itself), optionally corrected by clicks sampled from the error region (each correction
is a prediction step with a loss), then tracked through the memory over the following frames
(one random later frame may get corrective clicks too and become a prompted frame, as in
SAM 2's training);
each frame's memory is encoded from the soft (sigmoid) mask so that the gradient flows back
through time. The SAM heads are the tracker's own modules; the loss sees the decoder's mask
logits before the "object absent" gating (so that a missed object's masks still learn), the
memory and the object pointer see the gated outputs, as at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.model.decoder import inverse_sigmoid
from sam3video.model.detector import GeometryPrompt, Sam3Detector
from sam3video.model.tracker import (
    NO_OBJ_SCORE,
    FrameFeatures,
    FrameMemory,
    Sam3Tracker,
    memory_score,
)
from sam3video.train.losses import DetectorLayerOutput, TrackerLoss

__all__ = ["RolloutConfig", "detector_layers", "tracker_rollout"]

# Earlier logits fed back with new clicks are clamped like the inference path does.
PREV_LOGITS_CLAMP = 32.0


def detector_layers(
    detector: Sam3Detector,
    feats: list[Tensor],
    pos: list[Tensor],
    text_feats: Tensor,
    text_mask: Tensor,
    geometry: GeometryPrompt | None = None,
) -> list[DetectorLayerOutput]:
    """Per decoder layer: raw logits ``(B, Q)``, boxes ``(B, Q, 4)``, presence ``(B, 1)``;
    the last entry also has masks ``(B, Q, 4h, 4w)``. Inputs as `forward_grounding`."""
    img, img_pos = feats[-1], pos[-1]
    prompt, prompt_mask = detector.encode_prompt(img, img_pos, text_feats, text_mask, geometry)
    img_seq = img.flatten(2).transpose(1, 2)
    pos_seq = img_pos.flatten(2).transpose(1, 2)
    memory = detector.transformer.encoder(img_seq, pos_seq, prompt, prompt_mask)
    decoder = detector.transformer.decoder
    dec = decoder(memory, pos_seq, prompt, prompt_mask)
    layers = []
    num = dec.hs.shape[0]
    for k in range(num):
        hs = dec.hs[k]
        logits = detector.dot_prod_scoring(hs, prompt, prompt_mask).squeeze(-1)
        if k == num - 1:
            boxes = dec.pred_boxes
        else:  # the layer's own refinement of its input reference boxes
            boxes = (inverse_sigmoid(dec.ref_boxes[k]) + decoder.bbox_embed(hs).float()).sigmoid()
        presence = None if dec.presence_logits is None else dec.presence_logits[k]
        layers.append(DetectorLayerOutput(logits, boxes, presence))
    masks, _ = detector.segmentation_head(
        feats, memory, prompt, prompt_mask, dec.hs[-1], semantic=False
    )
    layers[-1].masks = masks
    return layers


# ----------------------------------------------------------------------------- tracker


@dataclass(frozen=True)
class RolloutConfig:
    """Prompting of the tracker rollout (probabilities per clip)."""

    p_box: float = 0.3  # prompt frame 0 with a noisy box
    p_mask: float = 0.1  # ... with the ground-truth mask (else one click)
    max_corrections: int = 2  # corrective clicks on frame 0: uniform in 0..max
    p_correct_later: float = 0.25  # also correct one random later frame (1..max clicks)
    box_noise: float = 0.1  # box corners move by up to this fraction of the box side
    max_objects: int = 3  # objects tracked per clip (those visible on frame 0)


@dataclass
class _Heads:
    raw_multimasks: Tensor  # (B, K, S, S) logits before the absent gating, for the loss
    ious: Tensor  # (B, K)
    object_score_logits: Tensor  # (B, 1)
    low_res: Tensor  # (B, 1, 4h, 4w) selected, gated
    high_res: Tensor  # (B, 1, S, S) selected, gated
    obj_ptr: Tensor  # (B, C)


def _sam_heads(
    tracker: Sam3Tracker,
    pix: Tensor,
    features: FrameFeatures,
    coords: Tensor | None,
    labels: Tensor | None,
    mask_logits: Tensor | None,
    multimask: bool,
) -> _Heads:
    """`Sam3Tracker.forward_sam_heads` with the raw masks kept for the loss."""
    b = pix.shape[0]
    if coords is None:
        coords = pix.new_zeros(b, 1, 2, dtype=torch.float32)
        labels = torch.full((b, 1), -1, dtype=torch.int32, device=pix.device)
    dense_in = None
    if mask_logits is not None:
        size = tracker.sam_prompt_encoder.mask_input_size
        dense_in = mask_logits.float()
        if tuple(dense_in.shape[-2:]) != tuple(size):
            dense_in = F.interpolate(
                dense_in, size=size, mode="bilinear", align_corners=False, antialias=True
            )
    sparse, dense = tracker.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=dense_in)
    low, ious, tokens, score = tracker.sam_mask_decoder(
        image_embeddings=pix,
        image_pe=tracker.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        high_res_features=list(features.high_res),
    )
    size = (tracker.image_size, tracker.image_size)
    raw_high = F.interpolate(low.float(), size=size, mode="bilinear", align_corners=False)
    appearing = score > 0
    gated_low = torch.where(appearing[:, :, None, None], low.float(), NO_OBJ_SCORE)
    gated_high = torch.where(appearing[:, :, None, None], raw_high, NO_OBJ_SCORE)
    rows = torch.arange(b, device=pix.device)
    best = ious.argmax(dim=-1) if multimask else torch.zeros(b, dtype=torch.long, device=pix.device)
    token = tokens[rows, best] if tokens.shape[1] > 1 else tokens[:, 0]
    ptr = tracker._gate_pointer(tracker.obj_ptr_proj(token), appearing)
    return _Heads(
        raw_high,
        ious,
        score,
        gated_low[rows, best][:, None],
        gated_high[rows, best][:, None],
        ptr,
    )


def _sample_click(
    target: Tensor, pred: Tensor | None, gen: torch.Generator
) -> tuple[float, float, int]:
    """One click on an ``(S, S)`` bool target: uniform in the error region of ``pred``
    (positive on a missed pixel, negative on a false one), or in the target without ``pred``
    or without errors. Returns pixel ``(x, y)`` (pixel centre) and the label (-1, a padding
    point, when the target is empty and nothing is predicted)."""
    if pred is not None:
        missed, false = target & ~pred, pred & ~target
        region = missed | false
    else:
        missed = region = target
    if not region.any():
        missed = region = target
    if not region.any():  # nothing to click (object absent and not predicted): padding
        return 0.0, 0.0, -1
    idx = torch.nonzero(region.flatten()).squeeze(1)
    k = int(idx[torch.randint(len(idx), (1,), generator=gen)].item())
    y, x = divmod(k, target.shape[-1])
    return x + 0.5, y + 0.5, int(bool(missed.flatten()[k]))


def _noisy_box(target: Tensor, noise: float, gen: torch.Generator) -> list[float]:
    """The mask's box ``[x0, y0, x1, y1]`` (pixels) with corners jittered by up to
    ``noise`` x the box side, clipped to the image."""
    ys, xs = torch.nonzero(target, as_tuple=True)
    x0, x1 = float(xs.min()), float(xs.max()) + 1
    y0, y1 = float(ys.min()), float(ys.max()) + 1
    w, h = x1 - x0, y1 - y0
    j = (torch.rand(4, generator=gen) * 2 - 1) * noise
    s = float(target.shape[-1])
    box = [x0 + j[0] * w, y0 + j[1] * h, x1 + j[2] * w, y1 + j[3] * h]
    box = [min(max(v, 0.0), s) for v in box]
    if box[2] <= box[0]:
        box[2] = min(box[0] + 1, s)
    if box[3] <= box[1]:
        box[3] = min(box[1] + 1, s)
    return box


def tracker_rollout(
    tracker: Sam3Tracker,
    tracker_feats: list[Tensor],
    tracker_pos: list[Tensor],
    masks: Tensor,
    loss: TrackerLoss,
    rng: np.random.Generator,
    config: RolloutConfig | None = None,
) -> tuple[Tensor, dict[str, float]] | None:
    """Prompt on frame 0, track through the clip, return ``(loss, parts)``.

    ``tracker_feats``/``tracker_pos``: the tracker-neck levels of the T frames (batch T);
    ``masks (N, T, S, S)`` bool at the model resolution. None when no object is visible
    on frame 0.
    """
    cfg = config or RolloutConfig()
    device = tracker_feats[0].device
    t_len = masks.shape[1]
    visible0 = [i for i in range(masks.shape[0]) if bool(masks[i, 0].any())]
    if not visible0:
        return None
    if len(visible0) > cfg.max_objects:
        pick = rng.choice(len(visible0), size=cfg.max_objects, replace=False)
        visible0 = [visible0[int(k)] for k in sorted(pick)]
    gt = masks[visible0]  # (B, T, S, S) on CPU
    gt_dev = gt.to(device)
    b = len(visible0)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    prepared = tracker.prepare_features(tracker_feats, tracker_pos)

    def frame(t: int) -> FrameFeatures:
        f = FrameFeatures(
            high_res=tuple(x[t : t + 1] for x in prepared.high_res),
            vision=prepared.vision[t : t + 1],
            vision_pos=prepared.vision_pos[t : t + 1],
        )
        return f.expand(b)

    steps: list[dict[str, Tensor]] = []
    f0 = frame(0)
    kind = rng.random()
    if kind < cfg.p_mask:
        side = tracker.input_mask_size
        m = F.interpolate(
            gt_dev[:, 0:1].float(),
            size=(side, side),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        heads0 = tracker.use_mask_as_output(f0.vision, f0.high_res, m)
        high0, score0, ptr0 = heads0.high_res_masks, heads0.object_score_logits, heads0.obj_ptr
        iou0 = heads0.ious.max(dim=-1).values
    else:
        if kind < cfg.p_mask + cfg.p_box:
            pts = [_noisy_box(gt[i, 0], cfg.box_noise, gen) for i in range(b)]
            coords = torch.tensor(pts, dtype=torch.float32).reshape(b, 2, 2)
            labels = torch.tensor([[2, 3]] * b, dtype=torch.int32)
        else:
            clicks = [_sample_click(gt[i, 0], None, gen) for i in range(b)]
            coords = torch.tensor([[c[:2]] for c in clicks], dtype=torch.float32)
            labels = torch.tensor([[c[2]] for c in clicks], dtype=torch.int32)
        pix0 = f0.vision + tracker.no_mem_embed.reshape(1, -1, 1, 1)
        prev = None
        heads: _Heads | None = None
        corrections = int(rng.integers(0, cfg.max_corrections + 1))
        for _ in range(corrections + 1):
            if heads is not None:  # a corrective click from the last step's errors
                pred = (heads.high_res[:, 0] > 0).cpu()
                clicks = [_sample_click(gt[i, 0], pred[i], gen) for i in range(b)]
                coords = torch.cat([coords, torch.tensor([[c[:2]] for c in clicks])], dim=1)
                labels = torch.cat(
                    [labels, torch.tensor([[c[2]] for c in clicks], dtype=torch.int32)], dim=1
                )
                # Fed back as the mask prompt, clamped as at inference (absent: -1024).
                prev = heads.low_res.detach().clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
            multimask = tracker.use_multimask(labels.shape[1], is_init_cond_frame=True)
            heads = _sam_heads(
                tracker, pix0, f0, coords.to(device), labels.to(device), prev, multimask
            )
            steps.append(
                loss.step_terms(
                    heads.raw_multimasks, heads.ious, heads.object_score_logits, gt_dev[:, 0]
                )
            )
        assert heads is not None
        high0, score0, ptr0 = heads.high_res, heads.object_score_logits, heads.obj_ptr
        iou0 = heads.ious.max(dim=-1).values
    cond = {
        0: FrameMemory(
            maskmem_features=tracker.encode_memory(f0.vision, high0, score0, binarize=False),
            obj_ptr=ptr0,
            object_score_logits=score0,
            iou_score=iou0,
        )
    }
    non_cond: dict[int, FrameMemory] = {}
    fix_frame, fixes = None, 0
    if t_len > 1 and cfg.max_corrections > 0 and rng.random() < cfg.p_correct_later:
        fix_frame = int(rng.integers(1, t_len))
        fixes = int(rng.integers(1, cfg.max_corrections + 1))
    for t in range(1, t_len):
        ft = frame(t)
        pix = tracker.prepare_memory_conditioned_features(t, ft, cond, non_cond, t_len)
        heads = _sam_heads(tracker, pix, ft, None, None, None, tracker.use_multimask(0))
        steps.append(
            loss.step_terms(
                heads.raw_multimasks, heads.ious, heads.object_score_logits, gt_dev[:, t]
            )
        )
        if t == fix_frame:
            # Corrective clicks on the tracked frame (on its memory-conditioned features):
            # each is a prediction step, and the frame becomes a prompted one.
            coords = torch.zeros(b, 0, 2)
            labels = torch.zeros(b, 0, dtype=torch.int32)
            for _ in range(fixes):
                pred = (heads.high_res[:, 0] > 0).cpu()
                clicks = [_sample_click(gt[i, t], pred[i], gen) for i in range(b)]
                coords = torch.cat([coords, torch.tensor([[c[:2]] for c in clicks])], dim=1)
                labels = torch.cat(
                    [labels, torch.tensor([[c[2]] for c in clicks], dtype=torch.int32)], dim=1
                )
                prev = heads.low_res.detach().clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
                multimask = tracker.use_multimask(labels.shape[1])
                heads = _sam_heads(
                    tracker, pix, ft, coords.to(device), labels.to(device), prev, multimask
                )
                steps.append(
                    loss.step_terms(
                        heads.raw_multimasks, heads.ious, heads.object_score_logits, gt_dev[:, t]
                    )
                )
            cond[t] = FrameMemory(
                maskmem_features=tracker.encode_memory(
                    ft.vision, heads.high_res, heads.object_score_logits, binarize=False
                ),
                obj_ptr=heads.obj_ptr,
                object_score_logits=heads.object_score_logits,
                iou_score=heads.ious.max(dim=-1).values,
            )
            continue
        iou = heads.ious.max(dim=-1).values
        non_cond[t] = FrameMemory(
            maskmem_features=tracker.encode_memory(
                ft.vision, heads.high_res, heads.object_score_logits, binarize=False
            ),
            obj_ptr=heads.obj_ptr,
            object_score_logits=heads.object_score_logits,
            iou_score=iou,
            eff_iou_score=float(memory_score(heads.object_score_logits.detach(), iou.detach())),
        )
    if not steps:
        return None
    return loss.combine(steps, b)
