"""Fixtures for the box/mask ops and the geometry encoder, from the official code.

Run from the repository root with the reference venv::

    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_geometry.py

Writes:
- ``tests/fixtures/ops_roi_align.pt``: ``torchvision.ops.roi_align`` on seeded maps and many
  random boxes (tiny, large, partly outside, inverted), for aligned False/True, sampling ratio
  -1/2, two output sizes and two spatial scales;
- ``tests/fixtures/ops_nms.pt``: official ``sam3.perflib`` mask IoU and greedy NMS, torchvision
  box IoU / NMS / masks_to_boxes and the official ``box_ops.masks_to_boxes`` (exclusive max);
- ``tests/fixtures/geometry_encoder.pt``: the official ``SequenceGeometryEncoder`` at the tiny
  sizes of ``tiny_config()`` with synthetic weights (prefix ``detector.geometry_encoder.``) on
  six prompts (none, one box, positive + negative boxes, a padded batch of two, points, boxes
  + points). Inputs and outputs are stored batch-first.
"""

from __future__ import annotations

import torch
import torchvision
from _common import load_synthetic, save_fixture
from official_builders import build_official_geometry_encoder
from sam3.model.box_ops import masks_to_boxes as official_masks_to_boxes_exclusive
from sam3.model.geometry_encoders import Prompt
from sam3.model.position_encoding import PositionEmbeddingSine
from sam3.perflib.masks_ops import mask_iou as official_mask_iou
from sam3.perflib.nms import generic_nms_cpu

from sam3video.model.config import tiny_config

PREFIX = "detector.geometry_encoder."


# ----------------------------------------------------------------------------------------------
# ops
# ----------------------------------------------------------------------------------------------


def random_rois(gen: torch.Generator, k: int, batch: int, h: int, w: int) -> torch.Tensor:
    """(K, 5) boxes covering the awkward cases: tiny, huge, partly outside, inverted."""
    bidx = torch.randint(0, batch, (k,), generator=gen).float()
    xy0 = torch.rand(k, 2, generator=gen) * torch.tensor([w + 6.0, h + 6.0]) - 3.0
    wh = torch.rand(k, 2, generator=gen) ** 2 * torch.tensor([w + 4.0, h + 4.0])
    n = k // 8
    wh[:n] *= 0.02  # tiny (sub-pixel)
    wh[n : 2 * n] += torch.tensor([2.0 * w, 2.0 * h])  # much larger than the map
    wh[2 * n : 3 * n] -= 2.0  # often inverted (matters for aligned=True)
    xy0[3 * n : 4 * n] -= torch.tensor([w / 2, h / 2])  # hanging off the top-left
    return torch.cat((bidx[:, None], xy0, xy0 + wh), dim=1)


def gen_roi_align() -> None:
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(2, 2, 10, 13, generator=gen)
    rois = random_rois(gen, 64, 2, 10, 13)
    tensors = {"input": x, "rois": rois}
    cases = []
    for aligned in (False, True):
        for sampling_ratio in (-1, 2):
            for output_size in (7, (3, 4)):
                for spatial_scale in (1.0, 0.5):
                    name = f"out_{len(cases)}"
                    tensors[name] = torchvision.ops.roi_align(
                        x, rois, output_size, spatial_scale, sampling_ratio, aligned
                    )
                    cases.append(
                        {
                            "name": name,
                            "aligned": aligned,
                            "sampling_ratio": sampling_ratio,
                            "output_size": output_size,
                            "spatial_scale": spatial_scale,
                        }
                    )
    # The list-of-boxes form, as the geometry encoder uses it.
    lst = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    tensors["list_boxes_0"], tensors["list_boxes_1"] = lst
    tensors["list_out"] = torchvision.ops.roi_align(x, lst, 7)
    save_fixture("ops_roi_align", tensors, {"cases": cases})


