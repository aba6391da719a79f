"""Fused flow-matching / sampler-step / EMA ops vs the unfused torch expressions, the same expressions under
torch.compile ("torch_compile": torch's own fusion) and torch's fused lerp.

Memory-bound: each entry reports GB/s of the minimum traffic (inputs read once, outputs written once) and its
fraction of this run's copy bandwidth (benchmarks/conftest.py `machine`). float32 rows everywhere, bfloat16 rows on
CUDA (conftest.py DTYPES).
Run: python -m pytest benchmarks/bench_flow.py --benchmark-columns=median,rounds --benchmark-group-by=group
"""

import pytest
import torch
from conftest import DTYPES, compiled, compiled_baseline, record_bandwidth

from blindfast.ops.ema import power_ema_update
from blindfast.ops.flow import flow_interpolate, flow_matching_loss
from blindfast.ops.reference.flow import (
    ddim_step_reference,
    flow_interpolate_reference,
    flow_matching_loss_reference,
)
from blindfast.ops.sampler_steps import ddim_step

# 3 MB, 25 MB and 100 MB float32 tensors (a CPU training batch, a 256^2 batch, a 1024^2 batch).
SHAPES = [pytest.param((64, 3, 64, 64), marks=pytest.mark.quick), (8, 3, 256, 256), (8, 3, 1024, 1024)]
SHAPE_IDS = ["64x3x64x64", "8x3x256x256", "8x3x1024x1024"]
# Arithmetic per element, for the roofline: interpolate x0 + t (x1 - x0); the loss's forward and backward
# (v - x1 + x0, its square summed, the gradient's scale); the guided DDIM step (two affine maps, the clip, the noise
# and guidance terms); the EMA's e + w (s - e).
FLOPS_PER_ELEMENT = {"interpolate": 3, "loss": 6, "ddim": 12, "ema": 3}
# EMA over a model-like list of tensors: 5M (the quick case) or 50M parameters in 200 tensors, and 500M in 4 tensors.
EMA_CASES = {"5M-in-200": [25_000] * 200, "50M-in-200": [250_000] * 200, "500M-in-4": [125_000_000] * 4}


def tensors(shape, count, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=g).to(device, dtype) for _ in range(count)]


def unfused_ema(ema, weights, beta):
    """The EMA update as a training loop writes it: two in-place passes per tensor."""
    for e, w in zip(ema, weights):
        e.mul_(beta).add_(w, alpha=1 - beta)


# "_out" variants write into a preallocated tensor: a fresh output's pages fault in on first write, which for the
# large tensors costs more than the arithmetic (the allocation is the caller's to avoid, e.g. by reusing a buffer).
@pytest.mark.parametrize("impl", ["blindfast", "blindfast_out", "torch_lerp", "torch_lerp_out", "reference",
                                  compiled_baseline()])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_flow_interpolate(benchmark, machine, device, dtype, shape, impl):
    x0, x1, out = tensors(shape, 3, device, dtype)
    t = torch.rand(shape[0]).to(device, dtype)
    reference = compiled(flow_interpolate_reference) if impl == "torch_compile" else flow_interpolate_reference
    fn = {"blindfast": lambda: flow_interpolate(x0, x1, t),
          "blindfast_out": lambda: flow_interpolate(x0, x1, t, out=out),
          "torch_lerp": lambda: torch.lerp(x0, x1, t.view(-1, 1, 1, 1)),
          "torch_lerp_out": lambda: torch.lerp(x0, x1, t.view(-1, 1, 1, 1), out=out),
          "reference": lambda: reference(x0, x1, t),
          "torch_compile": lambda: reference(x0, x1, t)}[impl]
    benchmark.group = f"flow_interpolate-{'x'.join(map(str, shape))}"
    record_bandwidth(benchmark, fn, device, machine, 3 * x0.nbytes, flops=FLOPS_PER_ELEMENT["interpolate"] * x0.numel())


@pytest.mark.parametrize("impl", ["blindfast", "reference", compiled_baseline()])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_flow_matching_loss_forward_backward(benchmark, machine, device, dtype, shape, impl):
    v, x0, x1 = tensors(shape, 3, device, dtype)
    v.requires_grad_(True)
    loss_fn = {"blindfast": flow_matching_loss, "reference": flow_matching_loss_reference,
               "torch_compile": compiled(flow_matching_loss_reference) if impl == "torch_compile" else None}[impl]

    def step():
        v.grad = None
        loss_fn(v, x0, x1).backward()

    benchmark.group = f"flow_matching_loss-{'x'.join(map(str, shape))}"
    # Minimum traffic: v, x0, x1 read, v.grad written.
    record_bandwidth(benchmark, step, device, machine, 4 * v.nbytes, flops=FLOPS_PER_ELEMENT["loss"] * v.numel())


@pytest.mark.parametrize("impl", ["blindfast", "blindfast_out", "reference", compiled_baseline()])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ddim_step_guided(benchmark, machine, device, dtype, shape, impl):
    """The fullest step: DDIM, eta > 0 (noise), clipped x0_hat, a guidance gradient: 4 inputs, 1 output."""
    x, eps, z, grad, out = tensors(shape, 5, device, dtype)
    step = dict(eta=0.5, noise=z, guidance=grad, guidance_scale=0.1, clip_x0=(-1.0, 1.0))
    reference = compiled(ddim_step_reference) if impl == "torch_compile" else ddim_step_reference
    fn = {"blindfast": lambda: ddim_step(x, eps, 0.4, 0.5, **step),
          "blindfast_out": lambda: ddim_step(x, eps, 0.4, 0.5, out=out, **step),
          "reference": lambda: reference(x, eps, 0.4, 0.5, 0.5, z, grad, 0.1, (-1.0, 1.0)),
          "torch_compile": lambda: reference(x, eps, 0.4, 0.5, 0.5, z, grad, 0.1, (-1.0, 1.0))}[impl]
    benchmark.group = f"ddim_step-{'x'.join(map(str, shape))}"
    record_bandwidth(benchmark, fn, device, machine, 5 * x.nbytes, flops=FLOPS_PER_ELEMENT["ddim"] * x.numel())


@pytest.mark.parametrize("impl", ["blindfast", "foreach_lerp", "unfused", compiled_baseline()])
@pytest.mark.parametrize("case", [pytest.param("5M-in-200", marks=pytest.mark.quick), "50M-in-200", "500M-in-4"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_power_ema_update(benchmark, machine, device, dtype, case, impl):
    sizes = EMA_CASES[case]
    ema = [torch.zeros(n, device=device, dtype=dtype) for n in sizes]
    weights = [torch.ones(n, device=device, dtype=dtype) for n in sizes]
    beta = 0.999
    update = compiled(unfused_ema) if impl == "torch_compile" else unfused_ema
    fn = {"blindfast": lambda: power_ema_update(ema, weights, beta),
          "foreach_lerp": lambda: torch._foreach_lerp_(ema, weights, 1 - beta),
          "unfused": lambda: update(ema, weights, beta),
          "torch_compile": lambda: update(ema, weights, beta)}[impl]
    benchmark.group = f"power_ema_update-{case}"
    # ema read and written, weights read.
    record_bandwidth(benchmark, fn, device, machine, 3 * ema[0].element_size() * sum(sizes),
                     flops=FLOPS_PER_ELEMENT["ema"] * sum(sizes))
