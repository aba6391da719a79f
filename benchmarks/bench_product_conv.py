"""product_conv: ours vs deepinv's product_convolution2d, on the same inputs.

An RGB 1024x1024 image, the 64 tent maps of an 8x8 bilinear grid as multipliers (built once, outside the timing),
64 per-channel 13x13 kernels, reflect padding, both orders (mask_first False and True). deepinv convolves the full
image once per map (~6 s a call here); both get conftest's warm-up and rounds (time_rounds).
Run: python -m pytest benchmarks/bench_product_conv.py --benchmark-columns=median,rounds
(BLINDFAST_BENCH_PRODUCT_CONV_SIZE=256 for a quick sanity run.)
"""

import os

import pytest
import torch
from conftest import THREADS, time_rounds

from blindfast.ops import product_conv
from blindfast.ops.reference import tent_multipliers

SIZE = int(os.environ.get("BLINDFAST_BENCH_PRODUCT_CONV_SIZE", "1024"))
CHANNELS, KERNEL, GRID, PADDING = 3, 13, (8, 8), "reflect"


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    K = GRID[0] * GRID[1]
    x = torch.rand(1, CHANNELS, SIZE, SIZE, generator=g)
    kernels = torch.rand(1, CHANNELS, K, KERNEL, KERNEL, generator=g)
    kernels = kernels / kernels.sum(dim=(-2, -1), keepdim=True)
    multipliers = tent_multipliers(SIZE, SIZE, *GRID, dtype=torch.float32)[None, None].contiguous()  # (1, 1, 64, H, W)
    return x, kernels, multipliers


def operation(impl, x, kernels, multipliers, mask_first):
    if impl == "blindfast":
        return lambda: product_conv(x, kernels=kernels, multipliers=multipliers, mask_first=mask_first, padding=PADDING)
    deepinv_functional = pytest.importorskip("deepinv.physics.functional")
    return lambda: deepinv_functional.product_convolution2d(x, multipliers, kernels, padding=PADDING,
                                                            mask_first=mask_first)


@pytest.mark.parametrize("impl", ["blindfast", "deepinv"])
@pytest.mark.parametrize("mask_first", [False, True], ids=["mask_last", "mask_first"])
def test_product_conv_forward(benchmark, inputs, mask_first, impl):
    torch.set_num_threads(THREADS)  # 2 unless BLINDFAST_BENCH_THREADS says otherwise (benchmarks/conftest.py)
    x, kernels, multipliers = inputs
    benchmark.group = "product_conv-forward"
    y, seconds = time_rounds(benchmark, operation(impl, x, kernels, multipliers, mask_first))
    assert y.shape == x.shape
    useful_flops = 8 * KERNEL * KERNEL * CHANNELS * SIZE * SIZE  # 4 tents per pixel, a multiply-add per tap
    benchmark.extra_info.update({
        "gflops": round(useful_flops / seconds / 1e9, 2),
        "mask_first": mask_first,
        "size": f"{CHANNELS}x{SIZE}x{SIZE}",
        "kernel": KERNEL,
        "maps": GRID[0] * GRID[1],
        "padding": PADDING,
        "threads": torch.get_num_threads(),
    })
