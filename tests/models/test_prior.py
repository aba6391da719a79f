"""The Prior interface: GaussianPrior against Bayes for jointly Gaussian (x1, x_t) and against quadrature, the
schedule conversions, the VP views against the flow views, and NetworkPrior's handling of t, cond and bad input."""

import math
import re

import pytest
import torch
from torch import nn

from blindfast.models.prior import GaussianPrior, NetworkPrior, Prior, alpha_bar_of_time, time_of_alpha_bar
from blindfast.models.unet import UNet

F64 = torch.float64
EPS = torch.finfo(F64).eps
# Every view is a few tens of roundings of O(1) quantities: 64 eps of the values' scale bounds it with margin.
ROUNDING = 64 * EPS
# Flow times whose round trip t -> alpha_bar -> t is exact in float64 (asserted where used), so a VP view and the
# flow view it should equal evaluate the network at the same t.
EXACT_TIMES = (0.0, 0.1, 0.25, 0.5, 0.9, 1.0)
# Not representable in float32: the float64 references see a mean rounded to float32 (1e-9 off) if it is ever cast.
MEAN = torch.tensor([0.1, -0.3, 0.7], dtype=F64).reshape(3, 1, 1)
STD = 0.6


def _x(shape=(2, 3, 4, 5), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _gaussian():
    return GaussianPrior(MEAN, STD).double()


def _posterior_means(x_t, t, mean, std):
    """(E[x1 | x_t], E[x0 | x_t]) by Bayes for the jointly Gaussian z = (x1, x0) ~ N((mu, 0), diag(std^2, 1)) and
    x_t = A z, A = [t, 1 - t]: E[z | x_t] = m + Sigma A^T (A Sigma A^T)^-1 (x_t - A m), per pixel."""
    sigma = torch.diag(torch.tensor([std**2, 1.0], dtype=F64))
    A = torch.tensor([[t, 1 - t]], dtype=F64)
    gain = sigma @ A.T @ torch.linalg.inv(A @ sigma @ A.T)  # (2, 1)
    residual = x_t - t * mean
    return mean + gain[0, 0] * residual, gain[1, 0] * residual


# ---------------------------------------------------------------------------------------------------------------
# GaussianPrior


@pytest.mark.parametrize("t", [0.0, 0.1, 0.37, 0.5, 0.83, 0.999, 1.0])
def test_gaussian_denoise_epsilon_velocity_are_posterior_means(t):
    prior, x_t = _gaussian(), _x()
    x1_hat, x0_hat = _posterior_means(x_t, t, MEAN, STD)
    tol = dict(rtol=0, atol=ROUNDING * (1 + x_t.abs().max().item()))
    torch.testing.assert_close(prior.denoise(x_t, t), x1_hat, **tol)
    torch.testing.assert_close(prior.epsilon(x_t, t), x0_hat, **tol)
    torch.testing.assert_close(prior.velocity(x_t, t), x1_hat - x0_hat, **tol)


def test_gaussian_per_item_times():
    prior, x_t = _gaussian(), _x((3, 3, 2, 2))
    times = [0.2, 0.6, 0.95]
    v = prior.velocity(x_t, torch.tensor(times, dtype=F64))
    for b, t in enumerate(times):
        x1_hat, x0_hat = _posterior_means(x_t[b], t, MEAN, STD)
        torch.testing.assert_close(v[b], x1_hat - x0_hat, rtol=0, atol=ROUNDING * (1 + x_t.abs().max().item()))


@pytest.mark.parametrize("t", [0.05, 0.4, 0.9])
def test_gaussian_denoise_and_score_by_quadrature(t):
    """An oracle free of Gaussian algebra: E[x1 | x_t] and d/dx_t log p_t(x_t) as ratios of integrals over x1 of
    the likelihood N(x_t; t x1, (1-t)^2) times the prior N(x1; mu, std^2), by the trapezoid rule on a grid 12
    standard deviations wide each side (spectrally accurate for such integrands: error far below 1e-12)."""
    mean, std = 0.25, STD
    prior = GaussianPrior(mean, std).double()
    x1 = torch.linspace(mean - 12 * std, mean + 12 * std, 20001, dtype=F64)
    for x_t in (-1.3, 0.0, 0.7, 2.1):
        weight = torch.exp(-0.5 * ((x_t - t * x1) / (1 - t)) ** 2 - 0.5 * ((x1 - mean) / std) ** 2)
        evidence = torch.trapezoid(weight, x1)
        x1_hat = torch.trapezoid(x1 * weight, x1) / evidence
        score = torch.trapezoid(-(x_t - t * x1) / (1 - t) ** 2 * weight, x1) / evidence
        x = torch.full((1, 1, 1, 1), x_t, dtype=F64)
        assert abs(prior.denoise(x, t).item() - x1_hat.item()) <= 1e-12
        assert abs(prior.score(x, t).item() - score.item()) <= 1e-12


@pytest.mark.parametrize("t", [0.0, 0.3, 0.75, 0.99])
def test_gaussian_score_is_gradient_of_marginal_log_density(t):
    """x_t ~ N(t mu, (t^2 std^2 + (1-t)^2) I): the score is the autograd gradient of its log-density."""
    prior = _gaussian()
    x_t = _x().requires_grad_()
    marginal = torch.distributions.Normal(t * MEAN, math.sqrt(t**2 * STD**2 + (1 - t) ** 2))
    (gradient,) = torch.autograd.grad(marginal.log_prob(x_t).sum(), x_t)
    torch.testing.assert_close(prior.score(x_t.detach(), t), gradient, rtol=0,
                               atol=ROUNDING * (1 + gradient.abs().max().item()))


def test_gaussian_limits():
    prior, x_t = _gaussian(), _x()
    mean = MEAN.expand_as(x_t)
    # t = 0: x_t is the noise itself, the data estimate the prior mean
    torch.testing.assert_close(prior.denoise(x_t, 0.0), mean, rtol=0, atol=ROUNDING)
    torch.testing.assert_close(prior.epsilon(x_t, 0.0), x_t, rtol=0, atol=0)
    torch.testing.assert_close(prior.velocity(x_t, 0.0), mean - x_t, rtol=0, atol=ROUNDING)
    torch.testing.assert_close(prior.score(x_t, 0.0), -x_t, rtol=0, atol=0)
    # t = 1: x_t is the data, no noise is left
    torch.testing.assert_close(prior.denoise(x_t, 1.0), x_t, rtol=0, atol=ROUNDING)
    torch.testing.assert_close(prior.epsilon(x_t, 1.0), torch.zeros_like(x_t), rtol=0, atol=ROUNDING)
    torch.testing.assert_close(prior.velocity(x_t, 1.0), x_t, rtol=0, atol=ROUNDING)


def test_views_agree_with_velocity_identities():
    """x_t = t x1_hat + (1 - t) x0_hat and v = x1_hat - x0_hat for any prior (here the Gaussian one)."""
    prior, x_t = _gaussian(), _x()
    t = torch.tensor([0.3, 0.8], dtype=F64)
    x1_hat, x0_hat, v = prior.denoise(x_t, t), prior.epsilon(x_t, t), prior.velocity(x_t, t)
    tt = t.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(tt * x1_hat + (1 - tt) * x0_hat, x_t, rtol=0, atol=ROUNDING * 4)
    torch.testing.assert_close(x1_hat - x0_hat, v, rtol=0, atol=ROUNDING * 4)


@pytest.mark.parametrize("mean", [0.1, torch.tensor(0.1, dtype=F64)], ids=["float", "float64-tensor"])
def test_mean_keeps_float64_precision(mean):
    """At t = 0 the data estimate is the mean, to float64 rounding (the float32-rounded 0.1 is 1.5e-9 off)."""
    x_t = _x()
    torch.testing.assert_close(GaussianPrior(mean, STD).denoise(x_t, 0.0), torch.full_like(x_t, 0.1), rtol=0,
                               atol=ROUNDING * (1 + x_t.abs().max().item()))


def test_gaussian_bad_std():
    with pytest.raises(ValueError, match=r"std must be a finite number > 0, got 0.0"):
        GaussianPrior(0.0, 0.0)


def test_prior_base_needs_velocity():
    with pytest.raises(NotImplementedError):
        Prior().denoise(_x(), 0.5)


# ---------------------------------------------------------------------------------------------------------------
# schedule conversions


def test_alpha_bar_round_trip():
    a = torch.cat([torch.linspace(0, 1, 1001, dtype=F64), torch.tensor([1e-300, 1e-12, 1 - 1e-12], dtype=F64)])
    back = alpha_bar_of_time(time_of_alpha_bar(a))
    # both maps are a handful of roundings and alpha_bar(t) has a derivative <= 2 wherever t(a) is ill-conditioned
    torch.testing.assert_close(back, a, rtol=8 * EPS, atol=8 * EPS)


def test_time_round_trip():
    t = torch.cat([torch.linspace(0, 1, 1001, dtype=F64), torch.tensor([1e-150, 1e-6, 1 - 1e-6], dtype=F64)])
    a = alpha_bar_of_time(t)
    back = time_of_alpha_bar(a)
    # alpha_bar is computed to a few eps relative; t(a) amplifies that by a |dt/da|, with
    # dt/da = 1 / (2 u w (u + w)^2), u = sqrt(a), w = sqrt(1 - a): large near t = 1, where 1 - a loses digits
    u, w = a.sqrt(), (1 - a).sqrt()
    sensitivity = torch.where((u > 0) & (w > 0), a / (2 * u * w * (u + w) ** 2), torch.zeros_like(a))
    assert bool(((back - t).abs() <= 8 * EPS * (t + sensitivity)).all())


def test_conversion_fixed_points_and_closed_form():
    t = torch.tensor([0.0, 0.5, 1.0, 0.25], dtype=F64)
    torch.testing.assert_close(alpha_bar_of_time(t), torch.tensor([0.0, 0.5, 1.0, 0.1], dtype=F64), rtol=2 * EPS,
                               atol=0)  # 0.25^2 / (0.25^2 + 0.75^2) = 1/10
    torch.testing.assert_close(time_of_alpha_bar(torch.tensor([0.0, 0.5, 1.0], dtype=F64)),
                               torch.tensor([0.0, 0.5, 1.0], dtype=F64), rtol=0, atol=0)


def test_conversions_keep_dtype():
    assert alpha_bar_of_time(torch.tensor(0.3, dtype=F64)).dtype == F64
    assert time_of_alpha_bar(torch.tensor(0.3, dtype=F64)).dtype == F64
    assert alpha_bar_of_time(0.3).dtype == torch.get_default_dtype()


@pytest.mark.parametrize("a", [-0.1, 1.5, float("nan")])
def test_time_of_alpha_bar_out_of_range(a):
    with pytest.raises(ValueError, match=r"alpha_bar must lie in \[0, 1\], got values from"):
        time_of_alpha_bar(torch.tensor([0.5, a], dtype=F64))


@pytest.mark.parametrize("t", [-1.0, 1.5, float("nan")])
def test_alpha_bar_of_time_out_of_range(t):
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\], got values from"):
        alpha_bar_of_time(torch.tensor([0.5, t], dtype=F64))


