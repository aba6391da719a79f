r"""LatentDEM's plug-and-play kernel denoiser: a small DnCNN on blur kernels, conditioned on the noise level.

Bai et al. 2024 ("Blind Inversion using Latent Diffusion Priors", LatentDEM), after FastEM (Laroche et al. 2024,
"Fast Diffusion EM"), regularise the M-step's kernel with a denoiser :math:`D_\sigma` trained on motion kernels: the
prior step of :func:`blindfast.ops.hqs_kernel_update` is :math:`\phi = D(Z, \sqrt{\lambda/\delta})`. The network is
DnCNN (Zhang et al. 2017, "Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for Image Denoising", IEEE
TIP 26(7)) with the noise level as a second, constant input channel (FFDNet's noise-level map, Zhang et al. 2018):

.. math:: D(z, \sigma) = z - \sigma\, F_\theta\big([z / \sigma,\ \ln(k_h k_w \sigma) \mathbf 1]\big),

where :math:`F_\theta` predicts the noise in units of its std (DnCNN's residual learning, Sec. III-B) through 5
conv blocks: conv 3x3 (2 -> 32) + ReLU, three conv 3x3 (32 -> 32) + ReLU, conv 3x3 (32 -> 1). Zero padding: a
kernel is zero outside its window, so the padding continues it exactly; the network is fully convolutional and takes
any window. The last convolution starts at zero, so the untrained denoiser is the identity.

Scaling (the preconditioning of Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", EDM, Sec. 5, for small noise: :math:`c_{out} = \sigma`): the input is the noisy kernel in units of the noise
std and the output the noise in those units, so the target has unit variance at every level and the training loss
weighs the levels alike (plain MSE on the kernel lets the largest level dominate: after the same 150-step run the
DnCNN residual in kernel units made the MSE at the lowest level, 0.05 mean taps, 3.7 dB worse than the noisy input,
this one 6.7 dB better, for 0.5 to 1.4 dB less gain at the three highest levels). The level map is the log of the
level in units of the mean tap :math:`1/(k_h k_w)` of a kernel of sum 1: the M-step hands over a kernel of sum 1 and
an absolute level
(:math:`\sqrt{1/(5\cdot 10^6)} = 4.5\cdot 10^{-4}` by default, 0.49 mean taps at k = 33), and that unit is fixed by
the normalisation alone, whereas the largest tap depends on the unknown clean kernel (0.018 to 0.38 over 33 x 33
motion kernels, a factor 20).

No BatchNorm (DnCNN has it): the M-step denoises one kernel at a time, so the batch statistics of training would
be replaced by running averages at inference, one more state to ship and to match; a 5-layer network trains stably
without it (DRUNet, Zhang et al. 2021, "Plug-and-Play Image Restoration with Deep Denoiser Prior", drops it too).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["KernelDenoiser", "BLOCKS", "CHANNELS"]

BLOCKS = 5     # LatentDEM's kernel denoiser: 5 conv blocks ...
CHANNELS = 32  # ... of 32 channels


class KernelDenoiser(nn.Module):
    """DnCNN-style denoiser of blur kernels with a noise-level map (see the module docstring).

    ``forward(z, noise_level)`` is :func:`blindfast.ops.hqs_kernel_update`'s ``denoiser`` signature: pass the module
    itself as ``denoiser=``. It computes in the network's dtype and returns the input's dtype and device.
    """

    def __init__(self, blocks: int = BLOCKS, channels: int = CHANNELS):
        super().__init__()
        if blocks < 2:
            raise ValueError(f"blocks must be >= 2 (an input and an output convolution), got {blocks}")
        layers: list[nn.Module] = [nn.Conv2d(2, channels, 3, padding=1), nn.ReLU()]
        for _ in range(blocks - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        nn.init.zeros_(layers[-1].weight)  # the identity at the start
        nn.init.zeros_(layers[-1].bias)
        self.residual = nn.Sequential(*layers)
        self.blocks, self.channels = blocks, channels

    def config(self) -> dict:
        """The constructor arguments (for checkpoints and the shipped manifest)."""
        return {"blocks": self.blocks, "channels": self.channels}

    def normalised_noise(self, z: Tensor, noise_level: Tensor) -> Tensor:
        """F_theta: the noise in ``z`` (B, 1, kh, kw) in units of its std ``noise_level`` (B,) (positive, absolute).
        Returns (B, 1, kh, kw)."""
        sigma = noise_level.reshape(-1, 1, 1, 1)
        level_map = torch.log(sigma * (z.shape[-2] * z.shape[-1])).expand_as(z)
        return self.residual(torch.cat([z / sigma, level_map], dim=1))

    def forward(self, z: Tensor, noise_level: float | Tensor) -> Tensor:
        """Denoised kernels ``z - sigma F(z / sigma, ln(kh kw sigma))``.

        Args:
            z: (B, 1, kh, kw) noisy kernels of sum about 1 (any kh, kw; the shipped weights are trained at 33 x 33).
            noise_level: sigma > 0, the noise std in the kernel's units: a float or a (B,) / (1,) tensor.
        Returns:
            (B, 1, kh, kw) in z's dtype and device.
        """
        if not isinstance(z, Tensor) or z.ndim != 4 or z.shape[1] != 1:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must be a tensor of shape (B, 1, kh, kw), got {got}")
        weight = self.residual[0].weight
        sigma = torch.as_tensor(noise_level, dtype=weight.dtype, device=weight.device).reshape(-1)
        if sigma.shape[0] not in (1, z.shape[0]) or not bool((sigma > 0).all()) or not bool(sigma.isfinite().all()):
            raise ValueError(f"noise_level must be a positive finite float or hold 1 or B = {z.shape[0]} such "
                             f"values, got {sigma.tolist()}")
        sigma = sigma.expand(z.shape[0])
        z_net = z.to(dtype=weight.dtype, device=weight.device)
        denoised = z_net - sigma.reshape(-1, 1, 1, 1) * self.normalised_noise(z_net, sigma)
        return denoised.to(dtype=z.dtype, device=z.device)
