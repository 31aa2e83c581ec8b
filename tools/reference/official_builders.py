"""Build the OFFICIAL sam3 0.1.4 model at the sizes of a `Sam3VideoConfig`.

Runs ONLY inside the reference venv (see ``tools/reference/README.md``). Import it after
``_common`` (which reroutes the official CUDA calls to the CPU and puts ``src/`` on the path).

``sam3.model_builder`` wires the official classes with the full-size numbers written inline;
the functions below wire the same classes in the same way, but take every size from the
config, so ``tiny_config()`` gives a small official model whose state-dict keys equal the full
one's. Sizes that the official builder does not expose (and how they are set here):

- ``TextTransformer.text_projection`` is created as ``(width, 512)`` whatever the width; it is
  replaced by a ``(width, cfg.text.proj_dim)`` parameter (its product is discarded in the
  official forward, so numbers do not change).
- ``Sam3TrackerBase._build_sam_heads`` hard-codes ``mask_in_chans=16``, a two-way transformer
  with 8 heads and MLP 2048, and an IoU head hidden width of 256; the prompt encoder and mask
  decoder are rebuilt with ``cfg.tracker`` sizes and an IoU hidden width of ``cfg.d_model``
  (256 = d_model at full size).

Public functions:

- ``build_official_detector(cfg)`` -> ``Sam3ImageOnVideoMultiGPU`` (with the tracker neck
  ``sam2_convs``), as ``build_sam3_video_model`` builds ``detector``.
- ``build_official_tracker(cfg)`` -> ``Sam3TrackerPredictor`` (no backbone), as ``build_tracker``.
- ``build_official_video_model(cfg)`` -> ``Sam3VideoInferenceWithInstanceInteractivity``.
- component builders (``build_official_vision_backbone``, ``..._text_encoder``,
  ``..._geometry_encoder``, ``..._transformer``, ``..._dot_prod_scoring``,
  ``..._segmentation_head``) for the per-module generators.
- ``manifest_rows(module, prefix)`` / ``write_manifest(path, rows)``: key, shape, dtype lists in
  the format of ``shared/reference/sam3_official_state_dict.tsv``.

Every builder accepts ``device`` (``"cpu"`` or ``"meta"``); on ``meta`` nothing is allocated.
Modules are returned in eval mode.
"""

from __future__ import annotations

import _common  # noqa: F401  (CPU patches, src/ on sys.path)
import torch
from sam3.model.decoder import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerDecoderLayerv2,
    TransformerEncoderCrossAttention,
)
from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
from sam3.model.geometry_encoders import SequenceGeometryEncoder
from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
from sam3.model.model_misc import MLP, DotProductScoring, TransformerWrapper
from sam3.model.model_misc import MultiheadAttentionWrapper as WrappedMHA
from sam3.model.necks import Sam3DualViTDetNeck
from sam3.model.position_encoding import PositionEmbeddingSine
from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU
from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
from sam3.model.sam3_video_inference import Sam3VideoInferenceWithInstanceInteractivity
from sam3.model.text_encoder_ve import VETextEncoder
from sam3.model.tokenizer_ve import SimpleTokenizer
from sam3.model.vitdet import ViT
from sam3.model.vl_combiner import SAM3VLBackbone
from sam3.sam.mask_decoder import MaskDecoder
from sam3.sam.prompt_encoder import PromptEncoder
from sam3.sam.transformer import RoPEAttention, TwoWayTransformer
from torch import nn

from sam3video.model.config import Sam3VideoConfig

# Video heuristics of ``build_sam3_video_model(apply_temporal_disambiguation=True)``. They are
# constructor arguments without weights; listed once so the video builder stays readable.
VIDEO_DEFAULTS = dict(
    score_threshold_detection=0.5,
    assoc_iou_thresh=0.1,
    det_nms_thresh=0.1,
    new_det_thresh=0.7,
    hotstart_delay=15,
    hotstart_unmatch_thresh=8,
    hotstart_dup_thresh=8,
    suppress_unmatched_only_within_hotstart=True,
    min_trk_keep_alive=-1,
    max_trk_keep_alive=30,
    init_trk_keep_alive=30,
    suppress_overlapping_based_on_recent_occlusion_threshold=0.7,
    suppress_det_close_to_boundary=False,
    fill_hole_area=16,
    recondition_every_nth_frame=16,
    masklet_confirmation_enable=False,
    decrease_trk_keep_alive_for_empty_masklets=False,
    image_mean=(0.5, 0.5, 0.5),
    image_std=(0.5, 0.5, 0.5),
    compile_model=False,
)


