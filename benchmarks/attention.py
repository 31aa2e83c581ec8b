"""The tracker's memory cross-attention at full size: the fused kernel and CPU variants.

    python benchmarks/attention.py --threads 1

One layer of ``tracker.transformer.encoder`` cross-attention for one object with a full
memory bank: 72x72 = 5,184 query tokens against 7 spatial memories of 5,184 tokens plus
64 object-pointer tokens (36,352 keys), width 256, one head, 64-wide memories. Timed:

- ``sdpa, values projected``: the textbook order (values projected to 256 before the
  attention) through ``torch.nn.functional.scaled_dot_product_attention`` — what sam3video
  runs on CUDA and MPS (and ran on the CPU before session 3);
- ``sdpa, values folded``: the value projection applied after the attention (softmax rows
  sum to 1, so ``attn @ (m W^T + b) = (attn @ m) W^T + b``): 64-wide values, 37% fewer FLOPs;
- ``blocked, fresh scores``: `fresh_blocked_attention` below (blocks of ``--rows`` queries,
  a new score block per step, five element-wise passes), folded values — tried in session 2
  and reverted: on a quiet machine it did not beat the fused kernel;
- ``blocked, reused buffer``: sam3video's `blocked_attention` (one score buffer reused for
  every block, query pre-scaled, the fused softmax in place), folded values — what
  sam3video runs on the CPU in float32 since session 3. The difference to the previous
  variant is memory traffic: a fresh 74 MB score block per step costs its page faults, and
  the separate max/subtract/exp/sum passes each stream it again.

Each variant's FLOPs (2 per multiply-add of the QK^T and attn@V products) and its time as a
multiple of the FLOP bound at this run's fp32 GEMM rate, of its own FLOPs and of the
textbook order's (the model's FLOPs). Best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _bench import gemm_rate, markdown_table, report

from sam3video.model.memory_attention import blocked_attention

QUERIES, KEYS, WIDTH, MEM = 72 * 72, 7 * 72 * 72 + 64, 256, 64


def fresh_blocked_attention(q, k, v, rows: int):
    """Exact softmax attention over blocks of ``rows`` queries, a fresh score block each."""
    scale = q.shape[-1] ** -0.5
    k_t = k.transpose(-1, -2)
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    for start in range(0, q.shape[-2], rows):
        scores = torch.matmul(q[..., start : start + rows, :], k_t).mul_(scale)
        scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
        block = torch.matmul(scores, v).div_(scores.sum(dim=-1, keepdim=True))
        out[..., start : start + rows, :] = block
    return out


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
    ap.add_argument("--rows", type=int, default=512, help="query block of the blocked variant")
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
        "sdpa, values projected (textbook)": (
            lambda: F.scaled_dot_product_attention(q, k, v), WIDTH),
        "sdpa, values folded": (
            lambda: torch.matmul(F.scaled_dot_product_attention(q, k, memory), w_v.T), MEM),
        f"blocked ({args.rows} rows), fresh scores, values folded": (
            lambda: torch.matmul(fresh_blocked_attention(q, k, memory, args.rows), w_v.T), MEM),
        f"blocked ({args.rows} rows), reused buffer, values folded (sam3video, CPU)": (
            lambda: torch.matmul(blocked_attention(q, k, memory, args.rows), w_v.T), MEM),
    }
    reference = variants["sdpa, values projected (textbook)"][0]()
    rate = gemm_rate()
    rows = []
    base = None
    textbook = 2 * QUERIES * KEYS * (WIDTH + WIDTH)
    for name, (fn, v_width) in variants.items():
        err = (fn() - reference).abs().max().item()
        seconds = best_time(fn, args.repeat)
        flops = 2 * QUERIES * KEYS * (WIDTH + v_width)
        base = base or seconds
        rows.append([name, flops / 1e9, seconds, flops / rate, seconds / (flops / rate),
                     seconds / (textbook / rate), base / seconds, f"{err:.1e}"])
    lines = markdown_table(
        ["variant", "GFLOP", "s (best)", "FLOP bound s", "s / own bound",
         "s / textbook bound", "speed-up vs sdpa", "max abs diff vs sdpa"], rows)
    lines += ["", f"One memory cross-attention layer, one object, full size ({QUERIES} queries, "
              f"{KEYS} keys, width {WIDTH}, memories {MEM} wide); float32, {args.threads} "
              f"thread(s); best of {args.repeat}; fp32 GEMM 2048^3 rate {rate / 1e9:.1f} GFLOP/s "
              f"(same run). The tracker runs 4 such layers per object and frame."]
    report("memory attention (full, float32)", lines, not args.no_record, threads=args.threads)


if __name__ == "__main__":
    main()
