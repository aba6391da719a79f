"""Triton (CUDA) kernels of the fused flow-matching, sampler-step and EMA ops (see ``blindfast/ops/flow.py``,
``sampler_steps.py``, ``ema.py`` for the semantics and ``blindfast/ops/reference/flow.py`` for the ground truth).

All element-wise and memory-bound: 1-D blocks over the elements, float32 arithmetic for float16 / bfloat16 / float32
(float64 stays float64). Per-batch scalars (t, weight) are indexed by the program's row; reductions write one partial
sum per program, summed in a fixed order by torch (deterministic). Every launch grid is 1-D (CUDA caps the second
and third axes at 65535 programs: one 24 MP RGB item is 70 000 blocks of 1024) and offsets are int64; host scalars
travel as kernel arguments (:mod:`.scalars`), never as device tensors built per call.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .scalars import float_bits, from_bits

__all__ = ["flow_interpolate", "flow_interpolate_backward", "flow_matching_loss", "fused_step", "lerp_"]

BLOCK = 1024


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _acc(x: torch.Tensor):
    """The Triton accumulation type for x's dtype."""
    return tl.float64 if x.dtype == torch.float64 else tl.float32


@triton.jit
def _row_and_block(n_blocks):
    """(row, block) of this program in a 1-D grid of rows x n_blocks programs, as int64."""
    pid = tl.program_id(0).to(tl.int64)
    return pid // n_blocks, pid % n_blocks


