"""Triton kernels of the fused flow / sampler-step / EMA ops against the float64 references.

Without CUDA they run on CPU tensors through the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from blindfast.ops.reference.flow import (  # noqa: E402
    ddim_step_reference,
    flow_interpolate_reference,
    flow_matching_loss_reference,
    power_ema_update_reference,
)
from blindfast.triton_kernels import flow as tk  # noqa: E402
from _autotuner import emulate_autotuner  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Two rows of an odd length (957): a ragged block each under the default config, two under the smallest.
SHAPE = (2, 3, 11, 29)
DTYPES = [torch.float64, torch.float32, torch.float16]


def randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(DEVICE)


def tolerance(dtype):
    return {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 4e-3}[dtype]


def interpolate_grads(x0, x1, t, g):
    """(dx0, dx1, dt) of <flow_interpolate_reference(x0, x1, t), g>, by autograd in the inputs' dtype."""
    inputs = [a.clone().requires_grad_() for a in (x0, x1, t)]
    return torch.autograd.grad(flow_interpolate_reference(*inputs), inputs, g)


def assert_within_plain_torch_error(name, ours, ref64, plain_torch):
    """Each gradient on its own scale (flash-attention's rule): the error within 4x that of plain torch in the same
    dtype on the same inputs, plus 4 roundings of the gradient's largest entry."""
    scale = ref64.abs().max().item()
    ours_err = (ours.double().cpu() - ref64.cpu()).abs().max().item()
    torch_err = (plain_torch.double() - ref64.cpu()).abs().max().item()
    assert ours_err <= 4 * torch_err + 4 * torch.finfo(ours.dtype).eps * scale, (name, ours_err, torch_err, scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_interpolate_and_backward(dtype):
    x0, x1, g = randn(SHAPE, 1), randn(SHAPE, 2), randn(SHAPE, 3)
    t = torch.rand(SHAPE[0], dtype=torch.float64).to(DEVICE)
    tol = tolerance(dtype)
    out = torch.empty(SHAPE, dtype=dtype, device=DEVICE)
    tk.flow_interpolate(x0.to(dtype), x1.to(dtype), t.to(dtype), out)
    torch.testing.assert_close(out.double(), flow_interpolate_reference(x0, x1, t), rtol=tol, atol=tol)

    ref = interpolate_grads(x0, x1, t, g)
    plain_torch = interpolate_grads(*(a.cpu().to(dtype) for a in (x0, x1, t, g)))
    ours = tk.flow_interpolate_backward(g.to(dtype), x0.to(dtype), x1.to(dtype), t.to(dtype), [True, True, True])
    for name, a, b, c in zip(("dx0", "dx1", "dt"), ours, ref, plain_torch):
        assert_within_plain_torch_error(name, a, b, c)
    only_dx1 = tk.flow_interpolate_backward(g, x0, x1, t, [False, True, False])
    assert only_dx1[0].numel() == 0 and only_dx1[2].numel() == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradient(dtype, weighted):
    v, x0, x1 = (randn(SHAPE, s).requires_grad_() for s in (1, 2, 3))
    w = torch.rand(SHAPE[0], dtype=torch.float64).to(DEVICE) if weighted else None
    ref = flow_matching_loss_reference(v, x0, x1, w)
    (ref_grad,) = torch.autograd.grad(ref, v)
    loss, grad = tk.flow_matching_loss(*(a.detach().to(dtype) for a in (v, x0, x1)),
                                       w.to(dtype) if weighted else None, True)
    tol = tolerance(dtype)
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=tol, atol=tol * 1e-3)
    _, no_grad = tk.flow_matching_loss(v.detach(), x0.detach(), x1.detach(), None, False)
    assert no_grad.numel() == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("variant", ["plain", "clip-z-w"])
def test_fused_step(dtype, variant):
    x, e, z, w = (randn(SHAPE, s) for s in (1, 2, 3, 4))
    a, p, q, lo, hi, b, c, s, g = 0.7, 1.3, -0.4, -1.0, 1.0, 0.9, 0.2, 0.3, -0.5
    inner = p * x + q * e
    if variant == "plain":
        ref = a * inner + b * x + c * e
        args = (None, None, [a, p, q, float("-inf"), float("inf"), b, c, s, g], False)
    else:
        ref = a * inner.clamp(lo, hi) + b * x + c * e + s * z + g * w
        args = (z.to(dtype), w.to(dtype), [a, p, q, lo, hi, b, c, s, g], True)
    out = torch.empty(SHAPE, dtype=dtype, device=DEVICE)
    tk.fused_step(x.to(dtype), e.to(dtype), *args, out)
    tol = tolerance(dtype)
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lerp(dtype):
    sizes = [(5, 7), (0,), (300,)]
    ema = [randn(s, i).to(dtype) for i, s in enumerate(sizes)]
    src = [randn(s, 10 + i).to(dtype) for i, s in enumerate(sizes)]
    ref = [e.double() for e in ema]
    tk.lerp_(ema, src, 1.0 - 0.93)
    power_ema_update_reference(ref, [s.double() for s in src], 0.93)
    for a, b in zip(ema, ref):
        torch.testing.assert_close(a.double(), b, rtol=tolerance(dtype), atol=tolerance(dtype))


