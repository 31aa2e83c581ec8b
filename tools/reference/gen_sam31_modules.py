"""Parity fixtures for SAM 3.1's new modules, from the OFFICIAL 3.1 classes at the tiny sizes.

Runs in the SAM 3.1 reference overlay (``tools/reference/setup_reference_31.sh``; see
``/work/notes/sam31_reference_status.md`` or the README), from the repository root::

    ~/.cache/sam3-reference-31/bin/python tools/reference/gen_sam31_modules.py

The official tracker is built as ``build_sam3_multiplex_video_model`` builds it (class
``Sam3VideoTrackingMultiplexDemo``, the same flags), with the sizes of ``sam3.1-tiny``: its
memory attention and memory encoder are built from the config, and its SAM heads (whose sizes
the official constructor fixes: 8 heads, MLP 2048, IoU head 256) are rebuilt with the config's
sizes, as ``official_builders.build_official_tracker`` does for SAM 3.0. The neck is the
official ``Sam3TriViTDetNeck`` around the tiny ViT trunk. Weights: `synthetic_tensor` under the
official keys (prefixes ``detector.backbone.vision_backbone.`` and ``tracker.model.``).

Writes ``tests/fixtures/sam31_{neck,mask_decoder,memory_encoder,memory_attention,heads,
memory}.pt`` (read by ``tests/test_sam31_modules.py``): seeded inputs, official outputs
(float32, eval mode, no autocast, CPU) and the official key -> shape lists. Tensors are
batch-first (the official memory attention is sequence-first; transposed here).
"""

from __future__ import annotations

import _common  # noqa: F401  (CPU patches, src/ on sys.path)
import official_builders as ob
import torch
from _common import drop_bf16_casts, load_synthetic, save_fixture
from sam3.model.decoder import (
    DecoupledTransformerDecoderLayerv2,
    SimpleRoPEAttention,
    TransformerEncoderDecoupledCrossAttention,
)
from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
from sam3.model.model_misc import TransformerWrapper
from sam3.model.multiplex_mask_decoder import MultiplexMaskDecoder
from sam3.model.multiplex_utils import MultiplexController, MultiplexState
from sam3.model.necks import Sam3TriViTDetNeck
from sam3.model.video_tracking_multiplex_demo import Sam3VideoTrackingMultiplexDemo
from sam3.sam.mask_decoder import MaskDecoder
from sam3.sam.transformer import TwoWayTransformer

from sam3video.model.config import sam31_tiny_config

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
def official_neck() -> Sam3TriViTDetNeck:
    dual = ob.build_official_vision_backbone(CFG)  # the tiny ViT trunk and its sine encoding
    neck = Sam3TriViTDetNeck(
        trunk=dual.trunk,
        position_encoding=dual.position_encoding,
        d_model=C,
        scale_factors=[4.0, 2.0, 1.0],
    )
    load_synthetic(neck, NECK)
    return neck.eval()


def _two_way() -> TwoWayTransformer:
    return TwoWayTransformer(
        depth=X.decoder_depth,
        embedding_dim=C,
        mlp_dim=X.decoder_mlp_dim,
        num_heads=X.decoder_heads,
        attention_downsample_rate=X.attention_downsample_rate,
    )


