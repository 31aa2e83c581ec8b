"""The SAM 3 memory tracker (``tracker.*``): the neural per-frame step, batched over objects.

`Sam3Tracker` owns the SAM prompt encoder and mask decoder, the memory encoder, the memory
attention and a few learned embeddings. It has no image encoder: every frame's features come
from the detector backbone's tracker neck (``sam2_convs``), prepared once per frame by
`Sam3Tracker.prepare_features` and expanded to the ``B`` objects of a tracking state.

One call of `Sam3Tracker.track_step` segments ``B`` objects on one frame:

1. the frame's lowest-resolution features are conditioned on the memory bank (spatial
   memories of up to ``max_cond_frames_in_attn`` prompted frames and ``num_maskmem - 1``
   earlier frames, plus object pointers of up to ``max_obj_ptrs_in_encoder`` frames), or,
   on a prompted frame decoded without memory, get the learned ``no_mem_embed`` added;
2. the SAM heads decode mask logits, IoU estimates and an object-score logit; objects scored
   absent get every logit set to ``NO_OBJ_SCORE`` and the ``no_obj_ptr`` pointer;
3. optionally the memory encoder turns the predicted mask into this frame's spatial memory.

Which earlier frames enter the memory bank is decided by `Sam3Tracker.plan_memory` from frame
indices and per-frame scores only (no tensors): the rule lives in
`sam3video.model.memory_selection`, so a caller can know which stored memories can still be
used. The bookkeeping of prompts, frames and objects lives in
`sam3video.video.tracking.TrackingState`.

Shapes: ``C`` = d_model (256), ``M`` = mem_dim (64), ``h = w`` = image_size / backbone_stride
(72), low-resolution masks are ``4h x 4w`` (288), mask prompts ``16h x 16w`` (1152),
high-resolution masks ``image_size`` square (1008).

Dtypes: the weights may be cast to bfloat16/float16 (``model.to(dtype)``). Features, pointers
and memories then follow the weights' dtype, while point coordinates, mask prompts and mask
logits stay float32 (positional encodings, RoPE and resizes are computed in float32 and cast).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.common import MLP
from sam3video.model.config import Sam3VideoConfig
from sam3video.model.mask_decoder import MaskDecoder
from sam3video.model.memory_attention import MemoryAttention
from sam3video.model.memory_encoder import MemoryEncoder
from sam3video.model.memory_selection import (
    MemoryPlan,
    MemoryRef,
    MemoryRule,
    memory_score,
    select_closest_cond_frames,
)
from sam3video.model.prompt_encoder import PromptEncoder
from sam3video.model.tracker_heads import (
    MASK_AS_OUTPUT_BIAS,
    MASK_AS_OUTPUT_SCALE,
    NO_OBJ_SCORE,
    SamHeadsOutput,
    build_prompt_encoder,
    build_sam_mask_decoder,
    check_neck_levels,
    mask_prompt_as_logits,
    memory_attention_settings,
    resize_mask_prompt,
    sam_heads_output,
    tracker_settings,
)

__all__ = [  # the memory-selection names, NO_OBJ_SCORE and SamHeadsOutput are re-exported
    "NO_OBJ_SCORE",
    "FrameFeatures",
    "FrameMemory",
    "MemoryAttentionWrapper",
    "MemoryPlan",
    "MemoryRef",
    "MemoryRule",
    "Sam3Tracker",
    "SamHeadsOutput",
    "TrackStepOutput",
    "build_tracker",
    "memory_score",
    "select_closest_cond_frames",
    "sine_encoding_1d",
]


class FrameFeatures(NamedTuple):
    """One frame's tracker features, ready for the SAM heads and the memory modules.

    ``high_res``: ``((B, C/8, 4h, 4w), (B, C/4, 2h, 2w))``, levels 0 and 1 of the tracker
    neck after the mask decoder's ``conv_s0`` / ``conv_s1``. ``vision``: ``(B, C, h, w)`` level
    2 (raw). ``vision_pos``: ``(B, C, h, w)`` its sine encoding.
    """

    high_res: tuple[Tensor, Tensor]
    vision: Tensor
    vision_pos: Tensor

    @property
    def batch_size(self) -> int:
        return self.vision.shape[0]

    def expand(self, batch_size: int) -> FrameFeatures:
        """The same features seen by ``batch_size`` objects (views, no copy)."""
        return FrameFeatures(
            high_res=tuple(x.expand(batch_size, -1, -1, -1) for x in self.high_res),
            vision=self.vision.expand(batch_size, -1, -1, -1),
            vision_pos=self.vision_pos.expand(batch_size, -1, -1, -1),
        )


@dataclass
class FrameMemory:
    """What one frame leaves for later frames, batched over the ``B`` objects of a state.

    ``maskmem_features (B, M, h, w)`` (None when the memory encoder did not run),
    ``obj_ptr (B, C)``, ``object_score_logits (B, 1)``, ``iou_score`` (``(B,)`` from a tracking
    step, ``(B, 1)`` from merging prompted objects; see `memory_score`), ``pred_masks
    (B, 1, 4h, 4w)`` low-resolution logits (None once a caller no longer needs them) and
    ``eff_iou_score``, the frame's memory-selection score (None where the official code has
    none: frames merged from user prompts).
    """

    maskmem_features: Tensor | None
    obj_ptr: Tensor
    object_score_logits: Tensor
    iou_score: Tensor
    pred_masks: Tensor | None = None
    eff_iou_score: float | None = None

    def select(self, index: Tensor | list[int]) -> FrameMemory:
        """The entries of the objects ``index`` (in that order)."""
        if isinstance(index, list):
            index = torch.tensor(index, dtype=torch.long, device=self.obj_ptr.device)
        return FrameMemory(
            maskmem_features=None
            if self.maskmem_features is None
            else self.maskmem_features[index],
            obj_ptr=self.obj_ptr[index],
            object_score_logits=self.object_score_logits[index],
            iou_score=self.iou_score[index],
            pred_masks=None if self.pred_masks is None else self.pred_masks[index],
            eff_iou_score=self.eff_iou_score,
        )

    def nbytes(self) -> int:
        """Bytes held by the tensors of this entry."""
        tensors = [self.maskmem_features, self.obj_ptr, self.object_score_logits]
        tensors += [self.iou_score, self.pred_masks]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class TrackStepOutput(NamedTuple):
    """`Sam3Tracker.track_step` result for ``B`` objects.

    ``pred_masks (B, 1, 4h, 4w)`` and ``pred_masks_high_res (B, 1, S, S)`` logits (for a mask
    prompt: ``4 * mask side / backbone_stride`` and the prompt's own side), ``obj_ptr (B, C)``,
    ``object_score_logits (B, 1)``, ``iou_score (B,)`` (best predicted IoU), ``eff_iou_score``
    0-d tensor, ``maskmem_features (B, M, h, w)`` or None.
    """

    pred_masks: Tensor
    pred_masks_high_res: Tensor
    obj_ptr: Tensor
    object_score_logits: Tensor
    iou_score: Tensor
    eff_iou_score: Tensor
    maskmem_features: Tensor | None

    def to_memory(self) -> FrameMemory:
        return FrameMemory(
            maskmem_features=self.maskmem_features,
            obj_ptr=self.obj_ptr,
            object_score_logits=self.object_score_logits,
            iou_score=self.iou_score,
            pred_masks=self.pred_masks,
            eff_iou_score=float(self.eff_iou_score),
        )


def sine_encoding_1d(positions: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """``positions (N,)`` float -> ``(N, dim)``: all sines, then all cosines.

    Frequency of channel ``i < dim/2``: ``1 / temperature^(2 * floor(i/2) / (dim/2))``.
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=positions.device)
    inv = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / half)
    angles = positions[:, None] / inv
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class MemoryAttentionWrapper(nn.Module):
    """Holds the memory attention as ``encoder`` (official ``tracker.transformer.encoder``)."""

    def __init__(self, encoder: MemoryAttention) -> None:
        super().__init__()
        self.encoder = encoder
        self.d_model = encoder.d_model

    def forward(
        self,
        src: Tensor,
        src_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        num_obj_ptr_tokens: int = 0,
    ) -> Tensor:
        """See `MemoryAttention.forward`: ``(B, HW, C)`` -> ``(B, HW, C)``."""
        return self.encoder(src, src_pos, memory, memory_pos, num_obj_ptr_tokens)


