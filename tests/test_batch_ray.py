"""``sam3video batch --ray`` on a local Ray cluster gives the same files as the local path.

One cluster for the module (``ray.init(num_cpus=2)`` on loopback, no dashboard), shut down at
the end. Ray is the ``ray`` extra; CI installs it, so a missing ``ray`` fails this module
(it is imported unconditionally) instead of skipping it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
from _media import write_video

from sam3video.batch import BatchOptions, run_batch

OPTIONS = BatchOptions(model="tiny", device="cpu", threads=1, formats=("ytvis", "png"))
NAMES = ["a", "broken", "b", "c"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray_media")
    rows = []
    for i, name in enumerate(NAMES):
        if name == "broken":
            (root / "broken.mp4").write_bytes(b"\x1a\x45\xdf\xa3" + bytes(512))
        else:
            write_video(root / f"{name}.mp4", 6 + i % 3)
        rows.append({"video": f"{name}.mp4", "text": "bike"})
    path = root / "videos.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def outputs(folder: Path) -> dict[str, object]:
    results = json.loads((folder / "results.json").read_text())
    results.pop("info")  # holds the date
    pngs = {p.name: p.read_bytes() for p in sorted((folder / "masks").glob("*.png"))}
    return {"results": results, "masks": pngs}


def statuses(out: Path) -> dict[str, str]:
    summary = json.loads((out / "summary.json").read_text())
    return {row["id"]: row["status"] for row in summary["videos"]}


def test_ray_actors_write_what_the_local_path_writes(cluster, manifest, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert run_batch(manifest, str(local), OPTIONS, quiet=True) == 1
    code = run_batch(manifest, str(remote), OPTIONS, ray=True, workers=2, quiet=True)
    assert code == 1  # the broken video
    assert statuses(remote) == statuses(local)
    assert statuses(remote)["broken"] == "failed"
    summary = json.loads((remote / "summary.json").read_text())
    assert summary["runner"] == "ray"
    broken = next(row for row in summary["videos"] if row["id"] == "broken")
    assert broken["error"]["type"] in ("DecodeError", "UnsupportedSourceError")
    for name in NAMES:
        if name != "broken":
            assert outputs(remote / name) == outputs(local / name), name
    merged = json.loads((remote / "predictions.json").read_text())
    assert merged == json.loads((local / "predictions.json").read_text())
