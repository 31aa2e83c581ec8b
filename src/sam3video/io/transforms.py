"""Frames -> model input: square resize, scale to [0, 1], normalise with mean 0.5 / std 0.5.

SAM 3 feeds every frame to the model as a ``(3, S, S)`` tensor (``S = image_size``, 1008 for
the released model), squashed to a square without keeping the aspect ratio.

Decisions
---------
* The reference semantics are those of SAM 3's JPEG-folder path: PIL bilinear resize of the
  uint8 RGB image (antialiased when shrinking), then ``/ 255``, then ``(x - 0.5) / 0.5``, so
  values lie in ``[-1, 1]``. SAM 3's cv2 video path forgets the ``/ 255`` (upstream issue
  #493); that bug is not reproduced.
* The resize runs where the tensor lives: the uint8 frame is uploaded first (3x fewer bytes
  than float) and resized on ``device``.
  - On CPU: ``F.interpolate(uint8, mode="bilinear", antialias=True, align_corners=False)``,
    PyTorch's uint8 kernel written to match PIL (fast, and its output is uint8 like PIL's).
  - Elsewhere (CUDA, MPS): the same filter in float32, as two separable passes (horizontal,
    then vertical) each rounded half up to uint8 levels, which is how PIL computes it. Where
    a device lacks the antialiased kernel, the resize falls back to the CPU.
  Either way the result is within one grey level (1/255 before normalisation) of
  ``PIL.Image.resize(..., BILINEAR)`` at every pixel, identical on most pixels.
* Normalisation is computed in float32 and cast to ``dtype`` last.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.errors import InvalidInputError

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "to_model_batch", "to_model_input"]

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


def to_model_input(
    frame: np.ndarray,
    image_size: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """One uint8 ``(H, W, 3)`` RGB frame -> normalised ``(3, image_size, image_size)`` tensor.

    Args:
        frame: uint8 ``(H, W, 3)`` RGB, e.g. ``FrameSource[i]``.
        image_size: side ``S`` of the square model input.
        device: where the result lives (and the resize runs); CPU when ``None``.
        dtype: floating dtype of the result.
    """
    _check_frame(frame, "frame")
    return to_model_batch(frame[None], image_size, device=device, dtype=dtype)[0]


def to_model_batch(
    frames: np.ndarray | Sequence[np.ndarray],
    image_size: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """uint8 frames ``(T, H, W, 3)`` (array or sequence of equal-size ``(H, W, 3)``) ->
    normalised ``(T, 3, image_size, image_size)``; equal to stacking `to_model_input`."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise InvalidInputError(f"image_size: expected a positive int, got {image_size!r}")
    if image_size < 1:
        raise InvalidInputError(f"image_size: expected a positive int, got {image_size}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidInputError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    if isinstance(frames, np.ndarray):
        batch = frames
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
            raise InvalidInputError(
                f"frames: expected a uint8 RGB array (T, H, W, 3), got {batch.dtype} {batch.shape}"
            )
        if 0 in batch.shape:
            raise InvalidInputError(f"frames: expected a non-empty batch, got shape {batch.shape}")
    else:
        if len(frames) == 0:
            raise InvalidInputError("frames: expected at least one frame, got an empty sequence")
        for k, frame in enumerate(frames):
            _check_frame(frame, f"frames[{k}]")
            if frame.shape != frames[0].shape:
                raise InvalidInputError(
                    f"frames[{k}]: expected shape {frames[0].shape} like frames[0], "
                    f"got {frame.shape}"
                )
        batch = np.stack(frames)

    target = torch.device("cpu") if device is None else torch.device(device)
    pixels = torch.from_numpy(np.ascontiguousarray(batch)).to(target)  # upload uint8
    pixels = pixels.permute(0, 3, 1, 2)  # (T, 3, H, W)
    resized = _resize_like_pil(pixels, image_size)  # float32 holding integer levels 0..255
    mean = torch.tensor(IMAGE_MEAN, device=resized.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=resized.device).view(1, 3, 1, 1)
    return ((resized / 255.0 - mean) / std).to(dtype).contiguous()


def _check_frame(frame: object, name: str) -> None:
    if not isinstance(frame, np.ndarray):
        raise InvalidInputError(
            f"{name}: expected a numpy uint8 array (H, W, 3), got {type(frame).__name__}"
        )
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise InvalidInputError(
            f"{name}: expected a uint8 RGB array (H, W, 3), got {frame.dtype} {frame.shape}"
        )
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise InvalidInputError(f"{name}: expected a non-empty image, got shape {frame.shape}")


def _resize_like_pil(pixels: Tensor, size: int) -> Tensor:
    """uint8 ``(T, 3, H, W)`` -> float32 ``(T, 3, size, size)`` integer levels, PIL bilinear."""
    if pixels.device.type == "cpu":
        return _resize_uint8_kernel(pixels, size)
    try:
        return _resize_two_pass(pixels, size)
    except NotImplementedError:  # a backend without the antialiased kernel
        return _resize_uint8_kernel(pixels.cpu(), size).to(pixels.device)


def _resize_uint8_kernel(pixels: Tensor, size: int) -> Tensor:
    # PyTorch's uint8 antialiased bilinear kernel (CPU) follows PIL's fixed-point algorithm.
    out = F.interpolate(
        pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return out.float()


def _resize_two_pass(pixels: Tensor, size: int) -> Tensor:
    # PIL resamples horizontally, then vertically, rounding half up to uint8 after each pass
    # (torch.round would round half to even, and upscaling by simple ratios hits halves often).
    x = pixels.float()
    for out_size in ((x.shape[-2], size), (size, size)):
        x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False, antialias=True)
        x = x.add_(0.5).floor_().clamp_(0, 255)
    return x
