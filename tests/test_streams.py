"""Stream sessions (``start_session`` with a camera or network ``resource_path``): a short
generated video served over loopback HTTP from a thread, never a network address.

What is proven: a stream session gives the outputs of the same frames fed by ``add_frame``
(and of offline propagation without the hotstart buffer, frame 0 included);
while it waits for a frame, requests from another thread go through, a prompt does not end
it, and ``cancel_propagation`` ends it cleanly (the next propagation goes on where it
stopped); ``sam3video track URL`` writes the outputs of a file for the frames it followed,
also after Ctrl-C; sources that cannot be opened fail fast with typed one-line errors. A
webcam cannot be tested here: its code path runs on OpenCV reading a file in its place, and a
missing camera is a typed error."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from _media import decode_all, read_code, write_video
from PIL import Image

from sam3video import cli
from sam3video.errors import InvalidInputError, SourceNotFoundError, UnsupportedSourceError
from sam3video.io import streams
from sam3video.io.export import read_png_masks
from sam3video.io.streams import StreamReader, is_stream, stream_name
from sam3video.predictor import Sam3VideoPredictor

pytestmark = pytest.mark.usefixtures("one_thread")

CLIP, LONG = "clip.mp4", "long.mp4"  # 10 and 30 frames, 64x48, 25 fps


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files of the served folder; ``/gated/NAME`` sends the first half of NAME, then waits
    for ``server.gate`` before the rest (a stream that stalls)."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if not self.path.startswith("/gated/"):
            super().do_GET()
            return
        data = (Path(self.directory) / self.path.removeprefix("/gated/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        if self.server.gate.wait(30):
            self.wfile.write(data[len(data) // 2 :])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    write_video(folder / CLIP, 10, faststart=True)
    write_video(folder / LONG, 30, faststart=True, b_frames=0)
    handler = functools.partial(_Handler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.gate = threading.Event()
    httpd.folder = folder
    httpd.url = lambda name: f"http://127.0.0.1:{httpd.server_address[1]}/{name}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.gate.set()
    httpd.shutdown()


def _start(p, resource_path: str) -> str:
    return p.handle_request({"type": "start_session", "resource_path": resource_path})[
        "session_id"
    ]


def _follow(p, sid: str, **fields) -> dict[int, dict]:
    request = {"type": "propagate_in_video", "session_id": sid, **fields}
    return {r["frame_index"]: r["outputs"] for r in p.handle_stream_request(request)}


def _same(a, b, where):
    assert sorted(a) == sorted(b), f"{where}: ids {sorted(a)} vs {sorted(b)}"
    for i in a:
        assert np.array_equal(a[i]["mask"], b[i]["mask"]), f"{where}, object {i}"
        assert a[i]["score"] == pytest.approx(b[i]["score"], abs=1e-6)


def test_is_stream_and_names():
    assert all(map(is_stream, ["webcam:0", "rtsp://h/x", "HTTPS://h/a.mp4", "udp://h:1"]))
    assert not any(map(is_stream, ["video.mp4", "/data/frames", "ftp://h/a.mp4", None]))
    assert stream_name("http://u:pw@h:8/live/clip.mp4?x=1") == "clip"
    assert stream_name("webcam:1") == "webcam1" and stream_name("rtsp://cam.local") == "cam.local"


def test_a_stream_session_gives_the_outputs_of_add_frame(predictor, server, tmp_path):
    p = predictor
    sid = _start(p, server.url(CLIP))
    info = p.session_info(sid)
    assert (info["num_frames"], info["video_size"], info["fps"]) == (1, (48, 64), 25.0)
    prompt = p.handle_request(
        {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": "x"}
    )["outputs"]
    streamed = _follow(p, sid)  # "both" (the default) follows forward
    assert list(streamed) == list(range(10))
    assert [read_code(p.get_session(sid).frames[i]) for i in range(10)] == list(range(10))
    assert _follow(p, sid) == {}, "the stream has ended"

    frames = decode_all(server.folder / CLIP)  # the same frames, fed one by one
    lsid = p.handle_request({"type": "start_session", "live": True})["session_id"]
    p.handle_request({"type": "add_frame", "session_id": lsid, "frame": frames[0]})
    expected = p.handle_request(
        {"type": "add_prompt", "session_id": lsid, "frame_index": 0, "text": "x"}
    )["outputs"]
    _same(prompt, expected, "prompt")
    for i in range(1, 10):  # frame 0's re-step (after the prompt) is not returned by add_frame
        reply = p.handle_request({"type": "add_frame", "session_id": lsid, "frame": frames[i]})
        _same(streamed[i], reply["outputs"], f"frame {i}")
    assert any(streamed.values()), "the scenario tracks something"

    # Offline propagation over the same frames, hotstart buffer off: frame 0 included.
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    offline = Sam3VideoPredictor(model_config="tiny", device="cpu", model=p.model)
    offline.heuristics = dataclasses.replace(offline.heuristics, hotstart_delay=0)
    osid = _start(offline, str(folder))
    offline.handle_request(
        {"type": "add_prompt", "session_id": osid, "frame_index": 0, "text": "x"}
    )
    for i, outputs in _follow(offline, osid, propagation_direction="forward").items():
        _same(streamed[i], outputs, f"offline frame {i}")
    offline.shutdown()

    reader = p.get_session(sid).reader
    for sess in (sid, lsid):
        p.handle_request({"type": "close_session", "session_id": sess})
    reader._thread.join(2)
    assert not reader._thread.is_alive(), "closing the session stops its reader"


def test_max_frames_and_misuse_of_a_stream_session(predictor, server):
    p = predictor
    sid = _start(p, server.url(CLIP))
    session = p.get_session(sid)
    for request, message in [
        ({"type": "add_frame", "frame": np.zeros((48, 64, 3), np.uint8)}, "^add_frame: "),
        ({"type": "propagate_in_video", "propagation_direction": "backward"}, "^propagation_"),
        ({"type": "propagate_in_video", "start_frame_index": 0}, "^start_frame_index: "),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            request = {**request, "session_id": sid}
            if request["type"] == "add_frame":
                p.handle_request(request)
            else:
                p.handle_stream_request(request)
    assert len(session.frames) == 1, "nothing changed"
    # As offline: the first frame and max_frame_num_to_track more.
    assert list(_follow(p, sid, max_frame_num_to_track=3)) == [0, 1, 2, 3]
    assert list(_follow(p, sid, max_frame_num_to_track=0)) == [4]
    assert list(_follow(p, sid)) == list(range(5, 10))
    p.handle_request({"type": "close_session", "session_id": sid})


def test_requests_while_the_stream_waits_and_cancel(predictor, server):
    p = predictor
    sid = _start(p, server.url("gated/" + LONG))
    p.handle_request({"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": "x"})
    got: list[int] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for r in p.handle_stream_request({"type": "propagate_in_video", "session_id": sid}):
                got.append(r["frame_index"])
        except BaseException as error:  # noqa: BLE001 (reported by the test)
            errors.append(error)

    consumer = threading.Thread(target=consume)
    consumer.start()
    deadline, seen = time.monotonic() + 30, -1
    while time.monotonic() < deadline:  # until the stream stalls at the gate
        time.sleep(0.5)
        if got and len(got) == seen:
            break
        seen = len(got)
    assert got and consumer.is_alive() and not errors
    assert len(got) < 30, "the gate holds the second half back"

    start = time.perf_counter()
    reply = p.handle_request(
        {
            "type": "add_prompt",
            "session_id": sid,
            "frame_index": got[-1],
            "points": [[30, 30]],
            "point_labels": [1],
        }
    )
    assert time.perf_counter() - start < 2, "a waiting stream holds no lock"
    time.sleep(0.2)
    assert consumer.is_alive() and not errors, "a prompt does not end a stream"

    p.handle_request({"type": "cancel_propagation", "session_id": sid})
    consumer.join(5)
    assert not consumer.is_alive() and not errors, "cancel ends the stream cleanly"
    assert got == list(range(len(got)))

    server.gate.set()
    rest = _follow(p, sid)
    assert list(rest) == list(range(len(got), 30)), "the next propagation goes on"
    assert reply["frame_index"] == got[-1]
    assert set(p.session_info(sid)["obj_ids"]) >= set(reply["outputs"])
    p.handle_request({"type": "close_session", "session_id": sid})


def _track_argv(url: str, out: Path, *extra: str) -> list[str]:
    return [
        "track", url, "--model", "tiny", "--device", "cpu", "--text", "x", "--threads", "1",
        "--format", "ytvis,png,overlay", "--out", str(out), *extra,
    ]  # fmt: skip


def _written(out: Path) -> tuple[int, list[int], int]:
    """Frames in results.json, the PNG frames, and the frames of overlay.mp4."""
    data = json.loads((out / "results.json").read_text())
    with av.open(str(out / "overlay.mp4")) as container:
        overlay = sum(1 for _ in container.decode(video=0))
    return data["videos"][0]["length"], sorted(read_png_masks(out / "masks")), overlay


def test_track_follows_a_stream_for_max_frames(server, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(_track_argv(server.url(CLIP), out, "--max-frames", "5")) == 0
    assert _written(out) == (5, [0, 1, 2, 3, 4], 5)
    assert "frames   5 of 5" in capsys.readouterr().out


class _Interrupting:
    """A predictor whose stream sends SIGINT to this process after ``after`` frames."""

    def __init__(self, predictor: Sam3VideoPredictor, after: int) -> None:
        self.predictor, self.after = predictor, after
        self.handle_request = predictor.handle_request
        self.get_session = predictor.get_session

    def handle_stream_request(self, request):
        for k, item in enumerate(self.predictor.handle_stream_request(request)):
            if k == self.after:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the KeyboardInterrupt arrives first
            yield item


def test_ctrl_c_keeps_every_frame_followed(predictor, server, tmp_path, capsys):
    out = tmp_path / "out"
    args = cli.build_parser().parse_args(_track_argv(server.url(CLIP), out, "--quiet"))
    assert cli.run_track(args, predictor=_Interrupting(predictor, 3)) == 130
    assert _written(out) == (3, [0, 1, 2], 3)
    assert "interrupted after 3 frames tracked; saved 3 frames" in capsys.readouterr().err
    assert predictor.session_ids == [], "the session is closed"


def test_sources_that_cannot_be_opened_fail_fast(predictor, server, tmp_path, capsys):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{free.getsockname()[1]}/x.mp4"
    for url, error, message in [
        (server.url("missing.mp4"), SourceNotFoundError, "404 Not Found"),
        (refused, SourceNotFoundError, "cannot be opened: Connection refused"),
        ("webcam:99", SourceNotFoundError, "no camera 'webcam:99' could be opened"),
        ("webcam:first", UnsupportedSourceError, "expected webcam:N"),
    ]:
        start = time.perf_counter()
        with pytest.raises(error, match=message) as caught:
            _start(predictor, url)
        assert time.perf_counter() - start < 2 and "\n" not in str(caught.value)
    assert predictor.session_ids == []

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.perf_counter()
        with pytest.raises(SourceNotFoundError, match="did not answer within 1 s"):
            StreamReader(f"http://127.0.0.1:{silent.getsockname()[1]}/x.mp4", open_timeout=1)
        assert time.perf_counter() - start < 3

    out = tmp_path / "out"
    assert cli.main(_track_argv(server.url("missing.mp4"), out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sam3video: error: resource_path: ") and "404" in err[-1]
    assert not out.exists(), "nothing is left behind"


def test_webcam_path_reads_on_a_thread_and_drops_the_oldest(server, predictor, monkeypatch):
    # No camera here: OpenCV reads the clip in its place, through the webcam code path.
    clip, capture = str(server.folder / CLIP), cv2.VideoCapture
    monkeypatch.setattr(streams.cv2, "VideoCapture", lambda index: capture(clip))
    reference = decode_all(server.folder / CLIP)
    with StreamReader("webcam:0") as reader:
        assert reader.drop_oldest and reader.fps == 25.0
        deadline = time.monotonic() + 10
        while reader.dropped < 8 and time.monotonic() < deadline:  # a slow consumer
            time.sleep(0.05)
        frames = []
        while (frame := reader.read(timeout=5)) is not None:
            frames.append(frame)
    assert [read_code(f) for f in frames] == [8, 9], "the newest frames are kept"
    assert reader.dropped == 8
    assert np.abs(frames[0].astype(int) - reference[8]).mean() < 3, "RGB, not BGR"

    sid = _start(predictor, "webcam:0")
    info = predictor.session_info(sid)
    assert info["num_frames"] == 1 and info["video_size"] == (48, 64)
    predictor.handle_request({"type": "close_session", "session_id": sid})


def test_the_json_of_a_stream_grows_with_it(tmp_path):
    from sam3video.cli.growing import GrowingYtvisWriter
    from sam3video.io.export import read_ytvis

    mask = np.zeros((48, 64), bool)
    mask[4:9, 2:7] = True
    with GrowingYtvisWriter(tmp_path / "results.json", "cam", 48, 64, room=4) as writer:
        for t in range(11):  # past the room twice; object 3 on even frames
            writer.write(t, {3: {"mask": mask, "score": 0.5}} if t % 2 == 0 else {})
    data = read_ytvis(tmp_path / "results.json")
    assert data["videos"][0]["length"] == 11 and len(data["videos"][0]["file_names"]) == 11
    (annotation,) = data["annotations"]
    assert [b is not None for b in annotation["bboxes"]] == [t % 2 == 0 for t in range(11)]
    assert annotation["bboxes"][10] == [2.0, 4.0, 5.0, 5.0] and annotation["areas"][10] == 25.0
    assert len(annotation["segmentations"]) == len(annotation["per_frame_scores"]) == 11
