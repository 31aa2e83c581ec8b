"""Shared harness of the server tests (no tests here): a real uvicorn server on a loopback
port in a thread, the tiny model (built once per test process), small synthetic media.

The tiny model runs on synthetic weights: masks are meaningless but deterministic, so a
server's answers can be compared exactly with in-process runs of the same predictor.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from _media import write_images, write_video

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from sam3video import Sam3VideoPredictor  # noqa: E402
from sam3video.server.app import create_app  # noqa: E402
from sam3video.server.config import ServerConfig  # noqa: E402

TOKEN = "test-token"
CLIP = "clip.mp4"  # 8 frames, 64x48
LONG = "long.mp4"  # 48 frames, 64x48: propagations long enough to interrupt
FRAMES = "frames"  # a folder of 8 JPEG frames
H, W = 48, 64


@functools.cache
def tiny_predictor() -> Sam3VideoPredictor:
    """One tiny-model predictor per test process, shared by the servers (each closes only the
    sessions it opened)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Sam3VideoPredictor(model_config="tiny", device="cpu")


def make_media(root: Path) -> Path:
    """The videos the tests open, under ``root`` (the server's media root)."""
    root.mkdir(parents=True, exist_ok=True)
    write_video(root / CLIP, 8)
    write_video(root / LONG, 48)
    write_images(root / FRAMES, [f"{i:05d}.jpg" for i in range(8)])
    return root


class RunningServer:
    """A uvicorn server on 127.0.0.1 and an arbitrary free port, in a thread."""

    def __init__(self, app) -> None:
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def core(self):
        return self.app.state.core

    def client(self, token: str | None = TOKEN, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)


@contextlib.contextmanager
def serve(media_root: Path, **config) -> Iterator[RunningServer]:
    """A running server of the tiny predictor; ``config``: `ServerConfig` fields."""
    config.setdefault("token", TOKEN)
    app = create_app(tiny_predictor(), ServerConfig(media_root=media_root, **config))
    with RunningServer(app) as running:
        yield running


def assert_same_outputs(got: dict, expected: dict) -> None:
    """Equal predictor outputs: same ids, masks equal bit for bit, same scores and boxes."""
    assert sorted(got) == sorted(expected)
    for obj_id, out in expected.items():
        mask = got[obj_id]["mask"]
        assert mask.dtype == np.bool_ and mask.shape == out["mask"].shape
        assert np.array_equal(mask, out["mask"]), f"object {obj_id}: masks differ"
        assert got[obj_id]["score"] == out["score"]
        assert got[obj_id]["bbox"] == [int(v) for v in out["bbox"]]


def wait_for(predicate, timeout: float = 10.0, step: float = 0.01):
    """Poll until ``predicate()`` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
