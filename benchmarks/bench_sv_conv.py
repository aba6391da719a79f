"""sv_conv: ours vs the naive torch composition, deepinv's SpaceVaryingBlur (direct and FFT) and a tile-FFT; and, for
a uniform kernel (a 1x1 grid), vs torch's own convolution (cuDNN on CUDA, oneDNN/mkldnn on the CPU).

RGB images, an 8x8 grid of k x k kernels per channel, circular padding (the only one deepinv's FFT path has).
float32 rows everywhere, bfloat16 rows on CUDA (conftest.py DTYPES) for ours and the naive composition (the FFT
baselines have none: cuFFT takes no bfloat16) and for the uniform kernel.
Run: python -m pytest benchmarks/bench_sv_conv.py --benchmark-columns=median,rounds --benchmark-group-by=group
(BLINDFAST_BENCH_FULL=1 adds the baselines that take minutes per call.)
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import DTYPES, FULL, record

from blindfast.ops import sv_conv
from blindfast.ops.reference import sv_conv_reference, sv_conv_tile_fft, tent_multipliers
from blindfast.physics import lens_psf_grid

PADDING = "circular"
GRID = (8, 8)
CONFIGS = [(256, 256, 13), (1024, 1024, 13), (1024, 1024, 31), (4096, 4096, 13), (4096, 4096, 31)]
QUICK = (256, 256, 13)   # the case `blindfast bench --quick` runs (every baseline in seconds)
MEGAPIXEL_20 = (3648, 5472, 13)  # a 20-megapixel 3:2 photo


def make_inputs(device, h, w, k, dtype=torch.float32, grid=GRID):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, h, w, generator=g).to(device, dtype)
    psf = torch.rand(1, 3, *grid, k, k, generator=g)
    psf = (psf / psf.sum(dim=(-2, -1), keepdim=True)).to(device, dtype)
    return x, psf


def deepinv_blur(psf, h, w, use_fft):
    """deepinv's SpaceVaryingBlur with our kernels and channel-shared tent multipliers (its cheapest layout)."""
    dinv = pytest.importorskip("deepinv")
    mult = tent_multipliers(h, w, *GRID, dtype=psf.dtype, device=psf.device)[None, None]
    return dinv.physics.SpaceVaryingBlur(filters=psf.reshape(1, 3, GRID[0] * GRID[1], *psf.shape[-2:]),
                                         multipliers=mult, padding=PADDING, mask_first=False, use_fft=use_fft)


# Which baselines run at which size by default: the naive composition and deepinv's direct path cost
# 64 full-image convolutions (~7 s at 1024^2 k=13 here, 16x that at 4096^2); deepinv's multipliers are
# 64 x H x W floats (4.3 GB at 4096^2, 5.1 GB at 20 MP), and its FFT path took 325 s a call at 4096^2 k=13: with
# the warm-up, the rounds and the peak-memory call (conftest.py), ~27 minutes for that case alone.
def baseline_allowed(impl, h, w, k, op, dtype=torch.float32):
    if dtype != torch.float32 and impl not in ("blindfast", "reference"):
        return False
    if (h, w, k) == QUICK:   # seconds, not minutes: ours for every op, against the tile-FFT forward
        return impl == "blindfast" or (impl == "tile_fft" and op == "forward")
    if impl in ("blindfast", "tile_fft") or FULL:
        return True
    if h * w > 1024 * 1024:
        return False
    return impl != "reference" or (k == 13 and op == "forward")


def operation(impl, op, x, psf):
    """A zero-argument callable running `op` ("forward", "adjoint", "grad_psf") with implementation `impl`."""
    h, w = x.shape[-2:]
    if impl.startswith("deepinv"):
        physics = deepinv_blur(psf, h, w, use_fft=impl.endswith("fft"))
        forward = lambda p: physics.A(x, filters=p.reshape(1, 3, -1, *p.shape[-2:]))  # noqa: E731
        adjoint = lambda v: physics.A_adjoint(v)  # noqa: E731
    elif impl == "blindfast":
        forward = lambda p: sv_conv(x, p, padding=PADDING)  # noqa: E731
        adjoint = lambda v: sv_conv(v, psf, padding=PADDING, adjoint=True)  # noqa: E731
    elif impl == "tile_fft":
        forward = lambda p: sv_conv_tile_fft(x, p, PADDING)  # noqa: E731
        adjoint = None
    else:
        forward = lambda p: sv_conv_reference(x, p, PADDING)  # noqa: E731
        adjoint = None
    if op == "forward":
        return lambda: forward(psf)
    if op == "adjoint":
        if adjoint is None:
            pytest.skip(f"{impl} has no separate adjoint")
        v = torch.rand_like(x)
        return lambda: adjoint(v)
    weights = torch.rand_like(x)  # d/dpsf of sum(A_psf(x) * weights), forward included

    def grad_psf():
        p = psf.detach().requires_grad_(True)
        return torch.autograd.grad((forward(p) * weights).sum(), p)[0]

    return grad_psf


