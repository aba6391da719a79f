"""The runtime-dispatched build's levels against a -march=native build of the same sources, op by op, same inputs.

The native module is built here (cmake, into build-native/) on first use. Goal: the level dispatch picks on this
machine within 5% of native.
Run: python -m pytest benchmarks/bench_cpu_levels.py --benchmark-columns=median,rounds --benchmark-group-by=group
(a 5% difference wants more than the default rounds: BLINDFAST_BENCH_ROUNDS=7 gives every build 7)
"""

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import record, record_bandwidth

from blindfast.ops import _backend, flow_matching_loss, hqs_kernel_update, info_nce, patchify, sv_conv

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def native_module_path() -> str:
    build = ROOT / "build-native"
    pybind11_dir = subprocess.check_output([sys.executable, "-m", "pybind11", "--cmakedir"], text=True).strip()
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                    "-DBLINDFAST_NATIVE=ON", f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11_dir}"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build)], check=True, stdout=subprocess.DEVNULL)
    return str(next(build.glob("_C_native*.so")))


@pytest.fixture
def use_build(monkeypatch):
    """Routes every op to one build: "native" or a dispatch level."""
    def switch(build: str):
        if build == "native":
            monkeypatch.setenv("BLINDFAST_C_PATH", native_module_path())
        else:
            if build not in _backend.cpu().supported_levels():
                pytest.skip(f"this CPU does not run {build}")
            monkeypatch.delenv("BLINDFAST_C_PATH", raising=False)
            monkeypatch.setenv(_backend.LEVEL_VARIABLE, build)
        _backend.cpu.cache_clear()
        assert _backend.cpu().build_info()["level"] == build
    yield switch
    monkeypatch.undo()
    _backend.cpu.cache_clear()


BUILDS = ["native", "avx512", "avx2", "baseline"]


def _inputs(*shapes):
    g = torch.Generator().manual_seed(0)
    return [torch.rand(*s, generator=g) for s in shapes]


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("op", ["forward", "grad_psf"])
def test_sv_conv_levels(benchmark, machine, use_build, build, op):
    """1024^2 RGB, an 8x8 grid of 13x13 kernels, reflect padding."""
    use_build(build)
    x, psf = _inputs((1, 3, 1024, 1024), (1, 3, 8, 8, 13, 13))
    weights = torch.rand_like(x)
    benchmark.group = f"levels-sv_conv-{op}-1024x1024-k13"
    if op == "forward":
        fn = lambda: sv_conv(x, psf, padding="reflect")  # noqa: E731
    else:
        def fn():
            p = psf.detach().requires_grad_(True)
            return torch.autograd.grad((sv_conv(x, p, padding="reflect") * weights).sum(), p)[0]
    flops = 8 * 13 * 13 * 3 * 1024 * 1024 * (2 if op == "grad_psf" else 1)
    record(benchmark, fn, "cpu", machine, flops, x.numel() * 4)


@pytest.mark.parametrize("build", BUILDS)
def test_info_nce_levels(benchmark, machine, use_build, build):
    """MoCo's loss, N = 4096 queries, K = 4096 queue keys, D = 128, forward + backward."""
    use_build(build)
    q, k_pos, queue = (torch.nn.functional.normalize(t, dim=1) for t in _inputs((4096, 128), (4096, 128),
                                                                                 (4096, 128)))
    benchmark.group = "levels-info_nce-N4096-K4096-D128"

    def fn():
        qg = q.detach().requires_grad_(True)
        return torch.autograd.grad(info_nce(qg, k_pos, queue, 0.07), qg)[0]
    record(benchmark, fn, "cpu", machine, 4 * 2 * 4096 * 4097 * 128, q.numel() * 4)


@pytest.mark.parametrize("build", BUILDS)
def test_hqs_levels(benchmark, machine, use_build, build):
    """The kernel M-step, 512^2 RGB, 33x33 kernel, 20 iterations."""
    use_build(build)
    x_hat, y, kernel = _inputs((1, 3, 512, 512), (3, 512, 512), (33, 33))
    benchmark.group = "levels-hqs-512x512-k33"
    fn = lambda: hqs_kernel_update(x_hat, y, kernel / kernel.sum(), sigma=0.05, delta=5e6, iters=20)  # noqa: E731
    # the per-iteration step is a (kh kw)^2 matrix-vector product: 2 (33^2)^2 FLOPs, 20 times
    record(benchmark, fn, "cpu", machine, 20 * 2 * 33**4, x_hat.numel() * 4)


@pytest.mark.parametrize("build", BUILDS)
def test_flow_loss_levels(benchmark, machine, use_build, build):
    """The flow-matching loss (and its gradient, written in the forward pass) over 8 x 3 x 512^2."""
    use_build(build)
    v, x0, x1 = _inputs(*[(8, 3, 512, 512)] * 3)
    benchmark.group = "levels-flow_matching_loss-8x3x512x512"
    record_bandwidth(benchmark, lambda: flow_matching_loss(v, x0, x1), "cpu", machine, 4 * v.numel() * 4)


@pytest.mark.parametrize("build", BUILDS)
def test_patchify_levels(benchmark, machine, use_build, build):
    """64x64 patches at stride 32 of a 4 x 3 x 512^2 batch."""
    use_build(build)
    (x,) = _inputs((4, 3, 512, 512))
    benchmark.group = "levels-patchify-4x3x512x512-p64-s32"
    out_numel = 4 * 15 * 15 * 3 * 64 * 64
    record_bandwidth(benchmark, lambda: patchify(x, 64, 32), "cpu", machine, (x.numel() + out_numel) * 4)

