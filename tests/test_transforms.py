"""to_model_input / to_model_batch: PIL-bilinear square resize, /255, (x - 0.5) / 0.5."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sam3video.errors import InvalidInputError
from sam3video.io import to_model_batch, to_model_input
from sam3video.io.transforms import _resize_two_pass, _resize_uint8_kernel

ONE_LEVEL = 2.0 / 255.0  # one uint8 grey level after (x / 255 - 0.5) / 0.5


def _random_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth content plus noise: both the typical and the hardest case for a resampler.
    y, x = np.mgrid[0:height, 0:width]
    smooth = (np.sin(x / 7.0)[..., None] + np.cos(y / 5.0)[..., None]) * 60 + 128
    noise = rng.normal(0, 25, (height, width, 3))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def _official_jpeg_path(frame: np.ndarray, size: int) -> np.ndarray:
    """SAM 3's image-folder semantics: PIL bilinear resize of the uint8 image, /255, normalise."""
    resized = np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR))
    return ((resized.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


@pytest.mark.parametrize(
    "height,width,size",
    [(272, 640, 112), (72, 128, 160), (48, 64, 64), (300, 200, 96), (5, 7, 16)],
)
def test_matches_pil_bilinear_within_one_level(height: int, width: int, size: int) -> None:
    frame = _random_frame(height, width)
    out = to_model_input(frame, size)
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    expected = _official_jpeg_path(frame, size)
    diff = np.abs(out.numpy() - expected)
    assert diff.max() <= ONE_LEVEL + 1e-6
    assert (diff > 1e-6).mean() < 0.05  # identical on most pixels


def test_range_and_no_missing_division() -> None:
    frame = np.zeros((20, 30, 3), np.uint8)
    frame[:, 15:] = 255
    out = to_model_input(frame, 24)
    assert out.min().item() == pytest.approx(-1.0) and out.max().item() == pytest.approx(1.0)
    # The official cv2 path forgets /255 and would give values up to 509.
    assert out.abs().max().item() <= 1.0 + 1e-6


def test_channels_stay_in_rgb_order() -> None:
    frame = np.zeros((10, 10, 3), np.uint8)
    frame[..., 0] = 255  # red
    out = to_model_input(frame, 8)
    assert torch.allclose(out[0], torch.ones(8, 8))
    assert torch.allclose(out[1:], -torch.ones(2, 8, 8))


def test_dtype_and_device() -> None:
    frame = _random_frame(30, 40)
    ref = to_model_input(frame, 32)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        out = to_model_input(frame, 32, device="cpu", dtype=dtype)
        assert out.dtype == dtype and out.device.type == "cpu"
        assert torch.allclose(out.float(), ref, atol=1e-2)
    assert to_model_input(frame, 32, device=torch.device("cpu")).is_contiguous()


def test_batch_equals_stacked_singles() -> None:
    frames = [_random_frame(36, 52, seed=s) for s in range(3)]
    batch = to_model_batch(frames, 40)
    assert batch.shape == (3, 3, 40, 40)
    for k, frame in enumerate(frames):
        assert torch.equal(batch[k], to_model_input(frame, 40))
    assert torch.equal(to_model_batch(np.stack(frames), 40), batch)


def test_device_path_resize_matches_pil() -> None:
    # The two-pass float resize used on CUDA/MPS, checked here on CPU against PIL.
    for height, width, size in [(272, 640, 112), (72, 128, 160), (300, 200, 96)]:
        frame = _random_frame(height, width, seed=3)
        pixels = torch.from_numpy(frame).permute(2, 0, 1)[None]
        two_pass = _resize_two_pass(pixels, size)[0].permute(1, 2, 0).numpy()
        kernel = _resize_uint8_kernel(pixels, size)[0].permute(1, 2, 0).numpy()
        pil = np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR))
        assert np.abs(two_pass - pil).max() <= 1 and (two_pass != pil).mean() < 0.05
        assert np.abs(kernel - pil).max() <= 1


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((0, 10, 3), np.uint8),
        [[0, 0, 0]],
        torch.zeros(10, 10, 3, dtype=torch.uint8),
    ],
)
def test_bad_frames(frame: object) -> None:
    with pytest.raises(InvalidInputError, match="frame"):
        to_model_input(frame, 16)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -4, 16.0, True, "16"])
def test_bad_image_size(size: object) -> None:
    with pytest.raises(InvalidInputError, match="image_size"):
        to_model_input(np.zeros((4, 4, 3), np.uint8), size)  # type: ignore[arg-type]


def test_bad_batches_and_dtype() -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        to_model_batch([], 8)
    with pytest.raises(InvalidInputError, match=r"frames\[1\]"):
        to_model_batch([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)], 8)
    with pytest.raises(InvalidInputError, match="frames"):
        to_model_batch(np.zeros((0, 4, 4, 3), np.uint8), 8)
    with pytest.raises(InvalidInputError, match="dtype"):
        to_model_input(np.zeros((4, 4, 3), np.uint8), 8, dtype=torch.int64)
