"""The train-photo cases that ``latentdem_photo_policy.py``, ``latentdem_m_step_domain.py`` and
``latentdem_command_solver.py`` measure (imported by them; no command of its own).

A case: the centre ``size`` x ``size`` crop of a train photo (astronaut, motorcycle_left, rocket), blurred as a camera
blurs (the crop plus a margin of the kernel's radius, convolved with "valid" boundaries, so the blur at the edges
comes from scene outside the frame) by one of ``count`` 17 x 17 ``motion_kernel``s (intensity 0.5, seed 5), plus
white noise of std 0.01 (seed 10 + the kernel's index); its noise std is then estimated from the photo as ``deblur
--method latentdem`` does. Restorations by cg and pnp use the command's boundary, weight
and settings.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor

from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.methods.latent_dem.deblur_method import PADDING
from blindfast.physics import Blur, motion_kernel
from blindfast.restore import PriorDenoiser, cg_tikhonov, pnp_hqs
from blindfast.restore.noise_level import estimate_noise_std, tikhonov_weight

PHOTOS = ("astronaut", "motorcycle_left", "rocket")
TRUE_KERNEL, SIGMA = 17, 0.01
CG_ITERS = 30


def motion_kernels(count: int) -> Tensor:
    """(count, 17, 17) the cases' true kernels."""
    kernels = motion_kernel(count, TRUE_KERNEL, generator=torch.Generator().manual_seed(5))["kernel"]
    return kernels.reshape(count, TRUE_KERNEL, TRUE_KERNEL)


@cache
def _train_photo(name: str) -> Tensor:
    return embedded_images("train")[EMBEDDED_SPLITS["train"].index(name)]


def camera_case(photo: str, size: int, kernel: Tensor, index: int) -> tuple[Tensor, Tensor, float]:
    """The case of ``photo``'s centre crop and ``kernel`` (the ``index``-th of :func:`motion_kernels`).

    Returns:
        (1, C, size, size) the sharp crop x, (1, C, size, size) its measurement y, and y's estimated noise std.
    """
    image = _train_photo(photo)
    margin = TRUE_KERNEL // 2
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    scene = image[None, :, top - margin:top + size + margin, left - margin:left + size + margin]
    x = image[None, :, top:top + size, left:left + size]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + index))
    y = Blur(padding="valid").A(scene, kernel=kernel) + SIGMA * noise
    return x, y, max(estimate_noise_std(y), 1e-4)


def camera_cases(size: int, kernels: Tensor):
    """Every case at ``size``, photo by photo (``PHOTOS``) and kernel by kernel (``kernels``, those of
    :func:`motion_kernels`): yields (photo, kernel index, (k, k) kernel, x, y, y's estimated noise std) as
    :func:`camera_case` makes them."""
    for photo in PHOTOS:
        for index, kernel in enumerate(kernels):
            yield (photo, index, kernel, *camera_case(photo, size, kernel, index))


def cg_restore(y: Tensor, kernel: Tensor, sigma: float) -> Tensor:
    """(1, C, H, W) y restored by cg with the (k, k) ``kernel`` as ``deblur --solver cg`` does for noise std
    ``sigma`` (no gradient)."""
    with torch.no_grad():
        return cg_tikhonov(y, Blur(padding=PADDING), {"kernel": kernel[None, None]}, lam=tikhonov_weight(sigma),
                           iters=CG_ITERS)


def pnp_restore(y: Tensor, kernel: Tensor, sigma: float, denoiser: PriorDenoiser, **settings) -> Tensor:
    """(1, C, H, W) y restored by pnp_hqs with the (k, k) ``kernel`` as ``deblur --solver pnp`` does for noise std
    ``sigma`` (``denoiser``: the command's, ``PriorDenoiser(pixel prior, tile=128)``); ``settings`` override
    pnp_hqs's defaults (no gradient)."""
    with torch.no_grad():
        return pnp_hqs(y, Blur(padding=PADDING), {"kernel": kernel[None, None]}, denoiser, sigma=sigma, **settings)
