r"""A :class:`~blindfast.models.Prior` as a Gaussian denoiser of [0, 1] images: Tweedie's ``denoise`` at the flow
time whose noise matches.

A flow state is :math:`x_t = t\,x_1 + (1 - t)\,x_0` with data :math:`x_1 = 2u - 1` for an image u in [0, 1], so
:math:`x_t / t = x_1 + \tfrac{1 - t}{t} x_0`. An image with white noise of std :math:`\sigma` is
:math:`2(u + \sigma n) - 1 = x_1 + 2\sigma n`, hence the matching time

.. math:: \frac{1 - t}{t} = 2\sigma \iff t = \frac{1}{1 + 2\sigma}, \qquad
          \hat u = \tfrac12\big(\hat x_1(t\,(2v - 1), t) + 1\big)

for the noisy image v. Large images are denoised on blended tiles (:func:`blindfast.data.apply_tiled`): the
shipped priors have attention at a quarter of the resolution, whose cost grows with the square of the pixel count.
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast.data import apply_tiled
from blindfast.models import Prior

__all__ = ["PriorDenoiser", "time_of_noise", "DEFAULT_DENOISER_TILE", "DEFAULT_DENOISER_OVERLAP"]

# The shipped priors were trained on 64x64 patches; 128 px tiles keep the attention's (H W / 16)^2 small (1024
# tokens) and, with a 32 px overlap, spend 1.8x the pixels of the image.
DEFAULT_DENOISER_TILE = 128
DEFAULT_DENOISER_OVERLAP = 32


def time_of_noise(sigma: float | Tensor) -> float | Tensor:
    """The flow time t = 1 / (1 + 2 sigma) whose noise equals std ``sigma`` on a [0, 1] image (a float or a
    tensor of stds, elementwise)."""
    return 1.0 / (1.0 + 2.0 * sigma)


class PriorDenoiser:
    """``denoiser(v, sigma)``: the prior's MMSE estimate of a [0, 1] image from ``v`` with noise std ``sigma``.

    Args:
        prior: a pixel-space :class:`~blindfast.models.Prior` on images in [-1, 1].
        tile: denoise tiles of this side (None: the whole image at once).
        overlap: the tiles' overlap (at most half a tile).
        channels: the prior's image channels (3 for the shipped priors). A one-channel image is denoised as
            three equal channels and averaged back.
    """

    def __init__(self, prior: Prior, *, tile: int | None = DEFAULT_DENOISER_TILE,
                 overlap: int = DEFAULT_DENOISER_OVERLAP, channels: int | None = None):
        self.prior = prior
        self.tile = tile
        self.overlap = overlap if tile is None else min(overlap, tile // 2)
        net = getattr(prior, "net", None)
        self.channels = channels or getattr(net, "image_channels", None)
        mults = getattr(net, "channel_mults", None)
        self.multiple = 2 ** (len(mults) - 1) if mults else 1   # the U-Net's H, W must be multiples of this

    @property
    def half_stride(self) -> int:
        """Half the distance between neighbouring tiles' starts: a ``shift`` by it puts the seams between the
        unshifted ones (0 when not tiled)."""
        return 0 if self.tile is None else (self.tile - self.overlap) // 2

    def __call__(self, v: Tensor, sigma: float | Tensor, *, shift: int = 0) -> Tensor:
        """Denoise.

        Args:
            v: (B, C, H, W) noisy image in [0, 1] (approximately).
            sigma: its noise std (> 0; 0 returns ``v``), or a (B|1, 1, H, W) map of stds > 0: each tile is then
                denoised at the mean of the map over the tile (the whole image at its mean when not tiled).
            shift: move the tile grid this many pixels down and right (0 <= shift < min(H, W)): the image (and
                the map) is extended by that many reflected pixels at its top and left before tiling, and they
                are cropped after. Nothing changes when the image fits in one tile.
        Returns:
            (B, C, H, W) the estimate.
        """
        if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift < min(v.shape[-2:]):
            raise ValueError(f"shift must be an int in [0, {min(v.shape[-2:])}) (0 up to the image's smaller "
                             f"side), got {shift!r}")
        local = isinstance(sigma, Tensor)
        if local and (sigma.dim() != 4 or sigma.shape[1] != 1 or sigma.shape[-2:] != v.shape[-2:]
                      or sigma.shape[0] not in (1, v.shape[0]) or not bool((sigma > 0).all())):
            raise ValueError(f"a sigma map must be (B|1, 1, H, W) = (.., 1, {v.shape[-2]}, {v.shape[-1]}) with "
                             f"values > 0, got shape {tuple(sigma.shape)}, min {sigma.min().item():.4g}")
        if not local and sigma <= 0:
            return v
        grey = self.channels not in (None, v.shape[1]) and v.shape[1] == 1
        if self.channels not in (None, v.shape[1]) and not grey:
            raise ValueError(f"the prior denoises {self.channels}-channel images, got {v.shape[1]} channels")
        x = v.expand(-1, self.channels, -1, -1) if grey else v
        channels = x.shape[1]
        if local:   # the map travels with the image as one more channel, so every tile gets its own part
            x = torch.cat([x, sigma.to(x.dtype).expand(x.shape[0], -1, -1, -1)], dim=1)

        def denoise(tile: Tensor) -> Tensor:
            if local:
                t = time_of_noise(tile[:, channels:].mean(dim=(1, 2, 3)))   # (B,)
                tile = tile[:, :channels]
            else:
                t = time_of_noise(sigma)
            H, W = tile.shape[-2:]
            pad_h, pad_w = -H % self.multiple, -W % self.multiple
            padded = torch.nn.functional.pad(tile, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w \
                else tile
            scale = t[:, None, None, None] if local else t
            with torch.no_grad():
                x1 = self.prior.denoise(scale * (2 * padded - 1), t)
            return ((x1 + 1) / 2)[..., :H, :W]

        if self.tile is None or max(x.shape[-2:]) <= self.tile:
            out = denoise(x)
        else:
            shifted = torch.nn.functional.pad(x, (shift, 0, shift, 0), mode="reflect") if shift else x
            out = apply_tiled(denoise, shifted, self.tile, self.overlap)[..., shift:, shift:]
        return out.mean(1, keepdim=True) if grey else out