# --------------------------------------------------------------------------------------------
# detector components
# --------------------------------------------------------------------------------------------
class _on_device:
    """``torch.device(device)`` context; on ``meta`` also lets ``Tensor.item()`` return 0.

    The official ViT reads its drop-path rates with ``.item()`` while constructing; on ``meta``
    those values are irrelevant (inference), only shapes matter.
    """

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self._ctx = torch.device(device)
        self._item = None

    def __enter__(self):
        self._ctx.__enter__()
        if self.device.type == "meta":
            self._item = torch.Tensor.item
            item = self._item
            torch.Tensor.item = lambda t: 0 if t.is_meta else item(t)
        return self

    def __exit__(self, *exc):
        if self._item is not None:
            torch.Tensor.item = self._item
            self._item = None
        return self._ctx.__exit__(*exc)


def _sine_pe(num_pos_feats: int, precompute_resolution: int | None = None) -> PositionEmbeddingSine:
    return PositionEmbeddingSine(
        num_pos_feats=num_pos_feats,
        normalize=True,
        scale=None,
        temperature=10000,
        precompute_resolution=precompute_resolution,
    )


def _mha(cfg: Sam3VideoConfig, batch_first: bool | None = None, dropout: float = 0.1) -> WrappedMHA:
    kwargs = {} if batch_first is None else {"batch_first": batch_first}
    d = cfg.detector
    return WrappedMHA(num_heads=d.num_heads, dropout=dropout, embed_dim=d.d_model, **kwargs)


def build_official_vision_backbone(cfg: Sam3VideoConfig, device: str = "cpu") -> Sam3DualViTDetNeck:
    """ViT trunk + detector neck ``convs`` + tracker neck ``sam2_convs``."""
    v = cfg.vit
    with _on_device(device):
        trunk = ViT(
            img_size=cfg.image_size,
            pretrain_img_size=v.pretrain_img_size,
            patch_size=v.patch_size,
            embed_dim=v.embed_dim,
            depth=v.depth,
            num_heads=v.num_heads,
            mlp_ratio=v.mlp_ratio,
            norm_layer="LayerNorm",
            drop_path_rate=0.1,
            qkv_bias=True,
            use_abs_pos=True,
            tile_abs_pos=True,
            global_att_blocks=tuple(v.global_att_blocks),
            rel_pos_blocks=(),
            use_rope=True,
            use_interp_rope=True,
            window_size=v.window_size,
            pretrain_use_cls_token=True,
            retain_cls_token=False,
            ln_pre=True,
            ln_post=False,
            return_interm_layers=False,
            bias_patch_embed=False,
            compile_mode=None,
        )
        neck = Sam3DualViTDetNeck(
            position_encoding=_sine_pe(cfg.d_model, precompute_resolution=cfg.image_size),
            d_model=cfg.d_model,
            scale_factors=[4.0, 2.0, 1.0, 0.5],
            trunk=trunk,
            add_sam2_neck=True,
        )
    return neck.eval()


def build_official_text_encoder(
    cfg: Sam3VideoConfig, device: str = "cpu", bpe_path: str | None = None
) -> VETextEncoder:
    """``VETextEncoder`` (CLIP-style causal transformer + ``resizer``)."""
    t = cfg.text
    if t.mlp_ratio != 4.0:
        raise ValueError("the official VETextEncoder always uses mlp_ratio 4.0")
    with _on_device(device):
        text = VETextEncoder(
            tokenizer=SimpleTokenizer(bpe_path=str(bpe_path or _common.BPE_PATH)),
            d_model=cfg.d_model,
            width=t.width,
            heads=t.heads,
            layers=t.layers,
            context_length=t.context_length,
            vocab_size=t.vocab_size,
        )
        # The official class does not forward its output_dim; shape it like the config.
        if tuple(text.encoder.text_projection.shape) != (t.width, t.proj_dim):
            text.encoder.text_projection = nn.Parameter(torch.empty(t.width, t.proj_dim))
            text.encoder.output_dim = t.proj_dim
    return text.eval()


