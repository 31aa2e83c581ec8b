"""One typed configuration for the whole SAM 3 video model.

`Sam3VideoConfig` groups the sizes of every component (vision trunk, necks, text encoder,
detector heads, tracker) plus the video heuristics. Three presets exist:

- ``full``: the official sizes; a model built from it loads Meta's ``sam3.pt`` strictly.
- ``tiny``: the same architecture and state-dict key names with small sizes and a 224 px
  input, fast on a CPU. Used by the default test suite and by parity fixtures.
- ``demo``: the ``tiny`` image and text encoders with a detector and tracker four times as
  wide (``d_model`` 128); the predictor and the CLI load it with the packaged weights
  trained on the shapes world (``assets/demo.safetensors``).

SAM 3.1 (``sam3.1_multiplex.pt``) has its own two presets, ``sam3.1`` (Meta's sizes) and
``sam3.1-tiny`` (same keys, the 3.0 tiny sizes): the same detector with a three-way neck and
the multiplex tracker (`MultiplexTrackerConfig`, set as ``Sam3VideoConfig.multiplex``).

Everything derived from these numbers (grid size, low-resolution mask size, ...) is exposed
as a property so that it is never stored twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class ViTConfig:
    """Vision trunk (``detector.backbone.vision_backbone.trunk``)."""

    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: float = 4.625
    window_size: int = 24
    global_att_blocks: tuple[int, ...] = (7, 15, 23, 31)
    pretrain_img_size: int = 336  # absolute pos-embed grid = pretrain_img_size // patch_size
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-5

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def pretrain_grid(self) -> int:
        return self.pretrain_img_size // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    """CLIP-style causal text encoder (``detector.backbone.language_backbone``)."""

    width: int = 1024
    layers: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0
    context_length: int = 32
    vocab_size: int = 49408
    proj_dim: int = 512  # ``encoder.text_projection`` (width, proj_dim); stored but unused

    @property
    def mlp_dim(self) -> int:
        return int(self.width * self.mlp_ratio)


@dataclass(frozen=True)
class DetectorConfig:
    """Geometry encoder, fusion encoder, decoder, scoring and segmentation head."""

    d_model: int = 256
    num_heads: int = 8
    ffn_dim: int = 2048
    geo_layers: int = 3
    geo_roi_size: int = 7
    geo_use_img_cross_attn: bool = True
    encoder_layers: int = 6
    decoder_layers: int = 6
    num_queries: int = 200
    presence_token: bool = True
    box_rpb_heads: int = 8  # equals num_heads; the bias is one value per attention head
    scoring_mlp_dim: int = 2048
    dot_prod_clamp: float = 12.0
    pixel_decoder_stages: int = 3  # conv_layers/norms stored; only two are used (see spec §10)
    group_norm_groups: int = 8


@dataclass(frozen=True)
class TrackerConfig:
    """SAM 3 memory tracker (``tracker.``)."""

    mem_dim: int = 64
    num_maskmem: int = 7
    mask_in_chans: int = 16  # prompt encoder mask_downscaling width
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    memory_attention_layers: int = 4
    memory_attention_heads: int = 1
    memory_attention_ffn_dim: int = 2048
    rope_theta: float = 10000.0
    fuser_layers: int = 2
    max_cond_frames_in_attn: int = 4
    max_obj_ptrs_in_encoder: int = 16
    max_point_num_in_prompt_enc: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    use_memory_selection: bool = True
    memory_selection_threshold: float = 0.01


@dataclass(frozen=True)
class MultiplexTrackerConfig:
    """SAM 3.1 multiplex tracker (``tracker.model.``): objects in buckets of ``multiplex_count``.

    The memory is as wide as the features (no ``mem_dim`` compression). Defaults are the
    official ``build_sam3_multiplex_video_model`` values.
    """

    multiplex_count: int = 16
    num_maskmem: int = 7
    mask_in_chans: int = 16  # interactive prompt encoder mask_downscaling width
    decoder_depth: int = 2  # both SAM decoders (interactive and multiplex)
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    memory_attention_layers: int = 4
    memory_attention_heads: int = 8
    memory_attention_ffn_dim: int = 2048
    rope_theta: float = 10000.0
    fuser_layers: int = 2
    mask_downsampler_start_chans: int = 4  # official starting_out_chan
    mask_input_channel_multiplier: int = 2  # mask + "is conditioning" channel per slot
    max_cond_frames_in_attn: int = 4
    max_obj_ptrs_in_encoder: int = 16
    sigmoid_scale_for_mem_enc: float = 2.0
    sigmoid_bias_for_mem_enc: float = -1.0
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    object_score_logit_threshold: float = 0.0
    condition_fg: float = 1.0  # official condition_as_mask_input_fg / _bg
    condition_bg: float = 0.0
    use_memory_selection: bool = False
    memory_selection_threshold: float = 0.01

    @property
    def mask_in_slots(self) -> int:
        """Input channels of the memory encoder's mask downsampler (32 at full size)."""
        return self.multiplex_count * self.mask_input_channel_multiplier


