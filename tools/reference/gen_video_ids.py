"""Object-id parity fixtures: many detector-born objects sharing the tracker (reference venv only).

Run from the repository root::

    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_video_ids.py          # tiny, ~3 min
    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_video_ids.py --full   # ~20-40 min

Why
---
Issue #12 item 12: at full size, with synthetic weights tuned so that detections sit near the
0.5 threshold, objects born on different frames or empty on their birth frame came back under
other object ids than the official ones. These scenarios put exactly that situation through
the official ``Sam3VideoPredictor`` (built and patched as in ``gen_video.py``: float32,
autocast off, bf16 casts dropped, CUDA calls on the CPU) and record every response per frame
and per object id, so that the product can be compared id by id.

Weight edits
------------
Every tensor is the synthetic one (``load_synthetic``), then a few are edited in place, in
both implementations alike (``meta["edits"]``: ``[key, "add" | "mul", value]``):

- ``detector.transformer.decoder.presence_token_head.layers.2.bias`` (add): shifts the
  presence logit, i.e. how many queries pass the 0.5 detection threshold and whether any
  reaches the 0.7 birth threshold once tracks exist;
- ``detector.segmentation_head.instance_seg_head.bias`` (add): shifts the pixel embedding, so
  the queries' masks range from empty through small blobs to most of the frame: several
  detections survive the mask NMS, some of them empty (at the tracker's input size too);
- ``tracker.maskmem_backbone.mask_downsampler.encoder.12.weight`` (mul 10): makes the spatial
  memory depend on the object's mask. With the plain synthetic weights the tracker all but
  ignores its memory: objects born from different detections become the same mask to ~1e-6
  within a frame or two, their object-score logits agree to ~1e-7, and then the two
  non-overlap rules (pixel-wise before the memory encoder, with the shrinkage suppression;
  object-wise by frame score in the outputs) are decided by float rounding: the official
  code and the product (or the official code on another machine) then hand the contested
  pixels, and with them the object's next memory, to different ids. That near-tie, not the
  bookkeeping, is what item 12 observed. With the edit, objects with different births stay
  distinct; "twins" (objects empty, or nearly so, on their birth frame: identical inputs up
  to an effect below rounding) do not, and which twin keeps its memory at the shrinkage
  suppression stays float chaos in the official code too: on the full-size scenario a 1e-6
  perturbation of one twin flips the official's own decision, and the official and product
  differences between twins are uncorrelated (tools/reference/README.md). The tests compare
  twins as groups.

Scenarios
---------
Tiny (``tiny_config()``, the 16-frame clip of ``video_clip.pt``, 272x640):

- ``video_ids_births.pt``: text "person" on frame 0, propagate forward over frames 0..7: six
  objects born on frame 0 (four of them empty there), and more born on every later frame
  (detections reach 0.7), each frame's newborns in a tracker state of their own; then a click
  adding a new object on frame 2 and a partial propagation forward from frame 2.
- ``video_ids_middle.pt``: text "person" on frame 3, propagate both ways: six objects born on
  frame 3 (four empty there), all removed by hotstart on frame 11 (unmatched for 8 frames),
  six new ones born on frame 12 (three empty), then the backward pass 2..0 with the new ones.

Full (``--full``, ``full_config()``): ``video_ids_full_clip.pt`` (5 frames of bikes.mp4, every
2nd frame, PIL bilinear to 320x240, JPEG quality 95) and ``video_ids_full.pt``: text "person"
on frame 0, propagate forward (0..4): six objects at frame 0, three of them empty at the
tracker's input size. ``--arrangement per-object`` writes ``video_ids_full_per_object.pt``: the
same with one tracker state per newborn (`one_state_per_object`), the official code's own
result under a mathematically equal change (the spread of its twin decisions).

Fixture layout (``meta["layout"]``): per step ``k`` and response ``j``:
``step{k}/{j}/obj_ids`` int64 (N,), ``step{k}/{j}/probs`` float32 (N,),
``step{k}/{j}/masks_z`` uint8: the N masks, each ``zlib.compress(np.packbits(mask.ravel()))``
concatenated, ``step{k}/{j}/masks_z_ends`` int64 (N,) their end offsets; ``step{k}/frames``.
``meta["steps"][k]``: request (official conventions), product_request, responses with
frame_index, obj_ids, mask_area, tracker_scores (the frame-wise scores of the output
non-overlap), hidden ids, contested pairs (overlap before the non-overlap, score gap), and
``state_after`` (tracked ids, max id, hotstart-removed ids, tracker states' object lists).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import tempfile
import time
import zlib

import _common
import gen_video as gv  # the patches of gen_video.py apply on import
import numpy as np
import official_builders as ob
import torch
from _common import load_synthetic, save_fixture
from PIL import Image

from sam3video.model.config import full_config, tiny_config

SID = gv.SID
PRESENCE_BIAS = "detector.transformer.decoder.presence_token_head.layers.2.bias"
INSTANCE_BIAS = "detector.segmentation_head.instance_seg_head.bias"
MASK_DOWNSAMPLER_OUT = "tracker.maskmem_backbone.mask_downsampler.encoder.12.weight"
OBJ_SCORE_W = "tracker.sam_mask_decoder.pred_obj_score_head.layers.2.weight"
OBJ_SCORE_B = "tracker.sam_mask_decoder.pred_obj_score_head.layers.2.bias"
# Tracker edits shared by every scenario of a size: object-specific memory, and object-score
# logits spread ~x100 (tiny) / x10 (full) around their usual ~3.1 / ~3.3.
TRACKER_TINY = [
    [MASK_DOWNSAMPLER_OUT, "mul", 10.0],
    [OBJ_SCORE_W, "mul", 100.0],
    [OBJ_SCORE_B, "add", -5.0],
]
TRACKER_FULL = [
    [MASK_DOWNSAMPLER_OUT, "mul", 10.0],
    [OBJ_SCORE_W, "mul", 10.0],
    [OBJ_SCORE_B, "add", -2.8],
]

EDITS_TINY = [[PRESENCE_BIAS, "add", 1.0], [INSTANCE_BIAS, "add", 1.0], *TRACKER_TINY]
EDITS_TINY_MIDDLE = [[PRESENCE_BIAS, "add", 0.5], [INSTANCE_BIAS, "add", 1.0], *TRACKER_TINY]
EDITS_FULL = [[PRESENCE_BIAS, "add", -0.2], [INSTANCE_BIAS, "add", -1.25], *TRACKER_FULL]
CLICK = [[0.4375, 0.3125]]  # normalised (x, y): (280, 85) px on the 640x272 clip

SESSIONS = {
    "births": {
        "edits": EDITS_TINY,
        "steps": [
            ("births", {"type": "add_prompt", "frame_index": 0, "text": "person"}),
            (
                "births",
                {
                    "type": "propagate_in_video",
                    "propagation_direction": "forward",
                    "start_frame_index": 0,
                    "max_frame_num_to_track": 7,
                },
            ),
            (
                "click",
                {
                    "type": "add_prompt",
                    "frame_index": 2,
                    "points": CLICK,
                    "point_labels": [1],
                    "obj_id": 1000,
                },
            ),
            (
                "click",
                {
                    "type": "propagate_in_video",
                    "propagation_direction": "forward",
                    "start_frame_index": 2,
                    "max_frame_num_to_track": 5,
                },
            ),
        ],
    },
    "middle": {
        "edits": EDITS_TINY_MIDDLE,
        "steps": [
            ("middle", {"type": "add_prompt", "frame_index": 3, "text": "person"}),
            (
                "middle",
                {
                    "type": "propagate_in_video",
                    "propagation_direction": "both",
                    "start_frame_index": 3,
                },
            ),
        ],
    },
}
SESSION_FULL = {
    "edits": EDITS_FULL,
    "steps": [
        ("full", {"type": "add_prompt", "frame_index": 0, "text": "person"}),
        (
            "full",
            {
                "type": "propagate_in_video",
                "propagation_direction": "forward",
                "start_frame_index": 0,
            },
        ),
    ],
}
FULL_CLIP = {"frames": 5, "step": 2, "size": (320, 240)}  # (W, H)

LAYOUT = __doc__[__doc__.index("Fixture layout") :]


def apply_edits(model: torch.nn.Module, edits: list) -> None:
    """The weight edits of ``meta["edits"]``, in place (what the test does to our model)."""
    state = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, op, value in edits:
            if op == "add":
                state[key].add_(value)
            elif op == "mul":
                state[key].mul_(value)
            else:
                raise ValueError(op)


def pack_masks(masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, H, W)`` bool -> zlib-compressed bit-packed masks and their end offsets."""
    chunks = [zlib.compress(np.packbits(m.reshape(-1).astype(bool)).tobytes(), 9) for m in masks]
    data = b"".join(chunks)
    ends = np.cumsum([len(c) for c in chunks]).astype(np.int64)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(
        0, dtype=torch.uint8
    ), torch.from_numpy(ends)