def build_official_geometry_encoder(
    cfg: Sam3VideoConfig, device: str = "cpu"
) -> SequenceGeometryEncoder:
    d = cfg.detector
    with _on_device(device):
        layer = TransformerEncoderLayer(
            activation="relu",
            d_model=d.d_model,
            dim_feedforward=d.ffn_dim,
            dropout=0.1,
            pos_enc_at_attn=False,
            pre_norm=True,
            self_attention=_mha(cfg, batch_first=False),
            pos_enc_at_cross_attn_queries=False,
            pos_enc_at_cross_attn_keys=True,
            cross_attention=_mha(cfg, batch_first=False),
        )
        geo = SequenceGeometryEncoder(
            pos_enc=_sine_pe(d.d_model),
            encode_boxes_as_points=False,
            points_direct_project=True,
            points_pool=True,
            points_pos_enc=True,
            boxes_direct_project=True,
            boxes_pool=True,
            boxes_pos_enc=True,
            d_model=d.d_model,
            num_layers=d.geo_layers,
            layer=layer,
            roi_size=d.geo_roi_size,
            use_act_ckpt=True,
            add_cls=True,
            add_post_encode_proj=True,
        )
    return geo.eval()


def build_official_transformer(cfg: Sam3VideoConfig, device: str = "cpu") -> TransformerWrapper:
    """Fusion encoder + DETR decoder (presence token, box RPB "log")."""
    d = cfg.detector
    with _on_device(device):
        enc_layer = TransformerEncoderLayer(
            activation="relu",
            d_model=d.d_model,
            dim_feedforward=d.ffn_dim,
            dropout=0.1,
            pos_enc_at_attn=True,
            pos_enc_at_cross_attn_keys=False,
            pos_enc_at_cross_attn_queries=False,
            pre_norm=True,
            self_attention=_mha(cfg, batch_first=True),
            cross_attention=_mha(cfg, batch_first=True),
        )
        encoder = TransformerEncoderFusion(
            layer=enc_layer,
            num_layers=d.encoder_layers,
            d_model=d.d_model,
            num_feature_levels=1,
            frozen=False,
            use_act_checkpoint=True,
            add_pooled_text_to_img_feat=False,
            pool_text_with_mask=True,
        )
        dec_layer = TransformerDecoderLayer(
            activation="relu",
            d_model=d.d_model,
            dim_feedforward=d.ffn_dim,
            dropout=0.1,
            cross_attention=_mha(cfg),
            n_heads=d.num_heads,
            use_text_cross_attention=True,
        )
        decoder = TransformerDecoder(
            layer=dec_layer,
            num_layers=d.decoder_layers,
            num_queries=d.num_queries,
            return_intermediate=True,
            box_refine=True,
            num_o2m_queries=0,
            dac=True,
            boxRPB="log",
            d_model=d.d_model,
            frozen=False,
            interaction_layer=None,
            dac_use_selfatt_ln=True,
            resolution=cfg.image_size,
            stride=cfg.vit.patch_size,
            use_act_checkpoint=True,
            presence_token=d.presence_token,
            clamp_presence_logit_max_val=10.0,
        )
        wrapper = TransformerWrapper(encoder=encoder, decoder=decoder, d_model=d.d_model)
    return wrapper.eval()


def build_official_dot_prod_scoring(cfg: Sam3VideoConfig, device: str = "cpu") -> DotProductScoring:
    d = cfg.detector
    with _on_device(device):
        prompt_mlp = MLP(
            input_dim=d.d_model,
            hidden_dim=d.scoring_mlp_dim,
            output_dim=d.d_model,
            num_layers=2,
            dropout=0.1,
            residual=True,
            out_norm=nn.LayerNorm(d.d_model),
        )
        scoring = DotProductScoring(
            d_model=d.d_model,
            d_proj=d.d_model,
            prompt_mlp=prompt_mlp,
            clamp_max_val=d.dot_prod_clamp,
        )
    return scoring.eval()


def build_official_segmentation_head(
    cfg: Sam3VideoConfig, device: str = "cpu"
) -> UniversalSegmentationHead:
    d = cfg.detector
    if d.group_norm_groups != 8:
        raise ValueError("the official PixelDecoder always uses GroupNorm(8, C)")
    with _on_device(device):
        pixel_decoder = PixelDecoder(
            num_upsampling_stages=d.pixel_decoder_stages,
            interpolation_mode="nearest",
            hidden_dim=d.d_model,
            compile_mode=None,
        )
        head = UniversalSegmentationHead(
            hidden_dim=d.d_model,
            upsampling_stages=d.pixel_decoder_stages,
            aux_masks=False,
            presence_head=False,
            dot_product_scorer=None,
            act_ckpt=True,
            cross_attend_prompt=_mha(cfg, dropout=0.0),
            pixel_decoder=pixel_decoder,
        )
    return head.eval()


def build_official_detector(
    cfg: Sam3VideoConfig, device: str = "cpu", bpe_path: str | None = None
) -> Sam3ImageOnVideoMultiGPU:
    """The ``detector`` child of the official video model (keys without ``detector.``)."""
    d = cfg.detector
    vision = build_official_vision_backbone(cfg, device)
    text = build_official_text_encoder(cfg, device, bpe_path)
    with _on_device(device):
        backbone = SAM3VLBackbone(scalp=1, visual=vision, text=text)
        detector = Sam3ImageOnVideoMultiGPU(
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
        )
    return detector.eval()


