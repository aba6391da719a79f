r"""A flow prior on the scaled latents of a :class:`~blindfast.models.autoencoder.KLAutoencoder`: LatentDEM's embedded
default.

The prior's data are :math:`x_1 = s\, \mu(x)`, the autoencoder's posterior means scaled by its ``scaling_factor``
s (about unit variance, the variance of the noise :math:`x_0`), and its velocity network works on those
(B, L, h, w) latents; all of :class:`~blindfast.models.prior.Prior`'s views follow. :meth:`LatentFlowPrior.encode`
and :meth:`LatentFlowPrior.decode` move between images and the latents the prior sees, with the same names and
meaning as the Stable Diffusion prior of :mod:`blindfast.models.diffusers_prior`, so LatentDEM takes either
(Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", Sec. 3).
"""

from __future__ import annotations

from torch import Tensor, nn

from blindfast.models.autoencoder import KLAutoencoder
from blindfast.models.prior import NetworkPrior
from blindfast.models.unet import UNet

__all__ = ["LatentFlowPrior"]


class LatentFlowPrior(NetworkPrior):
    r"""A :class:`~blindfast.models.prior.NetworkPrior` whose ``x_t`` are scaled latents (B, L, h, w), holding the
    autoencoder that maps images to them:

    .. math:: \text{encode}(x) = s\, \mu(x), \qquad \text{decode}(z) = D(z / s).

    The autoencoder's parameters are frozen (``requires_grad`` False): the velocity learnt its latent
    distribution, which a changed encoder would shift, and gradients of a posterior sampler reach the latents
    through the decoder without them.

    Args:
        autoencoder: the autoencoder, its ``scaling_factor`` already fitted.
        net: the velocity network on (B, L, h, w) latents, e.g. ``UNet.from_preset("tiny", image_channels=L)``
            (which needs h and w multiples of 4: images of sides multiples of 16).

    Raises:
        TypeError: for an autoencoder that is not a :class:`KLAutoencoder`, a net that is not a ``torch.nn.Module``.
        ValueError: for a network whose ``image_channels`` is not the autoencoder's ``latent_channels``.
    """

    def __init__(self, autoencoder: KLAutoencoder, net: nn.Module):
        if not isinstance(autoencoder, KLAutoencoder):
            raise TypeError(f"autoencoder must be a KLAutoencoder, got {type(autoencoder).__name__}")
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module (e.g. a blindfast.models.UNet), got {type(net).__name__}")
        net_channels = getattr(net, "image_channels", None)
        if net_channels != autoencoder.latent_channels:
            raise ValueError(f"the velocity network must take the autoencoder's {autoencoder.latent_channels} latent "
                             f"channels (image_channels), got {net_channels!r}")
        super().__init__(net)
        self.autoencoder = autoencoder.requires_grad_(False)

    @classmethod
    def from_autoencoder(cls, autoencoder: KLAutoencoder, unet_preset: str = "tiny") -> LatentFlowPrior:
        """A fresh U-Net of ``unet_preset`` (see :meth:`blindfast.models.unet.UNet.from_preset`) on the latents of
        ``autoencoder``.

        Raises:
            TypeError: for an autoencoder that is not a :class:`KLAutoencoder`.
            ValueError: for an unknown preset.
        """
        if not isinstance(autoencoder, KLAutoencoder):
            raise TypeError(f"autoencoder must be a KLAutoencoder, got {type(autoencoder).__name__}")
        return cls(autoencoder, UNet.from_preset(unet_preset, image_channels=autoencoder.latent_channels))

    @classmethod
    def from_config(cls, config: dict) -> LatentFlowPrior:
        """The architecture :meth:`config` describes (untrained; load the state dict for the weights)."""
        return cls(KLAutoencoder(**config["autoencoder"]), UNet(**config["net"]))

    def config(self) -> dict:
        """``{"autoencoder": ..., "net": ...}``, the two constructor configs, JSON-serialisable (the net must have a
        ``config()``, as :class:`~blindfast.models.unet.UNet` does)."""
        return {"autoencoder": self.autoencoder.config(), "net": self.net.config()}

    @property
    def latent_channels(self) -> int:
        """L, the channels of the latents (and of ``x_t``)."""
        return self.autoencoder.latent_channels

    @property
    def downsampling_factor(self) -> int:
        """f: latents are (B, L, H/f, W/f) for (B, C, H, W) images."""
        return self.autoencoder.downsampling_factor

    @property
    def image_multiple(self) -> int:
        """What the images' H and W must be multiples of: f times the U-Net's multiple on the latents."""
        return self.downsampling_factor * super().image_multiple

    def encode(self, images: Tensor) -> Tensor:
        r"""The latents :math:`s\, \mu(x)` the prior models.

        Args:
            images: (B, C, H, W) in [-1, 1], H and W divisible by ``downsampling_factor``.

        Returns:
            (B, L, H/f, W/f).

        Raises:
            ValueError: as :meth:`KLAutoencoder.moments` (rank, channels, dtype, H or W not divisible by f).
        """
        return self.autoencoder.encode(images) * self.autoencoder.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        r"""The images :math:`D(z / s)` of prior latents.

        Args:
            latents: (B, L, h, w).

        Returns:
            (B, C, f h, f w), not clamped.

        Raises:
            ValueError: as :meth:`KLAutoencoder.decode` (rank, channels, dtype).
        """
        return self.autoencoder.decode(latents / self.autoencoder.scaling_factor)
