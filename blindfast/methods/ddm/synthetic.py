"""A synthetic camera on the embedded photos: unpaired sharp and blurry frames of a lens with a known PSF grid.

The main job's data (``blindfast demo``) and the quality runs': frames of one size are cut from the embedded
photos (:func:`blindfast.data.embedded_images`); the frames of some photos stay sharp, those of the others go
through the lens (``sv_conv`` with "reflect" boundaries, then Gaussian noise, then 8-bit rounding, as a camera
writes them). Sharp and blurry frames never share a photo; the stereo pair stays on one side. The test photos are
kept apart for judging the deblurring.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.methods.ddm.photos import PhotoSet
from blindfast.ops import sv_conv

__all__ = ["SyntheticCamera", "synthetic_camera", "frames_of", "capture"]

# the training photos by side: the stereo pair is sharp, the other two are seen through the lens
SHARP_PHOTOS = ("motorcycle_left", "motorcycle_right")
BLURRY_PHOTOS = ("astronaut", "rocket")


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


def frames_of(photo: Tensor, frame: int, stride: int) -> list[Tensor]:
    """``frame`` x ``frame`` crops of a (C, H, W) photo, top-left corners every ``stride`` pixels."""
    H, W = photo.shape[-2:]
    return [photo[:, top:top + frame, left:left + frame] for top in range(0, H - frame + 1, stride)
            for left in range(0, W - frame + 1, stride)]


def capture(frames: Tensor, psf_grid: Tensor, noise: float, generator: torch.Generator) -> Tensor:
    """(N, C, H, W) scenes in [0, 1] through the lens: ``sv_conv`` (reflect) plus Gaussian noise of std ``noise``."""
    blurred = sv_conv(frames, psf_grid, padding="reflect")
    return blurred + noise * torch.randn(blurred.shape, generator=generator, dtype=blurred.dtype)


def synthetic_camera(psf_grid: Tensor, *, frame: int = 256, stride: int = 128, noise: float = 0.01,
                     seed: int = 0) -> SyntheticCamera:
    """Unpaired sharp and blurry frames of the embedded photos, and blurry test frames, for a lens ``psf_grid``.

    Args:
        psf_grid: (1, C, Gy, Gx, k, k) the lens over a ``frame`` x ``frame`` frame.
        frame: the frame side, pixels.
        stride: pixels between the corners of frames cut from one photo (frames overlap below ``frame``).
        noise: the sensor noise std (images in [0, 1]).
        seed: seeds the noise.
    """
    names = EMBEDDED_SPLITS["train"] + EMBEDDED_SPLITS["test"]
    photos = dict(zip(names, embedded_images("all")))
    generator = torch.Generator().manual_seed(seed)
    sharp = [f for name in SHARP_PHOTOS for f in frames_of(photos[name], frame, stride)]
    scenes = torch.stack([f for name in BLURRY_PHOTOS for f in frames_of(photos[name], frame, stride)])
    blurry = capture(scenes, psf_grid, noise, generator).clamp(0, 1)
    # one frame per test photo, from its centre
    test = []
    for name in EMBEDDED_SPLITS["test"]:
        H, W = photos[name].shape[-2:]
        top, left = (H - frame) // 2, (W - frame) // 2
        test.append(photos[name][:, top:top + frame, left:left + frame])
    test_sharp = torch.stack(test)
    test_blurry = capture(test_sharp, psf_grid, noise, generator)
    return SyntheticCamera(PhotoSet(sharp, "sharp"), PhotoSet(list(blurry), "blurry"), test_sharp, test_blurry)
