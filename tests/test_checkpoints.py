"""Checkpoint discovery, verification and download (`sam3video.checkpoints`).

The download tests run offline (this machine's natural state): with a stand-in
``huggingface_hub`` module that records what is called, and, when the real package is
installed (the ``[hub]`` extra), against it with an endpoint that refuses connections.
"""

from __future__ import annotations

import logging
import sys
import time
import types
import zipfile
from pathlib import Path

import pytest
import torch

from sam3video import checkpoints
from sam3video.errors import CheckpointError, SourceNotFoundError


def fake_hf_cache(root: Path, with_ref: bool = True) -> Path:
    repo = root / "hub" / "models--facebook--sam3"
    file = repo / "snapshots" / "abc123" / "sam3.pt"
    file.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, file)
    if with_ref:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("abc123")
    return file


@pytest.mark.parametrize("with_ref", [True, False])
def test_discovery_order(tmp_path, with_ref):
    cached = fake_hf_cache(tmp_path / "hf", with_ref)
    env = {"HF_HOME": str(tmp_path / "hf")}
    assert checkpoints.hf_cache_dir(env) == tmp_path / "hf" / "hub"
    location = checkpoints.locate_checkpoint(None, env)
    assert (location.source, location.path) == ("hf-cache", cached)
    mine = tmp_path / "env.pt"
    torch.save({}, mine)
    env[checkpoints.ENV_VAR] = str(mine)
    assert checkpoints.locate_checkpoint(None, env).path == mine
    assert checkpoints.locate_checkpoint(str(cached), env).source == "argument"
    assert checkpoints.resolve_checkpoint(None, env, download=False) == mine


def test_discovery_without_anything(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "empty")}
    location = checkpoints.locate_checkpoint(None, env)
    assert location.source == "download" and location.path is None
    with pytest.raises(CheckpointError, match="no SAM 3 checkpoint found"):
        checkpoints.resolve_checkpoint(None, env, download=False)
    with pytest.raises(SourceNotFoundError, match="SAM3VIDEO_CHECKPOINT"):
        checkpoints.locate_checkpoint(None, {checkpoints.ENV_VAR: str(tmp_path / "x.pt")})


def test_verify_checkpoint(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(1000.0)}, good)
    assert checkpoints.verify_checkpoint(good) == good
    assert zipfile.is_zipfile(good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for bad, why in ((cut, "cut short"), (empty, "empty")):
        with pytest.raises(CheckpointError, match=why):
            checkpoints.verify_checkpoint(bad, "hf-cache")
    with pytest.raises(CheckpointError, match="expected a file"):
        checkpoints.verify_checkpoint(tmp_path)
    from safetensors.torch import save_file

    tensors = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(3)}, tensors)
    assert checkpoints.verify_checkpoint(tensors) == tensors
    broken = tmp_path / "b.safetensors"
    broken.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(CheckpointError, match="safetensors header"):
        checkpoints.verify_checkpoint(broken)


def test_download_errors_say_what_to_do():
    def named(name: str, base: type = Exception) -> Exception:
        return type(name, (base,), {})("details")

    gated = checkpoints.explain_download_error(named("GatedRepoError"))
    assert "accept the licence" in str(gated) and "`hf auth login`" in str(gated)
    offline = checkpoints.explain_download_error(named("LocalEntryNotFoundError"))
    assert "cannot be reached" in str(offline)
    missing = checkpoints.explain_download_error(ImportError("no module"))
    assert "pip install 'sam3video[hub]'" in str(missing)
    other = checkpoints.explain_download_error(named("HfHubHTTPError"))
    for error in (gated, offline, missing, other):
        assert isinstance(error, CheckpointError)
        assert "--checkpoint PATH" in str(error) and "\n" not in str(error)


# --------------------------------------------------------------------- download


@pytest.fixture
def fake_hub(monkeypatch):
    """A stand-in ``huggingface_hub``: records downloads and the log verbosity during them."""
    calls: list[int] = []
    level = [logging.WARNING]
    hub = types.ModuleType("huggingface_hub")
    utils = types.ModuleType("huggingface_hub.utils")
    hub_logging = types.ModuleType("huggingface_hub.utils.logging")
    hub_logging.get_verbosity = lambda: level[0]
    hub_logging.set_verbosity = lambda value: level.__setitem__(0, value)
    hub_logging.set_verbosity_error = lambda: level.__setitem__(0, logging.ERROR)

    def hf_hub_download(repo_id, filename):
        calls.append(level[0])
        return f"/cache/{repo_id}/{filename}"

    hub.hf_hub_download = hf_hub_download
    hub.utils, utils.logging = utils, hub_logging
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    monkeypatch.setitem(sys.modules, "huggingface_hub.utils", utils)
    monkeypatch.setitem(sys.modules, "huggingface_hub.utils.logging", hub_logging)
    return calls, level


REFUSED = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused


def test_download_fails_fast_when_the_hub_cannot_be_reached(fake_hub):
    calls, _ = fake_hub
    for endpoint, why in ((REFUSED, "127.0.0.1: "), ("https://nonexistent.invalid", "")):
        start = time.monotonic()
        with pytest.raises(CheckpointError, match="cannot be reached") as info:
            checkpoints.download_checkpoint({"HF_ENDPOINT": endpoint}, probe_timeout=2.0)
        assert time.monotonic() - start < 3.0, "no retries"
        message = str(info.value)
        assert endpoint in message and why in message and "--checkpoint PATH" in message
    assert calls == [], "the hub client is not called offline"


def test_download_offline_mode_and_missing_hub(fake_hub, monkeypatch):
    calls, _ = fake_hub
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set"):
        checkpoints.download_checkpoint({"HF_HUB_OFFLINE": "1"})
    assert calls == []
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(CheckpointError, match=r"pip install 'sam3video\[hub\]'.*hf auth login"):
        checkpoints.download_checkpoint({})


def test_download_silences_the_hub_log(fake_hub, monkeypatch):
    calls, level = fake_hub
    monkeypatch.setattr(checkpoints, "_unreachable", lambda url, timeout: None)  # "online"
    assert checkpoints.download_checkpoint({}) == Path("/cache/facebook/sam3/sam3.pt")
    assert calls == [logging.ERROR] and level == [logging.WARNING], "restored afterwards"
    # Behind a proxy the direct check is skipped: the hub is asked at once.
    monkeypatch.setattr(checkpoints, "_unreachable", lambda url, timeout: "unreachable")
    assert checkpoints.download_checkpoint({"HTTPS_PROXY": "http://proxy:3128"}).name == "sam3.pt"


def test_download_with_the_real_hub_offline(monkeypatch, capfd, tmp_path):
    """The ``[hub]`` extra installed, no connection: one error at once, nothing printed."""
    pytest.importorskip("huggingface_hub", reason="the [hub] extra is not installed")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="cannot be reached"):
        checkpoints.resolve_checkpoint(None, {"HF_ENDPOINT": REFUSED, "HF_HOME": str(tmp_path)})
    assert time.monotonic() - start < 5.0
    out, err = capfd.readouterr()
    assert out == "" and "Retrying" not in err and err == ""
