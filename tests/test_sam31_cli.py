"""SAM 3.1 through the commands: ``track``, ``serve``, ``batch`` and ``info`` with
``--model sam3.1-tiny`` (synthetic weights: meaningless but deterministic masks, so what a
command writes or serves is compared exactly with the same requests run in this process).

The synthetic 3.1 detector finds nothing for a text prompt, so each run adds a click (a new
object, which the 3.1 session serves) after the text, as ``track --text --points`` does.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import warnings

import numpy as np
import pytest
import torch
from _media import VIDEOS, write_video
from test_cli import CLI, clean_env, start_cli

from sam3video import checkpoints, cli
from sam3video.cli.args import MODEL_CHOICES, build_parser
from sam3video.cli.runs import prompt_requests
from sam3video.io.export import decode_ytvis_masks, read_png_masks, read_ytvis
from sam3video.model.config import PRESETS
from sam3video.model.weights import synthetic_state_dict

VIDEO = VIDEOS / "bikes.mp4"  # 640x272, 250 frames
MAX_FRAMES = 6
TRACK_ARGS = ["--text", "bike", "--points", "320,180", "--max-frames", str(MAX_FRAMES),
              "--direction", "forward"]  # fmt: skip


def _predictor(config: str = "sam3.1-tiny", **kwargs):
    from sam3video import Sam3VideoPredictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Sam3VideoPredictor(model_config=config, device="cpu", **kwargs)


def _api_track(argv: list[str]) -> dict[int, dict]:
    """``track``'s requests (`prompt_requests`) in process: the last result of each frame."""
    args = build_parser().parse_args(["track", *argv])
    predictor = _predictor()
    sid = predictor.handle_request({"type": "start_session", "resource_path": str(VIDEO)})[
        "session_id"
    ]
    results: dict[int, dict] = {}
    for request in prompt_requests(args, sid):
        reply = predictor.handle_request(request)
        results[reply["frame_index"]] = reply["outputs"]
        stream = predictor.handle_stream_request(
            {
                "type": "propagate_in_video",
                "session_id": sid,
                "propagation_direction": "forward",
                "start_frame_index": 0,
                "max_frame_num_to_track": MAX_FRAMES - 1,
            }
        )
        for item in stream:
            results[item["frame_index"]] = item["outputs"]
    predictor.handle_request({"type": "close_session", "session_id": sid})
    return results


# --------------------------------------------------------------------- one list of choices


def test_every_command_offers_the_config_presets():
    assert set(MODEL_CHOICES) == set(PRESETS) >= {"full", "tiny", "sam3.1", "sam3.1-tiny"}
    parser = build_parser()
    for command in (
        ["track", "v.mp4", "--text", "x"],
        ["info"],
        ["serve"],
        ["batch", "m.jsonl", "--out", "runs"],
    ):
        for model in MODEL_CHOICES:
            assert parser.parse_args([*command, "--model", model]).model == model, command
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--model", "sam4"])


# --------------------------------------------------------------------- track


def test_track_sam31_tiny_writes_the_api_results(tmp_path):
    out = tmp_path / "out"
    argv = [str(VIDEO), *TRACK_ARGS, "--format", "ytvis,png", "--out", str(out)]
    proc = start_cli(["track", *argv, "--model", "sam3.1-tiny", "--device", "cpu"], tmp_path)
    try:
        expected = _api_track(argv)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "loading the sam3.1-tiny model" in stderr and "SYNTHETIC weights" in stderr
    objects = {i for outputs in expected.values() for i in outputs}
    assert objects, "the click makes an object"
    assert f"objects  {len(objects)}" in stdout
    assert sorted(expected) == list(range(MAX_FRAMES))
    masks = decode_ytvis_masks(read_ytvis(out / "results.json"))
    pngs = read_png_masks(out / "masks")
    for t, outputs in expected.items():
        assert sorted(masks[t]) == sorted(outputs) == sorted(pngs[t]), f"frame {t}"
        for obj_id, result in outputs.items():
            assert np.array_equal(masks[t][obj_id], result["mask"]), f"frame {t} {obj_id}"
            assert np.array_equal(pngs[t][obj_id], result["mask"]), f"frame {t} {obj_id}"


