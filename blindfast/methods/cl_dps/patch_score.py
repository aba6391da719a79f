r"""CL-DPS's overlapped patch-wise score: how far an image's patch features are from the measurement's.

With :math:`P_p` the p-th of the L overlapped n x n patches (stride s < n, :func:`blindfast.ops.patchify`'s order)
and F the encoder's L2-normalised inference feature (:meth:`ContrastiveEncoder.features`),

.. math:: \mathrm{score}(x) = -\frac1L \sum_{p=1}^{L} \langle F(P_p y),\ F(P_p x) \rangle \in [-1, 1]

(CL-DPS, Sec. 3.3: the contrastive similarity of the denoised estimate's patches to the measurement's stands in for
the likelihood p(y | x_t)). With two encoders (:class:`~blindfast.methods.cl_dps.encoder.EncoderPair`) y's patches
go through F_y (``measurement_features``) and x's through F_x (``features``): the score is
:math:`-\frac1L \sum_p \langle F_y(P_p y), F_x(P_p x) \rangle`. y's features are computed once, without
autograd, and cached; x's patches go through the encoder in batches of at most ``batch`` patches, so memory stays
bounded whatever the image size.

Images whose size does not fit the grid (``(H - n) % s != 0``) are reflect-padded to the next size that does, the
extra rows split between top and bottom (columns likewise), so every pixel is scored; the gradient of the padded
pixels flows back onto the pixels they mirror.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder, EncoderPair
from blindfast.ops import patch_grid, patchify

__all__ = ["PatchScore", "grid_padding", "check_geometry", "DEFAULT_BATCH"]

# patches per encoder call; 64 patches of 64 x 64 keep the SMALL encoder's activations under ~100 MB
DEFAULT_BATCH = 64


def grid_padding(length: int, patch: int, stride: int) -> tuple[int, int]:
    """(before, after) rows so that ``length + before + after - patch`` is a multiple of ``stride``.

    Args:
        length: H or W, >= patch.
        patch, stride: the patch grid.
    Returns:
        (before, after), ``before = extra // 2``, each < stride.
    """
    extra = -(length - patch) % stride
    return extra // 2, extra - extra // 2


class PatchScore:
    """The patch-wise score of the module docstring for one measurement ``y``.

    Args:
        encoder: a :class:`ContrastiveEncoder` or an :class:`EncoderPair` (its weights get no gradient here).
        y: (1, C, H, W) the measurement in [-1, 1] (the encoder's units).
        patch: n, the patch side; a multiple of ``encoder.downsampling``, at most min(H, W).
        stride: s, 1 <= s <= n.
        batch: patches per encoder call, >= 1.
    Raises:
        ValueError: y not (1, C, H, W) with the encoder's C, an image smaller than a patch, stride 0 or > patch, a
            patch not divisible by the encoder's downsampling, batch < 1.
    """

    def __init__(self, encoder: ContrastiveEncoder | EncoderPair, y: Tensor, *, patch: int, stride: int,
                 batch: int = DEFAULT_BATCH):
        check_geometry(encoder, y, patch, stride)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an int >= 1 (patches per encoder call), got {batch!r}")
        self.encoder, self.patch, self.stride, self.batch = encoder, patch, stride, batch
        self.image_size = tuple(y.shape[-2:])
        self.padding = (*grid_padding(y.shape[-1], patch, stride), *grid_padding(y.shape[-2], patch, stride))
        with torch.no_grad():
            self.y_features = self._features(patchify(self._pad(y.detach()), patch, stride),
                                             encoder.measurement_features)   # (L, D), cached
        self.patch_count = self.y_features.shape[0]

    def _pad(self, x: Tensor) -> Tensor:
        return F.pad(x, self.padding, mode="reflect") if any(self.padding) else x

    def _features(self, patches: Tensor, features=None) -> Tensor:
        """(L, C, n, n) -> (L, D) by ``features`` (default the image side's), ``batch`` patches per encoder call."""
        features = self.encoder.features if features is None else features
        return torch.cat([features(_channels_last(chunk)) for chunk in patches.split(self.batch)])

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[0] != 1 or tuple(x.shape[-2:]) != self.image_size \
                or x.shape[1] != self.encoder.channels:
            raise ValueError(f"expected a (1, {self.encoder.channels}, {self.image_size[0]}, {self.image_size[1]}) "
                             f"image like the measurement, got {tuple(x.shape)}")

    def score(self, x: Tensor) -> Tensor:
        """The score as a differentiable scalar (autograd holds every batch's activations: small images only;
        :meth:`value_and_grad` bounds the memory).

        Args:
            x: (1, C, H, W) the image in [-1, 1], y's size.
        Returns:
            () the score, -mean_p <F(P_p y), F(P_p x)>.
        """
        self._check(x)
        features = self._features(patchify(self._pad(x), self.patch, self.stride))
        return -(features * self.y_features).sum(dim=1).mean()

    def value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The score and its gradient w.r.t. x, one batch of patches at a time.

        Each batch's patch gradient is taken at once (its activations freed before the next batch), then the patch
        gradients go back to the image through patchify's adjoint (its autograd): peak memory is one batch of
        encoder activations plus the (L, C, n, n) patches, not L patches' activations.

        Args:
            x: (1, C, H, W) the image in [-1, 1], y's size (its own graph, if any, is not used).
        Returns:
            (() the score, (1, C, H, W) its gradient w.r.t. x).
        """
        self._check(x)
        with torch.enable_grad():
            image = x.detach().requires_grad_(True)
            patches = patchify(self._pad(image), self.patch, self.stride)
            patch_grads, total = [], patches.new_zeros(())
            for chunk, y_chunk in zip(patches.detach().split(self.batch), self.y_features.split(self.batch)):
                chunk.requires_grad_(True)
                similarity = -(self.encoder.features(_channels_last(chunk)) * y_chunk).sum() / self.patch_count
                patch_grads.append(torch.autograd.grad(similarity, chunk)[0])
                total = total + similarity.detach()
            (grad,) = torch.autograd.grad(patches, image, grad_outputs=torch.cat(patch_grads))
        return total, grad


def _channels_last(patches: Tensor) -> Tensor:
    """The patches in channels-last layout: the encoder's convolutions (oneDNN) run its forward and backward ~1.5x
    faster so on 1 CPU thread (25 patches of 64 x 64, SMALL encoder: 0.46 s -> 0.30 s); the values are the same."""
    return patches.contiguous(memory_format=torch.channels_last)


def check_geometry(encoder: ContrastiveEncoder | EncoderPair, y: Tensor, patch: int, stride: int) -> None:
    """The errors of :class:`PatchScore` (module docstring), each naming what was expected and what was got."""
    if not isinstance(y, Tensor) or y.dim() != 4 or y.shape[0] != 1:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"expected the measurement as a (1, C, H, W) tensor, got {got}")
    if y.shape[1] != encoder.channels:
        raise ValueError(f"the encoder takes {encoder.channels}-channel patches, got a {y.shape[1]}-channel image")
    for name, value in (("patch", patch), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if stride > patch:
        raise ValueError(f"stride must be at most the patch size {patch} (overlapping patches cover every pixel), got "
                         f"{stride}")
    if patch % encoder.downsampling:
        raise ValueError(f"the patch size must be a multiple of the encoder's downsampling {encoder.downsampling}, "
                         f"got {patch}")
    if min(y.shape[-2:]) < patch:
        raise ValueError(f"the image must be at least one patch ({patch} x {patch}), got "
                         f"{y.shape[-2]} x {y.shape[-1]}")
    patch_grid(tuple(y.shape[-2:]), patch, stride)
