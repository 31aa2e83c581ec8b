"""Parity fixtures for SAM 3.1's new modules, from the OFFICIAL 3.1 classes at the tiny sizes.

Runs in the SAM 3.1 reference overlay (``tools/reference/setup_reference_31.sh``; see
``/work/notes/sam31_reference_status.md`` or the README), from the repository root::

    ~/.cache/sam3-reference-31/bin/python tools/reference/gen_sam31_modules.py

The official modules come from ``official_builders_31`` (the tracker as
``build_sam3_multiplex_video_model`` builds it, class ``Sam3VideoTrackingMultiplexDemo``, the
same flags, at the sizes of ``sam3.1-tiny``, the SAM heads rebuilt with the config's sizes; the
neck is the official ``Sam3TriViTDetNeck`` around the tiny ViT trunk). Weights:
`synthetic_tensor` under the official keys (prefixes ``detector.backbone.vision_backbone.``
and ``tracker.model.``).

Writes ``tests/fixtures/sam31_{neck,detector,mask_decoder,memory_encoder,memory_attention,
heads,memory}.pt`` (read by ``tests/test_sam31_modules.py``): seeded inputs, official outputs
(float32, eval mode, no autocast, CPU) and the official key -> shape lists. Tensors are
batch-first (the official memory attention is sequence-first; transposed here). With
``--full`` also ``sam31_full.pt`` (``tests/test_sam31_full.py``, slow): the tracker's
propagation heads, memory encoding and memory conditioning at the official sizes.
"""

from __future__ import annotations

import argparse

import _common31  # noqa: F401  (first: the 3.1 overlay, CPU patches, src/ on sys.path)
import official_builders_31 as ob31
import torch
from _common31 import drop_bf16_casts, load_synthetic, save_fixture
from sam3.model.multiplex_utils import MultiplexState

from sam3video.model.config import sam31_config, sam31_tiny_config

CFG = sam31_tiny_config()
X = CFG.multiplex
C = CFG.d_model  # 32
FEAT = CFG.feat_size  # 16
IMG = CFG.image_size  # 224
M = X.multiplex_count  # 4
NECK = "detector.backbone.vision_backbone."
TRACKER = "tracker.model."


