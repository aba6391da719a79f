r"""Penalties on estimated blur kernels, the soft constraints of KernelGAN (Bell-Kligler et al. 2019, "Blind
Super-Resolution Kernel Estimation using an Internal-GAN", Sec. 3, the regulariser R of the generator's loss) and
DDM (Meanti et al. 2025, "Unsupervised Imaging Inverse Problems with Diffusion Distribution Matching", the kernel
regularisation of its operator loss).

Every function takes kernels ``k`` of shape (..., kh, kw), any leading dimensions (a batch, channels, a PSF grid),
and returns a () tensor: the per-kernel penalty averaged over the leading dimensions. Positions are in pixels, row
``i`` and column ``j``; the reference centre ``c = (c_i, c_j)`` defaults to the middle of the window
``((kh - 1) / 2, (kw - 1) / 2)``. For an odd size that is the index ``k // 2`` where
:class:`blindfast.physics.blur.Blur` puts the kernel's origin; for an even size the origin is at ``kh // 2`` and
``centre=(kh // 2, kw // 2)`` makes a kernel that does not shift the image score 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast import _validate

__all__ = ["sparsity", "root_sparsity", "centre_penalty", "sum_to_one", "gaussian_prior"]


def _check_kernels(k) -> None:
    if not isinstance(k, Tensor):
        raise TypeError(f"k must be a torch.Tensor of shape (..., kh, kw), got {type(k).__name__}")
    if not k.is_floating_point():
        raise TypeError(f"k must have a floating-point dtype, got {k.dtype}")
    if k.dim() < 2:
        raise ValueError(f"k must have shape (..., kh, kw) (at least 2 dims), got {k.dim()} dims: {tuple(k.shape)}")
    if k.numel() == 0:
        raise ValueError(f"k must not be empty, got shape {tuple(k.shape)}")


def _offsets(k: Tensor, centre) -> tuple[Tensor, Tensor]:
    """Row offsets (kh,) and column offsets (kw,) from the centre, pixels, in k's dtype and device."""
    kh, kw = k.shape[-2:]
    centre = ((kh - 1) / 2, (kw - 1) / 2) if centre is None else _validate.real_pair("centre", centre,
                                                                                      "(row, column)")
    rows = torch.arange(kh, dtype=k.dtype, device=k.device) - centre[0]
    cols = torch.arange(kw, dtype=k.dtype, device=k.device) - centre[1]
    return rows, cols


def sparsity(k: Tensor) -> Tensor:
    r"""Mean absolute value, DDM's sparsity penalty:

    .. math:: \frac{1}{k_h k_w} \sum_{i, j} |k_{ij}|

    For kernels that are non-negative and sum to 1 it is the constant ``1 / (kh kw)``: use it on unnormalised
    kernels (e.g. :meth:`blindfast.physics.parameterisations.LinearConvNetKernel.kernel`). KernelGAN penalises
    ``|k_ij|^0.2`` instead, which favours exact zeros more strongly but has an infinite derivative at 0.

    Args:
        k: (..., kh, kw)
    Returns:
        () mean over all entries.
    Raises:
        TypeError: k not a floating-point tensor.
        ValueError: fewer than 2 dims, or empty.
    """
    _check_kernels(k)
    return k.abs().mean()


def root_sparsity(k: Tensor, eps: float = 1e-6) -> Tensor:
    r"""Sum of square roots, a sparsity that sees the shape of kernels that are non-negative and sum to 1:

    .. math:: \sum_{i, j} \Big(\sqrt{|k_{ij}| + \epsilon} - \sqrt{\epsilon}\Big)

    Where :func:`sparsity` is constant on such kernels, this one is concave in each tap, so moving mass from weak
    taps to strong ones lowers it: about 1 for a delta, :math:`\sqrt n` for mass spread evenly over n taps (a
    motion path of n pixels scores less than the Gaussian blob of the same second moments). The :math:`\ell_p`,
    p < 1, sparsity of blind deconvolution (KernelGAN's ``|k|^0.2``; Levin et al. 2009) with p = 1/2; ``eps`` bounds
    its derivative at 0 to :math:`1 / (2 \sqrt\epsilon)`.

    Args:
        k: (..., kh, kw)
        eps: > 0, the smoothing of the root at 0.
    Returns:
        () mean over the leading dims of the per-kernel sums.
    Raises:
        TypeError, ValueError: as :func:`sparsity`; ValueError for an eps that is not > 0.
    """
    _check_kernels(k)
    eps = _validate.real("eps", eps, 0, low_open=True)
    return (torch.sqrt(k.abs() + eps) - eps**0.5).sum(dim=(-2, -1)).mean()


