r"""Power-function EMA of a network's weights during training (Karras et al. 2024, "Analyzing and Improving the
Training Dynamics of Diffusion Models", EDM2, Sec. 3.1 and App. C; equation numbers of the arXiv version).

With progress measured in images :math:`\tau`, the average with exponent :math:`\gamma` after :math:`T` images is

.. math:: \hat\theta(T) = \frac{\int_0^T \tau^\gamma\, \theta(\tau)\, d\tau}{\int_0^T \tau^\gamma\, d\tau}

(EDM2 Eq. 108 with the power-function profile of Eq. 121). The weights are constant between optimiser steps:
:math:`\theta(\tau) = \theta_k` on :math:`(n_{k-1}, n_k]`, :math:`n_k` the image count after step k. Then
:math:`\hat\theta_K = \sum_k \theta_k\, (n_k^{\gamma+1} - n_{k-1}^{\gamma+1}) / n_K^{\gamma+1}`, and the
recursion :math:`\hat\theta_k = \beta_k \hat\theta_{k-1} + (1 - \beta_k)\, \theta_k` with
:math:`\beta_k = (1 - (n_k - n_{k-1}) / n_k)^{\gamma+1} = (n_{k-1} / n_k)^{\gamma+1}` (EDM2 Eq. 127) computes exactly
that, for any batch sizes. :math:`\gamma` follows from the relative standard deviation :math:`\sigma_{rel}` of the
profile, the real root of :math:`\gamma^3 + 7\gamma^2 + (16 - \sigma_{rel}^{-2})\gamma + (12 - \sigma_{rel}^{-2}) = 0`
(EDM2 Eq. 126, Alg. 2), which inverts :math:`\sigma_{rel} = \sqrt{(\gamma + 1) / ((\gamma + 2)^2 (\gamma + 3))}`
(Eq. 123).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from blindfast.ops.ema import power_ema_beta, power_ema_gamma, power_ema_update

__all__ = ["PowerEMA", "power_ema_gammas", "DEFAULT_EMA_STDS"]

DEFAULT_EMA_STDS = (0.05, 0.10)  # EDM2 tracks these two during training (Sec. 3.2) and reconstructs others post hoc


def power_ema_gammas(stds: Sequence[float]) -> tuple[float, ...]:
    r"""The exponent :math:`\gamma` of each relative std (see :func:`blindfast.ops.power_ema_gamma`).

    Raises:
        ValueError: no std, or a std outside (0, 0.2887).
    """
    stds = tuple(stds)
    if not stds:
        raise ValueError("stds must hold at least one relative standard deviation, got none")
    return tuple(power_ema_gamma(float(s)) for s in stds)


class PowerEMA:
    r"""Power-function averages of a network's parameters, one copy of the network per relative std.

    Parameters are averaged with :func:`blindfast.ops.power_ema_update`; buffers (e.g. normalisation statistics) are
    copied from the network, as EDM2 does.

    Args:
        net: the network being trained; each average starts as a copy of it (frozen, in eval mode).
        stds: relative standard deviations :math:`\sigma_{rel}` of the profiles, each in (0, 0.2887).
    Raises:
        ValueError: no std, or a std outside (0, 0.2887).
    """

    def __init__(self, net: nn.Module, stds: Sequence[float] = DEFAULT_EMA_STDS):
        self.gammas = power_ema_gammas(stds)
        self.stds = tuple(float(s) for s in stds)
        self.averages = [copy.deepcopy(net).eval().requires_grad_(False) for _ in stds]

    @torch.no_grad()
    def update(self, net: nn.Module, nimg: int, batch: int) -> None:
        r"""Folds in the weights after a step of ``batch`` images that brought the count to ``nimg``:
        :math:`\hat\theta \leftarrow \beta \hat\theta + (1 - \beta)\theta`, :math:`\beta = (1 - b/n)^{\gamma+1}`.

        Args:
            net: the trained network (the architecture the averages were made from).
            nimg: images seen after the step, >= ``batch`` (at the first, ``nimg == batch``, beta = 0: the average
                becomes the weights).
            batch: images in the step.
        Raises:
            ValueError: ``nimg`` or ``batch`` not positive, ``batch > nimg``, or ``net`` does not match the
                averages.
        """
        if batch > nimg:
            raise ValueError(f"batch must be at most nimg (the images seen after the step), got batch={batch}, "
                             f"nimg={nimg}")
        parameters = list(net.parameters())
        buffers = list(net.buffers())
        for std, average in zip(self.stds, self.averages):
            power_ema_update(list(average.parameters()), parameters, power_ema_beta(nimg, batch, std))
            average_buffers = list(average.buffers())
            if len(average_buffers) != len(buffers):
                raise ValueError(f"net has {len(buffers)} buffers, the average {len(average_buffers)}: not the "
                                 f"architecture the EMA was made from")
            for mine, theirs in zip(average_buffers, buffers):
                mine.copy_(theirs)
