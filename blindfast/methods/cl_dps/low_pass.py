r"""CL-DPS's low-frequency term (our addition to Ye & Ferrao's method; README "CL-DPS: sampling"): the distance
between the Gaussian low-passes of the estimate and of the measurement,

.. math:: \mathrm{lowpass}(x) = \frac{n^2}{HW}\, \|G_\sigma * x - G_\sigma * y\|^2

(reflect padding; the factor n^2 / HW makes it a sum per patch area of n x n pixels, as the patch score is a mean
over patches, so that :func:`~blindfast.methods.cl_dps.sampler.cl_dps`'s step is the same per pixel on every image
size).

Why it needs no model of the operator: every blur in scope averages the photo along a kernel or a warp path with
weights summing to one, so it keeps the local mean, and :math:`G_\sigma * A(x) \approx G_\sigma * x` where the blur's
extent is small beside sigma: :math:`G_\sigma * y` is a blind estimate of the sharp photo's coarse content.
Why it is needed: the patch features leave the coarse colour loose (README's diagnosis: the CL-DPS samples of the
train crops were off by up to 0.07 in a channel's mean, and their sigma = 4 low-pass was ~4 dB further from the
photo's than the measurement's).
"""

from __future__ import annotations

from torch import Tensor

from blindfast.physics import Blur, gaussian_kernel

__all__ = ["LowPassResidual", "LOW_PASS_SIGMA"]

# pixels, set beforehand to the features' 8-pixel cells; on the train crops sigma 2 / 4 / 8 gained -0.60 / -0.87 / -1.08
# dB over y (rotation), narrower pulling towards y itself (README "CL-DPS: sampling")
LOW_PASS_SIGMA = 4.0


class LowPassResidual:
    """The low-frequency term of the module docstring for one measurement ``y``.

    Args:
        y: (1, C, H, W) the measurement in [-1, 1]; H, W at least the kernel's side.
        patch: n, the patch side of the score it is added to (sets the per-patch-area normalisation).
        sigma: the Gaussian's standard deviation in pixels, > 0; the kernel is ``int(6 sigma) | 1`` pixels wide.
    """

    def __init__(self, y: Tensor, *, patch: int, sigma: float = LOW_PASS_SIGMA):
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        size = int(6 * sigma) | 1
        if min(y.shape[-2:]) < size:
            raise ValueError(f"the low-pass of sigma {sigma} needs images of at least its kernel, {size} x {size}, "
                             f"got {y.shape[-2]} x {y.shape[-1]}")
        self.kernel = gaussian_kernel(size, sigma, dtype=y.dtype, device=y.device)[None, None]
        self.blur = Blur(padding="reflect")
        self.patch_areas = y.shape[-2] * y.shape[-1] / patch ** 2
        self.y_low = self.blur.A(y.detach(), kernel=self.kernel)         # (1, C, H, W), cached

    def __call__(self, x: Tensor) -> Tensor:
        """The term as a differentiable scalar.

        Args:
            x: (1, C, H, W) the image in [-1, 1], y's size.
        Returns:
            () ||G * x - G * y||^2 / (HW / n^2).
        """
        return (self.blur.A(x, kernel=self.kernel) - self.y_low).square().sum() / self.patch_areas
