"""The SAM-heads pieces shared by the SAM 3.0 tracker (`sam3video.model.tracker`) and the
SAM 3.1 multiplex tracker (`sam3video.model.tracker_31`): the neck-level check, the mask-prompt
resize, the heads' output (`SamHeadsOutput`: mask selection, object pointer and its gate), a
mask prompt taken as the output, and the builders of the two-way transformer and prompt
encoder from a tracker config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.errors import InvalidInputError
from sam3video.model.config import MultiplexTrackerConfig, Sam3VideoConfig, TrackerConfig
from sam3video.model.mask_decoder import MaskDecoder
from sam3video.model.prompt_encoder import PromptEncoder
from sam3video.model.two_way_transformer import TwoWayTransformer

# Placeholder logit for "no object here" (every pixel of an absent object's mask).
NO_OBJ_SCORE = -1024.0
# A mask prompt taken as the output becomes logits scale * m + bias.
MASK_AS_OUTPUT_SCALE, MASK_AS_OUTPUT_BIAS = 20.0, -10.0


class SamHeadsOutput(NamedTuple):
    """Outputs of the SAM heads for ``B`` objects (``K`` = 3 candidate masks or 1).

    ``low_res_multimasks (B, K, 4h, 4w)``, ``high_res_multimasks (B, K, S, S)``, ``ious (B, K)``,
    ``low_res_masks (B, 1, 4h, 4w)`` and ``high_res_masks (B, 1, S, S)`` (the selected mask),
    ``obj_ptr (B, C)``, ``object_score_logits (B, 1)``. Mask logits are float32.
    """

    low_res_multimasks: Tensor
    high_res_multimasks: Tensor
    ious: Tensor
    low_res_masks: Tensor
    high_res_masks: Tensor
    obj_ptr: Tensor
    object_score_logits: Tensor


def check_neck_levels(
    feats: Sequence[Tensor], pos: Sequence[Tensor], dim: int, feat_size: int, neck: str
) -> None:
    """Raise unless ``feats``/``pos`` are the 3 ``neck`` levels ``(b, dim, 4h, 4w)``,
    ``(b, dim, 2h, 2w)``, ``(b, dim, h, w)`` with ``h = feat_size``."""
    if len(feats) != 3 or len(pos) != 3:
        raise InvalidInputError(
            f"feats/pos: expected the 3 {neck} levels, got {len(feats)} and {len(pos)}"
        )
    h = feat_size
    for i, (x, s) in enumerate(zip(feats, (4 * h, 2 * h, h))):
        if x.ndim != 4 or tuple(x.shape[1:]) != (dim, s, s):
            raise InvalidInputError(
                f"feats[{i}]: expected (b, {dim}, {s}, {s}), got {tuple(x.shape)}"
            )


def resize_mask_prompt(mask_inputs: Tensor, size: Sequence[int]) -> Tensor:
    """``mask_inputs (B, 1, H, W)`` logits at the prompt encoder's ``size`` (bilinear,
    antialiased, float32), unchanged when already there."""
    if tuple(mask_inputs.shape[-2:]) == tuple(size):
        return mask_inputs
    return F.interpolate(
        mask_inputs.float(), size=size, mode="bilinear", align_corners=False, antialias=True
    )


def sam_heads_output(
    low_res_multimasks: Tensor,
    ious: Tensor,
    tokens: Tensor,
    object_score_logits: Tensor,
    image_size: int,
    multimask_output: bool,
    score_threshold: float,
    ptr_proj: Callable[[Tensor], Tensor],
    gate_pointer: Callable[[Tensor, Tensor], Tensor],
) -> SamHeadsOutput:
    """The SAM heads' tail shared by SAM 3.0 and 3.1: decoder outputs of ``B`` objects ->
    `SamHeadsOutput`.

    ``low_res_multimasks (B, K, 4h, 4w)``, ``ious (B, K)``, ``tokens (B, K', C)``,
    ``object_score_logits (B, 1)``. An object appears when its score logit is above
    ``score_threshold``; absent objects' masks become ``NO_OBJ_SCORE`` (a hard decision taken
    before any resizing). With ``multimask_output`` the best candidate (first maximum IoU) is
    kept, and its token when there is one per candidate. The kept token ``(B, C)`` goes
    through ``ptr_proj``, then ``gate_pointer(obj_ptr (B, C), appearing (B, 1) bool)`` gives
    absent objects their no-object pointer (the versions differ in the projection, the gate
    and the threshold only).
    """
    appearing = object_score_logits > score_threshold  # (B, 1)
    low_res_multimasks = torch.where(
        appearing[:, :, None, None], low_res_multimasks, NO_OBJ_SCORE
    ).float()
    high_res_multimasks = F.interpolate(
        low_res_multimasks,
        size=(image_size, image_size),
        mode="bilinear",
        align_corners=False,
    )
    token = tokens[:, 0]
    if multimask_output:
        best = ious.argmax(dim=-1)  # first maximum on ties
        rows = torch.arange(low_res_multimasks.shape[0], device=ious.device)
        low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
        high_res_masks = high_res_multimasks[rows, best].unsqueeze(1)
        if tokens.shape[1] > 1:
            token = tokens[rows, best]
    else:
        low_res_masks, high_res_masks = low_res_multimasks, high_res_multimasks
    return SamHeadsOutput(
        low_res_multimasks,
        high_res_multimasks,
        ious,
        low_res_masks,
        high_res_masks,
        gate_pointer(ptr_proj(token), appearing),
        object_score_logits,
    )


def mask_prompt_as_logits(
    mask_inputs: Tensor, low_res_size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """A mask prompt taken as the output: ``(B, 1, H, W)`` -> float32 logits ``20 m - 10`` at
    ``H x W`` and at ``low_res_size`` (antialiased), as ``(high_res, low_res)``."""
    high_res_masks = mask_inputs.float() * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS
    low_res_masks = F.interpolate(
        high_res_masks, size=low_res_size, mode="bilinear", align_corners=False, antialias=True
    )
    return high_res_masks, low_res_masks


def build_two_way_transformer(
    t: TrackerConfig | MultiplexTrackerConfig, dim: int
) -> TwoWayTransformer:
    """The SAM mask decoder's two-way transformer of tracker config ``t`` (width ``dim``)."""
    return TwoWayTransformer(
        depth=t.decoder_depth,
        embedding_dim=dim,
        num_heads=t.decoder_heads,
        mlp_dim=t.decoder_mlp_dim,
        attention_downsample_rate=t.attention_downsample_rate,
    )


