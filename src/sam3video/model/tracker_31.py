"""SAM 3.1's multiplex tracker (``tracker.model.*``): the neural pieces of one tracking step.

`Sam3MultiplexTracker` is ``Sam3VideoModel.tracker`` for the SAM 3.1 presets; it only holds
`MultiplexTrackerModel` as ``model`` (the official wrapper does the same, hence the
``tracker.model.`` key prefix). The model has no image encoder: a frame's features come from
the detector backbone's three-way neck (`sam3video.model.neck_31.TriViTDetNeck`):

- the *interactive* pyramid feeds the click / mask-prompt path, one object at a time as in
  SAM 3.0: the SAM prompt encoder and 3.0 `MaskDecoder` (``interactive_sam_*``), on the
  frame's features plus the learned ``interactivity_no_mem_embed`` (never memory-conditioned);
- the *propagation* pyramid feeds the multiplex path: objects sit in buckets of
  ``M = multiplex_count`` slots, every bucket's view of the frame is conditioned on that
  bucket's memories (`condition_on_memory`) and one `MultiplexMaskDecoder` pass decodes all of
  its slots (`forward_propagation_heads`); the memory encoder turns a bucket's slot masks into
  one memory map (`encode_memory`).

Slot layouts are given as ``slots (Bk, M)`` int tensors: ``slots[b, j]`` is the index (0..N-1)
of the object in slot ``j`` of bucket ``b``, negative for an empty (or removed) slot. `mux` /
`demux` move tensors between object order ``(N, ...)`` and slot order ``(Bk, M, ...)``; which
object goes where (the official ``MultiplexState``) is the video logic's business.

Shapes: ``C`` = d_model (256; memories are as wide), ``h = w`` = image_size / 14 (72),
low-resolution masks ``4h`` (288), mask prompts ``16h`` (1152), high resolution
``image_size`` (1008). ``N`` objects, ``Bk`` buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.common import MLP
from sam3video.model.config import Sam3VideoConfig
from sam3video.model.mask_decoder import MaskDecoder
from sam3video.model.memory_attention_31 import (
    DecoupledMemoryAttention,
    MultiplexTransformerWrapper,
)
from sam3video.model.memory_encoder_31 import MultiplexMemoryEncoder
from sam3video.model.multiplex_mask_decoder import MultiplexMaskDecoder
from sam3video.model.prompt_encoder import PositionEmbeddingRandom, PromptEncoder
from sam3video.model.tracker import FrameFeatures, sine_encoding_1d
from sam3video.model.tracker_heads import (
    MASK_AS_OUTPUT_BIAS,
    MASK_AS_OUTPUT_SCALE,
    SamHeadsOutput,
    build_prompt_encoder,
    build_sam_mask_decoder,
    build_two_way_transformer,
    check_neck_levels,
    mask_prompt_as_logits,
    memory_attention_settings,
    resize_mask_prompt,
    sam_heads_output,
    tracker_settings,
)


def mux(x: Tensor, slots: Tensor) -> Tensor:
    """Object order ``x (N, ...)`` -> slot order ``(Bk, M, ...)``, zeros in empty slots."""
    flat = slots.reshape(-1)
    valid = flat >= 0
    out = x.new_zeros((flat.shape[0], *x.shape[1:]))
    out[valid] = x[flat[valid]]
    return out.view(*slots.shape, *x.shape[1:])


def demux(y: Tensor, slots: Tensor, num_objects: int) -> Tensor:
    """Slot order ``y (Bk, M, ...)`` -> object order ``(N, ...)`` (empty slots dropped)."""
    flat = slots.reshape(-1).to(y.device)
    valid = (flat >= 0).nonzero().squeeze(1)
    order = flat[valid].argsort()
    if int(valid.numel()) != num_objects:
        raise InvalidInputError(
            f"slots: expected {num_objects} occupied slots (one per object), got {valid.numel()}"
        )
    return y.reshape(-1, *y.shape[2:])[valid[order]]


class MemoryFrame(NamedTuple):
    """One stored frame as the propagation of a later frame reads it.

    ``maskmem_features (Bk, C, h, w)``: the buckets' memories (`encode_memory`);
    ``image_features``/``image_pos (1, C, h, w)``: that frame's propagation-neck features and
    their sine encoding; ``t_pos``: its signed temporal distance (current frame minus it, sign
    flipped when tracking backwards) for a prompted frame, its slot ``1..num_maskmem-1`` for an
    earlier tracked frame (SAM 3.1 encodes both the same way, see `tpos_index`).
    """

    maskmem_features: Tensor
    image_features: Tensor
    image_pos: Tensor
    t_pos: int


class PointerFrame(NamedTuple):
    """Object pointers of one stored frame: ``obj_ptr (Bk, M, C)`` in slot order, ``t_diff``
    its temporal distance (signed or not, as the caller's memory rule says)."""

    obj_ptr: Tensor
    t_diff: int


class MultiplexTrackerModel(nn.Module):
    """The official ``VideoTrackingMultiplex`` as SAM 3.1 builds it (``tracker.model.`` keys).

    Components come built (see `build_multiplex_tracker`); scalars are the official settings.
    """

    def __init__(
        self,
        prompt_encoder: PromptEncoder,
        interactive_mask_decoder: MaskDecoder,
        mask_decoder: MultiplexMaskDecoder,
        memory_encoder: MultiplexMemoryEncoder,
        memory_attention: DecoupledMemoryAttention,
        d_model: int = 256,
        image_size: int = 1008,
        backbone_stride: int = 14,
        num_maskmem: int = 7,
        max_obj_ptrs_in_encoder: int = 16,
        sigmoid_scale_for_mem_enc: float = 2.0,
        sigmoid_bias_for_mem_enc: float = -1.0,
        object_score_logit_threshold: float = 0.0,
        condition_fg: float = 1.0,
        condition_bg: float = 0.0,
    ) -> None:
        super().__init__()
        m = mask_decoder.multiplex_count
        self.hidden_dim = d_model
        self.multiplex_count = m
        self.image_size = image_size
        self.backbone_stride = backbone_stride
        self.feat_size = image_size // backbone_stride
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs_in_encoder = max_obj_ptrs_in_encoder
        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc
        self.object_score_logit_threshold = object_score_logit_threshold
        self.condition_fg = condition_fg
        self.condition_bg = condition_bg

        # Registration order gives the official state-dict order.
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(num_maskmem, 1, 1, d_model))
        self.interactivity_no_mem_embed = nn.Parameter(torch.zeros(1, 1, d_model))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(m, d_model))
        self.output_valid_embed = nn.Parameter(torch.zeros(m, d_model))
        self.output_invalid_embed = nn.Parameter(torch.zeros(m, d_model))
        for p in self.parameters():
            nn.init.trunc_normal_(p, std=0.02)
        # Maps a mask prompt to a 4x smaller logit map for the interactive decoder.
        self.interactive_mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.transformer = MultiplexTransformerWrapper(memory_attention)
        self.maskmem_backbone = memory_encoder
        # An absent object's pointer is a learned linear map of its own pointer.
        self.no_obj_ptr_linear = nn.Linear(d_model, d_model)
        self.image_pe_layer = PositionEmbeddingRandom(d_model // 2)
        self.interactive_sam_prompt_encoder = prompt_encoder
        self.interactive_sam_mask_decoder = interactive_mask_decoder
        self.sam_mask_decoder = mask_decoder
        self.obj_ptr_proj = MLP(d_model, d_model, d_model, 3)
        self.interactive_obj_ptr_proj = MLP(d_model, d_model, d_model, 3)
        self.obj_ptr_tpos_proj = nn.Linear(d_model, d_model)

    # ------------------------------------------------------------------------ features

    def _prepare(self, decoder: nn.Module, feats: Sequence[Tensor], pos: Sequence[Tensor]):
        check_neck_levels(feats, pos, self.hidden_dim, self.feat_size, "neck")
        return FrameFeatures(
            high_res=(decoder.conv_s0(feats[0]), decoder.conv_s1(feats[1])),
            vision=feats[2],
            vision_pos=pos[2],
        )

    def prepare_interactive(self, feats: Sequence[Tensor], pos: Sequence[Tensor]) -> FrameFeatures:
        """Interactive-neck levels ``(b, C, 4h, 4w), (b, C, 2h, 2w), (b, C, h, w)`` and their
        encodings -> `FrameFeatures` for the click path (run once per frame)."""
        return self._prepare(self.interactive_sam_mask_decoder, feats, pos)

    def prepare_propagation(self, feats: Sequence[Tensor], pos: Sequence[Tensor]) -> FrameFeatures:
        """Propagation-neck levels -> `FrameFeatures` for the multiplex path and the memory."""
        return self._prepare(self.sam_mask_decoder, feats, pos)

    def interactive_features(self, vision: Tensor) -> Tensor:
        """``(b, C, h, w)`` interactive level 2 -> the same plus ``interactivity_no_mem_embed``."""
        return vision + self.interactivity_no_mem_embed.view(1, -1, 1, 1).to(vision.dtype)

    def get_propagation_dense_pe(self) -> Tensor:
        """Random-Fourier encoding of the ``h x w`` grid for the multiplex decoder,
        ``(1, C, h, w)``."""
        return self.image_pe_layer((self.feat_size, self.feat_size)).unsqueeze(0)

    # ------------------------------------------------------------------------ SAM heads

    def _finish_heads(
        self,
        masks: Tensor,
        ious: Tensor,
        tokens: Tensor,
        scores: Tensor,
        multimask_output: bool,
        ptr_proj: nn.Module,
    ) -> SamHeadsOutput:
        """`sam_heads_output` for ``N`` objects (``masks (N, K, 4h, 4w)``, ``ious (N, K)``,
        ``tokens (N, K', C)``, score logits ``scores (N, 1)``) with SAM 3.1's presence threshold
        (``object_score_logit_threshold``) and pointer gate (`_gate_pointer`); ``ptr_proj``
        differs between the interactive and the propagation path."""
        return sam_heads_output(
            masks,
            ious,
            tokens,
            scores,
            self.image_size,
            multimask_output,
            score_threshold=self.object_score_logit_threshold,
            ptr_proj=ptr_proj,
            gate_pointer=self._gate_pointer,
        )

    def _gate_pointer(self, obj_ptr: Tensor, appearing: Tensor) -> Tensor:
        """Absent objects (``appearing (N, 1)`` False) get ``no_obj_ptr_linear`` of their
        pointer ``(N, C)``."""
        lam = appearing.to(obj_ptr.dtype)
        return lam * obj_ptr + (1 - lam) * self.no_obj_ptr_linear(obj_ptr)

    def forward_interactive_heads(
        self,
        features: Tensor,
        high_res_features: Sequence[Tensor],
        point_coords: Tensor | None = None,
        point_labels: Tensor | None = None,
        mask_inputs: Tensor | None = None,
        multimask_output: bool = False,
    ) -> SamHeadsOutput:
        """Decode ``N`` prompted objects one by one (SAM 3.0's heads).

        ``features (1 or N, C, h, w)`` (`interactive_features` of the frame), ``high_res_features
        [(1 or N, C/8, 4h, 4w), (1 or N, C/4, 2h, 2w)]``; ``point_coords (N, P, 2)`` (x, y) pixels
        of the ``image_size`` square, ``point_labels (N, P)`` int (-1 padding, 0/1, 2/3 box
        corners); ``mask_inputs (N, 1, H, W)`` logits, resized to ``4h x 4w`` (bilinear,
        antialiased) when needed. The pointer comes from ``interactive_obj_ptr_proj``.
        """
        if point_coords is None and mask_inputs is None:
            raise InvalidInputError("point_coords/mask_inputs: expected at least one, got neither")
        n = (point_coords if point_coords is not None else mask_inputs).shape[0]
        device = features.device
        if point_coords is None:
            # No clicks: one padding point stands in (the encoder appends another).
            point_coords = torch.zeros(n, 1, 2, device=device)
            point_labels = torch.full((n, 1), -1, dtype=torch.int32, device=device)
        encoder = self.interactive_sam_prompt_encoder
        mask_prompt = None
        if mask_inputs is not None:
            mask_prompt = resize_mask_prompt(mask_inputs, encoder.mask_input_size)
        sparse, dense = encoder(points=(point_coords, point_labels), masks=mask_prompt)
        image = features.expand(n, -1, -1, -1)
        high_res = [x.expand(n, -1, -1, -1) for x in high_res_features]
        masks, ious, tokens, scores = self.interactive_sam_mask_decoder(
            image, encoder.get_dense_pe(), sparse, dense, multimask_output, high_res
        )
        return self._finish_heads(
            masks, ious, tokens, scores, multimask_output, self.interactive_obj_ptr_proj
        )

    def forward_propagation_heads(
        self, features: Tensor, high_res_features: Sequence[Tensor], slots: Tensor
    ) -> SamHeadsOutput:
        """Decode every object of ``Bk`` buckets in one multiplex pass.

        ``features (Bk, C, h, w)`` memory-conditioned (`condition_on_memory`),
        ``high_res_features [(1, C/8, 4h, 4w), (1, C/4, 2h, 2w)]`` (`prepare_propagation`),
        ``slots (Bk, M)``. Outputs in object order (``N`` = occupied slots), always with the
        ``K`` = 3 candidates: ``low_res_multimasks (N, K, 4h, 4w)``, ``ious (N, K)``, the best
        candidate as ``low_res_masks (N, 1, 4h, 4w)``, ``obj_ptr (N, C)``, ``object_score_logits
        (N, 1)``.
        """
        if tuple(slots.shape) != (features.shape[0], self.multiplex_count):
            raise InvalidInputError(
                f"slots: expected ({features.shape[0]}, {self.multiplex_count}) for "
                f"{features.shape[0]} buckets, got {tuple(slots.shape)}"
            )
        n = int((slots >= 0).sum())
        valid = (slots >= 0).to(features.device, self.output_valid_embed.dtype)[..., None]
        # Learned embeddings tell the decoder which slots hold an object.
        slot_embed = valid * self.output_valid_embed + (1 - valid) * self.output_invalid_embed
        out = self.sam_mask_decoder(
            features, self.get_propagation_dense_pe(), high_res_features, slot_embed
        )
        masks, ious, tokens, scores = (
            demux(t, slots, n)
            for t in (out.masks, out.iou_pred, out.sam_tokens_out, out.object_score_logits)
        )
        return self._finish_heads(masks, ious, tokens, scores, True, self.obj_ptr_proj)

    def use_mask_as_output(
        self, features: Tensor, high_res_features: Sequence[Tensor], mask_inputs: Tensor
    ) -> SamHeadsOutput:
        """A mask prompt is the output: ``mask_inputs (N, 1, H, W)`` (bool or 0/1) ->
        logits ``20 m - 10`` at ``H x W`` and ``H/4 x W/4`` (antialiased), IoUs 1, the object
        present when any pixel is > 0 (score logit +-10). The pointer comes from decoding the
        interactive ``features`` (`interactive_features`) with the prompt
        ``interactive_mask_downsample(m)``.
        """
        scale, bias = MASK_AS_OUTPUT_SCALE, MASK_AS_OUTPUT_BIAS
        mask = mask_inputs.float()  # logits in float32 whatever the weights' dtype
        high_res_masks, low_res_masks = mask_prompt_as_logits(
            mask, (mask.shape[-2] // 4, mask.shape[-1] // 4)
        )
        ious = mask.new_ones(mask.shape[0], 1)
        conv = self.interactive_mask_downsample
        decoded = self.forward_interactive_heads(
            features, high_res_features, mask_inputs=conv(mask.to(conv.weight.dtype))
        )
        appearing = (mask_inputs.flatten(1).float() > 0).any(dim=1, keepdim=True)
        obj_ptr = self._gate_pointer(decoded.obj_ptr, appearing)
        lam = appearing.to(obj_ptr.dtype)
        return SamHeadsOutput(
            low_res_masks,
            high_res_masks,
            ious,
            low_res_masks,
            high_res_masks,
            obj_ptr,
            scale * lam + bias,
        )

    # ------------------------------------------------------------------------ memory

    def encode_memory(
        self,
        vision: Tensor,
        pred_masks_high_res: Tensor,
        object_score_logits: Tensor,
        slots: Tensor,
        conditioning: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """One memory map per bucket.

        ``vision (1, C, h, w)``: the frame's propagation level 2 (raw); ``pred_masks_high_res
        (N, 1, H, W)`` logits; ``object_score_logits (N, 1)``; ``slots (Bk, M)``;
        ``conditioning (N,)`` bool, the objects prompted on this frame. Masks enter as
        ``sigmoid * 2 - 1`` (official scale/bias), followed by one constant channel per slot
        saying "conditioning"; empty and absent slots add ``no_obj_embed_spatial``. Returns
        ``maskmem_features (Bk, C, h, w)`` and its sine encoding ``(Bk, C, h, w)``.
        """
        masks = torch.sigmoid(pred_masks_high_res.float())
        if self.sigmoid_scale_for_mem_enc != 1.0:
            masks = masks * self.sigmoid_scale_for_mem_enc
        if self.sigmoid_bias_for_mem_enc != 0.0:
            masks = masks + self.sigmoid_bias_for_mem_enc
        cond = torch.where(
            conditioning.to(masks.device, torch.bool),
            torch.tensor(self.condition_fg, dtype=masks.dtype, device=masks.device),
            torch.tensor(self.condition_bg, dtype=masks.dtype, device=masks.device),
        )
        cond = cond.view(-1, 1, 1, 1).expand_as(masks)
        slots = slots.to(masks.device)
        mask_in = torch.cat([mux(masks, slots).squeeze(2), mux(cond, slots).squeeze(2)], dim=1)
        feats, pos = self.maskmem_backbone(vision, mask_in)
        scores = mux(object_score_logits, slots)  # (Bk, M, 1); empty slots score 0: "absent"
        absent = (scores <= self.object_score_logit_threshold).to(feats.dtype)
        no_obj = (absent * self.no_obj_embed_spatial.to(feats.dtype)).sum(dim=1)  # (Bk, C)
        return feats + no_obj[..., None, None], pos

    def tpos_index(self, t_pos: int) -> int:
        """Row of ``maskmem_tpos_enc`` for a memory at temporal position ``t_pos``: the last
        row for positions outside ``1..num_maskmem-1`` (prompted frames far away or ahead),
        else ``num_maskmem - t_pos - 1`` (official ``use_maskmem_tpos_v2``)."""
        if t_pos <= 0 or t_pos >= self.num_maskmem:
            return self.num_maskmem - 1
        return self.num_maskmem - t_pos - 1

    def pointer_pos_encoding(self, t_diffs: Sequence[int], max_abs_pos: int) -> Tensor:
        """Temporal encoding of pointer frames: ``(F,)`` distances -> ``(F, C)``."""
        device = self.obj_ptr_tpos_proj.weight.device
        pos = torch.tensor(list(t_diffs), dtype=torch.float32, device=device)
        pos = pos / (max_abs_pos - 1 if max_abs_pos is not None else 1)
        enc = sine_encoding_1d(pos, self.hidden_dim)
        return self.obj_ptr_tpos_proj(enc.to(self.obj_ptr_tpos_proj.weight.dtype))

    def condition_on_memory(
        self,
        vision: Tensor,
        vision_pos: Tensor,
        num_buckets: int,
        memories: Sequence[MemoryFrame],
        pointers: Sequence[PointerFrame] = (),
        num_frames: int | None = None,
    ) -> Tensor:
        """The buckets' views of the frame conditioned on their memory banks.

        ``vision``/``vision_pos (1, C, h, w)``: propagation level 2 and its sine encoding;
        ``memories`` and ``pointers`` in the order they enter the bank (the caller picks
        them: prompted frames first, then earlier frames oldest first); ``num_frames`` bounds
        the pointer encoding's range as the official ``min(num_frames, max_obj_ptrs)``.
        Returns ``(Bk, C, h, w)``; without any memory the frame's features, expanded.
        """
        _, c, h, w = vision.shape
        dtype = vision.dtype
        if not memories:
            return vision.expand(num_buckets, -1, -1, -1)
        seq = lambda x: x.flatten(2).transpose(1, 2)  # noqa: E731  (b, C, h, w) -> (b, hw, C)
        mem, mem_img, mem_img_pos = [], [], []
        for frame in memories:
            tpos = self.maskmem_tpos_enc[self.tpos_index(frame.t_pos)].reshape(1, 1, c)
            mem.append(seq(frame.maskmem_features.to(vision.device, dtype)))
            mem_img.append(seq(frame.image_features.to(vision.device, dtype)))
            mem_img_pos.append(seq(frame.image_pos.to(vision.device, dtype)) + tpos.to(dtype))
        pointer_pos = None
        if pointers:
            max_ptrs = self.max_obj_ptrs_in_encoder
            if num_frames is not None:
                max_ptrs = min(num_frames, max_ptrs)
            ptrs = torch.cat([p.obj_ptr.to(vision.device, dtype) for p in pointers], dim=1)
            enc = self.pointer_pos_encoding([p.t_diff for p in pointers], max_ptrs).to(dtype)
            # Every slot's pointer of a frame shares that frame's encoding.
            pointer_pos = enc.repeat_interleave(self.multiplex_count, dim=0).unsqueeze(0)
            mem.append(ptrs)
        memory = torch.cat(mem, dim=1)
        out = self.transformer.encoder(
            image=seq(vision),
            src=seq(vision),
            src_pos=seq(vision_pos),
            memory_image=torch.cat(mem_img, dim=1),
            memory=memory,
            memory_image_pos=torch.cat(mem_img_pos, dim=1),
            pointer_pos=pointer_pos,
        )
        return out.transpose(1, 2).reshape(num_buckets, c, h, w)


class Sam3MultiplexTracker(nn.Module):
    """``Sam3VideoModel.tracker`` for SAM 3.1: holds `MultiplexTrackerModel` as ``model``."""

    def __init__(self, model: MultiplexTrackerModel) -> None:
        super().__init__()
        self.model = model


def build_multiplex_tracker(cfg: Sam3VideoConfig) -> Sam3MultiplexTracker:
    """The SAM 3.1 tracker of ``cfg`` (uninitialised weights; see ``sam3video.model.build``)."""
    t = cfg.multiplex
    if t is None:
        raise InvalidInputError(f"config {cfg.name!r}: expected a SAM 3.1 config (multiplex set)")
    c = cfg.d_model

    model = MultiplexTrackerModel(
        prompt_encoder=build_prompt_encoder(cfg, t),
        interactive_mask_decoder=build_sam_mask_decoder(
            t, c, iou_head_hidden_dim=t.iou_head_hidden_dim, iou_prediction_use_sigmoid=False
        ),
        mask_decoder=MultiplexMaskDecoder(
            transformer_dim=c,
            transformer=build_two_way_transformer(t, c),
            multiplex_count=t.multiplex_count,
            num_multimask_outputs=t.num_multimask_outputs,
            iou_head_depth=t.iou_head_depth,
            iou_head_hidden_dim=t.iou_head_hidden_dim,
        ),
        memory_encoder=MultiplexMemoryEncoder(
            dim=c,
            mask_in_chans=t.mask_in_slots,
            mask_size=cfg.input_mask_size,
            start_chans=t.mask_downsampler_start_chans,
            fuser_layers=t.fuser_layers,
        ),
        memory_attention=DecoupledMemoryAttention(**memory_attention_settings(t, c)),
        object_score_logit_threshold=t.object_score_logit_threshold,
        condition_fg=t.condition_fg,
        condition_bg=t.condition_bg,
        **tracker_settings(cfg, t),
    )
    return Sam3MultiplexTracker(model)
