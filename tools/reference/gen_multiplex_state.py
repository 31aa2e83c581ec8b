"""Fixture: the OFFICIAL SAM 3.1 bucket bookkeeping, memory read and tracker state.

Writes ``tests/fixtures/multiplex_state.pt``, read by ``tests/test_multiplex_state.py`` (the
``MultiplexState`` cases) and ``tests/test_multiplex_tracking.py`` (``plans`` and ``track/``).

The official class lives in ``sam3/model/multiplex_utils.py`` of facebookresearch/sam3 (SAM 3.1,
the overlay's commit 6dbb02b, see ``sam31_sources.txt``; the file is the same at 1beb583); it
comes from the SAM 3.1 reference overlay (``tools/reference/setup_reference_31.sh``)::

    ~/.cache/sam3-reference-31/bin/python tools/reference/gen_multiplex_state.py

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

import importlib
import random

import _common31  # noqa: F401  (3.1 overlay first on sys.path, CPU patches)
import torch
from _common import drop_bf16_casts, load_synthetic, save_fixture

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


def load_official():
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


# --------------------------------------------------------------------------------------------
# The official tracker state driven as the SAM 3.1 video logic drives it
# --------------------------------------------------------------------------------------------
TRACK_FRAMES = 5
TRACK_VIDEO = (180, 240)  # (H, W): births go through the video resolution, as officially


def track_features(model, cfg, frame_idx: int):
    """Seeded raw tracker pyramids of a frame (interactive, propagation), each a list of 3
    levels and 3 position encodings (batch 1), the same values our test draws."""
    g = torch.Generator().manual_seed(2000 + frame_idx)
    c, h = cfg.d_model, cfg.feat_size
    sizes = [(1, c, 4 * h, 4 * h), (1, c, 2 * h, 2 * h), (1, c, h, h)]
    pyramids = []
    for _ in range(2):
        levels = [torch.randn(sz, generator=g) for sz in sizes]
        pos = [torch.randn(sz, generator=g) for sz in sizes]
        pyramids.append((levels, pos))
    return pyramids


def track_masks(ids, size: int) -> torch.Tensor:
    """Birth masks at the mask-prompt size: seeded blobs (they may overlap)."""
    g = torch.Generator().manual_seed(77)
    masks = torch.zeros(len(ids), size, size, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for k in range(len(ids)):
        cy, cx = (torch.rand(2, generator=g) * size * 0.8 + size * 0.1).tolist()
        r = float(torch.rand(1, generator=g)) * size * 0.15 + size * 0.08
        masks[k] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return masks


def run_tracking(cfg) -> dict:
    """The official tracker state through the 3.1 video logic's calls, recording each step.

    Frame 0: births of objects 1..5 in a new state (2 buckets at the tiny 4 slots). Frames
    1..4: tracked one at a time without memory, then the frame's memory encoded from the
    tracker's own masks after the official pixel-wise shrinkage suppression, with +-10 score
    proxies (`_tracker_update_memories`). On frame 2, after its update: objects 6 and 7 join
    the state (backfill into free slots). On frame 3, before its update: object 3 is
    reconditioned with a mask. After frame 3: objects 2, 5, 6, 7 are removed (bucket 1 empties
    and is dropped, object 2's slot becomes REMOVED).
    """
    from official_builders_31 import build_official_31_tracker_model
    from sam3.model.data_misc import NestedTensor

    model = build_official_31_tracker_model(cfg)
    load_synthetic(model, "tracker.model.")
    cache = {}
    for t in range(TRACK_FRAMES):
        backbone_out = {}
        for (levels, pos), key, dec in zip(
            track_features(model, cfg, t),
            ("interactive", "sam2_backbone_out"),
            (model.interactive_sam_mask_decoder, model.sam_mask_decoder),
        ):
            fpn = [dec.conv_s0(levels[0]), dec.conv_s1(levels[1]), levels[2]]
            backbone_out[key] = {
                "vision_features": fpn[-1],
                "vision_mask": None,
                "vision_pos_enc": pos,
                "backbone_fpn": [NestedTensor(x, None) for x in fpn],
            }
        cache[t] = (torch.zeros(1, 3, cfg.image_size, cfg.image_size), backbone_out)
    h, w = TRACK_VIDEO
    state = model.init_state(
        video_height=h, video_width=w, num_frames=TRACK_FRAMES, cached_features=cache
    )
    masks = track_masks(list(range(8)), cfg.input_mask_size)
    out = {"masks": masks}
    size = tuple(model.maskmem_backbone.mask_downsampler.interpol_size)

    def stored(t: int):
        od = state["output_dict"]  # the state being recorded (rebound for the clicks)
        return od["cond_frame_outputs"].get(t, od["non_cond_frame_outputs"].get(t))

    def record(tag: str, t: int) -> None:
        frame = stored(t)
        for k in ("pred_masks", "object_score_logits", "obj_ptr", "maskmem_features"):
            out[f"{tag}/{k}"] = frame[k].clone()
        out[f"{tag}/conditioning"] = torch.tensor(sorted(frame["conditioning_objects"]))

    def update(t: int) -> None:
        low = state["output_dict"]["non_cond_frame_outputs"][t]["pred_masks"]
        high = torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)
        high = model._suppress_object_pw_area_shrinkage(high)
        proxy = torch.where((high > 0).any(dim=(-1, -2)), 10.0, -10.0)
        n = len(state["obj_ids"])
        mem, pos, img, img_pos = model._run_memory_encoder(
            state, t, n, high, proxy, is_mask_from_pts=False
        )
        stored(t).update(
            maskmem_features=mem, maskmem_pos_enc=pos, image_features=img, image_pos_enc=img_pos
        )
        out[f"{t}/update_scores"] = proxy

    model.add_new_masks(state, frame_idx=0, obj_ids=[1, 2, 3, 4, 5], masks=masks[:5])
    model.propagate_in_video_preflight(state, run_mem_encoder=True)
    record("0", 0)
    for t in range(1, TRACK_FRAMES):
        (step,) = list(
            model.propagate_in_video(
                state, t, 0, reverse=False, tqdm_disable=True, run_mem_encoder=False
            )
        )
        # (clones: the official state later edits these tensors in place)
        out[f"{t}/tracked_masks"] = step[2].clone()
        out[f"{t}/tracked_scores"] = step[4].clone()
        if t == 3:  # reconditioning comes before the frame's memory update
            model.add_new_masks(state, 3, [3], masks[5:6], reconditioning=True)
            model.propagate_in_video_preflight(state, run_mem_encoder=True)
            record("3/reconditioned", 3)
        update(t)
        record(str(t), t)
        if t == 2:  # births into the existing state come after the update
            model.add_new_masks(state, 2, [6, 7], masks[6:8])
            model.propagate_in_video_preflight(state, run_mem_encoder=True)
            record("2/backfilled", 2)
        if t == 3:
            model.remove_objects(state, [2, 5, 6, 7], strict=True, need_output=False)
            for f in range(4):
                record(f"removed/{f}", f)
    assert state["obj_ids"] == [1, 3, 4], state["obj_ids"]

    # Clicks on new objects: each gets a state of its own (official `add_sam2_new_points`);
    # the partial propagation then tracks it with memory encoding on.
    clicks = {
        "click1": (9, [[0.4, 0.55]], [1]),  # one click: 3 candidates
        "click2": (10, [[0.3, 0.3], [0.7, 0.6]], [1, 0]),  # two: a single mask
    }
    for tag, (obj_id, points, labels) in clicks.items():
        cstate = model.init_state(
            video_height=h, video_width=w, num_frames=TRACK_FRAMES, cached_features=cache
        )
        model.add_new_points(
            cstate,
            1,
            obj_id,
            torch.tensor(points, dtype=torch.float32),
            torch.tensor(labels, dtype=torch.int32),
            clear_old_points=True,
            rel_coordinates=True,
        )
        model.propagate_in_video_preflight(cstate, run_mem_encoder=True)
        state = cstate
        record(f"{tag}/1", 1)
        out[f"{tag}/points"] = torch.tensor(points) * cfg.image_size
        out[f"{tag}/labels"] = torch.tensor(labels)
        for t in (2, 3):
            (step,) = list(
                model.propagate_in_video(
                    cstate, t, 0, reverse=False, tqdm_disable=True, run_mem_encoder=True
                )
            )
            record(f"{tag}/{t}", t)
    return out


def main() -> None:
    mu = load_official()
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
    from sam3video.model.config import sam31_tiny_config

    drop_bf16_casts()  # the official state casts memories to bfloat16: keep float32
    with torch.no_grad():
        for key, value in run_tracking(sam31_tiny_config()).items():
            tensors[f"track/{key}"] = value
    print("tracking:", sorted(k for k in tensors if k.startswith("track/"))[:6], "...")
    plans = {}
    for name, seed, count, stride in PLAN_CASES:
        plans[name] = run_plan_case(mu, mu_tracking, seed, count, stride)
        print(name, len(plans[name]), "scenarios")
    save_fixture(
        "multiplex_state",
        tensors,
        {
            "official_commit": COMMIT,
            "track_frames": TRACK_FRAMES,
            "track_video_size": list(TRACK_VIDEO),
            "source": "sam3/model/multiplex_utils.py, sam3/model/video_tracking_multiplex.py",
            "cases": cases,
            "plans": plans,
        },
    )


if __name__ == "__main__":
    main()
