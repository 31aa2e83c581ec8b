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