# --------------------------------------------------------------------- serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_sam31_tiny_over_http(tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from sam3video.server.rle import decode_outputs

    media = tmp_path / "media"
    media.mkdir()
    write_video(media / "clip.mp4", 8)
    port = _free_port()
    argv = ["serve", "--model", "sam3.1-tiny", "--device", "cpu", "--port", str(port),
            "--media-root", str(media), "--log-level", "warning"]  # fmt: skip
    proc = start_cli(argv, tmp_path)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, proc.communicate()[1]
                try:
                    health = http.get("/healthz").json()
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.2)
            assert health["status"] == "ok" and health["model"] == "sam3.1-tiny (sam3.1)"

            def seed(**request):
                response = http.post("/v1/requests", json=request)
                assert response.status_code == 200, response.text
                return response.json()

            sid = seed(type="start_session", resource_path="clip.mp4")["session_id"]
            text = {"frame_index": 0, "text": "bicycle"}
            click = {"frame_index": 0, "points": [[20, 30]], "point_labels": [1]}
            replies = [seed(type="add_prompt", session_id=sid, **p) for p in (text, click)]
            body = {"type": "propagate_in_video", "session_id": sid}
            with http.stream("POST", "/v1/requests/stream", json=body) as response:
                assert response.status_code == 200, response.read()
                lines = [json.loads(line) for line in response.iter_lines() if line]
            # several concepts in one prompt: served on 3.1 too (docs/sam31_video_logic.md 9)
            several = http.post(
                "/v1/requests",
                json={
                    "type": "add_prompt",
                    "session_id": sid,
                    "frame_index": 0,
                    "text": ["a", "b"],
                },  # fmt: skip
            )
            assert several.status_code == 200, several.text
            assert seed(type="close_session", session_id=sid) == {"is_success": True}
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()

    assert [line["frame_index"] for line in lines] == list(range(8))
    predictor = _predictor()
    local = predictor.handle_request(
        {"type": "start_session", "resource_path": str(media / "clip.mp4")}
    )["session_id"]
    for reply, prompt in zip(replies, (text, click), strict=True):
        expected = predictor.handle_request({"type": "add_prompt", "session_id": local, **prompt})
        _assert_same(decode_outputs(reply["outputs"]), expected["outputs"])
    assert replies[1]["outputs"], "the click makes an object"
    stream = predictor.handle_stream_request({"type": "propagate_in_video", "session_id": local})
    for line, frame in zip(lines, stream, strict=True):
        assert line["frame_index"] == frame["frame_index"]
        _assert_same(decode_outputs(line["outputs"]), frame["outputs"])
    predictor.handle_request({"type": "close_session", "session_id": local})


