"""PowerEMA: the exponents of EDM2's two stds, the average after many updates of varying batch size against the
power-function profile integrated directly in float64, buffers, bad input."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import nn

from blindfast.train.ema import DEFAULT_EMA_STDS, PowerEMA, power_ema_gammas

F64 = torch.float64


def _net(dtype=F64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).to(dtype)


@pytest.mark.parametrize("std", [0.05, 0.10])
def test_gamma_is_the_largest_real_root_of_the_cubic(std):
    """EDM2 Eq. 126: the real roots of g^3 + 7g^2 + (16 - s^-2)g + (12 - s^-2); EDM2 takes the largest."""
    roots = np.roots([1.0, 7.0, 16.0 - std**-2, 12.0 - std**-2])
    expected = roots.real[np.abs(roots.imag) == 0].max()
    (gamma,) = power_ema_gammas([std])
    assert gamma == pytest.approx(expected, rel=1e-12)
    # a root to within rounding: the cubic's terms are ~ gamma^3, so its value is ~ eps gamma^3 at a root
    value = gamma**3 + 7 * gamma**2 + (16 - std**-2) * gamma + (12 - std**-2)
    assert abs(value) < 64 * np.finfo(float).eps * gamma**3


@pytest.mark.parametrize("std", [0.05, 0.10])
def test_gamma_gives_the_profile_of_that_relative_std(std):
    """The profile (gamma + 1) tau^gamma on [0, 1], integrated numerically, has standard deviation ``std``
    (EDM2 Eq. 123 in closed form)."""
    (gamma,) = power_ema_gammas([std])
    density = lambda tau: (gamma + 1) * tau**gamma  # noqa: E731
    moment = lambda k: integrate.quad(lambda tau: tau**k * density(tau), 0, 1, epsabs=0, epsrel=1e-13)[0]  # noqa
    assert moment(0) == pytest.approx(1, rel=1e-12)
    assert math.sqrt(moment(2) - moment(1) ** 2) == pytest.approx(std, rel=1e-9)


def _reference_average(history, gamma):
    """Weights constant over each step's images (n_{k-1}, n_k], averaged with weight tau^gamma, integrated by
    quadrature in float64 (tau scaled by the final count, so the integrand stays O(1))."""
    total = history[-1][0]
    average, previous = None, 0
    for nimg, weights in history:
        w = integrate.quad(lambda u: u**gamma, previous / total, nimg / total, epsabs=0, epsrel=1e-13)[0]
        term = [w * p for p in weights]
        average = term if average is None else [a + t for a, t in zip(average, term)]
        previous = nimg
    norm = 1 / (gamma + 1)  # the integral of u^gamma over [0, 1]
    return [a / norm for a in average]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_average_after_updates_of_varying_batch_equals_the_integrated_profile(dtype):
    net = _net(dtype)
    ema = PowerEMA(net, DEFAULT_EMA_STDS)
    generator = torch.Generator().manual_seed(1)
    batches = [4, 8, 8, 4, 16, 12, 8, 4, 32, 8, 8, 16, 4, 4, 8, 24, 8, 8, 12, 4]
    history, nimg = [], 0
    for batch in batches:
        with torch.no_grad():  # the weights after this step: anything, here random
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=F64))
        nimg += batch
        ema.update(net, nimg, batch)
        history.append((nimg, [p.detach().to(F64).clone() for p in net.parameters()]))
    # Each update rounds the lerp once (a few ulp of the largest weight); the errors decay by beta, so K updates
    # leave at most K times that. The quadrature adds ~1e-13 relative per step.
    largest = max(p.abs().max().item() for _, weights in history for p in weights)
    tolerance = len(batches) * (4 * torch.finfo(dtype).eps + 1e-13) * largest
    for gamma, average in zip(ema.gammas, ema.averages):
        expected = _reference_average(history, gamma)
        for got, want in zip(average.parameters(), expected):
            torch.testing.assert_close(got.to(F64), want, rtol=0, atol=tolerance)


def test_narrower_profile_weighs_the_last_step_more():
    """Weights 0 for 72 images, then 1 for the last 8: each average is the profile's mass on (72, 80], in closed
    form 1 - (72/80)^(gamma + 1); std 0.05 (larger gamma, a narrower profile) puts more of it there than 0.10."""
    net = _net()
    ema = PowerEMA(net)
    with torch.no_grad():
        for nimg in range(8, 81, 8):
            for p in net.parameters():
                p.fill_(0.0 if nimg <= 72 else 1.0)
            ema.update(net, nimg, 8)
    mass = [1 - (72 / 80) ** (gamma + 1) for gamma in ema.gammas]
    assert mass[0] > mass[1]
    for average, expected in zip(ema.averages, mass):
        for p in average.parameters():
            torch.testing.assert_close(p, torch.full_like(p, expected), rtol=4 * torch.finfo(F64).eps, atol=0)


def test_buffers_are_copied_and_averages_are_frozen():
    net = _net()
    ema = PowerEMA(net)
    net.train()
    net(torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(2)))  # moves BatchNorm's statistics
    ema.update(net, 4, 4)
    for average in ema.averages:
        assert not average.training
        assert all(not p.requires_grad for p in average.parameters())
        for mine, theirs in zip(average.buffers(), net.buffers()):
            assert torch.equal(mine, theirs)


def test_empty_stds_rejected():
    with pytest.raises(ValueError, match=r"at least one relative standard deviation, got none"):
        PowerEMA(_net(), [])


@pytest.mark.parametrize("std", [0.0, 0.3, -0.1])
def test_std_out_of_range_rejected(std):
    with pytest.raises(ValueError, match=rf"std must be a finite number in \(0, 0.2887\), got {std}"):
        PowerEMA(_net(), [0.05, std])


def test_batch_larger_than_nimg_rejected():
    net = _net()
    with pytest.raises(ValueError, match=r"batch must be at most nimg .* got batch=8, nimg=4"):
        PowerEMA(net).update(net, 4, 8)


def test_other_architecture_rejected():
    ema = PowerEMA(_net())
    with pytest.raises(ValueError, match=r"must pair up, got 6 and 2 tensors"):
        ema.update(nn.Linear(3, 2).double(), 4, 4)
