"""hqs_kernel_update (C++ CPU backend) against the float64 reference, kernel recovery, the ops one by one."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blindfast.ops.hqs import hqs_kernel_update, hqs_spectral_terms
from blindfast.ops.reference.hqs import (
    centred_delta,
    hqs_fastem_style,
    hqs_kernel_update_reference,
    hqs_rfft_baseline,
    pad_kernel,
    recentre_kernel,
)
from blindfast.ops.sv_conv import sv_conv

# name: (n, C, H, W, kh, kw, delta). Odd image sizes; odd, even and non-square kernels; a kernel nearly the image
# size and one exactly the image size (the (2kh - 1) x (2kw - 1) window of b wraps around the image); delta from
# "data dominates" (1e2: alpha far below the spectral energy) to "phi dominates" (1e6).
CASES = {
    "n1-C1-k5": (1, 1, 37, 53, 5, 5, 1e4),
    "n3-C3-k4x6": (3, 3, 37, 53, 4, 6, 1e4),
    "n3-C1-k7x3": (3, 1, 37, 53, 7, 3, 1e2),
    "n1-C3-k33x49": (1, 3, 37, 53, 33, 49, 1e6),
    "n3-C3-k37x53": (3, 3, 37, 53, 37, 53, 1e4),
}
SIGMA = 0.05
ITERS = 6


def smooth_field(shape, generator, dtype=torch.float64):
    """Random images with a natural-image-like (falling) spectrum: white noise low-passed in Fourier, plus a little
    white noise so that no frequency is empty."""
    noise = torch.randn(shape, generator=generator, dtype=torch.float64)
    fy = torch.fft.fftfreq(shape[-2], dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(shape[-1], dtype=torch.float64)[None, :]
    lowpass = 1 / (1 + 40 * (fy**2 + fx**2).sqrt())
    field = torch.fft.irfft2(torch.fft.rfft2(noise) * lowpass, s=shape[-2:])
    return (field / field.std() + 0.05 * torch.randn(shape, generator=generator, dtype=torch.float64)).to(dtype)


def motion_kernel(kh, kw, generator, segments=3, dtype=torch.float64):
    """A motion-blur-like kernel: a polyline of a few random segments from the centre, rasterised to the nearest
    pixels (each segment sampled at 64 points), normalised to sum 1."""
    kernel = torch.zeros(kh, kw, dtype=torch.float64)
    point = torch.tensor([kh // 2, kw // 2], dtype=torch.float64)
    limit = torch.tensor([kh - 1, kw - 1], dtype=torch.float64)
    for _ in range(segments):
        target = (point + (torch.rand(2, generator=generator, dtype=torch.float64) - 0.5) * limit).clamp(
            torch.zeros(2, dtype=torch.float64), limit)
        for s in torch.linspace(0, 1, 64, dtype=torch.float64):
            u, v = (point + s * (target - point)).round().long().tolist()
            kernel[u, v] += 1
        point = target
    return (kernel / kernel.sum()).to(dtype)


def gaussian_kernel(kh, kw, std, dtype=torch.float64):
    u = torch.arange(kh, dtype=torch.float64) - kh // 2
    v = torch.arange(kw, dtype=torch.float64) - kw // 2
    kernel = torch.exp(-(u[:, None] ** 2 + v[None, :] ** 2) / (2 * std**2))
    return (kernel / kernel.sum()).to(dtype)


def make_inputs(case, dtype, seed=0):
    """Samples around a smooth image, y its blur by a motion kernel plus noise, and a rough initial kernel: the
    float64 values of all of them rounded to ``dtype``."""
    n, C, H, W, kh, kw, delta = CASES[case] if isinstance(case, str) else case
    g = torch.Generator().manual_seed(seed)
    x = smooth_field((C, H, W), g)
    truth = motion_kernel(kh, kw, g)
    y = sv_conv(x[None], truth[None, None, None, None], padding="circular")[0]
    y = y + SIGMA * torch.randn(y.shape, generator=g, dtype=torch.float64)
    x_hat = x[None] + 0.1 * torch.randn(n, C, H, W, generator=g, dtype=torch.float64)
    kernel = torch.rand(kh, kw, generator=g, dtype=torch.float64)
    return x_hat.to(dtype), y.to(dtype), kernel.to(dtype), delta


def drifting_smoother(z, noise_level):
    """A stand-in kernel denoiser: a 3x3 binomial smoothing whose strength grows with the noise level, then a drift
    of (1, 2) pixels (circular), so that the re-centring has work to do."""
    weights = torch.tensor([1.0, 2.0, 1.0], dtype=z.dtype)
    blur = (weights[:, None] * weights[None, :] / 16)[None, None]
    smoothed = torch.nn.functional.conv2d(z, blur, padding=1)
    strength = min(noise_level, 1.0)
    return torch.roll((1 - strength) * z + strength * smoothed, shifts=(1, 2), dims=(-2, -1))


def soft_threshold(z, noise_level):
    """The proximal map of an l1 penalty, threshold ``noise_level / 4`` of the kernel's mean value."""
    threshold = 0.25 * noise_level * z.mean()
    return torch.sign(z) * (z.abs() - threshold).clamp_min(0)


