"""The FastAPI application: routes, auth, error mapping, middleware and the session reaper.

``create_app(predictor, config)`` serves one shared `Sam3VideoPredictor`. Auth covers every
``/v1`` route and ``/metrics``; ``/healthz``, the page (``/``, ``/static``) and the OpenAPI
docs are open: they hold no data and run nothing, and the page asks for the token itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from sam3video import __version__
from sam3video.errors import Sam3VideoError
from sam3video.predictor import Sam3VideoPredictor
from sam3video.server import protocol, resources
from sam3video.server.auth import token_dependency
from sam3video.server.config import ServerConfig
from sam3video.server.core import ServerCore, log
from sam3video.server.errors import AuthError, status_for
from sam3video.server.middleware import BodyLimit, RequestMetrics
from sam3video.server.models import (
    SEED_REQUESTS,
    CreateSessionBody,
    FrameOutputs,
    Health,
    PromptBody,
    PropagateBody,
    PropagateInVideoRequest,
    UploadForm,
    add_components,
)

STATIC = Path(__file__).resolve().parent / "static"
_DOC_ONLY_MODELS = (
    *SEED_REQUESTS,
    PropagateInVideoRequest,
    CreateSessionBody,
    UploadForm,
    PromptBody,
    PropagateBody,
    FrameOutputs,
)


def create_app(
    predictor: Sam3VideoPredictor, config: ServerConfig | None = None, *, model_name: str = ""
) -> FastAPI:
    """The server of ``predictor`` (which the caller owns; its sessions opened here are
    closed when the app shuts down)."""
    config = config or ServerConfig()
    core = ServerCore(predictor, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(_reap(core))
        try:
            yield
        finally:
            reaper.cancel()
            await run_in_threadpool(core.shutdown)

    app = FastAPI(
        title="sam3video",
        version=__version__,
        summary="SAM 3 video sessions over HTTP: the seed request protocol, streamed masks",
        lifespan=lifespan,
    )
    app.state.core = core
    auth = [Depends(token_dependency(config.token))]
    app.include_router(protocol.router(core), dependencies=auth)
    app.include_router(resources.router(core), dependencies=auth)
    _add_service_routes(app, core, model_name or "custom", auth)
    _add_error_handlers(app, core)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=core.metrics)
    _document_bodies(app)
    return app


def _add_service_routes(app: FastAPI, core: ServerCore, model_name: str, auth: list) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz() -> dict[str, Any]:
        device = core.predictor.device
        return {
            "status": "ok",
            "sessions": len(core.registry),
            "model": model_name,
            "device": str(device),
        }

    @app.get("/metrics", response_class=PlainTextResponse, tags=["service"], dependencies=auth)
    async def metrics() -> str:
        """Prometheus text format."""
        return core.metrics.render()


def _add_error_handlers(app: FastAPI, core: ServerCore) -> None:
    def own_ids(request: Request) -> tuple[Any, ...]:
        return (request.path_params.get("session_id"), getattr(request.state, "session_id", None))

    async def package_error(request: Request, exc: Exception) -> JSONResponse:
        status = status_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
        return JSONResponse(core.error_body(exc, own_ids(request)), status, headers=headers)

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(part) for part in first.get("loc", ()) if part not in ("body", "path")]
        field = where[-1] if where else None
        message = f"{field}: {first.get('msg', 'invalid value')}, got {first.get('input')!r}"
        body = {"error": "InvalidInputError", "field": field, "message": message}
        return JSONResponse(body, 400)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        name = "NotFound" if exc.status_code == 404 else "HTTPError"
        body = {"error": name, "field": None, "message": str(exc.detail)}
        return JSONResponse(body, exc.status_code, headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(core.error_body(exc), 500)

    app.add_exception_handler(Sam3VideoError, package_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _document_bodies(app: FastAPI) -> None:
    """Add the schemas of bodies the routes read as raw JSON to the OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            add_components(schema, _DOC_ONLY_MODELS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _reap(core: ServerCore) -> None:
    """Close sessions idle past the TTL, checking a few times per TTL (at most every 30 s)."""
    interval = min(30.0, max(0.05, core.config.session_ttl / 4))
    while True:
        await asyncio.sleep(interval)
        try:
            expired = await run_in_threadpool(core.registry.expire)
        except Exception:  # noqa: BLE001 - the reaper must outlive one failed close
            log.exception("closing expired sessions failed")
            continue
        if expired:
            core.metrics.expired(len(expired))
            log.info("closed %d idle session(s)", len(expired))