# --------------------------------------------------------------------------------------------
# tracker
# --------------------------------------------------------------------------------------------
def _memory_encoder(cfg: Sam3VideoConfig) -> SimpleMaskEncoder:
    tr = cfg.tracker
    downsampler = SimpleMaskDownSampler(
        embed_dim=cfg.d_model,
        kernel_size=3,
        stride=2,
        padding=1,
        interpol_size=[cfg.input_mask_size, cfg.input_mask_size],
    )
    cx_block = CXBlock(
        dim=cfg.d_model, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06, use_dwconv=True
    )
    return SimpleMaskEncoder(
        out_dim=tr.mem_dim,
        position_encoding=_sine_pe(tr.mem_dim, precompute_resolution=cfg.image_size),
        mask_downsampler=downsampler,
        fuser=SimpleFuser(layer=cx_block, num_layers=tr.fuser_layers),
        in_dim=cfg.d_model,
    )


def _memory_attention(cfg: Sam3VideoConfig) -> TransformerWrapper:
    tr = cfg.tracker
    feat = [cfg.feat_size, cfg.feat_size]
    self_attn = RoPEAttention(
        embedding_dim=cfg.d_model,
        num_heads=tr.memory_attention_heads,
        downsample_rate=1,
        dropout=0.1,
        rope_theta=tr.rope_theta,
        feat_sizes=feat,
        use_fa3=False,
        use_rope_real=False,
    )
    cross_attn = RoPEAttention(
        embedding_dim=cfg.d_model,
        num_heads=tr.memory_attention_heads,
        downsample_rate=1,
        dropout=0.1,
        kv_in_dim=tr.mem_dim,
        rope_theta=tr.rope_theta,
        feat_sizes=feat,
        rope_k_repeat=True,
        use_fa3=False,
        use_rope_real=False,
    )
    layer = TransformerDecoderLayerv2(
        cross_attention_first=False,
        activation="relu",
        dim_feedforward=tr.memory_attention_ffn_dim,
        dropout=0.1,
        pos_enc_at_attn=False,
        pre_norm=True,
        self_attention=self_attn,
        d_model=cfg.d_model,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        cross_attention=cross_attn,
    )
    encoder = TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[],
        batch_first=True,
        d_model=cfg.d_model,
        frozen=False,
        pos_enc_at_input=True,
        layer=layer,
        num_layers=tr.memory_attention_layers,
        use_act_checkpoint=False,
    )
    return TransformerWrapper(encoder=encoder, decoder=None, d_model=cfg.d_model)


def _sam_heads(cfg: Sam3VideoConfig) -> tuple[PromptEncoder, MaskDecoder]:
    tr = cfg.tracker
    prompt_encoder = PromptEncoder(
        embed_dim=cfg.d_model,
        image_embedding_size=(cfg.feat_size, cfg.feat_size),
        input_image_size=(cfg.image_size, cfg.image_size),
        mask_in_chans=tr.mask_in_chans,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=tr.num_multimask_outputs,
        transformer=TwoWayTransformer(
            depth=tr.decoder_depth,
            embedding_dim=cfg.d_model,
            mlp_dim=tr.decoder_mlp_dim,
            num_heads=tr.decoder_heads,
            attention_downsample_rate=tr.attention_downsample_rate,
        ),
        transformer_dim=cfg.d_model,
        iou_head_depth=tr.iou_head_depth,
        iou_head_hidden_dim=cfg.d_model,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
        dynamic_multimask_via_stability=True,
        dynamic_multimask_stability_delta=tr.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=tr.dynamic_multimask_stability_thresh,
    )
    return prompt_encoder, mask_decoder