def product_request(req: dict, width: int, height: int) -> dict:
    out = dict(req)
    if out.get("points") is not None:
        out["points"] = [[x * width, y * height] for x, y in out["points"]]
    return out


class MemoryRecorder:
    """Observation only: the inputs of the memory update's shrinkage suppression.

    Per call of ``_tracker_update_memories``: the frame, the object ids in batch order, and per
    object its foreground area at the memory-encoder size (1152), the pixels where it is the
    pixel-wise argmax (the non-overlap it would keep) and whether it was kept (not suppressed),
    plus, per pair of objects, the largest logit difference (0 for bit-identical "twins").
    """

    def __init__(self, model) -> None:
        self.log: list[dict] = []
        update = model._tracker_update_memories
        shrink = model.tracker._suppress_object_pw_area_shrinkage
        current: dict = {}

        def wrapped_update(states, frame_idx, tracker_metadata, low_res_masks):
            current["frame"] = int(frame_idx)
            current["ids"] = gv._py(list(tracker_metadata["obj_ids_all_gpu"]))
            return update(
                states, frame_idx, tracker_metadata=tracker_metadata, low_res_masks=low_res_masks
            )

        def wrapped_shrink(pred_masks):
            out = shrink(pred_masks)
            n = pred_masks.shape[0]
            fg = pred_masks[:, 0] > 0
            win = pred_masks.argmax(dim=0)[0]
            self.log.append(
                {
                    "frame_index": current["frame"],
                    "obj_ids": current["ids"],
                    "area": fg.flatten(1).sum(1).tolist(),
                    "argmax_px": [int(((win == i) & fg[i]).sum()) for i in range(n)],
                    "kept": ((out > 0).flatten(1).sum(1) == fg.flatten(1).sum(1)).tolist(),
                    "max_abs_diff": [
                        [float((pred_masks[i] - pred_masks[j]).abs().max()) for j in range(n)]
                        for i in range(n)
                    ],
                }
            )
            return out

        model._tracker_update_memories = wrapped_update
        model.tracker._suppress_object_pw_area_shrinkage = wrapped_shrink

    def take(self) -> list[dict]:
        log, self.log = self.log, []
        return log


