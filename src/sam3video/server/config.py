"""The server's settings (what ``sam3video serve`` options set), validated once."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from sam3video.errors import InvalidInputError

DEFAULT_SESSION_TTL = 1200.0  # seconds idle before a session is closed (as SAM 3.1)
DEFAULT_MAX_SESSIONS = 16
DEFAULT_MAX_UPLOAD_MB = 512.0
STREAM_BUFFER_FRAMES = 2  # frames computed ahead of a slow client, per stream


@dataclass(frozen=True)
class ServerConfig:
    """Limits and access rules of one server.

    Attributes:
        media_root: the only folder ``resource_path`` may point into (realpath, symlinks
            followed); relative paths are relative to it.
        token: the bearer token every route but ``/healthz`` and the page's static files
            needs; ``None`` disables auth (loopback only, see `check_bind`).
        max_sessions: open sessions at most; one more answers 429.
        session_ttl: seconds a session may stay idle (no request, no running propagation)
            before it is closed.
        max_upload_mb: the largest request body, uploads included (413 above).
        workers: threads that run model work; ``None`` picks by device (`default_workers`).
        stream_buffer: frames a propagation may compute ahead of its client.
    """

    media_root: Path = field(default_factory=Path.cwd)
    token: str | None = None
    max_sessions: int = DEFAULT_MAX_SESSIONS
    session_ttl: float = DEFAULT_SESSION_TTL
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    workers: int | None = None
    stream_buffer: int = STREAM_BUFFER_FRAMES

    def __post_init__(self) -> None:
        root = Path(os.path.realpath(self.media_root))
        if not root.is_dir():
            raise InvalidInputError(f"media_root: expected an existing folder, got {str(root)!r}")
        object.__setattr__(self, "media_root", root)
        if self.token is not None and not self.token.strip():
            raise InvalidInputError("token: expected a non-empty str or None, got ''")
        positive = {
            "max_sessions": self.max_sessions,
            "session_ttl": self.session_ttl,
            "max_upload_mb": self.max_upload_mb,
            "stream_buffer": self.stream_buffer,
            "workers": 1 if self.workers is None else self.workers,
        }
        for name, value in positive.items():
            if not value > 0:  # also rejects NaN
                raise InvalidInputError(f"{name}: expected a number > 0, got {value!r}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def default_workers(device_type: str) -> int:
    """Threads running model work. The model is shared and each session has its own lock, so
    sessions may run concurrently: on CUDA two threads keep the GPU busy while the other
    thread decodes frames and encodes masks; on the CPU torch already spreads one frame over
    the cores, so more threads than half the cores only split them; MPS runs one at a time."""
    if device_type == "cuda":
        return 2
    if device_type == "mps":
        return 1
    return max(2, min(4, (os.cpu_count() or 2) // 2))


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token."""
    if token is None and not is_loopback(host):
        raise InvalidInputError(
            f"host: {host!r} is reachable from other machines; set --token (or "
            "$SAM3VIDEO_TOKEN) to serve it, or bind 127.0.0.1"
        )
