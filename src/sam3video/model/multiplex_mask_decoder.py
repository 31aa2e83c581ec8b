"""SAM 3.1's multiplex mask decoder (``tracker.model.sam_mask_decoder``).

One pass decodes a whole *bucket* of ``M = multiplex_count`` objects (16 at full size) from
one memory-conditioned feature map: the two-way transformer sees no prompt tokens, only
``M`` object-score tokens, ``M`` IoU tokens and ``M * K`` mask tokens (``K`` =
``num_multimask_outputs`` = 3 candidate masks per object slot; there is no single-mask token).
Slot ``j`` owns tokens ``j`` of the first two groups and mask tokens ``j*K .. j*K+K-1``.

The official class has more switches; this is the configuration SAM 3.1 ships
(``multimask_outputs_only``, separate IoU/score tokens, multimask tokens as object pointers,
object scores from an MLP). The 3.0 `MaskDecoder` is still used for clicks (the
"interactive" decoder) and its pieces (two-way transformer, MLP, upscaling) are shared here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.common import MLP
from sam3video.model.mask_decoder import MaskUpscalingBase
from sam3video.model.two_way_transformer import TwoWayTransformer


class MultiplexDecoderOutput(NamedTuple):
    """For ``Bk`` buckets of ``M`` slots and ``K`` candidate masks per slot.

    ``masks (Bk, M, K, 4h, 4w)`` logits, ``iou_pred (Bk, M, K)``, ``sam_tokens_out
    (Bk, M, K, C)`` (the mask tokens: the object pointer of the chosen mask comes from its
    token), ``object_score_logits (Bk, M, 1)``.
    """

    masks: Tensor
    iou_pred: Tensor
    sam_tokens_out: Tensor
    object_score_logits: Tensor


class MultiplexMaskDecoder(MaskUpscalingBase):
    """Masks, IoUs, tokens and object scores for every slot of ``Bk`` buckets at once.

    ``transformer_dim`` = C; upsampled mask features have C/8 channels at 4x the grid.
    """

    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        multiplex_count: int,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = True,
        iou_prediction_use_sigmoid: bool = False,
    ) -> None:
        super().__init__()
        if multiplex_count < 1 or num_multimask_outputs < 1:
            raise InvalidInputError(
                "multiplex_count/num_multimask_outputs: expected >= 1, got "
                f"{multiplex_count} and {num_multimask_outputs}"
            )
        c = transformer_dim
        self.transformer_dim = c
        self.transformer = transformer
        self.multiplex_count = multiplex_count
        self.num_multimask_outputs = num_multimask_outputs
        m, k = multiplex_count, num_multimask_outputs

        self.iou_token = nn.Embedding(m, c)
        self.obj_score_token = nn.Embedding(m, c)
        self.mask_tokens = nn.Embedding(m * k, c)
        self._init_upscaling(c, use_high_res_features)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(c, c, c // 8, 3) for _ in range(k))
        self.iou_prediction_head = MLP(
            c, iou_head_hidden_dim, k, iou_head_depth, sigmoid_output=iou_prediction_use_sigmoid
        )
        self.pred_obj_score_head = MLP(c, c, 1, 3)

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        high_res_features: list[Tensor] | tuple[Tensor, Tensor] | None = None,
        extra_per_object_embeddings: Tensor | None = None,
    ) -> MultiplexDecoderOutput:
        """Decode every slot of ``Bk`` buckets.

        ``image_embeddings (Bk, C, h, w)`` (memory-conditioned, one map per bucket),
        ``image_pe (1, C, h, w)``, ``high_res_features [(b, C/8, 4h, 4w), (b, C/4, 2h, 2w)]``
        with ``b`` 1 (one frame shared by the buckets) or ``Bk``;
        ``extra_per_object_embeddings (Bk, M, C)`` is added to the K mask tokens of each slot
        (SAM 3.1: the learned "valid slot" / "empty slot" embeddings).
        """
        b, c, h, w = image_embeddings.shape
        m, k = self.multiplex_count, self.num_multimask_outputs
        if image_pe.shape[0] != 1:
            raise InvalidInputError(
                f"image_pe: expected batch size 1 (one grid encoding), got {image_pe.shape[0]}"
            )
        self._check_high_res_features(high_res_features, "b")
        mask_tokens = self.mask_tokens.weight
        if extra_per_object_embeddings is not None:
            if tuple(extra_per_object_embeddings.shape) != (b, m, c):
                raise InvalidInputError(
                    f"extra_per_object_embeddings: expected ({b}, {m}, {c}), "
                    f"got {tuple(extra_per_object_embeddings.shape)}"
                )
            per_slot = mask_tokens.view(1, m, k, c) + extra_per_object_embeddings[:, :, None]
            mask_tokens = per_slot.flatten(1, 2)
        else:
            mask_tokens = mask_tokens.unsqueeze(0).expand(b, -1, -1)
        learned = torch.cat([self.obj_score_token.weight, self.iou_token.weight], dim=0)
        tokens = torch.cat([learned.unsqueeze(0).expand(b, -1, -1), mask_tokens], dim=1)

        hs, src = self.transformer(image_embeddings, image_pe, tokens)
        obj_score_out = hs[:, :m]
        iou_out = hs[:, m : 2 * m]
        mask_out = hs[:, 2 * m : 2 * m + m * k].reshape(b, m, k, c)

        src = src.transpose(1, 2).reshape(b, c, h, w)
        up = self._upscale(src, high_res_features)

        # Candidate i of every slot goes through hypernetwork MLP i.
        hyper_in = torch.stack(
            [mlp(mask_out[:, :, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=2,
        )  # (Bk, M, K, C/8)
        _, cu, hu, wu = up.shape
        masks = torch.bmm(hyper_in.flatten(1, 2), up.reshape(b, cu, hu * wu))
        masks = masks.view(b, m, k, hu, wu)
        iou_pred = self.iou_prediction_head(iou_out).view(b, m, k)
        object_score_logits = self.pred_obj_score_head(obj_score_out)  # (Bk, M, 1)
        return MultiplexDecoderOutput(masks, iou_pred, mask_out, object_score_logits)