IMPLS = ["blindfast", "tile_fft", "reference", "deepinv_direct", "deepinv_fft"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("h, w, k", [pytest.param(*c, marks=pytest.mark.quick) if c == QUICK else c for c in CONFIGS],
                         ids=[f"{h}x{w}-k{k}" for h, w, k in CONFIGS])
@pytest.mark.parametrize("op", ["forward", "adjoint", "grad_psf"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sv_conv(benchmark, device, machine, dtype, op, h, w, k, impl):
    if not baseline_allowed(impl, h, w, k, op, dtype):
        pytest.skip(f"{impl} {op} at {h}x{w} k={k} in {dtype} takes minutes per call here or has no such dtype: "
                    f"BLINDFAST_BENCH_FULL=1 runs the slow ones")
    x, psf = make_inputs(device, h, w, k, dtype)
    benchmark.group = f"sv_conv-{op}-{h}x{w}-k{k}"
    flops = 8 * k * k * 3 * h * w * (2 if op == "grad_psf" else 1)
    image_bytes = x.numel() * x.element_size()
    record(benchmark, operation(impl, op, x, psf), device, machine, flops, image_bytes,
           bytes_moved=2 * image_bytes + psf.numel() * psf.element_size())


def uniform_conv2d(x, psf):
    """sv_conv of x (B, 3, H, W) with a 1x1 grid psf (1, 3, 1, 1, k, k), circular padding, as torch's depthwise
    convolution: conv2d correlates, so the kernels are flipped; the padding is explicit."""
    k = psf.shape[-1]
    weight = psf[0, :, 0, 0].flip(-2, -1)[:, None].contiguous()   # (3, 1, k, k)
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="circular"), weight, groups=x.shape[1])


@pytest.mark.parametrize("impl", ["blindfast", "conv2d"])
@pytest.mark.parametrize("h, w, k", [pytest.param(*c, marks=pytest.mark.quick) if c == QUICK else c
                                     for c in CONFIGS[:4]], ids=[f"{h}x{w}-k{k}" for h, w, k in CONFIGS[:4]])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sv_conv_uniform_kernel(benchmark, device, machine, dtype, h, w, k, impl):
    """A 1x1 grid (one kernel per channel for the whole image) against F.conv2d on the same input (cuDNN on CUDA,
    oneDNN on the CPU): torch's own convolution at the case it is built for. The results are checked equal (within
    the dtype's default tolerance) before timing."""
    x, psf = make_inputs(device, h, w, k, dtype, grid=(1, 1))
    ours = lambda: sv_conv(x, psf, padding=PADDING)  # noqa: E731
    conv = lambda: uniform_conv2d(x, psf)  # noqa: E731
    torch.testing.assert_close(ours(), conv())
    benchmark.group = f"sv_conv-uniform-forward-{h}x{w}-k{k}"
    image_bytes = x.numel() * x.element_size()
    # one multiply-add per tap and output (the 8 of the grid cases count the blend of 4 kernels)
    record(benchmark, ours if impl == "blindfast" else conv, device, machine, 2 * k * k * 3 * h * w, image_bytes,
           bytes_moved=2 * image_bytes + psf.numel() * psf.element_size())


@pytest.mark.parametrize("impl", ["blindfast", "tile_fft"])
def test_sv_conv_20mp(benchmark, device, machine, impl):
    h, w, k = MEGAPIXEL_20
    x, psf = make_inputs(device, h, w, k)
    benchmark.group = f"sv_conv-forward-20MP-{h}x{w}-k{k}"
    record(benchmark, operation(impl, "forward", x, psf), device, machine, 8 * k * k * 3 * h * w,
           x.numel() * x.element_size())


@pytest.mark.parametrize("taps", ["subnormal", "flushed"])
@pytest.mark.parametrize("op", ["forward", "adjoint"])
def test_sv_conv_subnormal_taps(benchmark, device, machine, op, taps):
    """lens_psf_grid's float32 kernels (8x8 grid, k = 31, RGB) as the generator gives them ("flushed": the taps
    below float32's smallest normal are 0) and as a plain cast of its float64 kernels ("subnormal": about 5% of the
    taps subnormal, as before the flush); everything else the same."""
    h, w, k = 1024, 1024, 31
    x, _ = make_inputs(device, h, w, k)
    if taps == "subnormal":
        psf = lens_psf_grid(GRID, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
        tiny = torch.finfo(torch.float32).tiny
        assert ((psf != 0) & (psf < tiny)).float().mean() > 0.04
    else:
        psf = lens_psf_grid(GRID, k, generator=torch.Generator().manual_seed(0))
    benchmark.group = f"sv_conv-subnormal-taps-{op}-{h}x{w}-k{k}"
    record(benchmark, operation("blindfast", op, x, psf.to(device)), device, machine, 8 * k * k * 3 * h * w,
           x.numel() * x.element_size())