DENOISERS = {"none": None, "drifting_smoother": drifting_smoother, "soft_threshold": soft_threshold}


def rel_err(got, ref):
    return ((got.double() - ref).abs().max() / ref.abs().max()).item()


def assert_close_derived(ours, ref64, torch32):
    """Float32 error within a small multiple of plain torch float32's error on the same inputs (flash-attention's
    rule), plus a floor of a few float32 roundings of the output's scale for outputs where torch is nearly exact."""
    scale = ref64.abs().max().item()
    ours_err = (ours.double() - ref64).abs().max().item()
    torch_err = (torch32.double() - ref64).abs().max().item()
    assert ours_err <= 4 * torch_err + 4 * torch.finfo(torch.float32).eps * scale, (ours_err, torch_err, scale)


def run_both(case, dtype, denoiser, seed=0, iters=ITERS):
    x_hat, y, kernel, delta = make_inputs(case, dtype, seed)
    kwargs = dict(sigma=SIGMA, delta=delta, iters=iters, denoiser=DENOISERS[denoiser], lam=0.5)
    return hqs_kernel_update(x_hat, y, kernel, **kwargs), (x_hat, y, kernel), kwargs


@pytest.mark.parametrize("denoiser", DENOISERS)
@pytest.mark.parametrize("case", CASES)
def test_float64_matches_reference(case, denoiser):
    ours, inputs, kwargs = run_both(case, torch.float64, denoiser)
    ref = hqs_kernel_update_reference(*inputs, **kwargs)
    assert ours.shape == ref.shape and ours.dtype == torch.float64 and not ours.requires_grad
    assert rel_err(ours, ref) < 1e-10
    assert (ours >= 0).all() and abs(ours.sum().item() - 1) < 1e-12


@pytest.mark.parametrize("denoiser", DENOISERS)
@pytest.mark.parametrize("case", CASES)
def test_float32_within_torch_error(case, denoiser):
    ours, inputs, kwargs = run_both(case, torch.float32, denoiser)
    assert ours.dtype == torch.float32
    exact = hqs_kernel_update_reference(*(t.double() for t in inputs), **kwargs)
    assert_close_derived(ours, exact, hqs_kernel_update_reference(*inputs, **kwargs))


def test_blur_convention_is_sv_conv_circular():
    """F y = F(k_pad) F x with pad_kernel's k_pad is sv_conv's circular blur with a 1x1 grid: the op's model."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 37, 53, generator=g, dtype=torch.float64)
    for kh, kw in [(5, 5), (4, 6), (7, 3), (33, 49)]:
        k = torch.rand(kh, kw, generator=g, dtype=torch.float64)
        fourier = torch.fft.irfft2(torch.fft.rfft2(pad_kernel(k, 37, 53)) * torch.fft.rfft2(x), s=(37, 53))
        spatial = sv_conv(x, k[None, None, None, None], padding="circular")
        torch.testing.assert_close(fourier, spatial, rtol=1e-12, atol=1e-12)


def normalised_cross_correlation(a, b):
    """Zero-shift normalised cross-correlation (Pearson) of two kernels."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return ((a * b).sum() / (a.norm() * b.norm())).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", ["motion", "gaussian"])
def test_recovers_the_true_kernel(shape, dtype):
    """Noise-free data, exact samples (x_hat = x) and a small delta: the data term pins the kernel down."""
    g = torch.Generator().manual_seed(2)
    kh, kw = 15, 13
    truth = motion_kernel(kh, kw, g) if shape == "motion" else gaussian_kernel(kh, kw, std=1.7)
    x = torch.randn(3, 48, 56, generator=g, dtype=torch.float64)
    y = sv_conv(x[None], truth[None, None, None, None], padding="circular")[0]
    start = centred_delta(kh, kw, truth)
    estimate = hqs_kernel_update(x[None].to(dtype), y.to(dtype), start.to(dtype), sigma=0.01, delta=1e-3, iters=5)
    assert normalised_cross_correlation(estimate, truth) > 0.99