def sum_to_one(k: Tensor) -> Tensor:
    r"""Distance of each kernel's sum from 1, KernelGAN's :math:`\mathcal L_{\text{sum2one}}`:

    .. math:: \Big|\sum_{i, j} k_{ij} - 1\Big|

    Args:
        k: (..., kh, kw)
    Returns:
        () mean over the leading dims.
    Raises:
        TypeError, ValueError: as :func:`sparsity`.
    """
    _check_kernels(k)
    return (k.sum(dim=(-2, -1)) - 1).abs().mean()


def centre_penalty(k: Tensor, centre: tuple[float, float] | None = None) -> Tensor:
    r"""Squared distance of each kernel's centre of mass from the centre ``c``, KernelGAN's
    :math:`\mathcal L_{\text{center}}` (the paper's norm squared, as in DDM, so that it is smooth at its minimum):

    .. math:: \Big\| \frac{\sum_{i, j} k_{ij}\, (i, j)}{\sum_{i, j} k_{ij}} - c \Big\|^2

    The centre of mass is undefined for a kernel that sums to 0 (the result is then inf or NaN); no epsilon is
    added, as one would bias the centre of small kernels.

    Args:
        k: (..., kh, kw) kernels with non-zero sums.
        centre: (row, column) of c, pixels; None for ((kh - 1) / 2, (kw - 1) / 2).
    Returns:
        () mean over the leading dims.
    Raises:
        TypeError, ValueError: as :func:`sparsity`; TypeError for a centre that is not a pair of numbers,
            ValueError for one that is not finite.
    """
    _check_kernels(k)
    rows, cols = _offsets(k, centre)
    mass = k.sum(dim=(-2, -1))
    row_offset = (k.sum(dim=-1) * rows).sum(dim=-1) / mass        # centre of mass minus c, per axis
    col_offset = (k.sum(dim=-2) * cols).sum(dim=-1) / mass
    return (row_offset ** 2 + col_offset ** 2).mean()


def gaussian_prior(k: Tensor, centre: tuple[float, float] | None = None) -> Tensor:
    r"""Second moment of each kernel about the centre ``c``, DDM's Gaussian regulariser:

    .. math:: \sum_{i, j} k_{ij}\, \big\|(i, j) - c\big\|^2

    For a kernel that is non-negative and sums to 1 it is the mean squared distance of its mass from ``c``, i.e.
    ``2 sigma^2`` times the cross-entropy, up to a constant, of ``k`` against an isotropic Gaussian of standard
    deviation sigma centred at ``c``: a Gaussian prior on where the mass lies, favouring compact kernels.
    Deliberately not divided by the sum: it stays linear in ``k`` (no division by zero), and on the normalised
    kernels of :class:`blindfast.physics.parameterisations.DirectKernel` / ``PSFGrid`` the two agree. DDM measures
    the spread about the centre of mass in coordinates scaled to [-1, 1]; this one is about the fixed centre, in
    pixels, so it also pulls the mass towards ``c``. For a uniform kh x kw kernel about the window's middle it is
    ``(kh^2 - 1) / 12 + (kw^2 - 1) / 12``.

    Args:
        k: (..., kh, kw)
        centre: (row, column) of c, pixels; None for ((kh - 1) / 2, (kw - 1) / 2).
    Returns:
        () mean over the leading dims.
    Raises:
        TypeError, ValueError: as :func:`centre_penalty`.
    """
    _check_kernels(k)
    rows, cols = _offsets(k, centre)
    squared_radius = rows[:, None] ** 2 + cols[None, :] ** 2      # (kh, kw)
    return (k * squared_radius).sum(dim=(-2, -1)).mean()
