"""`RemotePredictor`: the request API of `Sam3VideoPredictor`, answered by a ``sam3video serve``.

Code written against the predictor runs against a server by changing one line::

    predictor = RemotePredictor("http://127.0.0.1:8000", token=None)   # was Sam3VideoPredictor()
    sid = predictor.handle_request({"type": "start_session", "resource_path": "video.mp4"})[
        "session_id"
    ]

``resource_path`` is a path under the server's media root. Responses are the predictor's:
``outputs`` is ``{obj_id (int): {"mask": np.bool_ (H, W), "score": float, "bbox": [...]}}``
(the server sends COCO RLE; it is decoded here). Errors are raised as the same types
(`InvalidInputError`, `UnknownIdError`, ...), from the server's JSON error body; transport
failures are httpx's. Needs ``httpx`` (``pip install 'sam3video[client]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import numpy as np

from sam3video import errors
from sam3video.server import errors as server_errors
from sam3video.server.rle import decode_outputs

__all__ = ["RemotePredictor"]


def _error_class(name: object) -> type[errors.Sam3VideoError]:
    for module in (errors, server_errors):
        cls = getattr(module, str(name), None)
        if isinstance(cls, type) and issubclass(cls, errors.Sam3VideoError):
            return cls
    return errors.Sam3VideoError


def _raise_for(response: httpx.Response) -> None:
    """Raise the typed error a non-2xx response carries."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict) or "error" not in body:
        message = f"HTTP {response.status_code}: {response.text}"
        body = {"error": "Sam3VideoError", "message": message}
    raise _error_class(body["error"])(body.get("message", ""))


def _jsonable(value: Any) -> Any:
    """What `json` cannot write but requests may hold: numpy arrays and scalars, paths."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"request: a {type(value).__name__} cannot be sent as JSON")


def _decoded(response: Mapping[str, Any]) -> dict[str, Any]:
    if "outputs" in response:
        return {**response, "outputs": decode_outputs(response["outputs"])}
    return dict(response)


class RemotePredictor:
    """`Sam3VideoPredictor.handle_request` / `handle_stream_request` over HTTP.

    Args:
        url: the server, e.g. ``"http://127.0.0.1:8000"``.
        token: the server's bearer token, if it has one.
        timeout: seconds to wait for a response or the next streamed frame (``None``: no
            limit; a full-size frame on a CPU takes minutes).
        http: an ``httpx.Client`` to use instead of a new one (its base URL and auth are
            then the caller's).

    Sessions opened through this object are closed by `shutdown` (also on leaving a
    ``with`` block).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.Client(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=30.0),
        )
        self._owns_http = http is None
        self._opened: list[str] = []

    def handle_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """``start_session``, ``add_prompt``, ``remove_object``, ``reset_session``,
        ``close_session``: the predictor's response, masks as ``np.bool_`` arrays."""
        response = self._http.post("/v1/requests", content=self._body(request), headers=_JSON)
        if response.status_code != 200:
            _raise_for(response)
        data = _decoded(response.json())
        kind = request.get("type") if isinstance(request, Mapping) else None
        if kind == "start_session":
            self._opened.append(data["session_id"])
        elif kind == "close_session" and request.get("session_id") in self._opened:
            self._opened.remove(request["session_id"])
        return data

    def handle_stream_request(self, request: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """``propagate_in_video``: yields ``{"frame_index", "outputs"}`` as the server tracks.

        The request is sent and checked when this is called (errors are raised here, before
        the first frame), as with the predictor. Closing the generator early closes the
        connection: the server stops within a frame and keeps the frames already tracked.
        """
        body = self._body(request)
        sent = self._http.build_request("POST", "/v1/requests/stream", content=body, headers=_JSON)
        response = self._http.send(sent, stream=True)
        if response.status_code != 200:
            response.read()
            response.close()
            _raise_for(response)
        return self._frames(response)

    def session_info(self, session_id: str) -> dict[str, Any]:
        """The server's view of a session: frames, size, fps, objects, memory, propagation."""
        response = self._http.get(f"/v1/sessions/{session_id}")
        if response.status_code != 200:
            _raise_for(response)
        return response.json()

    def shutdown(self) -> None:
        """Close the sessions opened through this object, then the connection."""
        for session_id in list(self._opened):
            try:
                self.handle_request({"type": "close_session", "session_id": session_id})
            except (errors.Sam3VideoError, httpx.HTTPError):
                pass  # the server may be gone already
        self._opened.clear()
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> RemotePredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @staticmethod
    def _body(request: Mapping[str, Any]) -> bytes:
        payload = dict(request) if isinstance(request, Mapping) else request
        return json.dumps(payload, default=_jsonable).encode()

    @staticmethod
    def _frames(response: httpx.Response) -> Iterator[dict[str, Any]]:
        try:
            for line in response.iter_lines():
                if not line.strip():
                    continue
                data = json.loads(line)
                if "error" in data:  # the stream failed after its first frames
                    raise _error_class(data["error"])(data.get("message", ""))
                outputs = decode_outputs(data["outputs"])
                yield {"frame_index": data["frame_index"], "outputs": outputs}
        finally:
            response.close()


_JSON = {"Content-Type": "application/json"}