def test_large_delta_keeps_phi():
    """delta -> infinity: the penalty pins Z to phi, so a normalised non-negative kernel is a fixed point."""
    x_hat, y, _, _ = make_inputs("n3-C3-k4x6", torch.float64, seed=3)
    kernel = gaussian_kernel(4, 6, std=1.0)
    out = hqs_kernel_update(x_hat, y, kernel, sigma=SIGMA, delta=1e16, iters=3)
    torch.testing.assert_close(out, kernel, rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", ["n3-C3-k4x6", "n1-C3-k33x49"])
def test_speed_baselines_are_the_same_operator(case):
    """The benchmarks' baselines must compute this update, or their timings mean nothing."""
    x_hat, y, kernel, delta = make_inputs(case, torch.float64, seed=4)
    kwargs = dict(sigma=SIGMA, delta=delta, iters=4)
    ref = hqs_kernel_update_reference(x_hat, y, kernel, **kwargs)
    assert rel_err(hqs_rfft_baseline(x_hat, y, kernel, **kwargs), ref) < 1e-10
    assert rel_err(hqs_fastem_style(x_hat, y, kernel, **kwargs), ref) < 1e-10


def test_non_contiguous_inputs():
    x_hat, y, kernel, delta = make_inputs("n3-C3-k4x6", torch.float64, seed=5)
    x_t = x_hat.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, column-major planes
    y_t = y.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # channels last
    k_t = kernel.t().contiguous().t()
    assert not (x_t.is_contiguous() or y_t.is_contiguous() or k_t.is_contiguous())
    kwargs = dict(sigma=SIGMA, delta=delta, iters=4, denoiser=drifting_smoother)
    expected = hqs_kernel_update_reference(x_hat, y, kernel, **kwargs)
    assert rel_err(hqs_kernel_update(x_t, y_t, k_t, **kwargs), expected) < 1e-10


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 24), W=st.integers(1, 24), kh=st.integers(1, 24),
    kw=st.integers(1, 24), iters=st.integers(1, 4), log_delta=st.floats(0, 6), denoiser=st.sampled_from(list(DENOISERS)),
    seed=st.integers(0, 2**16),
)
def test_random_shapes(n, C, H, W, kh, kw, iters, log_delta, denoiser, seed):
    kh, kw = min(kh, H), min(kw, W)
    g = torch.Generator().manual_seed(seed)
    x_hat = torch.randn(n, C, H, W, generator=g, dtype=torch.float64)
    y = torch.randn(C, H, W, generator=g, dtype=torch.float64)
    kernel = torch.rand(kh, kw, generator=g, dtype=torch.float64)
    kwargs = dict(sigma=0.3, delta=10**log_delta, iters=iters, denoiser=DENOISERS[denoiser])
    ours = hqs_kernel_update(x_hat, y, kernel, **kwargs)
    assert rel_err(ours, hqs_kernel_update_reference(x_hat, y, kernel, **kwargs)) < 1e-10


# ---------------------------------------------------------------------------------------------------------------
# The ops one by one


