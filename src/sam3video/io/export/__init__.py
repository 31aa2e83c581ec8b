"""Exporting results: SA-Co/YTVIS JSON, indexed PNG masks and an overlay MP4 (or PNG).

The predictor streams one result per frame: ``frame_index`` and
``outputs = {obj_id: {"mask": bool (H, W), "score": float, "bbox": [x0, y0, x1, y1]}}`` at the
video's resolution, frames in any order (forward then backward for ``"both"``, so a frame may
come twice). Each writer takes those results one frame at a time with
``writer.write(frame_index, outputs)``, keeps its memory bounded whatever the length of the
video, and is a context manager whose ``close()`` is idempotent.

Modules (each documents its decisions): `common` (what every writer shares: last write wins,
validation, atomic files), `ytvis` (`YtvisWriter`, `read_ytvis`, `decode_ytvis_masks`), `png`
(`PngWriter`, `read_png_masks`), `overlay` (`OverlayWriter`, `render_overlay`,
`color_for_id`) and `labels` (the overlay's label text, size and placement).
"""

from sam3video.io.export.common import DAVIS_PALETTE
from sam3video.io.export.overlay import OverlayWriter, color_for_id, render_overlay
from sam3video.io.export.png import MAX_PNG_ID, PngWriter, read_png_masks
from sam3video.io.export.ytvis import YtvisWriter, decode_ytvis_masks, read_ytvis

__all__ = [
    "DAVIS_PALETTE",
    "MAX_PNG_ID",
    "OverlayWriter",
    "PngWriter",
    "YtvisWriter",
    "color_for_id",
    "decode_ytvis_masks",
    "read_png_masks",
    "read_ytvis",
    "render_overlay",
]
