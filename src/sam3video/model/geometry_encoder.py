"""Geometry (box / point exemplar) encoder of the SAM 3 detector.

Official prefix: ``detector.geometry_encoder.``. Box and point prompts become tokens that join
the text tokens of a prompt; a learned CLS token is always appended, so even a text-only query
yields one geometry token.

Each box token is the sum of a linear map of its raw ``(cx, cy, w, h)``, a 7x7 ROI-align of
the (layer-normed) image features reduced by a ``roi_size`` convolution, a linear map of its
sine position code ``[sin(cy), sin(cx), h, w]`` and a label embedding (0 = negative,
1 = positive). Point tokens are built alike, with a bilinear sample instead of the ROI and
``[sin(x), sin(y)]`` as position code. The sequence ``[points, boxes, CLS]`` is packed (valid
tokens first, padding last), projected, layer-normed and refined by pre-norm layers that
self-attend and cross-attend to the image features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3video.errors import InvalidInputError
from sam3video.model.common import MultiheadAttention
from sam3video.model.ops import box_cxcywh_to_xyxy, roi_align

_SINE_TEMPERATURE = 10000.0
_SINE_SCALE = 2 * math.pi
_NUM_LABELS = 2  # negative, positive


def sine_encode(coord: Tensor, num_feats: int) -> Tensor:
    """Sine code of normalised coordinates: ``(...)`` -> ``(..., num_feats)``.

    Channels are interleaved ``[sin(a_0), cos(a_0), sin(a_1), cos(a_1), ...]`` with
    ``a_j = 2*pi*coord / 10000**(2j / num_feats)`` (no offset, no normalisation).
    """
    exponent = torch.arange(num_feats // 2, dtype=torch.float32, device=coord.device) * 2
    freq = _SINE_TEMPERATURE ** (exponent / num_feats)
    angle = (coord * _SINE_SCALE)[..., None] / freq
    return torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(-2)


def _compact(seq: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move valid entries of ``seq (B, N, C)`` to the front, keeping their order.

    Identity for right-padded masks (the usual case); makes any padding pattern acceptable.
    """
    order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices
    seq = seq.gather(1, order[..., None].expand(-1, -1, seq.shape[-1]))
    return seq, mask.gather(1, order)


def _concat_packed(
    seq1: Tensor, mask1: Tensor, seq2: Tensor, mask2: Tensor
) -> tuple[Tensor, Tensor]:
    """Concatenate two right-padded sequences into one right-padded sequence.

    ``seq1 (B, L1, C)``, ``seq2 (B, L2, C)``, masks ``(B, L)`` True = padding. Output length is
    ``L1 + L2``; the valid part of ``seq2`` follows the ``n1`` valid entries of ``seq1``.
    Padding slots are filled exactly as the official (scatter-based) code fills them: the rest
    of ``seq1`` where ``seq2`` did not land, then zeros. They are never attended to, but this
    keeps outputs equal to the reference on every position.
    """
    b, l1, c = seq1.shape
    l2 = seq2.shape[1]
    n1 = (~mask1).sum(dim=1, keepdim=True)  # (B, 1)
    n2 = (~mask2).sum(dim=1, keepdim=True)
    pos = torch.arange(l1 + l2, device=seq1.device)[None, :]  # (1, L)
    zero_slot = torch.full_like(pos, l1 + l2)
    src_idx = torch.where(
        pos < n1,
        pos,
        torch.where(pos < n1 + l2, l1 + pos - n1, torch.where(pos < l1, pos, zero_slot)),
    )  # (B, L) index into [seq1, seq2, 0]
    source = torch.cat((seq1, seq2, seq1.new_zeros(b, 1, c)), dim=1)
    out = source.gather(1, src_idx[..., None].expand(-1, -1, c))
    return out, pos >= n1 + n2


class GeometryEncoderLayer(nn.Module):
    """Pre-norm layer: self-attention, image cross-attention, ReLU FFN (keys ``encode.{i}.*``).

    The queries carry no position term; image keys get ``img + img_pos``, values ``img``.
    """

    def __init__(
        self, d_model: int, num_heads: int, ffn_dim: int, use_img_cross_attn: bool = True
    ) -> None:
        super().__init__()
        self.use_img_cross_attn = use_img_cross_attn
        self.self_attn = MultiheadAttention(d_model, num_heads)
        self.cross_attn_image = MultiheadAttention(d_model, num_heads)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, pad_mask: Tensor, img_key: Tensor, img: Tensor) -> Tensor:
        """``x (B, L, C)``, ``pad_mask (B, L)``, ``img_key``/``img (B, HW, C)`` -> ``(B, L, C)``."""
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y, key_padding_mask=pad_mask)
        if self.use_img_cross_attn:
            y = self.norm2(x)
            x = x + self.cross_attn_image(y, img_key, img)
        y = self.norm3(x)
        return x + self.linear2(F.relu(self.linear1(y)))


