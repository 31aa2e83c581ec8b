"""Fixture: the OFFICIAL SAM 3.1 ``MultiplexState`` under random add/remove sequences.

Writes ``tests/fixtures/multiplex_state.pt``, read by ``tests/test_multiplex_state.py``.

The official class lives in ``sam3/model/multiplex_utils.py`` of facebookresearch/sam3 (SAM 3.1,
the overlay's commit 6dbb02b, see ``sam31_sources.txt``; the file is the same at 1beb583); it
needs only torch. It is imported from the SAM 3.1 reference overlay
(``tools/reference/setup_reference_31.sh``), or from the directory given with
``--official DIR`` (a folder holding that ``multiplex_utils.py``)::

    ~/.cache/sam3-reference-31/bin/python tools/reference/gen_multiplex_state.py
    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_multiplex_state.py --official DIR

Each case starts from the official controller's inference layout
(``MultiplexController(...).eval().get_state(n, random=False)``) and applies a seeded random
sequence of operations, recorded with the official state after each one:

- ``add``: ``find_next_batch_of_available_indices`` + ``add_objects`` (with fresh object ids,
  ``allow_new_buckets`` / ``prefer_new_buckets`` drawn at random; when new buckets are not
  allowed the count fits the free slots);
- ``remove``: ``remove_objects`` of a random subset, now and then all objects (its returned
  kept-bucket list recorded).

After every operation: the assignments ``(num_buckets, multiplex_count)`` int64, the object ids,
and ``mux(x)`` / ``demux(y)`` of seeded random ``x (N, 3)`` / ``y (num_buckets, M, 3)`` plus the
official ``get_valid_object_mask()``. A sequence ends when the official state is emptied (the
official sets ``assignments = None`` then).
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys

import _common  # noqa: F401  (CPU patches, src/ on sys.path)
import torch
from _common import save_fixture

COMMIT = "6dbb02bd38288df755dfa1378000a861e65b84f6"
# (name, multiplex_count, eval capacity, initial objects, operations, seed)
CASES = [
    ("m16", 16, 16, 5, 14, 0),
    ("m16_many", 16, 16, 40, 14, 1),
    ("m4", 4, 4, 3, 18, 2),
    ("m4_cap3", 4, 3, 7, 18, 3),
    ("m2", 2, 2, 1, 18, 4),
    ("m1", 1, 1, 2, 12, 5),
    ("m16_cap10", 16, 10, 23, 16, 6),
    ("m4_drain", 4, 4, 6, 12, 7),
]


def load_official(path: str | None):
    if path is not None:
        sys.path.insert(0, path)
        return importlib.import_module("multiplex_utils")
    return importlib.import_module("sam3.model.multiplex_utils")


def snapshot(mu, state, gen: torch.Generator, mc: int) -> dict:
    if state.assignments is None:  # official: every object removed
        return {
            "assignments": torch.zeros(0, mc, dtype=torch.long),
            "object_ids": [],
            "x": torch.zeros(0, 3),
            "mux": torch.zeros(0, mc, 3),
            "y": torch.zeros(0, mc, 3),
            "demux": torch.zeros(0, 3),
            "valid": torch.zeros(0, mc, dtype=torch.bool),
        }
    n, b = state.total_valid_entries, state.num_buckets
    x = torch.randn(n, 3, generator=gen)
    y = torch.randn(b, mc, 3, generator=gen)
    return {
        "assignments": torch.tensor(state.assignments, dtype=torch.long).view(b, mc),
        "object_ids": list(state.object_ids),
        "x": x,
        "mux": state.mux(x),
        "y": y,
        "demux": state.demux(y),
        "valid": state.get_valid_object_mask(),
    }


def run_case(mu, mc: int, cap: int, n0: int, n_ops: int, seed: int):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    ctrl = mu.MultiplexController(mc, eval_multiplex_count=cap).eval()
    next_id = 100
    ids = list(range(next_id, next_id + n0))
    next_id += n0
    state = ctrl.get_state(n0, torch.device("cpu"), torch.float32, random=False, object_ids=ids)
    steps = [{"op": "init", "count": n0, **snapshot(mu, state, gen, mc)}]
    for _ in range(n_ops):
        n = state.total_valid_entries
        if n == 0 or rng.random() < 0.55:
            allow = rng.random() < 0.7
            prefer = allow and rng.random() < 0.25
            limit = max(state.available_slots, 0) if not allow else 2 * cap + 3
            if limit == 0:
                allow, prefer, limit = True, False, 2 * cap + 3
            count = rng.randint(1, limit)
            new_ids = list(range(next_id, next_id + count))
            next_id += count
            indices = state.find_next_batch_of_available_indices(
                count, allow_new_buckets=allow, prefer_new_buckets=prefer
            )
            state.add_objects(
                indices,
                object_ids=new_ids,
                allow_new_buckets=allow,
                prefer_new_buckets=prefer,
            )
            step = {"op": "add", "count": count, "allow": allow, "prefer": prefer}
        else:
            # mostly a few objects; now and then all of them (the official drops the state)
            k = n if rng.random() < 0.08 else rng.randint(1, max(1, n // 2))
            removed = sorted(rng.sample(range(n), k))
            kept = state.remove_objects(removed)
            step = {"op": "remove", "indices": removed, "kept": kept}
        steps.append({**step, **snapshot(mu, state, gen, mc)})
        if state.assignments is None:
            break
    return steps


# (name, seed, number of scenarios, temporal stride)
PLAN_CASES = [("plan_r1", 10, 60, 1), ("plan_r3", 11, 20, 3)]


class _RecordingEncoder(torch.nn.Module):
    """Stands in for the memory attention: records what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict] = []

    def forward(self, **kwargs):
        self.calls.append(kwargs)
        return {"memory": kwargs["src"]}


