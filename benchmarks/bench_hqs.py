"""hqs_kernel_update: ours vs the FastEM-style loop and the fair rfft2 torch baseline, one whole call each.

RGB samples (n of them), square images, 20 HQS iterations, no denoiser; the spectral sums are part of every call.
Baselines (blindfast/ops/reference/hqs.py, tested to compute the same update):
  fastem_style   FastEM's code path: complex fft2 of every sample and of y at every iteration;
  rfft_baseline  plain torch at its best: spectral sums once, then one rfft2 + irfft2 of an image per iteration.
Run: python -m pytest benchmarks/bench_hqs.py --benchmark-columns=median,rounds --benchmark-group-by=group
"""

import math

import pytest
import torch
from conftest import record

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
@pytest.mark.parametrize("size, n, k",
                         [pytest.param(*c, marks=pytest.mark.quick) if c == QUICK else c for c in CONFIGS], ids=[f"{s}x{s}-n{n}-k{k}" for s, n, k in CONFIGS])
def test_hqs_kernel_update(benchmark, device, machine, size, n, k, impl):
    x_hat, y, kernel = make_inputs(device, size, n, k)
    update = IMPLS[impl]
    benchmark.group = f"hqs-{size}x{size}-n{n}-k{k}"
    record(benchmark, lambda: update(x_hat, y, kernel, sigma=SIGMA, delta=DELTA, iters=ITERS), device, machine,
           nominal_flops(size, n, k), x_hat.numel() * x_hat.element_size(),
           bytes_moved=(x_hat.numel() + y.numel()) * x_hat.element_size())
