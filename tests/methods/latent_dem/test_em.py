"""LatentDEM's EM loop, pixel variant: a tiny end-to-end run recovers a motion kernel far better than the initial
delta, the per-step record follows the schedules, the non-blind run keeps its kernel, bad inputs are refused."""

import math

import pytest
import torch

from blindfast.data import embedded_images
from blindfast.methods.latent_dem import (annealed_zeta, delta_kernel, em_deblur, is_full_em_step,
                                          load_kernel_denoiser)
from blindfast.methods.latent_dem.em import edge_taper
from blindfast.metrics import mnc
from blindfast.models import load_shipped_prior
from blindfast.physics import Blur, motion_kernel

SIZE, KERNEL, SIGMA, STEPS = 64, 9, 0.01, 40


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problem():
    """The centre 64 x 64 crop of the test photo chelsea, a 9 x 9 motion kernel, circular blur, noise 0.01."""
    image = embedded_images("test")[1]
    top, left = (image.shape[-2] - SIZE) // 2, (image.shape[-1] - SIZE) // 2
    x = image[None, :, top:top + SIZE, left:left + SIZE].contiguous()
    kernel = motion_kernel(1, KERNEL, generator=torch.Generator().manual_seed(0))["kernel"].reshape(KERNEL, KERNEL)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    return x, kernel, Blur(padding="circular").A(x, kernel=kernel) + SIGMA * noise


@pytest.fixture(scope="module")
def prior():
    return load_shipped_prior("pixel_tiny")


def test_end_to_end_raises_kernel_mnc(problem, prior):
    """MNC against the true kernel: 0.43 for the initial delta, 0.94 measured after 40 steps (1.2 s on one core)."""
    x, kernel, y = problem
    result = em_deblur(y, prior, kernel_size=KERNEL, sigma=SIGMA, steps=STEPS, kernel_denoiser=load_kernel_denoiser(),
                       generator=torch.Generator().manual_seed(2))
    assert mnc(delta_kernel(KERNEL), kernel).item() < 0.45
    assert mnc(result.kernel, kernel).item() > 0.8
    assert result.kernel.shape == (KERNEL, KERNEL) and bool((result.kernel >= 0).all())
    assert result.kernel.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert result.image.shape == x.shape and bool(torch.isfinite(result.image).all())


def test_record_follows_the_schedules(problem, prior):
    _, kernel, y = problem
    result = em_deblur(y, prior, kernel_size=KERNEL, sigma=SIGMA, steps=16, skip_every=4,
                       generator=torch.Generator().manual_seed(2))
    assert [s.t for s in result.steps] == list(range(16, 0, -1))
    assert [s.full for s in result.steps] == [is_full_em_step(t, 16, skip_every=4) for t in range(16, 0, -1)]
    assert [s.zeta for s in result.steps] == [annealed_zeta(t, 16) for t in range(16, 0, -1)]
    for step in result.steps:
        assert step.e_seconds > 0 and step.m_seconds >= 0
        assert (step.m_seconds > 0) == step.full and (step.residual > 0) == step.full  # NaN > 0 is False


def test_non_blind_keeps_the_true_kernel(problem, prior):
    _, kernel, y = problem
    result = em_deblur(y, prior, kernel_size=KERNEL, sigma=SIGMA, steps=4, true_kernel=kernel,
                       generator=torch.Generator().manual_seed(2))
    assert torch.equal(result.kernel, kernel)
    assert all(step.m_seconds == 0 for step in result.steps)


@pytest.mark.parametrize("change, match", [
    (dict(kernel_size=65), r"kernel_size must not exceed the image size \(H, W\) = \(64, 64\), got 65"),
    (dict(sigma=0.0), r"sigma must be .*> 0.*got 0"),
    (dict(sigma=-0.01), r"sigma must be .*> 0.*got -0.01"),
    (dict(true_kernel=torch.ones(3, 3) / 9), r"true_kernel must be a \(9, 9\) tensor \(kernel_size\), got \(3, 3\)"),
    (dict(steps=0), r"steps must be an integer >= 1, got 0"),
])
def test_bad_inputs(problem, prior, change, match):
    _, _, y = problem
    arguments = dict(kernel_size=KERNEL, sigma=SIGMA, steps=2) | change
    with pytest.raises(ValueError, match=match):
        em_deblur(y, prior, **arguments)