def _assert_same(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for obj_id, out in expected.items():
        assert np.array_equal(got[obj_id]["mask"], out["mask"]), f"object {obj_id}"
        assert got[obj_id]["score"] == pytest.approx(out["score"], abs=1e-6)


def test_serve_reports_the_version_the_checkpoint_picked(tmp_path):
    """``--model tiny`` with a 3.1 checkpoint builds the 3.1 model: /healthz says so."""
    from sam3video.server.cli import model_name

    path = tmp_path / "v31.pt"
    torch.save(synthetic_state_dict("sam3.1-tiny"), path)
    assert model_name(_predictor("tiny", checkpoint_path=path)) == "sam3.1-tiny (sam3.1)"
    assert model_name(_predictor("tiny")) == "tiny (sam3)"


# --------------------------------------------------------------------- info


def test_info_sam31_checkpoint_lines(no_checkpoint_env, capsys, monkeypatch, tmp_path):
    assert cli.main(["info", "--model", "sam3.1"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint for --model sam3.1:" in out
    assert f"no sam3.1_multiplex.pt in {no_checkpoint_env / 'hub'}" in out
    assert "download facebook/sam3.1" in out
    assert "would use: not found locally: sam3.1_multiplex.pt will be downloaded" in out or (
        "would use: nothing, 'track --model sam3.1' would fail" in out
    )

    # a previous download in the hub cache (refs/main names the snapshot)
    repo = no_checkpoint_env / "hub" / "models--facebook--sam3.1"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    cached = snapshot / "sam3.1_multiplex.pt"
    torch.save(synthetic_state_dict("sam3.1-tiny"), cached)
    sam3_env = tmp_path / "sam3.pt"
    torch.save(synthetic_state_dict("tiny"), sam3_env)
    monkeypatch.setenv(checkpoints.ENV_VAR, str(sam3_env))
    assert cli.main(["info", "--model", "sam3.1"]) == 0
    out = capsys.readouterr().out
    assert f"would use: {cached} (Hugging Face cache)" in out
    assert "file check: ok" in out
    assert "$SAM3VIDEO_CHECKPOINT" in out and "is not used by --model sam3.1" in out

    # an explicit file: its version, read from its keys, is shown (it picks the model)
    assert cli.main(["info", "--model", "full", "--checkpoint", str(cached)]) == 0
    out = capsys.readouterr().out
    assert f"would use: {cached} (from --checkpoint)" in out
    assert "version: sam3.1 (read from its keys" in out
    assert cli.main(["info"]) == 0  # --model full: $SAM3VIDEO_CHECKPOINT, a 3.0 file
    assert "version: sam3 (read from its keys" in capsys.readouterr().out

    assert cli.main(["info", "--model", "sam3.1-tiny"]) == 0
    assert "none needed: --model sam3.1-tiny runs on synthetic weights" in capsys.readouterr().out


def test_info_subprocess_prints_the_sam31_line(tmp_path):
    proc = subprocess.run(
        [*CLI, "info", "--model", "sam3.1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint for --model sam3.1:" in proc.stdout
    assert "sam3.1_multiplex.pt" in proc.stdout and "facebook/sam3.1" in proc.stdout


# --------------------------------------------------------------------- batch


def test_batch_sam31_tiny_writes_the_api_results(tmp_path):
    manifest = tmp_path / "videos.jsonl"
    row = {"video": str(VIDEO), "id": "bikes", "text": "bike", "points": [[320, 180]],
           "point_labels": [1]}  # fmt: skip
    manifest.write_text(json.dumps(row) + "\n")
    out = tmp_path / "runs"
    argv = ["batch", str(manifest), "--out", str(out), "--model", "sam3.1-tiny", "--device",
            "cpu", "--direction", "forward", "--max-frames", str(MAX_FRAMES)]  # fmt: skip
    proc = start_cli(argv, tmp_path)
    try:
        expected = _api_track([str(VIDEO), *TRACK_ARGS])
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "--model sam3.1-tiny runs on SYNTHETIC weights" in stderr
    summary = json.loads((out / "summary.json").read_text())
    objects = {i for outputs in expected.values() for i in outputs}
    assert summary["counts"]["ok"] == 1 and summary["options"]["model"] == "sam3.1-tiny"
    (video,) = summary["videos"]
    assert (video["status"], video["frames"], video["objects"]) == ("ok", MAX_FRAMES, len(objects))
    masks = decode_ytvis_masks(read_ytvis(out / "bikes" / "results.json"))
    for t, outputs in expected.items():
        assert sorted(masks[t]) == sorted(outputs), f"frame {t}"
        for obj_id, result in outputs.items():
            assert np.array_equal(masks[t][obj_id], result["mask"]), f"frame {t} {obj_id}"
