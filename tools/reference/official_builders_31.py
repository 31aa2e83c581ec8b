"""Build the OFFICIAL SAM 3.1 multiplex video model at the sizes of a `Sam3VideoConfig`.

Runs ONLY with the SAM 3.1 reference interpreter (``bash tools/reference/setup_reference_31.sh``
-> ``~/.cache/sam3-reference-31/bin/python``). The official ``model_builder`` wires the 3.1 model
in ``build_sam3_multiplex_video_predictor`` with the full-size numbers written inline; the
functions below wire the same official classes in the same way, with every size taken from the
config's ``multiplex`` part (`MultiplexTrackerConfig`), so ``"sam3.1-tiny"`` gives a small
official model whose state-dict keys equal the full one's.

How the official objects are assembled (all on ``device``; ``"meta"`` allocates nothing):

- ``detector`` = ``Sam3MultiplexDetector`` over ``SAM3VLBackboneTri(scalp=0)``: the 3.0 ViT,
  text encoder, geometry encoder, fusion transformer, scoring and segmentation head (built by
  ``official_builders``), and a ``Sam3TriViTDetNeck`` (three levels 4x/2x/1x, three conv sets:
  ``convs`` for the detector, ``interactive_convs`` for clicks, ``propagation_convs`` for the
  memory tracker);
- ``tracker`` = ``Sam3MultiplexPredictorWrapper`` around ``Sam3VideoTrackingMultiplexDemo``
  (``tracker.model.``), built without a backbone (the official builder builds one and deletes
  it; the detector's tri-neck feeds the tracker);
- the video model = ``Sam3MultiplexTrackingWithInteractivity`` with the builder's heuristics
  (`VIDEO_DEFAULTS_31`), and ``build_official_31_predictor`` wraps it in
  ``Sam3MultiplexVideoPredictor`` (the ``handle_request`` API) for CPU use.

Sizes the official classes hard-code, and how they are set here: ``_build_sam_heads`` builds
the interactive prompt encoder with ``mask_in_chans=16`` and both SAM decoders (interactive
``MaskDecoder``, multiplex ``MultiplexMaskDecoder``) with a two-way transformer of 8 heads / MLP
2048 and an IoU head hidden width of 256; they are rebuilt with the config's sizes (same
attribute names, so the state-dict order is kept). The memory encoder's mask downsampler and
sine position encoding take ``d_model``; the memory attention's RoPE grid is
``(feat_size, feat_size)``.

CPU choices (numerically the same model): ``use_fa3=False`` everywhere (attention through
``scaled_dot_product_attention``) and ``use_rope_real=False`` (complex RoPE tables, the dtype the
checkpoint stores); the official predictor builder defaults to ``use_fa3=True,
use_rope_real=True`` for CUDA.

Run as a script (from the repository root)::

    ~/.cache/sam3-reference-31/bin/python tools/reference/official_builders_31.py

it builds the full-size model with the OFFICIAL builder (``build_sam3_multiplex_video_predictor``)
and with these builders, both on ``meta``, checks they agree key by key (shape, dtype, order),
checks the counts the 3.1 checkpoint has (1,623 tensors: 1,166 ``detector.``, 457 ``tracker.``,
1,591 float32, 32 complex64), writes ``tests/fixtures/sam31_official_state_dict.tsv.gz``, then
builds ``sam3.1-tiny`` on ``cpu`` and ``meta`` and writes ``tests/fixtures/manifest_31_tiny.tsv``.
"""

from __future__ import annotations

