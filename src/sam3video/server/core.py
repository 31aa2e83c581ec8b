"""What every route does, over the one shared predictor: open sessions under the media root,
run requests in the model pool, stream propagations, keep the session registry current.

The seed routes (`protocol`) and the resource routes (`resources`) are both thin layers over
`ServerCore`, so a prompt sent either way takes the same path. Requests are validated by the
predictor's own parser (`parse_request`) before anything runs; the session id is then looked
up in the registry, so an unknown id never reaches the predictor.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from sam3video.errors import (
    DecodeError,
    InvalidInputError,
    SourceNotFoundError,
    UnsupportedSourceError,
)
from sam3video.io import open_frames
from sam3video.io.export import YtvisWriter, read_ytvis
from sam3video.predictor import Sam3VideoPredictor
from sam3video.requests import (
    REQUEST_TYPES,
    AddPrompt,
    CancelPropagation,
    CloseSession,
    PropagateInVideo,
    RemoveConcept,
    RemoveObject,
    ResetSession,
    StartSession,
    parse_request,
)
from sam3video.server.config import ServerConfig, default_workers
from sam3video.server.errors import error_body, status_for
from sam3video.server.media import UploadStore, display_name, resolve_media_path
from sam3video.server.metrics import Metrics
from sam3video.server.pool import ModelPool
from sam3video.server.rle import decode_outputs, encode_outputs
from sam3video.server.sessions import SessionEntry, SessionRegistry
from sam3video.server.streams import NdjsonStreamResponse, Stream

log = logging.getLogger("sam3video.server")
REQUEST_TYPE_NAMES = frozenset(REQUEST_TYPES)


class ServerCore:
    """The server's state and operations (one per app)."""

    def __init__(self, predictor: Sam3VideoPredictor, config: ServerConfig) -> None:
        self.predictor = predictor
        self.config = config
        self.metrics = Metrics()
        self.uploads = UploadStore()
        self.pool = ModelPool(config.workers or default_workers(predictor.device.type))
        self.registry = SessionRegistry(
            predictor,
            max_sessions=config.max_sessions,
            ttl=config.session_ttl,
            on_close=self._forget_upload,
        )
        self.metrics.gauge("sam3video_sessions", "Open sessions.", lambda: len(self.registry))
        self.metrics.gauge(
            "sam3video_streams_active", "Running propagations.", self.registry.streaming
        )
        self.metrics.gauge("sam3video_workers", "Model worker threads.", lambda: self.pool.workers)

    # -- sessions --------------------------------------------------------------------------

    def open_session(
        self, resource_path: Any, session_id: Any = None, *, upload: Path | None = None
    ) -> SessionEntry:
        """Start a predictor session (blocking: it opens the video). ``upload``: a file saved
        by the upload store, which the session then owns."""
        request: dict[str, Any] = {"type": "start_session", "resource_path": resource_path}
        if session_id is not None:
            request["session_id"] = session_id
        req = parse_request(request, stream=False)
        assert isinstance(req, StartSession)
        if upload is not None:
            real, name = str(upload), upload.name
        else:
            real = resolve_media_path(self.config.media_root, req.resource_path)
            name = display_name(self.config.media_root, real)
        with self.registry.reserve():
            try:
                response = self.predictor.handle_request({**request, "resource_path": real})
            except (SourceNotFoundError, UnsupportedSourceError, DecodeError) as exc:
                # The reader's message names the file, not the request field.
                raise type(exc)(f"resource_path: {exc}") from exc
            entry = SessionEntry(
                session_id=response["session_id"],
                resource_path=real,
                name=name,
                uploaded=upload is not None,
                last_used=0.0,
                fps=self._fps(real),
            )
            self.registry.touch(entry)
            self.registry.add(entry)
        return entry

    def _fps(self, path: str) -> float | None:
        """Read once: the page's frame reader is opened only when frames are asked for."""
        with open_frames(path, loader=self.predictor.video_loader_type, cache_size=1) as frames:
            return frames.fps

    def close_session(self, session_id: str) -> bool:
        """Blocking (waits for the frame a propagation is tracking)."""
        return self.registry.close(session_id)

    def session_info(self, entry: SessionEntry) -> dict[str, Any]:
        """Frames, size, fps, objects, memory and propagation state (blocking)."""
        info = self.predictor.session_info(entry.session_id)
        height, width = info["video_size"]
        stream = entry.stream
        propagation = stream.summary() if stream is not None else entry.last_stream
        return {
            "session_id": entry.session_id,
            "resource": entry.name,
            "num_frames": info["num_frames"],
            "height": height,
            "width": width,
            "fps": entry.fps,
            "obj_ids": [int(i) for i in info["obj_ids"]],
            "memory": info["memory"],
            "text": entry.text,
            "tracked_frames": len(entry.results),
            "propagation": propagation,
            "idle_seconds": 0.0 if stream is not None else self.registry.idle_seconds(entry),
        }

    def _forget_upload(self, entry: SessionEntry) -> None:
        if entry.uploaded:
            self.uploads.remove(entry.resource_path)

    # -- requests --------------------------------------------------------------------------

    async def handle(self, request: Any) -> dict[str, Any]:
        """A non-streaming seed request, answered as the predictor does, masks as RLE."""
        if not isinstance(request, Mapping):
            raise InvalidInputError(
                f"request: expected a JSON object with a 'type', got {type(request).__name__}"
            )
        req = parse_request(request, stream=False)
        if isinstance(req, StartSession):
            entry = await self.pool.run(self.open_session, req.resource_path, req.session_id)
            return {"session_id": entry.session_id}
        if isinstance(req, CancelPropagation):
            # On the event loop, not queued behind model work: it must act at once.
            self.cancel(self.registry.get(req.session_id))
            return {"is_success": True}
        if isinstance(req, CloseSession):
            # Not in the model pool: closing waits for a running stream's frame, which needs
            # a model worker.
            await run_in_threadpool(self.close_session, req.session_id)
            return {"is_success": True}  # idempotent, as the predictor
        entry = self.registry.get(req.session_id)
        return await self.pool.run(self._run_on_session, entry, req, dict(request))

    def _run_on_session(self, entry: SessionEntry, req: Any, request: dict) -> dict[str, Any]:
        """Run a prompt / removal / reset and keep the session's results current."""
        response = self.predictor.handle_request(request)
        if isinstance(req, AddPrompt):
            outputs = encode_outputs(response["outputs"])
            if req.points is None and req.concept_mode == "replace":
                entry.new_concept(None)
            entry.record(response["frame_index"], outputs)
            self._name_concepts(entry)
            return {"frame_index": response["frame_index"], "outputs": outputs}
        if isinstance(req, RemoveObject):
            entry.drop_object(req.obj_id)
        elif isinstance(req, RemoveConcept):
            entry.drop_concept(req.text)
            self._name_concepts(entry)
        elif isinstance(req, ResetSession):
            entry.new_concept(None)
        return response

    def _name_concepts(self, entry: SessionEntry) -> None:
        concepts = self.predictor.session_info(entry.session_id)["concepts"]
        entry.text = ", ".join(concepts) if concepts else None

    async def stream(self, request: Any) -> NdjsonStreamResponse:
        """Start a propagation; the response streams it. Errors before the first frame
        (validation, an unknown or busy session) are raised here, as HTTP errors."""
        if not isinstance(request, Mapping):
            raise InvalidInputError(
                f"request: expected a JSON object with a 'type', got {type(request).__name__}"
            )
        req = parse_request(request, stream=True)
        assert isinstance(req, PropagateInVideo)
        entry = self.registry.get(req.session_id)

        def on_frame(frame_index: int, outputs: dict, seconds: float) -> None:
            entry.record(frame_index, outputs)
            self.registry.touch(entry)
            self.metrics.frame(seconds)

        stream = Stream(
            self.pool,
            buffer=self.config.stream_buffer,
            on_frame=on_frame,
            on_end=lambda s: self.registry.end_stream(entry, s),
            error_line=lambda exc: self.error_line(exc, entry.session_id),
        )
        self.registry.begin_stream(entry, stream)  # 409 if one is running
        try:
            frames = await self.pool.run(self.predictor.handle_stream_request, dict(request))
        except BaseException:
            self.registry.end_stream(entry, stream, record=False)
            raise
        stream.start(frames)
        return NdjsonStreamResponse(stream)

    def cancel(self, entry: SessionEntry) -> bool:
        """Stop the session's propagation after the frame being tracked; False if none ran.
        The predictor is told too (it takes no lock), so it stops at its own next frame
        boundary even inside a long step."""
        stream = entry.stream
        cancelled = stream is not None and stream.cancel("cancelled")
        if cancelled:
            request = {"type": "cancel_propagation", "session_id": entry.session_id}
            self.predictor.handle_request(request)
        return cancelled

    # -- export ----------------------------------------------------------------------------

    def export_ytvis(self, entry: SessionEntry) -> dict[str, Any]:
        """The CLI's YTVIS JSON of every frame tracked so far (blocking)."""
        info = self.predictor.session_info(entry.session_id)
        height, width = info["video_size"]
        with tempfile.TemporaryDirectory(prefix="sam3video-export-") as folder:
            path = Path(folder) / "results.json"
            video_name = Path(entry.name).stem or "video"
            with YtvisWriter(
                path, video_name, height, width, info["num_frames"], fps=entry.fps, text=entry.text
            ) as writer:
                for frame_index, outputs in sorted(entry.snapshot().items()):
                    writer.write(frame_index, decode_outputs(outputs))
            return read_ytvis(path)

    # -- errors ----------------------------------------------------------------------------

    def error_body(self, exc: BaseException, own_ids: tuple[Any, ...] = ()) -> dict[str, Any]:
        """The error's JSON body, naming no other session and no server path."""
        redact = {sid: "<another session>" for sid in self.registry.ids() if sid not in own_ids}
        redact[str(self.uploads.root)] = "<upload>"
        redact[str(self.config.media_root)] = "<media root>"
        if status_for(exc) == 500:
            log.error("unexpected error", exc_info=exc)
        return error_body(exc, redact=redact, request_types=REQUEST_TYPE_NAMES)

    def error_line(self, exc: BaseException, session_id: str) -> bytes:
        """The last NDJSON line of a stream that failed mid-way."""
        return json.dumps(self.error_body(exc, (session_id,))).encode() + b"\n"

    def shutdown(self) -> None:
        """Close every session, stop the workers, delete the uploads (blocking)."""
        self.registry.close_all()
        self.pool.shutdown()
        self.uploads.close()
