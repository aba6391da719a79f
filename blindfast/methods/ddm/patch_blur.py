"""The operator DDM learns, applied to training patches: each patch blurred by the lens' PSF at its centre.

DDM (Meanti et al. 2025) trains on patches small next to the grid spacing and blurs each with one kernel, the PSF
grid blended at the patch centre (:func:`blindfast.physics.psf_at`, the kernel ``sv_conv`` applies at that pixel);
the whole image is blurred by ``sv_conv`` itself.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from blindfast.physics import psf_at

__all__ = ["blur_patches", "kernels_at"]


def kernels_at(psf_grid: Tensor, centres: Tensor, frame: tuple[int, int]) -> Tensor:
    """The PSF at each patch centre.

    Args:
        psf_grid: (1, C|1, Gy, Gx, k, k) the lens over an (H, W) frame.
        centres: (B, 2) (row, col) pixels of the frame.
        frame: (H, W).
    Returns:
        (B, C|1, k, k), differentiable w.r.t. ``psf_grid``.
    """
    return psf_at(psf_grid, centres, frame)[0].transpose(0, 1)


def blur_patches(crops: Tensor, kernels: Tensor) -> Tensor:
    r"""``y_b = k_b * x_b``, "valid": each crop convolved with its own kernel, channel by channel (a true
    convolution, as :func:`blindfast.ops.sv_conv`: :math:`y[p] = \sum_d k[d]\, x[p - d]`).

    Args:
        crops: (B, C, P + k - 1, P + k - 1).
        kernels: (B, C|1, k, k).
    Returns:
        (B, C, P, P), differentiable w.r.t. both.
    """
    B, C, H, W = crops.shape
    k = kernels.shape[-1]
    weights = kernels.expand(B, C, k, k).flip(-2, -1).reshape(B * C, 1, k, k)
    return F.conv2d(crops.reshape(1, B * C, H, W), weights.to(crops.dtype), groups=B * C).reshape(
        B, C, H - k + 1, W - k + 1)