def random_masks(gen: torch.Generator, n: int, h: int, w: int) -> torch.Tensor:
    """Overlapping rectangles with ragged holes, plus one empty mask."""
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n - 1):
        y0, x0 = (
            torch.randint(0, h - 4, (1,), generator=gen).item(),
            torch.randint(0, w - 4, (1,), generator=gen).item(),
        )
        hh = torch.randint(2, h - y0 + 1, (1,), generator=gen).item()
        ww = torch.randint(2, w - x0 + 1, (1,), generator=gen).item()
        masks[i, y0 : y0 + hh, x0 : x0 + ww] = True
        masks[i] &= torch.rand(h, w, generator=gen) > 0.15
    # a duplicate, so that some IoUs are exactly 1
    masks[n - 2] = masks[0]
    return masks


def gen_nms() -> None:
    gen = torch.Generator().manual_seed(99)
    masks = random_masks(gen, 24, 20, 18)
    scores = torch.rand(24, generator=gen)
    ious = official_mask_iou(masks, masks)
    tensors = {"masks": masks, "scores": scores, "mask_ious": ious}
    thresholds = [0.0, 0.1, 0.3, 0.5, 0.9]
    for i, t in enumerate(thresholds):
        tensors[f"mask_keep_{i}"] = generic_nms_cpu(ious, scores, t)
    other = random_masks(gen, 7, 20, 18)
    tensors["masks_other"] = other
    tensors["mask_ious_other"] = official_mask_iou(masks, other)

    xy0 = torch.rand(40, 2, generator=gen) * 50
    boxes = torch.cat((xy0, xy0 + 5 + torch.rand(40, 2, generator=gen) * 30), dim=1)
    box_scores = torch.rand(40, generator=gen)
    tensors["boxes"] = boxes
    tensors["box_scores"] = box_scores
    tensors["box_ious"] = torchvision.ops.box_iou(boxes, boxes)
    for i, t in enumerate(thresholds):
        tensors[f"box_keep_{i}"] = torchvision.ops.nms(boxes, box_scores, t)

    tensors["boxes_inclusive"] = torchvision.ops.masks_to_boxes(masks)
    # The official helper only broadcasts correctly for one mask at a time (N == 1).
    tensors["boxes_exclusive"] = torch.cat(
        [official_masks_to_boxes_exclusive(m[None]) for m in masks]
    )
    save_fixture("ops_nms", tensors, {"thresholds": thresholds})


# ----------------------------------------------------------------------------------------------
# geometry encoder
# ----------------------------------------------------------------------------------------------


