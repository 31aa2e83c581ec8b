"""End-to-end parity fixtures of the OFFICIAL video predictor at tiny size (reference venv only).

Run from the repository root::

    ~/.cache/sam3-reference-venv/bin/python tools/reference/gen_video.py      # ~1-2 min, 2 cores

What it does
------------
1. Cuts ``NUM_FRAMES`` frames (every ``SOURCE_STEP``-th, from frame 0) of
   ``shared/data/videos/bikes.mp4`` into a temporary JPEG folder: PyAV decode,
   ``frame.to_ndarray(format="rgb24")`` (272x640), ``PIL.Image.fromarray(..).save(path,
   quality=95)``, files ``00000.jpg`` ...
2. Builds the official tiny video model (`official_builders.build_official_video_model` with
   ``tiny_config()``: ``Sam3VideoInferenceWithInstanceInteractivity`` with the heuristics of
   ``build_sam3_video_model(apply_temporal_disambiguation=True)``), fills EVERY key with the
   synthetic weights (prefix ``""``: keys ``detector.*`` and ``tracker.*``; the ViT RoPE
   ``freqs_cis`` buffers keep their computed values) and wraps it in an official
   ``Sam3VideoPredictor`` made with ``__new__`` (``.model``, ``.async_loading_frames=False``,
   ``.video_loader_type="cv2"``; the loader type is irrelevant for a JPEG folder).
3. Plays the request sequences of ``SESSIONS`` through ``handle_request`` /
   ``handle_stream_request`` exactly as a user sends them, and records every response.

The official JPEG-folder loader (``io_utils.load_video_frames_from_image_folder``) makes the
model input: ``TF.resize(PIL RGB image, (224, 224))`` (PIL bilinear with antialias),
``TF.to_tensor`` (/255, float32), stored in a float16 tensor, then ``(x - 0.5) / 0.5`` in float16.
The fixture stores the 224x224 uint8 images (lossless PNG); ``frames_from_uint8`` recreates the
loader's float16 frames from them bit for bit (asserted here), so a test can feed the identical
input.

Patches (all in this file or in ``_common``; none changes a number of the float32 model)
-------------------------------------------------------------------------------------------
- ``_common``: ``device="cuda"`` keyword arguments, ``.cuda()``, ``.pin_memory()``,
  ``Tensor.to("cuda")``, ``torch.cuda.is_available/current_device`` rerouted to the CPU.
- Pure float32, autocast off: the tracker constructor enters a CUDA bf16 autocast context
  (``tracker.bf16_context``); it is exited right after construction (on the CPU it would not
  apply anyway). The ``@torch.autocast(device_type="cuda")`` decorators of the official
  ``forward``/warm-up methods are unused here and do nothing on the CPU.
- Explicit bf16 casts neutralised: ``Tensor.to`` drops a ``torch.bfloat16`` dtype argument
  (``_to_without_bf16``). This hits exactly the official casts
  ``Sam3ImageOnVideoMultiGPU._build_multigpu_buffer_next_chunk`` (tracker backbone FPN levels
  cast to bf16 "for all-gather") and ``Sam3TrackerPredictor._run_single_frame_inference`` /
  ``_run_memory_encoder`` (``maskmem_features`` stored as bf16). The float16 storage of the
  input frames by the loader is KEPT (it is the input, recreated exactly by the test).
- ``sam3.perflib.connected_components.connected_components`` guarded for an empty batch (the
  official CPU path cannot ``torch.stack`` zero masks); non-empty batches go to the official
  CPU path (scikit-image ``label``, 8-connectivity).
- ``Sam3VideoPredictor._get_torch_and_gpu_properties`` / ``_get_session_stats`` (log strings
  built eagerly in ``start_session``; they query CUDA device properties) return ``""``.
- ``sam3_video_inference.tqdm`` replaced by a pass-through (no progress bars).
- ``perflib`` stays enabled (``USE_PERFLIB`` default "1"): boxes come from
  ``perflib.masks_ops.masks_to_boxes`` (inclusive max pixel index, like torchvision's).
- Heuristics: all at the defaults of ``build_sam3_video_model`` (listed in each meta); no
  attribute of the official model is changed.

Observation-only wrappers (they return the official results unchanged) record, per request,
the detector's kept detections per processed frame (``run_backbone_and_detection``), the
tracker's object-score logits per tracked frame (``_propogate_tracker_one_frame_local_gpu``,
both full and partial propagation) and, for every response, the frame-wise tracker scores and
hidden ids that ``_postprocess_output`` used (the scores decide the output non-overlap).

Fixtures (see tools/reference/README.md, section ``gen_video.py``)
-------------------------------------------------------------------
- ``video_clip.pt``: ``frames_png``/``frames_png_ends`` (the loader's 224x224 uint8 images,
  lossless PNG), ``jpeg_bytes``/``jpeg_ends`` (the JPEG files the official loader read); meta:
  recipe, (H, W) = (272, 640), sha256 of the float16 frames.
- ``video_main.pt`` (scenarios A, C, D, E, F, one session) and ``video_middle.pt`` (B, B2):
  per step the official request, the equivalent product request, the propagation mode the
  official code chose, every response (ids, probs, boxes, bit-packed masks, frame_stats) in
  order, and the debug logs above. ``meta["layout"]`` spells out every key.

With these synthetic weights every detection mask covers nearly the whole frame while the
tracker's masks cover ~20 % of it, so no track ever matches its detection (IoU < 0.5): the
text object born on the prompt frame is removed by the hotstart rule after 8 unmatched frames
(hidden in all buffered frames) and the detection is re-born as a new id on the next frame.
Object-score logits are ~3.10 for every object; two objects whose frame-wise scores are both
raw partial-propagation logits would tie to ~1e-4, so the scenarios avoid that pairing (each
response's meta lists the contested pixels and score gaps).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
import time

import _common
import av
import numpy as np
import official_builders as ob
import torch
import torchvision.transforms.functional as TF
from _common import load_synthetic, save_fixture
from PIL import Image

from sam3video.model.config import tiny_config

CFG = tiny_config()
VIDEO = _common.SHARED / "data" / "videos" / "bikes.mp4"
SOURCE_STEP = 2  # clip frame t = source frame SOURCE_STEP * t
NUM_FRAMES = 16
VIDEO_H, VIDEO_W = 272, 640
SID = "<session>"  # placeholder for the session id in the recorded requests

# Heuristics recorded in each session's meta (all at the defaults of build_sam3_video_model).
HEURISTIC_NAMES = [
    *ob.VIDEO_DEFAULTS,
    "trk_assoc_iou_thresh",
    "max_num_objects",
    "masklet_confirmation_consecutive_det_thresh",
    "o2o_matching_masklets_enable",
    "use_prev_mem_frame",
    "use_stateless_refinement",
    "refinement_detector_cond_frame_removal_window",
]

# Points: normalised [x, y] chosen so that x * 640 and y * 272 are exact (dyadic) floats:
# x = k / 128 (pixels multiples of 5), y = k / 16 (pixels multiples of 17).
CLICK_NEW = [[0.4375, 0.3125]]  # (280, 85) px
CLICK_REFINE = [[0.8125, 0.5], [0.25, 0.75]]  # (520, 136) px positive, (160, 204) px negative
CLICK_B2 = [[0.625, 0.5625]]  # (400, 153) px


def _step(scenario: str, request: dict) -> dict:
    return {"scenario": scenario, "request": dict(request, session_id=SID)}


SESSIONS: dict[str, list[dict]] = {
    "main": [
        # (A) text on frame 0, propagate forward over all frames
        _step("A", {"type": "add_prompt", "frame_index": 0, "text": "person"}),
        _step("A", {"type": "propagate_in_video", "propagation_direction": "forward"}),
        # (C) a NEW object clicked on frame 5 (id 2 = max_obj_id + 1), partial propagation
        _step(
            "C",
            {
                "type": "add_prompt",
                "frame_index": 5,
                "points": CLICK_NEW,
                "point_labels": [1],
                "obj_id": 2,
            },
        ),
        _step(
            "C",
            {
                "type": "propagate_in_video",
                "propagation_direction": "forward",
                "start_frame_index": 5,
            },
        ),
        # (D) refinement clicks (positive + negative) on the clicked object 2 on frame 6
        _step(
            "D",
            {
                "type": "add_prompt",
                "frame_index": 6,
                "points": CLICK_REFINE,
                "point_labels": [1, 0],
                "obj_id": 2,
            },
        ),
        _step(
            "D",
            {
                "type": "propagate_in_video",
                "propagation_direction": "forward",
                "start_frame_index": 6,
            },
        ),
        # (E) remove object 2, then propagate (fetch mode: cached outputs only)
        _step("E", {"type": "remove_object", "obj_id": 2}),
        _step(
            "E",
            {
                "type": "propagate_in_video",
                "propagation_direction": "both",
                "start_frame_index": 8,
            },
        ),
        # (F) reset, new text on frame 0, propagate forward
        _step("F", {"type": "reset_session"}),
        _step("F", {"type": "add_prompt", "frame_index": 0, "text": "bicycle"}),
        _step("F", {"type": "propagate_in_video", "propagation_direction": "forward"}),
    ],
    "middle": [
        # (B) text on frame 8, propagate both ways from frame 8
        _step("B", {"type": "add_prompt", "frame_index": 8, "text": "car"}),
        _step(
            "B",
            {
                "type": "propagate_in_video",
                "propagation_direction": "both",
                "start_frame_index": 8,
            },
        ),
        # (B2) refine the detector-born object 1 (born on frame 6 going backward) on frame 3;
        # partial propagation both ways from frame 3 (forward 3..15, then backward 2..0)
        _step(
            "B2",
            {
                "type": "add_prompt",
                "frame_index": 3,
                "points": CLICK_B2,
                "point_labels": [1],
                "obj_id": 1,
            },
        ),
        _step(
            "B2",
            {
                "type": "propagate_in_video",
                "propagation_direction": "both",
                "start_frame_index": 3,
            },
        ),
    ],
}

LAYOUT = """\
Replay: start a session on the clip of video_clip.pt, then send meta['steps'][k]['request']
(official conventions) or meta['steps'][k]['product_request'] (product conventions: points in
pixels [x, y]; boxes normalised [cx, cy, w, h]) in order, with the real session id in place
of '<session>'; 'propagate_in_video' goes to handle_stream_request, the rest to handle_request.
tensors (k = step index, j = response index within the step, in the order received):
  step{k}/{j}/obj_ids     int64 (N,)       outputs['out_obj_ids'] (ascending)
  step{k}/{j}/probs       float32 (N,)     outputs['out_probs']
  step{k}/{j}/boxes_xywh  float32 (N, 4)   outputs['out_boxes_xywh'] (normalised x0, y0, w, h)
  step{k}/{j}/masks       uint8 (N, H*W/8) np.packbits(out_binary_masks.reshape(N, H*W), axis=-1)
                          decode: np.unpackbits(m, axis=-1, count=H*W).reshape(N, H, W) > 0
  step{k}/frames          int64 (J,)       frame_index of every response of the step, in order
