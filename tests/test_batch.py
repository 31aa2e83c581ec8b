"""``sam3video batch`` on this machine: outputs as ``track`` writes them, a corrupt video
recorded and skipped over, resumable after kill -9 with finished outputs untouched, reruns
decided by the content key, two worker processes giving the same files, and an fsspec store.

Tiny model (synthetic weights), one thread, 6 generated clips of 64x48 (one of them corrupt).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _media import write_video

from sam3video import cli
from sam3video.batch import BatchOptions, run_batch
from sam3video.batch.store import MARKER, PARTIAL
from sam3video.evaluation import evaluate

OPTIONS = BatchOptions(model="tiny", device="cpu", threads=1, formats=("ytvis", "png"))
GOOD = ["clip0", "clip1", "clip3", "clip4", "clip5"]
ALL = ["clip0", "clip1", "broken", "clip3", "clip4", "clip5"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """6 rows: 5 short clips (one with text and a click, two passes) and a corrupt file."""
    root = tmp_path_factory.mktemp("batch_media")
    rows = []
    for name in ALL:
        if name == "broken":
            (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
            rows.append({"video": "broken.mp4", "text": "bike"})
            continue
        index = int(name[-1])
        write_video(root / f"{name}.mp4", 6 + index % 3)
        row = {"video": f"{name}.mp4", "text": "bike"}
        if name == "clip4":
            row.update(points=[[32, 24]], point_labels=[1])
        rows.append(row)
    path = root / "videos.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def local_run(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch_out") / "run"
    code = run_batch(manifest, str(out), OPTIONS, quiet=True)
    return code, out


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def outputs(folder: Path) -> dict[str, object]:
    """What ``track`` wrote: results.json (without its date) and the PNG bytes."""
    results = json.loads((folder / "results.json").read_text())
    results.pop("info")
    pngs = {p.name: p.read_bytes() for p in sorted((folder / "masks").glob("*.png"))}
    return {"results": results, "masks": pngs}


def statuses(out: Path) -> dict[str, str]:
    summary = json.loads((out / "summary.json").read_text())
    return {row["id"]: row["status"] for row in summary["videos"]}


def test_a_corrupt_video_is_recorded_and_the_others_complete(local_run):
    code, out = local_run
    assert code == 1  # not every video succeeded
    summary = json.loads((out / "summary.json").read_text())
    assert [row["id"] for row in summary["videos"]] == ALL
    assert statuses(out) == {name: ("failed" if name == "broken" else "ok") for name in ALL}
    broken = next(row for row in summary["videos"] if row["id"] == "broken")
    assert broken["error"]["type"] == "DecodeError" and "broken.mp4" in broken["error"]["message"]
    assert summary["counts"] == {"ok": 5, "skipped": 0, "failed": 1, "not run": 0}
    for row in summary["videos"]:
        if row["status"] == "ok":
            folder = out / row["id"]
            assert row["frames"] == len(list((folder / "masks").glob("*.png"))) > 0
            assert json.loads((folder / MARKER).read_text())["frames"] == row["frames"]
    assert not (out / "broken").exists() and not (out / PARTIAL).exists()


def test_outputs_are_what_track_writes(local_run, manifest, tmp_path):
    _, out = local_run
    from sam3video.batch.job import LazyPredictor
    from sam3video.batch.manifest import read_manifest
    from sam3video.cli.track import track

    job = next(j for j in read_manifest(manifest) if j.id == "clip4")  # text and a click
    args = cli.build_parser().parse_args(
        ["track", job.video, "--text", "bike", "--points", "32,24", "--model", "tiny",
         "--device", "cpu", "--threads", "1", "--format", "ytvis,png", "--quiet",
         "--out", str(tmp_path / "track")]
    )  # fmt: skip
    predictor = LazyPredictor(OPTIONS)
    try:
        summary = track(args, predictor.get())
    finally:
        predictor.close()
    assert summary.passes == ["text", "clicks"]
    assert outputs(out / "clip4") == outputs(tmp_path / "track")


def test_merged_predictions_file(local_run):
    _, out = local_run
    merged = json.loads((out / "predictions.json").read_text())
    assert [v["video_name"] for v in merged["videos"]] == GOOD
    assert [v["id"] for v in merged["videos"]] == list(range(5))
    assert merged["categories"] == [{"id": 1, "name": "bike"}]
    assert {a["video_id"] for a in merged["annotations"]} <= set(range(5))
    assert len(merged["video_np_pairs"]) == 5
    first = json.loads((out / "clip0" / "results.json").read_text())["annotations"][0]
    assert merged["annotations"][0]["segmentations"] == first["segmentations"]
    report = evaluate(merged, merged, metrics=["jf", "map"])  # readable by `eval`
    assert report["summary"]["mAP"] == pytest.approx(1.0)


def test_rerun_skips_finished_videos_and_leaves_them_untouched(local_run, manifest):
    code, out = local_run
    before = {name: snapshot(out / name) for name in GOOD}
    assert run_batch(manifest, str(out), OPTIONS, quiet=True) == 1  # broken still fails
    assert statuses(out) == {n: ("failed" if n == "broken" else "skipped") for n in ALL}
    assert {name: snapshot(out / name) for name in GOOD} == before


def test_the_key_follows_prompts_options_and_video_bytes(manifest, tmp_path):
    rows = [json.loads(line) for line in manifest.read_text().splitlines()][:2]
    for row in rows:
        row["video"] = str(manifest.parent / row["video"])
    small = tmp_path / "two.jsonl"
    small.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert run_batch(small, str(out), OPTIONS, quiet=True) == 0
    rows[1]["text"] = "car"  # a prompt changes: that row runs again
    small.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_batch(small, str(out), OPTIONS, quiet=True) == 0
    assert statuses(out) == {"clip0": "skipped", "clip1": "ok"}
    other = BatchOptions(**{**OPTIONS.to_dict(), "max_frames": 3})  # an option changes: all
    assert run_batch(small, str(out), other, quiet=True) == 0
    assert statuses(out) == {"clip0": "ok", "clip1": "ok"}
    threads = BatchOptions(**{**other.to_dict(), "threads": 2})  # how it runs: not in the key
    assert run_batch(small, str(out), threads, quiet=True) == 0
    assert statuses(out) == {"clip0": "skipped", "clip1": "skipped"}


def test_dry_run_lists_and_runs_nothing(local_run, manifest, tmp_path, capsys):
    _, out = local_run
    assert run_batch(manifest, str(out), OPTIONS, dry_run=True) == 0
    lines = capsys.readouterr().out.splitlines()
    actions = {line.split()[1]: line.split()[0] for line in lines[:-1]}
    assert actions == {n: ("run" if n == "broken" else "done") for n in ALL}
    assert "would run 1 of 6 videos" in lines[-1]
    fresh = tmp_path / "fresh"
    assert run_batch(manifest, str(fresh), OPTIONS, dry_run=True) == 0
    assert not fresh.exists()


def test_kill_9_mid_run_then_rerun(manifest, tmp_path):
    """kill -9 while videos run: the rerun runs only the unfinished ones; the finished
    outputs stay byte for byte."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "sam3video.cli", "batch", str(manifest), "--out", str(out),
            "--model", "tiny", "--device", "cpu", "--threads", "1", "--format", "ytvis,png",
            "--quiet"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    try:
        while len(list(out.glob(f"*/{MARKER}"))) < 2:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "no video finished in time"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    finished = sorted(p.parent.name for p in out.glob(f"*/{MARKER}"))
    assert 2 <= len(finished) < len(GOOD) and not (out / "summary.json").exists()
    before = {name: snapshot(out / name) for name in finished}
    assert run_batch(manifest, str(out), OPTIONS, quiet=True) == 1
    expected = {n: "skipped" if n in finished else "ok" for n in GOOD} | {"broken": "failed"}
    assert statuses(out) == expected
    assert {name: snapshot(out / name) for name in finished} == before
    assert not (out / PARTIAL).exists()


