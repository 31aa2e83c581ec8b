"""The server's limits and access rules: tokens (401), the media root (403, symlinks too),
unknown ids (404 naming no other session), bad input (400 naming the field), the session limit
(429), body limits (413), idle expiry, and no unauthenticated bind beyond loopback."""

from __future__ import annotations

import os
import time

import pytest
from _media import write_video
from test_server_harness import CLIP, FRAMES, TOKEN, make_media, serve, wait_for

from sam3video.errors import InvalidInputError
from sam3video.server.cli import main as serve_main
from sam3video.server.config import check_bind, is_loopback

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """``media/`` (the root) beside ``outside/`` (a video it must not reach), with links."""
    base = tmp_path_factory.mktemp("layout")
    media = make_media(base / "media")
    outside = base / "outside"
    outside.mkdir()
    write_video(outside / "secret.mp4", 3)
    os.symlink(outside / "secret.mp4", media / "link.mp4")  # a file link out
    os.symlink(outside, media / "linked_dir")  # a folder link out
    os.symlink(media / CLIP, media / "inner_link.mp4")  # a link that stays inside
    leaky = media / "leaky_frames"
    leaky.mkdir()
    for i in range(2):
        os.symlink(media / FRAMES / f"{i:05d}.jpg", leaky / f"{i:05d}.jpg")
    os.symlink(outside / "secret.mp4", leaky / "00002.jpg")  # one frame links out
    return base


@pytest.fixture(scope="module")
def server(layout):
    with serve(layout / "media", max_sessions=3, max_upload_mb=0.05) as running:
        yield running


@pytest.fixture
def http(server):
    with server.client() as client:
        yield client


def _start(http, path):
    return http.post("/v1/requests", json={"type": "start_session", "resource_path": path})


def _close_all(server):
    for sid in server.core.registry.ids():
        server.core.close_session(sid)


def test_tokens(server):
    body = {"type": "start_session", "resource_path": CLIP}
    with server.client(token=None) as anonymous:
        for method, path in (
            ("POST", "/v1/requests"),
            ("POST", "/v1/requests/stream"),
            ("GET", "/v1/sessions/x"),
            ("GET", "/v1/media"),
            ("GET", "/metrics"),
        ):
            response = anonymous.request(method, path, json=body)
            assert response.status_code == 401, path
            assert response.json()["error"] == "AuthError"
            assert response.headers["www-authenticate"] == "Bearer"
        # open: health, the page and its script (they hold no data), the docs
        for path in ("/healthz", "/", "/static/app.js", "/docs", "/openapi.json"):
            assert anonymous.get(path).status_code == 200, path
    with server.client(token="wrong") as wrong:
        assert wrong.post("/v1/requests", json=body).status_code == 401
    with server.client(token=TOKEN + "x") as longer:
        assert longer.post("/v1/requests", json=body).status_code == 401


@pytest.mark.parametrize(
    "path",
    [
        "../outside/secret.mp4",
        f"{CLIP}/../../outside/secret.mp4",
        "link.mp4",  # a symlink pointing out
        "linked_dir/secret.mp4",  # through a linked folder
        "leaky_frames",  # a frame folder with one entry linking out
        "/etc/passwd",
        "/",
    ],
)
def test_paths_outside_the_media_root_are_forbidden(http, layout, path):
    response = _start(http, path)
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "ForbiddenPathError" and body["field"] == "resource_path"
    assert str(layout) not in response.text  # no server path in the answer
    # the resource route applies the same rule
    assert http.post("/v1/sessions", json={"resource_path": path}).status_code == 403


def test_absolute_paths_outside_the_root_are_forbidden_whether_they_exist_or_not(http, layout):
    answers = []
    for path in (layout / "outside" / "secret.mp4", layout / "outside" / "missing.mp4"):
        response = _start(http, str(path))
        assert response.status_code == 403
        answers.append(response.text.replace(path.name, "NAME"))
    assert answers[0] == answers[1]  # nothing tells whether the file exists


def test_paths_inside_the_root(server, http, layout):
    for path in (CLIP, str(layout / "media" / CLIP), "inner_link.mp4", f"./{FRAMES}"):
        response = _start(http, path)
        assert response.status_code == 200, (path, response.text)
        _close_all(server)
    missing = _start(http, "missing.mp4")
    assert missing.status_code == 404
    assert missing.json()["error"] == "SourceNotFoundError"
    assert missing.json()["field"] == "resource_path"
    assert str(layout) not in missing.text
    _close_all(server)


