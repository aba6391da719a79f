"""Triton kernels of the HQS kernel update against the float64 reference.

Without CUDA the kernels run on CPU tensors through the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1); its cost grows with the number of programs and loop steps, so images and kernels are small.
The whole update runs with the three Triton kernels through ``blindfast.ops.hqs.run_kernel_update``.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from blindfast.ops.hqs import HqsKernels, hqs_kernel_update, hqs_spectral_terms, run_kernel_update  # noqa: E402
from blindfast.ops.reference.hqs import centred_delta, hqs_kernel_update_reference, recentre_kernel  # noqa: E402
from blindfast.triton_kernels import hqs as tk  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRITON = HqsKernels(tk.hqs_combine, tk.hqs_step, tk.hqs_recentre)

# name: (n, C, H, W, kh, kw, delta): odd sizes; odd, even and non-square kernels; a kernel nearly the image size
# (the window of b wraps around).
CASES = {
    "n1-C1-k5": (1, 1, 17, 23, 5, 5, 1e4),
    "n3-C3-k4x6": (3, 3, 17, 23, 4, 6, 1e3),
    "n2-C2-k13x19": (2, 2, 15, 21, 13, 19, 1e5),
}
SIGMA = 0.05
ITERS = 3
F32_FACTOR = 4.0
F32_FLOOR = 4 * torch.finfo(torch.float32).eps


def make_inputs(case: str, dtype: torch.dtype, seed: int = 0):
    """Samples, an observation that is their mean blurred by a random kernel plus noise, a random initial kernel;
    drawn in float64, rounded to ``dtype``."""
    n, C, H, W, kh, kw, delta = CASES[case]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(C, H, W, generator=g, dtype=torch.float64)
    blur = torch.rand(kh, kw, generator=g, dtype=torch.float64)
    pad = torch.zeros(H, W, dtype=torch.float64)
    pad[:kh, :kw] = blur / blur.sum()
    pad = torch.roll(pad, (-(kh // 2), -(kw // 2)), (0, 1))
    y = torch.fft.irfft2(torch.fft.rfft2(pad) * torch.fft.rfft2(x), s=(H, W))
    y = y + SIGMA * torch.randn(y.shape, generator=g, dtype=torch.float64)
    x_hat = x[None] + 0.1 * torch.randn(n, C, H, W, generator=g, dtype=torch.float64)
    kernel = torch.rand(kh, kw, generator=g, dtype=torch.float64)
    return tuple(t.to(dtype) for t in (x_hat, y, kernel)), delta


def drifting_smoother(z, noise_level):
    """Stand-in denoiser: a 3x3 binomial smoothing (strength from the noise level) and a (1, 2)-pixel drift."""
    weights = torch.tensor([1.0, 2.0, 1.0], dtype=z.dtype, device=z.device)
    smoothed = torch.nn.functional.conv2d(z, (weights[:, None] * weights[None, :] / 16)[None, None], padding=1)
    strength = min(noise_level, 1.0)
    return torch.roll((1 - strength) * z + strength * smoothed, shifts=(1, 2), dims=(-2, -1))


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double().cpu() - ref).abs().max() / ref.abs().max()).item()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_triton(inputs, delta, denoiser, iters=ITERS):
    x_hat, y, kernel = (t.to(DEVICE) for t in inputs)
    return run_kernel_update(x_hat, y, kernel, sigma=SIGMA, delta=delta, iters=iters, denoiser=denoiser, lam=0.5,
                             kernels=TRITON).cpu()


@pytest.mark.parametrize("denoiser", [None, drifting_smoother], ids=["none", "drifting_smoother"])
@pytest.mark.parametrize("case", CASES)
def test_float64_matches_reference(case, denoiser):
    inputs, delta = make_inputs(case, torch.float64)
    got = run_triton(inputs, delta, denoiser)
    ref = hqs_kernel_update_reference(*inputs, sigma=SIGMA, delta=delta, iters=ITERS, denoiser=denoiser, lam=0.5)
    assert got.dtype == torch.float64 and got.shape == ref.shape
    assert rel_err(got, ref) < 1e-10


@pytest.mark.parametrize("case", CASES)
def test_float32_within_torch_error(case):
    inputs, delta = make_inputs(case, torch.float32)
    kwargs = dict(sigma=SIGMA, delta=delta, iters=ITERS, denoiser=drifting_smoother, lam=0.5)
    exact = hqs_kernel_update_reference(*(t.double() for t in inputs), **kwargs)
    torch_err = rel_err(hqs_kernel_update_reference(*inputs, **kwargs), exact)
    got = run_triton(inputs, delta, drifting_smoother)
    assert got.dtype == torch.float32
    assert rel_err(got, exact) <= F32_FACTOR * torch_err + F32_FLOOR


def test_combine_with_several_programs():
    """Blocks smaller than the spectrum: program offsets and the masked tail."""
    (x_hat, y, _), _ = make_inputs("n3-C3-k4x6", torch.float64, seed=1)
    x_spec = torch.view_as_real(torch.fft.rfft2(x_hat)).to(DEVICE)
    y_spec = torch.view_as_real(torch.fft.rfft2(y)).to(DEVICE)
    got = torch.view_as_complex(tk.hqs_combine(x_spec, y_spec, 2.5, config=triton.Config({"BLOCK": 64})).cpu())
    # 17 * 12 = 204 frequencies
    spectrum_x, spectrum_y = torch.fft.rfft2(x_hat), torch.fft.rfft2(y)
    den = (spectrum_x.abs() ** 2).sum(dim=(0, 1)) + 2.5
    torch.testing.assert_close(got[0], (spectrum_x.conj() * spectrum_y).sum(dim=(0, 1)) / den, rtol=1e-12, atol=0)
    torch.testing.assert_close(got[1], 2.5 / den + 0j, rtol=1e-12, atol=0)


def test_step_falls_back_to_a_centred_delta():
    for kh, kw in [(5, 5), (4, 6)]:
        a_crop = -torch.ones(kh, kw, dtype=torch.float64, device=DEVICE)
        b_window = torch.zeros(2 * kh - 1, 2 * kw - 1, dtype=torch.float64, device=DEVICE)
        for iters in (1, 2):
            out = tk.hqs_step(a_crop, b_window, torch.rand(kh, kw, dtype=torch.float64, device=DEVICE), iters).cpu()
            torch.testing.assert_close(out, centred_delta(kh, kw, out), rtol=0, atol=0)


def test_step_matches_the_cpp_step():
    """Several iterations in one call (the no-denoiser path): the same as the C++ kernel."""
    (x_hat, y, kernel), delta = make_inputs("n3-C3-k4x6", torch.float64, seed=2)
    a_crop, b_window = hqs_spectral_terms(x_hat, y, tuple(kernel.shape), 3 * delta * SIGMA**2)
    got = tk.hqs_step(a_crop.to(DEVICE), b_window.to(DEVICE), kernel.to(DEVICE), 4).cpu()
    torch.testing.assert_close(got, torch.ops.blindfast.hqs_step(a_crop, b_window, kernel, 4), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("index", range(max(len(tk.COMBINE_CONFIGS), len(tk.KERNEL_SIZED_CONFIGS))))
def test_every_config_of_every_kernel(index):
    """Each autotuning candidate, forced, on one float64 case per kernel, against the C++ kernels (themselves tested
    against the float64 reference)."""
    combine_config = tk.COMBINE_CONFIGS[index % len(tk.COMBINE_CONFIGS)]
    sized_config = tk.KERNEL_SIZED_CONFIGS[index % len(tk.KERNEL_SIZED_CONFIGS)]
    (x_hat, y, kernel), delta = make_inputs("n3-C3-k4x6", torch.float64, seed=6)
    x_spec, y_spec = (torch.view_as_real(torch.fft.rfft2(t)).contiguous() for t in (x_hat, y))
    got_ab = tk.hqs_combine(x_spec.to(DEVICE), y_spec.to(DEVICE), 2.5, config=combine_config).cpu()
    torch.testing.assert_close(got_ab, torch.ops.blindfast.hqs_combine(x_spec, y_spec, 2.5), rtol=1e-12, atol=1e-15)

    a_crop, b_window = hqs_spectral_terms(x_hat, y, tuple(kernel.shape), 3 * delta * SIGMA**2)
    got = tk.hqs_step(a_crop.to(DEVICE), b_window.to(DEVICE), kernel.to(DEVICE), 2, step_config=sized_config,
                      normalise_config=sized_config).cpu()
    torch.testing.assert_close(got, torch.ops.blindfast.hqs_step(a_crop, b_window, kernel, 2), rtol=1e-12, atol=1e-15)

    signed = kernel - 0.3
    torch.testing.assert_close(tk.hqs_recentre(signed.to(DEVICE), config=sized_config).cpu(), recentre_kernel(signed),
                               rtol=1e-14, atol=1e-15)


def recentre_cases():
    g = torch.Generator().manual_seed(3)
    blob = torch.zeros(9, 8, dtype=torch.float64)
    blob[0:3, 5:8] = torch.rand(3, 3, generator=g, dtype=torch.float64)
    corners = torch.zeros(4, 4, dtype=torch.float64)
    corners[0, 3] = corners[3, 0] = 1  # all of the mass is shifted out: a centred delta
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
    }


@pytest.mark.parametrize("kernel", recentre_cases().values(), ids=list(recentre_cases()))
def test_recentre_matches_reference(kernel):
    got = tk.hqs_recentre(kernel.to(DEVICE)).cpu()
    torch.testing.assert_close(got, recentre_kernel(kernel), rtol=1e-14, atol=1e-15)


def assert_half_accumulated_in_float32(got, exact, single):
    """Each value of ``got`` (half) within half a ulp of ``exact`` (float64, from the same rounded inputs), plus the
    error the float32 computation ``single`` makes, with the factor and floor of the float32 tests."""
    allowance = F32_FACTOR * rel_err(single, exact) + F32_FLOOR
    bound = torch.finfo(got.dtype).eps * exact.abs() + allowance * exact.abs().max()
    assert ((got.double() - exact).abs() <= bound).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_step_and_combine_accumulate_in_float32(dtype):
    """Half inputs: float32 accumulation and one rounding at the end (the C++ kernels give the float64 and float32
    values of the same computation)."""
    (x_hat, y, kernel), delta = make_inputs("n3-C3-k4x6", torch.float64, seed=4)
    a_crop, b_window = hqs_spectral_terms(x_hat, y, tuple(kernel.shape), 3 * delta * SIGMA**2)
    low = tuple(t.to(dtype) for t in (a_crop, b_window, kernel))
    got = tk.hqs_step(*(t.to(DEVICE) for t in low), 2).cpu()
    assert got.dtype == dtype
    assert_half_accumulated_in_float32(got, torch.ops.blindfast.hqs_step(*(t.double() for t in low), 2),
                                       torch.ops.blindfast.hqs_step(*(t.float() for t in low), 2))

    x_spec = torch.view_as_real(torch.fft.rfft2(x_hat)).to(dtype)
    y_spec = torch.view_as_real(torch.fft.rfft2(y)).to(dtype)
    got_ab = tk.hqs_combine(x_spec.to(DEVICE), y_spec.to(DEVICE), 2.5).cpu()
    assert got_ab.dtype == dtype
    exact_ab = torch.ops.blindfast.hqs_combine(x_spec.double(), y_spec.double(), 2.5)
    single_ab = torch.ops.blindfast.hqs_combine(x_spec.float(), y_spec.float(), 2.5)
    for plane in range(2):  # A and B have their own scales
        assert_half_accumulated_in_float32(got_ab[plane], exact_ab[plane], single_ab[plane])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the op's CUDA path needs a GPU")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_cuda_op(dtype):
    """blindfast.ops.hqs dispatches CUDA tensors to these kernels; half inputs are computed in float32."""
    inputs, delta = make_inputs("n3-C3-k4x6", torch.float64)
    rounded = tuple(t.to(dtype) for t in inputs)
    kwargs = dict(sigma=SIGMA, delta=delta, iters=ITERS, denoiser=drifting_smoother, lam=0.5)
    got = hqs_kernel_update(*(t.cuda() for t in rounded), **kwargs).cpu()
    assert got.dtype == dtype
    exact = hqs_kernel_update_reference(*(t.double() for t in rounded), **kwargs)
    if dtype == torch.float64:
        assert rel_err(got, exact) < 1e-10
        return
    single = hqs_kernel_update_reference(*(t.float() for t in rounded), **kwargs)
    if dtype == torch.float32:
        assert rel_err(got, exact) <= F32_FACTOR * rel_err(single, exact) + F32_FLOOR
    else:
        assert_half_accumulated_in_float32(got, exact, single)
