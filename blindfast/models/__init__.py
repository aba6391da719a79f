"""Networks and the prior interface that serves DDM, CL-DPS and LatentDEM."""

from blindfast.models.autoencoder import AUTOENCODER_PRESETS, KLAutoencoder
from blindfast.models.latent_prior import LatentFlowPrior
from blindfast.models.prior import GaussianPrior, NetworkPrior, Prior, alpha_bar_of_time, time_of_alpha_bar
from blindfast.models.unet import PRESETS, UNet

__all__ = ["Prior", "NetworkPrior", "GaussianPrior", "LatentFlowPrior", "alpha_bar_of_time", "time_of_alpha_bar",
           "UNet", "PRESETS", "KLAutoencoder", "AUTOENCODER_PRESETS"]
