r"""The super-resolution operator DDM learns: a blur kernel, then one pixel kept in f along each axis.

The operator of :class:`blindfast.physics.BlurDownsample`, :math:`y = S (k \ast x)` with the decimation grid at
pixel (0, 0) and the kernel's origin at index ``k // 2``, applied to high-resolution training crops
(:func:`blur_decimate_patches`). Its kernel is learnt, as in the paper's SR experiments (Meanti et al. 2025, after
KernelGAN, Bell-Kligler et al. 2019), by :class:`LinearNetPSF`: a :class:`blindfast.physics.LinearConvNetKernel`
(a stack of small linear convolutions) whose kernel is kept near a centred, unit-sum one by soft penalties
(:func:`linear_regulariser`), not by a projection; :func:`positive_normalised` turns it into the non-negative,
unit-sum kernel the outputs hold.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from blindfast.methods.ddm.patch_blur import blur_patches
from blindfast.physics import LinearConvNetKernel, regularisers
from blindfast.physics.downsample import decimate

__all__ = ["blur_decimate_patches", "sr_crop_origin", "LinearNetPSF", "linear_regulariser", "positive_normalised",
           "FIT_STEPS", "FIT_LR", "LINEAR_NET_CHANNELS"]

LINEAR_NET_CHANNELS = 64   # KernelGAN's generator width
FIT_STEPS = 200            # least-squares steps fitting the net to a previous stage's kernel (~0.3% error left)
FIT_LR = 1e-3


def blur_decimate_patches(crops: Tensor, kernels: Tensor, factor: int) -> Tensor:
    r"""``y_b = S (k_b * x_b)``, "valid": each high-resolution crop blurred by its kernel (:func:`blur_patches`),
    then one pixel in ``factor`` kept, from the first blurred pixel on.

    A crop whose origin is :func:`sr_crop_origin` of a high-resolution image gives exactly the low-resolution pixels
    ``I .. I + P - 1`` of ``BlurDownsample(f).A`` on the whole image, away from its borders.

    Args:
        crops: (B, C, f P + k - 1, f P + k - 1).
        kernels: (B, C|1, k, k).
        factor: f >= 1.
    Returns:
        (B, C, P, P), differentiable w.r.t. both.
    """
    return decimate(blur_patches(crops, kernels), factor)


def sr_crop_origin(lr_origin: int, kernel_size: int, factor: int) -> int:
    """The high-resolution crop origin (along one axis) whose :func:`blur_decimate_patches` output starts at the
    low-resolution pixel ``lr_origin`` of BlurDownsample's grid: ``f I - (k - 1 - k // 2)``, ``f I - k // 2`` for an
    odd k (Blur's blurred pixel p reads the image from ``p - (k - 1 - k // 2)`` to ``p + k // 2``)."""
    return factor * lr_origin - (kernel_size - 1 - kernel_size // 2)


class LinearNetPSF(nn.Module):
    """A (1, 1, 1, 1, k, k) PSF grid, one kernel for the frame and every channel, held by a
    :class:`blindfast.physics.LinearConvNetKernel` (KernelGAN's deep linear generator; not normalised).

    Args:
        size: k, odd.
        init: None (the net's near-delta start) or a (k, k) kernel the net is fitted to by least squares
            (``FIT_STEPS`` Adam steps): the refinement of a previous stage's estimate.
        generator: the source of the net's initial weight noise.
    """

    def __init__(self, size: int, init: Tensor | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.net = LinearConvNetKernel(size, channels=LINEAR_NET_CHANNELS, generator=generator)
        if init is not None:
            self._fit(init)

    def _fit(self, target: Tensor) -> None:
        target = target.detach().to(self.net.layers[0].weight)
        optimizer = torch.optim.Adam(self.net.parameters(), lr=FIT_LR)
        with torch.enable_grad():
            for _ in range(FIT_STEPS):
                loss = (self.net.kernel() - target).square().sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        for p in self.net.parameters():
            p.grad = None

    def forward(self) -> Tensor:
        """Returns: (1, 1, 1, 1, k, k) the net's kernel, differentiable w.r.t. its weights."""
        kernel = self.net.kernel()
        return kernel.reshape(1, 1, 1, 1, *kernel.shape)


def linear_regulariser(psf_grid: Tensor, sparsity: float, centre: float, sum_to_one: float) -> Tensor:
    r"""The paper's penalties on an SR kernel held by a linear net (KernelGAN's soft constraints):

    .. math:: s\, \mathrm{mean}|k| + c\, \frac{\|\bar m(k) - m_0\|^2}{h^2} + u\, \Big|\sum k - 1\Big|

    with :math:`\bar m` the centre of mass, :math:`m_0` the window's centre and h its half-width (the centre penalty
    in the paper's coordinates, where the window spans [-1, 1], as the grid stages' regulariser).

    Args:
        psf_grid: (..., k, k) kernels.
        sparsity, centre, sum_to_one: the weights s, c, u.
    Returns:
        () the penalty.
    """
    half = psf_grid.shape[-1] // 2
    return (sparsity * regularisers.sparsity(psf_grid)
            + centre * regularisers.centre_penalty(psf_grid) / half**2
            + sum_to_one * regularisers.sum_to_one(psf_grid))


def positive_normalised(psf_grid: Tensor) -> Tensor:
    """Negative taps clipped to zero, each kernel then divided by its sum: the non-negative, unit-sum kernels the
    outputs hold (a linear net's kernel is neither exactly). The negative lobes a linear net leaves are small
    ringing of a blur that is non-negative physically, and the gauge (:func:`blindfast.methods.ddm.gauge.centre_nodes`)
    needs non-negative kernels.

    Args:
        psf_grid: (..., k, k) with a positive sum of the positive taps in each kernel.
    Returns:
        the same shape.
    """
    clipped = psf_grid.clamp_min(0)
    return clipped / clipped.sum(dim=(-2, -1), keepdim=True)
