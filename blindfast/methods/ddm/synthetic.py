"""A synthetic camera on the embedded photos: unpaired sharp and blurry frames of a lens with a known PSF grid.

The main job's data (``blindfast demo``) and the quality runs': frames of one size are cut from the embedded
training photos (:func:`blindfast.data.embedded_images`); each photo is cut in two halves across its longer side,
the frames of one half stay sharp, those of the other go through the lens (``sv_conv`` with "reflect" boundaries,
then Gaussian noise, then 8-bit rounding, as a camera writes them); which half is sharp alternates between photos.
Sharp and blurry frames never share a pixel, yet both sets see every photo: DDM matches distributions, and with
whole photos on each side (a motorcycle's texture against an astronaut's smooth suit) the difference in content
alone would be matched by blurring. The test photos are kept apart for judging the deblurring.

``content="mosaic"`` matches the two sets' content more closely: every photo is cut into a checkerboard of 64 px
blocks, the blocks of one colour are the sharp set's, those of the other the blurry set's, and each frame is a
mosaic of random blocks of its set, assembled BEFORE the camera, which then blurs across the block edges as it
would across any scene. Halves still differ in content (one side of the motorcycle against the other), and DDM's
step 2 turns whatever differs between the sets into blur (the README's lens analysis: the lens drifts from the
truth to relative error 0.28 with halves, 0.07 with mosaics); mosaics put every region of every photo on both
sides, and a frame's content no longer depends on where in the frame it lies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.methods.ddm.photos import PhotoSet
from blindfast.ops import sv_conv

__all__ = ["SyntheticCamera", "synthetic_camera", "camera_of", "frames_of", "halves", "capture",
           "checkerboard_blocks", "mosaic_scenes", "CONTENTS"]

# the stereo pair's right view repeats the left one: one view is enough
TRAIN_PHOTOS = ("motorcycle_left", "astronaut", "rocket")
CONTENTS = ("halves", "mosaic")   # what the two sets show: halves of each photo, or mosaics of checkerboard blocks
BLOCK = 64            # a mosaic block's side, pixels
MOSAIC_FRAMES = 24    # mosaic frames per set (the halves camera has 19 per set at frame 256, stride 64)


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


def checkerboard_blocks(photos: list[Tensor], block: int) -> tuple[list[Tensor], list[Tensor]]:
    """The whole ``block`` x ``block`` tiles of each (C, H, W) photo (from its top-left corner; a remainder at the
    right and bottom is left out), split by their colour on a checkerboard, ``(row + col + photo index) % 2``:
    (colour 0's tiles, colour 1's tiles), each (C, block, block). No pixel lies in both."""
    pools: tuple[list[Tensor], list[Tensor]] = ([], [])
    for i, photo in enumerate(photos):
        for r in range(photo.shape[-2] // block):
            for c in range(photo.shape[-1] // block):
                pools[(r + c + i) % 2].append(photo[:, r * block:(r + 1) * block, c * block:(c + 1) * block])
    return pools


def mosaic_scenes(pool: list[Tensor], count: int, frame: int, block: int, generator: torch.Generator) -> Tensor:
    """(count, C, frame, frame) frames, each (frame / block)^2 distinct tiles of ``pool`` ((C, block, block) each)
    drawn at random (one ``randperm`` of the pool per frame, from ``generator``), laid out row by row."""
    side = frame // block
    frames = []
    for _ in range(count):
        chosen = [pool[j] for j in torch.randperm(len(pool), generator=generator)[:side * side].tolist()]
        frames.append(torch.cat([torch.cat(chosen[r * side:(r + 1) * side], dim=-1) for r in range(side)], dim=-2))
    return torch.stack(frames)


def capture(frames: Tensor, psf_grid: Tensor, noise: float, generator: torch.Generator) -> Tensor:
    """(N, C, H, W) scenes in [0, 1] through the lens: ``sv_conv`` (reflect) plus Gaussian noise of std ``noise``."""
    blurred = sv_conv(frames, psf_grid, padding="reflect")
    return blurred + noise * torch.randn(blurred.shape, generator=generator, dtype=blurred.dtype)


def synthetic_camera(psf_grid: Tensor, *, frame: int = 256, stride: int = 64, noise: float = 0.01,
                     seed: int = 0, content: str = "halves") -> SyntheticCamera:
    """Unpaired sharp and blurry frames of the embedded photos, and blurry test frames, for a lens ``psf_grid``.

    Args:
        psf_grid: (1, C, Gy, Gx, k, k) the lens over a ``frame`` x ``frame`` frame.
        frame: the frame side, pixels.
        stride: pixels between the corners of frames cut from one photo (frames overlap below ``frame``).
        noise: the sensor noise std (images in [0, 1]).
        seed: seeds the noise (and the mosaics' draws).
        content: "halves" or "mosaic" (:func:`camera_of`).
    """
    return camera_of(lambda scenes, generator: capture(scenes, psf_grid, noise, generator), frame=frame,
                     stride=stride, seed=seed, content=content)


def camera_of(through: Callable[[Tensor, torch.Generator], Tensor], *, frame: int, stride: int,
              seed: int, content: str = "halves") -> SyntheticCamera:
    """The module's unpaired sets for any camera ``through(scenes, generator)`` ((N, C, frame, frame) scenes in
    [0, 1] -> their noisy captures): the training photos' sharp frames and scenes, the scenes through the camera
    (clamped to [0, 1], stored as uint8), then the test photos' centre frames through it (not clamped), all draws
    from one generator seeded with ``seed``, in that order.

    Args:
        content: "halves": (C, frame, frame) frames every ``stride`` pixels of each photo's sharp or blurry half
            (19 per set at frame 256, stride 64; no draws); "mosaic": MOSAIC_FRAMES (C, frame, frame) frames per
            set, each a mosaic of random BLOCK px tiles of its colour of :func:`checkerboard_blocks` (colour 0
            sharp, colour 1 through the camera; ``stride`` unused), the sharp frames drawn first.
    Raises:
        ValueError: an unknown ``content``, or a mosaic ``frame`` that is not a multiple of BLOCK.
    """
    if content not in CONTENTS:
        raise ValueError(f"content must be one of {CONTENTS}, got {content!r}")
    if content == "mosaic" and frame % BLOCK:
        raise ValueError(f"a mosaic frame must be a multiple of the {BLOCK} px block, got {frame}")
    names = EMBEDDED_SPLITS["train"] + EMBEDDED_SPLITS["test"]
    photos = dict(zip(names, embedded_images("all")))
    generator = torch.Generator().manual_seed(seed)
    sharp, scenes = [], []
    if content == "halves":
        for i, name in enumerate(TRAIN_PHOTOS):
            first, second = halves(photos[name])
            sharp_half, blurry_half = (first, second) if i % 2 == 0 else (second, first)
            sharp += frames_of(sharp_half, frame, stride)
            scenes += frames_of(blurry_half, frame, stride)
    else:
        sharp_pool, blurry_pool = checkerboard_blocks([photos[name] for name in TRAIN_PHOTOS], BLOCK)
        sharp = list(mosaic_scenes(sharp_pool, MOSAIC_FRAMES, frame, BLOCK, generator))
        scenes = list(mosaic_scenes(blurry_pool, MOSAIC_FRAMES, frame, BLOCK, generator))
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
