"""blindfast.sampling on the Gaussian prior, whose flow is known in closed form: single steps against unfused float64
references, Euler's first and Heun's second order, DDIM's convergence to the probability-flow endpoint, DDPM/DDIM
sample statistics against an exact moment recursion, the guidance hook, bad input."""

import math

import pytest
import torch

from blindfast.models import GaussianPrior, Prior
from blindfast.sampling import METHODS, ddpm_time_grid, sample, uniform_time_grid

F64 = torch.float64
MU, STD = 0.3, 0.5
PIXELS = (1, 1, 64, 64)  # 4096 independent scalar samples
N_PIXELS = 64 * 64
# Five standard errors: a correct sampler fails with probability < 1e-6 (and the seeds are fixed).
Z_BOUND = 5.0


def _noise(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _gaussian_prior(mean=MU, std=STD):
    return GaussianPrior(torch.as_tensor(mean, dtype=F64), std).double()


def _flow_scale(t):
    """s_t = sqrt(t^2 + (1 - t)^2): x_t = s_t z between the flow and the VP view."""
    return math.sqrt(t * t + (1 - t) ** 2)


def _alpha_bar(t):
    return t * t / (t * t + (1 - t) ** 2)


def _exact_flow(x_a, a, t, mean=MU, std=STD):
    """The probability-flow ODE's solution for Gaussian data, from state x_a at time a to time t:
    x(t) = t mu + sigma(t) (x_a - a mu) / sigma(a), sigma(t) = sqrt(t^2 std^2 + (1 - t)^2); from a = 0, x_a = x0 it
    is x(t) = t mu + sigma(t) x0."""
    sigma = lambda u: math.sqrt(u * u * std * std + (1 - u) ** 2)  # noqa: E731
    return t * mean + sigma(t) * (x_a - a * mean) / sigma(a)


def _distance_hook(y):
    """Hand-written gradient of L = |x1_hat - y|^2 / 2 w.r.t. x_t for the Gaussian prior, where
    x1_hat = mu + t std^2 (x_t - t mu) / D, D = t^2 std^2 + (1 - t)^2, so d x1_hat / d x_t = t std^2 / D."""
    def hook(x_t, x1_hat, t):
        return t * STD**2 / (t * t * STD**2 + (1 - t) ** 2) * (x1_hat - y)
    return hook


class _CountingPrior(Prior):
    """A Gaussian prior that records every velocity call's (t, cond)."""

    def __init__(self):
        super().__init__()
        self.inner = _gaussian_prior()
        self.calls = []

    def velocity(self, x_t, t, cond=None):
        self.calls.append((t, cond))
        return self.inner.velocity(x_t, t, cond)


# ---------------------------------------------------------------------------------------------------------------
# the closed form the tests rely on


def test_exact_flow_solves_the_velocity_ode():
    """d/dt [t mu + sigma(t) x0] equals the prior's velocity at that point, so it is the ODE's solution."""
    prior = _gaussian_prior()
    x0 = _noise((1, 1, 4, 4))
    for t in (0.0, 0.1, 0.5, 0.8, 1.0):
        # one copy of t per pixel, so the gradient of the sum is each pixel's own dx/dt
        u = torch.full_like(x0, t, requires_grad=True)
        x_t = u * MU + (u * u * STD**2 + (1 - u) ** 2).sqrt() * x0
        dx_dt = torch.autograd.grad(x_t.sum(), u)[0]
        x_t = x_t.detach()
        torch.testing.assert_close(dx_dt, prior.velocity(x_t, t), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_exact_flow(x0, 0.0, 1.0), MU + STD * x0, rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------------------------------
# one step of each method against its unfused float64 formula


def _reference_step(method, prior, x, t0, t1, hook, scale, noise, eta):
    """One step from t0 to t1 written out: x is the flow state (euler/heun) or the VP state z (ddpm/ddim); returns
    the flow state at t1."""
    h = t1 - t0
    v0 = prior.velocity(x, t0)
    if method in ("euler", "heun"):
        grad = hook(x, prior.denoise(x, t0), t0) if hook else 0 * x
        if method == "euler":
            return x + h * v0 - scale * grad
        v1 = prior.velocity(x + h * v0, t1)
        return x + 0.5 * h * (v0 + v1) - scale * grad
    ab, ab_prev = _alpha_bar(t0), _alpha_bar(t1)
    eps = prior.vp_epsilon(x, ab)
    x_t = _flow_scale(t0) * x
    grad = hook(x_t, prior.denoise(x_t, t0), t0) if hook else 0 * x
    x0_hat = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    if method == "ddpm":  # Ho et al. 2020, Eq. 6-7
        alpha = ab / ab_prev
        beta = 1 - alpha
        mean = math.sqrt(ab_prev) * beta / (1 - ab) * x0_hat + math.sqrt(alpha) * (1 - ab_prev) / (1 - ab) * x
        z = mean + math.sqrt((1 - ab_prev) / (1 - ab) * beta) * noise
    else:  # Song et al. 2021, Eq. 12 and 16
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        z = math.sqrt(ab_prev) * x0_hat + math.sqrt(1 - ab_prev - sigma**2) * eps + sigma * noise
    # the hook's gradient is w.r.t. x_t = s_t z, so w.r.t. z it is s_t times it
    return _flow_scale(t1) * (z - scale * _flow_scale(t0) * grad)


STEP_CASES = [(m, 0.0) for m in ("euler", "heun", "ddpm")] + [("ddim", 0.0), ("ddim", 0.7)]


@pytest.mark.parametrize("schedule", [(0.2, 0.45), (0.6, 1.0)], ids=["mid", "last"])
@pytest.mark.parametrize("guided", [False, True], ids=["plain", "guided"])
@pytest.mark.parametrize("method,eta", STEP_CASES, ids=[f"{m}-eta{e}" for m, e in STEP_CASES])
def test_single_step_equals_reference(method, eta, guided, schedule):
    shape = (2, 3, 5, 7)
    mean = torch.linspace(-0.5, 0.5, 3 * 5 * 7, dtype=F64).reshape(3, 5, 7)
    prior = _gaussian_prior(mean)
    x, y = _noise(shape, seed=1), _noise(shape, seed=2)
    hook = (lambda x_t, x1_hat, t: (x1_hat - y) * (1 + t)) if guided else None
    scale = 0.3 if guided else 1.0
    got = sample(prior, shape, method=method, t_schedule=schedule, eta=eta, guidance=hook, guidance_scale=scale,
                 x_init=x, generator=torch.Generator().manual_seed(5))
    want = _reference_step(method, prior, x, *schedule, hook, scale if guided else 0.0, _noise(shape, seed=5), eta)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# flow samplers: order of convergence and sample statistics


def _endpoint_error(method, steps, x0):
    got = sample(_gaussian_prior(), x0.shape, method=method, steps=steps, x_init=x0)
    return (got - _exact_flow(x0, 0.0, 1.0)).abs().max().item()


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_flow_sampler_order(method, order):
    """The endpoint error of one trajectory falls 2^order-fold when the steps double. With e(h) = C h^p (1 + D h +
    O(h^2)) the observed order log2(e(h) / e(h/2)) is p + D h / (2 ln 2) + O(h^2); at h = 1/128 the band 0.1 admits
    |D| up to 0.2 ln 2 / h = 17, and the measured |D| is below 3 for both methods (s = 0.5, mu = 0.3)."""
    x0 = torch.full((1, 1, 1, 1), 1.3, dtype=F64)
    errors = [_endpoint_error(method, n, x0) for n in (128, 256)]
    observed = math.log2(errors[0] / errors[1])
    assert abs(observed - order) < 0.1, (errors, observed)


@pytest.mark.parametrize("method,steps", [("euler", 512), ("heun", 64)])
def test_flow_sample_statistics(method, steps):
    """4096 noises map to samples of mean MU and std STD: the flow map is affine, x1 = a + c x0, so the sample mean is
    within Z_BOUND standard errors (STD / sqrt(n)) plus the discretisation error |a - mu| of MU, the std within
    Z_BOUND STD / sqrt(2 (n - 1)) plus |c - STD|; a and c are measured against the closed form."""
    prior = _gaussian_prior()
    got = sample(prior, PIXELS, method=method, steps=steps, generator=torch.Generator().manual_seed(3), dtype=F64)
    probes = torch.tensor([0.0, 1.0], dtype=F64).reshape(1, 1, 1, 2)
    a, a_plus_c = sample(prior, probes.shape, method=method, steps=steps, x_init=probes).flatten().tolist()
    bias_mean, bias_std = abs(a - MU), abs(a_plus_c - a - STD)
    assert abs(got.mean().item() - MU) < Z_BOUND * STD / math.sqrt(N_PIXELS) + bias_mean
    assert abs(got.std().item() - STD) < Z_BOUND * STD / math.sqrt(2 * (N_PIXELS - 1)) + bias_std
    # the step counts keep the discretisation terms a fraction of the statistical band, so the test has teeth
    assert bias_mean + bias_std < 0.2 * Z_BOUND * STD / math.sqrt(N_PIXELS)


# ---------------------------------------------------------------------------------------------------------------
# VP samplers


def _exact_vp_endpoint(z, t_start):
    """The probability-flow endpoint at t = 1 of the VP start state z at flow time t_start."""
    return _exact_flow(_flow_scale(t_start) * z, t_start, 1.0)


def test_ddim_eta0_is_deterministic_and_converges_to_the_flow_endpoint():
    """DDIM (eta = 0) is a first-order solver of the probability-flow ODE (Song et al. 2021, Eq. 14): on the DDPM
    grid the error at 1000 steps is ~10x smaller than at 100 (observed order within 0.1 of 1, as for Euler) and the
    sample is the exact endpoint to within it; the generator is not used."""
    z = _noise(PIXELS, seed=4)
    t_start = ddpm_time_grid(1)[0].item()
    errors = []
    for steps in (100, 1000):
        got = sample(_gaussian_prior(), PIXELS, method="ddim", steps=steps, x_init=z,
                     generator=torch.Generator().manual_seed(1))
        again = sample(_gaussian_prior(), PIXELS, method="ddim", steps=steps, x_init=z,
                       generator=torch.Generator().manual_seed(2))
        assert torch.equal(got, again)
        errors.append((got - _exact_vp_endpoint(z, t_start)).abs().max().item())
    assert abs(math.log10(errors[0] / errors[1]) - 1) < 0.1, errors
    assert errors[1] < 1e-2 * z.abs().max().item()


def _vp_moments(grid, eta, method):
    """Exact mean and variance of the VP sampler's output for Gaussian data, starting from z ~ N(0, 1): every step is
    affine in z plus independent noise, z' = A z + B + sigma n, so m' = A m + B, v' = A^2 v + sigma^2. Written with
    E[x1 | z] = mu + sqrt(ab) std^2 (z - sqrt(ab) mu) / (ab std^2 + 1 - ab) (Gaussian conditioning)."""
    m, v = 0.0, 1.0
    times = grid.tolist()
    for t0, t1 in zip(times[:-1], times[1:]):
        ab, ab_prev = _alpha_bar(t0), _alpha_bar(t1)
        gain = math.sqrt(ab) * STD**2 / (ab * STD**2 + 1 - ab)  # x0_hat = MU + gain (z - sqrt(ab) MU)
        if method == "ddpm":
            alpha = ab / ab_prev
            cx, cz = math.sqrt(ab_prev) * (1 - alpha) / (1 - ab), math.sqrt(alpha) * (1 - ab_prev) / (1 - ab)
            sigma2 = (1 - ab_prev) / (1 - ab) * (1 - alpha)
        else:
            sigma2 = eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
            c = math.sqrt(1 - ab_prev - sigma2) / math.sqrt(1 - ab)  # eps = (z - sqrt(ab) x0_hat) / sqrt(1 - ab)
            cx, cz = math.sqrt(ab_prev) - c * math.sqrt(ab), c
        A = cx * gain + cz
        B = cx * (MU - gain * math.sqrt(ab) * MU)
        m, v = A * m + B, A * A * v + sigma2
    return m, v


@pytest.mark.parametrize("method,eta", [("ddpm", 0.0), ("ddim", 1.0)])
def test_vp_sample_statistics(method, eta):
    """DDPM and DDIM(eta = 1) at 1000 steps: the sample mean and std of 4096 pixels equal the exact moments of the
    sampler (recursion above) within Z_BOUND standard errors, and N(MU, STD^2) within that plus the sampler's own
    bias, which the recursion gives."""
    grid = ddpm_time_grid(1000)
    got = sample(_gaussian_prior(), PIXELS, method=method, steps=1000, eta=eta,
                 generator=torch.Generator().manual_seed(6), dtype=F64)
    m, v = _vp_moments(grid, eta, method)
    se_mean, se_std = math.sqrt(v / N_PIXELS), math.sqrt(v / (2 * (N_PIXELS - 1)))
    assert abs(got.mean().item() - m) < Z_BOUND * se_mean
    assert abs(got.std().item() - math.sqrt(v)) < Z_BOUND * se_std
    assert abs(got.mean().item() - MU) < Z_BOUND * se_mean + abs(m - MU)
    assert abs(got.std().item() - STD) < Z_BOUND * se_std + abs(math.sqrt(v) - STD)
    # the sampler's own bias is small at 1000 steps: a fraction of the statistical band
    assert abs(m - MU) + abs(math.sqrt(v) - STD) < Z_BOUND * se_std


def test_ddim_eta1_and_ddpm_are_the_same_sampler():
    """Song et al. 2021, Sec. 4.1: eta = 1 makes DDIM's generative process DDPM's, same noise, same samples."""
    kwargs = dict(steps=20, x_init=_noise((2, 1, 8, 8)))
    ddpm = sample(_gaussian_prior(), (2, 1, 8, 8), method="ddpm", generator=torch.Generator().manual_seed(1),
                  **kwargs)
    ddim = sample(_gaussian_prior(), (2, 1, 8, 8), method="ddim", eta=1.0,
                  generator=torch.Generator().manual_seed(1), **kwargs)
    torch.testing.assert_close(ddim, ddpm, rtol=1e-12, atol=1e-12)


def test_ddpm_time_grid():
    """Ho et al. 2020's linear betas, 1e-4 to 0.02 over 1000 levels, mapped to flow time; both ends kept."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    alpha_bars = torch.cumprod(1 - betas, 0)
    full = ddpm_time_grid(1000)
    assert full.shape == (1001,) and full[-1] == 1.0
    torch.testing.assert_close(_alpha_bar_tensor(full[:-1]), alpha_bars.flip(0), rtol=1e-12, atol=0)
    few = ddpm_time_grid(4)
    torch.testing.assert_close(_alpha_bar_tensor(few[:-1]), alpha_bars[[999, 666, 333, 0]], rtol=1e-12, atol=0)
    assert bool((few[1:] > few[:-1]).all())
    torch.testing.assert_close(uniform_time_grid(4), torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=F64))


def _alpha_bar_tensor(t):
    return t * t / (t * t + (1 - t) ** 2)


# ---------------------------------------------------------------------------------------------------------------
# guidance


@pytest.mark.parametrize("method", METHODS)
def test_guidance_moves_samples_toward_y_monotonically(method):
    """With the gradient of |x1_hat - y|^2 / 2, the mean squared distance of the samples to y falls as the scale
    grows (same noise for every scale)."""
    shape = (1, 1, 16, 16)
    y = torch.full(shape, -0.8, dtype=F64)
    distances = []
    for scale in (0.0, 0.1, 0.3, 1.0):
        got = sample(_gaussian_prior(), shape, method=method, steps=20, guidance=_distance_hook(y),
                     guidance_scale=scale, x_init=_noise(shape, seed=7), generator=torch.Generator().manual_seed(8))
        distances.append((got - y).square().mean().item())
    assert all(a > b for a, b in zip(distances, distances[1:])), distances


@pytest.mark.parametrize("method", METHODS)
def test_autograd_guidance_equals_hand_written_gradient(method):
    """guidance_needs_grad=True: the hook differentiates through the prior (DPS) and gets the hand-written result."""
    shape = (2, 1, 6, 6)
    y = _noise(shape, seed=9)

    def dps(x_t, x1_hat, t):
        return torch.autograd.grad(0.5 * (x1_hat - y).square().sum(), x_t)[0]

    common = dict(method=method, steps=6, guidance_scale=0.4, x_init=_noise(shape, seed=7))
    auto = sample(_gaussian_prior(), shape, guidance=dps, guidance_needs_grad=True,
                  generator=torch.Generator().manual_seed(8), **common)
    hand = sample(_gaussian_prior(), shape, guidance=_distance_hook(y), generator=torch.Generator().manual_seed(8),
                  **common)
    torch.testing.assert_close(auto, hand, rtol=1e-12, atol=1e-12)
    assert not auto.requires_grad


@pytest.mark.parametrize("method", METHODS)
def test_no_guidance_equals_scale_zero(method):
    shape = (2, 1, 6, 6)
    common = dict(method=method, steps=5, x_init=_noise(shape, seed=7))
    plain = sample(_gaussian_prior(), shape, generator=torch.Generator().manual_seed(8), **common)
    zero = sample(_gaussian_prior(), shape, guidance=_distance_hook(_noise(shape, seed=9)), guidance_scale=0.0,
                  generator=torch.Generator().manual_seed(8), **common)
    assert torch.equal(plain, zero)


@pytest.mark.parametrize("needs_grad", [False, True], ids=["no-grad", "grad"])
@pytest.mark.parametrize("method", METHODS)
def test_hook_receives_the_documented_arguments(method, needs_grad):
    """Once per step, at the step's start: the flow state x_t, x1_hat = prior.denoise(x_t, t), the flow time t as a
    float; with needs_grad x_t requires grad and x1_hat carries its graph."""
    shape, steps = (2, 1, 4, 4), 5
    prior, x_init, calls = _gaussian_prior(), _noise(shape, seed=7), []

    def hook(x_t, x1_hat, t):
        calls.append((x_t.detach().clone(), x1_hat.detach().clone(), t, x_t.requires_grad, x1_hat.requires_grad))
        return torch.zeros_like(x_t)

    sample(prior, shape, method=method, steps=steps, guidance=hook, guidance_needs_grad=needs_grad, x_init=x_init,
           generator=torch.Generator().manual_seed(1))
    grid = uniform_time_grid(steps) if method in ("euler", "heun") else ddpm_time_grid(steps)
    assert len(calls) == steps
    assert [c[2] for c in calls] == grid[:-1].tolist()
    assert all(isinstance(c[2], float) for c in calls)
    torch.testing.assert_close(calls[0][0], _flow_scale(grid[0].item()) * x_init, rtol=1e-15, atol=0)
    for x_t, x1_hat, t, x_grad, x1_grad in calls:
        torch.testing.assert_close(x1_hat, prior.denoise(x_t, t), rtol=1e-12, atol=1e-12)
        assert x_grad == needs_grad and x1_grad == needs_grad


@pytest.mark.parametrize("method,per_step", [("euler", 1), ("heun", 2), ("ddpm", 1), ("ddim", 1)])
def test_prior_evaluations_and_cond(method, per_step):
    """One velocity evaluation per step (two for Heun), guided or not, each with the caller's cond."""
    shape, steps = (1, 1, 4, 4), 3
    cond = torch.zeros(1, 2, 4, 4, dtype=F64)
    prior = _CountingPrior()
    sample(prior, shape, method=method, steps=steps, guidance=_distance_hook(0.0), cond=cond, dtype=F64,
           generator=torch.Generator().manual_seed(1))
    assert len(prior.calls) == per_step * steps
    assert all(c is cond for _, c in prior.calls)


def test_defaults_dtype_device_and_x_init_untouched():
    prior = _gaussian_prior()
    assert sample(prior, (1, 1, 4, 4), method="euler", steps=2).dtype == torch.get_default_dtype()
    x_init = _noise((1, 1, 4, 4))
    kept = x_init.clone()
    out = sample(prior, (1, 1, 4, 4), method="heun", steps=2, x_init=x_init)
    assert out.dtype == F64 and out.device == x_init.device and torch.equal(x_init, kept)
    assert sample(prior, (1, 1, 4, 4), method="heun", steps=2, x_init=x_init, dtype=torch.float32).dtype == \
        torch.float32
    counting = _CountingPrior()  # the default step count: 50 evaluations
    sample(counting, (1, 1, 2, 2), method="ddim", dtype=F64)
    assert len(counting.calls) == 50


def test_progress_bar(capsys):
    x_init = _noise((1, 1, 4, 4))
    with_bar = sample(_gaussian_prior(), (1, 1, 4, 4), method="heun", steps=3, x_init=x_init, progress=True)
    assert "heun" in capsys.readouterr().err
    without = sample(_gaussian_prior(), (1, 1, 4, 4), method="heun", steps=3, x_init=x_init)
    assert capsys.readouterr().err == ""
    assert torch.equal(with_bar, without)


# ---------------------------------------------------------------------------------------------------------------
# bad input: one case per check; the message names what was expected and what was got


BAD_INPUTS = {
    "steps<1": (dict(steps=0), ValueError, r"steps must be an int >= 1, got 0"),
    "unknown-method": (dict(method="rk4"), ValueError, r"method must be one of \('euler'.*'ddim'\), got 'rk4'"),
    "schedule-not-increasing": (dict(t_schedule=[0.0, 0.5, 0.4, 1.0]), ValueError,
                                r"strictly increasing, got t\[1\] = 0.5 followed by t\[2\] = 0.4"),
    "schedule-out-of-range": (dict(t_schedule=[0.0, 0.5, 1.2]), ValueError,
                              r"must lie in \[0, 1\], got values from 0 to 1.2"),
    "schedule-one-time": (dict(t_schedule=[0.5]), ValueError, r"1-D with at least 2 times, got shape \(1,\)"),
    "schedule-vs-steps": (dict(t_schedule=[0.0, 0.5, 1.0], steps=3), ValueError,
                          r"steps=3 disagrees with t_schedule, which has 3 times \(2 steps\)"),
    "vp-schedule-at-0": (dict(method="ddim", t_schedule=[0.0, 1.0]), ValueError,
                         r"t_schedule\[0\] > 0 .*got t_schedule\[0\] = 0"),
    "ddpm-steps>1000": (dict(method="ddpm", steps=1001), ValueError, r"steps must be <= 1000 .*got 1001"),
    "shape-not-4d": (dict(shape=(1, 8, 8)), ValueError, r"shape must be \(B, C, H, W\) \(4 dims\), got \(1, 8, 8\)"),
    "x_init-shape": (dict(x_init=torch.zeros(1, 1, 4, 4)), ValueError,
                     r"x_init must have the shape \(1, 1, 8, 8\), got \(1, 1, 4, 4\)"),
    "eta<0": (dict(method="ddim", eta=-0.5), ValueError, r"eta must be a finite number >= 0, got -0.5"),
    "eta-not-ddim": (dict(method="ddpm", eta=1.0), ValueError, r"method 'ddpm' takes eta=0, got eta=1.0"),
    "hook-not-tensor": (dict(guidance=lambda x_t, x1_hat, t: 0.0), TypeError,
                        r"guidance must return a tensor like x_t \(1, 1, 8, 8\), got float"),
    "hook-shape": (dict(guidance=lambda x_t, x1_hat, t: x_t[:, :, :4]), ValueError,
                   r"guidance must have the shape of x \(1, 1, 8, 8\), got \(1, 1, 4, 8\)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(case):
    kwargs, error, message = BAD_INPUTS[case]
    kwargs = {"shape": (1, 1, 8, 8), "method": "euler", "steps": 2, **kwargs}
    if "t_schedule" in kwargs and case != "schedule-vs-steps":
        del kwargs["steps"]
    shape = kwargs.pop("shape")
    with pytest.raises(error, match=message):
        sample(_gaussian_prior(), shape, **kwargs)
