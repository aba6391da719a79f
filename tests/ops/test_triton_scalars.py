"""Host floats reach Triton kernels bit for bit in float64 (``triton_kernels/scalars.py``)."""

from __future__ import annotations

import math

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from blindfast.triton_kernels.scalars import float_bits, from_bits  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
VALUES = [1 / 3, -2.5, 0.0, -0.0, 1.0, 5e-324, 1e-300, -1e308, math.pi, float("inf"), -float("inf")]


@triton.jit(do_not_specialize=["bits"])
def _store_kernel(out_ptr, bits, ACC: tl.constexpr):
    tl.store(out_ptr, from_bits(bits, ACC))


# -1e308 in float32 is -inf, as torch's cast says; the interpreter's numpy cast warns about it
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_a_float_survives_the_trip_through_its_bits(dtype):
    for value in VALUES:
        out = torch.empty(1, dtype=dtype, device=DEVICE)
        _store_kernel[(1,)](out, float_bits(value), ACC=tl.float64 if dtype == torch.float64 else tl.float32)
        expected = torch.tensor([value], dtype=torch.float64).to(dtype)
        assert out.cpu().view(torch.int64 if dtype == torch.float64 else torch.int32).item() == \
            expected.view(torch.int64 if dtype == torch.float64 else torch.int32).item(), value
    out = torch.empty(1, dtype=torch.float64, device=DEVICE)
    _store_kernel[(1,)](out, float_bits(float("nan")), ACC=tl.float64)
    assert math.isnan(out.item())
