"""The Triton wrappers' host code, without running a kernel: every launch grid is 1-D and within CUDA's limits for
10^8-element inputs, and no wrapper synchronises the host with the device (no device tensor built from host values,
no read-back).

Each kernel is replaced by a recorder and the inputs live on the meta device (no memory): a read-back (``.item()``,
``bool``) of a meta tensor raises, and ``torch.tensor`` / ``torch.as_tensor`` (a host-to-device copy) are made to
raise. Where CUDA exists, the kernels also run under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from triton.runtime.jit import KernelInterface  # noqa: E402  (compiled and interpreted kernels alike)

from blindfast.ops.patchify import _per_channel  # noqa: E402
from blindfast.triton_kernels import flow, hqs, info_nce, patchify, sv_conv  # noqa: E402
from blindfast.triton_kernels.tuning import TunedKernel  # noqa: E402

CUDA_X_LIMIT = 2**31 - 1   # programs on a grid's first axis
CUDA_YZ_LIMIT = 65535      # ... and on its second and third
BIG = (1, 3, 5792, 5792)   # 1.006e8 elements: one 33 MP RGB item


class _Recorder:
    """Stands in for a ``@triton.jit`` or ``@tuned`` kernel: ``kernel[grid](*args, **kwargs)`` records the grid and
    runs nothing. A tuned kernel's grid is a callable of the meta-parameters: it is recorded once per config (each
    could be the one the autotuner picks)."""

    def __init__(self, name: str, launches: list, configs=None):
        self.name, self.launches, self.configs = name, launches, configs

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            if self.configs is None:
                self.launches.append((self.name, grid, args))
            for config in self.configs or ():
                self.launches.append((self.name, grid({**kwargs, **config.kwargs}), args))
        return launch


def _no_host_copies(*args, **kwargs):
    raise AssertionError("a Triton wrapper built a device tensor from host values (a host-to-device copy, which "
                         "synchronises): pass scalars as kernel arguments")


@pytest.fixture
def launches(monkeypatch):
    """The launches of every kernel of the five Triton modules, recorded instead of run; host copies raise."""
    recorded = []
    for module in (flow, hqs, info_nce, patchify, sv_conv):
        for name, value in vars(module).items():
            if isinstance(value, KernelInterface) and name.endswith("_kernel"):
                monkeypatch.setattr(module, name, _Recorder(name, recorded))
            elif isinstance(value, TunedKernel):
                monkeypatch.setattr(module, name, _Recorder(name, recorded, value.configs))
    monkeypatch.setattr(torch, "tensor", _no_host_copies)
    monkeypatch.setattr(torch, "as_tensor", _no_host_copies)
    return recorded


def _meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


def _wrapper_calls():
    """(name, call) for each wrapper at a 10^8-element size."""
    x, t = _meta(*BIG), _meta(BIG[0])
    grid = _meta(1, 3, 8, 8, 13, 13)
    spec, y_spec = _meta(1, 3, 5792, 2897, 2), _meta(3, 5792, 2897, 2)
    q, queue = _meta(2**20, 128), _meta(65536, 128)
    return [
        ("flow_interpolate", lambda: flow.flow_interpolate(x, x, t, x)),
        ("flow_interpolate_backward", lambda: flow.flow_interpolate_backward(x, x, x, t, (True, True, True))),
        ("flow_matching_loss", lambda: flow.flow_matching_loss(x, x, x, t, True)),
        ("fused_step", lambda: flow.fused_step(x, x, x, x, [1.0] * 9, True, x)),
        ("lerp_", lambda: flow.lerp_([x, x], [x, x], 0.01)),
        ("info_nce", lambda: info_nce.info_nce(q, q, queue, 0.07, True)),
        ("hqs_combine", lambda: hqs.hqs_combine(spec, y_spec, 1e-3)),
        ("patchify", lambda: patchify.patchify(x, 64, 8, _meta(3), _meta(3))),
        ("overlap_add", lambda: patchify.overlap_add(_meta(10**6, 3, 16, 16), 4000, 4000, 4, _meta(3))),
        ("sv_conv_forward", lambda: sv_conv.sv_conv_forward(x, grid, 3)),
        ("sv_conv_adjoint", lambda: sv_conv.sv_conv_adjoint(x, grid, 3)),
        ("sv_conv_grad_psf", lambda: sv_conv.sv_conv_grad_psf(x, x, grid, 3)),
    ]


@pytest.mark.parametrize("name, call", _wrapper_calls(), ids=[name for name, _ in _wrapper_calls()])
def test_launch_grids_are_one_dimensional_and_within_cuda_limits_without_host_syncs(launches, name, call):
    call()
    assert launches, f"{name} launched nothing"
    for kernel, grid, _ in launches:
        assert len(grid) == 1, f"{name}: {kernel} launched a {len(grid)}-d grid {grid}; expected 1-d"
        assert 1 <= grid[0] <= CUDA_X_LIMIT, f"{name}: {kernel}'s grid {grid} is past CUDA's {CUDA_X_LIMIT}"
        assert all(axis <= CUDA_YZ_LIMIT for axis in grid[1:])


def test_the_old_two_dimensional_flow_grid_would_have_failed_at_this_size():
    """The check above catches what it is for: flow.py's grid before the fix, (B, cdiv(n, 1024))."""
    import triton

    old_grid = (BIG[0], triton.cdiv(torch.Size(BIG).numel() // BIG[0], 1024))
    assert old_grid[1] > CUDA_YZ_LIMIT


def test_info_nce_fills_a_gpu_at_mocos_shape(launches):
    """MoCo's N = 256 rows, K = 65536 keys: 4 row blocks of 64; the queue splits give every one of an H100's 132
    multiprocessors programs (before: 4 programs, each sweeping the whole queue)."""
    info_nce.info_nce(_meta(256, 128), _meta(256, 128), _meta(65536, 128), 0.07, True, target_programs=4 * 132)
    assert {kernel for kernel, _, _ in launches} == {"_lse_partials_kernel", "_dq_partials_kernel"}
    assert all(grid[0] >= 4 * 132 for _, grid, _ in launches)


def test_patchify_constants_are_copied_to_the_device_once():
    image = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    first = _per_channel("mean", [0.5, 0.4, 0.3], image, 3, False)
    assert _per_channel("mean", (0.5, 0.4, 0.3), image, 3, False) is first
    torch.testing.assert_close(first, torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64))
    assert _per_channel("mean", [0.5, 0.4, 0.3], image.float(), 3, False).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="sync debug mode needs CUDA")
def test_flow_and_sampler_kernels_run_without_a_host_sync():
    x = torch.randn(2, 3, 64, 64, device="cuda")
    t = torch.rand(2, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        flow.flow_interpolate(x, x, t, torch.empty_like(x))
        flow.flow_matching_loss(x, x, x, t, True)
        flow.fused_step(x, x, x, x, [0.5] * 9, True, torch.empty_like(x))
        flow.lerp_([x.clone()], [x], 0.01)
        info_nce.info_nce(x.reshape(-1, 128)[:64], x.reshape(-1, 128)[64:128], x.reshape(-1, 128), 0.07, True)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="sync debug mode needs CUDA")
@pytest.mark.parametrize("method", ["euler", "heun", "ddim"])
def test_sampler_steps_run_without_a_host_sync(method):
    """Whole sampler steps with the shipped prior: the time grid is read on the host once, before the steps."""
    from blindfast.models import load_shipped_prior
    from blindfast.sampling import sample

    prior = load_shipped_prior("pixel_tiny", device="cuda")
    x = torch.randn(1, 3, 32, 32, device="cuda")
    sample(prior, x.shape, method=method, steps=1, x_init=x)     # warm-up: lazy initialisation may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sample(prior, x.shape, method=method, steps=3, x_init=x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