def one_state_per_object(model) -> None:
    """Arrangement "per-object": every newborn gets a tracker state of its own.

    Mathematically the same computation (every tracker op is per object; the memory update's
    non-overlap runs over all states together either way; the official code itself puts
    objects born on different frames in different states), but each object then runs as a
    batch of one, so objects with identical inputs get bit-identical results, whereas in one
    batched state the official arithmetic can differ between rows by float rounding.
    """
    add = model._tracker_add_new_objects

    def add_each(frame_idx, num_frames, new_obj_ids, new_obj_masks, tracker_states_local, **kwargs):
        for k, obj_id in enumerate(new_obj_ids):
            tracker_states_local = add(
                frame_idx=frame_idx,
                num_frames=num_frames,
                new_obj_ids=[obj_id],
                new_obj_masks=new_obj_masks[k : k + 1],
                tracker_states_local=tracker_states_local,
                **kwargs,
            )
        return tracker_states_local

    model._tracker_add_new_objects = add_each


class PostRecorder:
    """Observation only: the frame scores, hidden ids and overlaps the output step used."""

    def __init__(self, model) -> None:
        self.log: list[dict] = []
        post = model._postprocess_output

        def wrapped(
            state, out, removed_obj_ids=None, suppressed_obj_ids=None, unconfirmed_obj_ids=None
        ):
            hide = set(removed_obj_ids or ()) | set(suppressed_obj_ids or ())
            hide |= set(unconfirmed_obj_ids or ())
            masks = out["obj_id_to_mask"]
            scores = out["obj_id_to_tracker_score"]
            shown = [i for i in sorted(masks) if i not in hide and bool(masks[i].any())]
            contested = []
            for a in range(len(shown)):
                for b in range(a + 1, len(shown)):
                    overlap = int((masks[shown[a]] & masks[shown[b]]).sum())
                    if overlap:
                        sa, sb = (float(scores.get(shown[i], 0.0)) for i in (a, b))
                        gap = abs(sa - sb)
                        contested.append(
                            {
                                "obj_ids": [int(shown[a]), int(shown[b])],
                                "overlap_px": overlap,
                                "score_gap": gap,
                            }
                        )
            self.log.append(
                {
                    "tracker_scores": {int(k): float(v) for k, v in scores.items()},
                    "hidden": sorted(int(i) for i in hide),
                    "contested": contested,
                }
            )
            return post(state, out, removed_obj_ids, suppressed_obj_ids, unconfirmed_obj_ids)

        model._postprocess_output = wrapped

    def take(self) -> list[dict]:
        log, self.log = self.log, []
        return log


