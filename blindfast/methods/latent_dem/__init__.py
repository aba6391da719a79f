"""LatentDEM (Bai et al. 2024, "Blind Inversion using Latent Diffusion Priors"): EM blind deblurring with a latent
diffusion prior. Built: the M-step's plug-and-play kernel denoiser (:class:`KernelDenoiser`), its training
(:func:`train_kernel_denoiser`, ``blindfast train-kernel-denoiser``) and the shipped weights
(:func:`load_kernel_denoiser`), for :func:`blindfast.ops.hqs_kernel_update`'s ``denoiser``; the EM loop with a
latent prior (decoder and gluing term) or a pixel one (:func:`em_deblur`) and its schedules (:func:`annealed_zeta`,
:func:`is_full_em_step`); the same loop for any size-keeping operator (:func:`diffusion_em`) and for non-linear
parametric operators with the gradient M-step (:func:`em_parametric`, :func:`gradient_m_step`);
``blindfast deblur --method latentdem [--pixel]``.
"""

from blindfast.methods.latent_dem import deblur_method  # noqa: F401  (registers --method latentdem)
from blindfast.methods.latent_dem.em import (EMResult, EMStep, ParametricEMResult, delta_kernel, diffusion_em,
                                             em_deblur, em_parametric)
from blindfast.methods.latent_dem.kernel_denoiser import KernelDenoiser
from blindfast.methods.latent_dem.m_step_gradient import gradient_m_step
from blindfast.methods.latent_dem.schedules import annealed_zeta, is_full_em_step
from blindfast.methods.latent_dem.shipped_denoiser import (DEFAULT_NAME, export_kernel_denoiser,
                                                           load_kernel_denoiser, measure_kernel_denoiser)
from blindfast.methods.latent_dem.train_kernel_denoiser import KernelDenoiserConfig, train_kernel_denoiser

__all__ = ["KernelDenoiser", "KernelDenoiserConfig", "train_kernel_denoiser", "export_kernel_denoiser",
           "load_kernel_denoiser", "measure_kernel_denoiser", "DEFAULT_NAME", "em_deblur", "EMResult", "EMStep",
           "delta_kernel", "annealed_zeta", "is_full_em_step", "diffusion_em", "em_parametric", "ParametricEMResult",
           "gradient_m_step"]