import _common31  # noqa: F401  (3.1 overlay first on sys.path, CPU patches)
import torch
from official_builders import (
    _on_device,
    _sine_pe,
    build_official_dot_prod_scoring,
    build_official_geometry_encoder,
    build_official_segmentation_head,
    build_official_text_encoder,
    build_official_transformer,
    build_official_vision_backbone,
    format_manifest,
    manifest_rows,
    read_manifest,
    write_manifest,
)
from sam3.model.decoder import (
    DecoupledTransformerDecoderLayerv2,
    SimpleRoPEAttention,
    TransformerEncoderDecoupledCrossAttention,
)
from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
from sam3.model.model_misc import TransformerWrapper
from sam3.model.multiplex_mask_decoder import MultiplexMaskDecoder
from sam3.model.multiplex_utils import MultiplexController
from sam3.model.necks import Sam3TriViTDetNeck
from sam3.model.sam3_multiplex_base import Sam3MultiplexPredictorWrapper
from sam3.model.sam3_multiplex_detector import Sam3MultiplexDetector
from sam3.model.sam3_multiplex_tracking import Sam3MultiplexTrackingWithInteractivity
from sam3.model.video_tracking_multiplex_demo import Sam3VideoTrackingMultiplexDemo
from sam3.model.vl_combiner import SAM3VLBackboneTri
from sam3.sam.mask_decoder import MaskDecoder
from sam3.sam.prompt_encoder import PromptEncoder
from sam3.sam.transformer import TwoWayTransformer
from torch import nn

from sam3video.model.config import Sam3VideoConfig, get_config

# Heuristics of ``build_sam3_multiplex_video_predictor`` for the video model (constructor
# arguments without weights). Differences from 3.0 (``official_builders.VIDEO_DEFAULTS``) are
# listed in tools/reference/SAM31_FACTS.md.
VIDEO_DEFAULTS_31 = dict(
    score_threshold_detection=0.4,
    det_nms_thresh=0.1,
    det_nms_use_iom=True,
    assoc_iou_thresh=0.1,
    new_det_thresh=0.65,
    hotstart_delay=15,
    hotstart_unmatch_thresh=8,
    hotstart_dup_thresh=8,
    suppress_unmatched_only_within_hotstart=False,
    suppress_overlapping_based_on_recent_occlusion_threshold=0.7,
    suppress_det_close_to_boundary=True,
    fill_hole_area=0,
    recondition_every_nth_frame=16,
    use_iom_recondition=True,
    iom_thresh_recondition=0.5,
    masklet_confirmation_enable=True,
    reconstruction_bbox_iou_thresh=-1,
    reconstruction_bbox_det_score=0.8,
    max_num_objects=16,
    postprocess_batch_size=16,
    use_batched_grounding=True,
    batched_grounding_batch_size=16,
    max_num_kboxes=0,
    sprinkle_removal_area=0,
    is_multiplex=True,
    image_mean=(0.5, 0.5, 0.5),
    image_std=(0.5, 0.5, 0.5),
    compile_model=False,
)

# Expected content of the released checkpoint ``sam3.1_multiplex.pt`` (issue 17).
CHECKPOINT_COUNTS = {
    "total": 1623,
    "detector.": 1166,
    "tracker.": 457,
    "float32": 1591,
    "complex64": 32,
}


def _multiplex(cfg: Sam3VideoConfig):
    if getattr(cfg, "multiplex", None) is None:
        raise ValueError(f"config {cfg.name!r} has no multiplex part (not a SAM 3.1 preset)")
    return cfg.multiplex


# --------------------------------------------------------------------------------------------
# detector
# --------------------------------------------------------------------------------------------
def build_official_tri_neck(cfg: Sam3VideoConfig, device: str = "cpu") -> Sam3TriViTDetNeck:
    """ViT trunk + the three-way neck (``convs``, ``interactive_convs``, ``propagation_convs``)."""
    trunk = build_official_vision_backbone(cfg, device).trunk  # the 3.0 ViT, same arguments
    with _on_device(device):
        neck = Sam3TriViTDetNeck(
            trunk=trunk,
            position_encoding=_sine_pe(cfg.d_model, precompute_resolution=cfg.image_size),
            d_model=cfg.d_model,
            scale_factors=[4.0, 2.0, 1.0],
        )
    return neck.eval()