def state_summary(state: dict) -> dict:
    md = state["tracker_metadata"]
    if not md:
        return {"obj_ids": [], "max_obj_id": None, "hotstart_removed_obj_ids": [], "states": []}
    return {
        "obj_ids": gv._py(list(md["obj_ids_all_gpu"])),
        "max_obj_id": gv._py(md["max_obj_id"]),
        "hotstart_removed_obj_ids": gv._py(set(md["rank0_metadata"]["removed_obj_ids"])),
        "states": [gv._py(list(s["obj_ids"])) for s in state["tracker_inference_states"]],
    }


def play(
    predictor,
    name: str,
    session: dict,
    folder: str,
    video_hw: tuple[int, int],
    clip_fixture: str,
    config_name: str,
    arrangement: str = "batched",
) -> None:
    t0 = time.time()
    h, w = video_hw
    recorder = PostRecorder(predictor.model)
    memory = MemoryRecorder(predictor.model)
    sid = predictor.handle_request({"type": "start_session", "resource_path": folder})["session_id"]
    state = predictor._ALL_INFERENCE_STATES[sid]["state"]
    tensors: dict[str, torch.Tensor] = {}
    steps = []
    for k, (scenario, req) in enumerate(session["steps"]):
        sent = dict(req, session_id=sid)
        recorder.take()
        memory.take()
        n_actions = len(state["action_history"])
        items = []
        if req["type"] == "propagate_in_video":
            stream = predictor.handle_stream_request(sent)
            items = [(r["frame_index"], r["outputs"]) for r in stream]
        else:
            reply = predictor.handle_request(sent)
            items = [(reply["frame_index"], reply["outputs"])]
        posts = recorder.take()
        assert len(posts) == len(items), (len(posts), len(items))
        responses = []
        for j, ((frame, outputs), post) in enumerate(zip(items, posts)):
            masks = np.asarray(outputs["out_binary_masks"]).astype(bool)
            assert masks.shape[1:] == (h, w), masks.shape
            key = f"step{k}/{j}"
            ids = np.asarray(outputs["out_obj_ids"])
            tensors[f"{key}/obj_ids"] = torch.as_tensor(ids, dtype=torch.int64)
            probs = np.asarray(outputs["out_probs"])
            tensors[f"{key}/probs"] = torch.as_tensor(probs, dtype=torch.float32)
            tensors[f"{key}/masks_z"], tensors[f"{key}/masks_z_ends"] = pack_masks(masks)
            responses.append(
                dict(
                    frame_index=int(frame),
                    obj_ids=gv._py(list(outputs["out_obj_ids"])),
                    mask_area=[int(m.sum()) for m in masks],
                    **post,
                )
            )
        frames = [r["frame_index"] for r in responses]
        tensors[f"step{k}/frames"] = torch.tensor(frames, dtype=torch.int64)
        steps.append(
            {
                "scenario": scenario,
                "kind": req["type"],
                "request": req,
                "product_request": product_request(req, w, h),
                "actions": gv._py(state["action_history"][n_actions:]),
                "state_after": state_summary(state),
                "responses": responses,
                "memory_updates": memory.take(),
            }
        )
        print(f"[{name}] step {k} {req['type']}: state {steps[-1]['state_after']}")
        for r in responses:
            shown = {i: a for i, a in zip(r["obj_ids"], r["mask_area"]) if a}
            gaps = [c["score_gap"] for c in r["contested"] if c["score_gap"] > 0]
            print(
                f"   frame {r['frame_index']}: {shown}; smallest nonzero contested score gap "
                f"{min(gaps) if gaps else None}"
            )
    predictor.handle_request({"type": "close_session", "session_id": sid})
    model = predictor.model
    save_fixture(
        f"video_ids_{name}",
        tensors,
        {
            "session": name,
            "config": config_name,
            "video_size": [h, w],
            "clip_fixture": clip_fixture,
            "edits": session["edits"],
            "arrangement": arrangement,
            "heuristics": gv._py({k: getattr(model, k) for k in gv.HEURISTIC_NAMES}),
            "steps": steps,
            "layout": LAYOUT,
        },
    )
    print(f"[{name}] {time.time() - t0:.1f} s")


def build(cfg, edits: list):
    model = ob.build_official_video_model(cfg, bpe_path=str(_common.BPE_PATH))
    model.tracker.bf16_context.__exit__(None, None, None)  # autocast off (pure float32)
    kept = load_synthetic(model, "")
    assert all(k.endswith("freqs_cis") for k in kept), kept
    apply_edits(model, edits)
    return _common.official_predictor(model)


