"""Streaming and concurrency: a client that disconnects stops the work within a frame and the
session stays usable, cancel, a busy session answers 409, two clients on two sessions in
parallel get the in-process results, a slow client holds a bounded buffer only."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from test_server_harness import (
    CLIP,
    LONG,
    TOKEN,
    assert_same_outputs,
    serve,
    tiny_predictor,
    wait_for,
)

from sam3video.client import RemotePredictor
from sam3video.server.pool import ModelPool
from sam3video.server.streams import Stream

pytestmark = pytest.mark.usefixtures("one_thread")
CLICK = {"frame_index": 0, "points": [[32, 24]], "point_labels": [1]}
LONG_FRAMES = 48


def _clicked_session(http, video=LONG) -> str:
    sid = http.post("/v1/sessions", json={"resource_path": video}).json()["session_id"]
    assert http.post(f"/v1/sessions/{sid}/prompts", json=CLICK).status_code == 200
    return sid


def _propagation(http, sid):
    return http.get(f"/v1/sessions/{sid}").json()["propagation"]


def _frame_seconds(server) -> float:
    """The mean time of a streamed frame so far (the metrics' histogram)."""
    text = server.core.metrics.render()
    total = float(text.split("sam3video_frame_seconds_sum ")[1].split()[0])
    count = float(text.split("sam3video_frame_seconds_count ")[1].split()[0])
    return total / max(count, 1)


def test_a_client_that_disconnects_stops_the_work_within_a_frame(server, http):
    sid = _clicked_session(http)
    body = {"propagation_direction": "forward"}
    received = []
    with http.stream("POST", f"/v1/sessions/{sid}/propagate", json=body) as response:
        for line in response.iter_lines():
            received.append(json.loads(line))
            if len(received) == 3:
                break
        closed_at = time.monotonic()
    # leaving the block closed the connection mid-stream
    stopped = wait_for(lambda: _propagation(http, sid)["status"] != "running", timeout=10)
    stop_seconds = time.monotonic() - closed_at
    state = _propagation(http, sid)
    assert stopped and state["status"] == "disconnected"
    assert state["frames"] < LONG_FRAMES, "the propagation did not run to the end"
    frame = _frame_seconds(server)
    # within one frame (plus the poll's own requests and a loaded machine's slack)
    assert stop_seconds < 3 * frame + 0.5, (stop_seconds, frame)
    # the frames it finished keep their results
    info = http.get(f"/v1/sessions/{sid}").json()
    assert info["tracked_frames"] >= len(received)
    # a later propagation returns every frame
    with RemotePredictor(server.url, token=TOKEN) as remote:
        request = {
            "type": "propagate_in_video",
            "session_id": sid,
            "propagation_direction": "forward",
        }
        frames = [r["frame_index"] for r in remote.handle_stream_request(request)]
    assert frames == list(range(LONG_FRAMES))
    http.delete(f"/v1/sessions/{sid}")


def test_closing_the_client_generator_early_stops_the_server(server):
    with RemotePredictor(server.url, token=TOKEN) as remote:
        sid = remote.handle_request({"type": "start_session", "resource_path": LONG})["session_id"]
        remote.handle_request({"type": "add_prompt", "session_id": sid, **CLICK})
        stream = remote.handle_stream_request({"type": "propagate_in_video", "session_id": sid})
        assert next(stream)["frame_index"] == 0
        stream.close()
        assert wait_for(lambda: remote.session_info(sid)["propagation"]["status"] != "running")
        assert remote.session_info(sid)["propagation"]["status"] == "disconnected"


@pytest.mark.parametrize("how", ["route", "seed request"])
def test_cancel_and_a_busy_session(server, http, how):
    sid = _clicked_session(http)
    with http.stream("POST", f"/v1/sessions/{sid}/propagate", json={}) as response:
        lines = response.iter_lines()
        first = json.loads(next(lines))
        assert first["frame_index"] == 0
        # a second propagation on the busy session: 409, the first is untouched
        busy = http.post(
            "/v1/requests/stream", json={"type": "propagate_in_video", "session_id": sid}
        )
        assert busy.status_code == 409 and busy.json()["error"] == "SessionBusyError"
        if how == "route":
            assert http.post(f"/v1/sessions/{sid}/cancel").json() == {"cancelled": True}
        else:
            seed = {"type": "cancel_propagation", "session_id": sid}
            assert http.post("/v1/requests", json=seed).json() == {"is_success": True}
        rest = [json.loads(line) for line in lines if line]  # the stream ends after a frame
    assert 1 + len(rest) < LONG_FRAMES
    assert all("error" not in line for line in rest)
    state = wait_for(
        lambda: _propagation(http, sid)["status"] != "running" and _propagation(http, sid)
    )
    assert state["status"] == "cancelled"
    # a new propagation runs to the end
    lines = []
    with http.stream("POST", f"/v1/sessions/{sid}/propagate", json={}) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [line["frame_index"] for line in lines] == list(range(LONG_FRAMES))
    http.delete(f"/v1/sessions/{sid}")


def test_a_prompt_during_a_propagation_leaves_the_session_consistent(server, http):
    """The prompt is applied; the running stream ends with one typed error line (the
    predictor made it stale), never with a server error, and the session works after."""
    sid = _clicked_session(http)
    with http.stream("POST", f"/v1/sessions/{sid}/propagate", json={}) as response:
        lines = response.iter_lines()
        next(lines)
        click = {"frame_index": 5, "points": [[10, 10]], "point_labels": [1]}
        prompt = http.post(f"/v1/sessions/{sid}/prompts", json=click)
        assert prompt.status_code == 200
        rest = [json.loads(line) for line in lines if line]
    errors = [line for line in rest if "error" in line]
    assert len(errors) == 1 and errors[0] is rest[-1], errors
    assert errors[0]["error"] == "StaleStreamError"
    assert len(rest) < LONG_FRAMES
    assert _propagation(http, sid)["status"] == "error"
    with http.stream("POST", f"/v1/sessions/{sid}/propagate", json={}) as response:
        assert response.status_code == 200
        assert all("error" not in json.loads(line) for line in response.iter_lines() if line)
    http.delete(f"/v1/sessions/{sid}")


def _in_process(media, point) -> list:
    predictor = tiny_predictor()
    start = {"type": "start_session", "resource_path": str(media / CLIP)}
    sid = predictor.handle_request(start)["session_id"]
    click = {**CLICK, "points": [point]}
    out = [predictor.handle_request({"type": "add_prompt", "session_id": sid, **click})]
    request = {"type": "propagate_in_video", "session_id": sid}
    out += list(predictor.handle_stream_request(request))
    predictor.handle_request({"type": "close_session", "session_id": sid})
    return out


def test_two_clients_in_parallel_get_the_in_process_results(server, media):
    points = ([32, 24], [12, 36])
    expected = [_in_process(media, p) for p in points]
    results: dict[int, list] = {}
    overlap = threading.Barrier(2)

    def client(k: int) -> None:
        with RemotePredictor(server.url, token=TOKEN) as remote:
            start = {"type": "start_session", "resource_path": CLIP}
            sid = remote.handle_request(start)["session_id"]
            overlap.wait(timeout=30)  # both sessions open before either works
            click = {**CLICK, "points": [points[k]]}
            out = [remote.handle_request({"type": "add_prompt", "session_id": sid, **click})]
            out += list(
                remote.handle_stream_request({"type": "propagate_in_video", "session_id": sid})
            )
            results[k] = out

    threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == [0, 1]
    for k in range(2):
        assert len(results[k]) == len(expected[k]) == 9
        for got, want in zip(results[k], expected[k]):
            assert got["frame_index"] == want["frame_index"]
            assert_same_outputs(got["outputs"], want["outputs"])


def test_a_slow_client_does_not_block_other_sessions(server, http):
    slow = _clicked_session(http)
    with http.stream("POST", f"/v1/sessions/{slow}/propagate", json={}) as response:
        assert response.status_code == 200  # and then never read
        started = time.monotonic()
        with server.client() as other:
            sid = _clicked_session(other, CLIP)
            with other.stream("POST", f"/v1/sessions/{sid}/propagate", json={}) as fast:
                frames = [json.loads(line)["frame_index"] for line in fast.iter_lines() if line]
        assert frames == list(range(8))
        assert time.monotonic() - started < 30
    http.delete(f"/v1/sessions/{slow}")
    http.delete(f"/v1/sessions/{sid}")


def test_a_stream_computes_at_most_its_buffer_ahead_of_its_reader():
    """The producer waits for the reader: with nobody reading, exactly ``buffer`` frames are
    tracked; cancelling then closes the generator after at most one more."""

    async def scenario() -> tuple[int, int, bool, str]:
        pool = ModelPool(1)
        advanced = []
        closed = threading.Event()

        def frames():
            try:
                for i in range(100):
                    advanced.append(i)
                    yield {"frame_index": i, "outputs": {}}
            finally:
                closed.set()

        stream = Stream(
            pool,
            buffer=2,
            on_frame=lambda *a: None,
            on_end=lambda s: None,
            error_line=lambda exc: b"",
        )
        stream.start(frames())
        await asyncio.sleep(0.3)
        ahead = len(advanced)
        lines = stream.lines()
        await lines.__anext__()  # read one: room for one more frame
        await asyncio.sleep(0.3)
        after_one = len(advanced)
        stream.cancel()
        await asyncio.get_running_loop().run_in_executor(None, stream.ended.wait, 5)
        pool.shutdown()
        return ahead, after_one, closed.is_set(), stream.status

    ahead, after_one, closed, status = asyncio.run(scenario())
    assert ahead == 2 and after_one == 3
    assert closed and status == "cancelled"


def test_closing_a_session_while_it_streams_with_one_worker(media):
    """Closing waits for the frame being tracked (it needs the one model worker) and ends
    the stream; the session is gone and the server still serves."""
    with serve(media, workers=1) as server, server.client() as http:
        sid = _clicked_session(http)
        with http.stream("POST", f"/v1/sessions/{sid}/propagate", json={}) as response:
            lines = response.iter_lines()
            next(lines)
            started = time.monotonic()
            closed = http.post("/v1/requests", json={"type": "close_session", "session_id": sid})
            assert closed.json() == {"is_success": True}
            assert time.monotonic() - started < 10
            rest = [json.loads(line) for line in lines if line]
        assert len(rest) + 1 < LONG_FRAMES
        assert http.get(f"/v1/sessions/{sid}").status_code == 404
        assert sid not in server.core.predictor.session_ids
        other = _clicked_session(http, CLIP)
        assert http.delete(f"/v1/sessions/{other}").status_code == 200
