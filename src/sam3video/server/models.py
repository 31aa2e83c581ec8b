"""Typed request and response models: the OpenAPI schema served at ``/docs``.

Requests are documented here but validated by the predictor (`sam3video.requests`), the one
place that knows the seed protocol's rules, so the HTTP API answers exactly as the Python API
(same checks, same messages, unknown fields suggested). Bodies therefore reach the routes as
plain JSON objects, and the request schemas are attached to the routes with `json_body`.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Direction = Literal["forward", "backward", "both"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- the seed protocol -----------------------------------------------------------------------


class StartSessionRequest(_Model):
    type: Literal["start_session"]
    resource_path: str = Field(description="a video, frame folder or image under the media root")
    session_id: str | None = Field(None, description="generated when left out")


class AddPromptRequest(_Model):
    type: Literal["add_prompt"]
    session_id: str
    frame_index: int = Field(ge=0)
    text: str | list[str] | None = Field(
        None, description="a noun phrase (or several): every instance is tracked"
    )
    concept_mode: Literal["replace", "add"] = Field(
        "replace", description="replace the session's concepts, or add to them"
    )
    points: list[list[float]] | None = Field(None, description="[[x, y], ...] in pixels")
    point_labels: list[int] | None = Field(None, description="1 foreground, 0 background")
    bounding_boxes: list[list[float]] | None = Field(
        None, description="[[cx, cy, w, h], ...] normalized to [0, 1]"
    )
    bounding_box_labels: list[int] | None = Field(None, description="1 positive, 0 negative")
    obj_id: int | None = Field(None, ge=0, description="refine this object (points only)")


class PropagateInVideoRequest(_Model):
    type: Literal["propagate_in_video"]
    session_id: str
    propagation_direction: Direction = "both"
    start_frame_index: int | None = Field(None, ge=0)
    max_frame_num_to_track: int | None = Field(None, ge=0)


class RemoveObjectRequest(_Model):
    type: Literal["remove_object"]
    session_id: str
    obj_id: int = Field(ge=0)
    is_user_action: bool = True


class ResetSessionRequest(_Model):
    type: Literal["reset_session"]
    session_id: str


class CloseSessionRequest(_Model):
    type: Literal["close_session"]
    session_id: str


class RemoveConceptRequest(_Model):
    """Stop tracking a concept and the objects it found."""

    type: Literal["remove_concept"]
    session_id: str
    text: str


class CancelPropagationRequest(_Model):
    """Stop the session's running propagation after the frame being tracked."""

    type: Literal["cancel_propagation"]
    session_id: str


SEED_REQUESTS = (
    StartSessionRequest,
    AddPromptRequest,
    RemoveObjectRequest,
    ResetSessionRequest,
    CloseSessionRequest,
    CancelPropagationRequest,
    RemoveConceptRequest,
)

# -- outputs ---------------------------------------------------------------------------------


class Rle(_Model):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE (column-major)")


class ObjectOutput(_Model):
    mask: Rle
    score: float
    bbox: list[int] = Field(description="[x0, y0, x1, y1] pixels, x1/y1 exclusive")
    concept: str | None = Field(None, description="the noun phrase that found it (None: clicks)")


class FrameOutputs(_Model):
    """A prompt's response, and one NDJSON line of a propagation."""

    frame_index: int
    outputs: dict[str, ObjectOutput] = Field(description="by object id")


class SessionStarted(_Model):
    session_id: str


class Success(_Model):
    is_success: bool


class ErrorBody(_Model):
    error: str = Field(description="the error type, e.g. InvalidInputError")
    field: str | None = Field(description="the request field it is about, when one is")
    message: str


# -- resource routes -------------------------------------------------------------------------


class CreateSessionBody(_Model):
    resource_path: str = Field(description="relative to the media root, or absolute inside it")
    session_id: str | None = None


class UploadForm(_Model):
    file: bytes = Field(json_schema_extra={"format": "binary"})
    session_id: str | None = None


class PromptBody(_Model):
    frame_index: int = Field(ge=0)
    text: str | list[str] | None = None
    concept_mode: Literal["replace", "add"] = "replace"
    points: list[list[float]] | None = None
    point_labels: list[int] | None = None
    bounding_boxes: list[list[float]] | None = None
    bounding_box_labels: list[int] | None = None
    obj_id: int | None = Field(None, ge=0)


class PropagateBody(_Model):
    propagation_direction: Direction = "both"
    start_frame_index: int | None = Field(None, ge=0)
    max_frame_num_to_track: int | None = Field(None, ge=0)


class StreamInfo(_Model):
    status: str = Field(description="running, done, cancelled, disconnected, closed or error")
    frames: int = Field(description="frames yielded so far")


class SessionInfo(_Model):
    session_id: str
    resource: str = Field(description="the video as the client named it")
    num_frames: int
    height: int
    width: int
    fps: float | None
    obj_ids: list[int]
    memory: dict[str, Any] = Field(description="bytes the session holds, by part")
    text: str | None = Field(description="the session's concepts, comma-separated")
    tracked_frames: int = Field(description="frames with results so far (the export's)")
    propagation: StreamInfo | None = Field(description="the running or last propagation")
    idle_seconds: float


class Cancelled(_Model):
    cancelled: bool = Field(description="False when no propagation was running")


class MediaEntry(_Model):
    path: str
    kind: Literal["video", "image", "frames"]


class Health(_Model):
    status: str
    sessions: int
    model: str
    device: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "invalid input (the field is named)"),
        (401, "missing or wrong bearer token"),
        (403, "path outside the media root"),
        (404, "unknown session or object"),
        (409, "session busy or stream stale"),
        (413, "body too large"),
        (422, "undecodable video"),
        (429, "too many sessions"),
    )
}


def _ref(model: type[BaseModel]) -> str:
    return f"#/components/schemas/{model.__name__}"


def json_body(*models: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body of one of ``models``, told apart by their
    ``type`` (their schemas are added by `add_components`)."""
    if len(models) == 1:
        schema: dict[str, Any] = {"$ref": _ref(models[0])}
    else:
        mapping = {get_args(m.model_fields["type"].annotation)[0]: _ref(m) for m in models}
        schema = {
            "oneOf": [{"$ref": _ref(m)} for m in models],
            "discriminator": {"propertyName": "type", "mapping": mapping},
        }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def add_components(openapi: dict[str, Any], models: tuple[type[BaseModel], ...]) -> None:
    """Put the schemas of models used only through `json_body` into the OpenAPI document."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
