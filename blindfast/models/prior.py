r"""One prior interface for the three methods: a flow-matching velocity and every view derived from it.

Flow matching as in :mod:`blindfast.ops.flow`: ``t = 0`` is noise, ``t = 1`` data, images in [-1, 1],

.. math:: x_t = (1 - t)\, x_0 + t\, x_1, \quad x_0 \sim \mathcal N(0, I), \qquad
          v(x_t, t) = \mathbb E[x_1 - x_0 \mid x_t].

Since :math:`x_t = t\,\hat x_1 + (1 - t)\,\hat x_0` and :math:`v = \hat x_1 - \hat x_0` for the conditional means
:math:`\hat x_i = \mathbb E[x_i \mid x_t]`,

.. math:: \hat x_1 = x_t + (1 - t)\, v, \qquad \hat x_0 = x_t - t\, v, \qquad
          \nabla \log p_t(x_t) = -\frac{\hat x_0}{1 - t}

(Tweedie's formula for the Gaussian kernel :math:`\mathcal N(x_t; t x_1, (1 - t)^2 I)`). The same process is a
variance-preserving (DDPM) one after a rescaling: with :math:`s_t = \sqrt{t^2 + (1 - t)^2}`,
:math:`z = x_t / s_t = \sqrt{\bar\alpha}\, x_1 + \sqrt{1 - \bar\alpha}\, x_0` and

.. math:: \bar\alpha(t) = \frac{t^2}{t^2 + (1 - t)^2}, \qquad
          t(\bar\alpha) = \frac{\sqrt{\bar\alpha}}{\sqrt{\bar\alpha} + \sqrt{1 - \bar\alpha}},

whose noise prediction is :math:`\hat x_0` itself. So one network drives flow samplers, DPS-style guidance (CL-DPS)
and DDPM/DDIM-schedule EM (LatentDEM).
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from blindfast import _validate

__all__ = ["Prior", "NetworkPrior", "GaussianPrior", "alpha_bar_of_time", "time_of_alpha_bar"]


def _check_time_type(name: str, t) -> None:
    """TypeError unless ``t`` is a real number or a tensor (a bool, a str, a list or None is refused)."""
    if isinstance(t, bool) or not isinstance(t, (numbers.Real, Tensor)):
        raise TypeError(f"{name} must be a float or a tensor, got {type(t).__name__} {t!r}")


def _time(t, x: Tensor, name_x: str = "x_t") -> Tensor:
    """``t`` (a float, a () tensor or a (B,) tensor, values in [0, 1]) as a (B, 1, ..., 1) tensor like ``x``, a
    floating (B, ...) tensor named ``name_x`` in errors."""
    _validate.floating_tensor(name_x, x, "(B, C, H, W)")
    if x.dim() == 0:
        raise ValueError(f"{name_x} must have a batch dimension, (B, C, H, W), got a 0-d tensor")
    _check_time_type("t", t)
    if not isinstance(t, Tensor):
        # A number (what the samplers pass at every step): checked on the host and filled on the device, so no
        # host-to-device copy and no read-back synchronises a GPU step.
        t = float(t)
        if not 0.0 <= t <= 1.0:   # NaN fails too
            raise ValueError(f"t must lie in [0, 1], got values from {t:.4g} to {t:.4g}")
        return torch.full((x.shape[0],) + (1,) * (x.dim() - 1), t, dtype=x.dtype, device=x.device)
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must be a float, a () tensor or a (B,) tensor with B = {x.shape[0]}, got shape "
                         f"{tuple(t.shape)}")
    if bool(((t < 0) | (t > 1) | ~torch.isfinite(t)).any()):
        raise ValueError(f"t must lie in [0, 1], got values from {t.min().item():.4g} to {t.max().item():.4g}")
    return t.reshape(-1, *([1] * (x.dim() - 1)))


def alpha_bar_of_time(t: Tensor | float) -> Tensor:
    r"""The VP schedule value of flow time t: :math:`\bar\alpha = t^2 / (t^2 + (1 - t)^2)`."""
    _check_time_type("t", t)
    t = torch.as_tensor(t, dtype=torch.get_default_dtype() if not isinstance(t, Tensor) else t.dtype)
    if bool(((t < 0) | (t > 1) | ~torch.isfinite(t)).any()):
        raise ValueError(f"t must lie in [0, 1], got values from {t.min().item():.4g} to {t.max().item():.4g}")
    return t.square() / (t.square() + (1 - t).square())


def time_of_alpha_bar(alpha_bar: Tensor | float) -> Tensor:
    r"""The flow time of a VP schedule value: :math:`t = \sqrt{\bar\alpha} / (\sqrt{\bar\alpha} +
    \sqrt{1 - \bar\alpha})`."""
    _check_time_type("alpha_bar", alpha_bar)
    a = torch.as_tensor(alpha_bar,
                        dtype=torch.get_default_dtype() if not isinstance(alpha_bar, Tensor) else alpha_bar.dtype)
    if bool(((a < 0) | (a > 1) | ~torch.isfinite(a)).any()):
        raise ValueError(f"alpha_bar must lie in [0, 1], got values from {a.min().item():.4g} to {a.max().item():.4g}")
    return a.sqrt() / (a.sqrt() + (1 - a).sqrt())


class Prior(nn.Module):
    """A flow-matching prior. Subclasses implement :meth:`velocity`; every other view derives from it.

    All methods take ``x_t: (B, C, H, W)`` and ``t``: a float, a () tensor or a (B,) tensor in [0, 1], and return
    (B, C, H, W). ``cond`` is an optional (B, C_cond, H, W) tensor of extra input channels (e.g. DDM's location
    channels), passed through to the network. They raise TypeError for an ``x_t`` that is not a floating-point
    tensor or a ``t`` that is neither a number nor a tensor, ValueError for a ``t`` outside [0, 1] or of another
    batch size.
    """

    image_multiple: int = 1   # what the H and W of the images it models must be multiples of (any size here)

    def velocity(self, x_t: Tensor, t, cond: Tensor | None = None) -> Tensor:
        """:math:`v = E[x_1 - x_0 | x_t]`."""
        raise NotImplementedError

    def denoise(self, x_t: Tensor, t, cond: Tensor | None = None) -> Tensor:
        """:math:`\\hat x_1 = E[x_1 | x_t] = x_t + (1 - t) v` (the data estimate)."""
        return x_t + (1 - _time(t, x_t)) * self.velocity(x_t, t, cond)

    def epsilon(self, x_t: Tensor, t, cond: Tensor | None = None) -> Tensor:
        """:math:`\\hat x_0 = E[x_0 | x_t] = x_t - t v` (the noise estimate)."""
        return x_t - _time(t, x_t) * self.velocity(x_t, t, cond)

    def score(self, x_t: Tensor, t, cond: Tensor | None = None) -> Tensor:
        """:math:`\\nabla \\log p_t(x_t) = -\\hat x_0 / (1 - t)`, for t < 1."""
        tt = _time(t, x_t)
        if bool((tt >= 1).any()):
            raise ValueError(f"the score is undefined at t = 1 (no noise left): t must be < 1, got "
                             f"max t = {tt.max().item():.6g}")
        return -self.epsilon(x_t, t, cond) / (1 - tt)

    def vp_epsilon(self, z: Tensor, alpha_bar, cond: Tensor | None = None) -> Tensor:
        r"""The noise prediction of the VP view, :math:`z = \sqrt{\bar\alpha} x_1 + \sqrt{1 - \bar\alpha} x_0`.

        Args:
            z: (B, C, H, W) a VP-scaled noisy image.
            alpha_bar: a float, a () or a (B,) tensor in [0, 1].
        """
        _validate.floating_tensor("z", z, "(B, C, H, W)")
        _check_time_type("alpha_bar", alpha_bar)
        t = time_of_alpha_bar(torch.as_tensor(alpha_bar, dtype=z.dtype, device=z.device))
        scale = _time(t, z, "z").square().add((1 - _time(t, z, "z")).square()).sqrt()
        return self.epsilon(z * scale, t, cond)

    def vp_denoise(self, z: Tensor, alpha_bar, cond: Tensor | None = None) -> Tensor:
        r""":math:`E[x_1 | z]` in the VP view (see :meth:`vp_epsilon`)."""
        _validate.floating_tensor("z", z, "(B, C, H, W)")
        _check_time_type("alpha_bar", alpha_bar)
        t = time_of_alpha_bar(torch.as_tensor(alpha_bar, dtype=z.dtype, device=z.device))
        scale = _time(t, z, "z").square().add((1 - _time(t, z, "z")).square()).sqrt()
        return self.denoise(z * scale, t, cond)


class NetworkPrior(Prior):
    """A prior whose velocity is a network ``net(x_t, t, cond) -> v``, e.g. :class:`blindfast.models.unet.UNet`.

    Args:
        net: a module taking (B, C, H, W) ``x_t``, (B,) ``t`` and an optional (B, C_cond, H, W) ``cond``; it
            exposes ``image_channels`` and ``cond_channels`` (ints) so inputs are checked here with clear errors.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module (e.g. a blindfast.models.UNet), got {type(net).__name__}")
        self.net = net

    @property
    def image_multiple(self) -> int:
        """What H and W must be multiples of: the network's ``size_multiple`` (1 for a network without one)."""
        return getattr(self.net, "size_multiple", 1)

    def velocity(self, x_t: Tensor, t, cond: Tensor | None = None) -> Tensor:
        _validate.floating_tensor("x_t", x_t, "(B, C, H, W)")
        expected = getattr(self.net, "image_channels", None)
        if expected is not None and (x_t.dim() != 4 or x_t.shape[1] != expected):
            raise ValueError(f"x_t must have shape (B, {expected}, H, W) for this prior, got {tuple(x_t.shape)}")
        cond_channels = getattr(self.net, "cond_channels", 0)
        if cond is not None and not isinstance(cond, Tensor):
            raise TypeError(f"cond must be a (B, {cond_channels}, H, W) tensor or None, got {type(cond).__name__}")
        if cond is not None and cond.dim() != 4:
            raise ValueError(f"cond must be a (B, {cond_channels}, H, W) tensor, got {tuple(cond.shape)}")
        got = 0 if cond is None else cond.shape[1]
        if got != cond_channels:
            raise ValueError(f"this prior takes {cond_channels} conditioning channel(s), got {got}")
        return self.net(x_t, _time(t, x_t).reshape(-1), cond)