def official_plan_tracker(mu_tracking, stride: int):
    """The official multiplex tracker class with only the attributes its memory read uses."""
    cls = mu_tracking.VideoTrackingMultiplex
    model = cls.__new__(cls)
    torch.nn.Module.__init__(model)
    model.training = False
    model.num_maskmem = 7
    model.hidden_dim = model.mem_dim = 4
    model.max_cond_frames_in_attn = 4
    model.keep_first_cond_frame = False
    model.memory_temporal_stride_for_eval = stride
    model.use_memory_selection = False
    model.save_image_features = True
    model.use_maskmem_tpos_v2 = True
    model.use_obj_ptrs_in_encoder = True
    model.max_obj_ptrs_in_encoder = 16
    model.only_obj_ptrs_in_the_past_for_eval = False
    model.use_signed_tpos_enc_to_obj_ptrs = False
    model.add_tpos_enc_to_obj_ptrs = True
    rows = torch.arange(1, 8, dtype=torch.float32).mul(1000).view(7, 1, 1, 1).expand(7, 1, 1, 4)
    model.maskmem_tpos_enc = torch.nn.Parameter(rows.clone())
    model._get_tpos_enc = lambda pos, device, max_abs_pos=None, dummy=False: torch.tensor(
        pos, dtype=torch.float32
    )[:, None].expand(-1, 4)
    model.transformer = torch.nn.Module()
    model.transformer.encoder = _RecordingEncoder()
    return model


def _stored(f: int, mc: int) -> dict:
    return {
        "maskmem_features": torch.full((1, 4, 1, 1), float(f)),
        "maskmem_pos_enc": [torch.zeros(1, 4, 1, 1)],
        "image_features": torch.full((1, 1, 4), float(f)),
        "image_pos_enc": torch.zeros(1, 1, 4),
        "obj_ptr": torch.full((1, mc, 4), float(f)),
    }


def run_plan_case(mu, mu_tracking, seed: int, count: int, stride: int) -> list[dict]:
    rng = random.Random(seed)
    mc = 2
    state = (
        mu.MultiplexController(mc).eval().get_state(1, torch.device("cpu"), torch.float32, False)
    )
    scenarios = []
    for _ in range(count):
        num_frames = rng.randint(2, 40)
        frames = list(range(num_frames))
        rng.shuffle(frames)
        n_cond = rng.randint(1, min(6, num_frames - 1))
        cond = frames[:n_cond]  # insertion order of the official dict
        frame_idx = frames[n_cond]
        density = rng.random()
        tracked = sorted(t for t in frames[n_cond + 1 :] if rng.random() < density)
        reverse = rng.random() < 0.4
        model = official_plan_tracker(mu_tracking, stride)
        output_dict = {
            "cond_frame_outputs": {t: _stored(t, mc) for t in cond},
            "non_cond_frame_outputs": {t: _stored(t, mc) for t in tracked},
        }
        model._prepare_memory_conditioned_features(
            frame_idx=frame_idx,
            is_init_cond_frame=False,
            current_vision_feats=[torch.zeros(1, 1, 4)],
            current_vision_masks=[None],
            current_vision_pos_embeds=[torch.zeros(1, 1, 4)],
            feat_sizes=[(1, 1)],
            output_dict=output_dict,
            num_frames=num_frames,
            track_in_reverse=reverse,
            multiplex_state=state,
        )
        (call,) = model.transformer.encoder.calls
        n_ptr = call["num_obj_ptr_tokens"]
        memory, pos = call["memory"][:, 0, 0], call["memory_pos"][:, 0, 0]
        n_spatial = memory.shape[0] - n_ptr
        spatial = [[int(memory[i]), int(round(float(pos[i]) / 1000)) - 1] for i in range(n_spatial)]
        pointers = [[int(memory[i]), int(pos[i])] for i in range(n_spatial, memory.shape[0], mc)]
        # image memories enter in the same order, with the same temporal rows
        image = call["memory_image"][:, 0, 0].tolist()
        assert [int(v) for v in image] == [f for f, _ in spatial]
        scenarios.append(
            {
                "num_frames": num_frames,
                "cond_frames": cond,
                "tracked_frames": tracked,
                "frame_idx": frame_idx,
                "reverse": reverse,
                "stride": stride,
                "spatial": spatial,
                "pointers": pointers,
            }
        )
    return scenarios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", help="folder holding the official multiplex_utils.py")
    args = parser.parse_args()
    mu = load_official(args.official)
    mu_tracking = importlib.import_module("sam3.model.video_tracking_multiplex")
    tensors, cases = {}, {}
    for name, mc, cap, n0, n_ops, seed in CASES:
        steps = run_case(mu, mc, cap, n0, n_ops, seed)
        meta_steps = []
        for i, step in enumerate(steps):
            entry = {}
            for key, value in step.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{name}/{i}/{key}"] = value
                else:
                    entry[key] = value
            meta_steps.append(entry)
        cases[name] = {"multiplex_count": mc, "capacity": cap, "steps": meta_steps}
        print(name, [s["op"] for s in steps], "final buckets", steps[-1]["assignments"].shape[0])
    plans = {}
    for name, seed, count, stride in PLAN_CASES:
        plans[name] = run_plan_case(mu, mu_tracking, seed, count, stride)
        print(name, len(plans[name]), "scenarios")
    save_fixture(
        "multiplex_state",
        tensors,
        {
            "official_commit": COMMIT,
            "source": "sam3/model/multiplex_utils.py, sam3/model/video_tracking_multiplex.py",
            "cases": cases,
            "plans": plans,
        },
    )


if __name__ == "__main__":
    main()