def build_official_31_detector(
    cfg: Sam3VideoConfig, device: str = "cpu", bpe_path: str | None = None
) -> Sam3MultiplexDetector:
    """The ``detector`` child of the official 3.1 video model (keys without ``detector.``)."""
    d = cfg.detector
    neck = build_official_tri_neck(cfg, device)
    text = build_official_text_encoder(cfg, device, bpe_path)
    with _on_device(device):
        backbone = SAM3VLBackboneTri(scalp=0, visual=neck, text=text)
        detector = Sam3MultiplexDetector(
            num_feature_levels=1,
            backbone=backbone,
            transformer=build_official_transformer(cfg, device),
            segmentation_head=build_official_segmentation_head(cfg, device),
            semantic_segmentation_head=None,
            input_geometry_encoder=build_official_geometry_encoder(cfg, device),
            use_early_fusion=True,
            use_dot_prod_scoring=True,
            dot_prod_scoring=build_official_dot_prod_scoring(cfg, device),
            supervise_joint_box_scores=d.presence_token,
            is_multiplex=True,
        )
    return detector.eval()


# --------------------------------------------------------------------------------------------
# multiplex tracker
# --------------------------------------------------------------------------------------------
def _multiplex_memory_encoder(cfg: Sam3VideoConfig) -> SimpleMaskEncoder:
    mx = _multiplex(cfg)
    downsampler = SimpleMaskDownSampler(
        embed_dim=cfg.d_model,
        kernel_size=3,
        stride=2,
        padding=1,
        interpol_size=[cfg.input_mask_size, cfg.input_mask_size],
        multiplex_count=mx.multiplex_count,
        starting_out_chan=mx.mask_downsampler_start_chans,
        input_channel_multiplier=mx.mask_input_channel_multiplier,
    )
    cx_block = CXBlock(
        dim=cfg.d_model, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06, use_dwconv=True
    )
    return SimpleMaskEncoder(
        out_dim=cfg.d_model,  # no channel compression in 3.1 (out_proj stays Identity)
        position_encoding=_sine_pe(cfg.d_model, precompute_resolution=cfg.image_size),
        mask_downsampler=downsampler,
        fuser=SimpleFuser(layer=cx_block, num_layers=mx.fuser_layers),
        in_dim=cfg.d_model,
    )


def _multiplex_memory_attention(cfg: Sam3VideoConfig) -> TransformerWrapper:
    mx = _multiplex(cfg)
    feat = [cfg.feat_size, cfg.feat_size]

    def rope(k_repeat: bool) -> SimpleRoPEAttention:
        return SimpleRoPEAttention(
            d_model=cfg.d_model,
            num_heads=mx.memory_attention_heads,
            dropout_p=0.1,
            rope_theta=mx.rope_theta,
            feat_sizes=feat,
            rope_k_repeat=k_repeat,
            use_fa3=False,
            use_rope_real=False,
        )

    layer = DecoupledTransformerDecoderLayerv2(
        activation="gelu",
        d_model=cfg.d_model,
        num_heads=mx.memory_attention_heads,
        dropout=0.1,
        dim_feedforward=mx.memory_attention_ffn_dim,
        pos_enc_at_attn=False,
        pre_norm=True,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention_rope=rope(False),
        cross_attention_rope=rope(True),
    )
    encoder = TransformerEncoderDecoupledCrossAttention(
        d_model=cfg.d_model,
        frozen=False,
        pos_enc_at_input=True,
        use_image_in_output=False,
        layer=layer,
        num_layers=mx.memory_attention_layers,
        use_act_checkpoint=False,
        batch_first=True,
    )
    return TransformerWrapper(encoder=encoder, decoder=None, d_model=cfg.d_model)


def _two_way(cfg: Sam3VideoConfig) -> TwoWayTransformer:
    mx = _multiplex(cfg)
    return TwoWayTransformer(
        depth=mx.decoder_depth,
        embedding_dim=cfg.d_model,
        mlp_dim=mx.decoder_mlp_dim,
        num_heads=mx.decoder_heads,
        attention_downsample_rate=mx.attention_downsample_rate,
    )