@dataclass(frozen=True)
class Sam3VideoConfig:
    """Whole video model: image size, components and the name of the preset."""

    name: str = "full"
    image_size: int = 1008
    vit: ViTConfig = field(default_factory=ViTConfig)
    text: TextConfig = field(default_factory=TextConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    # SAM 3.1: the multiplex tracker replaces ``tracker`` (which is then unused) and the neck
    # has three pyramids (detector, interactive, propagation) of three levels each.
    multiplex: MultiplexTrackerConfig | None = None

    @property
    def version(self) -> str:
        """``"sam3"`` or ``"sam3.1"`` (the checkpoint family this config loads)."""
        return "sam3" if self.multiplex is None else "sam3.1"

    @property
    def d_model(self) -> int:
        """Width shared by the necks, the detector heads and the tracker."""
        return self.detector.d_model

    @property
    def feat_size(self) -> int:
        """Side of the backbone token grid (72 for the full model)."""
        return self.image_size // self.vit.patch_size

    @property
    def low_res_mask_size(self) -> int:
        """Side of the detector/tracker mask logits (288 for the full model)."""
        return self.feat_size * 4

    @property
    def input_mask_size(self) -> int:
        """Side that mask prompts and memory-encoder inputs are resized to (1152)."""
        return self.low_res_mask_size * 4

    def replace(self, **changes) -> Sam3VideoConfig:
        return replace(self, **changes)


def full_config() -> Sam3VideoConfig:
    """The official SAM 3 sizes (861M parameters)."""
    return Sam3VideoConfig()


def tiny_config() -> Sam3VideoConfig:
    """Same architecture and key names, small sizes; a forward takes milliseconds on CPU."""
    return Sam3VideoConfig(
        name="tiny",
        image_size=224,  # 16x16 token grid, 2x2 windows of 8x8
        vit=ViTConfig(
            embed_dim=64,
            depth=4,
            num_heads=2,
            window_size=8,
            global_att_blocks=(1, 3),
            pretrain_img_size=112,  # 8x8 pos-embed grid, tiled 2x to cover 16x16
        ),
        text=TextConfig(width=64, layers=2, heads=2),  # proj_dim stays 512: official ignores it
        detector=DetectorConfig(
            d_model=32,
            num_heads=4,
            ffn_dim=64,
            geo_layers=2,
            encoder_layers=2,
            decoder_layers=2,
            num_queries=16,
            box_rpb_heads=4,
            scoring_mlp_dim=64,
        ),
        tracker=TrackerConfig(
            mem_dim=16,
            decoder_heads=4,
            decoder_mlp_dim=64,
            memory_attention_layers=2,
            memory_attention_ffn_dim=64,
        ),
    )


def demo_config() -> Sam3VideoConfig:
    """The preset of the packaged shapes-world weights: the ``tiny`` image encoder, text
    encoder and depths with the detector and tracker widened to ``d_model`` 128.

    Why wider than ``tiny``: at ``d_model`` 32 the mask decoders' mask embeddings have
    32 / 8 = 4 channels, too few to learn which object a click selects even on one frame
    (``tools/probe_decoder_capacity.py``: IoU 0.00 at 32, 0.80 at 64, 0.87 at 128).

    One mask per click (``multimask_max_pt_num=0``; tracked frames keep three candidates):
    trained with three candidates and the best-of-three loss, the candidates learned to
    cover three of a frame's objects whatever was clicked (the click unused); a single
    output must follow the click."""
    tiny = tiny_config()
    d = 128
    return tiny.replace(
        name="demo",
        detector=replace(tiny.detector, d_model=d, ffn_dim=2 * d),
        tracker=replace(
            tiny.tracker,
            mem_dim=d // 4,
            decoder_mlp_dim=2 * d,
            memory_attention_ffn_dim=2 * d,
            multimask_max_pt_num=0,
        ),
    )


def sam31_config() -> Sam3VideoConfig:
    """The official SAM 3.1 sizes: loads Meta's ``sam3.1_multiplex.pt`` strictly."""
    return Sam3VideoConfig(name="sam3.1", multiplex=MultiplexTrackerConfig())


def sam31_tiny_config() -> Sam3VideoConfig:
    """SAM 3.1 keys at the 3.0 tiny sizes; buckets of 4 objects, a narrow mask downsampler."""
    tiny = tiny_config()
    return tiny.replace(
        name="sam3.1-tiny",
        multiplex=MultiplexTrackerConfig(
            multiplex_count=4,
            decoder_heads=4,
            decoder_mlp_dim=64,
            iou_head_hidden_dim=tiny.d_model,
            memory_attention_layers=2,
            memory_attention_heads=4,
            memory_attention_ffn_dim=64,
            mask_downsampler_start_chans=1,
        ),
    )


PRESETS = {
    "full": full_config,
    "tiny": tiny_config,
    "demo": demo_config,
    "sam3.1": sam31_config,
    "sam3.1-tiny": sam31_tiny_config,
}


def get_config(config: str | Sam3VideoConfig) -> Sam3VideoConfig:
    """Return a preset by name (``"full"``, ``"tiny"``, ``"demo"``, ``"sam3.1"``,
    ``"sam3.1-tiny"``) or pass a config through."""
    if isinstance(config, Sam3VideoConfig):
        return config
    if config not in PRESETS:
        from sam3video.errors import ConfigError

        raise ConfigError(
            f"config: expected one of {sorted(PRESETS)} or a Sam3VideoConfig, got {config!r}"
        )
    return PRESETS[config]()