# ---------------------------------------------------------------------------------------------------------------
# VP views


def _random_tiny_prior(cond_channels=0, seed=0):
    net = UNet.from_preset("tiny", cond_channels=cond_channels).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            scale = 1 / math.sqrt(p[0].numel()) if p.dim() > 1 else 0.5
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * scale)
    return NetworkPrior(net)


def _priors():
    return [("gaussian", _gaussian(), None), ("network", _random_tiny_prior(2), _x((2, 2, 8, 12), seed=9))]


@pytest.mark.parametrize("which", [0, 1], ids=["gaussian", "network"])
def test_vp_views_equal_flow_views(which):
    _, prior, cond = _priors()[which]
    shape = (2, 3, 8, 12) if cond is not None else (2, 3, 4, 5)
    x_t = _x(shape)
    for t in EXACT_TIMES:
        t_ = torch.tensor(t, dtype=F64)
        alpha_bar = alpha_bar_of_time(t_)
        assert time_of_alpha_bar(alpha_bar).item() == t  # the precondition: both views see the same t
        z = x_t / torch.sqrt(t_**2 + (1 - t_) ** 2)
        epsilon, denoise = prior.epsilon(x_t, t, cond), prior.denoise(x_t, t, cond)
        # z s_t reproduces x_t to an ulp; the views are Lipschitz in x_t with constants of a few units here
        tol = dict(rtol=0, atol=ROUNDING * (1 + max(epsilon.abs().max().item(), denoise.abs().max().item())))
        torch.testing.assert_close(prior.vp_epsilon(z, alpha_bar, cond), epsilon, **tol)
        torch.testing.assert_close(prior.vp_denoise(z, alpha_bar, cond), denoise, **tol)