def _rebuild_sam_heads(model: Sam3VideoTrackingMultiplexDemo, cfg: Sam3VideoConfig) -> None:
    """Replace the SAM heads that ``_build_sam_heads`` made with fixed sizes by config-sized ones
    (same classes and arguments otherwise; attribute names, hence key order, unchanged)."""
    mx = _multiplex(cfg)
    model.interactive_sam_prompt_encoder = PromptEncoder(
        embed_dim=cfg.d_model,
        image_embedding_size=(cfg.feat_size, cfg.feat_size),
        input_image_size=(cfg.image_size, cfg.image_size),
        mask_in_chans=mx.mask_in_chans,
    )
    model.interactive_sam_mask_decoder = MaskDecoder(
        num_multimask_outputs=mx.num_multimask_outputs,
        transformer=_two_way(cfg),
        transformer_dim=cfg.d_model,
        iou_head_depth=mx.iou_head_depth,
        iou_head_hidden_dim=mx.iou_head_hidden_dim,
        use_high_res_features=model.use_high_res_features_in_sam,
        iou_prediction_use_sigmoid=model.iou_prediction_use_sigmoid,
        pred_obj_scores=model.pred_obj_scores,
        pred_obj_scores_mlp=model.pred_obj_scores_mlp,
        use_multimask_token_for_obj_ptr=model.use_multimask_token_for_obj_ptr,
        **(model.interactive_sam_mask_decoder_extra_args or {}),
    )
    model.sam_mask_decoder = MultiplexMaskDecoder(
        multiplex_count=mx.multiplex_count,
        num_multimask_outputs=model.num_multimask_outputs,
        transformer=_two_way(cfg),
        transformer_dim=cfg.d_model,
        iou_head_depth=mx.iou_head_depth,
        iou_head_hidden_dim=mx.iou_head_hidden_dim,
        use_high_res_features=model.use_high_res_features_in_sam,
        iou_prediction_use_sigmoid=model.iou_prediction_use_sigmoid,
        pred_obj_scores=model.pred_obj_scores,
        pred_obj_scores_mlp=model.pred_obj_scores_mlp,
        use_multimask_token_for_obj_ptr=model.use_multimask_token_for_obj_ptr,
        decode_mask_with_shared_tokens=model.decode_mask_with_shared_tokens,
        decode_mask_attribute_with_shared_tokens=model.decode_mask_attribute_with_shared_tokens,
        multimask_outputs_only=model.num_multimask_outputs > 0 and model.multimask_output_in_sam,
        **(model.sam_mask_decoder_extra_args or {}),
    )


def build_official_31_tracker_model(
    cfg: Sam3VideoConfig, device: str = "cpu"
) -> Sam3VideoTrackingMultiplexDemo:
    """``Sam3VideoTrackingMultiplexDemo`` as ``build_sam3_multiplex_video_model`` wires it, without
    backbone (keys are those under ``tracker.model.``)."""
    mx = _multiplex(cfg)
    with _on_device(device):
        model = Sam3VideoTrackingMultiplexDemo(
            backbone=None,
            transformer=_multiplex_memory_attention(cfg),
            maskmem_backbone=_multiplex_memory_encoder(cfg),
            multiplex_controller=MultiplexController(
                multiplex_count=mx.multiplex_count, eval_multiplex_count=mx.multiplex_count
            ),
            image_size=cfg.image_size,
            backbone_stride=cfg.vit.patch_size,
            num_maskmem=mx.num_maskmem,
            use_high_res_features_in_sam=True,
            use_obj_ptrs_in_encoder=True,
            max_obj_ptrs_in_encoder=mx.max_obj_ptrs_in_encoder,
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
            multimask_min_pt_num=mx.multimask_min_pt_num,
            multimask_max_pt_num=mx.multimask_max_pt_num,
            use_multimask_token_for_obj_ptr=True,
            num_multimask_outputs=mx.num_multimask_outputs,
            apply_sigmoid_to_mask_logits_for_mem_enc=True,
            sigmoid_scale_for_mem_enc=mx.sigmoid_scale_for_mem_enc,
            sigmoid_bias_for_mem_enc=mx.sigmoid_bias_for_mem_enc,
            non_overlap_masks_for_mem_enc=False,
            add_output_suppression_embeddings=True,
            add_object_conditional_embeddings=False,
            condition_as_mask_input=True,
            condition_as_mask_input_fg=mx.condition_fg,
            condition_as_mask_input_bg=mx.condition_bg,
            use_maskmem_tpos_v2=True,
            save_image_features=True,
            randomness_fix=True,
            use_mask_input_as_output_without_sam=True,
            directly_add_no_mem_embed=True,
            iou_prediction_use_sigmoid=False,
            forward_backbone_per_frame_for_eval=True,
            offload_output_to_cpu_for_eval=False,
            trim_past_non_cond_mem_for_eval=False,
            max_cond_frames_in_attn=mx.max_cond_frames_in_attn,
            is_dynamic_model=True,
            sam_mask_decoder_extra_args={
                "dynamic_multimask_via_stability": True,
                "dynamic_multimask_stability_delta": mx.dynamic_multimask_stability_delta,
                "dynamic_multimask_stability_thresh": mx.dynamic_multimask_stability_thresh,
            },
            compile_all_components=False,
            use_memory_selection=mx.use_memory_selection,
            mf_threshold=mx.memory_selection_threshold,
            object_score_logit_threshold=mx.object_score_logit_threshold,
        )
        _rebuild_sam_heads(model, cfg)
    return model.eval()