def tiny() -> None:
    clip = torch.load(_common.FIXTURES / "video_clip.pt", weights_only=False)
    data = clip["tensors"]["jpeg_bytes"].numpy().tobytes()
    ends = clip["tensors"]["jpeg_ends"].tolist()
    folder = tempfile.mkdtemp(prefix="sam3_video_ids_")
    for t, (a, b) in enumerate(zip([0] + ends[:-1], ends)):
        with open(os.path.join(folder, f"{t:05d}.jpg"), "wb") as f:
            f.write(data[a:b])
    hw = tuple(clip["meta"]["video_size"])
    for name, session in SESSIONS.items():
        predictor = build(tiny_config(), session["edits"])
        play(predictor, name, session, folder, hw, "video_clip.pt", "tiny")
    shutil.rmtree(folder)


def full(arrangement: str = "batched") -> None:
    import av
    from sam3.model.io_utils import load_resource_as_video_frames

    _common.chunk_mask_iou()
    cfg = full_config()
    folder = tempfile.mkdtemp(prefix="sam3_video_ids_full_")
    jpegs = []
    container = av.open(str(gv.VIDEO))
    for i, frame in enumerate(container.decode(video=0)):
        if i % FULL_CLIP["step"]:
            continue
        rgb = frame.to_ndarray(format="rgb24")
        img = Image.fromarray(rgb).resize(FULL_CLIP["size"], Image.BILINEAR)
        path = os.path.join(folder, f"{len(jpegs):05d}.jpg")
        img.save(path, quality=95)
        with open(path, "rb") as f:
            jpegs.append(f.read())
        if len(jpegs) == FULL_CLIP["frames"]:
            break
    container.close()
    images, h, w = load_resource_as_video_frames(folder, cfg.image_size, offload_video_to_cpu=True)
    assert (w, h) == FULL_CLIP["size"], (w, h)
    # The test rebuilds the loader's frames from the JPEG files (PIL bilinear to 1008, /255 in
    # float16, (x - 0.5) / 0.5 in float16); check that this recipe is exact here.
    for t, data in enumerate(jpegs):
        rgb = Image.open(io.BytesIO(data)).convert("RGB")
        u8 = torch.from_numpy(np.array(rgb.resize((cfg.image_size,) * 2, Image.BILINEAR)))
        x = (u8.permute(2, 0, 1).float() / 255).to(torch.float16)
        half = torch.tensor(0.5, dtype=torch.float16)
        assert torch.equal((x - half) / half, images[t]), f"frame {t}: loader recipe"
    sha = hashlib.sha256(images.contiguous().view(torch.int16).numpy().tobytes()).hexdigest()
    clip = torch.load(_common.FIXTURES / "video_ids_full_clip.pt", weights_only=False)
    if arrangement == "batched" or clip["meta"]["frames_f16_sha256"] != sha:
        save_fixture(
            "video_ids_full_clip",
            {
                "jpeg_bytes": torch.frombuffer(bytearray(b"".join(jpegs)), dtype=torch.uint8),
                "jpeg_ends": torch.tensor([len(b) for b in jpegs]).cumsum(0),
            },
            {
                "video": "shared/data/videos/bikes.mp4",
                "recipe": f"PyAV rgb24 frames 0, {FULL_CLIP['step']}, ... ({FULL_CLIP['frames']} "
                f"frames), PIL resize {FULL_CLIP['size']} BILINEAR, JPEG quality 95; model input: "
                "PIL resize (1008, 1008) BILINEAR of the decoded JPEG, /255 in float16, "
                "(x - 0.5) / 0.5 in float16",
                "video_size": [h, w],
                "frames_f16_sha256": sha,
            },
        )
    predictor = build(cfg, SESSION_FULL["edits"])
    name = "full"
    if arrangement == "per-object":
        one_state_per_object(predictor.model)
        name = "full_per_object"
    play(
        predictor, name, SESSION_FULL, folder, (h, w), "video_ids_full_clip.pt", "full", arrangement
    )
    shutil.rmtree(folder)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="the full-size scenario (slow)")
    ap.add_argument(
        "--arrangement",
        choices=["batched", "per-object"],
        default="batched",
        help="with --full: the official default (each frame's newborns batched in one tracker "
        "state) or one tracker state per object (video_ids_full_per_object.pt)",
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    full(args.arrangement) if args.full else tiny()


if __name__ == "__main__":
    main()
