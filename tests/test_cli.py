"""The command line: ``sam3video track`` round trip against the Python API, Ctrl-C, errors,
``info``, ``--help``, the progress display and checkpoint discovery.

The round trip runs the real command as a subprocess with the tiny model (synthetic weights,
meaningless masks) on a few frames of a generated 640x272 video (`_media.VIDEOS`) and reads
every output back. The other behaviours run in-process through `sam3video.cli.main` /
`run_track`, some with a scripted stand-in for the predictor (no model: fast).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _media import VIDEOS, coded_frame
from PIL import Image

from sam3video import checkpoints, cli
from sam3video.io.export import decode_ytvis_masks, read_png_masks, read_ytvis
from sam3video.io.frames import open_frames

VIDEO = VIDEOS / "bikes.mp4"  # 640x272, 250 frames
H, W, N = 272, 640, 250
MAX_FRAMES = 8  # frames 0..7 forward
# The tiny model keeps an object on every frame for this prompt (not "person": the hotstart
# rule removes its detection, and nothing is left to compare).
TEXT = "bike"
CLI = [sys.executable, "-m", "sam3video.cli"]


def clean_env(tmp: Path) -> dict[str, str]:
    """No checkpoint anywhere, no network: the tiny runs must not need either."""
    env = {k: v for k, v in os.environ.items() if k != checkpoints.ENV_VAR}
    env.update(HF_HOME=str(tmp / "hf"), HF_HUB_OFFLINE="1", PYTHONWARNINGS="default")
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    return env


def start_cli(argv: list[str], cwd: Path) -> subprocess.Popen:
    """``sam3video <argv>`` in a subprocess run from ``cwd`` with a clean environment."""
    return subprocess.Popen(
        CLI + argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(cwd),
        cwd=cwd,
    )


# --------------------------------------------------------------------- the round trip


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """``sam3video track`` in a subprocess and, meanwhile, the same requests through the
    Python API in this process: ``(completed process, output folder, API results)``."""
    tmp = tmp_path_factory.mktemp("cli")
    out = tmp / "out"
    argv = [
        "track", str(VIDEO), "--text", TEXT, "--model", "tiny", "--device", "cpu",
        "--max-frames", str(MAX_FRAMES), "--direction", "forward",
        "--format", "ytvis,png,overlay", "--out", str(out),
    ]  # fmt: skip
    proc = start_cli(argv, tmp)
    try:
        api = api_results()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out, api


def api_results() -> dict[int, dict]:
    """The CLI's requests through `Sam3VideoPredictor`; the last result of each frame."""
    from sam3video.predictor import Sam3VideoPredictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Sam3VideoPredictor(model_config="tiny", device="cpu")
    with predictor:
        sid = predictor.handle_request({"type": "start_session", "resource_path": str(VIDEO)})[
            "session_id"
        ]
        first = predictor.handle_request(
            {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": TEXT}
        )
        results = {first["frame_index"]: first["outputs"]}
        for item in predictor.handle_stream_request(
            {
                "type": "propagate_in_video",
                "session_id": sid,
                "propagation_direction": "forward",
                "start_frame_index": 0,
                "max_frame_num_to_track": MAX_FRAMES - 1,
            }
        ):
            results[item["frame_index"]] = item["outputs"]
    return results


def test_track_runs_and_reports(round_trip):
    proc, _, api_results = round_trip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "SYNTHETIC weights" in proc.stderr and "meaningless" in proc.stderr
    objects = {i for outputs in api_results.values() for i in outputs}
    assert objects, "the tuned synthetic weights track something"
    assert f"frames   {MAX_FRAMES} of {N}" in proc.stdout
    assert f"objects  {len(objects)}" in proc.stdout
    assert "s/frame" in proc.stdout
    assert "results.json" in proc.stdout and "overlay.mp4" in proc.stdout
    # not a terminal: plain progress lines, the last one complete
    assert f"tracking {MAX_FRAMES}/{MAX_FRAMES} frames (100%)" in proc.stderr


def test_track_json_equals_the_api(round_trip):
    proc, out, api_results = round_trip
    assert proc.returncode == 0, proc.stderr
    assert sorted(api_results) == list(range(MAX_FRAMES))
    data = read_ytvis(out / "results.json")
    (video,) = data["videos"]
    assert (video["height"], video["width"], video["length"]) == (H, W, N)
    assert data["categories"][0]["name"] == TEXT
    masks = decode_ytvis_masks(data)
    assert len(masks) == N
    for t in range(N):
        expected = api_results.get(t, {})
        assert sorted(masks[t]) == sorted(expected), f"frame {t}"
        for obj_id, result in expected.items():
            assert masks[t][obj_id].shape == (H, W)
            assert np.array_equal(masks[t][obj_id], result["mask"]), f"frame {t} object {obj_id}"
    for annotation in data["annotations"]:
        scores = annotation["per_frame_scores"]
        for t, outputs in api_results.items():
            if annotation["obj_id"] in outputs:
                assert scores[t] == pytest.approx(outputs[annotation["obj_id"]]["score"], abs=1e-6)


def test_track_pngs_equal_the_api(round_trip):
    _, out, api_results = round_trip
    pngs = read_png_masks(out / "masks")
    assert sorted(pngs) == sorted(api_results)
    for t, outputs in api_results.items():
        assert sorted(pngs[t]) == sorted(outputs)
        for obj_id, result in outputs.items():
            assert np.array_equal(pngs[t][obj_id], result["mask"]), f"frame {t} object {obj_id}"


def test_track_overlay_has_the_source_frames(round_trip):
    _, out, api_results = round_trip
    with open_frames(out / "overlay.mp4") as overlay, open_frames(VIDEO) as source:
        assert (len(overlay), overlay.height, overlay.width) == (len(source), H, W)
        t = max(api_results)  # a tracked frame: the masks are drawn
        mask = np.any([r["mask"] for r in api_results[t].values()], axis=0)
        diff = np.abs(overlay[t].astype(int) - source[t].astype(int)).mean(-1)
        assert diff[mask].mean() > 15
        plain = np.abs(overlay[100].astype(int) - source[100].astype(int)).mean()
        assert plain < 5, "an untracked frame is the plain source frame (up to compression)"


def test_track_ctrl_c_in_a_real_run(tmp_path):
    """SIGINT while tracking a text prompt: exit 130, and the files hold every frame that was
    tracked, including those SAM 3's 15-frame hotstart buffer still held back."""
    out = tmp_path / "out"
    argv = [
        "track", str(VIDEO), "--text", "person", "--model", "tiny", "--device", "cpu",
        "--direction", "forward", "--format", "ytvis,png,overlay", "--out", str(out),
        "--threads", "1",
    ]  # fmt: skip
    proc = start_cli(argv, tmp_path)
    try:
        lines = []
        for line in proc.stderr:  # progress shows the first tracked frame at once
            lines.append(line)
            if "tracking 1/250 frames" in line:
                break
        assert lines and "tracking 1/250 frames" in lines[-1], "".join(lines)
        time.sleep(1.0)  # a few more frames
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stdout == ""
    (message,) = [line for line in stderr.splitlines() if "interrupted after" in line]
    tracked = int(message.split("interrupted after ")[1].split()[0])
    pngs = read_png_masks(out / "masks")
    done = sorted(pngs)
    assert 2 <= len(done) < N and done == list(range(len(done)))
    assert f"saved {len(done)} frames" in message and f"{tracked} frames tracked" in message
    assert len(done) >= tracked, "every tracked frame is in the files"
    assert "from the hotstart buffer" in message, message
    masks = decode_ytvis_masks(read_ytvis(out / "results.json"))
    assert {t for t, m in masks.items() if m} == {t for t, m in pngs.items() if m}
    for t in done:
        assert sorted(masks[t]) == sorted(pngs[t])
    with open_frames(out / "overlay.mp4") as overlay:
        assert len(overlay) == len(done), "the overlay holds the frames done"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary file left"


# --------------------------------------------------------------------- a scripted predictor


class ScriptedPredictor:
    """The request API of `Sam3VideoPredictor` with predictable outputs, no model.

    After the k-th add_prompt, every frame holds objects 0..k-1 (object j a band at rows
    10j..10j+9, score 0.5 + 0.1 k); ``interrupt_after`` sends SIGINT to this process after
    that many propagated frames.
    """

    def __init__(
        self, interrupt_after: int | None = None, size: tuple[int, int] = (H, W), frames: int = N
    ) -> None:
        self.requests: list[dict] = []
        self.frames = frames
        self.prompts = 0
        self.interrupt_after = interrupt_after
        self.streamed = 0
        self.size = size
        self.threads: list[int] = []  # torch's thread count during each propagation

    def outputs(self, frame_index: int = 0) -> dict:
        result = {}
        for j in range(self.prompts):
            mask = np.zeros(self.size, bool)
            mask[10 * j : 10 * j + 10, :50] = True
            result[j] = {"mask": mask, "score": 0.5 + 0.1 * self.prompts, "bbox": [0, 0, 1, 1]}
        return result

    def handle_request(self, request: dict) -> dict:
        self.requests.append(dict(request))
        if request["type"] == "start_session":
            return {"session_id": "s"}
        if request["type"] == "add_prompt":
            self.prompts += 1
            return {"frame_index": request["frame_index"], "outputs": self.outputs()}
        return {"is_success": True}

    def handle_stream_request(self, request: dict):
        self.requests.append(dict(request))
        self.threads.append(torch.get_num_threads())
        start, n = request["start_frame_index"], request["max_frame_num_to_track"]
        n = self.frames if n is None else n
        order = []
        if request["propagation_direction"] in ("forward", "both"):
            order += list(range(start, min(start + n, self.frames - 1) + 1))
        if request["propagation_direction"] in ("backward", "both"):
            order += list(range(start - 1, max(start - n, 0) - 1, -1))
        return self._stream(order)

    def _stream(self, order):
        for t in order:
            if self.interrupt_after is not None and self.streamed == self.interrupt_after:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the KeyboardInterrupt arrives first
            self.streamed += 1
            yield {"frame_index": t, "outputs": self.outputs(t)}


class HoldingSession:
    """What `sam3video.cli.watch` reads from a session: observers of each tracked frame, a
    lock, and the frames held back (``release_pending``)."""

    def __init__(self, predictor: HoldingPredictor) -> None:
        self.predictor = predictor
        self.observers: list = []
        self.lock = threading.RLock()
        self.pending: list[int] = []

    def release_pending(self) -> list[tuple[int, dict]]:
        held, self.pending = self.pending, []
        return [(t, self.predictor.outputs(t)) for t in held]


class HoldingPredictor(ScriptedPredictor):
    """A scripted predictor whose propagation holds each frame back ``delay`` frames (as
    SAM 3's hotstart buffer) and tells its session's observers about each tracked frame.

    The prompt finds objects 0 and 1; the propagation shows object 1 only, on every frame
    the prompt frame included (the hotstart rule removed object 0). ``interrupt_after``
    counts tracked frames."""

    def __init__(self, delay: int = 5, **kw) -> None:
        super().__init__(**kw)
        self.delay = delay
        self.session = HoldingSession(self)
        self._sessions = {"s": self.session}
        self.tracked = 0

    def get_session(self, session_id: str) -> HoldingSession:
        return self._sessions[session_id]

    def band(self, j: int) -> dict:
        mask = np.zeros(self.size, bool)
        mask[10 * j : 10 * j + 10, :50] = True
        return {"mask": mask, "score": 0.9, "bbox": [0, 10 * j, 50, 10 * j + 10]}

    def handle_request(self, request: dict) -> dict:
        if request["type"] == "add_prompt":
            self.requests.append(dict(request))
            return {
                "frame_index": request["frame_index"],
                "outputs": {0: self.band(0), 1: self.band(1)},
            }
        return super().handle_request(request)

    def outputs(self, frame_index: int = 0) -> dict:
        return {1: self.band(1)}

    def _stream(self, order):
        session = self.session
        for t in order:
            if self.interrupt_after is not None and self.tracked == self.interrupt_after:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the KeyboardInterrupt arrives first
            self.tracked += 1
            session.pending.append(t)
            for observer in list(session.observers):
                observer(SimpleNamespace(frame_index=t, kind="detect"))
            while len(session.pending) > self.delay or (t == order[-1] and session.pending):
                released = session.pending.pop(0)
                self.streamed += 1
                yield {"frame_index": released, "outputs": self.outputs(released)}


def run_scripted(argv: list[str], predictor: ScriptedPredictor) -> int:
    args = cli.build_parser().parse_args(argv)
    return cli.run_track(args, predictor=predictor)


def test_text_and_points_track_the_concept_then_the_clicks(tmp_path, capsys):
    predictor = ScriptedPredictor()
    code = run_scripted(
        [
            "track",
            str(VIDEO),
            "--text",
            "bike",
            "--box",
            "0.5,0.5,0.2,0.2",
            "0.3,0.3,0.1,0.1:0",
            "--points",
            "100,50",
            "120,60:0",
            "--frame",
            "20",
            "--max-frames",
            "4",
            "--direction",
            "both",
            "--format",
            "png,ytvis",
            "--out",
            str(tmp_path),
            "--quiet",
        ],  # fmt: skip
        predictor,
    )
    assert code == 0
    types = [r["type"] for r in predictor.requests]
    assert types == [
        "start_session", "add_prompt", "propagate_in_video", "add_prompt", "propagate_in_video",
        "close_session",
    ]  # fmt: skip
    concept, clicks = predictor.requests[1], predictor.requests[3]
    assert concept["text"] == "bike" and concept["frame_index"] == 20
    assert concept["bounding_boxes"] == [[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]
    assert concept["bounding_box_labels"] == [1, 0] and "points" not in concept
    assert clicks["points"] == [[100.0, 50.0], [120.0, 60.0]] and clicks["point_labels"] == [1, 0]
    assert "text" not in clicks
    propagate = predictor.requests[2]
    assert propagate["max_frame_num_to_track"] == 3 and propagate["start_frame_index"] == 20
    assert propagate["propagation_direction"] == "both"
    # --max-frames 4 per direction, counting frame 20: 20..23 forward, 19..17 backward
    pngs = read_png_masks(tmp_path / "masks")
    assert sorted(pngs) == list(range(17, 24))
    assert all(sorted(m) == [0, 1] for m in pngs.values()), "the second pass's results won"
    data = read_ytvis(tmp_path / "results.json")
    assert [a["obj_id"] for a in data["annotations"]] == [0, 1]
    assert data["annotations"][0]["per_frame_scores"][20] == pytest.approx(0.7)
    out = capsys.readouterr()
    assert "frames   7 of 250 (2 passes: text and boxes, then clicks)" in out.out
    assert "objects  2" in out.out
    assert out.err == "", "--quiet"


def test_backward_writes_the_prompted_frame_too(tmp_path, capsys):
    predictor = ScriptedPredictor()
    argv = [
        "track", str(VIDEO), "--points", "5,5", "--frame", "10", "--direction", "backward",
        "--max-frames", "3", "--format", "png", "--out", str(tmp_path), "--quiet",
    ]  # fmt: skip
    assert run_scripted(argv, predictor) == 0
    assert sorted(read_png_masks(tmp_path / "masks")) == [8, 9, 10]


def test_stale_pngs_of_an_earlier_run_are_removed(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "00200.png").write_bytes(b"old")
    (masks / "notes.png").write_bytes(b"kept: not a frame name")
    argv = [
        "track", str(VIDEO), "--text", "x", "--max-frames", "2", "--direction", "forward",
        "--format", "png", "--out", str(tmp_path), "--quiet",
    ]  # fmt: skip
    assert run_scripted(argv, ScriptedPredictor()) == 0
    assert sorted(p.name for p in masks.iterdir()) == ["00000.png", "00001.png", "notes.png"]


def test_ctrl_c_closes_the_exports_and_exits_130(tmp_path, capsys):
    predictor = ScriptedPredictor(interrupt_after=4)
    argv = [
        "track", str(VIDEO), "--text", "x", "--direction", "forward", "--format",
        "ytvis,png,overlay", "--out", str(tmp_path),
    ]  # fmt: skip
    assert run_scripted(argv, predictor) == 130
    assert predictor.requests[-1]["type"] == "close_session"
    err = capsys.readouterr().err
    assert "interrupted after 4 frames tracked; saved 4 frames with 1 object in" in err
    assert "masks/ (4 PNGs)" in err and "Traceback" not in err
    assert sorted(read_png_masks(tmp_path / "masks")) == [0, 1, 2, 3]
    masks = decode_ytvis_masks(read_ytvis(tmp_path / "results.json"))
    assert [t for t, m in masks.items() if m] == [0, 1, 2, 3]
    with open_frames(tmp_path / "overlay.mp4") as overlay:
        assert len(overlay) == 4


def test_no_file_is_written_when_the_first_prompt_fails(tmp_path, capsys):
    class Failing(ScriptedPredictor):
        def handle_request(self, request):
            if request["type"] == "add_prompt":
                raise RuntimeError("boom")
            return super().handle_request(request)

    predictor = Failing()
    argv = ["track", str(VIDEO), "--text", "x", "--format", "ytvis,png,overlay"]
    argv += ["--out", str(tmp_path / "o")]
    with pytest.raises(RuntimeError):
        run_scripted(argv, predictor)
    assert predictor.requests[-1]["type"] == "close_session"
    assert not (tmp_path / "o").exists(), "the folder it created is removed"


def test_plurals_after_one_frame(tmp_path, capsys):
    argv = ["track", str(VIDEO), "--text", "x", "--format", "png", "--out", str(tmp_path)]
    assert run_scripted(argv, ScriptedPredictor(interrupt_after=1)) == 130
    err = capsys.readouterr().err
    assert "interrupted after 1 frame tracked; saved 1 frame with 1 object in" in err
    assert "masks/ (1 PNG)" in err


def test_ctrl_c_writes_the_frames_the_hotstart_buffer_holds(tmp_path, capsys):
    """Interrupted after 9 tracked frames of which the buffer released 4: all 9 are saved."""
    predictor = HoldingPredictor(delay=5, interrupt_after=9)
    argv = [
        "track", str(VIDEO), "--text", "x", "--direction", "forward", "--format",
        "ytvis,png,overlay", "--out", str(tmp_path),
    ]  # fmt: skip
    assert run_scripted(argv, predictor) == 130
    err = capsys.readouterr().err
    assert "interrupted after 9 frames tracked; saved 9 frames (5 of them from the hotstart " in err
    assert sorted(read_png_masks(tmp_path / "masks")) == list(range(9))
    with open_frames(tmp_path / "overlay.mp4") as overlay:
        assert len(overlay) == 9
    assert predictor.session.observers == [], "the observer is removed"


def test_progress_counts_tracked_frames_not_released_ones(tmp_path, capsys, monkeypatch):
    """The buffer releases the first frame after 6 are tracked; progress moves from the
    first one, and the time left appears after a few frames."""
    from sam3video.cli import track as track_module

    lines = []

    class Recording(cli.Progress):
        def advance_to(self, done, objects=None):
            super().advance_to(done, objects)
            lines.append((self.done, predictor.streamed, self._numbers()[1]))

    monkeypatch.setattr(track_module, "Progress", Recording)
    predictor = HoldingPredictor(delay=5)
    argv = [
        "track", str(VIDEO), "--text", "x", "--direction", "forward", "--max-frames", "10",
        "--format", "png", "--out", str(tmp_path),
    ]  # fmt: skip
    assert run_scripted(argv, predictor) == 0
    early = [done for done, released, _ in lines if released == 0]
    assert early == [1, 2, 3, 4, 5, 6], "tracked frames counted before any release"
    assert lines[0][2] == "estimating time left" and lines[-1][2].endswith("left")
    assert lines[-1][0] == 10
    err = capsys.readouterr().err
    assert "tracking 1/10 frames (10%), 0 objects, estimating time left" in err
    assert "tracking 10/10 frames (100%), 1 object," in err


def test_summary_counts_what_the_files_hold(tmp_path, capsys):
    """The prompt found objects 0 and 1; propagation removed 0 from every frame (hotstart):
    the files hold object 1 only, and the summary says 1."""
    argv = [
        "track", str(VIDEO), "--text", "x", "--direction", "forward", "--max-frames", "8",
        "--format", "ytvis,png", "--out", str(tmp_path), "--quiet",
    ]  # fmt: skip
    assert run_scripted(argv, HoldingPredictor(delay=3)) == 0
    out = capsys.readouterr().out
    assert "frames   8 of 250\n" in out and "objects  1\n" in out
    annotations = read_ytvis(tmp_path / "results.json")["annotations"]
    assert [a["obj_id"] for a in annotations] == [1]
    assert "masks/ (8 PNGs)" in out


def test_threads_flag_and_default(tmp_path, capsys, monkeypatch):
    from sam3video.cli.runtime import default_threads

    assert default_threads({"OMP_NUM_THREADS": "3"}) == 3
    physical = default_threads({})
    assert 1 <= physical <= (os.cpu_count() or 1)
    assert default_threads({"OMP_NUM_THREADS": "many"}) == physical
    before = torch.get_num_threads()
    predictor = ScriptedPredictor()
    argv = ["track", str(VIDEO), "--text", "x", "--max-frames", "2", "--direction", "forward"]
    argv += ["--format", "png", "--out", str(tmp_path), "--threads", "1"]
    assert run_scripted(argv, predictor) == 0
    assert predictor.threads == [1] and torch.get_num_threads() == before
    assert "; 1 thread\n" in capsys.readouterr().out
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    predictor = ScriptedPredictor()
    assert run_scripted(argv[:-2], predictor) == 0
    assert predictor.threads == [2] and "; 2 threads\n" in capsys.readouterr().out


def test_a_single_image_gives_a_png_overlay(tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(coded_frame(0, H, W)).save(image)
    out = tmp_path / "out"
    argv = ["track", str(image), "--text", "x", "--format", "ytvis,overlay", "--out", str(out)]
    assert run_scripted(argv + ["--quiet"], ScriptedPredictor(frames=1)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["overlay.png", "results.json"]
    with Image.open(out / "overlay.png") as overlay:
        assert overlay.format == "PNG" and overlay.size == (W, H)
    assert "overlay.png" in capsys.readouterr().out


def test_a_failed_run_removes_the_folders_it_created(tmp_path):
    class Failing(ScriptedPredictor):
        def handle_stream_request(self, request):
            raise RuntimeError("boom")

    nested = tmp_path / "a" / "b" / "c"
    argv = ["track", str(VIDEO), "--points", "5,5", "--format", "png", "--out", str(nested)]
    with pytest.raises(RuntimeError):  # the prompt's result was written: the folder stays
        run_scripted(argv, Failing())
    assert (nested / "masks" / "00000.png").is_file()

    class FailingAtOnce(ScriptedPredictor):
        def handle_request(self, request):
            if request["type"] == "add_prompt":
                raise RuntimeError("boom")
            return super().handle_request(request)

    other = tmp_path / "x" / "y"
    argv[-1] = str(other)
    with pytest.raises(RuntimeError):
        run_scripted(argv, FailingAtOnce())
    assert not (tmp_path / "x").exists(), "nothing written: every folder it made is removed"
    argv[-1] = str(tmp_path)
    with pytest.raises(RuntimeError):
        run_scripted(argv, FailingAtOnce())
    assert tmp_path.is_dir(), "a folder that existed is kept"


# --------------------------------------------------------------------- errors


def one_line_error(capsys, code: int, expected_code: int, needle: str) -> str:
    out = capsys.readouterr()
    assert code == expected_code, out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith("sam3video"), lines[0]
    assert needle in lines[0], lines[0]
    assert "Traceback" not in out.err and out.out == ""
    return lines[0]


@pytest.mark.parametrize(
    ("extra", "code", "needle"),
    [
        (["--points", "1,2,3"], 2, "--points: expected X,Y"),
        (["--points", "1,2:7"], 2, "LABEL 1 (positive) or 0 (negative)"),
        (["--points", "nan,2"], 2, "--points"),
        (["--box", "0.5,0.5,0.2"], 2, "--box: expected CX,CY,W,H"),
        (["--box", "0.9,0.5,0.5,0.2"], 2, "--box"),  # outside the image
        (["--points", "1000,10"], 2, "--points"),  # outside the 640x272 frame
        (["--text", "x", "--frame", "250"], 2, "--frame: expected a frame index in [0, 250)"),
        (["--text", "x", "--frame", "-1"], 2, "--frame"),
        (["--text", "x", "--format", "ytvis,gif"], 2, "unknown format 'gif'"),
        (["--text", "x", "--format", "pgn"], 2, "did you mean 'png'?"),
        (["--text", "x", "--direction", "up"], 2, "--direction"),
        (["--text", "x", "--max-frames", "0"], 2, "--max-frames"),
        (["--text", "x", "--colour"], 2, "unrecognized arguments"),
        (["--text", "   "], 2, "--text"),
        ([], 2, "no prompt"),
    ],
)
def test_bad_command_lines(extra, code, needle, tmp_path, capsys, no_checkpoint_env):
    argv = ["track", str(VIDEO), "--model", "tiny", "--out", str(tmp_path / "o"), *extra]
    one_line_error(capsys, cli.main(argv), code, needle)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_points_before_the_video_hint(capsys):
    code = cli.main(["track", "--points", "1,2", str(VIDEO)])
    one_line_error(capsys, code, 2, "put VIDEO before the option")


def test_bad_sources_and_outputs(tmp_path, capsys, no_checkpoint_env):
    base = ["--text", "x", "--model", "tiny"]
    code = cli.main(["track", str(tmp_path / "missing.mp4"), *base])
    one_line_error(capsys, code, 2, "does not exist")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    one_line_error(capsys, cli.main(["track", str(text), *base]), 2, "not a supported source")
    code = cli.main(["track", str(VIDEO), *base, "--out", str(text)])
    line = one_line_error(capsys, code, 2, "is a file, not a folder")
    assert line.startswith(f"sam3video: error: --out: {str(text)!r}")
    code = cli.main(["track", str(VIDEO), *base, "--out", str(text / "sub")])
    one_line_error(capsys, code, 2, f"{str(text)!r} is a file")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code = cli.main(["track", str(VIDEO), *base, "--out", str(locked / "o")])
        one_line_error(capsys, code, 2, "--out: cannot write in the folder")
    if not torch.cuda.is_available():
        code = cli.main(["track", str(VIDEO), *base, "--device", "cuda"])
        one_line_error(capsys, code, 2, "--device: 'cuda' asks for CUDA, but no CUDA device")


def test_checkpoint_errors(tmp_path, capsys, no_checkpoint_env, monkeypatch):
    argv = ["track", str(VIDEO), "--text", "x", "--out", str(tmp_path / "o")]
    bad = tmp_path / "sam3.pt"
    bad.write_bytes(b"<html>Access denied</html>")
    line = one_line_error(capsys, cli.main([*argv, "--checkpoint", str(bad)]), 1, "corrupt")
    assert "download sam3.pt again" in line
    code = cli.main([*argv, "--checkpoint", str(tmp_path / "nope.pt")])
    one_line_error(capsys, code, 2, "--checkpoint: file not found")
    monkeypatch.setenv(checkpoints.ENV_VAR, str(tmp_path / "gone.pt"))
    one_line_error(capsys, cli.main(argv), 2, "SAM3VIDEO_CHECKPOINT: file not found")
    monkeypatch.delenv(checkpoints.ENV_VAR)
    # nothing local, offline (or no huggingface_hub): says how to get the weights
    line = one_line_error(capsys, cli.main(argv), 1, "--checkpoint PATH")
    assert "SAM3VIDEO_CHECKPOINT" in line and "--model tiny" in line
    assert not (tmp_path / "o").exists(), "a failed run leaves no folder behind"


def test_errors_in_a_subprocess_have_exit_codes_and_no_traceback(tmp_path):
    for extra, code in ((["--points", "x,1"], 2), ([], 2)):
        proc = subprocess.run(
            CLI + ["track", str(VIDEO), *extra],
            capture_output=True,
            text=True,
            env=clean_env(tmp_path),
            cwd=tmp_path,
            timeout=60,
        )
        assert proc.returncode == code
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path, capsys):
    code = cli.main(["track", str(tmp_path / "missing.mp4"), "--text", "x", "--debug"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("sam3")


# --------------------------------------------------------------------- help, info


@pytest.mark.parametrize("command", [[], ["track"], ["info"]])
def test_help(command, tmp_path):
    proc = subprocess.run(
        CLI + [*command, "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith(f"usage: sam3video {' '.join(command)}".rstrip())
    if command == ["track"]:
        for option in ("--text", "--points", "--box", "--frame", "--direction", "--max-frames",
                       "--checkpoint", "--model", "--device", "--dtype", "--loader", "--out",
                       "--format", "ytvis", "png", "overlay", "Exit codes"):  # fmt: skip
            assert option in proc.stdout


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "track" in capsys.readouterr().err


def test_console_script_is_installed():
    import shutil

    script = shutil.which("sam3video")
    if script is None:
        pytest.skip("the sam3video console script is not on PATH (package not installed)")
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip().startswith("sam3video ")


def test_info(tmp_path, capsys, no_checkpoint_env, monkeypatch):
    ckpt = tmp_path / "mine.pt"
    torch.save({"w": torch.zeros(2)}, ckpt)
    monkeypatch.setenv(checkpoints.ENV_VAR, str(ckpt))
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for needle in ("sam3video 0.", "torch ", "numpy ", "opencv ", "av ", "devices:", "  cpu "):
        assert needle in out
    assert "auto   -> " in out
    assert f"would use: {ckpt} (from $SAM3VIDEO_CHECKPOINT)" in out
    assert "file check: ok" in out
    assert cli.main(["info", "--checkpoint", str(tmp_path / "none.pt")]) == 0
    assert "problem: --checkpoint: file not found" in capsys.readouterr().out
    assert cli.main(["info", "--model", "tiny"]) == 0
    assert "none needed" in capsys.readouterr().out


# --------------------------------------------------------------------- progress


def test_progress_bar_on_a_terminal():
    stream = io.StringIO()
    progress = cli.Progress(3, stream=stream, tty=True, eta_after=1)
    for _ in range(3):
        progress.update(1, objects=2)
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\rtracking 1/3") and "3/3" in text and "100%" in text
    assert "estimating time left" in text, "no time left from the first frame alone"
    assert "2 objects" in text and "frames/s" in text and text.endswith("\n")


def test_progress_log_lines_and_quiet():
    stream = io.StringIO()
    progress = cli.Progress(50, stream=stream, tty=False, log_every=3600)
    for _ in range(50):
        progress.update(1, objects=1)
    progress.end_pass()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, "the first frame and the end, nothing in between"
    assert "1/50 frames (2%), 1 object, estimating time left" in lines[0]
    assert "50/50 frames (100%), 1 object," in lines[1]
    silent = io.StringIO()
    quiet = cli.Progress(5, stream=silent, tty=True, enabled=False)
    quiet.update(5)
    quiet.end_pass()
    quiet.close()
    assert silent.getvalue() == ""


def test_progress_time_left_skips_the_slow_first_frame(monkeypatch):
    """The first frame took 20 s (warm-up), then 1 frame/s: the time left is counted at
    1 frame/s, from the third frame after the first."""
    from sam3video.cli import progress as progress_module

    now = [100.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: now[0])
    stream = io.StringIO()
    progress = cli.Progress(100, stream=stream, tty=False, log_every=0, eta_after=3)
    now[0] += 20
    progress.update(1)
    for _ in range(4):
        now[0] += 1
        progress.update(1)
    lines = stream.getvalue().splitlines()
    assert [line.split(", ")[-1] for line in lines] == ["estimating time left"] * 3 + [
        "1:36 left",
        "1:35 left",
    ]
    assert "1.00 frames/s" in lines[-1]
    progress.begin("pass 2 of 2 (clicks)", 10)
    progress.update(1)
    assert (
        stream.getvalue().splitlines()[-1].startswith("sam3video: pass 2 of 2 (clicks) 1/10 frames")
    )


def test_plural():
    assert cli.plural(1, "frame") == "1 frame" and cli.plural(0, "frame") == "0 frames"
    assert cli.plural(2, "PNG") == "2 PNGs" and cli.plural(1, "object") == "1 object"


def test_point_and_box_parsing():
    assert cli.parse_point("10,20") == (10.0, 20.0, 1)
    assert cli.parse_point(" 1.5 , 2:0") == (1.5, 2.0, 0)
    assert cli.parse_box("0.5,0.5,0.2,0.4:0") == ((0.5, 0.5, 0.2, 0.4), 0)
    assert cli.parse_formats("png, ytvis,png") == ("png", "ytvis")
    for bad in ("10", "10,20,30", "a,b", "1,2:", "1,inf"):
        with pytest.raises(Exception, match="expected X,Y|finite"):
            cli.parse_point(bad)
