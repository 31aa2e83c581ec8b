"""The one error hierarchy of sam3video.

Every error the package raises on purpose derives from `Sam3VideoError`, and also from the
built-in exception that fits (``ValueError``, ``KeyError``, ``FileNotFoundError``,
``RuntimeError``), so callers may catch either. Messages name the field or path, what was
expected and what was given.
"""

from __future__ import annotations


class Sam3VideoError(Exception):
    """Base class of every error raised by sam3video."""


class ConfigError(Sam3VideoError, ValueError):
    """An unknown preset or an invalid configuration value."""


class InvalidInputError(Sam3VideoError, ValueError):
    """A malformed argument or request field (wrong type, out of range, inconsistent)."""


class FrameIndexError(InvalidInputError, IndexError):
    """A frame index that is not an integer in ``[0, num_frames)``."""


class UnknownIdError(Sam3VideoError, KeyError):
    """An unknown session id or object id."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SourceNotFoundError(Sam3VideoError, FileNotFoundError):
    """A video, frame folder, image or checkpoint path that does not exist."""


class UnsupportedSourceError(Sam3VideoError, ValueError):
    """A path that exists but is not a supported video, image or frame folder."""


class DecodeError(Sam3VideoError, RuntimeError):
    """A video or image that cannot be decoded (corrupt, truncated, empty)."""


class CheckpointError(Sam3VideoError, RuntimeError):
    """A checkpoint that cannot be read, or whose keys/shapes do not fit the model."""


class StaleStreamError(Sam3VideoError, RuntimeError):
    """A propagation stream invalidated by a later state-changing request on its session
    (a new prompt, a removal, a reset, another propagation, or closing the session). The stale
    stream touches nothing; the frames it had yielded stay valid results."""


class SessionBusyError(Sam3VideoError, RuntimeError):
    """A request that needs a session another caller is using exclusively (for example a
    second propagation while one is being streamed)."""


class UnsupportedModelError(Sam3VideoError, NotImplementedError):
    """A model version this build can load but not yet run in the requested mode (SAM 3.1's
    multiplex video tracking until it lands)."""