def test_vp_identity_holds_for_a_network_prior():
    """z = sqrt(ab) E[x1 | z] + sqrt(1 - ab) E[x0 | z] for any velocity, at any alpha_bar, per item."""
    prior = _random_tiny_prior(2)
    z, cond = _x((3, 3, 8, 12)), _x((3, 2, 8, 12), seed=9)
    alpha_bar = torch.tensor([0.02, 0.5, 0.97], dtype=F64)
    denoise, epsilon = prior.vp_denoise(z, alpha_bar, cond), prior.vp_epsilon(z, alpha_bar, cond)
    a = alpha_bar.reshape(-1, 1, 1, 1)
    rebuilt = a.sqrt() * denoise + (1 - a).sqrt() * epsilon
    scale = z.abs().max() + denoise.abs().max() + epsilon.abs().max()
    torch.testing.assert_close(rebuilt, z, rtol=0, atol=ROUNDING * scale.item())
    assert (denoise - z).abs().max() > 0.1  # the network is not the identity: the test has content


def test_vp_endpoints():
    prior, z = _gaussian(), _x()
    # alpha_bar = 0: z is pure noise; alpha_bar = 1: z is the data
    torch.testing.assert_close(prior.vp_epsilon(z, 0.0), z, rtol=0, atol=0)
    torch.testing.assert_close(prior.vp_denoise(z, 0.0), MEAN.expand_as(z), rtol=0, atol=ROUNDING)
    torch.testing.assert_close(prior.vp_denoise(z, 1.0), z, rtol=0, atol=ROUNDING)