class GaussianPrior(Prior):
    r"""The exact prior of Gaussian data :math:`x_1 \sim \mathcal N(\mu, \sigma_d^2 I)`: a closed-form reference.

    With :math:`D = t^2 \sigma_d^2 + (1 - t)^2` (the variance of :math:`x_t`),
    :math:`\hat x_1 = \mu + t \sigma_d^2 (x_t - t\mu) / D` and :math:`\hat x_0 = (1 - t)(x_t - t\mu) / D`,
    so :math:`v = \hat x_1 - \hat x_0`, finite on all of [0, 1] for :math:`\sigma_d > 0`.

    Args:
        mean: μ, a float or a tensor broadcasting to (C, H, W).
        std: σ_d > 0.
    Raises:
        TypeError: a mean that is neither a number nor a floating-point tensor, a std that is not a number.
        ValueError: a mean that is not finite, a std that is not finite and > 0; at a call, a mean that does not
            broadcast to x_t's (C, H, W).
    """

    def __init__(self, mean: Tensor | float = 0.0, std: float = 0.5):
        super().__init__()
        _validate.real("std", std, 0, low_open=True)
        if isinstance(mean, Tensor):
            _validate.floating_tensor("mean", mean, "broadcasting to (C, H, W)")
            if not bool(torch.isfinite(mean).all()):
                raise ValueError(f"mean must be finite, got {int((~torch.isfinite(mean)).sum())} NaN or inf values")
        else:
            _validate.real("mean", mean)
        # Kept in float64 (a float mean) or the given tensor's dtype; cast to x_t's dtype at each call.
        self.register_buffer("mean", mean.detach().clone() if isinstance(mean, Tensor)
                             else torch.tensor(float(mean), dtype=torch.float64))
        self.std = float(std)

    def velocity(self, x_t: Tensor, t, cond: Tensor | None = None) -> Tensor:
        tt = _time(t, x_t)
        if self.mean.dim() > x_t.dim() - 1 or any(
                m not in (1, n) for m, n in zip(reversed(self.mean.shape), reversed(x_t.shape[1:]))):
            raise ValueError(f"this prior's mean of shape {tuple(self.mean.shape)} must broadcast to x_t's "
                             f"(C, H, W) = {tuple(x_t.shape[1:])}")
        mean = self.mean.to(x_t.dtype)
        centred = x_t - tt * mean
        variance = tt.square() * self.std**2 + (1 - tt).square()
        return mean + (tt * self.std**2 - (1 - tt)) * centred / variance