def test_one_image_only(problem, prior):
    _, _, y = problem
    with pytest.raises(ValueError, match=r"y must hold one image, \(1, C, H, W\), got \(2, 3, 64, 64\)"):
        em_deblur(y.expand(2, -1, -1, -1), prior, kernel_size=KERNEL, sigma=SIGMA, steps=2)


@pytest.mark.parametrize("size, kernel_size", [((64, 48), 9), ((20, 40), 13)])
def test_edge_taper(size, kernel_size):
    """The raised-cosine ramps: 1 from kernel_size pixels in, symmetric, rising, and w(d) + w(k - 1 - d) = 1; the
    ramps of the two ends meet on a side shorter than two kernels (20 < 26)."""
    window = edge_taper(size, kernel_size, dtype=torch.float64)
    assert window.shape == size
    ramp = window[:, size[1] // 2]  # the middle column, where the other axis's ramp is 1
    k = min(kernel_size, size[0] // 2)
    torch.testing.assert_close(ramp, ramp.flip(0))
    assert bool((ramp[:k].diff() > 0).all()) and bool((ramp[:k] > 0).all())
    if 2 * kernel_size <= size[0]:
        assert bool((ramp[kernel_size:size[0] - kernel_size] == 1).all())
        torch.testing.assert_close(ramp[:kernel_size] + ramp[:kernel_size].flip(0), torch.ones(kernel_size,
                                                                                               dtype=torch.float64))
    assert ramp[0].item() == pytest.approx(0.5 - 0.5 * math.cos(math.pi / (2 * kernel_size)), rel=1e-12)
    torch.testing.assert_close(window, window[:, :1] * window[:1, :] / window[0, 0])


def test_taper_is_off_by_default_and_changes_the_kernel(problem, prior):
    """No taper argument is taper=False (two full EM steps of four), and the taper changes the kernel."""
    _, _, y = problem
    runs = {taper: em_deblur(y, prior, kernel_size=KERNEL, sigma=SIGMA, steps=4,
                             **({} if taper is None else {"taper": taper}),
                             kernel_denoiser=load_kernel_denoiser(), generator=torch.Generator().manual_seed(2))
            for taper in (None, False, True)}
    assert torch.equal(runs[None].kernel, runs[False].kernel) and torch.equal(runs[None].image, runs[False].image)
    assert not torch.equal(runs[True].kernel, runs[False].kernel)


def test_m_step_start(problem, prior):
    """M-steps only at the full EM steps with t <= m_step_start (every step full here); none leaves the delta; the
    pixel default is every full step (em.M_STEP_START_FRACTION = 1)."""
    _, _, y = problem
    runs = {start: em_deblur(y, prior, kernel_size=KERNEL, sigma=SIGMA, steps=8, skip_every=1,
                             **({} if start is None else {"m_step_start": start}),
                             kernel_denoiser=load_kernel_denoiser(), generator=torch.Generator().manual_seed(2))
            for start in (None, 8, 3, 0)}
    assert [s.m_seconds > 0 for s in runs[3].steps] == [t <= 3 for t in range(8, 0, -1)]
    assert all(s.full for s in runs[3].steps)
    assert torch.equal(runs[0].kernel, delta_kernel(KERNEL))
    assert torch.equal(runs[None].kernel, runs[8].kernel) and torch.equal(runs[None].image, runs[8].image)
    assert not torch.equal(runs[3].kernel, runs[8].kernel)


@pytest.mark.parametrize("start, error, match", [
    (9, ValueError, r"m_step_start must lie in 0..T = 8, got 9"),
    (-1, ValueError, r"m_step_start must be an integer >= 0, got -1"),
    (2.5, TypeError, r"m_step_start must be an integer >= 0, got float 2.5"),
])
def test_bad_m_step_start(problem, prior, start, error, match):
    _, _, y = problem
    with pytest.raises(error, match=match):
        em_deblur(y, prior, kernel_size=KERNEL, sigma=SIGMA, steps=8, m_step_start=start)