meta['steps'][k]:
  scenario, kind (request type), request, product_request
  actions      entries the official code appended to its action_history during the step; for
               propagate_in_video one per direction, 'type' = the mode it ran
               (propagation_full / propagation_partial / propagation_fetch)
  state_after  tracked obj_ids (global order), max_obj_id, hotstart_removed_obj_ids
  reply        for remove_object / reset_session ({'is_success': True})
  n_responses, responses[j]:
    frame_index, obj_ids, probs, probs_dtype, frame_stats (dict or None), mask_area (pixels
    per object, after the non-overlap), tracker_scores (frame-wise tracker score per object id
    that _postprocess_output used for the non-overlap; raw logits for objects of a partial
    propagation), hidden (removed / suppressed / unconfirmed ids passed to _postprocess_output),
    contested (pairs of shown objects: obj_ids, overlap_px before the non-overlap, score_gap)
  tracker_log  one entry per call of _propogate_tracker_one_frame_local_gpu (full propagation:
               every processed frame; partial: every frame, affected states only): frame,
               reverse, run_mem_encoder, obj_ids, score_logits (object-score logits),
               lowres_pos_frac (fraction of the hole-filled 64x64 logits > 0, per object)
  detector_log one entry per run_backbone_and_detection call (every processed frame, also in
               partial propagation and point prompts): frame, reverse, allow_new_detections,
               scores (probs of kept detections, after NMS and threshold), boxes_xyxy
