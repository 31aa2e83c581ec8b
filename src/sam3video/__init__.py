"""sam3video: SAM 3's promptable concept segmentation and tracking in video, portable and fast."""

from sam3video.errors import (
    CheckpointError,
    ConfigError,
    DecodeError,
    FrameIndexError,
    InvalidInputError,
    Sam3VideoError,
    SourceNotFoundError,
    UnknownIdError,
    UnsupportedSourceError,
)
from sam3video.model.build import build_sam3_video_model
from sam3video.model.weights import synthetic_state_dict
from sam3video.predictor import Sam3VideoPredictor

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DecodeError",
    "FrameIndexError",
    "InvalidInputError",
    "Sam3VideoPredictor",
    "Sam3VideoError",
    "SourceNotFoundError",
    "UnknownIdError",
    "UnsupportedSourceError",
    "__version__",
    "build_sam3_video_model",
    "synthetic_state_dict",
]