def build_official_tracker(cfg: Sam3VideoConfig, device: str = "cpu") -> Sam3TrackerPredictor:
    """The ``tracker`` child of the official video model (no backbone of its own)."""
    tr = cfg.tracker
    with _on_device(device):
        tracker = Sam3TrackerPredictor(
            image_size=cfg.image_size,
            num_maskmem=tr.num_maskmem,
            backbone=None,
            backbone_stride=cfg.vit.patch_size,
            transformer=_memory_attention(cfg),
            maskmem_backbone=_memory_encoder(cfg),
            multimask_output_in_sam=True,
            forward_backbone_per_frame_for_eval=True,
            trim_past_non_cond_mem_for_eval=False,
            multimask_output_for_tracking=True,
            multimask_min_pt_num=tr.multimask_min_pt_num,
            multimask_max_pt_num=tr.multimask_max_pt_num,
            always_start_from_first_ann_frame=False,
            non_overlap_masks_for_mem_enc=False,
            non_overlap_masks_for_output=False,
            max_cond_frames_in_attn=tr.max_cond_frames_in_attn,
            max_obj_ptrs_in_encoder=tr.max_obj_ptrs_in_encoder,
            max_point_num_in_prompt_enc=tr.max_point_num_in_prompt_enc,
            offload_output_to_cpu_for_eval=False,
            sam_mask_decoder_extra_args={
                "dynamic_multimask_via_stability": True,
                "dynamic_multimask_stability_delta": tr.dynamic_multimask_stability_delta,
                "dynamic_multimask_stability_thresh": tr.dynamic_multimask_stability_thresh,
            },
            clear_non_cond_mem_around_input=True,
            fill_hole_area=0,
            use_memory_selection=tr.use_memory_selection,
            mf_threshold=tr.memory_selection_threshold,
        )
        # The official constructor builds the SAM heads with fixed sizes; rebuild them with the
        # config's (same modules, same attribute names, so the state-dict order is kept).
        tracker.sam_prompt_encoder, tracker.sam_mask_decoder = _sam_heads(cfg)
        tracker.sigmoid_scale_for_mem_enc = tr.sigmoid_scale_for_mem_enc
        tracker.sigmoid_bias_for_mem_enc = tr.sigmoid_bias_for_mem_enc
    return tracker.eval()


# --------------------------------------------------------------------------------------------
# whole video model
# --------------------------------------------------------------------------------------------
def build_official_video_model(
    cfg: Sam3VideoConfig, device: str = "cpu", bpe_path: str | None = None
) -> Sam3VideoInferenceWithInstanceInteractivity:
    """``detector`` + ``tracker`` as ``build_sam3_video_model`` wires them (no checkpoint)."""
    tracker = build_official_tracker(cfg, device)
    detector = build_official_detector(cfg, device, bpe_path)
    with _on_device(device):
        model = Sam3VideoInferenceWithInstanceInteractivity(
            detector=detector,
            tracker=tracker,
            image_size=cfg.image_size,
            **VIDEO_DEFAULTS,
        )
    return model.eval()


def manifest_rows(module: nn.Module, prefix: str = "") -> list[tuple[str, tuple[int, ...], str]]:
    """``(key, shape, dtype)`` for every state-dict entry, in state-dict order."""
    return [
        (prefix + k, tuple(v.shape), str(v.dtype).replace("torch.", ""))
        for k, v in module.state_dict().items()
    ]


def format_manifest(rows: list[tuple[str, tuple[int, ...], str]]) -> str:
    return "".join(f"{k}\t{shape}\t{dtype}\n" for k, shape, dtype in rows)


def read_manifest(path) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in open(path):
        if not line.strip():
            continue
        key, shape, dtype = line.rstrip("\n").split("\t")
        dims = shape.strip("()").replace(" ", "")
        rows.append((key, tuple(int(s) for s in dims.split(",") if s), dtype))
    return rows


def write_manifest(path, rows: list[tuple[str, tuple[int, ...], str]]) -> None:
    with open(path, "w") as f:
        f.write(format_manifest(rows))


def main() -> None:
    """Check the full-size key list against the shared manifest; write the tiny one."""
    from sam3video.model.config import full_config, tiny_config

    shared = _common.SHARED / "reference" / "sam3_official_state_dict.tsv"
    full = manifest_rows(build_official_video_model(full_config(), device="meta"))
    expected = read_manifest(shared)
    if full != expected:
        missing = sorted(set(expected) - set(full))
        extra = sorted(set(full) - set(expected))
        raise SystemExit(f"full-size manifest differs: missing {missing[:5]} extra {extra[:5]}")
    print(f"full size: {len(full)} keys, identical to {shared.name} (keys, shapes, dtypes, order)")

    tiny_cpu = build_official_video_model(tiny_config(), device="cpu")
    tiny = manifest_rows(tiny_cpu)
    if tiny != manifest_rows(build_official_video_model(tiny_config(), device="meta")):
        raise SystemExit("tiny manifest differs between cpu and meta construction")
    n_params = sum(v.numel() for v in tiny_cpu.state_dict().values())
    path = _common.FIXTURES / "manifest_tiny.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(path, tiny)
    print(f"tiny: {len(tiny)} keys, {n_params:,} elements -> {path.relative_to(_common.ROOT)}")


if __name__ == "__main__":
    main()
