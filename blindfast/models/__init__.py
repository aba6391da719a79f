"""Networks and the prior interface that serves DDM, CL-DPS and LatentDEM."""

from blindfast.models.autoencoder import AUTOENCODER_PRESETS, KLAutoencoder
from blindfast.models.diffusers_prior import (DiffusersPixelPrior, StableDiffusionLatentPrior,
                                              load_diffusers_pixel_prior, load_stable_diffusion_prior)
from blindfast.models.latent_prior import LatentFlowPrior
from blindfast.models.prior import GaussianPrior, NetworkPrior, Prior, alpha_bar_of_time, time_of_alpha_bar
from blindfast.models.shipped import load_prior, load_shipped_prior, shipped_priors
from blindfast.models.unet import PRESETS, UNet

__all__ = ["Prior", "NetworkPrior", "GaussianPrior", "LatentFlowPrior", "alpha_bar_of_time", "time_of_alpha_bar",
           "UNet", "PRESETS", "KLAutoencoder", "AUTOENCODER_PRESETS", "DiffusersPixelPrior",
           "StableDiffusionLatentPrior", "load_diffusers_pixel_prior", "load_stable_diffusion_prior",
           "load_shipped_prior", "load_prior", "shipped_priors"]
