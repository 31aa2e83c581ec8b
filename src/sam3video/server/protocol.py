"""The seed protocol over HTTP, verbatim: ``POST /v1/requests`` takes any non-streaming
request dict and answers the predictor's response; ``POST /v1/requests/stream`` takes a
``propagate_in_video`` request and streams NDJSON, one ``{"frame_index", "outputs"}`` line per
frame. Masks are COCO RLE (see `rle`)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sam3video.errors import InvalidInputError
from sam3video.server.core import ServerCore
from sam3video.server.models import (
    ERROR_RESPONSES,
    SEED_REQUESTS,
    FrameOutputs,
    PropagateInVideoRequest,
    SessionStarted,
    Success,
    json_body,
)

NDJSON_DOC = {
    "description": "application/x-ndjson: one FrameOutputs object per line, flushed as each "
    "frame is tracked; a line with 'error' ends a stream that failed mid-way",
    "content": {"application/x-ndjson": {"schema": {"$ref": "#/components/schemas/FrameOutputs"}}},
}


async def read_json(request: Request) -> Any:
    """The JSON body (400 naming ``body`` when it is not JSON). Remembers the session id it
    names, which error messages may then show."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        message = f"body: expected a JSON object, got malformed JSON ({exc})"
        raise InvalidInputError(message) from exc
    if isinstance(body, dict):
        request.state.session_id = body.get("session_id")
    return body


def router(core: ServerCore) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["seed protocol"], responses=ERROR_RESPONSES)

    @api.post(
        "/requests",
        summary="Any non-streaming request of the seed protocol",
        response_model=FrameOutputs | SessionStarted | Success,
        openapi_extra=json_body(*SEED_REQUESTS),
    )
    async def handle_request(request: Request) -> JSONResponse:
        # A Response skips FastAPI's re-validation of the (already checked) answer.
        return JSONResponse(await core.handle(await read_json(request)))

    @api.post(
        "/requests/stream",
        summary="propagate_in_video, streamed as NDJSON",
        responses={200: NDJSON_DOC},
        openapi_extra=json_body(PropagateInVideoRequest),
    )
    async def handle_stream_request(request: Request):  # noqa: ANN202 - a streamed response
        return await core.stream(await read_json(request))

    return api
