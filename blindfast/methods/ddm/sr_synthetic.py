"""A synthetic low-resolution camera on the embedded photos: unpaired high-resolution sharp frames and
low-resolution frames of a known super-resolution kernel, as :mod:`blindfast.methods.ddm.synthetic` for a lens.

Each training photo is cut in halves (:func:`blindfast.methods.ddm.synthetic.halves`); the frames of one half stay
sharp at full resolution, those of the other go through the camera: ``BlurDownsample(factor, "reflect")`` (blur by
the kernel, keep pixel (0, 0) of every factor x factor block), Gaussian noise, 8-bit rounding. The test photos'
centre frames are kept apart for judging the restoration. ``content="mosaic"`` builds both sets from mosaics of
checkerboard blocks instead (:func:`blindfast.methods.ddm.synthetic.camera_of`), decimated after assembly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast.methods.ddm.synthetic import SyntheticCamera, camera_of
from blindfast.physics import BlurDownsample

__all__ = ["sr_capture", "sr_camera", "PADDING"]

PADDING = "reflect"


def sr_capture(frames: Tensor, kernel: Tensor, factor: int, noise: float, generator: torch.Generator) -> Tensor:
    """(N, C, H, W) scenes in [0, 1] -> (N, C, H / f, W / f): ``BlurDownsample(f, "reflect")`` with ``kernel``
    ((k, k) or (1, C|1, k, k)) plus Gaussian noise of std ``noise``."""
    low = BlurDownsample(factor, PADDING).A(frames, kernel=kernel.to(frames.dtype))
    return low + noise * torch.randn(low.shape, generator=generator, dtype=low.dtype)


def sr_camera(kernel: Tensor, factor: int = 2, *, frame: int = 256, stride: int = 64, noise: float = 0.01,
              seed: int = 0, content: str = "halves") -> SyntheticCamera:
    """Unpaired sharp high-resolution frames and low-resolution frames of the embedded photos, and test frames.

    Args:
        kernel: (k, k) the camera's kernel, non-negative, summing to 1.
        factor: the decimation factor f.
        frame: the high-resolution frame side, pixels, divisible by f.
        stride: pixels between the corners of frames cut from one photo.
        noise: the sensor noise std (images in [0, 1]).
        seed: seeds the noise (and the mosaics' draws).
        content: "halves" or "mosaic" (:func:`blindfast.methods.ddm.synthetic.camera_of`).
    Returns:
        :class:`SyntheticCamera`: ``sharp`` frame x frame, ``blurry`` (frame / f)^2 uint8, ``test_sharp``
        (T, C, frame, frame) and ``test_blurry`` (T, C, frame / f, frame / f) float32 (noisy, not rounded).
    Raises:
        ValueError: a frame not divisible by the factor (or, for "mosaic", by the block).
    """
    if frame % factor:
        raise ValueError(f"frame must be divisible by the factor {factor}, got {frame}")
    return camera_of(lambda scenes, generator: sr_capture(scenes, kernel, factor, noise, generator), frame=frame,
                     stride=stride, seed=seed, content=content)