class Sam3Tracker(nn.Module):
    """SAM 3's memory tracker, the neural part (keys as the official ``tracker.*``).

    Components are passed built (see `build_tracker`); scalars are the official inference
    settings. ``d_model`` (C) must equal the components' width and ``mem_dim`` (M) the memory
    encoder's output width.
    """

    def __init__(
        self,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        memory_encoder: MemoryEncoder,
        memory_attention: MemoryAttention,
        d_model: int = 256,
        mem_dim: int = 64,
        image_size: int = 1008,
        backbone_stride: int = 14,
        num_maskmem: int = 7,
        max_cond_frames_in_attn: int = 4,
        max_obj_ptrs_in_encoder: int = 16,
        multimask_output_in_sam: bool = True,
        multimask_output_for_tracking: bool = True,
        multimask_min_pt_num: int = 0,
        multimask_max_pt_num: int = 1,
        sigmoid_scale_for_mem_enc: float = 20.0,
        sigmoid_bias_for_mem_enc: float = -10.0,
        memory_temporal_stride: int = 1,
        use_memory_selection: bool = True,
        memory_selection_threshold: float = 0.01,
    ) -> None:
        super().__init__()
        if mem_dim > d_model or d_model % mem_dim:
            raise InvalidInputError(
                f"mem_dim: expected a divisor of d_model={d_model}, got {mem_dim}"
            )
        if num_maskmem < 1:
            raise InvalidInputError(f"num_maskmem: expected >= 1, got {num_maskmem}")
        self.hidden_dim = d_model
        self.mem_dim = mem_dim
        self.image_size = image_size
        self.backbone_stride = backbone_stride
        self.feat_size = image_size // backbone_stride
        self.low_res_mask_size = self.feat_size * 4
        self.input_mask_size = self.low_res_mask_size * 4
        self.num_maskmem = num_maskmem
        self.max_cond_frames_in_attn = max_cond_frames_in_attn
        self.max_obj_ptrs_in_encoder = max_obj_ptrs_in_encoder
        self.multimask_output_in_sam = multimask_output_in_sam
        self.multimask_output_for_tracking = multimask_output_for_tracking
        self.multimask_min_pt_num = multimask_min_pt_num
        self.multimask_max_pt_num = multimask_max_pt_num
        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc
        self.memory_temporal_stride = memory_temporal_stride
        self.use_memory_selection = use_memory_selection
        self.memory_selection_threshold = memory_selection_threshold

        # Registration order gives the official state-dict order.
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(num_maskmem, 1, 1, mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d_model))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, d_model))  # stored, never used
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, d_model))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem_dim))
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc):
            nn.init.trunc_normal_(p, std=0.02)
        for p in (self.no_obj_ptr, self.no_obj_embed_spatial):
            nn.init.trunc_normal_(p, std=0.02)
        # Maps a (4x larger) mask prompt to the low-resolution logit grid (1152 -> 288).
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.transformer = MemoryAttentionWrapper(memory_attention)
        self.maskmem_backbone = memory_encoder
        self.sam_prompt_encoder = prompt_encoder
        self.sam_mask_decoder = mask_decoder
        self.obj_ptr_proj = MLP(d_model, d_model, d_model, 3)
        self.obj_ptr_tpos_proj = nn.Linear(d_model, mem_dim)

    # ------------------------------------------------------------------------ features

    def prepare_features(self, feats: Sequence[Tensor], pos: Sequence[Tensor]) -> FrameFeatures:
        """Tracker-neck levels of one frame -> `FrameFeatures` (run once per frame).

        ``feats``/``pos``: the 3 levels ``(b, C, 4h, 4w)``, ``(b, C, 2h, 2w)``, ``(b, C, h, w)``
        (``b`` is usually 1; `FrameFeatures.expand` gives the per-object view).
        """
        check_neck_levels(feats, pos, self.hidden_dim, self.feat_size, "tracker-neck")
        decoder = self.sam_mask_decoder
        return FrameFeatures(
            high_res=(decoder.conv_s0(feats[0]), decoder.conv_s1(feats[1])),
            vision=feats[2],
            vision_pos=pos[2],
        )

    # ------------------------------------------------------------------------ SAM heads

    def use_multimask(self, num_points: int, is_init_cond_frame: bool = False) -> bool:
        """Whether the SAM heads return 3 candidate masks (and keep the best)."""
        return (
            self.multimask_output_in_sam
            and (is_init_cond_frame or self.multimask_output_for_tracking)
            and self.multimask_min_pt_num <= num_points <= self.multimask_max_pt_num
        )

    def forward_sam_heads(
        self,
        features: Tensor,
        high_res_features: Sequence[Tensor],
        point_coords: Tensor | None = None,
        point_labels: Tensor | None = None,
        mask_inputs: Tensor | None = None,
        multimask_output: bool = False,
    ) -> SamHeadsOutput:
        """Decode ``B`` objects on one frame.

        ``features (B, C, h, w)`` (memory-conditioned or not), ``high_res_features``
        ``[(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)]``; ``point_coords (B, N, 2)`` as (x, y) pixels of
        the ``image_size`` square, ``point_labels (B, N)`` int (0 negative, 1 positive, 2/3 box
        corners, -1 padding); ``mask_inputs (B, 1, H, W)`` logits, resized to ``4h x 4w``
        (bilinear, antialiased) if needed.
        """
        b = features.shape[0]
        if point_coords is None:
            # No clicks: one padding point stands in (the encoder appends another).
            point_coords = features.new_zeros(b, 1, 2)
            point_labels = torch.full((b, 1), -1, dtype=torch.int32, device=features.device)
        mask_prompt = None
        if mask_inputs is not None:
            mask_prompt = resize_mask_prompt(mask_inputs, self.sam_prompt_encoder.mask_input_size)
        sparse, dense = self.sam_prompt_encoder(
            points=(point_coords, point_labels), boxes=None, masks=mask_prompt
        )
        low_res_multimasks, ious, tokens, object_score_logits = self.sam_mask_decoder(
            image_embeddings=features,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            high_res_features=list(high_res_features),
        )
        # SAM 3.0: present when the score logit is > 0; absent objects get ``no_obj_ptr``.
        return sam_heads_output(
            low_res_multimasks,
            ious,
            tokens,
            object_score_logits,
            self.image_size,
            multimask_output,
            score_threshold=0.0,
            ptr_proj=self.obj_ptr_proj,
            gate_pointer=self._gate_pointer,
        )

    def _gate_pointer(self, obj_ptr: Tensor, appearing: Tensor) -> Tensor:
        """Absent objects (``appearing (B, 1)`` False) get the learned ``no_obj_ptr``."""
        lam = appearing.to(obj_ptr.dtype)
        return lam * obj_ptr + (1 - lam) * self.no_obj_ptr

    def use_mask_as_output(
        self, features: Tensor, high_res_features: Sequence[Tensor], mask_inputs: Tensor
    ) -> SamHeadsOutput:
        """A mask prompt taken as the output (no decoding of the mask itself).

        ``features (B, C, h, w)`` raw (no memory), ``mask_inputs (B, 1, H, W)`` in [0, 1]
        (``H = W = input_mask_size`` in the official flow). Mask logits are ``20 m - 10``: high
        resolution at ``H x W``, low resolution at ``(4 H / stride) x (4 W / stride)``
        (antialiased; 328 for 1152, as the official code). IoUs are 1; the object is present
        when any pixel is > 0 (score logit +-10). The pointer comes from decoding the raw
        features with the mask prompt ``mask_downsample(m)``.
        """
        scale, bias = MASK_AS_OUTPUT_SCALE, MASK_AS_OUTPUT_BIAS
        mask = mask_inputs.float()
        h, w = mask.shape[-2:]
        high_res_masks, low_res_masks = mask_prompt_as_logits(
            mask, (h // self.backbone_stride * 4, w // self.backbone_stride * 4)
        )
        ious = mask.new_ones(mask.shape[0], 1)
        conv = self.mask_downsample
        decoded = self.forward_sam_heads(
            features, high_res_features, mask_inputs=conv(mask.to(conv.weight.dtype))
        )
        appearing = (mask.flatten(1) > 0).any(dim=1, keepdim=True)
        object_score_logits = scale * appearing.float() + bias
        obj_ptr = self._gate_pointer(decoded.obj_ptr, appearing)
        return SamHeadsOutput(
            low_res_masks,
            high_res_masks,
            ious,
            low_res_masks,
            high_res_masks,
            obj_ptr,
            object_score_logits,
        )

    # ------------------------------------------------------------------------ memory bank

    @property
    def memory_rule(self) -> MemoryRule:
        """The memory settings as a `MemoryRule` (read from the attributes at each call)."""
        return MemoryRule(
            num_maskmem=self.num_maskmem,
            max_cond_frames_in_attn=self.max_cond_frames_in_attn,
            max_obj_ptrs_in_encoder=self.max_obj_ptrs_in_encoder,
            memory_temporal_stride=self.memory_temporal_stride,
            use_memory_selection=self.use_memory_selection,
            memory_selection_threshold=self.memory_selection_threshold,
        )

    def frame_filter(
        self,
        frame_idx: int,
        non_cond_scores: Mapping[int, float | None],
        num_frames: int,
        reverse: bool,
    ) -> list[int]:
        """Memory selection (`MemoryRule.frame_filter`), oldest first."""
        return self.memory_rule.frame_filter(frame_idx, non_cond_scores, num_frames, reverse)

    def plan_memory(
        self,
        frame_idx: int,
        cond_frames: Sequence[int],
        non_cond_scores: Mapping[int, float | None],
        num_frames: int,
        reverse: bool = False,
    ) -> MemoryPlan:
        """The stored frames that tracking ``frame_idx`` reads (`MemoryRule.plan`)."""
        return self.memory_rule.plan(frame_idx, cond_frames, non_cond_scores, num_frames, reverse)

    def pointer_pos_encoding(self, positions: Sequence[int], max_abs_pos: int, device) -> Tensor:
        """Temporal encoding of object pointers: ``(P,)`` positions -> ``(P, M)``."""
        pos = torch.tensor(list(positions), dtype=torch.float32, device=device)
        pos = pos / max(max_abs_pos - 1, 1)
        enc = sine_encoding_1d(pos, self.hidden_dim)
        return self.obj_ptr_tpos_proj(enc.to(self.obj_ptr_tpos_proj.weight.dtype))

    def memory_conditioned_features(
        self,
        features: FrameFeatures,
        plan: MemoryPlan,
        cond_outputs: Mapping[int, FrameMemory],
        non_cond_outputs: Mapping[int, FrameMemory],
        num_frames: int,
    ) -> Tensor:
        """Condition the frame's ``vision (B, C, h, w)`` on the memories of ``plan``.

        Returns ``(B, C, h, w)``. Stored memories may be in another dtype/device (cast here).
        """
        vision = features.vision
        b, c, h, w = vision.shape
        dtype, device = vision.dtype, vision.device
        memories, memory_pos = [], []
        for ref in plan.spatial:
            out = (cond_outputs if ref.from_cond else non_cond_outputs)[ref.frame]
            if out.maskmem_features is None:
                raise InvalidInputError(
                    f"frame {ref.frame}: its memory was never encoded (run_mem_encoder=False)"
                )
            feats = out.maskmem_features.to(device=device, dtype=dtype)
            pos = self.maskmem_backbone.position_encoding(feats)
            tpos = self.maskmem_tpos_enc[self.num_maskmem - ref.pos - 1].reshape(1, 1, -1)
            memories.append(feats.flatten(2).transpose(1, 2))
            memory_pos.append(pos.flatten(2).transpose(1, 2) + tpos.to(dtype))

        num_ptr_tokens = 0
        if plan.pointers:
            ptrs = torch.stack(
                [
                    (cond_outputs if ref.from_cond else non_cond_outputs)[ref.frame].obj_ptr
                    for ref in plan.pointers
                ],
                dim=1,
            ).to(device=device, dtype=dtype)  # (B, P, C)
            max_ptrs = min(num_frames, self.max_obj_ptrs_in_encoder)
            ptr_pos = self.pointer_pos_encoding(
                [ref.pos for ref in plan.pointers], max_ptrs, device
            ).to(dtype)  # (P, M)
            # Each C-wide pointer becomes C/M tokens of width M (channel chunks in order).
            split = c // self.mem_dim
            ptrs = ptrs.reshape(b, -1, self.mem_dim)  # (B, P * split, M)
            ptr_pos = ptr_pos.repeat_interleave(split, dim=0)[None].expand(b, -1, -1)
            memories.append(ptrs)
            memory_pos.append(ptr_pos)
            num_ptr_tokens = ptrs.shape[1]

        memory = torch.cat([m.expand(b, -1, -1) for m in memories], dim=1)
        memory_pos = torch.cat([p.expand(b, -1, -1) for p in memory_pos], dim=1)
        src = vision.flatten(2).transpose(1, 2)
        src_pos = features.vision_pos.flatten(2).transpose(1, 2)
        out = self.transformer(src, src_pos, memory, memory_pos, num_ptr_tokens)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def prepare_memory_conditioned_features(
        self,
        frame_idx: int,
        features: FrameFeatures,
        cond_outputs: Mapping[int, FrameMemory],
        non_cond_outputs: Mapping[int, FrameMemory],
        num_frames: int,
        reverse: bool = False,
        use_memory: bool = True,
        plan: MemoryPlan | None = None,
    ) -> Tensor:
        """``(B, C, h, w)`` features for the SAM heads (§9 of the tracker spec).

        Without memory (``use_memory=False``: a prompted frame decoded like an image) the raw
        features get ``no_mem_embed`` added; otherwise `plan_memory` (or the given ``plan``,
        whose frames the two mappings must hold) + memory attention.
        """
        if not use_memory:
            return features.vision + self.no_mem_embed.reshape(1, -1, 1, 1)
        if plan is None:
            scores = {t: out.eff_iou_score for t, out in non_cond_outputs.items()}
            plan = self.plan_memory(frame_idx, list(cond_outputs), scores, num_frames, reverse)
        return self.memory_conditioned_features(
            features, plan, cond_outputs, non_cond_outputs, num_frames
        )

    # ------------------------------------------------------------------------ memory encoder

    def encode_memory(
        self,
        vision: Tensor,
        high_res_masks: Tensor,
        object_score_logits: Tensor,
        binarize: bool,
    ) -> Tensor:
        """Spatial memory of ``B`` objects on one frame: ``(B, M, h, w)``.

        ``vision (B, C, h, w)`` raw features; ``high_res_masks (B, 1, H, W)`` logits (any size,
        the encoder resizes to ``input_mask_size`` after scaling); ``binarize``: masks from
        clicks are thresholded at 0, others go through a sigmoid; both are then mapped to
        ``[-10, 10]``. Objects scored absent get ``no_obj_embed_spatial`` added.
        """
        if binarize:
            mask = (high_res_masks > 0).float()
        else:
            mask = torch.sigmoid(high_res_masks.float())
        mask = mask * self.sigmoid_scale_for_mem_enc
        mask = mask + self.sigmoid_bias_for_mem_enc
        side = self.input_mask_size
        if tuple(mask.shape[-2:]) != (side, side):
            # The encoder's own resize (antialiased, float32, after the scaling), done here so
            # that the encoder then runs in the features' dtype.
            mask = F.interpolate(
                mask, size=(side, side), mode="bilinear", align_corners=False, antialias=True
            )
        feats, _ = self.maskmem_backbone(vision, mask.to(vision.dtype))
        absent = 1 - (object_score_logits > 0).to(feats.dtype)  # (B, 1)
        return feats + absent[:, :, None, None] * self.no_obj_embed_spatial[:, :, None, None]

    # ------------------------------------------------------------------------ one step

    def track_step(
        self,
        frame_idx: int,
        features: FrameFeatures,
        cond_outputs: Mapping[int, FrameMemory],
        non_cond_outputs: Mapping[int, FrameMemory],
        num_frames: int,
        point_coords: Tensor | None = None,
        point_labels: Tensor | None = None,
        mask_inputs: Tensor | None = None,
        prev_mask_logits: Tensor | None = None,
        reverse: bool = False,
        use_memory: bool = True,
        is_init_cond_frame: bool = False,
        run_mem_encoder: bool = True,
        plan: MemoryPlan | None = None,
    ) -> TrackStepOutput:
        """Segment the ``B`` objects of ``features`` on frame ``frame_idx``.

        Prompts (all batched over B): ``point_coords (B, N, 2)`` / ``point_labels (B, N)`` as in
        `forward_sam_heads`; ``mask_inputs (B, 1, H, W)`` in [0, 1] (taken as the output, see
        `use_mask_as_output`; excludes points); ``prev_mask_logits (B, 1, 4h, 4w)`` earlier
        logits fed back as a mask prompt with clicks. ``use_memory``: condition on the stored
        memories (False: decode like an image, e.g. a new or corrected prompt).
        ``run_mem_encoder``: also encode this frame's memory (masks from clicks binarized).
        ``plan``: the memory plan to use (default: `plan_memory` on the two mappings).
        """
        if mask_inputs is not None and (point_coords is not None or prev_mask_logits is not None):
            raise InvalidInputError(
                "mask_inputs: expected no points or previous logits with a mask prompt"
            )
        if mask_inputs is not None:
            heads = self.use_mask_as_output(features.vision, features.high_res, mask_inputs)
        else:
            pix = self.prepare_memory_conditioned_features(
                frame_idx,
                features,
                cond_outputs,
                non_cond_outputs,
                num_frames,
                reverse,
                use_memory,
                plan,
            )
            num_points = 0 if point_labels is None else point_labels.shape[1]
            heads = self.forward_sam_heads(
                pix,
                features.high_res,
                point_coords,
                point_labels,
                mask_inputs=prev_mask_logits,
                multimask_output=self.use_multimask(num_points, is_init_cond_frame),
            )
        iou_score = heads.ious.max(dim=-1).values
        maskmem = None
        if run_mem_encoder:
            maskmem = self.encode_memory(
                features.vision,
                heads.high_res_masks,
                heads.object_score_logits,
                binarize=point_coords is not None,
            )
        return TrackStepOutput(
            pred_masks=heads.low_res_masks,
            pred_masks_high_res=heads.high_res_masks,
            obj_ptr=heads.obj_ptr,
            object_score_logits=heads.object_score_logits,
            iou_score=iou_score,
            eff_iou_score=memory_score(heads.object_score_logits, iou_score),
            maskmem_features=maskmem,
        )

    def forward(self, *args, **kwargs) -> TrackStepOutput:
        """Alias of `track_step`."""
        return self.track_step(*args, **kwargs)


def build_tracker(cfg: Sam3VideoConfig) -> Sam3Tracker:
    """The tracker of ``cfg`` (uninitialised weights; see ``sam3video.model.build``)."""
    t = cfg.tracker
    c, f = cfg.d_model, cfg.feat_size
    prompt_encoder = build_prompt_encoder(cfg, t)
    mask_decoder = build_sam_mask_decoder(
        t, c, iou_head_hidden_dim=c, iou_prediction_use_sigmoid=True
    )
    memory_encoder = MemoryEncoder(
        out_dim=t.mem_dim,
        in_dim=c,
        mask_size=cfg.input_mask_size,
        fuser_layers=t.fuser_layers,
    )
    memory_attention = MemoryAttention(
        kv_in_dim=t.mem_dim, feat_size=f, **memory_attention_settings(t, c)
    )
    return Sam3Tracker(
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        memory_encoder=memory_encoder,
        memory_attention=memory_attention,
        mem_dim=t.mem_dim,
        max_cond_frames_in_attn=t.max_cond_frames_in_attn,
        multimask_output_in_sam=True,
        multimask_output_for_tracking=True,
        multimask_min_pt_num=t.multimask_min_pt_num,
        multimask_max_pt_num=t.multimask_max_pt_num,
        use_memory_selection=t.use_memory_selection,
        memory_selection_threshold=t.memory_selection_threshold,
        **tracker_settings(cfg, t),
    )
