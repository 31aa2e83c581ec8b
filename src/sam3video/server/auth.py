"""Bearer-token auth: one shared token, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sam3video.server.errors import AuthError

_bearer = HTTPBearer(auto_error=False, description="the server's --token")


def token_dependency(token: str | None) -> Callable[..., None]:
    """A FastAPI dependency that accepts any request when ``token`` is None, otherwise only
    ``Authorization: Bearer <token>``."""

    def require_token(
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise AuthError(
                "Authorization: expected 'Bearer <token>' with the server's token"
                + (", got a wrong token" if given else ", got none")
            )

    return require_token
