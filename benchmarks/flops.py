"""FLOPs per frame (trunk, necks, detector heads, tracker) and the machine's fp32 GEMM rate.

    python benchmarks/flops.py                     # full size, counted on the meta device
    python benchmarks/flops.py --objects 1 4 16    # tracker FLOPs per object count

Counts use `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and attention;
element-wise ops are not counted) on the ``meta`` device: the full model is built without
memory and every forward only propagates shapes, so this runs in seconds. Per frame of a
full propagation:

- trunk: the ViT (``detector.backbone.vision_backbone.trunk``) on one 1008x1008 image;
- necks: both FPN necks (detector ``convs`` and tracker ``sam2_convs``);
- heads: ``forward_grounding`` with a text prompt (fusion encoder, decoder, scoring,
  segmentation head);
- tracker: `Sam3Tracker.prepare_features` + one ``track_step`` for N objects with a full
  memory bank (1 conditioning frame + 6 previous frames with spatial memory, 16 object
  pointers; memory encoder off) + the deferred ``encode_memory`` of the N masks.

The GEMM rate is measured with a square fp32 ``torch.mm`` (``--gemm-size``) at each thread
count of ``--threads``; the FLOP bound of a frame is its FLOPs divided by that rate (the time
a frame would take if it ran at the machine's best matmul speed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _bench import (  # noqa: E402
    gemm_rate,
    markdown_table,
    report,
)
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from sam3video.model.build import build_model_skeleton  # noqa: E402
from sam3video.model.tracker import FrameMemory  # noqa: E402


class _MetaSafeAutocast(torch.autocast):
    """``torch.autocast(device_type="meta")`` is an error; count as if on the CPU (the model
    opens ``enabled=False`` autocast regions with its inputs' device type)."""

    def __init__(self, device_type: str, *args, **kwargs) -> None:
        super().__init__("cpu" if device_type == "meta" else device_type, *args, **kwargs)


torch.autocast = _MetaSafeAutocast  # this script only


def count(fn) -> tuple[int, object]:
    mode = FlopCounterMode(display=False)
    with mode:
        out = fn()
    return mode.get_total_flops(), out


def model_flops(config: str, objects: list[int]) -> tuple[dict[str, int], dict[int, int]]:
    model = build_model_skeleton(config, device="meta").eval()
    cfg = model.config
    det, trk = model.detector, model.tracker
    s, c = cfg.image_size, cfg.d_model
    image = torch.zeros(1, 3, s, s, device="meta")
    parts: dict[str, int] = {}
    with torch.inference_mode():
        parts["trunk"], _ = count(lambda: det.backbone.vision_backbone.trunk(image))
        total, neck = count(lambda: det.backbone.forward_image(image))
        parts["necks"] = total - parts["trunk"]
        text = torch.zeros(1, cfg.text.context_length, c, device="meta")
        mask = torch.zeros(1, cfg.text.context_length, dtype=torch.bool, device="meta")
        parts["heads"], _ = count(
            lambda: det.forward_grounding(neck.detector_feats, neck.detector_pos, text, mask)
        )
        tracker = {}
        feat, mem = cfg.feat_size, cfg.tracker.mem_dim
        for n in objects:
            def step(n=n):
                feats = trk.prepare_features(neck.tracker_feats, neck.tracker_pos).expand(n)

                def memory(score):
                    return FrameMemory(
                        maskmem_features=torch.zeros(n, mem, feat, feat, device="meta"),
                        obj_ptr=torch.zeros(n, c, device="meta"),
                        object_score_logits=torch.ones(n, 1, device="meta"),
                        iou_score=torch.ones(n, device="meta"),
                        eff_iou_score=score,
                    )

                t = 20  # current frame; frame 0 conditioning, 14..19 tracked
                cond = {0: memory(None)}
                non_cond = {f: memory(1.0) for f in range(t - 16, t)}
                out = trk.track_step(t, feats, cond, non_cond, 1000, run_mem_encoder=False)
                high = torch.zeros(n, 1, cfg.input_mask_size, cfg.input_mask_size,
                                   device="meta")
                trk.encode_memory(feats.vision, high, out.object_score_logits, binarize=False)

            tracker[n], _ = count(step)
    return parts, tracker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["tiny", "full"], default="full")
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--gemm-size", type=int, default=2048)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    parts, tracker = model_flops(args.model, args.objects)
    rates = {}
    for t in args.threads:
        torch.set_num_threads(t)
        rates[t] = gemm_rate(args.gemm_size)
    for t, r in rates.items():
        print(f"fp32 GEMM {args.gemm_size}^3, {t} thread(s): {r / 1e9:.1f} GFLOP/s", flush=True)
    rows = [[name, f / 1e9, *[f / r for r in rates.values()]] for name, f in parts.items()]
    for n, f in tracker.items():
        rows.append([f"tracker, {n} object(s)", f / 1e9, *[f / r for r in rates.values()]])
    for n, f in tracker.items():
        total = sum(parts.values()) + f
        rows.append([f"frame total, {n} object(s)", total / 1e9,
                     *[total / r for r in rates.values()]])
    lines = markdown_table(
        ["part", "GFLOP", *[f"bound s at {t} thread(s)" for t in rates]], rows)
    rate_text = ", ".join(f"{t} thread(s) {r / 1e9:.1f} GFLOP/s" for t, r in rates.items())
    lines += ["", f"Model {args.model}; FLOPs by FlopCounterMode on meta (matmul/conv/"
              f"attention only; 1 multiply-add = 2 FLOPs). fp32 GEMM {args.gemm_size}^3 best "
              f"rate: {rate_text}."]
    report(f"FLOPs ({args.model})", lines, not args.no_record, threads=max(args.threads))


if __name__ == "__main__":
    main()