def keys_of(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------ official build
def official_neck(cfg=CFG):
    """The official ``Sam3TriViTDetNeck`` around the ViT trunk, synthetic weights."""
    neck = ob31.build_official_tri_neck(cfg)
    load_synthetic(neck, NECK)
    return neck.eval()


def official_tracker(cfg=CFG):
    """The official multiplex tracker model (``tracker.model.`` keys), synthetic weights:
    ``build_sam3_multiplex_video_model``'s class and flags at the config's sizes (the SAM heads,
    whose sizes the official constructor fixes, rebuilt with the config's)."""
    model = ob31.build_official_31_tracker_model(cfg)
    load_synthetic(model, TRACKER)
    return model.eval()


def state_of(assignments: list[list[int]], m: int = M) -> MultiplexState:
    buckets = [list(b) for b in assignments]
    return MultiplexState(buckets, torch.device("cpu"), torch.float32, allowed_bucket_capacity=m)


def seq_first(x: torch.Tensor) -> torch.Tensor:
    """``(b, C, h, w)`` -> ``(hw, b, C)``, the official tracker's layout."""
    return x.flatten(2).permute(2, 0, 1)


# ------------------------------------------------------------------------------ fixtures
def gen_neck() -> None:
    g = torch.Generator().manual_seed(31)
    neck = official_neck()
    images = torch.randn(1, 3, IMG, IMG, generator=g)
    outs = neck(images)
    t = {"images": images}
    names = ["detector", "interactive", "propagation"]
    for i, name in enumerate(names):
        feats, pos = outs[2 * i], outs[2 * i + 1]
        # The pyramids share their sine encodings (a 3.0 module): keep level 2's once.
        assert all(torch.equal(p, q) for p, q in zip(pos, outs[1]))
        # Level 0 (64 x 64) of one pyramid is enough for the 4x branch (kept small).
        for lvl in range(0 if name == "detector" else 1, len(feats)):
            t[f"{name}_feat{lvl}"] = feats[lvl].tensors
    t["pos2"] = outs[1][2]
    save_fixture("sam31_neck", t, {"official_keys": keys_of(neck)})


def gen_mask_decoder(model) -> None:
    g = torch.Generator().manual_seed(32)
    md = model.sam_mask_decoder
    bk = 3
    t = {
        "image": torch.randn(bk, C, FEAT, FEAT, generator=g),
        "image_pe": model.get_propagation_dense_pe(),
        "feat_s0": torch.randn(1, C // 8, 4 * FEAT, 4 * FEAT, generator=g),
        "feat_s1": torch.randn(1, C // 4, 2 * FEAT, 2 * FEAT, generator=g),
        "extra": torch.randn(bk, M, C, generator=g),
    }
    for name, extra in (("", t["extra"]), ("noextra_", None)):
        out = md(
            image_embeddings=t["image"],
            image_pe=t["image_pe"],
            multimask_output=True,
            high_res_features=[t["feat_s0"], t["feat_s1"]],
            extra_per_object_embeddings=extra,
        )
        if extra is not None:  # the masks once (the other outputs show the extra's effect)
            t["masks"] = out["masks"]
        t |= {
            f"{name}iou_pred": out["iou_pred"],
            f"{name}sam_tokens_out": out["sam_tokens_out"],
            f"{name}object_score_logits": out["object_score_logits"],
        }
    save_fixture("sam31_mask_decoder", t, {"official_keys": keys_of(md)})


def gen_memory_encoder(model) -> None:
    g = torch.Generator().manual_seed(33)
    enc = model.maskmem_backbone
    t = {
        "pix_feat": torch.randn(1, C, FEAT, FEAT, generator=g),
        # 2M channels in [-1, 1] (sigmoid * 2 - 1 and the 0/1 condition), smaller than
        # input_mask_size: the downsampler resizes them first
        "masks": torch.rand(2, 2 * M, 64, 64, generator=g) * 2 - 1,
    }
    out = enc(t["pix_feat"], t["masks"], skip_mask_sigmoid=True)
    t |= {"features": out["vision_features"], "pos": out["vision_pos_enc"][0]}
    save_fixture("sam31_memory_encoder", t, {"official_keys": keys_of(enc)})


def gen_memory_attention(model) -> None:
    g = torch.Generator().manual_seed(34)
    enc = model.transformer.encoder
    bk, hw, frames, ptrs = 3, FEAT * FEAT, 2, 2 * M
    lm = frames * hw
    t = {
        "image": torch.randn(1, hw, C, generator=g),
        "src": torch.randn(bk, hw, C, generator=g),
        "src_pos": torch.randn(bk, hw, C, generator=g),
        "memory_image": torch.randn(1, lm, C, generator=g),
        "memory_image_pos": torch.randn(1, lm, C, generator=g),
        "memory": torch.randn(bk, lm + ptrs, C, generator=g),
        "memory_pos": torch.randn(bk, lm + ptrs, C, generator=g),
    }

    def run(num_ptr: int) -> torch.Tensor:
        end = lm + num_ptr
        out = enc(
            image=t["image"].transpose(0, 1),
            src=t["src"].transpose(0, 1),
            memory_image=t["memory_image"].transpose(0, 1),
            memory=t["memory"][:, :end].transpose(0, 1),
            image_pos=None,
            src_pos=t["src_pos"].transpose(0, 1),
            memory_image_pos=t["memory_image_pos"].transpose(0, 1),
            memory_pos=t["memory_pos"][:, :end].transpose(0, 1),
            num_obj_ptr_tokens=num_ptr,
        )
        return out["memory"].transpose(0, 1)

    t["out"] = run(ptrs)
    t["out_noptr"] = run(0)
    save_fixture("sam31_memory_attention", t, {"official_keys": keys_of(enc), "num_ptr": ptrs})


ASSIGN = [[2, -1, 0, 5], [1, 4, 3, -1]]  # 6 objects in 2 buckets, out of order, with holes


def gen_heads(model) -> None:
    """The tracker's SAM-head paths: multiplex propagation, clicks, mask as output."""
    g = torch.Generator().manual_seed(35)
    state = state_of(ASSIGN)
    n, bk = state.total_valid_entries, state.num_buckets
    prop_s0 = torch.randn(1, C // 8, 4 * FEAT, 4 * FEAT, generator=g)
    prop_s1 = torch.randn(1, C // 4, 2 * FEAT, 2 * FEAT, generator=g)
    int_s0 = torch.randn(1, C // 8, 4 * FEAT, 4 * FEAT, generator=g)
    int_s1 = torch.randn(1, C // 4, 2 * FEAT, 2 * FEAT, generator=g)
    t = {
        "assignments": torch.tensor(ASSIGN),
        "prop_features": torch.randn(bk, C, FEAT, FEAT, generator=g),
        "prop_s0": prop_s0,
        "prop_s1": prop_s1,
        "int_vision": torch.randn(1, C, FEAT, FEAT, generator=g),
        "int_s0": int_s0,
        "int_s1": int_s1,
    }
    # High-resolution masks are not stored (size): the official ones are the bilinear resize
    # of the low-resolution ones to the image size (or, for a mask prompt, 20 m - 10).
    keys = ["low_res_multimasks", "ious", "low_res_masks", "obj_ptr", "object_score_logits"]

    def record(prefix: str, out: dict) -> None:
        for k in keys:
            t[f"{prefix}_{k}"] = out[k]
        hi, lo = out["high_res_multimasks"], out["low_res_multimasks"]
        if prefix != "maskout":
            resized = torch.nn.functional.interpolate(
                lo, size=(IMG, IMG), mode="bilinear", align_corners=False
            )
            assert torch.equal(hi, resized)

    # The official no-memory features of the click path (level 2 + interactivity_no_mem_embed).
    int_pix = model._get_interactive_pix_mem([seq_first(t["int_vision"])], [(FEAT, FEAT)])
    t["int_pix"] = int_pix
    bias = model.sam_mask_decoder.pred_obj_score_head.layers[2].bias
    saved_bias = bias.detach().clone()
    for name, b in (("prop", None), ("prop_absent", -0.75)):
        # with the synthetic score bias (+3) every slot is present; with -0.75 some are absent
        if b is not None:
            with torch.no_grad():
                bias.fill_(b)
        out = model._forward_sam_heads(
            backbone_features=t["prop_features"],
            propagation_high_res_features=[prop_s0, prop_s1],
            multimask_output=True,
            multiplex_state=state,
            objects_to_interact=list(range(n)),
        )
        record(name, out)
        with torch.no_grad():
            bias.copy_(saved_bias)

    coords = torch.rand(n, 2, 2, generator=g) * IMG
    labels = torch.tensor([[1, -1], [1, 0], [0, 1], [2, 3], [1, 1], [0, 0]], dtype=torch.int32)
    t |= {"click_coords": coords, "click_labels": labels}
    for name, multimask in (("click_multi", True), ("click_single", False)):
        out = model._forward_sam_heads(
            backbone_features=int_pix,
            point_inputs={"point_coords": coords, "point_labels": labels},
            interactive_high_res_features=[int_s0, int_s1],
            multimask_output=multimask,
            multiplex_state=state,
            objects_to_interact=list(range(n)),
        )
        record(name, out)

    masks = torch.rand(n, 1, IMG, IMG, generator=g) > 0.6
    masks[4] = False  # an empty mask: the object is absent
    t["mask_inputs"] = masks
    out = model._use_mask_as_output(
        backbone_features=int_pix,
        high_res_features=[int_s0, int_s1],
        mask_inputs=masks,
        multiplex_state=state,
    )
    record("maskout", out)
    save_fixture("sam31_heads", t, {"official_keys": keys_of(model)})


def gen_memory(model) -> None:
    """Memory encoding of a frame and memory conditioning of a later frame."""
    g = torch.Generator().manual_seed(36)
    state = state_of(ASSIGN)
    n, bk = state.total_valid_entries, state.num_buckets
    vision = torch.randn(1, C, FEAT, FEAT, generator=g)
    pos = model.maskmem_backbone.position_encoding(vision)  # a sine table, as the neck's
    masks = torch.randn(n, 1, 64, 64, generator=g) * 4  # resized to 256 by the encoder
    scores = torch.tensor([[2.0], [-1.0], [0.5], [-3.0], [4.0], [1.0]])
    cond = {0, 3}
    feats, mem_pos = model._encode_new_memory(
        image=None,
        current_vision_feats=[seq_first(vision)],
        feat_sizes=[(FEAT, FEAT)],
        pred_masks_high_res=masks,
        object_score_logits=scores,
        is_mask_from_pts=False,
        conditioning_objects=cond,
        multiplex_state=state,
    )
    t = {
        "assignments": torch.tensor(ASSIGN),
        "enc_vision": vision,
        "enc_masks": masks,
        "enc_scores": scores,
        "enc_conditioning": torch.tensor([i in cond for i in range(n)]),
        "enc_features": feats,
        "enc_pos": mem_pos[0],
    }

    # Stored frames: 0 (prompted), 3 and 4 (tracked); the current frame is 5 of 10.
    frame_idx, num_frames = 5, 10
    stored = {}
    for f in (0, 3, 4):
        stored[f] = {
            "maskmem_features": torch.randn(bk, C, FEAT, FEAT, generator=g),
            "maskmem_pos_enc": [pos.expand(bk, -1, -1, -1).clone()],
            "image_features": seq_first(torch.randn(1, C, FEAT, FEAT, generator=g)),
            "image_pos_enc": seq_first(pos),
            "obj_ptr": torch.randn(bk, M, C, generator=g),
        }
        for k in ("maskmem_features", "obj_ptr"):
            t[f"frame{f}_{k}"] = stored[f][k]
        t[f"frame{f}_image_features"] = (
            stored[f]["image_features"].permute(1, 2, 0).reshape(1, C, FEAT, FEAT)
        )
    output_dict = {
        "cond_frame_outputs": {0: stored[0]},
        "non_cond_frame_outputs": {3: stored[3], 4: stored[4]},
    }
    cur = torch.randn(1, C, FEAT, FEAT, generator=g)
    out = model._prepare_memory_conditioned_features(
        frame_idx=frame_idx,
        is_init_cond_frame=False,
        current_vision_feats=[seq_first(cur)],
        current_vision_masks=[None],
        current_vision_pos_embeds=[seq_first(pos)],
        feat_sizes=[(FEAT, FEAT)],
        output_dict=output_dict,
        num_frames=num_frames,
        multiplex_state=state,
    )
    t |= {"cond_vision": cur, "cond_pos": pos, "cond_out": out}
    # The official selection for these inputs (num_maskmem 7, stride 1, unsigned pointer
    # distances): spatial memories [prompted 0 at distance 5, frame 3 in slot 5, frame 4 in
    # slot 6]; pointers [prompted 0 at distance 5, frame 4 at 1, frame 3 at 2].
    meta = {
        "frame_idx": frame_idx,
        "num_frames": num_frames,
        "spatial": [[0, 5], [3, 5], [4, 6]],
        "pointers": [[0, 5], [4, 1], [3, 2]],
    }
    save_fixture("sam31_memory", t, meta)


def gen_detector() -> None:
    """The 3.1 detector (``Sam3MultiplexDetector``: SAM 3.0's grounding on the three-way
    neck's detector pyramid), text prompt and a text + box prompt, on a seeded image."""
    from sam3.model.data_misc import FindStage
    from sam3.model.geometry_encoders import Prompt

    detector = ob31.build_official_31_detector(CFG)
    kept = load_synthetic(detector, "detector.")
    assert all(k.endswith("freqs_cis") for k in kept), kept
    g = torch.Generator().manual_seed(37)
    image = torch.rand(1, 3, IMG, IMG, generator=g) * 2 - 1
    texts = ["a cat", "visual"]
    t = {"image": image}
    backbone = detector.backbone.forward_image(image)
    text_out = detector.backbone.forward_text(texts, device=torch.device("cpu"))
    t["tokens"] = detector.backbone.language_backbone.tokenizer(texts, context_length=32)
    boxes = {"text": [], "text_box": [[0.4, 0.5, 0.3, 0.6]]}
    for name, box in boxes.items():
        b = torch.tensor(box, dtype=torch.float32).reshape(-1, 1, 4)
        prompt = Prompt(
            box_embeddings=b,
            box_mask=torch.zeros(1, b.shape[0], dtype=torch.bool),
            box_labels=torch.ones(b.shape[0], 1, dtype=torch.long),
            point_embeddings=torch.zeros(0, 1, 2),
            point_mask=torch.zeros(1, 0, dtype=torch.bool),
            point_labels=torch.zeros(0, 1, dtype=torch.long),
        )
        find = FindStage(
            img_ids=torch.tensor([0]),
            text_ids=torch.tensor([0]),
            input_boxes=torch.zeros(0, 1, 4),
            input_boxes_mask=torch.zeros(1, 0, dtype=torch.bool),
            input_boxes_label=torch.zeros(0, 1, dtype=torch.long),
            input_points=torch.zeros(0, 1, 2),
            input_points_mask=torch.zeros(1, 0, dtype=torch.bool),
        )
        out = detector.forward_grounding(
            backbone_out={"img_batch_all_stages": image, **backbone, **text_out},
            find_input=find,
            find_target=None,
            geometric_prompt=prompt,
        )
        t[f"{name}_boxes_cxcywh"] = b.transpose(0, 1)
        t[f"{name}_pred_logits"] = out["pred_logits"][..., 0]
        t[f"{name}_presence_logit"] = out["presence_logit_dec"]
        t[f"{name}_pred_boxes"] = out["pred_boxes"]
        t[f"{name}_pred_masks"] = out["pred_masks"]
    save_fixture("sam31_detector", t, {"texts": texts})


# ------------------------------------------------------------------------------ full size
FULL_ASSIGN = [list(range(15, -1, -1)), [16, 17, 18, 19] + [-1] * 12]  # 20 objects, 2 buckets


def full_inputs(cfg) -> dict[str, torch.Tensor]:
    """Seeded inputs of the full-size case (too large to store; tests/test_sam31_full.py
    draws the same ones and checks them against the stored checksums)."""
    g = torch.Generator().manual_seed(3101)
    c, f, m, n, bk = cfg.d_model, cfg.feat_size, cfg.multiplex.multiplex_count, 20, 2
    t = {
        "prop_features": torch.randn(bk, c, f, f, generator=g),
        "prop_s0": torch.randn(1, c // 8, 4 * f, 4 * f, generator=g),
        "prop_s1": torch.randn(1, c // 4, 2 * f, 2 * f, generator=g),
        "vision": torch.randn(1, c, f, f, generator=g),
        "enc_masks": torch.randn(n, 1, 252, 252, generator=g) * 4,
        "enc_scores": torch.randn(n, 1, generator=g) * 2,
    }
    for frame in (0, 4):
        t[f"frame{frame}_maskmem_features"] = torch.randn(bk, c, f, f, generator=g)
        t[f"frame{frame}_image_features"] = torch.randn(1, c, f, f, generator=g)
        t[f"frame{frame}_obj_ptr"] = torch.randn(bk, m, c, generator=g)
    return t


def checksums(t: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    return {k: [float(v.double().sum()), float(v.double().abs().sum())] for k, v in t.items()}


def gen_full() -> None:
    """Full-size (official sizes: 16 slots, 72 x 72, 8 heads) propagation heads, memory
    encoding and memory conditioning; large outputs stored subsampled."""
    cfg = sam31_config()
    model = official_tracker(cfg)
    m, f = cfg.multiplex.multiplex_count, cfg.feat_size
    state = state_of(FULL_ASSIGN, m)
    n = state.total_valid_entries
    x = full_inputs(cfg)
    out = {}
    heads = model._forward_sam_heads(
        backbone_features=x["prop_features"],
        propagation_high_res_features=[x["prop_s0"], x["prop_s1"]],
        multimask_output=True,
        multiplex_state=state,
        objects_to_interact=list(range(n)),
    )
    out["prop_low_res_masks"] = heads["low_res_masks"][..., ::4, ::4]
    out["prop_low_res_multimasks"] = heads["low_res_multimasks"][..., ::8, ::8]
    for k in ("ious", "obj_ptr", "object_score_logits"):
        out[f"prop_{k}"] = heads[k]
    cond = {i for i in range(n) if i % 3 == 0}
    feats, _ = model._encode_new_memory(
        image=None,
        current_vision_feats=[seq_first(x["vision"])],
        feat_sizes=[(f, f)],
        pred_masks_high_res=x["enc_masks"],
        object_score_logits=x["enc_scores"],
        is_mask_from_pts=False,
        conditioning_objects=cond,
        multiplex_state=state,
    )
    out["enc_features"] = feats[..., ::6, ::6]
    pos = model.maskmem_backbone.position_encoding(x["vision"])
    stored = {
        fr: {
            "maskmem_features": x[f"frame{fr}_maskmem_features"],
            "maskmem_pos_enc": [pos.expand(2, -1, -1, -1).clone()],
            "image_features": seq_first(x[f"frame{fr}_image_features"]),
            "image_pos_enc": seq_first(pos),
            "obj_ptr": x[f"frame{fr}_obj_ptr"],
        }
        for fr in (0, 4)
    }
    cond_out = model._prepare_memory_conditioned_features(
        frame_idx=5,
        is_init_cond_frame=False,
        current_vision_feats=[seq_first(x["vision"])],
        current_vision_masks=[None],
        current_vision_pos_embeds=[seq_first(pos)],
        feat_sizes=[(f, f)],
        output_dict={
            "cond_frame_outputs": {0: stored[0]},
            "non_cond_frame_outputs": {4: stored[4]},
        },
        num_frames=10,
        multiplex_state=state,
    )
    out["cond_out"] = cond_out[..., ::6, ::6]
    meta = {
        "input_checksums": checksums(x),
        "assignments": FULL_ASSIGN,
        "conditioning": sorted(cond),
        # official selection for frame 5 of 10 (see gen_memory): prompted frame 0 at distance 5,
        # frame 4 in slot 6; pointers: frame 0 at 5, frame 4 at 1
        "spatial": [[0, 5], [4, 6]],
        "pointers": [[0, 5], [4, 1]],
        "num_frames": 10,
    }
    save_fixture("sam31_full", out, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="also the full-size case (~1 min)")
    args = parser.parse_args()
    drop_bf16_casts()  # the 3.1 ViT casts some activations to bfloat16: keep float32
    torch.manual_seed(0)
    with torch.no_grad():
        gen_neck()
        gen_detector()
        model = official_tracker()
        gen_mask_decoder(model)
        gen_memory_encoder(model)
        gen_memory_attention(model)
        gen_heads(model)
        gen_memory(model)
        if args.full:
            gen_full()


if __name__ == "__main__":
    main()
