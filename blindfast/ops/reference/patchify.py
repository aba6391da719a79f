"""Pure-torch references of patchify and overlap_add: ``F.unfold`` / ``F.fold`` plus the layout change, exact in
float64.

Tests and benchmarks import them; nothing else should.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["overlap_add_reference", "patchify_reference"]


def _per_channel(values, like: Tensor) -> Tensor:
    """A sequence of C floats or a (C,) tensor as a (1, C, 1, 1) tensor of ``like``'s dtype and device."""
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)


def patchify_reference(x: Tensor, size: int, stride: int, mean=None, std=None) -> Tensor:
    """``(x - mean[c]) / std[c]`` cut into size x size patches, row-major over the patch grid (F.unfold's order).

    Args:
        x: (B, C, H, W).
        size, stride: patch size and stride (both axes).
        mean, std: None or C values.
    Returns:
        (B * L, C, size, size), L = Ly * Lx, Ly = (H - size) // stride + 1, Lx likewise.
    """
    B, C = x.shape[:2]
    if mean is not None:
        x = x - _per_channel(mean, x)
    if std is not None:
        x = x / _per_channel(std, x)
    columns = F.unfold(x, size, stride=stride)  # (B, C * size * size, L)
    return columns.transpose(1, 2).reshape(-1, C, size, size)


def overlap_add_reference(patches: Tensor, image_size: tuple[int, int], stride: int, std=None) -> Tensor:
    """Sum of the patches (each divided by std[c]) at their places in an image: ``F.fold``.

    Args:
        patches: (B * L, C, size, size) in patchify's order.
        image_size: (H, W).
        stride: the patches' stride.
        std: None or C values.
    Returns:
        (B, C, H, W).
    """
    N, C, size = patches.shape[:3]
    H, W = image_size
    L = ((H - size) // stride + 1) * ((W - size) // stride + 1)
    columns = patches.reshape(N // L, L, C * size * size).transpose(1, 2)  # (B, C * size * size, L)
    x = F.fold(columns, (H, W), size, stride=stride)
    if std is not None:
        x = x / _per_channel(std, x)
    return x