@triton.jit
def _interpolate_kernel(x0_ptr, x1_ptr, t_ptr, out_ptr, n, n_blocks, ACC: tl.constexpr, BLOCK: tl.constexpr):
    row, block = _row_and_block(n_blocks)
    offs = block * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    base = row * n
    t = tl.load(t_ptr + row).to(ACC)
    x0 = tl.load(x0_ptr + base + offs, mask=mask).to(ACC)
    x1 = tl.load(x1_ptr + base + offs, mask=mask).to(ACC)
    out = x0 + t * (x1 - x0)
    tl.store(out_ptr + base + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _interpolate_backward_kernel(g_ptr, x0_ptr, x1_ptr, t_ptr, dx0_ptr, dx1_ptr, dt_partial_ptr, n, n_blocks,
                                 WANT_DX0: tl.constexpr, WANT_DX1: tl.constexpr, WANT_DT: tl.constexpr,
                                 ACC: tl.constexpr, BLOCK: tl.constexpr):
    row, block = _row_and_block(n_blocks)
    offs = block * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    base = row * n
    t = tl.load(t_ptr + row).to(ACC)
    g = tl.load(g_ptr + base + offs, mask=mask, other=0.0).to(ACC)
    if WANT_DX0:
        tl.store(dx0_ptr + base + offs, ((1 - t) * g).to(dx0_ptr.dtype.element_ty), mask=mask)
    if WANT_DX1:
        tl.store(dx1_ptr + base + offs, (t * g).to(dx1_ptr.dtype.element_ty), mask=mask)
    if WANT_DT:
        x0 = tl.load(x0_ptr + base + offs, mask=mask, other=0.0).to(ACC)
        x1 = tl.load(x1_ptr + base + offs, mask=mask, other=0.0).to(ACC)
        tl.store(dt_partial_ptr + row * n_blocks + block, tl.sum(g * (x1 - x0), axis=0))


@triton.jit(do_not_specialize=["grad_scale_bits"])
def _loss_kernel(v_ptr, x0_ptr, x1_ptr, w_ptr, grad_ptr, partial_ptr, n, n_blocks, grad_scale_bits,
                 HAS_W: tl.constexpr, WANT_GRAD: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    row, block = _row_and_block(n_blocks)
    offs = block * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    base = row * n
    v = tl.load(v_ptr + base + offs, mask=mask, other=0.0).to(ACC)
    x0 = tl.load(x0_ptr + base + offs, mask=mask, other=0.0).to(ACC)
    x1 = tl.load(x1_ptr + base + offs, mask=mask, other=0.0).to(ACC)
    diff = v - x1 + x0
    w = tl.full((), 1.0, ACC)
    if HAS_W:
        w = tl.load(w_ptr + row).to(ACC)
    if WANT_GRAD:
        grad_scale = from_bits(grad_scale_bits, ACC)
        tl.store(grad_ptr + base + offs, (grad_scale * w * diff).to(grad_ptr.dtype.element_ty), mask=mask)
    tl.store(partial_ptr + row * n_blocks + block, w * tl.sum(diff * diff, axis=0))


@triton.jit(do_not_specialize=["a", "p", "q", "lo", "hi", "b", "c", "s", "g"])
def _step_kernel(x_ptr, e_ptr, z_ptr, w_ptr, out_ptr, n, a, p, q, lo, hi, b, c, s, g,
                 HAS_Z: tl.constexpr, HAS_W: tl.constexpr, CLIP: tl.constexpr, ACC: tl.constexpr,
                 BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask).to(ACC)
    e = tl.load(e_ptr + offs, mask=mask).to(ACC)
    inner = from_bits(p, ACC) * x + from_bits(q, ACC) * e
    if CLIP:
        inner = tl.minimum(tl.maximum(inner, from_bits(lo, ACC)), from_bits(hi, ACC))
    out = from_bits(a, ACC) * inner + from_bits(b, ACC) * x + from_bits(c, ACC) * e
    if HAS_Z:
        out += from_bits(s, ACC) * tl.load(z_ptr + offs, mask=mask).to(ACC)
    if HAS_W:
        out += from_bits(g, ACC) * tl.load(w_ptr + offs, mask=mask).to(ACC)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["weight_bits"])
def _lerp_kernel(ema_ptr, src_ptr, n, weight_bits, ACC: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    ema = tl.load(ema_ptr + offs, mask=mask).to(ACC)
    src = tl.load(src_ptr + offs, mask=mask).to(ACC)
    weight = from_bits(weight_bits, ACC)
    tl.store(ema_ptr + offs, (ema + weight * (src - ema)).to(ema_ptr.dtype.element_ty), mask=mask)


def _rows(x: torch.Tensor) -> tuple[int, int]:
    return x.shape[0], x.numel() // max(x.shape[0], 1)


def flow_interpolate(x0, x1, t, out, block: int = BLOCK):
    """out = x0 + t (x1 - x0) for contiguous (B, ...) x0, x1, out (out may be x0 or x1) and t (B,)."""
    B, n = _rows(x0)
    n_blocks = triton.cdiv(n, block)
    if out.numel():
        _interpolate_kernel[(B * n_blocks,)](x0, x1, t, out, n, n_blocks, ACC=_acc(x0), BLOCK=block)


def flow_interpolate_backward(grad, x0, x1, t, wanted, block: int = BLOCK):
    """(dx0, dx1, dt) for grad (B, ...); outputs not ``wanted`` are empty tensors."""
    B, n = _rows(x0)
    n_blocks = triton.cdiv(n, block)
    dx0 = torch.empty_like(grad) if wanted[0] else grad.new_empty(0)
    dx1 = torch.empty_like(grad) if wanted[1] else grad.new_empty(0)
    partial = torch.zeros(B, n_blocks, dtype=_acc_dtype(grad), device=grad.device)
    if grad.numel():
        _interpolate_backward_kernel[(B * n_blocks,)](grad, x0, x1, t, dx0, dx1, partial, n, n_blocks,
                                                      WANT_DX0=wanted[0], WANT_DX1=wanted[1], WANT_DT=wanted[2],
                                                      ACC=_acc(grad), BLOCK=block)
    dt = partial.sum(dim=1).to(t.dtype) if wanted[2] else grad.new_empty(0)
    return dx0, dx1, dt


def flow_matching_loss(v, x0, x1, weight, compute_grad, block: int = BLOCK):
    """(loss, grad_v) of sum_b w_b sum (v - x1 + x0)^2 / numel; grad_v empty unless compute_grad."""
    B, n = _rows(v)
    n_blocks = triton.cdiv(n, block)
    grad = torch.empty_like(v) if compute_grad else v.new_empty(0)
    partial = torch.zeros(B, n_blocks, dtype=_acc_dtype(v), device=v.device)
    if v.numel():
        _loss_kernel[(B * n_blocks,)](v, x0, x1, weight if weight is not None else v, grad, partial, n, n_blocks,
                                      float_bits(2.0 / v.numel()), HAS_W=weight is not None,
                                      WANT_GRAD=compute_grad, ACC=_acc(v), BLOCK=block)
    return (partial.sum() / max(v.numel(), 1)).to(v.dtype), grad


def fused_step(x, e, z, w, coefficients, clip, out, block: int = BLOCK):
    """out = a clamp(p x + q e, lo, hi) + b x + c e + s z + g w for contiguous tensors of one shape (out may be x)."""
    n = x.numel()
    if n:
        _step_kernel[(triton.cdiv(n, block),)](x, e, z if z is not None else x, w if w is not None else x, out, n,
                                               *map(float_bits, coefficients), HAS_Z=z is not None,
                                               HAS_W=w is not None, CLIP=clip, ACC=_acc(x), BLOCK=block)


def lerp_(ema, tensors, weight, block: int = BLOCK):
    """In place ema[k] += weight (tensors[k] - ema[k]), one launch per tensor."""
    weight_bits = float_bits(weight)
    for e, t in zip(ema, tensors):
        if e.numel():
            _lerp_kernel[(triton.cdiv(e.numel(), block),)](e, t, e.numel(), weight_bits, ACC=_acc(e), BLOCK=block)