"""


# --------------------------------------------------------------------------------------------
# Patches (see the module docstring)
_common.drop_bf16_casts()
_common.guard_empty_connected_components()

import sam3.model.sam3_video_inference as _svi  # noqa: E402

_svi.tqdm = lambda iterable, *args, **kwargs: iterable  # no progress bars

logging.getLogger("sam3").setLevel(logging.WARNING)
for name in list(logging.root.manager.loggerDict):
    if name.startswith("sam3"):
        logging.getLogger(name).setLevel(logging.WARNING)


# --------------------------------------------------------------------------------------------
def cut_clip(folder: str) -> list[bytes]:
    """Write the clip's JPEG files; return their bytes."""
    container = av.open(str(VIDEO))
    written = []
    for i, frame in enumerate(container.decode(video=0)):
        if i % SOURCE_STEP:
            continue
        rgb = frame.to_ndarray(format="rgb24")
        assert rgb.shape == (VIDEO_H, VIDEO_W, 3), rgb.shape
        path = os.path.join(folder, f"{len(written):05d}.jpg")
        Image.fromarray(rgb).save(path, quality=95)
        with open(path, "rb") as f:
            written.append(f.read())
        if len(written) == NUM_FRAMES:
            break
    container.close()
    assert len(written) == NUM_FRAMES
    return written