def build_official_31_tracker(
    cfg: Sam3VideoConfig, device: str = "cpu"
) -> Sam3MultiplexPredictorWrapper:
    """The ``tracker`` child: the wrapper the official predictor builder puts around the model."""
    wrapper = Sam3MultiplexPredictorWrapper(
        model=build_official_31_tracker_model(cfg, device),
        per_obj_inference=False,
        fill_hole_area=0,
        is_multiplex=True,
        is_multiplex_dynamic=True,
    )
    # The wrapper enters a CUDA bf16 autocast for the whole process; without CUDA torch disables
    # it (a warning), so the reference stays float32.
    return wrapper.eval()


# --------------------------------------------------------------------------------------------
# whole video model and predictor
# --------------------------------------------------------------------------------------------
def build_official_31_video_model(
    cfg: Sam3VideoConfig, device: str = "cpu", bpe_path: str | None = None, **overrides
) -> Sam3MultiplexTrackingWithInteractivity:
    """``detector`` + ``tracker`` as ``build_sam3_multiplex_video_predictor`` wires them (no
    checkpoint). ``overrides`` replace entries of `VIDEO_DEFAULTS_31`."""
    tracker = build_official_31_tracker(cfg, device)
    detector = build_official_31_detector(cfg, device, bpe_path)
    kwargs = {**VIDEO_DEFAULTS_31, **overrides}
    with _on_device(device):
        model = Sam3MultiplexTrackingWithInteractivity(
            tracker=tracker, detector=detector, image_size=cfg.image_size, **kwargs
        )
    return model.eval()


def build_official_31_predictor(model: Sam3MultiplexTrackingWithInteractivity, **kwargs):
    """The official ``Sam3MultiplexVideoPredictor`` (``handle_request`` API) around ``model``."""
    from sam3.model.sam3_multiplex_video_predictor import Sam3MultiplexVideoPredictor

    kwargs.setdefault("async_loading_frames", False)
    kwargs.setdefault("warm_up", False)
    return Sam3MultiplexVideoPredictor(model=model, **kwargs)


