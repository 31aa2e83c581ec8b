"""The tracker's memory cross-attention at full size, before and after its two CPU changes.

    python benchmarks/attention.py --threads 1

One layer of ``tracker.transformer.encoder`` cross-attention for one object with a full
memory bank: 72x72 = 5,184 query tokens against 7 spatial memories of 5,184 tokens plus
64 object-pointer tokens (36,352 keys), width 256, one head, 64-wide memories. Timed:

- ``sdpa, values projected``: the textbook order (values projected to 256 before the
  attention) through ``torch.nn.functional.scaled_dot_product_attention`` (before);
- ``sdpa, values folded``: the value projection applied after the attention (64-wide values
  in the attention; `RoPEAttention.fold_values`);
- ``blocked, values folded``: `sam3video.model.common.long_attention` (blocks of 512
  queries, two plain matmuls, in-place exponent, normalisation on the output) — what
  sam3video runs on the CPU in float32 (after).

Each variant's FLOPs (2 per multiply-add of the QK^T and attn@V products) and its time as a
multiple of the FLOP bound at this run's fp32 GEMM rate. Best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _bench import gemm_rate, markdown_table, report

from sam3video.model.common import long_attention

QUERIES, KEYS, WIDTH, MEM = 72 * 72, 7 * 72 * 72 + 64, 256, 64


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, QUERIES, WIDTH, generator=g)
    k = torch.randn(1, 1, KEYS, WIDTH, generator=g)
    memory = torch.randn(1, 1, KEYS, MEM, generator=g)
    w_v = torch.randn(WIDTH, MEM, generator=g) / MEM**0.5
    v = torch.matmul(memory, w_v.T)  # the projected values of the textbook order

    variants = {
        "sdpa, values projected (before)": (
            lambda: F.scaled_dot_product_attention(q, k, v), WIDTH),
        "sdpa, values folded": (
            lambda: torch.matmul(F.scaled_dot_product_attention(q, k, memory), w_v.T), MEM),
        "blocked, values folded (after)": (
            lambda: torch.matmul(long_attention(q, k, memory), w_v.T), MEM),
    }
    reference = variants["sdpa, values projected (before)"][0]()
    rate = gemm_rate()
    rows = []
    base = None
    for name, (fn, v_width) in variants.items():
        err = (fn() - reference).abs().max().item()
        seconds = best_time(fn, args.repeat)
        flops = 2 * QUERIES * KEYS * (WIDTH + v_width)
        base = base or seconds
        rows.append([name, flops / 1e9, seconds, flops / rate, seconds / (flops / rate),
                     base / seconds, f"{err:.1e}"])
    lines = markdown_table(
        ["variant", "GFLOP", "s (best)", "FLOP bound s", "s / bound", "speed-up vs before",
         "max abs diff vs before"], rows)
    lines += ["", f"One memory cross-attention layer, one object, full size ({QUERIES} queries, "
              f"{KEYS} keys, width {WIDTH}, memories {MEM} wide); float32, {args.threads} "
              f"thread(s); best of {args.repeat}; fp32 GEMM 2048^3 rate {rate / 1e9:.1f} GFLOP/s "
              f"(same run). The tracker runs 4 such layers per object and frame."]
    report("memory attention (full, float32)", lines, not args.no_record, threads=args.threads)


if __name__ == "__main__":
    main()
