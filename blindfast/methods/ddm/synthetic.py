"""A synthetic camera on the embedded photos: unpaired sharp and blurry frames of a lens with a known PSF grid.

The main job's data (``blindfast demo``) and the quality runs': frames of one size are cut from the embedded
training photos (:func:`blindfast.data.embedded_images`); each photo is cut in two halves across its longer side,
the frames of one half stay sharp, those of the other go through the lens (``sv_conv`` with "reflect" boundaries,
then Gaussian noise, then 8-bit rounding, as a camera writes them); which half is sharp alternates between photos.
Sharp and blurry frames never share a pixel, yet both sets see every photo: DDM matches distributions, and with
whole photos on each side (a motorcycle's texture against an astronaut's smooth suit) the difference in content
alone would be matched by blurring. The test photos are kept apart for judging the deblurring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.methods.ddm.photos import PhotoSet
from blindfast.ops import sv_conv

__all__ = ["SyntheticCamera", "synthetic_camera", "camera_of", "frames_of", "halves", "capture"]

# the stereo pair's right view repeats the left one: one view is enough
TRAIN_PHOTOS = ("motorcycle_left", "astronaut", "rocket")


class SyntheticCamera(NamedTuple):
    """Attributes:
        sharp: the sharp frames.
        blurry: the blurry frames (uint8, as a camera writes them).
        test_sharp: (T, C, H, W) float32 sharp test frames (from the test photos), in [0, 1].
        test_blurry: (T, C, H, W) float32 the same through the lens, with noise (not rounded), in [0, 1].
    """
    sharp: PhotoSet
    blurry: PhotoSet
    test_sharp: Tensor
    test_blurry: Tensor


def halves(photo: Tensor) -> tuple[Tensor, Tensor]:
    """A (C, H, W) photo cut in two across its longer side."""
    H, W = photo.shape[-2:]
    return (photo[:, : H // 2], photo[:, H // 2:]) if H > W else (photo[:, :, : W // 2], photo[:, :, W // 2:])


def frames_of(photo: Tensor, frame: int, stride: int) -> list[Tensor]:
    """``frame`` x ``frame`` crops of a (C, H, W) photo, top-left corners every ``stride`` pixels."""
    H, W = photo.shape[-2:]
    return [photo[:, top:top + frame, left:left + frame] for top in range(0, H - frame + 1, stride)
            for left in range(0, W - frame + 1, stride)]


def capture(frames: Tensor, psf_grid: Tensor, noise: float, generator: torch.Generator) -> Tensor:
    """(N, C, H, W) scenes in [0, 1] through the lens: ``sv_conv`` (reflect) plus Gaussian noise of std ``noise``."""
    blurred = sv_conv(frames, psf_grid, padding="reflect")
    return blurred + noise * torch.randn(blurred.shape, generator=generator, dtype=blurred.dtype)


def synthetic_camera(psf_grid: Tensor, *, frame: int = 256, stride: int = 64, noise: float = 0.01,
                     seed: int = 0) -> SyntheticCamera:
    """Unpaired sharp and blurry frames of the embedded photos, and blurry test frames, for a lens ``psf_grid``.

    Args:
        psf_grid: (1, C, Gy, Gx, k, k) the lens over a ``frame`` x ``frame`` frame.
        frame: the frame side, pixels.
        stride: pixels between the corners of frames cut from one photo (frames overlap below ``frame``).
        noise: the sensor noise std (images in [0, 1]).
        seed: seeds the noise.
    """
    return camera_of(lambda scenes, generator: capture(scenes, psf_grid, noise, generator), frame=frame,
                     stride=stride, seed=seed)


def camera_of(through: Callable[[Tensor, torch.Generator], Tensor], *, frame: int, stride: int,
              seed: int) -> SyntheticCamera:
    """The module's unpaired sets for any camera ``through(scenes, generator)`` ((N, C, frame, frame) scenes in
    [0, 1] -> their noisy captures): the training halves' frames, sharp or through it (clamped to [0, 1], stored as
    uint8), then the test photos' centre frames through it (not clamped), the noise drawn in that order."""
    names = EMBEDDED_SPLITS["train"] + EMBEDDED_SPLITS["test"]
    photos = dict(zip(names, embedded_images("all")))
    generator = torch.Generator().manual_seed(seed)
    sharp, scenes = [], []
    for i, name in enumerate(TRAIN_PHOTOS):
        first, second = halves(photos[name])
        sharp_half, blurry_half = (first, second) if i % 2 == 0 else (second, first)
        sharp += frames_of(sharp_half, frame, stride)
        scenes += frames_of(blurry_half, frame, stride)
    blurry = through(torch.stack(scenes), generator).clamp(0, 1)
    # one frame per test photo, from its centre
    test = []
    for name in EMBEDDED_SPLITS["test"]:
        H, W = photos[name].shape[-2:]
        top, left = (H - frame) // 2, (W - frame) // 2
        test.append(photos[name][:, top:top + frame, left:left + frame])
    test_sharp = torch.stack(test)
    test_blurry = through(test_sharp, generator)
    return SyntheticCamera(PhotoSet(sharp, "sharp"), PhotoSet(list(blurry), "blurry"), test_sharp, test_blurry)