def build_with_official_builder_on_meta(use_rope_real: bool = False) -> nn.Module:
    """The full-size model made by the OFFICIAL ``build_sam3_multiplex_video_predictor`` itself,
    on ``meta`` (no checkpoint, no download, no CUDA); returns the video model it wraps."""
    import sam3.model.sam3_multiplex_video_predictor as vp
    import sam3.model_builder as mb

    captured = {}

    class _Capture:  # stands in for the predictor class: keep the model, skip the session setup
        def __init__(self, model, **kwargs):
            captured["model"] = model

    saved = (mb.download_ckpt_from_hf, vp.Sam3MultiplexVideoPredictor, nn.Module.to)
    module_to = nn.Module.to

    def to_unless_meta(self, *args, **kwargs):  # the builder moves the tracker to its device
        if any(p.is_meta for p in self.parameters()):
            return self
        return module_to(self, *args, **kwargs)

    mb.download_ckpt_from_hf = lambda version="sam3": None
    vp.Sam3MultiplexVideoPredictor = _Capture
    nn.Module.to = to_unless_meta
    try:
        with _on_device("meta"):
            mb.build_sam3_multiplex_video_predictor(
                use_fa3=False, use_rope_real=use_rope_real, async_loading_frames=False
            )
    finally:
        mb.download_ckpt_from_hf, vp.Sam3MultiplexVideoPredictor, nn.Module.to = saved
    return captured["model"]


def _family(key: str) -> str:
    return ".".join("#" if part.isdigit() else part for part in key.split("."))


def count_rows(rows) -> dict[str, int]:
    counts = {"total": len(rows)}
    for prefix in ("detector.", "tracker."):
        counts[prefix] = sum(k.startswith(prefix) for k, _, _ in rows)
    for dtype in ("float32", "complex64"):
        counts[dtype] = sum(dt == dtype for _, _, dt in rows)
    return counts


def main() -> None:
    import gzip

    official = manifest_rows(build_with_official_builder_on_meta())
    ours_full = manifest_rows(build_official_31_video_model(get_config("sam3.1"), device="meta"))
    if ours_full != official:
        diff = [(a, b) for a, b in zip(ours_full, official) if a != b][:5]
        raise SystemExit(
            f"config-driven full build differs from the official builder: {len(ours_full)} vs "
            f"{len(official)} rows; first differences {diff}"
        )
    counts = count_rows(official)
    if counts != CHECKPOINT_COUNTS:
        raise SystemExit(f"counts {counts} differ from the checkpoint's {CHECKPOINT_COUNTS}")
    print(f"full size: {counts} (official builder == config-driven builder, same order)")

    real = count_rows(manifest_rows(build_with_official_builder_on_meta(use_rope_real=True)))
    print(f"official builder with use_rope_real=True (its CUDA default): {real}")

    path = _common31.FIXTURES / "sam31_official_state_dict.tsv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same bytes on every run
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(format_manifest(official).encode())
    print(f"wrote {path.relative_to(_common31.ROOT)}")

    tiny_cfg = get_config("sam3.1-tiny")
    tiny_model = build_official_31_video_model(tiny_cfg, device="cpu")
    tiny = manifest_rows(tiny_model)
    if tiny != manifest_rows(build_official_31_video_model(tiny_cfg, device="meta")):
        raise SystemExit("tiny manifest differs between cpu and meta construction")
    # Same architecture: every tiny key is a full-size key, and with layer indices masked the two
    # key sets are equal (tiny has fewer layers, not other modules).
    if not {k for k, _, _ in tiny} <= {k for k, _, _ in official}:
        raise SystemExit("tiny has keys the full-size model lacks")
    if {_family(k) for k, _, _ in tiny} != {_family(k) for k, _, _ in official}:
        raise SystemExit("tiny and full-size key families differ")
    n_el = sum(v.numel() for v in tiny_model.state_dict().values())
    tiny_path = _common31.FIXTURES / "manifest_31_tiny.tsv"
    write_manifest(tiny_path, tiny)
    print(
        f"tiny: {len(tiny)} keys (same families as full), {n_el:,} elements -> "
        f"{tiny_path.relative_to(_common31.ROOT)}"
    )
    assert read_manifest(tiny_path) == tiny


