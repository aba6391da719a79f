"""Imaging physics: stateless operators ``A(x, **params)`` (``A_adjoint`` for linear ones), trainable
parameterisations of their parameters, kernel regularisers, and seeded generators of parameter dicts."""

from blindfast.physics import regularisers
from blindfast.physics.base import Composition, LinearOperator, Operator
from blindfast.physics.blur import Blur
from blindfast.physics.deepinv_interop import as_deepinv_physics
from blindfast.physics.downsample import BlurDownsample, Downsample
from blindfast.physics.gaussian_psf import GaussianPSF, covariance_gaussian
from blindfast.physics.kernels import gaussian_kernel, gaussian_kernel_params, motion_kernel
from blindfast.physics.lens import lens_psf_grid
from blindfast.physics.lens_field import LensField
from blindfast.physics.motion_blur import RotationBlur, ZoomBlur, rotation_params, zoom_params
from blindfast.physics.noise import GaussianNoise
from blindfast.physics.parameterisations import DirectKernel, LinearConvNetKernel, NoiseStd, PSFGrid
from blindfast.physics.space_varying import ProductConvolution, SpaceVaryingBlur, psf_at, tent_multipliers

__all__ = [
    "Operator", "LinearOperator", "Composition",
    "Blur", "SpaceVaryingBlur", "ProductConvolution", "Downsample", "BlurDownsample", "RotationBlur", "ZoomBlur",
    "GaussianNoise",
    "DirectKernel", "PSFGrid", "LensField", "GaussianPSF", "LinearConvNetKernel", "NoiseStd", "regularisers",
    "psf_at", "tent_multipliers",
    "motion_kernel", "gaussian_kernel", "covariance_gaussian", "gaussian_kernel_params", "lens_psf_grid",
    "rotation_params", "zoom_params",
    "as_deepinv_physics",
]