def test_vp_alpha_bar_out_of_range():
    with pytest.raises(ValueError, match=r"alpha_bar must lie in \[0, 1\], got values from 1.2 to 1.2"):
        _gaussian().vp_epsilon(_x(), 1.2)


# ---------------------------------------------------------------------------------------------------------------
# NetworkPrior


class _Recorder(nn.Module):
    """v = t x_t + sum(cond): records the t it was given."""

    def __init__(self, image_channels=3, cond_channels=0):
        super().__init__()
        self.image_channels, self.cond_channels = image_channels, cond_channels
        self.seen = []

    def forward(self, x_t, t, cond=None):
        self.seen.append(t)
        v = t.reshape(-1, 1, 1, 1) * x_t
        return v if cond is None else v + cond.sum(1, keepdim=True)


@pytest.mark.parametrize("t", [0.25, torch.tensor(0.25, dtype=F64), torch.tensor(0.25),
                               torch.full((2,), 0.25, dtype=F64)], ids=["float", "0d", "0d-float32", "per-item"])
def test_network_prior_passes_per_item_t(t):
    net = _Recorder()
    x_t = _x()
    v = NetworkPrior(net).velocity(x_t, t)
    (seen,) = net.seen
    assert seen.shape == (2,) and seen.dtype == F64
    assert torch.equal(seen, torch.full((2,), 0.25, dtype=F64))
    assert torch.equal(v, 0.25 * x_t)


def test_network_prior_per_item_values_and_cond():
    net = _Recorder(cond_channels=2)
    x_t, cond = _x(), _x((2, 2, 4, 5), seed=3)
    t = torch.tensor([0.1, 0.9], dtype=F64)
    prior = NetworkPrior(net)
    torch.testing.assert_close(prior.velocity(x_t, t, cond), t.reshape(-1, 1, 1, 1) * x_t + cond.sum(1, keepdim=True),
                               rtol=0, atol=0)
    torch.testing.assert_close(net.seen[0], t, rtol=0, atol=0)
    # every derived view goes through the same velocity: x0_hat = x_t - t v
    v = prior.velocity(x_t, t, cond)
    torch.testing.assert_close(prior.epsilon(x_t, t, cond), x_t - t.reshape(-1, 1, 1, 1) * v, rtol=0, atol=0)


