"""Fixtures shared by the test modules."""

from __future__ import annotations

import warnings

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and robust on a busy 2-core machine.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def predictor():
    """A tiny-model `Sam3VideoPredictor` on the CPU (synthetic weights: the masks are
    meaningless, the behaviour is what is tested), one per test module, closed after it."""
    from sam3video.predictor import Sam3VideoPredictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = Sam3VideoPredictor(model_config="tiny", device="cpu")
    yield p
    p.shutdown()


@pytest.fixture(scope="module")
def no_grad():
    """Run a test under ``torch.inference_mode`` (as the predictor's public methods do);
    the video layer itself leaves autograd to its caller, so the model stays trainable."""
    with torch.inference_mode():
        yield


# The server tests (test_server, test_server_stream, test_client) share one setup: a media root
# with their clips and a real uvicorn server on loopback, module-scoped. Modules that need
# another server (security, browser, streams) define their own ``server``, which wins.


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A media root holding the server tests' clips (`test_server_harness.make_media`)."""
    from test_server_harness import make_media

    return make_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def server(media):
    """A running server (tiny model) on loopback, serving ``media``."""
    from test_server_harness import serve

    with serve(media) as running:
        yield running


@pytest.fixture
def http(server):
    """An HTTP client of ``server``."""
    with server.client() as client:
        yield client


@pytest.fixture
def no_checkpoint_env(monkeypatch, tmp_path):
    """No checkpoint anywhere: no ``SAM3VIDEO_CHECKPOINT``, an empty offline Hugging Face
    home under ``tmp_path`` (returned), and ``tmp_path`` as the working directory."""
    from sam3video import checkpoints

    monkeypatch.delenv(checkpoints.ENV_VAR, raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "hf"
