"""The server over raw HTTP: the seed protocol verbatim, the resource routes, the JSON mask
format, the YTVIS export, health, metrics and the OpenAPI schema.

A real uvicorn server on a loopback port, the tiny model on synthetic weights.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from _media import read_code, write_video
from test_server_harness import (
    CLIP,
    FRAMES,
    H,
    W,
    assert_same_outputs,
    tiny_predictor,
)

from sam3video.server.rle import decode_outputs

pytestmark = pytest.mark.usefixtures("one_thread")


def _seed(http, **request) -> dict:
    response = http.post("/v1/requests", json=request)
    assert response.status_code == 200, response.text
    return response.json()


def _stream_lines(http, path: str, body: dict) -> list[dict]:
    with http.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line]


def _check_json_outputs(outputs: dict, size=(H, W)) -> None:
    """The JSON mask format: string ids, COCO RLE strings, float scores, int boxes."""
    for key, out in outputs.items():
        assert key.isdigit()
        assert set(out) == {"mask", "score", "bbox", "concept"}
        assert out["mask"]["size"] == list(size) and isinstance(out["mask"]["counts"], str)
        assert isinstance(out["score"], float)
        assert len(out["bbox"]) == 4 and all(isinstance(v, int) for v in out["bbox"])


def test_the_seed_protocol_verbatim_equals_the_predictor(http, media):
    sid = _seed(http, type="start_session", resource_path=CLIP)["session_id"]
    click = {"frame_index": 0, "points": [[20, 30]], "point_labels": [1]}
    response = _seed(http, type="add_prompt", session_id=sid, **click)
    assert response["frame_index"] == 0
    _check_json_outputs(response["outputs"])
    lines = _stream_lines(
        http, "/v1/requests/stream", {"type": "propagate_in_video", "session_id": sid}
    )
    assert [line["frame_index"] for line in lines] == list(range(8))
    for line in lines:
        assert set(line) == {"frame_index", "outputs"}
        _check_json_outputs(line["outputs"])

    # the same requests in process give the same masks
    predictor = tiny_predictor()
    local = predictor.handle_request({"type": "start_session", "resource_path": str(media / CLIP)})[
        "session_id"
    ]
    expected = predictor.handle_request({"type": "add_prompt", "session_id": local, **click})
    assert_same_outputs(decode_outputs(response["outputs"]), expected["outputs"])
    stream = predictor.handle_stream_request({"type": "propagate_in_video", "session_id": local})
    for line, frame in zip(lines, stream, strict=True):
        assert line["frame_index"] == frame["frame_index"]
        assert_same_outputs(decode_outputs(line["outputs"]), frame["outputs"])
    predictor.handle_request({"type": "close_session", "session_id": local})

    assert _seed(http, type="remove_object", session_id=sid, obj_id=0) == {"is_success": True}
    assert _seed(http, type="reset_session", session_id=sid) == {"is_success": True}
    assert _seed(http, type="close_session", session_id=sid) == {"is_success": True}
    assert _seed(http, type="close_session", session_id=sid) == {"is_success": True}  # idempotent


def test_resource_routes(http, media):
    created = http.post("/v1/sessions", json={"resource_path": FRAMES})
    assert created.status_code == 201, created.text
    info = created.json()
    sid = info["session_id"]
    assert info["resource"] == FRAMES
    assert (info["num_frames"], info["height"], info["width"]) == (8, H, W)
    assert info["obj_ids"] == [] and info["propagation"] is None

    # frames come back as JPEG, the right frame each time (the frames carry their index)
    for index in (0, 5, 7):
        frame = http.get(f"/v1/sessions/{sid}/frames/{index}")
        assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
        bgr = cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR)
        assert bgr.shape == (H, W, 3) and read_code(bgr[..., ::-1]) == index

    click = {"frame_index": 2, "points": [[40, 30]], "point_labels": [1]}
    prompt = http.post(f"/v1/sessions/{sid}/prompts", json=click)
    assert prompt.status_code == 200, prompt.text
    assert list(prompt.json()["outputs"]) == ["0"]
    click = {"frame_index": 2, "points": [[10, 40]], "point_labels": [1]}
    second = http.post(f"/v1/sessions/{sid}/prompts", json=click).json()
    assert sorted(second["outputs"]) == ["0", "1"]

    lines = _stream_lines(
        http, f"/v1/sessions/{sid}/propagate", {"propagation_direction": "forward"}
    )
    assert [line["frame_index"] for line in lines] == list(range(2, 8))
    info = http.get(f"/v1/sessions/{sid}").json()
    assert info["obj_ids"] == [0, 1] and info["propagation"] == {"status": "done", "frames": 6}
    assert info["tracked_frames"] == 6 and info["memory"]["tracker_bytes"] > 0

    # the export holds what was tracked so far, masks as streamed
    export = http.get(f"/v1/sessions/{sid}/export", params={"format": "ytvis"})
    assert export.status_code == 200
    assert "attachment" in export.headers["content-disposition"]
    data = export.json()
    assert data["videos"][0]["length"] == 8 and data["videos"][0]["width"] == W
    by_obj = {a["obj_id"]: a for a in data["annotations"]}
    for line in lines:
        t = line["frame_index"]
        for key, out in line["outputs"].items():
            assert by_obj[int(key)]["segmentations"][t] == out["mask"]
    assert all(a["segmentations"][0] is None for a in data["annotations"])  # never tracked

    removed = http.delete(f"/v1/sessions/{sid}/objects/1")
    assert removed.json() == {"is_success": True}
    assert http.get(f"/v1/sessions/{sid}").json()["obj_ids"] == [0]
    export = http.get(f"/v1/sessions/{sid}/export").json()
    assert [a["obj_id"] for a in export["annotations"]] == [0]

    assert http.post(f"/v1/sessions/{sid}/reset").json() == {"is_success": True}
    info = http.get(f"/v1/sessions/{sid}").json()
    assert info["obj_ids"] == [] and info["tracked_frames"] == 0
    assert http.post(f"/v1/sessions/{sid}/cancel").json() == {"cancelled": False}
    assert http.delete(f"/v1/sessions/{sid}").json() == {"is_success": True}
    assert http.get(f"/v1/sessions/{sid}").status_code == 404


def test_upload_a_video(http, tmp_path):
    video = write_video(tmp_path / "mine.mp4", 5)
    with open(video, "rb") as handle:
        created = http.post("/v1/sessions", files={"file": ("mine.mp4", handle, "video/mp4")})
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["resource"] == "mine.mp4" and info["num_frames"] == 5
    sid = info["session_id"]
    assert http.delete(f"/v1/sessions/{sid}").status_code == 200


def test_upload_is_removed_with_its_session(server, http, tmp_path):
    video = write_video(tmp_path / "gone.mp4", 3)
    with open(video, "rb") as handle:
        sid = http.post("/v1/sessions", files={"file": ("gone.mp4", handle)}).json()["session_id"]
    store = server.core.uploads.root
    assert any(store.rglob("gone.mp4"))
    http.delete(f"/v1/sessions/{sid}")
    assert not any(store.rglob("gone.mp4"))
    bad = http.post("/v1/sessions", files={"file": ("notes.txt", b"hello")})
    assert bad.status_code == 400 and bad.json()["field"] == "file"


def test_media_listing_health_metrics_and_docs(server, http):
    listing = http.get("/v1/media").json()
    assert {"path": CLIP, "kind": "video"} in listing
    assert {"path": FRAMES, "kind": "frames"} in listing

    health = http.get("/healthz").json()
    assert health["status"] == "ok" and health["device"] == "cpu"

    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    for name in (
        "sam3video_sessions ",
        "sam3video_frames_tracked_total ",
        "sam3video_request_duration_seconds_bucket",
        'route="/v1/requests"',
    ):
        assert name in text, name

    schema = http.get("/openapi.json").json()
    schemas = schema["components"]["schemas"]
    for model in ("AddPromptRequest", "StartSessionRequest", "FrameOutputs", "SessionInfo"):
        assert model in schemas, model
    body = schema["paths"]["/v1/requests"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["discriminator"]["propertyName"] == "type"
    assert http.get("/docs").status_code == 200
    page = http.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert http.get("/static/app.js").status_code == 200


@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (48, 64), (7, 1), (1, 9), (270, 480)])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
def test_rle_matches_pycocotools_both_ways(shape, density):
    import warnings

    from pycocotools import mask as mask_utils

    from sam3video.server.rle import decode_mask, encode_mask

    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    mask = rng.random(shape) < density
    rle = encode_mask(mask)
    coco = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle == {"size": list(shape), "counts": coco["counts"].decode()}
    decoded = decode_mask(rle)
    assert decoded.dtype == np.bool_ and decoded.flags.c_contiguous
    assert np.array_equal(decoded, mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools under numpy 2
        assert np.array_equal(mask_utils.decode(coco).astype(bool), mask)
    assert np.array_equal(decode_mask(encode_mask(mask.T)), mask.T)  # a non-contiguous view
