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

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DecodeError",
    "FrameIndexError",
    "InvalidInputError",
    "Sam3VideoError",
    "SourceNotFoundError",
    "UnknownIdError",
    "UnsupportedSourceError",
    "__version__",
]
