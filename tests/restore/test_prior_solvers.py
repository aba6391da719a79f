"""pnp_hqs, diffpir and dps with the shipped pixel prior (or the exact Gaussian one) on small cases."""

import numpy as np
import pytest
import torch

from blindfast.data import embedded_images
from blindfast.metrics import psnr
from blindfast.models import GaussianPrior, load_shipped_prior
from blindfast.physics import Blur, SpaceVaryingBlur, gaussian_kernel, lens_psf_grid
from blindfast.restore import PriorDenoiser, diffpir, dps, pnp_hqs
from blindfast.restore.data_step import relative_noise_gain
from blindfast.restore.pnp_hqs import PNP_SIGMA_FLOOR, noise_schedule
from blindfast.restore.prior_denoiser import time_of_noise

SIGMA = 0.01


@pytest.fixture(scope="module")
def prior():
    return load_shipped_prior("pixel_tiny")


def _blurred(op, params, size=64):
    x = embedded_images("test")[0][None, :, 150:150 + size, 200:200 + size].contiguous()   # coffee: cups, beans
    g = torch.Generator().manual_seed(0)
    y = op.A(x, **params)
    return x, y + SIGMA * torch.randn(y.shape, generator=g)


def _cases():
    # circular: the FFT data step in closed form (the photo boundary's EM rounds are tested with wiener)
    return [(Blur(padding="circular"), {"kernel": gaussian_kernel(11, 1.6)[None, None]}),
            (SpaceVaryingBlur(padding="reflect"), {"psf_grid": lens_psf_grid((2, 2), 31, channels=3)})]


@pytest.mark.parametrize("case", range(2), ids=["uniform-fft", "space-varying-cg"])
def test_pnp_hqs_raises_psnr_over_the_measurement(prior, case):
    op, params = _cases()[case]
    x, y = _blurred(op, params)
    timings = {}
    restored = pnp_hqs(y, op, params, prior, sigma=SIGMA, iters=8, timings=timings)   # 8: a quick run
    assert psnr(restored.clamp(0, 1), x) > psnr(y.clamp(0, 1), x) + 1.0
    assert timings["data_s"] > 0 and timings["denoise_s"] > 0


class _RecordingDenoiser(PriorDenoiser):
    """The identity, recording the (H, W) and the sigma of every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, v, sigma):
        self.calls.append((tuple(v.shape[-2:]), sigma))
        return v


def _circular_case():
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    op, params = Blur(padding="circular"), {"kernel": gaussian_kernel(5, 1.0)[None, None].double()}
    return op, params, op.A(x, **params)


def test_pnp_hqs_schedule_transforms_and_last_step():
    """Defaults: K data steps, K - 1 denoiser calls on the schedule down to max(sigma, floor), iteration k on the
    k-th dihedral transform (odd quarter turns transpose H, W), then one untransformed call at sigma itself
    (none without final_denoise); x8: 8 calls per iteration; denoise_last: z_K, no call at sigma."""
    op, params, y = _circular_case()
    denoiser = _RecordingDenoiser()
    pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=4)
    levels = noise_schedule(PNP_SIGMA_FLOOR, 4)
    steps = [((16, 24), levels[0]), ((16, 24), levels[1]), ((24, 16), levels[2])]
    assert denoiser.calls == steps + [((16, 24), SIGMA)]
    denoiser = _RecordingDenoiser()
    pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=4, final_denoise=False)
    assert denoiser.calls == steps
    denoiser = _RecordingDenoiser()
    pnp_hqs(y, op, params, denoiser, sigma=0.1, iters=3, ensemble="x8", denoise_last=True)
    assert len(denoiser.calls) == 24 and {s for _, s in denoiser.calls} == set(noise_schedule(0.1, 3))
    denoiser = _RecordingDenoiser()
    pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=2, sigma_floor=0.0, ensemble="off", denoise_last=True)
    assert denoiser.calls == [((16, 24), s) for s in noise_schedule(SIGMA, 2)]


class _ShrinkingDenoiser(_RecordingDenoiser):
    """v -> (1 - sigma) v: a linear stand-in whose output says which sigma it was given."""

    def __call__(self, v, sigma):
        super().__call__(v, sigma)
        return (1 - sigma) * v


def test_pnp_hqs_one_iteration_is_the_data_step_at_the_floor():
    """K = 1: x_1 = argmin ||k * x - y||^2 + rho ||x - y||^2 with rho = lam sigma^2 / floor^2, in closed form by
    numpy's FFT (circular blur, symmetric kernel); by default denoised once at sigma, D(x_1, sigma)."""
    op, params, y = _circular_case()
    rho = 2.0 * SIGMA**2 / PNP_SIGMA_FLOOR**2
    kernel = params["kernel"][0, 0].numpy()
    padded = np.zeros((16, 24))
    padded[:5, :5] = kernel
    K = np.fft.fft2(np.roll(padded, (-2, -2), axis=(0, 1)))
    Y = np.fft.fft2(y[0].numpy())
    expected = np.real(np.fft.ifft2((np.conj(K) * Y + rho * Y) / (np.abs(K) ** 2 + rho)))
    got = pnp_hqs(y, op, params, _ShrinkingDenoiser(), sigma=SIGMA, iters=1, lam=2.0, final_denoise=False)
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=0, atol=1e-10)
    got = pnp_hqs(y, op, params, _ShrinkingDenoiser(), sigma=SIGMA, iters=1, lam=2.0)
    np.testing.assert_allclose(got[0].numpy(), (1 - SIGMA) * expected, rtol=0, atol=1e-10)


