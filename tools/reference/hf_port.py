"""Hugging Face transformers' SAM 3 video port at our configs' sizes, with our synthetic weights.

Runs ONLY inside the reference venv (transformers 5.23.0), from the repository root::

    ~/.cache/sam3-reference-venv/bin/python tools/reference/hf_port.py --check

- `build_hf_video_model(cfg)`: a ``transformers.Sam3VideoModel`` whose sizes all come from a
  `Sam3VideoConfig` (``tiny`` or ``full``); float32, eval, CPU. HF writes the memory
  cross-attention's key/value input width (64 = mem_dim at full size) inline; those two
  projections are rebuilt with ``cfg.tracker.mem_dim`` (tiny: 16).
- `official_to_hf(state_dict)`: official keys (``detector.*``, ``tracker.*``: those of
  ``sam3.pt`` and of our model) -> HF keys: renames, q/k/v splits of the fused ``qkv`` /
  ``in_proj_*`` tensors, the CLIP ``text_projection`` transposed, the ViT position table
  without its cls row, the four tracker point embeddings stacked in one table, the prompt
  encoder's Gaussian matrix given twice (HF keeps a copy in ``shared_image_embedding``).
- `load_official_into_hf(model, ...)`: copies them in place and raises unless EVERY HF
  parameter and persistent buffer is assigned exactly once with its shape. Not mapped: the
  official RoPE tables ``freqs_cis`` and the geometry encoder's ``points_*`` projections (HF's
  detector takes no points). HF computes its non-persistent buffers itself (``position_ids``,
  ``rotary_emb.inv_freq`` / ``original_inv_freq``: `HF_COMPUTED_BUFFERS`).
- `synthetic_hf_model(cfg)`: the HF model with `sam3video.model.weights.synthetic_tensor`,
  drawn one tensor at a time (the full model is never held twice).
- `hf_processor(cfg)`: an offline ``Sam3VideoProcessor``; its CLIP tokenizer is built from the
  BPE file in our assets (same ids as ours), the hub is not needed.
- CPU workarounds: `install_cpu_cv_utils()` stands in for the hub kernel
  ``kernels-community/cv-utils`` (mask NMS; connected components for hole filling) with OpenCV
  on the CPU; without it HF silently skips NMS and hole filling. `keep_memories_float32()`
  drops the one explicit bf16 cast (stored memories, ``_encode_new_memory``), as
  `_common.drop_bf16_casts` does for the official code.

Behaviour that differs from the official code (and ours), found by ``--check`` (numbers and
explanation in tools/reference/README.md):

1. Text-only prompts: HF's ``Sam3Model.forward`` runs the geometry encoder only when boxes are
   given, so its prompt is the 32 text tokens; the official model always appends the geometry
   encoder's CLS token. `add_empty_geometry_prompt()` passes one padded (label -10, masked)
   box, which yields exactly that token: the detector then matches ours to ~1e-5.
2. Newborn masks: HF's ``_tracker_add_new_objects`` gives the tracker ``logits >= 0.5`` at the
   low resolution; the official code upsamples the logits to the memory-encoder input size
   and takes ``> 0``. `official_new_object_masks()` (diagnostic) does the latter.
3. The conditioning frame's stored mask: HF keeps the mask prompt resampled to the model
   input size (+-10); the official code resamples it to the video resolution (+-1024) and
   derives the stored low-res mask from that. They differ on boundary pixels.
4. Request flow: HF's ``add_text_prompt`` only tokenizes; the first frame of
   ``propagate_in_video_iterator`` detects and creates the objects. The official ``add_prompt``
   runs the prompt frame and the propagation then revisits it.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from sam3video.model.config import Sam3VideoConfig, get_config  # noqa: E402

BPE_PATH = ROOT / "src" / "sam3video" / "assets" / "bpe_simple_vocab_16e6.txt.gz"

# --------------------------------------------------------------------------------- config


def hf_config(cfg: Sam3VideoConfig):
    """``transformers.Sam3VideoConfig`` with the sizes of ``cfg``."""
    from transformers import Sam3VideoConfig as HFConfig

    v, t, d, tr, c = cfg.vit, cfg.text, cfg.detector, cfg.tracker, cfg.d_model
    if d.scoring_mlp_dim != d.ffn_dim:
        raise ValueError("HF sizes the scoring MLP with the decoder's FFN width")
    if t.mlp_ratio != 4.0 or d.group_norm_groups != 8 or not d.presence_token:
        raise ValueError("HF hard-codes mlp_ratio 4 (text), GroupNorm(8) and the presence token")
    f = cfg.feat_size
    vit = dict(
        model_type="sam3_vit_model", hidden_size=v.embed_dim, intermediate_size=v.mlp_dim,
        num_hidden_layers=v.depth, num_attention_heads=v.num_heads, image_size=cfg.image_size,
        patch_size=v.patch_size, window_size=v.window_size,
        global_attn_indexes=list(v.global_att_blocks), pretrain_image_size=v.pretrain_img_size,
        layer_norm_eps=v.layer_norm_eps,
        rope_parameters={"rope_type": "axial", "rope_theta": v.rope_theta})
    vision = dict(model_type="sam3_vision_model", fpn_hidden_size=c, backbone_config=vit,
                  backbone_feature_sizes=[[4 * f, 4 * f], [2 * f, 2 * f], [f, f]])
    text = dict(
        model_type="clip_text_model", vocab_size=t.vocab_size, hidden_size=t.width,
        intermediate_size=t.mlp_dim, projection_dim=t.proj_dim, num_hidden_layers=t.layers,
        num_attention_heads=t.heads, max_position_embeddings=t.context_length,
        hidden_act="gelu", layer_norm_eps=1e-5)
    heads = dict(hidden_size=d.d_model, num_attention_heads=d.num_heads)
    ffn = dict(heads, intermediate_size=d.ffn_dim)
    detector = dict(
        model_type="sam3", vision_config=vision, text_config=text,
        geometry_encoder_config=dict(ffn, num_layers=d.geo_layers, roi_size=d.geo_roi_size),
        detr_encoder_config=dict(ffn, num_layers=d.encoder_layers),
        detr_decoder_config=dict(ffn, num_layers=d.decoder_layers, num_queries=d.num_queries),
        mask_decoder_config=dict(heads, num_upsampling_stages=d.pixel_decoder_stages))
    tracker = dict(
        model_type="sam3_tracker_video", vision_config=vision, image_size=cfg.image_size,
        prompt_encoder_config=dict(hidden_size=c, image_size=cfg.image_size,
                                   patch_size=v.patch_size, mask_input_channels=tr.mask_in_chans),
        mask_decoder_config=dict(
            hidden_size=c, mlp_dim=tr.decoder_mlp_dim, num_hidden_layers=tr.decoder_depth,
            num_attention_heads=tr.decoder_heads,
            attention_downsample_rate=tr.attention_downsample_rate,
            num_multimask_outputs=tr.num_multimask_outputs, iou_head_depth=tr.iou_head_depth,
            iou_head_hidden_dim=c,
            dynamic_multimask_stability_delta=tr.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=tr.dynamic_multimask_stability_thresh),
        num_maskmem=tr.num_maskmem, sigmoid_scale_for_mem_enc=tr.sigmoid_scale_for_mem_enc,
        sigmoid_bias_for_mem_enc=tr.sigmoid_bias_for_mem_enc,
        multimask_min_pt_num=tr.multimask_min_pt_num, multimask_max_pt_num=tr.multimask_max_pt_num,
        max_object_pointers_in_encoder=tr.max_obj_ptrs_in_encoder,
        max_cond_frame_num=tr.max_cond_frames_in_attn, memory_attention_hidden_size=c,
        memory_attention_num_layers=tr.memory_attention_layers,
        memory_attention_num_attention_heads=tr.memory_attention_heads,
        memory_attention_feed_forward_hidden_size=tr.memory_attention_ffn_dim,
        memory_attention_rope_feat_sizes=[f, f], memory_encoder_hidden_size=c,
        memory_encoder_output_channels=tr.mem_dim, mask_downsampler_embed_dim=c,
        memory_fuser_num_layers=tr.fuser_layers, memory_fuser_embed_dim=c,
        memory_fuser_intermediate_dim=4 * c,
        rope_parameters={"rope_type": "axial", "rope_theta": tr.rope_theta})
    out = HFConfig(detector_config=detector, tracker_config=tracker,
                   low_res_mask_size=cfg.low_res_mask_size)
    out.image_size = cfg.image_size  # propagates to every sub-config (feature sizes, RoPE grid)
    return out


def build_hf_video_model(config: str | Sam3VideoConfig = "tiny", device: str = "cpu"):
    """``transformers.Sam3VideoModel`` at the sizes of ``config`` (HF's own init values)."""
    from transformers import Sam3VideoModel

    cfg = get_config(config)
    with torch.device(device):
        model = Sam3VideoModel(hf_config(cfg))
        # HF builds the memory cross-attention's k/v projections with kv_in_dim=64 written
        # inline (= mem_dim at full size); give them the config's mem_dim.
        for layer in model.tracker_model.memory_attention.layers:
            attn = layer.cross_attn_image
            if attn.kv_in_dim != cfg.tracker.mem_dim:
                attn.kv_in_dim = cfg.tracker.mem_dim
                attn.k_proj = torch.nn.Linear(cfg.tracker.mem_dim, attn.internal_dim)
                attn.v_proj = torch.nn.Linear(cfg.tracker.mem_dim, attn.internal_dim)
    return model.float().eval()


# --------------------------------------------------------------------------------- keys

# Official module prefix -> HF module prefix; the first match wins.
_PREFIXES = [
    ("detector.backbone.vision_backbone.trunk.", "detector_model.vision_encoder.backbone."),
    ("detector.backbone.vision_backbone.convs.", "detector_model.vision_encoder.neck."),
    ("detector.backbone.vision_backbone.sam2_convs.", "tracker_neck."),
    ("detector.backbone.language_backbone.resizer.", "detector_model.text_projection."),
    ("detector.backbone.language_backbone.encoder.text_projection",
     "detector_model.text_encoder.text_projection.weight"),
    ("detector.backbone.language_backbone.encoder.", "detector_model.text_encoder.text_model."),
    ("detector.geometry_encoder.", "detector_model.geometry_encoder."),
    ("detector.transformer.encoder.", "detector_model.detr_encoder."),
    ("detector.transformer.decoder.", "detector_model.detr_decoder."),
    ("detector.dot_prod_scoring.", "detector_model.dot_product_scoring."),
    ("detector.segmentation_head.", "detector_model.mask_decoder."),
    ("tracker.transformer.encoder.", "tracker_model.memory_attention."),
    ("tracker.maskmem_backbone.", "tracker_model.memory_encoder."),
    ("tracker.sam_prompt_encoder.", "tracker_model.prompt_encoder."),
    ("tracker.sam_mask_decoder.", "tracker_model.mask_decoder."),
    ("tracker.", "tracker_model."),
]

# Renames below the prefix: (regex, replacement), all tried in order. ``layers.i`` of MLPs
# are left to `_mlp_index`, q/k/v splits and tensor reshapes to `iter_hf_tensors`.
_NECK = [(r"^(\d+)\.dconv_2x2(_0)?\.", r"fpn_layers.\1.scale_layers.0."),
         (r"^(\d+)\.dconv_2x2_1\.", r"fpn_layers.\1.scale_layers.2."),
         (r"^(\d+)\.conv_1x1\.", r"fpn_layers.\1.proj1."),
         (r"^(\d+)\.conv_3x3\.", r"fpn_layers.\1.proj2.")]
_LAYER = [(r"\.cross_attn_image\.", ".cross_attn."), (r"\.norm(\d)\.", r".layer_norm\1."),
          (r"\.linear(\d)\.", r".mlp.fc\1.")]
_LEAVES: dict[str, list[tuple[str, str]]] = {
    "detector_model.vision_encoder.backbone.": [
        (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
        (r"^pos_embed$", "embeddings.position_embeddings"), (r"^ln_pre\.", "layer_norm."),
        (r"^blocks\.", "layers."), (r"\.norm(\d)\.", r".layer_norm\1."),
        (r"\.attn\.proj\.", ".attention.o_proj."), (r"\.attn\.", ".attention.")],
    "detector_model.vision_encoder.neck.": _NECK,
    "tracker_neck.": _NECK,
    "detector_model.text_encoder.text_model.": [
        (r"^token_embedding\.", "embeddings.token_embedding."),
        (r"^positional_embedding$", "embeddings.position_embedding.weight"),
        (r"^ln_final\.", "final_layer_norm."), (r"^transformer\.resblocks\.", "encoder.layers."),
        (r"\.attn\.", ".self_attn."), (r"\.ln_(\d)\.", r".layer_norm\1."),
        (r"\.mlp\.c_fc\.", ".mlp.fc1."), (r"\.mlp\.c_proj\.", ".mlp.fc2.")],
    "detector_model.geometry_encoder.": [
        (r"^encode\.", "layers."), (r"^img_pre_norm\.", "vision_layer_norm."),
        (r"^encode_norm\.", "output_layer_norm."), (r"^norm\.", "prompt_layer_norm."), *_LAYER],
    "detector_model.detr_encoder.": _LAYER,
    "detector_model.detr_decoder.": [
        (r"^bbox_embed\.", "box_head."), (r"^presence_token_head\.", "presence_head."),
        (r"^presence_token_out_norm\.", "presence_layer_norm."),
        (r"^boxRPB_embed_", "box_rpb_embed_"), (r"^norm\.", "output_layer_norm."),
        (r"\.ca_text\.", ".text_cross_attn."), (r"\.cross_attn\.", ".vision_cross_attn."),
        (r"\.catext_norm\.", ".text_cross_attn_layer_norm."),
        (r"\.norm1\.", ".vision_cross_attn_layer_norm."), (r"\.norm2\.", ".self_attn_layer_norm."),
        (r"\.norm3\.", ".mlp_layer_norm."), (r"\.linear(\d)\.", r".mlp.fc\1.")],
    "detector_model.dot_product_scoring.": [
        (r"^prompt_mlp\.out_norm\.", "text_mlp_out_norm."), (r"^prompt_mlp\.", "text_mlp."),
        (r"^prompt_proj\.", "text_proj."), (r"^hs_proj\.", "query_proj.")],
    "detector_model.mask_decoder.": [
        (r"^mask_predictor\.mask_embed\.", "mask_embedder."),
        (r"^instance_seg_head\.", "instance_projection."),
        (r"^semantic_seg_head\.", "semantic_projection."),
        (r"^cross_attend_prompt\.", "prompt_cross_attn."),
        (r"^cross_attn_norm\.", "prompt_cross_attn_norm.")],
    "tracker_model.memory_attention.": [
        (r"^norm\.", "layer_norm."), (r"\.norm(\d)\.", r".layer_norm\1.")],
    "tracker_model.memory_encoder.": [
        (r"^pix_feat_proj\.", "feature_projection."), (r"^out_proj\.", "projection."),
        (r"^fuser\.", "memory_fuser."), (r"\.dwconv\.", ".depthwise_conv."),
        (r"\.pwconv(\d)\.", r".pointwise_conv\1."), (r"\.norm\.", ".layer_norm."),
        (r"\.gamma$", ".scale")],
    "tracker_model.prompt_encoder.": [
        (r"^pe_layer\.positional_encoding_gaussian_matrix$",
         "shared_embedding.positional_embedding"),
        (r"^mask_downscaling\.0\.", "mask_embed.conv1."),
        (r"^mask_downscaling\.1\.", "mask_embed.layer_norm1."),
        (r"^mask_downscaling\.3\.", "mask_embed.conv2."),
        (r"^mask_downscaling\.4\.", "mask_embed.layer_norm2."),
        (r"^mask_downscaling\.6\.", "mask_embed.conv3.")],
    "tracker_model.mask_decoder.": [
        (r"\.mlp\.lin1\.", ".mlp.proj_in."), (r"\.mlp\.lin2\.", ".mlp.proj_out."),
        (r"^(transformer\.layers\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
        (r"^transformer\.norm_final_attn\.", "transformer.layer_norm_final_attn."),
        (r"^output_upscaling\.0\.", "upscale_conv1."),
        (r"^output_upscaling\.1\.", "upscale_layer_norm."),
        (r"^output_upscaling\.3\.", "upscale_conv2.")],
    "tracker_model.": [
        (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
        (r"^no_mem_embed$", "no_memory_embedding"),
        (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
        (r"^no_obj_ptr$", "no_object_pointer"),
        (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
        (r"^obj_ptr_proj\.", "object_pointer_proj."),
        (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer.")],
}
# MLPs: the detector's ``layers.i`` -> ``layer{i+1}``; the tracker's -> ``proj_in``,
# ``layers.{i-1}``, ``proj_out`` (last); the memory mask downsampler's ``encoder.i`` (conv,
# LayerNorm2d, GELU per stage, a final conv) -> ``layers.{i//3}.conv|layer_norm``, ``final_conv``.
_DETECTOR_MLP = re.compile(r"^(detector_model\.(?:detr_decoder\.(?:box_head|presence_head"
                           r"|ref_point_head|box_rpb_embed_.)|dot_product_scoring\.text_mlp))"
                           r"\.layers\.(\d+)\.(.*)$")
_TRACKER_MLP = re.compile(r"^(tracker_model\.(?:object_pointer_proj|mask_decoder\.(?:"
                          r"iou_prediction_head|pred_obj_score_head|output_hypernetworks_mlps\.\d+)"
                          r"))\.layers\.(\d+)\.(.*)$")
_DOWNSAMPLER = re.compile(r"^(tracker_model\.memory_encoder\.mask_downsampler)\.encoder\.(\d+)\."
                          r"(.*)$")

# Official keys with no HF counterpart: computed RoPE tables (HF computes its own, not in its
# state dict) and the detector geometry encoder's point projections (HF takes boxes only).
UNMAPPED_OFFICIAL = re.compile(
    r"(\.freqs_cis|^detector\.geometry_encoder\.points_(direct|pool|pos_enc)_project\..*)$")
# HF buffers that HF computes itself (all non-persistent: not in its state dict).
HF_COMPUTED_BUFFERS = re.compile(r"(\.position_ids|\.rotary_emb\.(original_)?inv_freq)$")


def _renamed(key: str) -> str:
    for old, new in _PREFIXES:
        if key.startswith(old):
            rest = key[len(old):]
            for pattern, repl in _LEAVES.get(new, ()):
                rest = re.sub(pattern, repl, rest)
            key = new + rest
            break
    if not key.startswith("detector_model.text_encoder."):  # HF CLIP keeps ``out_proj``
        key = key.replace(".out_proj.", ".o_proj.")
    return key


def _depths(keys) -> dict[str, int]:
    """Number of ``layers.i`` (``encoder.i``) of every indexed tracker container."""
    depth: dict[str, int] = {}
    for key in keys:
        if m := (_TRACKER_MLP.match(k := _renamed(key)) or _DOWNSAMPLER.match(k)):
            depth[m[1]] = max(depth.get(m[1], 0), int(m[2]) + 1)
    return depth


def hf_key(key: str, depth: Mapping[str, int]) -> str:
    """The HF name of official ``key`` (before q/k/v splits); ``depth``: see `_depths`."""
    key = _renamed(key)
    if m := _DETECTOR_MLP.match(key):
        return f"{m[1]}.layer{int(m[2]) + 1}.{m[3]}"
    if m := _TRACKER_MLP.match(key):
        i, n = int(m[2]), depth[m[1]]
        name = "proj_in" if i == 0 else "proj_out" if i == n - 1 else f"layers.{i - 1}"
        return f"{m[1]}.{name}.{m[3]}"
    if m := _DOWNSAMPLER.match(key):
        i, n = int(m[2]), depth[m[1]]
        name = "final_conv" if i == n - 1 else f"layers.{i // 3}.{('conv', 'layer_norm')[i % 3]}"
        return f"{m[1]}.{name}.{m[3]}"
    return key


def iter_hf_tensors(keys, get: Callable[[str], torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF key, tensor) pairs for the official ``keys``; ``get(key)`` gives an official tensor.

    Tensors are views where possible (splits, transposes, slices); nothing is copied here.
    """
    keys = [k for k in keys if not UNMAPPED_OFFICIAL.search(k)]
    depth = _depths(keys)
    for key in keys:
        if m := re.match(r"^tracker\.sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$", key):
            if m[1] == "0":  # the four (1, C) rows -> one (4, C) table, in index order
                rows = sorted((k for k in keys if k.startswith(key[:-len("0.weight")])),
                              key=lambda k: int(k.split(".")[-2]))
                yield "tracker_model.prompt_encoder.point_embed.weight", torch.cat(
                    [get(k) for k in rows])
            continue
        new, value = hf_key(key, depth), get(key)
        if new.endswith("embeddings.position_embeddings"):
            value = value[:, 1:]  # drop the cls row (HF's ViT has no cls token)
        elif new.endswith("text_encoder.text_projection.weight"):
            value = value.t()  # official x @ P, HF Linear: x @ W.T
        elif new.endswith("shared_embedding.positional_embedding"):
            yield "tracker_model.shared_image_embedding.positional_embedding", value
        if m := re.match(r"^(.*)\.(?:qkv\.|in_proj_)(weight|bias)$", new):
            for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):
                yield f"{m[1]}.{name}_proj.{m[2]}", part
        else:
            yield new, value


def official_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official-keyed state dict (``detector.*``, ``tracker.*``) -> HF ``Sam3VideoModel`` keys."""
    return dict(iter_hf_tensors(state_dict.keys(), state_dict.__getitem__))


def load_official_into_hf(model, state_dict: Mapping[str, torch.Tensor] | None = None, *,
                          keys=None, get: Callable[[str], torch.Tensor] | None = None) -> None:
    """Copy official weights into ``model`` in place; every HF state-dict entry must be hit once.

    Either ``state_dict`` or ``keys`` + ``get`` (tensors made on demand, one at a time).
    """
    if state_dict is not None:
        keys, get = state_dict.keys(), state_dict.__getitem__
    target = model.state_dict(keep_vars=True)
    done: set[str] = set()
    errors = []
    with torch.no_grad():
        for new, value in iter_hf_tensors(keys, get):
            if new not in target:
                errors.append(f"no such HF key: {new}")
            elif tuple(target[new].shape) != tuple(value.shape):
                errors.append(f"{new}: HF {tuple(target[new].shape)} vs {tuple(value.shape)}")
            elif new in done:
                errors.append(f"{new}: assigned twice")
            else:
                target[new].copy_(value)
                done.add(new)
    errors += [f"left unassigned: {k}" for k in sorted(set(target) - done)]
    errors += [f"unexpected non-persistent buffer: {n}" for n, _ in model.named_buffers()
               if n not in target and not HF_COMPUTED_BUFFERS.search(n)]
    if errors:
        raise RuntimeError("official -> HF conversion incomplete:\n  " + "\n  ".join(errors))


def synthetic_hf_model(config: str | Sam3VideoConfig = "tiny", seed: int = 0):
    """The HF video model filled with our synthetic weights, drawn under the official keys."""
    from sam3video.model.build import build_model_skeleton
    from sam3video.model.weights import synthetic_tensor

    cfg = get_config(config)
    shapes = {k: v.shape for k, v in build_model_skeleton(cfg, device="meta").state_dict().items()}
    model = build_hf_video_model(cfg)
    load_official_into_hf(model, keys=shapes, get=lambda k: synthetic_tensor(k, shapes[k], seed))
    return model


# --------------------------------------------------------------------------------- processor


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's BPE vocabulary (49408 entries) and merges, from the BPE file in our assets.

    Ids: the 256 byte symbols, the same with ``</w>``, one per merge, then the two specials.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    rest = [b for b in range(256) if b not in printable]
    symbols = [chr(b) for b in printable] + [chr(0x100 + i) for i in range(len(rest))]
    lines = gzip.open(BPE_PATH, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def hf_processor(config: str | Sam3VideoConfig = "tiny"):
    """``Sam3VideoProcessor`` for ``config``'s image size, built without the hub."""
    from transformers import CLIPTokenizer, Sam3VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor
    from transformers.models.sam3.image_processing_sam3 import Sam3ImageProcessor

    cfg = get_config(config)
    size = {"height": cfg.image_size, "width": cfg.image_size}
    vocab, merges = clip_vocab_and_merges()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=cfg.text.context_length)
    low = {"height": cfg.low_res_mask_size, "width": cfg.low_res_mask_size}
    norm = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    return Sam3VideoProcessor(
        image_processor=Sam3ImageProcessor(size=size, mask_size=low, **norm),
        video_processor=Sam2VideoVideoProcessor(size=size, **norm),
        tokenizer=tokenizer,
    )


# --------------------------------------------------------------------------------- CPU patches


class CpuCvUtils:
    """CPU stand-in for the hub kernel ``kernels-community/cv-utils`` (unreachable offline).

    ``generic_nms``: greedy NMS over a precomputed IoU matrix (highest score first, drop
    IoU > threshold), as the official ``generic_nms_cpu``. ``cc_2d``: 8-connected component
    labels and, per pixel, its component's area (0 off the mask), by OpenCV.
    """

    @staticmethod
    def generic_nms(ious, scores, iou_threshold, use_iou_matrix=True):
        order = torch.argsort(scores, descending=True, stable=True).tolist()
        over = (ious > iou_threshold).tolist()
        kept, dead = [], set()
        for i in order:
            if i not in dead:
                kept.append(i)
                dead.update(j for j in order if over[i][j])
        return torch.tensor(kept, dtype=torch.int64, device=scores.device)

    @staticmethod
    def cc_2d(mask, get_counts=True):
        import cv2
        import numpy as np

        flat = mask.reshape(-1, *mask.shape[-2:]).to("cpu", torch.uint8).numpy()
        labels = np.zeros(flat.shape, np.int32)
        counts = np.zeros(flat.shape, np.int32)
        for i, plane in enumerate(flat):
            _, lab, stats, _ = cv2.connectedComponentsWithStats(plane, connectivity=8)
            area = stats[:, cv2.CC_STAT_AREA].astype(np.int32)
            area[0] = 0
            labels[i], counts[i] = lab, area[lab]
        shape = mask.shape
        return (torch.from_numpy(labels).reshape(shape).to(mask.device),
                torch.from_numpy(counts).reshape(shape).to(mask.device))


def install_cpu_cv_utils() -> None:
    """Make HF's mask NMS and hole filling run on the CPU instead of being skipped."""
    import transformers.models.sam3_video.modeling_sam3_video as msv

    msv.cv_utils_kernel = CpuCvUtils()


def chunk_mask_iou(rows: int = 8) -> None:
    """HF's CPU ``mask_iou`` (like the official one) materialises (N, M, H*W) bool tensors:
    ~26 GB with the ~200 detections that pass under synthetic weights at full size. Evaluate
    it ``rows`` predictions at a time: same operations, same result, bounded memory."""
    import transformers.models.sam3_video.modeling_sam3_video as msv

    if getattr(msv.mask_iou, "_chunked", False):
        return
    whole = msv.mask_iou

    def chunked(pred_masks, gt_masks):
        if pred_masks.shape[0] <= rows:
            return whole(pred_masks, gt_masks)
        return torch.cat([whole(pred_masks[i:i + rows], gt_masks)
                          for i in range(0, pred_masks.shape[0], rows)])

    chunked._chunked = True
    msv.mask_iou = chunked


def keep_memories_float32() -> None:
    """Within ``_encode_new_memory`` only, ``Tensor.to(torch.bfloat16)`` keeps float32."""
    from transformers.models.sam3_tracker_video import modeling_sam3_tracker_video as mtv

    cls = mtv.Sam3TrackerVideoModel
    if getattr(cls._encode_new_memory, "_float32", False):
        return
    inner = cls._encode_new_memory

    def encode(self, *args, **kwargs):
        to = torch.Tensor.to

        def to_no_bf16(t, *a, **k):
            a = tuple(x for x in a if x is not torch.bfloat16)
            if k.get("dtype") is torch.bfloat16:
                k.pop("dtype")
            return to(t, *a, **k) if a or k else t

        torch.Tensor.to = to_no_bf16
        try:
            return inner(self, *args, **kwargs)
        finally:
            torch.Tensor.to = to

    encode._float32 = True
    cls._encode_new_memory = encode


def add_empty_geometry_prompt(model) -> None:
    """Give HF's video detector the official prompt layout [text, geometry CLS] (module doc).

    One padded box (label -10: masked everywhere) makes ``Sam3Model.forward`` run its geometry
    encoder, which appends the CLS token; the padded box itself is never attended to.
    """
    inner = model.detector_model.forward

    def forward(*args, input_boxes=None, input_boxes_labels=None, **kwargs):
        if input_boxes is None:
            input_boxes = torch.zeros(1, 1, 4)
            input_boxes_labels = torch.full((1, 1), -10, dtype=torch.long)
        return inner(*args, input_boxes=input_boxes, input_boxes_labels=input_boxes_labels,
                     **kwargs)

    model.detector_model.forward = forward


def official_new_object_masks(model) -> None:
    """Diagnostic (``--check``): hand HF's tracker a newborn's mask binarized as the official
    code does it (low-res logits upsampled bilinearly to the memory-encoder input size, > 0),
    instead of HF's ``logits >= 0.5`` at the low resolution."""
    import torch.nn.functional as F

    inner = model._tracker_add_new_objects
    size = 4 * model.low_res_mask_size

    def add(inference_session, frame_idx, new_obj_ids, new_obj_masks, reverse=False):
        up = F.interpolate(new_obj_masks[:, None], size=(size, size), mode="bilinear",
                           align_corners=False)[:, 0]
        return inner(inference_session, frame_idx, new_obj_ids, (up > 0).float(), reverse)

    model._tracker_add_new_objects = add


# --------------------------------------------------------------------------------- check


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return (a.float() - b.float()).abs().max().item()


def check(frames: int = 5) -> None:
    """Print how HF compares with ours: detector on one frame, then a short video."""
    import warnings

    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _bench import bikes_jpeg_folder

    from sam3video.io import to_model_input
    from sam3video.model.build import build_sam3_video_model
    from sam3video.predictor import Sam3VideoPredictor

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    cfg = get_config("tiny")
    ours = build_sam3_video_model(cfg, device="cpu", dtype=torch.float32)
    official = {k: v for k, v in ours.state_dict().items() if not UNMAPPED_OFFICIAL.search(k)}

    def hf_model(*patches):
        model = build_hf_video_model(cfg)
        load_official_into_hf(model, official)  # ours holds the synthetic, official-keyed weights
        for patch in patches:
            patch(model)
        return model

    hf = hf_model()
    print(f"conversion: {len(ours.state_dict())} official tensors ({len(official)} mapped) -> "
          f"all {len(hf.state_dict())} HF state-dict entries")
    install_cpu_cv_utils()
    keep_memories_float32()
    processor = hf_processor(cfg)
    folder = bikes_jpeg_folder(frames)
    rgb = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.jpg"))]
    hf_pix = processor.video_processor(videos=[rgb], return_tensors="pt").pixel_values_videos[0]
    pix = torch.stack([to_model_input(f, cfg.image_size) for f in rgb])
    print(f"frames: HF video processor vs our to_model_input, max |diff| "
          f"{_maxdiff(hf_pix, pix):.2g} (ours is fed to both below)")

    # -- detector, frame 0, text "person"
    tok = processor.tokenizer("person", return_tensors="pt", padding="max_length", max_length=32)
    with torch.inference_mode():
        mine = ours.detector.backbone.language_backbone.tokenizer(["person"])[0]
        print(f"tokens: HF {tok.input_ids[0][tok.attention_mask[0].bool()].tolist()}, "
              f"ours {mine[mine != 0].tolist()}")
        out = ours.detector(pix[:1], ["person"])
        det = hf.detector_model
        vis = det.get_vision_features(pixel_values=pix[:1])
        text = det.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
        pad = {"input_boxes": torch.zeros(1, 1, 4),
               "input_boxes_labels": torch.full((1, 1), -10, dtype=torch.long)}
        for name, extra in (("+ geometry CLS token", pad), ("as is (no CLS token)", {})):
            o = det(vision_embeds=vis, text_embeds=text, attention_mask=tok.attention_mask, **extra)
            joint = (o.pred_logits.sigmoid() * o.presence_logits.sigmoid()).clamp(1e-3, 1 - 1e-3)
            joint = torch.logit(joint).clamp(-10, 10)  # the video convention of ours
            print(f"detector, HF {name}: max |diff| joint logits "
                  f"{_maxdiff(joint, out.pred_logits):.2g}, presence "
                  f"{_maxdiff(o.presence_logits, out.presence_logit):.2g}, boxes "
                  f"{_maxdiff(o.pred_boxes, out.pred_boxes_xyxy):.2g}, mask logits "
                  f"{_maxdiff(o.pred_masks, out.pred_masks):.2g} (of |max| "
                  f"{out.pred_masks.abs().max():.2g}); queries > 0.5: HF "
                  f"{int((joint > 0).sum())}, ours {int((out.pred_logits > 0).sum())}")

    # -- video: text on frame 0, forward propagation
    predictor = Sam3VideoPredictor(model_config=cfg, device="cpu", dtype=torch.float32)
    with torch.inference_mode():
        sid = predictor.handle_request(
            {"type": "start_session", "resource_path": str(folder)})["session_id"]
        predictor.handle_request(
            {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": "person"})
        mine = {r["frame_index"]: r["outputs"] for r in predictor.handle_stream_request(
            {"type": "propagate_in_video", "session_id": sid, "start_frame_index": 0,
             "propagation_direction": "forward"})}
    runs = [
        ("HF as is, HF API flow", (), False),
        ("HF + CLS token, HF API flow", (add_empty_geometry_prompt,), False),
        ("HF + CLS token, official flow", (add_empty_geometry_prompt,), True),
        ("HF + CLS token + official newborn masks, official flow",
         (add_empty_geometry_prompt, official_new_object_masks), True),
    ]
    for name, patches, official_flow in runs:
        model = hf_model(*patches)
        session = processor.init_video_session(video=[rgb], inference_device="cpu",
                                               dtype=torch.float32)
        session.processed_frames = dict(enumerate(pix.clone()))
        processor.add_text_prompt(session, "person")
        theirs = {}
        with torch.inference_mode():
            if official_flow:  # the official add_prompt runs frame 0; propagation revisits it
                model(inference_session=session, frame_idx=0)
            for o in model.propagate_in_video_iterator(inference_session=session):
                theirs[o.frame_idx] = processor.postprocess_outputs(session, o)
        ids, fractions = [], []
        for f in sorted(mine):
            a = {int(i): theirs[f]["masks"][k] for k, i in enumerate(theirs[f]["object_ids"])}
            b = {int(i): torch.as_tensor(np.asarray(o["mask"])) for i, o in mine[f].items()}
            ids.append((sorted(a), sorted(b)))
            fractions.append(max([(a[i] != b[i]).float().mean().item() for i in set(a) & set(b)],
                                 default=float("nan")))
        agree = all(x == y for x, y in ids)
        print(f"video, {name}: ids {'AGREE' if agree else 'DIFFER'} {[x for x, _ in ids]}; "
              f"differing mask pixels per frame {' '.join(f'{x:.2%}' for x in fractions)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare HF with ours (tiny)")
    ap.add_argument("--frames", type=int, default=5, help="video frames of --check")
    args = ap.parse_args()
    if args.check:
        check(args.frames)
    else:
        torch.set_num_threads(1)
        model = synthetic_hf_model("tiny")
        n = sum(p.numel() for p in model.parameters())
        print(f"tiny HF model, synthetic weights: {n:,} parameters, every entry assigned")


if __name__ == "__main__":
    main()
