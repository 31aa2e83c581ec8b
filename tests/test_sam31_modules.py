"""Parity of SAM 3.1's new modules with the official 3.1 classes (``sam3.1-tiny``, float32).

Fixtures come from ``tools/reference/gen_sam31_modules.py`` (official classes, synthetic
weights under the official keys). Our modules are those of the whole ``sam3.1-tiny`` model
built with `synthetic_state_dict` (strict load), so every weight equals the official one.
Tolerance: max abs diff <= 1e-4 (float32), as for SAM 3.0's modules.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sam3video.errors import InvalidInputError
from sam3video.model.build import build_sam3_video_model
from sam3video.model.detector import GeometryPrompt
from sam3video.model.tracker_31 import MemoryFrame, PointerFrame, demux, mux

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ATOL = 1e-4


def load(name: str) -> tuple[dict, dict]:
    data = torch.load(FIXTURES / f"sam31_{name}.pt", weights_only=True)
    return data["tensors"], data["meta"]


@lru_cache(maxsize=1)
def model():
    return build_sam3_video_model("sam3.1-tiny", device="cpu")


def tracker():
    return model().tracker.model


def keys_of(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def close(ours: torch.Tensor, official: torch.Tensor, atol: float = ATOL) -> None:
    assert ours.shape == official.shape
    torch.testing.assert_close(ours.float(), official.float(), atol=atol, rtol=0)


# ----------------------------------------------------------------------------- neck


def test_three_way_neck_matches_official():
    t, meta = load("neck")
    neck = model().detector.backbone.vision_backbone
    assert keys_of(neck) == meta["official_keys"]
    with torch.no_grad():
        out = neck(t["images"], need_detector=True, need_interactive=True, need_propagation=True)
    for name in ("detector", "interactive", "propagation"):
        feats = getattr(out, f"{name}_feats")
        assert len(feats) == 3  # SAM 3.1 keeps all three levels (no 0.5x level)
        for lvl in range(3):
            if f"{name}_feat{lvl}" in t:
                close(feats[lvl], t[f"{name}_feat{lvl}"])
        close(getattr(out, f"{name}_pos")[2], t["pos2"])
    # the three pyramids have their own weights
    assert not torch.allclose(out.detector_feats[2], out.propagation_feats[2])


def test_neck_only_computes_what_is_asked():
    neck = model().detector.backbone.vision_backbone
    with torch.no_grad():
        out = neck(torch.zeros(1, 3, 224, 224))  # the detector's default
    assert out.detector_feats is not None and out.interactive_feats is None
    assert out.propagation_feats is None and out.propagation_pos is None
    with pytest.raises(InvalidInputError, match="at least one True"):
        neck.apply_necks(torch.zeros(1, 64, 16, 16), need_detector=False)


def test_detector_on_the_three_way_neck_matches_official():
    # Sam3MultiplexDetector grounds as SAM 3.0's detector, on the detector pyramid
    t, _ = load("detector")
    det = model().detector
    with torch.no_grad():
        neck = det.backbone.forward_image(t["image"])
        feats, mask = det.backbone.language_backbone.encode_tokens(t["tokens"])
        for name in ("text", "text_box"):
            boxes = t[f"{name}_boxes_cxcywh"]
            geometry = GeometryPrompt(
                boxes=boxes,
                box_labels=torch.ones(boxes.shape[:2], dtype=torch.long),
                box_mask=torch.zeros(boxes.shape[:2], dtype=torch.bool),
            )
            out = det.forward_grounding(
                neck.detector_feats, neck.detector_pos, feats[:1], mask[:1], geometry
            )
            close(out.pred_logits, t[f"{name}_pred_logits"])
            close(out.presence_logit, t[f"{name}_presence_logit"])
            close(out.pred_boxes, t[f"{name}_pred_boxes"])
            agree = ((out.pred_masks > 0) == (t[f"{name}_pred_masks"] > 0)).float().mean()
            assert agree >= 0.999
            close(out.pred_masks, t[f"{name}_pred_masks"], atol=1e-2)


# ----------------------------------------------------------------------------- decoder


def test_multiplex_mask_decoder_matches_official():
    t, meta = load("mask_decoder")
    dec = tracker().sam_mask_decoder
    assert keys_of(dec) == meta["official_keys"]
    high_res = [t["feat_s0"], t["feat_s1"]]
    with torch.no_grad():
        out = dec(t["image"], t["image_pe"], high_res, t["extra"])
        plain = dec(t["image"], t["image_pe"], high_res)
    close(out.masks, t["masks"])
    close(out.iou_pred, t["iou_pred"])
    close(out.sam_tokens_out, t["sam_tokens_out"])
    close(out.object_score_logits, t["object_score_logits"])
    close(plain.iou_pred, t["noextra_iou_pred"])
    close(plain.sam_tokens_out, t["noextra_sam_tokens_out"])
    close(plain.object_score_logits, t["noextra_object_score_logits"])


def test_propagation_dense_pe_matches_official():
    t, _ = load("mask_decoder")
    with torch.no_grad():
        close(tracker().get_propagation_dense_pe(), t["image_pe"], atol=1e-5)


# ----------------------------------------------------------------------------- memory


def test_multiplex_memory_encoder_matches_official():
    t, meta = load("memory_encoder")
    enc = tracker().maskmem_backbone
    assert keys_of(enc) == meta["official_keys"]
    with torch.no_grad():
        feats, pos = enc(t["pix_feat"], t["masks"])
    close(feats, t["features"])
    close(pos, t["pos"], atol=1e-5)
    with pytest.raises(InvalidInputError, match=r"masks: expected \(Bk, 8, H, W\)"):
        enc(t["pix_feat"], t["masks"][:, :4])


def test_decoupled_memory_attention_matches_official():
    t, meta = load("memory_attention")
    att = tracker().transformer.encoder
    assert keys_of(att) == meta["official_keys"]
    p = meta["num_ptr"]
    lm = t["memory_image"].shape[1]
    with torch.no_grad():
        out = att(
            t["image"],
            t["src"],
            t["src_pos"],
            t["memory_image"],
            t["memory"],
            t["memory_image_pos"],
            pointer_pos=t["memory_pos"][:, lm:],
        )
        bare = att(
            t["image"],
            t["src"],
            t["src_pos"],
            t["memory_image"],
            t["memory"][:, :lm],
            t["memory_image_pos"],
        )
    assert p > 0
    close(out, t["out"])
    close(bare, t["out_noptr"])
    with pytest.raises(InvalidInputError, match="pointer_pos: expected 8 pointer positions"):
        att(t["image"], t["src"], t["src_pos"], t["memory_image"], t["memory"],
            t["memory_image_pos"])  # fmt: skip


# ----------------------------------------------------------------------------- tracker


def test_tracker_keys_match_official():
    _, meta = load("heads")
    assert keys_of(tracker()) == meta["official_keys"]


def test_mux_and_demux_follow_the_slots():
    slots = torch.tensor([[2, -1, 0, 5], [1, 4, 3, -1]])
    x = torch.arange(6.0)[:, None] * torch.ones(6, 3)
    y = mux(x, slots)
    assert y.shape == (2, 4, 3)
    assert y[:, :, 0].tolist() == [[2.0, 0.0, 0.0, 5.0], [1.0, 4.0, 3.0, 0.0]]
    assert torch.equal(demux(y, slots, 6), x)
    with pytest.raises(InvalidInputError, match="expected 7 occupied slots"):
        demux(y, slots, 7)


def _check_heads(out, t: dict, prefix: str, multimask: bool = True) -> None:
    close(out.low_res_masks, t[f"{prefix}_low_res_masks"])
    close(out.ious, t[f"{prefix}_ious"])
    close(out.obj_ptr, t[f"{prefix}_obj_ptr"])
    close(out.object_score_logits, t[f"{prefix}_object_score_logits"])
    if multimask:
        close(out.low_res_multimasks, t[f"{prefix}_low_res_multimasks"])
    # official high resolution: bilinear resize of the low-resolution logits
    resized = F.interpolate(
        t[f"{prefix}_low_res_multimasks"], size=(224, 224), mode="bilinear", align_corners=False
    )
    close(out.high_res_multimasks, resized, atol=2e-4)


def test_propagation_heads_match_official():
    t, _ = load("heads")
    trk = tracker()
    slots = t["assignments"]
    high_res = [t["prop_s0"], t["prop_s1"]]
    bias = trk.sam_mask_decoder.pred_obj_score_head.layers[2].bias
    saved = bias.detach().clone()
    try:
        with torch.no_grad():
            _check_heads(
                trk.forward_propagation_heads(t["prop_features"], high_res, slots), t, "prop"
            )
            bias.fill_(-0.75)  # as the generator: some objects become absent
            absent_out = trk.forward_propagation_heads(t["prop_features"], high_res, slots)
    finally:
        with torch.no_grad():
            bias.copy_(saved)
    _check_heads(absent_out, t, "prop_absent")
    absent = (t["prop_absent_object_score_logits"] <= 0).squeeze(1)
    assert 0 < int(absent.sum()) < absent.numel()  # both branches exercised
    assert (absent_out.low_res_masks[absent] == -1024.0).all()


def test_click_heads_match_official():
    t, _ = load("heads")
    trk = tracker()
    pix = trk.interactive_features(t["int_vision"])
    close(pix, t["int_pix"], atol=1e-6)
    high_res = [t["int_s0"], t["int_s1"]]
    with torch.no_grad():
        for name, multi in (("click_multi", True), ("click_single", False)):
            out = trk.forward_interactive_heads(
                pix, high_res, t["click_coords"], t["click_labels"], multimask_output=multi
            )
            _check_heads(out, t, name, multimask=multi)


def test_mask_as_output_matches_official():
    t, _ = load("heads")
    trk = tracker()
    masks = t["mask_inputs"]
    with torch.no_grad():
        out = trk.use_mask_as_output(t["int_pix"], [t["int_s0"], t["int_s1"]], masks)
    close(out.low_res_masks, t["maskout_low_res_masks"])
    close(out.obj_ptr, t["maskout_obj_ptr"])
    close(out.object_score_logits, t["maskout_object_score_logits"], atol=0)
    close(out.ious, t["maskout_ious"], atol=0)
    close(out.high_res_masks, masks.float() * 20 - 10, atol=0)
    assert t["maskout_object_score_logits"][4].item() == -10.0  # the empty mask: absent


def test_memory_encoding_matches_official():
    t, _ = load("memory")
    with torch.no_grad():
        feats, pos = tracker().encode_memory(
            t["enc_vision"], t["enc_masks"], t["enc_scores"], t["assignments"],
            t["enc_conditioning"],
        )  # fmt: skip
    close(feats, t["enc_features"])
    close(pos, t["enc_pos"], atol=1e-5)


def test_memory_conditioning_matches_official():
    t, meta = load("memory")
    trk = tracker()
    frames = {
        f: (t[f"frame{f}_maskmem_features"], t[f"frame{f}_image_features"], t[f"frame{f}_obj_ptr"])
        for f in (0, 3, 4)
    }
    pos = t["cond_pos"]
    memories = [MemoryFrame(frames[f][0], frames[f][1], pos, t_pos) for f, t_pos in meta["spatial"]]
    pointers = [PointerFrame(frames[f][2], d) for f, d in meta["pointers"]]
    with torch.no_grad():
        out = trk.condition_on_memory(
            t["cond_vision"], pos, 2, memories, pointers, num_frames=meta["num_frames"]
        )
        bare = trk.condition_on_memory(t["cond_vision"], pos, 2, [])
    close(out, t["cond_out"])
    assert torch.equal(bare, t["cond_vision"].expand(2, -1, -1, -1))


def test_tracker_pieces_run_in_bfloat16_with_float32_mask_logits():
    t, _ = load("heads")
    m, _ = load("memory")
    trk = build_sam3_video_model("sam3.1-tiny", device="cpu", dtype=torch.bfloat16).tracker.model
    bf = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in t.items()}
    slots = t["assignments"]
    with torch.no_grad():
        outs = [
            trk.forward_propagation_heads(
                bf["prop_features"], [bf["prop_s0"], bf["prop_s1"]], slots
            ),
            trk.forward_interactive_heads(
                trk.interactive_features(bf["int_vision"]),
                [bf["int_s0"], bf["int_s1"]],
                t["click_coords"],
                t["click_labels"],
                multimask_output=True,
            ),
            trk.use_mask_as_output(bf["int_pix"], [bf["int_s0"], bf["int_s1"]], t["mask_inputs"]),
        ]
        feats, _ = trk.encode_memory(
            m["enc_vision"].bfloat16(), m["enc_masks"], m["enc_scores"], slots,
            m["enc_conditioning"],
        )  # fmt: skip
        pos = trk.maskmem_backbone.position_encoding(feats[:1])
        frame = MemoryFrame(feats, m["enc_vision"].bfloat16(), pos, 1)
        cond = trk.condition_on_memory(
            m["enc_vision"].bfloat16(),
            pos,
            2,
            [frame],
            [PointerFrame(feats.new_zeros(2, 4, 32), 1)],
        )
    for out, ref in zip(outs, ("prop", "click_multi", "maskout")):
        assert out.low_res_masks.dtype == out.high_res_masks.dtype == torch.float32
        assert out.obj_ptr.dtype == torch.bfloat16
        # the same presence decisions as in float32 (the fixture)
        assert torch.equal(out.object_score_logits.float() > 0, t[f"{ref}_object_score_logits"] > 0)
    assert feats.dtype == cond.dtype == torch.bfloat16
    assert torch.isfinite(cond.float()).all() and cond.shape == (2, 32, 16, 16)
