"""The tracker's SAM mask decoder (``tracker.sam_mask_decoder``).

Learned output tokens (object score, IoU, 1 + ``num_multimask_outputs`` mask tokens) are
prepended to the prompt tokens and run through the two-way transformer with the image
embedding. The image side is upsampled 4x (with the high-resolution backbone skips) and each
mask token, through its own hypernetwork MLP, gives one mask as a dot product per pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.common import MLP, LayerNorm2d
from sam3video.model.two_way_transformer import TwoWayTransformer


def stability_scores(mask_logits: Tensor, delta: float) -> Tensor:
    """IoU between the masks thresholded at ``+delta`` and at ``-delta``.

    ``mask_logits (..., H, W)`` -> ``(...)``; 1.0 where no pixel exceeds ``-delta``.
    """
    flat = mask_logits.flatten(-2)
    inter = (flat > delta).sum(-1).float()
    union = (flat > -delta).sum(-1).float()
    return torch.where(union > 0, inter / union, 1.0)


class MaskUpscalingBase(nn.Module):
    """What SAM 3.0's and SAM 3.1's mask decoders share: the 4x upsampling of the transformer's
    image side (``output_upscaling``, keys ``output_upscaling.{0,1,3}``) and its
    high-resolution backbone skips (``conv_s0``, ``conv_s1``).
    """

    def _init_upscaling(self, c: int, use_high_res_features: bool) -> None:
        """Register the upsampling modules for transformer width ``c``."""
        # Indices 0, 1, 3 hold weights (2 and 4 are GELUs), matching the checkpoint keys.
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)

    def _check_high_res_features(
        self, high_res_features: list[Tensor] | tuple[Tensor, Tensor] | None, batch: str
    ) -> None:
        """Raise unless the two skip maps are given where the decoder uses them."""
        if self.use_high_res_features and (
            high_res_features is None or len(high_res_features) != 2
        ):
            raise InvalidInputError(
                f"high_res_features: expected 2 maps [({batch}, C/8, 4h, 4w), "
                f"({batch}, C/4, 2h, 2w)], "
                f"got {None if high_res_features is None else len(high_res_features)}"
            )

    def _upscale(
        self, src: Tensor, high_res_features: list[Tensor] | tuple[Tensor, Tensor] | None
    ) -> Tensor:
        """``src (B, C, h, w)`` -> ``(B, C/8, 4h, 4w)``, adding the skips after each deconv."""
        if not self.use_high_res_features:
            return self.output_upscaling(src)
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res_features
        up = act1(ln1(dc1(src) + feat_s1))
        return act2(dc2(up) + feat_s0)


class MaskDecoder(MaskUpscalingBase):
    """Mask logits, IoU predictions, output tokens and object-score logits.

    ``transformer_dim`` = C; the upsampled mask features have C/8 channels at 4x the embedding
    resolution. ``num_mask_tokens = num_multimask_outputs + 1`` (token 0 = single-mask output).
    """

    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = True,
        pred_obj_scores: bool = True,
        pred_obj_scores_mlp: bool = True,
        use_multimask_token_for_obj_ptr: bool = True,
        dynamic_multimask_via_stability: bool = True,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        iou_prediction_use_sigmoid: bool = True,
    ) -> None:
        super().__init__()
        c = transformer_dim
        self.transformer_dim = c
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1

        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, c)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, c)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        self._init_upscaling(c, use_high_res_features)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(c, c, c // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            c,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )
        if pred_obj_scores:
            self.pred_obj_score_head = MLP(c, c, 1, 3) if pred_obj_scores_mlp else nn.Linear(c, 1)

        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def _hypernetworks(self, mask_tokens_out: Tensor) -> Tensor:
        """Each mask token through its own MLP at once: ``(B, T, C)`` -> ``(B, T, C/8)``."""
        mlps = list(self.output_hypernetworks_mlps)
        x = mask_tokens_out
        num_layers = len(mlps[0].layers)
        for i in range(num_layers):
            weight = torch.stack([m.layers[i].weight for m in mlps])  # (T, out, in)
            bias = torch.stack([m.layers[i].bias for m in mlps])  # (T, out)
            x = torch.einsum("bti,toi->bto", x, weight) + bias
            if i < num_layers - 1:
                x = F.relu(x)
        return x

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        high_res_features: list[Tensor] | tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """All ``T = num_mask_tokens`` outputs, before any selection.

        Returns ``masks (B, T, 4h, 4w)``, ``iou_pred (B, T)``, ``mask_tokens_out (B, T, C)``,
        ``object_score_logits (B, 1)``.
        """
        b = sparse_prompt_embeddings.shape[0]
        learned = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            learned.insert(0, self.obj_score_token.weight)
        s = 1 if self.pred_obj_scores else 0
        output_tokens = torch.cat(learned, dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)

        src = image_embeddings + dense_prompt_embeddings
        _, c, h, w = src.shape
        hs, src = self.transformer(src, image_pe.expand(b, -1, -1, -1), tokens)
        iou_token_out = hs[:, s]
        mask_tokens_out = hs[:, s + 1 : s + 1 + self.num_mask_tokens]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        up = self._upscale(src, high_res_features)

        hyper_in = self._hypernetworks(mask_tokens_out)  # (B, T, C/8)
        _, cu, hu, wu = up.shape
        masks = (hyper_in @ up.view(b, cu, hu * wu)).view(b, -1, hu, wu)

        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0])
        else:
            # No score head: treat the object as present (sigmoid(10) ~ 1).
            object_score_logits = iou_pred.new_full((b, 1), 10.0)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def _dynamic_multimask_via_stability(
        self, all_mask_logits: Tensor, all_iou_scores: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Keep the single-mask output where it is stable, else the best multimask output.

        ``all_mask_logits (B, T, H, W)``, ``all_iou_scores (B, T)`` ->
        ``(B, 1, H, W)``, ``(B, 1)``.
        """
        multi_logits = all_mask_logits[:, 1:]
        multi_ious = all_iou_scores[:, 1:]
        best = multi_ious.argmax(dim=-1, keepdim=True)  # (B, 1)
        best_logits = multi_logits.gather(
            1, best[:, :, None, None].expand(-1, -1, *multi_logits.shape[-2:])
        )
        best_ious = multi_ious.gather(1, best)

        single_logits = all_mask_logits[:, 0:1]
        single_ious = all_iou_scores[:, 0:1]
        stable = (
            stability_scores(single_logits, self.dynamic_multimask_stability_delta)
            >= self.dynamic_multimask_stability_thresh
        )  # (B, 1)
        mask_out = torch.where(stable[..., None, None], single_logits, best_logits)
        iou_out = torch.where(stable, single_ious, best_ious)
        return mask_out, iou_out

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
        high_res_features: list[Tensor] | tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Decode masks for ``B`` objects (one image embedding per object).

        Inputs: ``image_embeddings (B, C, h, w)``, ``image_pe (1, C, h, w)``,
        ``sparse_prompt_embeddings (B, N, C)``, ``dense_prompt_embeddings (B, C, h, w)``,
        ``high_res_features [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)]`` (when
        ``use_high_res_features``).

        Returns ``masks (B, M, 4h, 4w)`` logits, ``iou_pred (B, M)``, ``sam_tokens_out
        (B, M', C)`` and ``object_score_logits (B, 1)``. With ``multimask_output``: M = M' =
        ``num_multimask_outputs`` (tokens 1..). Otherwise M = M' = 1: token 0's mask, or in eval
        with dynamic stability the best multimask output when token 0's mask is unstable; the
        returned token is still token 0 (the object pointer always follows token 0 there).
        """
        b = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] != b or dense_prompt_embeddings.shape[0] != b:
            raise InvalidInputError(
                "image_embeddings/dense_prompt_embeddings: expected batch size "
                f"{b} (one per object, as sparse_prompt_embeddings), got "
                f"{image_embeddings.shape[0]} and {dense_prompt_embeddings.shape[0]}"
            )
        if image_pe.shape[0] != 1:
            raise InvalidInputError(
                f"image_pe: expected batch size 1 (from get_dense_pe()), got {image_pe.shape[0]}"
            )
        self._check_high_res_features(high_res_features, "B")

        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            high_res_features,
        )
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]

        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            sam_tokens_out = mask_tokens_out[:, 0:1]
        return masks, iou_pred, sam_tokens_out, object_score_logits
