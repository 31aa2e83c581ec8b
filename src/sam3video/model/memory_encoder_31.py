"""SAM 3.1's memory encoder (``tracker.model.maskmem_backbone``, official ``SimpleMaskEncoder``).

Differences from SAM 3.0 (`sam3video.model.memory_encoder.MemoryEncoder`):

- the mask input of a bucket has ``2 * M`` channels (``M`` = multiplex_count): the ``M`` slots'
  mask probabilities, then ``M`` constant "is this slot's object a conditioning input on this
  frame" channels; the downsampler starts from ``start_chans`` (4 at full size) channels and
  multiplies them by ``stride**2`` per conv (16, 64, 256, 1024 at full size);
- the memory is as wide as the features (``out_dim = in_dim``: ``out_proj`` is Identity) and
  its sine position encoding too;
- the frame's features are shared by the buckets: ``pix_feat`` has batch 1 (or ``Bk``).

Everything else, the mask downsampler included, is SAM 3.0's `MemoryEncoder` (subclassed).
"""

from __future__ import annotations

from torch import Tensor

from sam3video.errors import InvalidInputError
from sam3video.model.memory_encoder import MemoryEncoder


class MultiplexMemoryEncoder(MemoryEncoder):
    """Encode (frame features, the slot masks of ``Bk`` buckets) into ``Bk`` memories.

    ``dim`` = width of the features and of the memory (C), ``mask_in_chans`` = ``2 * M``,
    ``mask_size`` = side the masks are resized to before downsampling (1152 full, 256 tiny;
    ``mask_size / 16`` must equal the feature grid side). SAM 3.0's `MemoryEncoder` with
    ``out_dim = in_dim`` (so ``out_proj`` is Identity, as the official code).
    """

    def __init__(
        self,
        dim: int,
        mask_in_chans: int,
        mask_size: int = 1152,
        start_chans: int = 4,
        fuser_layers: int = 2,
    ) -> None:
        super().__init__(
            out_dim=dim,
            in_dim=dim,
            mask_size=mask_size,
            fuser_layers=fuser_layers,
            mask_in_chans=mask_in_chans,
            mask_start_chans=start_chans,
        )

    def forward(self, pix_feat: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """``pix_feat (b, C, h, w)`` (b = 1 or Bk), ``masks (Bk, 2M, H, W)`` already mapped
        to the encoder's input range by the caller (no sigmoid here) -> ``(features, pos)``,
        both ``(Bk, C, h, w)``; ``pos`` in the features' dtype.
        """
        in_chans = self.mask_downsampler.in_chans
        if masks.ndim != 4 or masks.shape[1] != in_chans:
            raise InvalidInputError(
                f"masks: expected (Bk, {in_chans}, H, W), got {tuple(masks.shape)}"
            )
        if pix_feat.shape[0] not in (1, masks.shape[0]):
            raise InvalidInputError(
                f"pix_feat: expected batch 1 or {masks.shape[0]} (one per bucket), "
                f"got {pix_feat.shape[0]}"
            )
        return self._encode(pix_feat, masks)