def gen_geometry_encoder() -> None:
    cfg = tiny_config()
    d_model, side = cfg.d_model, cfg.feat_size
    enc = build_official_geometry_encoder(cfg)
    kept = load_synthetic(enc, PREFIX)
    assert not kept, kept

    gen = torch.Generator().manual_seed(7)
    feats = torch.randn(2, d_model, side, side, generator=gen)
    pos = PositionEmbeddingSine(num_pos_feats=d_model, normalize=True)(feats)
    tensors = {"img_feats": feats, "img_pos": pos}

    def cxcywh(*rows):
        return torch.tensor(rows, dtype=torch.float32)

    # Each case: batch size and batch-first prompt tensors (None = not given).
    cases = {
        "none": {"batch": 1},
        "one_box": {"batch": 1, "boxes": cxcywh([[0.4, 0.55, 0.3, 0.5]]), "box_labels": [[1]]},
        "pos_neg_boxes": {
            "batch": 1,
            "boxes": cxcywh([[0.3, 0.3, 0.2, 0.25], [0.7, 0.6, 0.5, 0.4], [0.05, 0.9, 0.3, 0.4]]),
            "box_labels": [[1, 0, 1]],
        },
        "padded_batch": {
            "batch": 2,
            "boxes": cxcywh(
                [[0.5, 0.5, 0.9, 0.9], [0.2, 0.7, 0.01, 0.02], [0.95, 0.1, 0.4, 0.3]],
                [[0.6, 0.4, 0.3, 0.3], [0.33, 0.21, 0.7, 0.1], [0.8, 0.8, 0.2, 0.2]],
            ),
            "box_labels": [[1, 0, 1], [0, 1, 1]],
            "box_mask": [[False, False, False], [False, True, True]],
        },
        "points": {
            "batch": 2,
            "points": cxcywh(
                [[0.1, 0.2], [0.5, 0.5], [0.99, 0.01], [0.7, 0.3]],
                [[0.25, 0.75], [0.0, 1.0], [0.4, 0.6], [0.6, 0.4]],
            ),
            "point_labels": [[1, 0, 1, 1], [0, 1, 0, 0]],
            "point_mask": [[False, False, False, False], [False, False, True, True]],
        },
        "boxes_and_points": {
            "batch": 2,
            "boxes": cxcywh(
                [[0.5, 0.4, 0.6, 0.3], [0.1, 0.1, 0.15, 0.15]],
                [[0.3, 0.6, 0.2, 0.5], [0.9, 0.9, 0.3, 0.3]],
            ),
            "box_labels": [[1, 1], [0, 1]],
            "box_mask": [[False, False], [False, True]],
            "points": cxcywh([[0.45, 0.4], [0.8, 0.2]], [[0.3, 0.6], [0.2, 0.2]]),
            "point_labels": [[1, 0], [1, 1]],
            "point_mask": [[False, True], [False, False]],
        },
    }
    meta_cases = {}
    for name, case in cases.items():
        b = case["batch"]
        given = {}
        for key in ("boxes", "box_labels", "box_mask", "points", "point_labels", "point_mask"):
            if key in case:
                value = case[key]
                if not isinstance(value, torch.Tensor):
                    dtype = torch.bool if key.endswith("mask") else torch.long
                    value = torch.tensor(value, dtype=dtype)
                given[key] = value
                tensors[f"{name}.{key}"] = value
        # Official Prompt: sequences seq-first (N, B, C), masks batch-first (B, N). With no
        # boxes and no points the detector passes an empty (0, B, 4) box prompt.
        seq_first = {
            k: (v.transpose(0, 1) if k in ("boxes", "points", "box_labels", "point_labels") else v)
            for k, v in given.items()
        }
        if "boxes" not in seq_first and "points" not in seq_first:
            seq_first["boxes"] = torch.zeros(0, b, 4)
            seq_first["box_mask"] = torch.zeros(b, 0, dtype=torch.bool)
        prompt = Prompt(
            box_embeddings=seq_first.get("boxes"),
            box_mask=seq_first.get("box_mask"),
            box_labels=seq_first.get("box_labels"),
            point_embeddings=seq_first.get("points"),
            point_mask=seq_first.get("point_mask"),
            point_labels=seq_first.get("point_labels"),
        )
        img = feats[:b].flatten(2).permute(2, 0, 1)  # (HW, B, C)
        img_pos = pos[:b].flatten(2).permute(2, 0, 1)
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            out, mask = enc(
                geo_prompt=prompt,
                img_feats=[img],
                img_sizes=[(side, side)],
                img_pos_embeds=[img_pos],
            )
        tensors[f"{name}.tokens"] = out.transpose(0, 1)  # batch-first (B, L, C)
        tensors[f"{name}.mask"] = mask
        meta_cases[name] = {"batch": b, "given": sorted(given), "length": int(out.shape[0])}
        print(f"{name}: tokens {tuple(out.shape)} valid {(~mask).sum(1).tolist()}")

    keys = {k: list(v.shape) for k, v in enc.state_dict().items()}
    save_fixture(
        "geometry_encoder",
        tensors,
        {"prefix": PREFIX, "cases": meta_cases, "official_keys": keys, "feat_size": side},
    )


if __name__ == "__main__":
    torch.manual_seed(0)
    gen_roi_align()
    gen_nms()
    gen_geometry_encoder()