def test_combine_and_crops_match_the_formula():
    """a_crop and b_window from the combine op equal the crops of irfft2(num / (den + alpha)) and
    irfft2(alpha / (den + alpha)), and b is even (b_window is symmetric under a 180-degree rotation)."""
    x_hat, y, _, _ = make_inputs("n3-C3-k4x6", torch.float64, seed=6)
    alpha = 3 * 1e4 * SIGMA**2
    a_crop, b_window = hqs_spectral_terms(x_hat, y, (4, 6), alpha)
    spectrum_x, spectrum_y = torch.fft.rfft2(x_hat), torch.fft.rfft2(y)
    den = (spectrum_x.abs() ** 2).sum(dim=(0, 1)) + alpha
    a = torch.fft.irfft2((spectrum_x.conj() * spectrum_y).sum(dim=(0, 1)) / den, s=(37, 53))
    b = torch.fft.irfft2(alpha / den + 0j, s=(37, 53))
    torch.testing.assert_close(a_crop, torch.roll(a, (2, 3), (0, 1))[:4, :6], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(b_window, torch.roll(b, (3, 5), (0, 1))[:7, :11], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(b_window, b_window.flip(0, 1), rtol=1e-12, atol=1e-15)


def test_step_falls_back_to_a_centred_delta():
    """Nothing positive after the clip: the documented fallback, a delta at (kh // 2, kw // 2)."""
    for kh, kw in [(5, 5), (4, 6)]:
        a_crop = -torch.ones(kh, kw, dtype=torch.float64)
        b_window = torch.zeros(2 * kh - 1, 2 * kw - 1, dtype=torch.float64)
        out = torch.ops.blindfast.hqs_step(a_crop, b_window, torch.rand(kh, kw, dtype=torch.float64), 2)
        torch.testing.assert_close(out, centred_delta(kh, kw, out), rtol=0, atol=0)


def recentre_cases():
    g = torch.Generator().manual_seed(7)
    blob = torch.zeros(9, 8, dtype=torch.float64)
    blob[0:3, 5:8] = torch.rand(3, 3, generator=g, dtype=torch.float64)  # off-centre blob: a shift of (3, -2)
    corners = torch.zeros(4, 4, dtype=torch.float64)
    corners[0, 3] = corners[3, 0] = 1  # centre of mass (1.5, 1.5), shift (1, 1): all of the mass leaves
    return {
        "random-signed": torch.rand(7, 5, generator=g, dtype=torch.float64) - 0.3,
        "random-even": torch.rand(6, 8, generator=g, dtype=torch.float64),
        "blob": blob,
        # the blob over a non-zero background: the centre of mass is still up and right of the centre, so the
        # shifted read window leaves the kernel on the right, where a read past a row's end would wrap into the
        # next row's first (non-zero) tap
        "blob-over-background": blob + 0.05 * torch.rand(9, 8, generator=g, dtype=torch.float64),
        "corners-all-shifted-out": corners,
        "all-negative": -torch.rand(5, 5, generator=g, dtype=torch.float64),
        "single-pixel": torch.ones(1, 1, dtype=torch.float64),
    }


@pytest.mark.parametrize("name, kernel", recentre_cases().items(), ids=list(recentre_cases()))
def test_recentre_matches_reference(name, kernel):
    ours = torch.ops.blindfast.hqs_recentre(kernel)
    ref = recentre_kernel(kernel)
    torch.testing.assert_close(ours, ref, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(torch.ops.blindfast.hqs_recentre(kernel.float()), ref.float(), rtol=1e-6, atol=1e-7)
    if name in ("corners-all-shifted-out", "all-negative"):
        torch.testing.assert_close(ours, centred_delta(*kernel.shape, kernel), rtol=0, atol=0)
    if name == "blob":
        rows = torch.arange(9, dtype=torch.float64)[:, None]
        cols = torch.arange(8, dtype=torch.float64)[None, :]
        assert abs((rows * ours).sum().item() - 4) <= 0.5 and abs((cols * ours).sum().item() - 4) <= 0.5


def opcheck_samples():
    x_hat, y, kernel, _ = make_inputs((2, 3, 9, 11, 3, 4, 1e4), torch.float64, seed=8)
    x_spec = torch.view_as_real(torch.fft.rfft2(x_hat))
    y_spec = torch.view_as_real(torch.fft.rfft2(y))
    a_crop, b_window = hqs_spectral_terms(x_hat, y, (3, 4), 2.0)
    for requires_grad in (False, True):
        yield torch.ops.blindfast.hqs_combine.default, (x_spec.clone().requires_grad_(requires_grad), y_spec, 2.0)
        yield torch.ops.blindfast.hqs_step.default, (a_crop, b_window, kernel.clone().requires_grad_(requires_grad), 3)
        yield torch.ops.blindfast.hqs_recentre.default, (kernel.clone().requires_grad_(requires_grad) - 0.2,)


@pytest.mark.parametrize("op, args", list(opcheck_samples()))
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


def test_torch_compile_fullgraph_step():
    x_hat, y, kernel, delta = make_inputs("n3-C1-k7x3", torch.float32, seed=9)
    a_crop, b_window = hqs_spectral_terms(x_hat, y, (7, 3), 3 * delta * SIGMA**2)

    @torch.compile(fullgraph=True, backend="inductor")
    def two_steps_from_a_blend(a, b, phi):
        return torch.ops.blindfast.hqs_step(a, b, 0.5 * phi + 0.5 * phi.flip(0), 2)

    expected = torch.ops.blindfast.hqs_step(a_crop, b_window, 0.5 * kernel + 0.5 * kernel.flip(0), 2)
    torch.testing.assert_close(two_steps_from_a_blend(a_crop, b_window, kernel), expected)


def test_result_never_requires_grad():
    x_hat, y, kernel, delta = make_inputs("n1-C1-k5", torch.float64, seed=10)
    out = hqs_kernel_update(x_hat.requires_grad_(), y, kernel.requires_grad_(), sigma=SIGMA, delta=delta, iters=2)
    assert not out.requires_grad


# ---------------------------------------------------------------------------------------------------------------
# Bad input: the error names what was expected and what was got.

X = torch.zeros(2, 3, 16, 20)
Y = torch.zeros(3, 16, 20)
K = torch.zeros(5, 5)
GOOD = dict(sigma=0.1, delta=1.0, iters=2)


def with_value(t, index, value):
    t = t.clone()
    t[index] = value
    return t


@pytest.mark.parametrize(
    "args, kwargs, error, words",
    [
        ((X[0], Y, K), {}, ValueError, ["(n, C, H, W)", "3 dims"]),
        ((X, X, K), {}, ValueError, ["(C, H, W)", "4 dims"]),
        ((X, Y, K[None]), {}, ValueError, ["(kh, kw)", "3 dims"]),
        ((X.long(), Y, K), {}, TypeError, ["float32", "torch.int64"]),
        ((X, Y.double(), K), {}, TypeError, ["one dtype", "y torch.float64"]),
        ((X, Y, torch.zeros(5, 5, device="meta")), {}, ValueError, ["one device", "kernel on meta"]),
        ((X, Y[:2], K), {}, ValueError, ["C = 3", "got 2"]),
        ((X, torch.zeros(3, 16, 21), K), {}, ValueError, ["(16, 20)", "(16, 21)"]),
        ((X, Y, torch.zeros(17, 5)), {}, ValueError, ["(16, 20)", "(17, 5)"]),
        ((X, Y, torch.zeros(5, 21)), {}, ValueError, ["(16, 20)", "(5, 21)"]),
        ((X[:0], Y, K), {}, ValueError, ["non-empty", "(0, 3, 16, 20)"]),
        ((X, Y, K), {"sigma": 0.0}, ValueError, ["sigma", "> 0", "got 0.0"]),
        ((X, Y, K), {"sigma": "0.1"}, TypeError, ["sigma must be a finite number > 0", "got str '0.1'"]),
        ((X, Y, K), {"delta": -1.0}, ValueError, ["delta", "> 0", "got -1.0"]),
        ((X, Y, K), {"lam": float("nan")}, ValueError, ["lam", "> 0", "got nan"]),
        ((X, Y, K), {"iters": 0}, ValueError, ["iters", ">= 1", "got 0"]),
        ((X, Y, K), {"iters": 2.5}, TypeError, ["iters", "integer", "got float"]),
        ((X, Y, K), {"denoiser": 3}, TypeError, ["callable", "got int"]),
        ((X, Y, K), {"sigma": 1e-30, "delta": 1e-6}, ValueError, ["positive normal", "float32", "got 2e-66"]),
        ((with_value(X, (1, 2, 3, 4), float("nan")), Y, K), {}, ValueError, ["x_hat", "finite", "got 1 NaN"]),
        ((X, with_value(Y, (0, 0, 0), float("inf")), K), {}, ValueError, ["y", "finite", "got 1 NaN or inf"]),
        ((X, Y, with_value(K, (2, 2), float("nan"))), {}, ValueError, ["kernel", "finite", "got 1 NaN"]),
        ((X, Y, K), {"denoiser": lambda z, s: z[0]}, ValueError, ["(1, 1, 5, 5)", "got (1, 5, 5)"]),
        ((X, Y, K), {"denoiser": lambda z, s: z.double()}, ValueError, ["torch.float32", "got (1, 1, 5, 5) "
                                                                        "torch.float64"]),
    ],
)
def test_bad_input(args, kwargs, error, words):
    with pytest.raises(error) as info:
        hqs_kernel_update(*args, **{**GOOD, **kwargs})
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_denoiser_noise_level_is_sqrt_lam_over_delta():
    x_hat, y, kernel, _ = make_inputs("n1-C1-k5", torch.float64, seed=11)
    seen = []

    def recording_identity(z, noise_level):
        seen.append(noise_level)
        return z

    hqs_kernel_update(x_hat, y, kernel, sigma=SIGMA, delta=8.0, iters=3, denoiser=recording_identity, lam=0.5)
    assert seen == [math.sqrt(0.5 / 8.0)] * 3