def official_tracker() -> Sam3VideoTrackingMultiplexDemo:
    """The official multiplex tracker at the tiny sizes (``tracker.model.`` keys)."""
    rope = {"d_model": C, "num_heads": X.memory_attention_heads, "dropout_p": 0.1}
    layer = DecoupledTransformerDecoderLayerv2(
        activation="gelu",
        d_model=C,
        num_heads=X.memory_attention_heads,
        dropout=0.1,
        dim_feedforward=X.memory_attention_ffn_dim,
        pos_enc_at_attn=False,
        pre_norm=True,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention_rope=SimpleRoPEAttention(
            **rope, rope_theta=X.rope_theta, feat_sizes=[FEAT, FEAT]
        ),
        cross_attention_rope=SimpleRoPEAttention(
            **rope, rope_theta=X.rope_theta, feat_sizes=[FEAT, FEAT], rope_k_repeat=True
        ),
    )
    transformer = TransformerWrapper(
        encoder=TransformerEncoderDecoupledCrossAttention(
            d_model=C,
            frozen=False,
            pos_enc_at_input=True,
            use_image_in_output=False,
            layer=layer,
            num_layers=X.memory_attention_layers,
            use_act_checkpoint=False,
            batch_first=True,
        ),
        decoder=None,
        d_model=C,
    )
    maskmem = SimpleMaskEncoder(
        out_dim=C,
        in_dim=C,
        position_encoding=ob._sine_pe(C, IMG),
        mask_downsampler=SimpleMaskDownSampler(
            embed_dim=C,
            kernel_size=3,
            stride=2,
            padding=1,
            interpol_size=[CFG.input_mask_size, CFG.input_mask_size],
            multiplex_count=M,
            starting_out_chan=X.mask_downsampler_start_chans,
            input_channel_multiplier=X.mask_input_channel_multiplier,
        ),
        fuser=SimpleFuser(
            layer=CXBlock(dim=C, kernel_size=7, padding=3, layer_scale_init_value=1e-6),
            num_layers=X.fuser_layers,
        ),
    )
    stability = {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": X.dynamic_multimask_stability_delta,
        "dynamic_multimask_stability_thresh": X.dynamic_multimask_stability_thresh,
    }
    model = Sam3VideoTrackingMultiplexDemo(
        backbone=None,
        transformer=transformer,
        maskmem_backbone=maskmem,
        multiplex_controller=MultiplexController(multiplex_count=M, eval_multiplex_count=M),
        image_size=IMG,
        backbone_stride=CFG.vit.patch_size,
        num_maskmem=X.num_maskmem,
        use_high_res_features_in_sam=True,
        use_obj_ptrs_in_encoder=True,
        max_obj_ptrs_in_encoder=X.max_obj_ptrs_in_encoder,
        add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=True,
        use_mlp_for_obj_ptr_proj=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        fixed_no_obj_ptr=True,
        use_no_obj_ptr=True,
        use_linear_no_obj_ptr=True,
        no_obj_embed_spatial=True,
        sincos_tpos_enc=True,
        multimask_output_in_sam=True,
        multimask_output_for_tracking=True,
        multimask_min_pt_num=X.multimask_min_pt_num,
        multimask_max_pt_num=X.multimask_max_pt_num,
        use_multimask_token_for_obj_ptr=True,
        num_multimask_outputs=X.num_multimask_outputs,
        apply_sigmoid_to_mask_logits_for_mem_enc=True,
        sigmoid_scale_for_mem_enc=X.sigmoid_scale_for_mem_enc,
        sigmoid_bias_for_mem_enc=X.sigmoid_bias_for_mem_enc,
        non_overlap_masks_for_mem_enc=False,
        add_output_suppression_embeddings=True,
        add_object_conditional_embeddings=False,
        condition_as_mask_input=True,
        condition_as_mask_input_fg=X.condition_fg,
        condition_as_mask_input_bg=X.condition_bg,
        use_maskmem_tpos_v2=True,
        save_image_features=True,
        randomness_fix=True,
        use_mask_input_as_output_without_sam=True,
        directly_add_no_mem_embed=True,
        iou_prediction_use_sigmoid=False,
        forward_backbone_per_frame_for_eval=True,
        offload_output_to_cpu_for_eval=False,
        trim_past_non_cond_mem_for_eval=False,
        max_cond_frames_in_attn=X.max_cond_frames_in_attn,
        is_dynamic_model=True,
        sam_mask_decoder_extra_args=dict(stability),
        use_memory_selection=False,
    )
    # The official constructor fixes the SAM heads' sizes; rebuild them with the config's
    # (same classes and arguments otherwise; same attribute names, so the same keys).
    model.interactive_sam_mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=_two_way(),
        transformer_dim=C,
        iou_head_depth=X.iou_head_depth,
        iou_head_hidden_dim=X.iou_head_hidden_dim,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=False,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
        **stability,
    )
    model.sam_mask_decoder = MultiplexMaskDecoder(
        multiplex_count=M,
        num_multimask_outputs=X.num_multimask_outputs,
        transformer=_two_way(),
        transformer_dim=C,
        iou_head_depth=X.iou_head_depth,
        iou_head_hidden_dim=X.iou_head_hidden_dim,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=False,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
        decode_mask_with_shared_tokens=False,
        decode_mask_attribute_with_shared_tokens=False,
        multimask_outputs_only=True,
        # the multiplex model turns the stability fallback off for this decoder
        **(stability | {"dynamic_multimask_via_stability": False}),
    )
    load_synthetic(model, TRACKER)
    return model.eval()


def state_of(assignments: list[list[int]]) -> MultiplexState:
    return MultiplexState(
        [list(b) for b in assignments],
        torch.device("cpu"),
        torch.float32,
        allowed_bucket_capacity=M,
    )


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


def main() -> None:
    drop_bf16_casts()  # the 3.1 ViT casts some activations to bfloat16: keep float32
    torch.manual_seed(0)
    with torch.no_grad():
        gen_neck()
        model = official_tracker()
        gen_mask_decoder(model)
        gen_memory_encoder(model)
        gen_memory_attention(model)
        gen_heads(model)
        gen_memory(model)


if __name__ == "__main__":
    main()