def build_prompt_encoder(
    cfg: Sam3VideoConfig, t: TrackerConfig | MultiplexTrackerConfig
) -> PromptEncoder:
    """The tracker's SAM prompt encoder for ``cfg`` (tracker config ``t``)."""
    return PromptEncoder(
        embed_dim=cfg.d_model,
        image_embedding_size=(cfg.feat_size, cfg.feat_size),
        input_image_size=(cfg.image_size, cfg.image_size),
        mask_in_chans=t.mask_in_chans,
    )


def build_sam_mask_decoder(
    t: TrackerConfig | MultiplexTrackerConfig,
    dim: int,
    iou_head_hidden_dim: int,
    iou_prediction_use_sigmoid: bool,
) -> MaskDecoder:
    """The single-object SAM mask decoder of tracker config ``t`` (SAM 3.0's tracker decoder,
    SAM 3.1's interactive decoder), with dynamic multimask-via-stability."""
    return MaskDecoder(
        transformer_dim=dim,
        transformer=build_two_way_transformer(t, dim),
        num_multimask_outputs=t.num_multimask_outputs,
        iou_head_depth=t.iou_head_depth,
        iou_head_hidden_dim=iou_head_hidden_dim,
        dynamic_multimask_via_stability=True,
        dynamic_multimask_stability_delta=t.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=t.dynamic_multimask_stability_thresh,
        iou_prediction_use_sigmoid=iou_prediction_use_sigmoid,
    )


def memory_attention_settings(t: TrackerConfig | MultiplexTrackerConfig, dim: int) -> dict:
    """The constructor arguments both memory attentions take from tracker config ``t``."""
    return {
        "d_model": dim,
        "num_layers": t.memory_attention_layers,
        "num_heads": t.memory_attention_heads,
        "ffn_dim": t.memory_attention_ffn_dim,
        "rope_theta": t.rope_theta,
    }


def tracker_settings(cfg: Sam3VideoConfig, t: TrackerConfig | MultiplexTrackerConfig) -> dict:
    """The scalar constructor arguments both tracker models take from ``cfg`` and ``t``."""
    return {
        "d_model": cfg.d_model,
        "image_size": cfg.image_size,
        "backbone_stride": cfg.vit.patch_size,
        "num_maskmem": t.num_maskmem,
        "max_obj_ptrs_in_encoder": t.max_obj_ptrs_in_encoder,
        "sigmoid_scale_for_mem_enc": t.sigmoid_scale_for_mem_enc,
        "sigmoid_bias_for_mem_enc": t.sigmoid_bias_for_mem_enc,
    }