def test_pnp_hqs_final_denoise_is_the_prior_on_x_K(prior):
    """The default's end equals the prior's denoiser (untransformed, at sigma times the last data step's
    relative_noise_gain) applied to the x_K that final_denoise=False returns, on the space-varying (CG) case;
    with local_sigma=False, at sigma itself."""
    op, params = _cases()[1]
    x, y = _blurred(op, params)
    denoiser = PriorDenoiser(prior)
    x_K = pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=3, final_denoise=False)
    got = pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=3)
    gain = relative_noise_gain(op, params, SIGMA**2 / PNP_SIGMA_FLOOR**2, x.shape[-2:])
    torch.testing.assert_close(got, denoiser(x_K, SIGMA * gain), rtol=0, atol=0)
    x_K = pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=3, final_denoise=False, local_sigma=False)
    got = pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=3, local_sigma=False)
    torch.testing.assert_close(got, denoiser(x_K, SIGMA), rtol=0, atol=0)
    assert psnr(got.clamp(0, 1), x) > psnr(y.clamp(0, 1), x) + 1.0


class _ShiftingDenoiser(_RecordingDenoiser):
    """v -> (1 - sigma) v shifted one pixel right (circularly): not equivariant, so each transform's call differs."""

    def __call__(self, v, sigma):
        super().__call__(v, sigma)
        return (1 - sigma) * torch.roll(v, 1, -1)


def _numpy_data_step(y: np.ndarray, kernel: np.ndarray, z: np.ndarray, rho: float) -> np.ndarray:
    """argmin ||k * x - y||^2 + rho ||x - z||^2, circular, by numpy's FFT; y, z (C, H, W), kernel 5x5 symmetric."""
    padded = np.zeros(y.shape[-2:])
    padded[:5, :5] = kernel
    K = np.fft.fft2(np.roll(padded, (-2, -2), axis=(0, 1)))
    return np.real(np.fft.ifft2((np.conj(K) * np.fft.fft2(y) + rho * np.fft.fft2(z)) / (np.abs(K) ** 2 + rho)))


@pytest.mark.parametrize("ensemble, transforms", [("vflip", (0, 5)), ("flips", (0, 1, 4, 5))])
def test_pnp_hqs_per_step_ensemble_is_the_mean_of_the_transformed_back_outputs(ensemble, transforms):
    """K = 2 with the ensemble at every step and at the end: z_1 and the final denoise are the means over the
    transforms of the shifting denoiser's outputs, transformed back (up-down mirror: the shift stays a right
    shift; left-right mirror and half turn: a left shift), against numpy's FFT data steps in float64."""
    op, params, y = _circular_case()
    kernel, data = params["kernel"][0, 0].numpy(), y[0].numpy()
    levels = noise_schedule(PNP_SIGMA_FLOOR, 2)
    rhos = [SIGMA**2 / s**2 for s in levels]

    def ensemble_mean(v, s):   # T0, T5: x shifted right; T1, T4: shifted left (numpy.roll)
        shifts = [1 if index in (0, 5) else -1 for index in transforms]
        return (1 - s) * np.mean([np.roll(v, shift, -1) for shift in shifts], axis=0)

    x_1 = _numpy_data_step(data, kernel, data, rhos[0])      # z_0 = y (A^T y has y's shape)
    x_2 = _numpy_data_step(data, kernel, ensemble_mean(x_1, levels[0]), rhos[1])
    denoiser = _ShiftingDenoiser()
    got = pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=2, ensemble=ensemble, final_ensemble=ensemble)
    np.testing.assert_allclose(got[0].numpy(), ensemble_mean(x_2, SIGMA), rtol=0, atol=1e-10)
    assert [s for _, s in denoiser.calls] == [levels[0]] * len(transforms) + [SIGMA] * len(transforms)