def test_two_worker_processes_write_the_same_files(local_run, manifest, tmp_path):
    _, out = local_run
    other = tmp_path / "two"
    assert run_batch(manifest, str(other), OPTIONS, workers=2, quiet=True) == 1
    assert statuses(other) == {n: ("failed" if n == "broken" else "ok") for n in ALL}
    for name in GOOD:
        assert outputs(other / name) == outputs(out / name), name


def test_an_fsspec_url_as_the_output(manifest, tmp_path):
    import fsspec  # comes with Ray Data (the ray extra)

    rows = [json.loads(manifest.read_text().splitlines()[0])]
    rows[0]["video"] = str(manifest.parent / rows[0]["video"])
    small = tmp_path / "one.jsonl"
    small.write_text(json.dumps(rows[0]) + "\n")
    url = "memory://sam3video-batch-test/run"
    assert run_batch(small, url, OPTIONS, quiet=True) == 0
    fs = fsspec.filesystem("memory")
    base = "/sam3video-batch-test/run"
    assert fs.exists(f"{base}/clip0/{MARKER}") and fs.exists(f"{base}/clip0/results.json")
    assert len(fs.glob(f"{base}/clip0/masks/*.png")) == 6
    summary = json.loads(fs.cat_file(f"{base}/summary.json"))
    assert summary["videos"][0]["status"] == "ok"
    assert run_batch(small, url, OPTIONS, quiet=True) == 0
    summary = json.loads(fs.cat_file(f"{base}/summary.json"))
    assert summary["videos"][0]["status"] == "skipped"
    fs.rm("/sam3video-batch-test", recursive=True)


def test_the_command_line(manifest, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"video": "a.mp4", "text": "x"}\n{"video": "b.mp4", oops}\n')
    assert cli.main(["batch", str(bad), "--out", str(tmp_path / "o"), "--model", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sam3video: error: bad.jsonl line 2: not valid JSON")
    assert len(err.strip().splitlines()) == 1
    assert cli.main(["batch", str(manifest), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    assert "would run 6 of 6 videos" in capsys.readouterr().out
    assert cli.main(["batch", "--help"]) == 0
    assert "--gpus-per-worker" in capsys.readouterr().out


def test_ctrl_c_keeps_finished_videos_and_writes_the_summary(manifest, tmp_path, monkeypatch):
    from sam3video.batch import job as job_module

    real_track, calls = job_module._track, []

    def track_then_interrupt(job, *args, **kwargs):
        calls.append(job.id)
        if len(calls) == 4:  # Ctrl-C in the middle of the fourth video
            raise KeyboardInterrupt
        return real_track(job, *args, **kwargs)

    monkeypatch.setattr(job_module, "_track", track_then_interrupt)
    out = tmp_path / "out"
    assert run_batch(manifest, str(out), OPTIONS, quiet=True) == 130
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert statuses(out) == {"clip0": "ok", "clip1": "ok", "broken": "failed", "clip3": "not run",
                             "clip4": "not run", "clip5": "not run"}  # fmt: skip
    assert not (out / "clip3").exists() and not (out / PARTIAL).exists()