def test_network_prior_around_unet_is_the_net():
    prior = _random_tiny_prior(2)
    x_t, cond = _x((2, 3, 8, 12)), _x((2, 2, 8, 12), seed=9)
    t = torch.tensor([0.3, 0.6], dtype=F64)
    assert torch.equal(prior.velocity(x_t, t, cond), prior.net(x_t, t, cond))
    assert {name for name, _ in prior.named_parameters()} == {f"net.{name}" for name, _ in prior.net.named_parameters()}


def test_fresh_unet_prior_denoises_to_x_t():
    """A fresh UNet outputs v = 0, so E[x1 | x_t] = E[x0 | x_t] = x_t."""
    prior = NetworkPrior(UNet.from_preset("tiny").double())
    x_t = _x((2, 3, 8, 8))
    assert torch.equal(prior.denoise(x_t, 0.4), x_t)
    assert torch.equal(prior.epsilon(x_t, 0.4), x_t)


def test_network_prior_wrong_channels():
    message = "x_t must have shape (B, 3, H, W) for this prior, got (2, 4, 4, 5)"
    with pytest.raises(ValueError, match=re.escape(message)):
        NetworkPrior(_Recorder()).velocity(_x((2, 4, 4, 5)), 0.5)


def test_network_prior_wrong_rank():
    message = "x_t must have shape (B, 3, H, W) for this prior, got (3, 4, 5)"
    with pytest.raises(ValueError, match=re.escape(message)):
        NetworkPrior(_Recorder()).velocity(_x((3, 4, 5)), 0.5)


@pytest.mark.parametrize("cond_channels, cond_shape, got", [(2, None, 0), (0, (2, 2, 4, 5), 2), (2, (2, 1, 4, 5), 1)],
                         ids=["missing", "unexpected", "wrong-count"])
def test_network_prior_cond_mismatch(cond_channels, cond_shape, got):
    cond = _x(cond_shape) if cond_shape is not None else None
    with pytest.raises(ValueError, match=rf"this prior takes {cond_channels} conditioning channel\(s\), got {got}"):
        NetworkPrior(_Recorder(cond_channels=cond_channels)).velocity(_x(), 0.5, cond)


@pytest.mark.parametrize("t, low, high", [(-0.1, "-0.1", "-0.1"), (1.5, "1.5", "1.5"),
                                          (torch.tensor([0.5, 1.01], dtype=F64), "0.5", "1.01")])
def test_network_prior_t_out_of_range(t, low, high):
    with pytest.raises(ValueError, match=re.escape(f"t must lie in [0, 1], got values from {low} to {high}")):
        NetworkPrior(_Recorder()).velocity(_x(), t)


@pytest.mark.parametrize("cond, error, got", [(torch.zeros(2, 4, 5, dtype=F64), ValueError, r"\(2, 4, 5\)"),
                                              ("channels", TypeError, "str")], ids=["3-dims", "not-a-tensor"])
def test_network_prior_cond_not_4d(cond, error, got):
    with pytest.raises(error, match=r"cond must be a \(B, 2, H, W\) tensor.*, got " + got):
        NetworkPrior(_Recorder(cond_channels=2)).velocity(_x(), 0.5, cond)


def test_network_prior_t_not_finite():
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\], got values from"):
        NetworkPrior(_Recorder()).velocity(_x(), float("nan"))


@pytest.mark.parametrize("shape", [(3,), (2, 1), (1,)])
def test_network_prior_wrong_t_shape(shape):
    with pytest.raises(ValueError, match=re.escape(f"(B,) tensor with B = 2, got shape {shape}")):
        NetworkPrior(_Recorder()).velocity(_x(), torch.full(shape, 0.5, dtype=F64))


@pytest.mark.parametrize("t", [1.0, torch.tensor([0.5, 1.0], dtype=F64)], ids=["float", "one-item"])
def test_score_at_t_one_raises(t):
    with pytest.raises(ValueError, match=r"the score is undefined at t = 1 \(no noise left\): t must be < 1, got max t = 1"):
        NetworkPrior(_Recorder()).score(_x(), t)


def test_network_prior_score_below_one():
    """-x0_hat / (1 - t) with x0_hat = x_t - t v and the recorder's v = t x_t."""
    x_t = _x()
    score = NetworkPrior(_Recorder()).score(x_t, 0.5)
    torch.testing.assert_close(score, -(x_t - 0.25 * x_t) / 0.5, rtol=0, atol=ROUNDING)
