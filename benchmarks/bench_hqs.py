"""hqs_kernel_update: ours vs the FastEM-style loop and the fair rfft2 torch baseline, one whole call each.

RGB samples (n of them), square images, 20 HQS iterations, no denoiser; the spectral sums are part of every call.
Baselines (blindfast/ops/reference/hqs.py, tested to compute the same update):
  fastem_style   FastEM's code path: complex fft2 of every sample and of y at every iteration;
  rfft_baseline  plain torch at its best: spectral sums once, then one rfft2 + irfft2 of an image per iteration.
bfloat16 rows (CUDA only: conftest.py DTYPES) time ours alone: cuFFT takes no bfloat16, so the baselines have none.
The combine (the one pass over the spectra, ``torch.ops.blindfast.hqs_combine``) is also timed alone against its
unfused torch expression and that expression under torch.compile ("torch_compile").
Run: python -m pytest benchmarks/bench_hqs.py --benchmark-columns=median,rounds --benchmark-group-by=group
"""

import math

import pytest
import torch
from conftest import DTYPES, compiled, compiled_baseline, record, record_bandwidth

from blindfast.ops.hqs import hqs_kernel_update
from blindfast.ops.reference.hqs import hqs_fastem_style, hqs_rfft_baseline

CHANNELS = 3
ITERS = 20
SIGMA, DELTA = 0.05, 100.0
CONFIGS = [(size, n, k) for size in (256, 1024) for n in (1, 4, 16) for k in (33, 64)]
QUICK = (256, 1, 33)   # the case `blindfast bench --quick` runs
IMPLS = {"blindfast": hqs_kernel_update, "rfft_baseline": hqs_rfft_baseline, "fastem_style": hqs_fastem_style}


def make_inputs(device, size, n, k):
    g = torch.Generator().manual_seed(0)
    x_hat = torch.rand(n, CHANNELS, size, size, generator=g).to(device)
    y = torch.rand(CHANNELS, size, size, generator=g).to(device)
    kernel = torch.rand(k, k, generator=g)
    return x_hat, y, (kernel / kernel.sum()).to(device)


def nominal_flops(size, n, k):
    """The fast algorithm's arithmetic, the same count for every implementation of a group (so GFLOP/s compare
    like timings): real FFTs of the samples and of y at 2.5 N log2 N (half a complex FFT's 5 N log2 N), the
    correlation of the step, 2 (k^2)^2 per iteration."""
    pixels = size * size
    return (n + 1) * CHANNELS * 2.5 * pixels * math.log2(pixels) + 2 * k**4 * ITERS


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size, n, k", [pytest.param(*c, marks=pytest.mark.quick) if c == QUICK else c
                                        for c in CONFIGS], ids=[f"{s}x{s}-n{n}-k{k}" for s, n, k in CONFIGS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_hqs_kernel_update(benchmark, device, machine, dtype, size, n, k, impl):
    if dtype == torch.bfloat16 and impl != "blindfast":
        pytest.skip(f"{impl} computes FFTs in the input dtype, and cuFFT takes no bfloat16")
    x_hat, y, kernel = (t.to(dtype) for t in make_inputs(device, size, n, k))
    update = IMPLS[impl]
    benchmark.group = f"hqs-{size}x{size}-n{n}-k{k}"
    record(benchmark, lambda: update(x_hat, y, kernel, sigma=SIGMA, delta=DELTA, iters=ITERS), device, machine,
           nominal_flops(size, n, k), x_hat.numel() * x_hat.element_size(),
           bytes_moved=(x_hat.numel() + y.numel()) * x_hat.element_size())


COMBINE_CASES = [pytest.param(256, 1, marks=pytest.mark.quick, id="256x256-n1"),
                 pytest.param(1024, 4, id="1024x1024-n4"), pytest.param(1024, 16, id="1024x1024-n16")]


def combine_unfused(x_spec, y_spec, alpha):
    """[A, B + 0i] of the combine (blindfast/ops/hqs.py) as torch expressions on the interleaved spectra x_spec
    (n, C, H, Wr, 2) and y_spec (C, H, Wr, 2), in real arithmetic (which torch.compile fuses; complex views it
    does not): A = sum conj(X) Y / (den + alpha), B = alpha / (den + alpha), den = sum |X|^2. Returns (2, H, Wr, 2)."""
    xr, xi, yr, yi = x_spec[..., 0], x_spec[..., 1], y_spec[..., 0], y_spec[..., 1]
    denominator = (xr * xr + xi * xi).sum(dim=(0, 1)) + alpha
    a = torch.stack([(xr * yr + xi * yi).sum(dim=(0, 1)), (xr * yi - xi * yr).sum(dim=(0, 1))], dim=-1)
    b = torch.stack([alpha / denominator, torch.zeros_like(denominator)], dim=-1)
    return torch.stack([a / denominator[..., None], b])


@pytest.mark.parametrize("impl", ["blindfast", "unfused", compiled_baseline()])
@pytest.mark.parametrize("size, n", COMBINE_CASES)
def test_hqs_combine(benchmark, device, machine, size, n, impl):
    """The combine alone, float32 (its kernels take float32 / float64): spectra of RGB samples and of y."""
    x_hat, y, _ = make_inputs(device, size, n, 3)
    x_spec = torch.view_as_real(torch.fft.rfft2(x_hat)).contiguous()
    y_spec = torch.view_as_real(torch.fft.rfft2(y)).contiguous()
    alpha = n * DELTA * SIGMA**2
    combine = {"blindfast": torch.ops.blindfast.hqs_combine, "unfused": combine_unfused,
               "torch_compile": compiled(combine_unfused) if impl == "torch_compile" else None}[impl]
    torch.testing.assert_close(combine(x_spec, y_spec, alpha), torch.ops.blindfast.hqs_combine(x_spec, y_spec, alpha))
    benchmark.group = f"hqs_combine-{size}x{size}-n{n}"
    # per frequency and plane: the conjugate product and the squared magnitude accumulated (8 flops)
    record_bandwidth(benchmark, lambda: combine(x_spec, y_spec, alpha), device, machine,
                     x_spec.nbytes + y_spec.nbytes + 2 * y_spec[0].nbytes, flops=8 * x_spec[..., 0].numel())