def loader_uint8(folder: str) -> torch.Tensor:
    """The official loader's resized images as uint8 ``(T, 3, S, S)``."""
    names = sorted(os.listdir(folder))
    size = (CFG.image_size, CFG.image_size)
    return torch.stack(
        [
            torch.from_numpy(
                np.array(TF.resize(Image.open(os.path.join(folder, n)).convert("RGB"), size=size))
            ).permute(2, 0, 1)
            for n in names
        ]
    )


def frames_from_uint8(u8: torch.Tensor) -> torch.Tensor:
    """The loader's float16 frames from its resized uint8 images ``(T, 3, S, S)``."""
    x = (u8.float() / 255.0).to(torch.float16)
    half = torch.tensor(0.5, dtype=torch.float16)
    return (x - half) / half


def pack(masks: np.ndarray) -> torch.Tensor:
    n = masks.shape[0]
    flat = masks.reshape(n, VIDEO_H * VIDEO_W).astype(bool)
    return torch.from_numpy(np.packbits(flat, axis=-1).reshape(n, VIDEO_H * VIDEO_W // 8))


def product_request(req: dict) -> dict:
    """The same request in product conventions (points in pixels; boxes normalised cxcywh)."""
    out = dict(req)
    if out.get("points") is not None:
        out["points"] = [[x * VIDEO_W, y * VIDEO_H] for x, y in out["points"]]
    if out.get("bounding_boxes") is not None:
        out["bounding_boxes"] = [
            [x + w / 2, y + h / 2, w, h] for x, y, w, h in out["bounding_boxes"]
        ]
    return out


def _py(x):
    """numpy scalars -> Python numbers (for meta)."""
    if isinstance(x, dict):
        return {_py(k): _py(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_py(v) for v in (sorted(x) if isinstance(x, set) else x)]
    if isinstance(x, np.generic):
        return x.item()
    return x


class Recorder:
    """Observation-only wrappers around official methods (results are returned unchanged)."""

    def __init__(self, model) -> None:
        self.model = model
        self.tracker_log: list[dict] = []
        self.detector_log: list[dict] = []
        self.post_log: list[dict] = []
        trk = model._propogate_tracker_one_frame_local_gpu
        det = model.run_backbone_and_detection
        post = model._postprocess_output

        def trk_wrapped(states, frame_idx, reverse, run_mem_encoder=False):
            ids, low, scores = trk(
                states, frame_idx=frame_idx, reverse=reverse, run_mem_encoder=run_mem_encoder
            )
            self.tracker_log.append(
                {
                    "frame": int(frame_idx),
                    "reverse": bool(reverse),
                    "run_mem_encoder": bool(run_mem_encoder),
                    "obj_ids": [int(i) for i in ids],
                    "score_logits": [float(s) for s in scores.float().flatten()],
                    "lowres_pos_frac": [float(f) for f in (low > 0).float().mean((1, 2))],
                }
            )
            return ids, low, scores

        def det_wrapped(**kwargs):
            out = det(**kwargs)
            self.detector_log.append(
                {
                    "frame": int(kwargs["frame_idx"]),
                    "reverse": bool(kwargs["reverse"]),
                    "allow_new_detections": bool(kwargs["allow_new_detections"]),
                    "scores": [float(s) for s in out["scores"].float()],
                    "boxes_xyxy": out["bbox"].float().tolist(),
                }
            )
            return out

        def post_wrapped(
            inference_state,
            out,
            removed_obj_ids=None,
            suppressed_obj_ids=None,
            unconfirmed_obj_ids=None,
        ):
            hide = set(removed_obj_ids or ()) | set(suppressed_obj_ids or ())
            hide |= set(unconfirmed_obj_ids or ())
            shown = [
                i
                for i in sorted(out["obj_id_to_mask"])
                if i not in hide and bool(out["obj_id_to_mask"][i].any())
            ]
            scores = out["obj_id_to_tracker_score"]
            contested = []
            for a in range(len(shown)):
                for b in range(a + 1, len(shown)):
                    ia, ib = shown[a], shown[b]
                    both = out["obj_id_to_mask"][ia] & out["obj_id_to_mask"][ib]
                    contested.append(
                        {
                            "obj_ids": [int(ia), int(ib)],
                            "overlap_px": int(both.sum()),
                            "score_gap": abs(
                                float(scores.get(ia, 0.0)) - float(scores.get(ib, 0.0))
                            ),
                        }
                    )
            self.post_log.append(
                {
                    "contested": contested,
                    "tracker_scores": {
                        int(k): float(v) for k, v in out["obj_id_to_tracker_score"].items()
                    },
                    "hidden": {
                        "removed": _py(set(removed_obj_ids or ())),
                        "suppressed": _py(set(suppressed_obj_ids or ())),
                        "unconfirmed": _py(set(unconfirmed_obj_ids or ())),
                    },
                }
            )
            return post(
                inference_state, out, removed_obj_ids, suppressed_obj_ids, unconfirmed_obj_ids
            )

        model._propogate_tracker_one_frame_local_gpu = trk_wrapped
        model.run_backbone_and_detection = det_wrapped
        model._postprocess_output = post_wrapped

    def take(self) -> tuple[list, list, list]:
        logs = self.tracker_log, self.detector_log, self.post_log
        self.tracker_log, self.detector_log, self.post_log = [], [], []
        return logs


def build_predictor():
    model = ob.build_official_video_model(CFG, bpe_path=str(_common.BPE_PATH))
    model.tracker.bf16_context.__exit__(None, None, None)  # autocast off (pure float32)
    kept = load_synthetic(model, "")
    return _common.official_predictor(model), kept


def record_outputs(tensors: dict, key: str, outputs: dict) -> dict:
    ids = outputs["out_obj_ids"]
    masks = outputs["out_binary_masks"]
    assert masks.shape[1:] == (VIDEO_H, VIDEO_W), masks.shape
    tensors[f"{key}/obj_ids"] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    tensors[f"{key}/probs"] = torch.from_numpy(np.asarray(outputs["out_probs"], dtype=np.float32))
    tensors[f"{key}/boxes_xywh"] = torch.from_numpy(
        np.asarray(outputs["out_boxes_xywh"], dtype=np.float32).reshape(-1, 4)
    )
    tensors[f"{key}/masks"] = pack(masks)
    return {
        "obj_ids": _py(list(ids)),
        "probs": [float(p) for p in outputs["out_probs"]],
        "probs_dtype": str(np.asarray(outputs["out_probs"]).dtype),
        "frame_stats": _py(outputs["frame_stats"]),
        "mask_area": [int(m.sum()) for m in masks],
    }


def _state_summary(state: dict) -> dict:
    md = state["tracker_metadata"]
    if not md:
        return {"obj_ids": [], "max_obj_id": None, "hotstart_removed_obj_ids": []}
    return {
        "obj_ids": _py(list(md["obj_ids_all_gpu"])),
        "max_obj_id": _py(md["max_obj_id"]),
        "hotstart_removed_obj_ids": _py(set(md["rank0_metadata"]["removed_obj_ids"])),
    }


def play_session(predictor, recorder: Recorder, name: str, folder: str) -> None:
    t0 = time.time()
    sid = predictor.handle_request({"type": "start_session", "resource_path": folder})["session_id"]
    state = predictor._ALL_INFERENCE_STATES[sid]["state"]
    tensors: dict[str, torch.Tensor] = {}
    steps_meta = []
    for k, step in enumerate(SESSIONS[name]):
        req = dict(step["request"])
        kind = req["type"]
        if kind == "add_prompt" and req.get("points") is not None:
            known = _state_summary(state)["obj_ids"]
            print(f"     obj {req['obj_id']} {'exists' if req['obj_id'] in known else 'is new'}")
        sent = dict(req, session_id=sid)
        meta = {
            "scenario": step["scenario"],
            "kind": kind,
            "request": req,
            "product_request": product_request(req),
        }
        recorder.take()
        n_actions = len(state["action_history"])
        responses = []
        if kind == "propagate_in_video":
            for j, reply in enumerate(predictor.handle_stream_request(sent)):
                rec = record_outputs(tensors, f"step{k}/{j}", reply["outputs"])
                responses.append(dict(frame_index=int(reply["frame_index"]), **rec))
        else:
            reply = predictor.handle_request(sent)
            if "outputs" in reply:
                rec = record_outputs(tensors, f"step{k}/0", reply["outputs"])
                responses.append(dict(frame_index=int(reply["frame_index"]), **rec))
            else:
                meta["reply"] = _py(reply)
        trk_log, det_log, post_log = recorder.take()
        assert len(post_log) == len(responses), (len(post_log), len(responses))
        for r, p in zip(responses, post_log):
            r.update(p)
        if responses:
            frames = [r["frame_index"] for r in responses]
            tensors[f"step{k}/frames"] = torch.tensor(frames, dtype=torch.int64)
        meta.update(
            actions=_py(state["action_history"][n_actions:]),
            state_after=_state_summary(state),
            n_responses=len(responses),
            responses=responses,
            tracker_log=trk_log,
            detector_log=det_log,
        )
        steps_meta.append(meta)
        summary = [(r["frame_index"], r["obj_ids"], r["mask_area"]) for r in responses]
        print(f"[{name}] step {k} {step['scenario']} {kind} {meta['actions']}: {summary}")
        print(f"     state after: {meta['state_after']}")
        for t in trk_log:
            print(
                "     trk",
                t["frame"],
                t["reverse"],
                t["obj_ids"],
                [round(s, 4) for s in t["score_logits"]],
                [round(s, 3) for s in t["lowres_pos_frac"]],
            )
        for d in det_log:
            print("     det", d["frame"], d["reverse"], [round(s, 4) for s in d["scores"]])
        for r in responses:
            for c in r["contested"]:
                if c["overlap_px"] and c["score_gap"] < 1e-2:
                    print("     NEAR TIE", r["frame_index"], c)
    predictor.handle_request({"type": "close_session", "session_id": sid})
    model = predictor.model
    save_fixture(
        f"video_{name}",
        tensors,
        {
            "session": name,
            "scenarios": sorted({s["scenario"] for s in SESSIONS[name]}),
            "video_size": [VIDEO_H, VIDEO_W],
            "num_frames": NUM_FRAMES,
            "clip_fixture": "video_clip.pt",
            "heuristics": _py({k: getattr(model, k) for k in HEURISTIC_NAMES}),
            "heuristics_changed": {},
            "steps": steps_meta,
            "layout": LAYOUT,
        },
    )
    print(f"[{name}] {time.time() - t0:.1f} s")


def encode_png(u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, 3, S, S)`` uint8 RGB -> concatenated lossless PNG files (PIL) and their end offsets."""
    chunks = []
    for img in u8:
        rgb = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
        assert np.array_equal(np.array(Image.open(io.BytesIO(data))), rgb)
        chunks.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    return torch.cat(chunks), torch.tensor([c.numel() for c in chunks]).cumsum(0)


def save_clip(folder: str, jpegs: list[bytes]) -> None:
    from sam3.model.io_utils import load_resource_as_video_frames

    u8 = loader_uint8(folder)
    images, h, w = load_resource_as_video_frames(folder, CFG.image_size, offload_video_to_cpu=True)
    assert (h, w) == (VIDEO_H, VIDEO_W), (h, w)
    assert images.dtype == torch.float16
    assert torch.equal(frames_from_uint8(u8), images), "cannot recreate the loader's frames"
    f16_sha = hashlib.sha256(images.contiguous().view(torch.int16).numpy().tobytes()).hexdigest()
    png, png_ends = encode_png(u8)
    tensors = {
        "frames_png": png,
        "frames_png_ends": png_ends,
        "jpeg_bytes": torch.frombuffer(bytearray(b"".join(jpegs)), dtype=torch.uint8),
        "jpeg_ends": torch.tensor([len(b) for b in jpegs]).cumsum(0),
    }
    meta = {
        "video": "shared/data/videos/bikes.mp4",
        "source_frames": [SOURCE_STEP * t for t in range(NUM_FRAMES)],
        "video_size": [VIDEO_H, VIDEO_W],
        "num_frames": NUM_FRAMES,
        "image_size": CFG.image_size,
        "recipe": {
            "cut": f"PyAV container.decode(video=0), every {SOURCE_STEP}nd frame from frame 0, "
            "frame.to_ndarray(format='rgb24') -> (272, 640, 3) uint8, "
            "PIL.Image.fromarray(rgb).save(f'{t:05d}.jpg', quality=95); file t = "
            "jpeg_bytes[jpeg_ends[t-1]:jpeg_ends[t]] (start 0 for t = 0)",
            "loader": "official image-folder loader: TF.resize(PIL.Image.open(jpg).convert('RGB'),"
            " size=(224, 224)) (PIL bilinear with antialias) -> frames_u8 (T, 3, 224, 224)",
            "frames_u8": "frame t = np.array(PIL.Image.open(io.BytesIO(bytes(frames_png["
            "frames_png_ends[t-1]:frames_png_ends[t]].numpy())))) (224, 224, 3) RGB uint8, "
            "lossless PNG of the loader's resized image",
            "model_input": "x = (frames_u8.float() / 255).to(torch.float16); "
            "(x - half(0.5)) / half(0.5) in float16 -> (T, 3, 224, 224) float16 (the official "
            "frames, bit for bit); the model casts each frame to float32",
        },
        "frames_f16_sha256": f16_sha,
        "pillow": Image.__version__,
    }
    save_fixture("video_clip", tensors, meta)


def main() -> None:
    torch.manual_seed(0)
    t0 = time.time()
    folder = tempfile.mkdtemp(prefix="sam3_video_clip_")
    save_clip(folder, cut_clip(folder))
    predictor, kept = build_predictor()
    assert all(k.endswith("freqs_cis") for k in kept), kept
    recorder = Recorder(predictor.model)
    for name in SESSIONS:
        play_session(predictor, recorder, name, folder)
    shutil.rmtree(folder)
    print(f"total {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