@pytest.mark.parametrize("config", tk.CONFIGS, ids=lambda c: f"BLOCK{c.kwargs['BLOCK']}-warps{c.num_warps}")
def test_every_config_of_every_kernel(config):
    """Each autotuning candidate, forced, on one float64 case per kernel: the same values as the references (the
    partial sums' layout does not depend on the block)."""
    x0, x1, g, z = randn(SHAPE, 1), randn(SHAPE, 2), randn(SHAPE, 3), randn(SHAPE, 4)
    t = torch.rand(SHAPE[0], dtype=torch.float64).to(DEVICE)
    out = torch.empty_like(x0)
    tk.flow_interpolate(x0, x1, t, out, config=config)
    torch.testing.assert_close(out, flow_interpolate_reference(x0, x1, t), rtol=1e-14, atol=1e-14)

    got = tk.flow_interpolate_backward(g, x0, x1, t, [True, True, True], config=config)
    for a, b in zip(got, interpolate_grads(x0, x1, t, g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)

    v = x0.clone().requires_grad_()
    ref = flow_matching_loss_reference(v, x1, z, t)
    loss, grad = tk.flow_matching_loss(x0, x1, z, t, True, config=config)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, torch.autograd.grad(ref, v)[0], rtol=1e-12, atol=1e-15)

    coefficients = [0.7, 1.3, -0.4, -1.0, 1.0, 0.9, 0.2, 0.3, -0.5]
    a, p, q, lo, hi, b, c, s, w = coefficients
    stepped = x0.clone()
    tk.fused_step(stepped, x1, g, z, coefficients, True, stepped, config=config)   # in place, as the samplers do
    expected = a * (p * x0 + q * x1).clamp(lo, hi) + b * x0 + c * x1 + s * g + w * z
    torch.testing.assert_close(stepped, expected, rtol=1e-14, atol=1e-14)

    ema, ref_ema = [x0.clone(), g[0].clone()], [x0.clone(), g[0].clone()]
    tk.lerp_(ema, [x1, z[0]], 1.0 - 0.93, config=config)
    power_ema_update_reference(ref_ema, [x1, z[0]], 0.93)
    for e, r in zip(ema, ref_ema):
        torch.testing.assert_close(e, r, rtol=1e-14, atol=1e-14)


@pytest.mark.skipif(DEVICE != "cpu", reason="emulates the autotuner of the interpreter")
@pytest.mark.parametrize("chosen", range(len(tk.CONFIGS)))
def test_the_autotuners_timing_runs_change_no_result(monkeypatch, chosen):
    """Every config timed on the launch's own buffers, then one chosen: the in-place kernels (the EMA, a step or an
    interpolation written over an input) name their output in restore_value, and the partial sums' layout is the
    same for every block, so the results are the references' (see tests/ops/_autotuner.py)."""
    emulate_autotuner(monkeypatch, chosen)
    x0, x1, g, z = randn(SHAPE, 1), randn(SHAPE, 2), randn(SHAPE, 3), randn(SHAPE, 4)
    t = torch.rand(SHAPE[0], dtype=torch.float64)
    out = x0.clone()
    tk.flow_interpolate(out, x1, t, out)
    torch.testing.assert_close(out, flow_interpolate_reference(x0, x1, t), rtol=1e-14, atol=1e-14)
    dt = tk.flow_interpolate_backward(g, x0, x1, t, [False, False, True])[2]
    torch.testing.assert_close(dt, interpolate_grads(x0, x1, t, g)[2], rtol=1e-12, atol=1e-12)
    loss, _ = tk.flow_matching_loss(x0, x1, z, t, False)
    torch.testing.assert_close(loss, flow_matching_loss_reference(x0, x1, z, t), rtol=1e-12, atol=1e-12)
    coefficients = [0.7, 1.3, -0.4, -1.0, 1.0, 0.9, 0.2, 0.3, -0.5]
    a, p, q, lo, hi, b, c, s, w = coefficients
    stepped = x0.clone()
    tk.fused_step(stepped, x1, g, z, coefficients, True, stepped)
    expected = a * (p * x0 + q * x1).clamp(lo, hi) + b * x0 + c * x1 + s * g + w * z
    torch.testing.assert_close(stepped, expected, rtol=1e-14, atol=1e-14)
    ema, ref_ema = [x0.clone()], [x0.clone()]
    tk.lerp_(ema, [x1], 1.0 - 0.93)
    power_ema_update_reference(ref_ema, [x1], 0.93)
    torch.testing.assert_close(ema[0], ref_ema[0], rtol=1e-14, atol=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the ops' CUDA path needs a GPU")
def test_ops_dispatch_to_triton_on_cuda():
    from blindfast.ops.flow import flow_interpolate, flow_matching_loss
    from blindfast.ops.sampler_steps import ddim_step

    x0, x1 = randn(SHAPE, 1).float(), randn(SHAPE, 2).float()
    torch.testing.assert_close(flow_interpolate(x0, x1, 0.3), flow_interpolate_reference(x0, x1, 0.3))
    torch.testing.assert_close(flow_matching_loss(x0, x1, x0), flow_matching_loss_reference(x0, x1, x0))
    torch.testing.assert_close(ddim_step(x0, x1, 0.3, 0.5), ddim_step_reference(x0, x1, 0.3, 0.5))
