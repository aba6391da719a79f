"""blindfast.restore at photo sizes: CG on a 20-megapixel lens blur, PnP / DiffPIR iterations at 1 MP split into
data step and denoiser, and tiled against whole-image restoration.

Run: python -m pytest benchmarks/bench_restore.py --benchmark-columns=median,rounds --benchmark-group-by=group
(every case gets conftest's warm-up and rounds, like every benchmark: a 20 MP solve is ~45 s on 2 cores, so this
file takes ~10 minutes).
"""

import statistics
import time

import pytest
import torch
from conftest import ROUNDS, THREADS, PeakMemory, peak_extra_bytes, time_rounds

from blindfast.models import load_shipped_prior
from blindfast.physics import Blur, SpaceVaryingBlur, lens_psf_grid, motion_kernel
from blindfast.restore import PriorDenoiser, cg_tikhonov, diffpir, pnp_hqs, restore_tiled

MEGAPIXEL_20 = (3648, 5472)
CG_ITERS = 30
LAM = 0.01
SIGMA = 0.01


def lens(size: int) -> torch.Tensor:
    """The demo lens on an 8x8 grid, widths scaled from its 31 px window to ``size``."""
    scale = size / 31
    return lens_psf_grid((8, 8), size, channels=3, generator=torch.Generator().manual_seed(0), sigma0=0.8 * scale,
                         field_blur=1.6 * scale, astigmatism=1.2 * scale, coma=3.0 * scale, lateral_ca=1.5 * scale)


class TimedBlur(SpaceVaryingBlur):
    """SpaceVaryingBlur that adds the seconds spent in sv_conv and its adjoint to ``seconds``."""

    def __init__(self, padding):
        super().__init__(padding)
        self.seconds = 0.0

    def A(self, x, *, psf_grid):
        start = time.perf_counter()
        out = super().A(x, psf_grid=psf_grid)
        self.seconds += time.perf_counter() - start
        return out

    def A_adjoint(self, y, *, psf_grid):
        start = time.perf_counter()
        out = super().A_adjoint(y, psf_grid=psf_grid)
        self.seconds += time.perf_counter() - start
        return out


def blurred(h, w, op, params, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g)
    with torch.no_grad():
        y = op.A(x, **params)
    return y.add_(SIGMA * torch.randn(y.shape, generator=g))


def test_cg_20mp_lens(benchmark):
    """30 CG iterations on a 20 MP RGB photo, 8x8 grid of 13x13 kernels: time, peak extra memory over the image,
    and the fraction of the time inside sv_conv and its adjoint."""
    benchmark.group = "restore-cg-20MP"
    op = TimedBlur("reflect")
    params = {"psf_grid": lens(13)}
    y = blurred(*MEGAPIXEL_20, op, params)
    image_bytes = y.numel() * y.element_size()
    op.seconds = 0.0
    solve_seconds = 0.0     # over every call, warm-up included, like op.seconds

    def solve():
        nonlocal solve_seconds
        start = time.perf_counter()
        cg_tikhonov(y, op, params, lam=LAM, iters=CG_ITERS, rtol=0.0)
        solve_seconds += time.perf_counter() - start

    # The peak over all calls (solve keeps no result, so no call holds another's buffers): one more call for it would
    # add ~45 s.
    with PeakMemory("cpu") as memory:
        _, total = time_rounds(benchmark, solve)
    benchmark.extra_info.update({
        "iters": CG_ITERS, "seconds": round(total, 2), "sv_conv_fraction": round(op.seconds / solve_seconds, 3),
        "peak_extra_mb": round(memory.peak_bytes / 2**20, 1),
        "peak_extra_over_image": round(memory.peak_bytes / image_bytes, 2), "threads": THREADS})


@pytest.fixture(scope="module")
def denoiser():
    return PriorDenoiser(load_shipped_prior("pixel_tiny"))


@pytest.mark.parametrize("blur", ["motion-fft", "lens-cg", "lens-cg-one-level"])
@pytest.mark.parametrize("solver", ["pnp", "diffpir"])
def test_prior_solver_iteration_1mp(benchmark, denoiser, solver, blur):
    """Seconds per iteration of PnP-HQS / DiffPIR at 1 MP RGB, split into the data step and the denoiser;
    "lens-cg-one-level": PnP without ``local_sigma`` (one noise level per denoiser call), the reference for the
    per-tile level's cost."""
    if blur == "lens-cg-one-level" and solver != "pnp":
        pytest.skip("local_sigma is PnP-HQS's option")
    benchmark.group = "restore-prior-1MP"
    if blur == "motion-fft":
        op, params = Blur(padding="reflect"), {
            "kernel": motion_kernel(1, size=31, generator=torch.Generator().manual_seed(0))["kernel"]}
    else:
        op, params = SpaceVaryingBlur(padding="reflect"), {"psf_grid": lens(13)}
    y = blurred(1024, 1024, op, params)
    iters = 1    # every iteration costs the same: one data step, one denoiser call
    calls = []   # each call's {"data_s": ..., "denoise_s": ...}

    def run():
        calls.append({})
        if solver == "pnp":
            # denoise_last: the one iteration's denoiser runs (by default the last one is skipped)
            pnp_hqs(y, op, params, denoiser, sigma=SIGMA, iters=iters, denoise_last=True, timings=calls[-1],
                    local_sigma=blur != "lens-cg-one-level")
        else:
            diffpir(y, op, params, denoiser, sigma=SIGMA, steps=iters, timings=calls[-1],
                    generator=torch.Generator().manual_seed(0))

    time_rounds(benchmark, run)
    timed = calls[-ROUNDS:]     # the timed rounds (all calls under --benchmark-disable: one)
    benchmark.extra_info.update({
        "iters": iters, "data_s_per_iter": round(statistics.median(c["data_s"] for c in timed) / iters, 3),
        "denoise_s_per_iter": round(statistics.median(c["denoise_s"] for c in timed) / iters, 3),
        "threads": THREADS})


_WHOLE = {}   # the whole-image result, for the tiled case's difference


@pytest.mark.parametrize("mode", ["whole", "tiles-512"])
def test_cg_tiled_vs_whole_4mp(benchmark, mode):
    """CG (30 iterations) on a 2048^2 RGB lens blur, whole or on 512 px tiles: time, peak memory, and the RMS
    difference between the two."""
    benchmark.group = "restore-cg-tiled"
    op, params = SpaceVaryingBlur(padding="reflect"), {"psf_grid": lens(13)}
    y = blurred(2048, 2048, op, params)

    def solve(y_part, p):
        return cg_tikhonov(y_part, op, p, lam=LAM, iters=CG_ITERS, rtol=0.0)

    def run():
        return solve(y, params) if mode == "whole" else restore_tiled(solve, y, op, params, tile=512)

    result, _ = time_rounds(benchmark, run)
    peak_bytes = peak_extra_bytes(run, "cpu")   # one more call: pytest-benchmark holds a round's result into the next
    benchmark.extra_info.update({"peak_extra_mb": round(peak_bytes / 2**20, 1),
                                 "peak_extra_over_image": round(peak_bytes / (y.numel() * 4), 2),
                                 "threads": THREADS})
    if mode == "whole":
        _WHOLE["result"] = result
    else:
        whole = _WHOLE["result"] if "result" in _WHOLE else solve(y, params)
        benchmark.extra_info["rms_difference_to_whole"] = float((result - whole).square().mean().sqrt())