# --------------------------------------------------------------------------------------------
# smoke run: the official predictor on CPU with synthetic weights
# --------------------------------------------------------------------------------------------
def write_clip(folder, num_frames: int = 4, step: int = 2) -> tuple[int, int]:
    """Frames 0, step, 2*step, ... of ``shared/data/videos/bikes.mp4`` as JPEGs ``00000.jpg``..."""
    import av
    from PIL import Image

    video = _common31._common.SHARED / "data" / "videos" / "bikes.mp4"
    kept = 0
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            Image.fromarray(rgb).save(f"{folder}/{kept:05d}.jpg", quality=95)
            kept += 1
            if kept == num_frames:
                break
    return rgb.shape[0], rgb.shape[1]


def _summary(outputs: dict) -> str:
    ids = [int(i) for i in outputs["out_obj_ids"]]
    areas = [int(m.sum()) for m in outputs["out_binary_masks"]]
    probs = [round(float(p), 3) for p in outputs.get("out_probs", [])]
    return f"ids {ids} areas {areas} probs {probs}"


def smoke_run(
    preset: str = "sam3.1-tiny", num_frames: int = 4, text: str = "bicycle", **overrides
) -> dict:
    """Text prompt on frame 0, propagation, a click adding a new object on frame 1, propagation:
    the official multiplex predictor end to end on the CPU, float32, synthetic weights.
    ``overrides`` replace video heuristics (`VIDEO_DEFAULTS_31`). Returns the responses per
    request (frame -> summary string)."""
    import tempfile
    import time

    _common31.drop_bf16_casts()
    _common31._common.guard_empty_connected_components()
    cfg = get_config(preset)
    t0 = time.time()
    model = build_official_31_video_model(cfg, device="cpu", **overrides)
    kept = _common31.load_synthetic(model, prefix="")
    print(
        f"{preset}: built + synthetic weights in {time.time() - t0:.1f}s; computed buffers "
        f"kept: {len(kept)} ({', '.join(sorted({k.rsplit('.', 1)[-1] for k in kept}))}); "
        f"heuristic overrides: {overrides or 'none'}"
    )
    predictor = build_official_31_predictor(model)
    log: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        height, width = write_clip(folder, num_frames)
        sid = predictor.handle_request({"type": "start_session", "resource_path": folder})[
            "session_id"
        ]
        steps = [
            ("text", {"type": "add_prompt", "frame_index": 0, "text": text}),
            ("propagate", None),
            (
                "click",
                {
                    "type": "add_prompt",
                    "frame_index": 1,
                    "points": [[0.5, 0.5]],
                    "point_labels": [1],
                    "obj_id": 100,
                },
            ),
            ("propagate_after_click", None),
        ]
        for name, request in steps:
            t0 = time.time()
            if request is None:
                stream = {"type": "propagate_in_video", "session_id": sid}
                frames = {
                    r["frame_index"]: _summary(r["outputs"])
                    for r in predictor.handle_stream_request(stream)
                }
            else:
                response = predictor.handle_request({**request, "session_id": sid})
                frames = {response["frame_index"]: _summary(response["outputs"])}
            log[name] = frames
            print(f"{name} ({time.time() - t0:.1f}s):")
            for frame, line in sorted(frames.items()):
                print(f"  frame {frame}: {line}")
        predictor.handle_request({"type": "close_session", "session_id": sid})
    print(f"video {height}x{width}, {num_frames} frames: official {preset} ran end to end on CPU")
    return log


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke",
        choices=["sam3.1-tiny", "sam3.1"],
        help="instead of the manifests: run the official predictor on a few frames",
    )
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a video heuristic, e.g. new_det_thresh=0.5 (float/int/True/False)",
    )
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        name, value = item.split("=", 1)
        if name not in VIDEO_DEFAULTS_31:
            parser.error(f"--set: unknown heuristic {name!r}")
        default = VIDEO_DEFAULTS_31[name]
        if isinstance(default, bool):
            overrides[name] = value == "True"
        elif isinstance(default, int) and "." not in value:
            overrides[name] = int(value)
        else:
            overrides[name] = float(value)
    torch.set_grad_enabled(False)
    if args.smoke:
        smoke_run(args.smoke, args.frames, **overrides)
    else:
        main()
