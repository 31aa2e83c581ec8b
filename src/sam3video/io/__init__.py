"""Reading frames: lazy random-access frame sources and the model-input transform."""

from sam3video.io.frames import (
    IMAGE_EXTENSIONS,
    LOADERS,
    VIDEO_EXTENSIONS,
    CacheInfo,
    FrameSource,
    open_frames,
)
from sam3video.io.transforms import IMAGE_MEAN, IMAGE_STD, to_model_batch, to_model_input

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "LOADERS",
    "VIDEO_EXTENSIONS",
    "CacheInfo",
    "FrameSource",
    "open_frames",
    "to_model_batch",
    "to_model_input",
]