class _DiagonalShiftDenoiser(_RecordingDenoiser):
    """v -> (1 - sigma) v shifted one pixel down and one right (circularly): transformed back, each of the 8
    dihedral transforms gives a different shift."""

    def __call__(self, v, sigma):
        super().__call__(v, sigma)
        return (1 - sigma) * torch.roll(v, (1, 1), (-2, -1))


def test_pnp_hqs_flips_cycle_visits_t0_t1_t4_t5_and_inverts_each():
    """K = 6, ensemble "cycle-flips": iterations 1-5 denoise under T0, T1, T4, T5, T0, transformed back, so the
    diagonal shift becomes (down, right), (down, left), (up, left), (up, right), (down, right) (numpy.roll), against
    numpy's FFT data steps in float64; the final denoise is untransformed. No call is transposed (no quarter turn)."""
    op, params, y = _circular_case()
    kernel, data = params["kernel"][0, 0].numpy(), y[0].numpy()
    levels = noise_schedule(PNP_SIGMA_FLOOR, 6)
    shifts = [(1, 1), (1, -1), (-1, -1), (-1, 1), (1, 1)]
    z = data
    for sigma_k, shift in zip(levels, shifts):
        x = _numpy_data_step(data, kernel, z, SIGMA**2 / sigma_k**2)
        z = (1 - sigma_k) * np.roll(x, shift, (-2, -1))
    x = _numpy_data_step(data, kernel, z, SIGMA**2 / levels[-1] ** 2)
    denoiser = _DiagonalShiftDenoiser()
    got = pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=6, ensemble="cycle-flips")
    np.testing.assert_allclose(got[0].numpy(), (1 - SIGMA) * np.roll(x, (1, 1), (-2, -1)), rtol=0, atol=1e-10)
    assert [hw for hw, _ in denoiser.calls] == [(16, 24)] * 6


def test_pnp_hqs_shift_tiles_moves_every_other_iterations_grid_by_half_a_stride():
    """shift_tiles: the denoiser is called with shift = half_stride (tiles of 8, overlap 2: 3) on iterations 2, 4,
    .. and unshifted on the others and at the end; without it no shift is passed."""

    class Shifts(_RecordingDenoiser):
        tile, overlap = 8, 2

        def __call__(self, v, sigma, shift=0):
            self.calls.append(shift)
            return v

    op, params, y = _circular_case()
    denoiser = Shifts()
    pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=5, shift_tiles=True)
    assert denoiser.calls == [0, 3, 0, 3, 0]
    denoiser = Shifts()
    pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=5)
    assert denoiser.calls == [0] * 5


