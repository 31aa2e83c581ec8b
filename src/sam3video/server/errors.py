"""HTTP errors of the server: its own error types and the mapping of every error to a response.

Every error body is ``{"error": <type name>, "field": <field or null>, "message": <text>}``.
The field is the leading ``"field:"`` of the package's messages (they all start with the field
they are about). Unexpected exceptions become a 500 ``InternalError`` whose message says
nothing about the code; the traceback goes to the server's log only.
"""

from __future__ import annotations

import re

from sam3video.errors import (
    CheckpointError,
    DecodeError,
    InvalidInputError,
    Sam3VideoError,
    SessionBusyError,
    SourceNotFoundError,
    StaleStreamError,
    UnknownIdError,
    UnsupportedModelError,
    UnsupportedSourceError,
)


class AuthError(Sam3VideoError, PermissionError):
    """A missing or wrong bearer token (401)."""


class ForbiddenPathError(Sam3VideoError, PermissionError):
    """A ``resource_path`` that leaves the media root (403)."""


class PayloadTooLargeError(Sam3VideoError, ValueError):
    """A request body over the server's upload limit (413)."""


class TooManySessionsError(Sam3VideoError, RuntimeError):
    """A new session while ``--max-sessions`` sessions are open (429)."""


# Most specific first: FrameIndexError is an InvalidInputError, and so on.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (AuthError, 401),
    (ForbiddenPathError, 403),
    (PayloadTooLargeError, 413),
    (TooManySessionsError, 429),
    (StaleStreamError, 409),
    (SessionBusyError, 409),
    (UnknownIdError, 404),
    (SourceNotFoundError, 404),
    (UnsupportedSourceError, 400),
    (DecodeError, 422),
    (InvalidInputError, 400),
    (CheckpointError, 500),
    # What the loaded model cannot do yet (SAM 3.1: several concepts, refinement clicks).
    (UnsupportedModelError, 501),
)

# "points[2]: expected ..." -> "points"; "add_prompt: missing required field 'x'" -> "x".
_LEADING_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[[^\]]*\])*:\s")
_QUOTED_FIELD = re.compile(r"\bfields? '([A-Za-z_][A-Za-z0-9_]*)'")


def status_for(exc: BaseException) -> int:
    """The HTTP status of an error (500 for anything not listed)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def field_of(message: str, request_types: frozenset[str] = frozenset()) -> str | None:
    """The field a message is about, from its leading ``"field:"``.

    A message that starts with a request type (``"add_prompt: unknown field 'frame_idx'"``)
    names the field in quotes after it.
    """
    match = _LEADING_FIELD.match(message)
    if match is None:
        return None
    field = match.group(1)
    if field in request_types:
        quoted = _QUOTED_FIELD.search(message)
        return quoted.group(1) if quoted else None
    return field


def error_body(
    exc: BaseException, *, redact: dict[str, str] | None = None, request_types=frozenset()
) -> dict[str, str | None]:
    """The JSON body of an error. ``redact`` maps substrings (other sessions' ids, the media
    root's absolute path) to what replaces them."""
    if not isinstance(exc, Sam3VideoError) or status_for(exc) == 500:
        name = type(exc).__name__ if isinstance(exc, CheckpointError) else "InternalError"
        return {"error": name, "field": None, "message": "internal server error (see its log)"}
    message = str(exc)
    for secret, shown in (redact or {}).items():
        if secret:
            message = message.replace(secret, shown)
    return {
        "error": type(exc).__name__,
        "field": field_of(message, request_types),
        "message": message,
    }
