"""Additive white Gaussian noise as an operator whose noise level is a (differentiable) parameter."""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast.physics.base import Operator

__all__ = ["GaussianNoise"]


class GaussianNoise(Operator):
    r"""Additive white Gaussian noise, ``y = x + sigma * n`` with ``n ~ N(0, I)`` drawn from ``generator``.

    The noise is reparameterised: ``n`` does not depend on ``sigma``, so ``dy / dsigma = n`` and a method can
    estimate the noise level by gradient descent. ``n`` has x's shape, dtype and device; it is drawn with
    ``torch.randn`` from ``generator`` (which must live on x's device), so a seed fixes it.
    """

    params = ("sigma", "generator")

    def A(self, x: Tensor, *, sigma: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""Add noise: ``y = x + sigma * n``, sigma per batch item or shared.

        Args:
            x: (B, ...) floating-point tensor, e.g. (B, C, H, W).
            sigma: standard deviation >= 0: a float, a () or (1,) tensor shared by the batch, or a (B,) tensor
                with one level per item. A tensor may require grad.
            generator: the random source, on x's device; ``None`` uses torch's global generator.
        Returns:
            (B, ...) noisy tensor, in x's dtype and device.
        Raises:
            TypeError: x is not a floating-point tensor, sigma is neither a float nor a tensor, or generator is not
                a torch.Generator.
            ValueError: sigma has a shape other than (), (1,) or (B,), is negative or not finite, or generator is on
                another device than x.
        """
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"x must be a floating-point torch.Tensor, got {got}")
        if x.ndim == 0:
            raise ValueError("x must have a batch dimension, (B, ...), got a 0-d tensor")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float, Tensor)):
            raise TypeError(f"sigma must be a float or a tensor, got {type(sigma).__name__}")
        batch = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device) if not isinstance(sigma, Tensor) \
            else sigma.to(dtype=x.dtype, device=x.device)
        if sigma.ndim > 1 or (sigma.ndim == 1 and sigma.shape[0] not in (1, batch)):
            raise ValueError(f"sigma must have shape (), (1,) or (B,) = ({batch},), got shape {tuple(sigma.shape)}")
        if not torch.isfinite(sigma).all() or (sigma < 0).any():
            raise ValueError(f"sigma must be finite and >= 0, got {sigma.detach().cpu().tolist()}")
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
            if generator.device.type != x.device.type:
                raise ValueError(f"generator must be on x's device {x.device.type}, got {generator.device.type}")
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        # (B,) -> (B, 1, ..., 1) so each item gets its own level; () and (1,) broadcast as they are.
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1))) if sigma.ndim == 1 else sigma
        return x + sigma * noise

    def __repr__(self) -> str:
        return "GaussianNoise()"
