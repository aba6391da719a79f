"""The data of a training run: sources that draw batches of patches from a generator they are given, so that a run
that checkpoints the generator resumes on the same data.

A data source maps (number of images, generator) to a (B, C, H, W) batch in [-1, 1], or to a (batch, cond) pair
with cond (B, C_cond, H, W), drawing everything from the given CPU generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from blindfast.data import ImageFolder, RandomPatches

__all__ = ["DataSource", "TensorPatches", "ImagePatches", "as_source", "draw_batch"]

DataSource = Callable[[int, torch.Generator], "Tensor | tuple[Tensor, Tensor]"]




class TensorPatches:
    """Batches drawn uniformly, with replacement, from a fixed set of patches.

    Args:
        patches: (N, C, H, W) floating tensor with values in [-1, 1].
    Raises:
        ValueError: not a non-empty floating (N, C, H, W) tensor, or values outside [-1, 1].
    """

    def __init__(self, patches: Tensor):
        if not isinstance(patches, Tensor) or patches.dim() != 4 or not patches.is_floating_point() \
                or patches.shape[0] == 0:
            got = f"{patches.dtype} {tuple(patches.shape)}" if isinstance(patches, Tensor) else type(patches).__name__
            raise ValueError(f"patches must be a non-empty floating (N, C, H, W) tensor, got {got}")
        low, high = patches.min().item(), patches.max().item()
        if not (-1 <= low and high <= 1):
            raise ValueError(f"patches must lie in [-1, 1], got values in [{low:.4g}, {high:.4g}]")
        self.patches = patches

    def __call__(self, count: int, generator: torch.Generator) -> Tensor:
        """(count, C, H, W) patches chosen by ``generator``."""
        index = torch.randint(self.patches.shape[0], (count,), generator=generator)
        return self.patches[index.to(self.patches.device)]


class ImagePatches:
    r"""Random square crops of images (:class:`blindfast.data.RandomPatches`), mapped from [0, 1] to [-1, 1].

    Args:
        images: sequence of (C, H, W) float tensors in [0, 1], same C, each at least ``size`` x ``size``.
        size: patch side, pixels.
    Raises:
        ValueError: as :class:`blindfast.data.RandomPatches` (no image, mixed channels, an image too small).
    """

    def __init__(self, images: Sequence[Tensor], size: int):
        # validates the images and the size once, here, rather than on the first batch
        RandomPatches(images, size, 1, generator=torch.Generator())
        self.images, self.size = list(images), size

    @classmethod
    def from_folder(cls, root, size: int, *, grey: bool = False) -> ImagePatches:
        """All images under ``root`` (read once, kept in memory), see :class:`blindfast.data.ImageFolder`.

        Raises:
            FileNotFoundError: ``root`` is missing or holds no image.
            NotADirectoryError: ``root`` is a file.
        """
        folder = ImageFolder(root, grey=grey)
        return cls([folder[i] for i in range(len(folder))], size)

    @property
    def channels(self) -> int:
        return self.images[0].shape[0]

    def __call__(self, count: int, generator: torch.Generator) -> Tensor:
        """(count, C, size, size) patches in [-1, 1], positions drawn from ``generator``."""
        return RandomPatches(self.images, self.size, count, generator=generator).sample().patches * 2 - 1


def as_source(data) -> DataSource:
    """``data`` as a :data:`DataSource`: a tensor becomes :class:`TensorPatches`, a callable is kept.

    Raises:
        TypeError: neither a tensor nor a callable.
    """
    if isinstance(data, Tensor):
        return TensorPatches(data)
    if callable(data):
        return data
    raise TypeError(f"data must be a (N, C, H, W) tensor or a callable (count, generator) -> batch, got "
                    f"{type(data).__name__}")


def draw_batch(source: DataSource, count: int, part: slice, generator: torch.Generator, net: nn.Module, device,
               dtype) -> tuple[Tensor, Tensor | None]:
    """The ``part`` of a checked (images, cond) batch of ``count`` from ``source``, on ``device`` in ``dtype``.

    Returns:
        (images, cond): images (len(part), C, H, W); cond (len(part), C_cond, H, W) or None.
    Raises:
        ValueError: the source returned something other than a (count, C, H, W) batch, or C differs from
            ``net.image_channels`` (where ``net`` has it).
    """
    batch = source(count, generator)
    images, cond = batch if isinstance(batch, tuple) else (batch, None)
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] != count:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"the data source must return a ({count}, C, H, W) tensor (or a (batch, cond) pair), got "
                         f"{got}")
    expected = getattr(net, "image_channels", None)
    if expected is not None and images.shape[1] != expected:
        raise ValueError(f"the network takes {expected} image channel(s), the data has {images.shape[1]} "
                         f"(batch shape {tuple(images.shape)})")
    images = images[part].to(device=device, dtype=dtype, non_blocking=True)
    return images, None if cond is None else cond[part].to(device=device, dtype=dtype, non_blocking=True)
