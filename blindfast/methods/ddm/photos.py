"""DDM's data: a camera's photos kept as uint8 and cropped lazily, and the located patches both steps draw.

A folder of twenty 20-megapixel photos is 1.2 GB as uint8 (4.8 GB as float32): the photos stay uint8 and only the
patches of a batch become float. Images are in [-1, 1] for the priors (``2 x - 1``).

Locations are the camera frame's normalised coordinates of a patch centre,
``u = 2 row / (H - 1) - 1, v = 2 col / (W - 1) - 1`` (as :class:`blindfast.data.RandomPatches`), given to the prior
as two constant ``cond`` planes. The PSF of a space-varying lens is tied to them, so every blurry photo must have
the camera's one frame size; sharp photos may have any size (their content is blurred as if it stood at a location
drawn over the frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from blindfast import _validate
from blindfast.data import (IMAGE_SUFFIXES, CropRegion, crop_at, normalised_location, read_image,
                            sample_crop_origins)

__all__ = ["PhotoSet", "BlurryPatches", "SharpPatches", "location_planes"]


class PhotoSet:
    """Photos as (C, H, W) uint8 tensors (values ``round(255 x)``), in a fixed order.

    Args:
        photos: (C, H, W) tensors, uint8 or float in [0, 1], one channel count.
        name: what the set is called in errors ("sharp", "blurry").
    Raises:
        ValueError: no photos, or photos of different channel counts.
    """

    def __init__(self, photos: Sequence[Tensor], name: str):
        if len(photos) == 0:
            raise ValueError(f"the {name} set holds no photos")
        self.name = name
        self.photos = [p if p.dtype == torch.uint8 else (p.clamp(0, 1) * 255).round().to(torch.uint8)
                       for p in photos]
        channels = {p.shape[0] for p in self.photos}
        if len(channels) != 1:
            raise ValueError(f"the {name} photos must all have one channel count, got {sorted(channels)}")
        self.channels = channels.pop()
        self.regions = [CropRegion(i, 0, p.shape[-2], 0, p.shape[-1]) for i, p in enumerate(self.photos)]

    @classmethod
    def from_folder(cls, root, name: str, *, grey: bool = False) -> PhotoSet:
        """Every image file under ``root`` (recursively, sorted by path), read one at a time.

        Raises:
            FileNotFoundError: ``root`` is not a folder.
            ValueError: it holds no image file (the message names the suffixes looked for).
            OSError: a file that cannot be decoded (the message names it).
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"the {name} folder {root} does not exist or is not a folder")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"the {name} folder {root} holds no image ({', '.join(IMAGE_SUFFIXES)} files)")
        return cls([(read_image(f, grey=grey) * 255).round().to(torch.uint8) for f in files], name)

    def check_min_size(self, size: int, what: str) -> None:
        """ValueError naming the first photo smaller than ``size`` x ``size`` pixels (``what`` needs them)."""
        for i, photo in enumerate(self.photos):
            if min(photo.shape[-2:]) < size:
                raise ValueError(f"{self.name} photo {i} is {tuple(photo.shape[-2:])} pixels, smaller than the "
                                 f"{size} x {size} {what}")

    def frame_size(self) -> tuple[int, int]:
        """(H, W) shared by every photo: the camera's frame.

        Raises:
            ValueError: photos of different sizes.
        """
        sizes = sorted({tuple(p.shape[-2:]) for p in self.photos})
        if len(sizes) != 1:
            raise ValueError(f"the {self.name} photos must all have one size (one camera's frames, so that a PSF "
                             f"grid means one place in all of them), got sizes {sizes}")
        return sizes[0]

    def crops(self, count: int, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``count`` random ``size`` x ``size`` crops, every position of every photo equally likely.

        Returns:
            (crops (count, C, size, size) float32 in [-1, 1], centres (count, 2) float64 (row, col) pixels).
        """
        origins = sample_crop_origins(self.regions, size, count, generator)
        centres = origins[:, 1:].double() + (size - 1) / 2
        return crop_at(self.photos, origins, size).float().mul_(2 / 255).sub_(1), centres


def location_planes(locations: Tensor, size: int) -> Tensor:
    """(B, 2) normalised locations -> (B, 2, size, size) constant float32 planes, the priors' ``cond``."""
    return locations.float()[:, :, None, None].expand(-1, -1, size, size).contiguous()


class BlurryPatches:
    """Step 1's data source: random patches of the blurry photos with their location planes.

    Each patch independently, with probability ``random_location_fraction``, gets a location drawn uniformly in
    [-1, 1]^2 instead of its own (DDM's ``random_replace_locmap``, 0.2 in the paper's configs): the prior then also
    models the location-free mixture, and cannot rely on location alone.

    Called as ``(count, generator) -> (patches (count, C, size, size), cond (count, 2, size, size))``, the
    callable data source of :func:`blindfast.train.train_prior`.
    """

    def __init__(self, photos: PhotoSet, size: int, random_location_fraction: float = 0.2):
        self.photos = photos
        self.size = _validate.positive_int("size", size)
        self.frame = photos.frame_size()
        photos.check_min_size(self.size, "patch")
        self.random_location_fraction = _validate.real("random_location_fraction", random_location_fraction, 0, 1)

    def __call__(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        patches, centres = self.photos.crops(count, self.size, generator)
        locations = normalised_location(centres, self.frame)
        replace = torch.rand(count, generator=generator) < self.random_location_fraction
        drawn = 2 * torch.rand(count, 2, generator=generator, dtype=torch.float64) - 1
        locations = torch.where(replace[:, None], drawn, locations)
        return patches, location_planes(locations, self.size)


class SharpPatches:
    """Step 2's clean data: sharp crops large enough for a "valid" blur to a ``size`` patch, each placed at a
    location of the camera frame drawn uniformly over the centres a ``size`` patch can have there.

    With a super-resolution ``factor`` f the crops are high-resolution, ``f size + k - 1`` pixels: a "valid" blur
    then keeping one pixel in f (:func:`blindfast.methods.ddm.sr_operator.blur_decimate_patches`) gives a ``size``
    patch of the low-resolution frame, where the centres lie.

    Called as ``(count, generator) -> (crops (count, C, f size + k - 1, f size + k - 1), centres (count, 2))``: the
    centres are (row, col) pixels of the frame, where the lens' PSF is evaluated.
    """

    def __init__(self, photos: PhotoSet, size: int, kernel_size: int, frame: tuple[int, int], factor: int = 1):
        self.photos = photos
        self.size = _validate.positive_int("size", size)
        self.factor = _validate.positive_int("factor", factor)
        self.crop = self.factor * self.size + _validate.positive_int("kernel_size", kernel_size) - 1
        scaled = f"{self.factor} x " if self.factor > 1 else ""
        photos.check_min_size(self.crop, f"crop (patch {scaled}{size} + kernel {kernel_size} - 1)")
        self.frame = frame

    def __call__(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        crops, _ = self.photos.crops(count, self.crop, generator)
        low = (self.size - 1) / 2
        span = torch.tensor([self.frame[0] - self.size, self.frame[1] - self.size], dtype=torch.float64)
        centres = low + torch.rand(count, 2, generator=generator, dtype=torch.float64) * span
        return crops, centres