class SequenceGeometryEncoder(nn.Module):
    """Encode box and point prompts (plus a CLS token) into prompt tokens.

    Args:
        d_model: token width, equal to the image feature channels (256 full).
        num_heads: attention heads of the refinement layers.
        ffn_dim: hidden width of the layers' FFN.
        num_layers: number of refinement layers (3 full).
        roi_size: ROI-align output side, also the kernel of ``boxes_pool_project``.
        use_img_cross_attn: when False the layers skip their image cross-attention (weights
            stay in the state dict). The official 0.1.4 builder accepts a flag of this name but
            ignores it, i.e. always cross-attends: keep True for parity.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ffn_dim: int,
        num_layers: int,
        roi_size: int = 7,
        use_img_cross_attn: bool = True,
    ) -> None:
        super().__init__()
        if d_model % 4:
            raise InvalidInputError(f"d_model: expected a multiple of 4, got {d_model}")
        self.d_model = d_model
        self.roi_size = roi_size
        self.label_embed = nn.Embedding(_NUM_LABELS, d_model)
        self.cls_embed = nn.Embedding(1, d_model)
        self.points_direct_project = nn.Linear(2, d_model)
        self.points_pool_project = nn.Linear(d_model, d_model)
        self.points_pos_enc_project = nn.Linear(d_model, d_model)
        self.boxes_direct_project = nn.Linear(4, d_model)
        self.boxes_pool_project = nn.Conv2d(d_model, d_model, roi_size)
        self.boxes_pos_enc_project = nn.Linear(d_model + 2, d_model)
        self.final_proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.img_pre_norm = nn.LayerNorm(d_model)
        self.encode = nn.ModuleList(
            GeometryEncoderLayer(d_model, num_heads, ffn_dim, use_img_cross_attn)
            for _ in range(num_layers)
        )
        self.encode_norm = nn.LayerNorm(d_model)

    # ------------------------------------------------------------------------------------------
    def _encode_points(self, points: Tensor, labels: Tensor, feats: Tensor) -> Tensor:
        """``points (B, Np, 2)`` normalised xy, ``labels (B, Np)`` -> tokens ``(B, Np, C)``."""
        embed = self.points_direct_project(points)
        grid = points[:, :, None, :] * 2 - 1  # (B, Np, 1, 2) in [-1, 1]
        sampled = F.grid_sample(feats, grid, mode="bilinear", align_corners=False)  # (B,C,Np,1)
        embed = embed + self.points_pool_project(sampled.squeeze(-1).transpose(1, 2))
        half = self.d_model // 2
        code = torch.cat((sine_encode(points[..., 0], half), sine_encode(points[..., 1], half)), -1)
        embed = embed + self.points_pos_enc_project(code)
        return self.label_embed(labels) + embed

    def _encode_boxes(self, boxes: Tensor, labels: Tensor, feats: Tensor) -> Tensor:
        """``boxes (B, Nb, 4)`` normalised cxcywh, ``labels (B, Nb)`` -> tokens ``(B, Nb, C)``."""
        b, n, _ = boxes.shape
        h, w = feats.shape[-2:]
        embed = self.boxes_direct_project(boxes)
        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        xyxy = (box_cxcywh_to_xyxy(boxes) * scale).float().reshape(b * n, 4)
        batch_idx = torch.arange(b, device=boxes.device).repeat_interleave(n)
        rois = torch.cat((batch_idx[:, None].to(xyxy), xyxy), dim=1)  # (B*Nb, 5)
        pooled = roi_align(feats, rois, self.roi_size)  # (B*Nb, C, r, r), aligned=False
        embed = embed + self.boxes_pool_project(pooled).view(b, n, self.d_model)
        cx, cy, bw, bh = boxes.unbind(-1)
        half = self.d_model // 2
        code = torch.cat(
            (sine_encode(cy, half), sine_encode(cx, half), bh[..., None], bw[..., None]), dim=-1
        )
        embed = embed + self.boxes_pos_enc_project(code)
        return self.label_embed(labels) + embed

    # ------------------------------------------------------------------------------------------
    def forward(
        self,
        img_feats: Tensor,
        img_pos: Tensor,
        boxes: Tensor | None = None,
        box_labels: Tensor | None = None,
        box_mask: Tensor | None = None,
        points: Tensor | None = None,
        point_labels: Tensor | None = None,
        point_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Encode one prompt per batch element.

        Args:
            img_feats: image features ``(B, C, H, W)`` (the detector's stride-14 level).
            img_pos: their sine position encoding ``(B, C, H, W)``.
            boxes: ``(B, Nb, 4)`` normalised ``(cx, cy, w, h)`` or None.
            box_labels: ``(B, Nb)`` int/bool, 1 = positive, 0 = negative; None = all positive.
            box_mask: ``(B, Nb)`` bool, True = padding; None = all valid.
            points: ``(B, Np, 2)`` normalised ``(x, y)`` or None.
            point_labels, point_mask: as for boxes, ``(B, Np)``.

        Returns:
            ``tokens (B, Np + Nb + 1, C)`` and ``mask (B, Np + Nb + 1)`` bool (True = padding);
            per row the valid point tokens, then the valid box tokens, then CLS, then padding.
        """
        if img_feats.dim() != 4 or img_feats.shape[1] != self.d_model:
            raise InvalidInputError(
                f"img_feats: expected (B, {self.d_model}, H, W), got {tuple(img_feats.shape)}"
            )
        if img_pos.shape != img_feats.shape:
            raise InvalidInputError(
                f"img_pos: expected shape {tuple(img_feats.shape)} like img_feats, "
                f"got {tuple(img_pos.shape)}"
            )
        b, c = img_feats.shape[:2]
        boxes, box_labels, box_mask = _prompt_part(
            "boxes", boxes, box_labels, box_mask, b, 4, img_feats
        )
        points, point_labels, point_mask = _prompt_part(
            "points", points, point_labels, point_mask, b, 2, img_feats
        )

        # Pooling reads a layer-normed copy; attention uses the raw features.
        normed = self.img_pre_norm(img_feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if points.shape[1]:
            point_tok = self._encode_points(points, point_labels, normed)
        else:
            point_tok = img_feats.new_zeros(b, 0, c)
        if boxes.shape[1]:
            box_tok = self._encode_boxes(boxes, box_labels, normed)
        else:
            box_tok = img_feats.new_zeros(b, 0, c)

        tokens, mask = _concat_packed(
            *_compact(point_tok, point_mask), *_compact(box_tok, box_mask)
        )
        cls = self.cls_embed.weight[None].expand(b, 1, c)
        cls_mask = torch.zeros(b, 1, dtype=torch.bool, device=mask.device)
        tokens, mask = _concat_packed(tokens, mask, cls, cls_mask)
        tokens = self.norm(self.final_proj(tokens))

        img = img_feats.flatten(2).transpose(1, 2)  # (B, HW, C)
        img_key = img + img_pos.flatten(2).transpose(1, 2)
        for layer in self.encode:
            tokens = layer(tokens, mask, img_key, img)
        return self.encode_norm(tokens), mask


def _prompt_part(
    name: str,
    coords: Tensor | None,
    labels: Tensor | None,
    mask: Tensor | None,
    batch: int,
    width: int,
    ref: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Check one prompt kind and fill its defaults: coords ``(B, N, width)``, labels, mask."""
    label_name = "box_labels" if name == "boxes" else "point_labels"
    mask_name = "box_mask" if name == "boxes" else "point_mask"
    if coords is None:
        for other, value in ((label_name, labels), (mask_name, mask)):
            if value is not None:
                raise InvalidInputError(f"{other}: given without {name}")
        coords = torch.zeros(batch, 0, width, device=ref.device)
    elif coords.dim() != 3 or coords.shape[0] != batch or coords.shape[2] != width:
        raise InvalidInputError(
            f"{name}: expected shape ({batch}, N, {width}), got {tuple(coords.shape)}"
        )
    n = coords.shape[1]
    for other, value in ((label_name, labels), (mask_name, mask)):
        if value is not None and tuple(value.shape) != (batch, n):
            raise InvalidInputError(
                f"{other}: expected shape ({batch}, {n}), got {tuple(value.shape)}"
            )
    if mask is None:
        mask = torch.zeros(batch, n, dtype=torch.bool, device=coords.device)
    elif mask.dtype != torch.bool:
        raise InvalidInputError(f"{mask_name}: expected dtype torch.bool, got {mask.dtype}")
    if labels is None:
        labels = torch.ones(batch, n, dtype=torch.long, device=coords.device)
    else:
        labels = labels.long()
        # Padded slots may hold any label (e.g. -1); keep them in the embedding's range.
        labels = torch.where(mask, labels.clamp(0, _NUM_LABELS - 1), labels)
    # Coordinates keep their own float precision (not the features' dtype, e.g. bfloat16).
    return (coords if coords.is_floating_point() else coords.float()), labels, mask
