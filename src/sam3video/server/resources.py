"""Resource routes for tools and the page: sessions, frames, prompts, propagation, export.

Each route builds the seed request it stands for and goes through the same `ServerCore`
operations as ``/v1/requests``: same validation, same errors, same masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from sam3video.errors import InvalidInputError
from sam3video.server.core import ServerCore
from sam3video.server.media import list_media
from sam3video.server.models import (
    ERROR_RESPONSES,
    Cancelled,
    FrameOutputs,
    MediaEntry,
    PromptBody,
    PropagateBody,
    SessionInfo,
    Success,
    json_body,
)
from sam3video.server.protocol import NDJSON_DOC, read_json

_RESERVED = ("type", "session_id")

CREATE_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/CreateSessionBody"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/UploadForm"}},
        },
    }
}


def _fields(body: Any, what: str) -> dict[str, Any]:
    """A resource route's JSON object; the session is named by the path, not the body."""
    if not isinstance(body, dict):
        raise InvalidInputError(f"body: expected a JSON object ({what}), got {type(body).__name__}")
    for key in _RESERVED:
        if key in body:
            raise InvalidInputError(f"{key}: not allowed in the body of this route ({what})")
    return body


def router(core: ServerCore) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["sessions"], responses=ERROR_RESPONSES)

    async def info(session_id: str) -> dict[str, Any]:
        entry = core.registry.get(session_id)
        return await run_in_threadpool(core.session_info, entry)

    @api.post(
        "/sessions",
        status_code=201,
        response_model=SessionInfo,
        summary="Open a video under the media root (JSON) or an uploaded one (multipart)",
        openapi_extra=CREATE_DOC,
    )
    async def create_session(request: Request) -> JSONResponse:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            entry = await _open_upload(core, request)
        else:
            body = _fields(await read_json(request), "resource_path, session_id")
            entry = await core.pool.run(
                core.open_session, body.get("resource_path"), body.get("session_id")
            )
        return JSONResponse(await info(entry.session_id), status_code=201)

    @api.get("/sessions/{session_id}", response_model=SessionInfo)
    async def get_session(session_id: str) -> JSONResponse:
        return JSONResponse(await info(session_id))

    @api.get(
        "/sessions/{session_id}/frames/{frame_index}",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}, "description": "the frame as JPEG"}},
    )
    async def get_frame(session_id: str, frame_index: int) -> Response:
        entry = core.registry.get(session_id)
        loader = core.predictor.video_loader_type
        data = await run_in_threadpool(entry.frame_jpeg, frame_index, loader)
        # Frames never change: let the page cache them while it scrubs.
        headers = {"Cache-Control": "private, max-age=3600"}
        return Response(data, media_type="image/jpeg", headers=headers)

    @api.post(
        "/sessions/{session_id}/prompts",
        response_model=FrameOutputs,
        openapi_extra=json_body(PromptBody),
    )
    async def add_prompt(session_id: str, request: Request) -> JSONResponse:
        body = _fields(await read_json(request), "an add_prompt request without type")
        seed = {**body, "type": "add_prompt", "session_id": session_id}
        return JSONResponse(await core.handle(seed))

    @api.post(
        "/sessions/{session_id}/propagate",
        responses={200: NDJSON_DOC},
        openapi_extra=json_body(PropagateBody),
    )
    async def propagate(session_id: str, request: Request):  # noqa: ANN202 - streamed
        raw = await request.body()
        body = _fields(await read_json(request) if raw.strip() else {}, "propagation options")
        return await core.stream({**body, "type": "propagate_in_video", "session_id": session_id})

    @api.post("/sessions/{session_id}/cancel", response_model=Cancelled)
    async def cancel(session_id: str) -> dict[str, bool]:
        """Stop the running propagation after the frame being tracked (its frames stay)."""
        return {"cancelled": core.cancel(core.registry.get(session_id))}

    @api.delete("/sessions/{session_id}/objects/{obj_id}", response_model=Success)
    async def remove_object(session_id: str, obj_id: int) -> JSONResponse:
        seed = {"type": "remove_object", "session_id": session_id, "obj_id": obj_id}
        return JSONResponse(await core.handle(seed))

    @api.post("/sessions/{session_id}/reset", response_model=Success)
    async def reset(session_id: str) -> JSONResponse:
        return JSONResponse(await core.handle({"type": "reset_session", "session_id": session_id}))

    @api.delete("/sessions/{session_id}", response_model=Success)
    async def close(session_id: str) -> dict[str, bool]:
        core.registry.get(session_id)  # 404 for an unknown id (the seed request is idempotent)
        await run_in_threadpool(core.close_session, session_id)
        return {"is_success": True}

    @api.get(
        "/sessions/{session_id}/export",
        responses={200: {"description": "SA-Co/YTVIS JSON, as `sam3video track` writes"}},
    )
    async def export(session_id: str, format: Literal["ytvis"] = "ytvis") -> JSONResponse:  # noqa: A002
        entry = core.registry.get(session_id)
        data = await run_in_threadpool(core.export_ytvis, entry)
        name = f"{Path(entry.name).stem or 'video'}.ytvis.json"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return JSONResponse(data, headers=headers)

    @api.get("/media", response_model=list[MediaEntry], tags=["media"])
    async def media() -> list[dict[str, str]]:
        """Videos, images and frame folders under the media root (for the page)."""
        return await run_in_threadpool(list_media, core.config.media_root)

    return api


async def _open_upload(core: ServerCore, request: Request):  # noqa: ANN202
    """Save a multipart upload (field ``file``) and open a session on it."""
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInputError("file: expected a multipart file field named 'file'")
        session_id = form.get("session_id")
        limit = core.config.max_body_bytes
        path = await run_in_threadpool(core.uploads.save, upload.file, upload.filename, limit)
    finally:
        await form.close()
    try:
        return await core.pool.run(core.open_session, path.name, session_id or None, upload=path)
    except BaseException:
        core.uploads.remove(path)
        raise