def test_unknown_ids_name_no_other_session(server, http):
    mine = _start(http, CLIP).json()["session_id"]
    other = _start(http, CLIP).json()["session_id"]
    probes = [
        (
            "POST",
            "/v1/requests",
            {"type": "add_prompt", "session_id": "nope", "frame_index": 0, "text": "a"},
        ),
        ("POST", "/v1/requests", {"type": "reset_session", "session_id": mine[:-1]}),
        ("POST", "/v1/requests/stream", {"type": "propagate_in_video", "session_id": "nope"}),
        ("GET", "/v1/sessions/nope", None),
        ("GET", "/v1/sessions/nope/frames/0", None),
        ("DELETE", "/v1/sessions/nope", None),
        ("GET", "/v1/sessions/nope/export", None),
    ]
    for method, path, body in probes:
        response = http.request(method, path, json=body)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == "UnknownIdError"
        assert response.json()["field"] == "session_id"
        assert mine not in response.text and other not in response.text, path
    # an unknown object of my session: 404 about obj_id, naming no session
    response = http.delete(f"/v1/sessions/{mine}/objects/7")
    assert response.status_code == 404 and response.json()["field"] == "obj_id"
    assert other not in response.text
    # an id in use, asked for by another client: the answer does not confirm the other id
    taken = http.post(
        "/v1/requests", json={"type": "start_session", "resource_path": CLIP, "session_id": other}
    )
    assert taken.status_code == 400 and taken.json()["field"] == "session_id"
    _close_all(server)


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"{not json", "body"),
        (
            b'{"type": "add_prompt", "session_id": "S", "frame_index": "0", "text": "a"}',
            "frame_index",
        ),
        (b'{"type": "add_prompt", "session_id": "S", "frame_idx": 0, "text": "a"}', "frame_idx"),
        (b'{"type": "add_prompt", "session_id": "S", "frame_index": 0}', "add_prompt"),
        (
            b'{"type": "add_prompt", "session_id": "S", "frame_index": 0, "points": [1, 2],'
            b' "point_labels": [1]}',
            "points",
        ),
        (b'{"type": "add_prompt", "session_id": "S", "frame_index": 0, "text": 3}', "text"),
        (b'{"type": "start_session", "resource_path": 5}', "resource_path"),
        (b'{"type": "start_session", "resource_path": "a\\u0000b.mp4"}', "resource_path"),
        (b'{"type": "start_sesion", "resource_path": "x"}', "type"),
        (b"[1, 2]", "request"),
        (b'"start_session"', "request"),
    ],
)
def test_bad_input_is_400_naming_the_field(server, http, content, field):
    sid = _start(http, CLIP).json()["session_id"]
    response = http.post(
        "/v1/requests",
        content=content.replace(b'"S"', f'"{sid}"'.encode()),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] in ("InvalidInputError", "FrameIndexError")
    if field == "add_prompt":  # a missing field is named in the message
        assert body["field"] is None or body["field"] == "text"
        assert "at least one" in body["message"] or "text" in body["message"]
    else:
        assert body["field"] == field, body
    assert "Traceback" not in response.text
    _close_all(server)


def test_bad_path_parameters_and_resource_bodies_are_400(server, http):
    sid = _start(http, CLIP).json()["session_id"]
    response = http.delete(f"/v1/sessions/{sid}/objects/abc")
    assert response.status_code == 400 and response.json()["field"] == "obj_id"
    response = http.get(f"/v1/sessions/{sid}/frames/-1")
    assert response.status_code == 400 and response.json()["field"] == "frame_index"
    response = http.post(f"/v1/sessions/{sid}/prompts", json={"frame_index": 0, "type": "x"})
    assert response.status_code == 400 and response.json()["field"] == "type"
    response = http.post(f"/v1/sessions/{sid}/prompts", json=[1])
    assert response.status_code == 400 and response.json()["field"] == "body"
    response = http.post(f"/v1/sessions/{sid}/propagate", json={"direction": "forward"})
    assert response.status_code == 400 and response.json()["field"] == "direction"
    response = http.get(f"/v1/sessions/{sid}/export", params={"format": "coco"})
    assert response.status_code == 400 and response.json()["field"] == "format"
    _close_all(server)


def test_the_session_limit_is_429(server, http):
    sids = [_start(http, CLIP).json()["session_id"] for _ in range(3)]
    response = _start(http, CLIP)
    assert response.status_code == 429
    assert response.json()["error"] == "TooManySessionsError"
    assert not any(sid in response.text for sid in sids)
    assert http.post("/v1/sessions", json={"resource_path": CLIP}).status_code == 429
    http.post("/v1/requests", json={"type": "close_session", "session_id": sids[0]})
    assert _start(http, CLIP).status_code == 200  # a place is free again
    _close_all(server)


def test_bodies_over_the_limit_are_413(server, http, layout):
    big = os.urandom(100_000)  # over this server's 0.05 MB; rejected before it is read
    response = http.post("/v1/sessions", files={"file": ("big.mp4", big, "video/mp4")})
    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLargeError"
    # streamed without a Content-Length: stopped while reading
    chunks = (b"x" * 8192 for _ in range(16))
    response = http.post(
        "/v1/requests", content=chunks, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert not list(server.core.uploads.root.iterdir())  # nothing left behind
    assert len(server.core.registry) == 0


def test_idle_sessions_expire(layout):
    # Margins of seconds, not milliseconds: on a loaded 2-core machine one request can take
    # a few hundred milliseconds.
    with serve(layout / "media", session_ttl=3.0) as server, server.client() as http:
        sid = _start(http, CLIP).json()["session_id"]
        assert http.get(f"/v1/sessions/{sid}").status_code == 200  # use keeps it alive
        time.sleep(1.0)
        assert http.get(f"/v1/sessions/{sid}").status_code == 200
        time.sleep(4.5)
        response = http.get(f"/v1/sessions/{sid}")
        assert response.status_code == 404 and sid in response.text  # the caller's own id
        assert wait_for(lambda: sid not in server.core.predictor.session_ids, timeout=5)
        assert "sam3video_sessions_expired_total 1" in http.get("/metrics").text


def test_no_unauthenticated_bind_beyond_loopback(monkeypatch, capsys):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "secret")
    with pytest.raises(InvalidInputError, match="token"):
        check_bind("0.0.0.0", None)
    monkeypatch.delenv("SAM3VIDEO_TOKEN", raising=False)
    assert serve_main(["--host", "0.0.0.0", "--model", "tiny"]) == 2  # before loading anything
    assert "--token" in capsys.readouterr().err
