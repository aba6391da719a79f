r"""A compact KL-regularised autoencoder with downsampling factor 4, the latent space of LatentDEM's embedded prior.

After the first stage of latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models", Sec. 3 and App. G): a convolutional encoder maps an image :math:`x \in [-1, 1]^{C \times H \times
W}` to the mean and log-variance of a diagonal Gaussian posterior :math:`q(z \mid x) = \mathcal N(\mu(x),
\operatorname{diag} \sigma^2(x))` on :math:`z \in \mathbb R^{L \times H/f \times W/f}`, a decoder maps z back, and a
KL penalty towards :math:`\mathcal N(0, I)`, weighted far below a VAE's, bounds the latent scale without a VAE's blur:

.. math:: \mathcal L(x) = \|x - D(z)\|_1 + \lambda_{KL}\, \mathrm{KL}\big(q(z \mid x) \,\|\, \mathcal N(0, I)\big),
          \qquad z = \mu + \sigma \odot \epsilon, \; \epsilon \sim \mathcal N(0, I)

(the reparameterisation of Kingma & Welling 2014, "Auto-Encoding Variational Bayes", Sec. 2.4). Layout of LDM's
autoencoder: per resolution level residual blocks (GroupNorm, SiLU, 3x3 conv), a stride-2 3x3 conv between levels in
the encoder and nearest upsampling + 3x3 conv in the decoder, two residual blocks at the bottleneck, the decoder one
block per level more than the encoder. Two departures: no self-attention at the bottleneck, so the cost stays linear
in the pixel count (LatentDEM decodes whole photographs; attention over the H/4 x W/4 positions of a 512 x 512 image
is a 16384 x 16384 score matrix, 1 GiB in float32), and no perceptual or adversarial loss terms (they need a
pretrained network or a discriminator; this model must train offline on a CPU in minutes).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from blindfast import _validate

__all__ = ["KLAutoencoder", "AUTOENCODER_PRESETS", "LOGVAR_RANGE"]

# LDM's clamp of the posterior log-variance: sigma in [e^-15, e^10] = [3e-7, 2.2e4]. It keeps exp(logvar) finite in
# float32 (overflow needs logvar > 88) and the KL's -logvar term bounded for an encoder that drives sigma to 0.
LOGVAR_RANGE = (-30.0, 20.0)
_MAX_GROUPS = 32  # GroupNorm groups, as in LDM's autoencoder
# LDM's narrowest layers (128 channels, 32 groups) normalise groups of 4 channels. Narrower groups would make the
# tiny preset's 16-channel layers instance norms, undefined on the 1 x 1 maps of 4 x 4 images.
_MIN_GROUP_CHANNELS = 4

AUTOENCODER_PRESETS: dict[str, dict] = {
    # ~0.23M parameters, for CPU training: 300 Adam steps on 16 fixed 32 x 32 patches of the embedded photographs
    # take 17 s on one thread and bring the per-pixel L1 error from 0.47 to 0.037.
    "tiny": {"image_channels": 3, "latent_channels": 4, "base_channels": 16, "channel_mults": (1, 2, 2),
             "blocks_per_level": 1, "kl_weight": 1e-6},
}


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the most groups up to 32 that divide the channels into groups of at least 4 (or one group)."""
    most = min(_MAX_GROUPS, max(channels // _MIN_GROUP_CHANNELS, 1))
    return nn.GroupNorm(next(g for g in range(most, 0, -1) if channels % g == 0), channels)


class _ResidualBlock(nn.Module):
    r""":math:`y = \text{skip}(x) + \text{conv}_2(\text{SiLU}(\text{GN}(\text{conv}_1(\text{SiLU}(\text{GN}(x))))))`,
    mapping (B, C_in, H, W) to (B, C_out, H, W); skip is a 1x1 conv when C_in != C_out, else the identity.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class _Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _reparameterise(mean: Tensor, logvar: Tensor, generator: torch.Generator | None) -> Tensor:
    r""":math:`z = \mu + \exp(\tfrac12 \log\sigma^2) \odot \epsilon`, :math:`\epsilon` from ``generator``."""
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + (0.5 * logvar).exp() * noise


class KLAutoencoder(nn.Module):
    r"""Encoder :math:`x \mapsto (\mu, \log\sigma^2)` and decoder :math:`z \mapsto \hat x` of a KL-regularised
    autoencoder over ``len(channel_mults)`` resolution levels (level l has ``base_channels * channel_mults[l]``
    channels at :math:`1/2^l` of the input size), so :math:`f = 2^{\text{levels} - 1}`: 4 for three levels.

    ``latent_channels`` defaults to 4, not the 3 of LDM's KL-f4 model: the same latent width as Stable Diffusion's
    autoencoder, so LatentDEM runs the same (B, 4, h, w) shapes with either prior, and one channel more for a network
    far smaller than LDM's, which reconstructs less well at equal compression (4 x 4 x 3 = 48 values into 4).

    ``scaling_factor`` (a () float buffer, saved in the state dict) multiplies the latent means before a prior sees
    them; :meth:`fit_scaling_factor` sets it to 1 / std of the latents, as Stable Diffusion's 0.18215 was chosen
    (the rescaling of KL-regularised latents of Rombach et al. 2022, Sec. 4.3.2).

    Args:
        image_channels: C of the images.
        latent_channels: L of the latents.
        base_channels: channels of level 0.
        channel_mults: one positive multiplier per level; two downsamplings (three levels) give f = 4.
        blocks_per_level: encoder residual blocks per level (the decoder has one more).
        kl_weight: :math:`\lambda_{KL}` of :meth:`loss`.

    Raises:
        TypeError: for a channel or block count that is not an integer, ``channel_mults`` not a tuple of integers,
            or a ``kl_weight`` that is not a number.
        ValueError: for a channel or block count below 1, an empty or non-positive ``channel_mults``, or a negative
            or non-finite ``kl_weight``.
    """

    def __init__(self,
                 image_channels: int = 3,          # channels of the images
                 latent_channels: int = 4,         # channels of the latents (SD's width; LDM's KL-f4 has 3)
                 *,
                 base_channels: int = 64,          # channels of level 0
                 channel_mults: tuple[int, ...] = (1, 2, 4),  # multiplier per level; 3 levels: f = 4
                 blocks_per_level: int = 2,        # encoder residual blocks per level
                 kl_weight: float = 1e-6):         # KL weight against the pixel-summed L1 (LDM's KL-f4 value)
        super().__init__()
        for name, value in (("image_channels", image_channels), ("latent_channels", latent_channels),
                            ("base_channels", base_channels), ("blocks_per_level", blocks_per_level)):
            _validate.positive_int(name, value)
        channel_mults = _validate.int_sequence("channel_mults", channel_mults, 1)
        _validate.real("kl_weight", kl_weight, 0)
        self.image_channels, self.latent_channels = image_channels, latent_channels
        self.base_channels, self.channel_mults = base_channels, channel_mults
        self.blocks_per_level, self.kl_weight = blocks_per_level, float(kl_weight)
        self.downsampling_factor = 2 ** (len(channel_mults) - 1)
        self.register_buffer("scaling_factor", torch.tensor(1.0))

        widths = [base_channels * m for m in channel_mults]
        encoder: list[nn.Module] = [nn.Conv2d(image_channels, base_channels, 3, padding=1)]
        channels = base_channels
        for level, width in enumerate(widths):
            for _ in range(blocks_per_level):
                encoder.append(_ResidualBlock(channels, width))
                channels = width
            if level < len(widths) - 1:
                encoder.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
        encoder += [_ResidualBlock(channels, channels), _ResidualBlock(channels, channels), _norm(channels),
                    nn.SiLU(), nn.Conv2d(channels, 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [nn.Conv2d(latent_channels, channels, 3, padding=1),
                                    _ResidualBlock(channels, channels), _ResidualBlock(channels, channels)]
        for level in reversed(range(len(widths))):
            for _ in range(blocks_per_level + 1):
                decoder.append(_ResidualBlock(channels, widths[level]))
                channels = widths[level]
            if level > 0:
                decoder.append(_Upsample(channels))
        decoder += [_norm(channels), nn.SiLU(), nn.Conv2d(channels, image_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*decoder)

    @classmethod
    def from_preset(cls, name: str) -> KLAutoencoder:
        """The architecture ``AUTOENCODER_PRESETS[name]``: "tiny" (0.23M parameters, f = 4, L = 4).

        Raises:
            ValueError: for an unknown name.
        """
        if name not in AUTOENCODER_PRESETS:
            raise ValueError(f"preset must be one of {sorted(AUTOENCODER_PRESETS)}, got {name!r}")
        return cls(**AUTOENCODER_PRESETS[name])

    def config(self) -> dict:
        """The constructor arguments, JSON-serialisable: ``KLAutoencoder(**ae.config())`` rebuilds the architecture
        (``scaling_factor`` is state, in the state dict)."""
        return {"image_channels": self.image_channels, "latent_channels": self.latent_channels,
                "base_channels": self.base_channels, "channel_mults": list(self.channel_mults),
                "blocks_per_level": self.blocks_per_level, "kl_weight": self.kl_weight}

    def _check_input(self, name: str, x: Tensor, channels: int, multiple: int) -> None:
        _validate.floating_tensor(name, x, f"(B, {channels}, H, W)")
        if x.dim() != 4 or x.shape[1] != channels:
            raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        if H % multiple or W % multiple:
            raise ValueError(f"{name}'s H and W must be divisible by the downsampling factor {multiple}, got "
                             f"H = {H}, W = {W}")

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""The posterior :math:`q(z \mid x) = \mathcal N(\mu, \operatorname{diag} \exp(\log\sigma^2))`.

        Args:
            x: (B, C, H, W) images in [-1, 1], H and W divisible by ``downsampling_factor``.

        Returns:
            (mean, logvar), each (B, L, H/f, W/f); logvar clamped to ``LOGVAR_RANGE``.

        Raises:
            TypeError: for a non-tensor or an integer dtype.
            ValueError: for a wrong rank or channel count, or H or W not divisible by f.
        """
        self._check_input("x", x, self.image_channels, self.downsampling_factor)
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, x: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        r"""The latent of x: the posterior mean :math:`\mu`, or with ``sample`` the reparameterised draw
        :math:`z = \mu + \exp(\tfrac12 \log\sigma^2) \odot \epsilon`, :math:`\epsilon \sim \mathcal N(0, I)` from
        ``generator`` (the global generator when None).

        Args:
            x: (B, C, H, W) images in [-1, 1], H and W divisible by ``downsampling_factor``.
            sample: draw from the posterior instead of returning its mean.
            generator: the source of :math:`\epsilon`, on x's device.

        Returns:
            (B, L, H/f, W/f), unscaled (a prior sees ``scaling_factor`` times this).

        Raises:
            TypeError: as :meth:`moments`, a sample that is not a bool, a generator that is not a torch.Generator.
            ValueError: as :meth:`moments`.
        """
        _validate.boolean("sample", sample)
        _validate.generator("generator", generator)
        mean, logvar = self.moments(x)
        return _reparameterise(mean, logvar, generator) if sample else mean

    def decode(self, z: Tensor) -> Tensor:
        """The image of an (unscaled) latent; not clamped, values near [-1, 1] for latents the encoder produces.

        Args:
            z: (B, L, h, w).

        Returns:
            (B, C, f h, f w).

        Raises:
            TypeError: for a non-tensor or an integer dtype.
            ValueError: for a wrong rank or channel count.
        """
        self._check_input("z", z, self.latent_channels, 1)
        return self.decoder(z)

    @staticmethod
    def kl(mean: Tensor, logvar: Tensor) -> Tensor:
        r"""The KL divergence of :math:`\mathcal N(\mu, \operatorname{diag}\sigma^2)` from :math:`\mathcal N(0, I)`
        per batch item, summed over the latent elements (Kingma & Welling 2014, App. B; LDM's KL term, Sec. 3):

        .. math:: \mathrm{KL}_b = \tfrac12 \sum_{l, i, j} \big(\mu_{b l i j}^2 + \sigma_{b l i j}^2 - 1
                  - \log\sigma_{b l i j}^2\big).

        :meth:`loss` averages it over the batch.

        Args:
            mean: (B, ...) posterior means.
            logvar: the posterior log-variances, the shape of ``mean``.

        Returns:
            (B,) in mean's dtype.

        Raises:
            TypeError: for a non-tensor or an integer dtype.
            ValueError: for shapes that differ or a tensor without a batch dimension.
        """
        _validate.floating_tensor("mean", mean, "(B, ...)")
        _validate.floating_tensor("logvar", logvar, "(B, ...)")
        if mean.dim() < 1 or mean.shape != logvar.shape:
            raise ValueError(f"mean and logvar must have the same shape (B, ...), got {tuple(mean.shape)} and "
                             f"{tuple(logvar.shape)}")
        return 0.5 * (mean.square() + logvar.exp() - 1 - logvar).flatten(1).sum(dim=1)

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        r"""The training loss of one batch, per-item sums averaged over the batch (as LDM's autoencoder loss):

        .. math:: \text{reconstruction} = \frac1B \sum_b \|x_b - D(z_b)\|_1, \quad
                  \text{kl} = \frac1B \sum_b \mathrm{KL}_b, \quad
                  \text{total} = \text{reconstruction} + \lambda_{KL}\, \text{kl},

        z drawn by the reparameterisation (:meth:`encode` with ``sample``). L1, LDM's pixel term: it is the
        likelihood of Laplace noise, whose optimum is the median of the plausible images rather than L2's mean,
        so edges blur less. Both terms are sums over elements, which scale alike with the image area, so the balance
        :math:`\lambda_{KL}` sets (1e-6 in LDM's KL-f4 configuration) does not depend on the patch size.

        Args:
            x: (B, C, H, W) images in [-1, 1], H and W divisible by ``downsampling_factor``.
            generator: the source of the reparameterisation noise.

        Returns:
            {"total", "reconstruction", "kl"}: () tensors; "total" carries the gradient.

        Raises:
            TypeError: as :meth:`moments`, a generator that is not a torch.Generator.
            ValueError: as :meth:`moments`.
        """
        _validate.generator("generator", generator)
        mean, logvar = self.moments(x)
        reconstructed = self.decoder(_reparameterise(mean, logvar, generator))
        reconstruction = (reconstructed - x).abs().flatten(1).sum(dim=1).mean()
        kl = self.kl(mean, logvar).mean()
        return {"total": reconstruction + self.kl_weight * kl, "reconstruction": reconstruction, "kl": kl}

    @torch.no_grad()
    def fit_scaling_factor(self, images: Tensor, batch_size: int = 64) -> float:
        r"""Sets ``scaling_factor`` to :math:`1 / \operatorname{std}(\mu)`, the Bessel-corrected standard deviation
        of all elements of the latent means of ``images``, so the scaled latents a prior is trained on have unit
        variance, the variance of its noise :math:`x_0` (Rombach et al. 2022, Sec. 4.3.2).

        Args:
            images: (N, C, H, W) images in [-1, 1], H and W divisible by ``downsampling_factor``.
            batch_size: images encoded at once (bounds the memory).

        Returns:
            the new scaling factor.

        Raises:
            TypeError: as :meth:`moments`, for a ``batch_size`` that is not an integer.
            ValueError: as :meth:`moments`, for a non-positive ``batch_size``, or latents with zero or non-finite
                spread.
        """
        _validate.positive_int("batch_size", batch_size)
        self._check_input("images", images, self.image_channels, self.downsampling_factor)
        # float64 accumulation: the std of millions of float32 latents loses digits to the squared deviations' sum.
        means = torch.cat([self.encode(chunk).double().flatten() for chunk in images.split(batch_size)])
        std = means.std().item() if means.numel() > 1 else 0.0
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"the latent means must have a finite, positive standard deviation, got {std!r} over "
                             f"{means.numel()} element(s)")
        self.scaling_factor.fill_(1.0 / std)
        return 1.0 / std
