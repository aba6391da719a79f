"""``triton_kernels/tuning.py``: a tuned kernel launches like a plain one; each config computes the same result."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from blindfast.triton_kernels.tuning import INTERPRETED, TunedKernel, size_class, tuned  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CONFIGS = [triton.Config({"BLOCK": 64}, num_warps=4), triton.Config({"BLOCK": 256}, num_warps=8)]


@tuned(CONFIGS, key=["n"])
@triton.jit
def _scale_kernel(x_ptr, y_ptr, n, factor, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offsets, tl.load(x_ptr + offsets, mask=offsets < n) * factor, mask=offsets < n)


def _grid(n):
    return lambda meta: (triton.cdiv(n, meta["BLOCK"]),)


def test_a_tuned_kernel_launches_without_its_meta_parameters():
    x = torch.randn(1000, device=DEVICE)
    y = torch.empty_like(x)
    _scale_kernel[_grid(x.numel())](x, y, x.numel(), 3.0)
    torch.testing.assert_close(y, 3 * x, rtol=0, atol=0)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: str(c.kwargs))
def test_every_config_gives_the_same_result(config):
    x = torch.randn(777, device=DEVICE)
    y = torch.full_like(x, float("nan"))
    _scale_kernel[_grid(x.numel())](x, y, x.numel(), -0.5, config=config)
    torch.testing.assert_close(y, -0.5 * x, rtol=0, atol=0)


@pytest.mark.skipif(not INTERPRETED, reason="the interpreter's choice")
def test_the_interpreter_runs_the_first_config(monkeypatch):
    grids = []
    original = _scale_kernel.fn.__class__.__getitem__

    def record(fn, grid):
        grids.append(grid)
        return original(fn, grid)

    monkeypatch.setattr(_scale_kernel.fn.__class__, "__getitem__", record)
    x = torch.randn(1000)
    _scale_kernel[_grid(1000)](x, torch.empty_like(x), 1000, 1.0)
    assert grids == [(triton.cdiv(1000, 64),)]


def test_a_tuned_kernel_needs_a_config():
    with pytest.raises(ValueError, match="at least one triton.Config"):
        TunedKernel(_scale_kernel.fn, [], key=["n"])


def test_size_class_is_one_key_per_power_of_two_range():
    """The element-wise kernels' tuning key: sizes in [2^(c-1), 2^c) share class c (an EMA over 200 sizes of one
    range tunes once)."""
    assert [size_class(n) for n in (1, 2, 3, 4, 1023, 1024, 25_000, 32_767, 32_768)] == [1, 2, 2, 3, 10, 11, 15, 15, 16]
    assert size_class(2**40 + 5) == 41