def test_pnp_hqs_local_sigma_is_the_schedule_times_the_noise_gain():
    """local_sigma: every call (untransformed: ensemble off) gets sigma_k times relative_noise_gain at that step's
    rho, the final one sigma times the last step's; for a uniform blur the run is the default's, bit for bit."""
    op = SpaceVaryingBlur(padding="reflect")
    params = {"psf_grid": lens_psf_grid((3, 3), 31, channels=3, generator=torch.Generator().manual_seed(0))}
    _, y = _blurred(op, params, size=48)
    levels = noise_schedule(PNP_SIGMA_FLOOR, 3)

    class Maps(_RecordingDenoiser):
        def __call__(self, v, sigma):
            self.calls.append(sigma)
            return v

    denoiser = Maps()
    pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=3, ensemble="off", local_sigma=True)
    expected = [s * relative_noise_gain(op, params, SIGMA**2 / s**2, (48, 48)) for s in levels[:2]]
    expected.append(SIGMA * relative_noise_gain(op, params, SIGMA**2 / levels[2]**2, (48, 48)))
    assert len(denoiser.calls) == 3
    for got, want in zip(denoiser.calls, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert float(expected[-1].min()) < 0.9 * SIGMA   # the lens's corners keep less noise: denoised less
    op, params, y = _circular_case()
    default = pnp_hqs(y, op, params, _ShiftingDenoiser(), sigma=SIGMA, iters=3)
    local = pnp_hqs(y, op, params, _ShiftingDenoiser(), sigma=SIGMA, iters=3, local_sigma=True)
    assert torch.equal(default, local)


@pytest.mark.parametrize("option, value, message", [("sigma_floor", -0.01, "sigma_floor must be a number >= 0, got"),
                                                    ("ensemble", "x4", "ensemble must be one of .* got 'x4'"),
                                                    ("final_ensemble", "cycle",
                                                     "final_ensemble must be one of .* got 'cycle'")])
def test_pnp_hqs_rejects_bad_options(option, value, message):
    op, params, y = _circular_case()
    with pytest.raises(ValueError, match=message):
        pnp_hqs(y, op, params, _RecordingDenoiser(), sigma=SIGMA, **{option: value})


@pytest.mark.parametrize("case", range(2), ids=["uniform-fft", "space-varying-cg"])
def test_diffpir_raises_psnr_over_the_measurement(prior, case):
    op, params = _cases()[case]
    x, y = _blurred(op, params)
    restored = diffpir(y, op, params, prior, sigma=SIGMA, steps=10, generator=torch.Generator().manual_seed(1))
    assert psnr(restored.clamp(0, 1), x) > psnr(y.clamp(0, 1), x) + 1.0


def test_dps_sample_fits_the_measurement():
    """With the exact Gaussian prior (N(0, 0.5^2) on [-1, 1] images), the guided sample's residual is far below
    an unguided sample's from the same noise."""
    prior = GaussianPrior(0.0, 0.5)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 16, 16, generator=g)
    op, params = Blur(padding="circular"), {"kernel": gaussian_kernel(5, 1.0)[None, None]}
    y = op.A(x, **params) + SIGMA * torch.randn(x.shape, generator=g)
    guided = dps(y, op, params, prior, steps=50, generator=torch.Generator().manual_seed(1))
    free = dps(y, op, params, prior, steps=50, zeta=1e-12, generator=torch.Generator().manual_seed(1))
    def residual(v):
        return (op.A(v, **params) - y).norm()
    assert residual(guided) < 0.2 * residual(free)


def test_prior_denoiser_matches_the_flow_time_of_the_noise(prior):
    """sigma -> t = 1 / (1 + 2 sigma); the tiled denoiser equals the whole-image one inside a tile's core."""
    assert time_of_noise(0.0) == 1.0 and abs(time_of_noise(0.5) - 0.5) < 1e-15
    x = embedded_images("test")[1][None, :, :96, :96].contiguous()
    v = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    whole = PriorDenoiser(prior, tile=None)(v, 0.1)
    assert psnr(whole.clamp(0, 1), x) > psnr(v.clamp(0, 1), x) + 3
    grey = PriorDenoiser(prior, tile=None)(v[:, :1], 0.1)
    assert grey.shape == (1, 1, 96, 96)


def test_noise_schedule_is_dpir_log_uniform():
    levels = noise_schedule(0.01, 8)
    assert abs(levels[0] - 49 / 255) < 1e-12 and abs(levels[-1] - 0.01) < 1e-12
    ratios = [b / a for a, b in zip(levels, levels[1:])]
    assert max(ratios) - min(ratios) < 1e-12


@pytest.mark.parametrize("solver", [pnp_hqs, diffpir])
@pytest.mark.parametrize("sigma", [0.0, -0.01])
def test_prior_solvers_reject_non_positive_sigma(prior, solver, sigma):
    op, params = _cases()[0]
    with pytest.raises(ValueError, match="sigma must be a finite number > 0, got"):
        solver(torch.rand(1, 3, 32, 32), op, params, prior, sigma=sigma)
