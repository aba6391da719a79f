"""Triton (CUDA) kernels of the fused flow-matching, sampler-step and EMA ops (see ``blindfast/ops/flow.py``,
``sampler_steps.py``, ``ema.py`` for the semantics and ``blindfast/ops/reference/flow.py`` for the ground truth).

All element-wise and memory-bound: 1-D blocks over the elements, float32 arithmetic for float16 / bfloat16 / float32
(float64 stays float64). Per-batch scalars (t, weight) are indexed by the program's row. Every launch grid is 1-D
(CUDA caps the second and third axes at 65535 programs: one 24 MP RGB item is 70 000 blocks of 1024) and offsets are
int64; host scalars travel as kernel arguments (:mod:`.scalars`), never as device tensors built per call.

Block size and warps are autotuned (:mod:`.tuning`, :data:`CONFIGS`), keyed on the element count's power-of-two
class; the launch helpers take ``config=`` to force one. Reductions write one partial sum per PARTIAL elements,
whatever the block (a block of BLOCK elements writes BLOCK // PARTIAL of them), so the partial buffer's layout, and
the fixed order in which torch adds it up, are the same under every config (deterministic, and no partial of
another config's timing run is left behind). Kernels that write in place (``lerp_``; ``out`` that is an input)
name that buffer in ``restore_value``: the autotuner's timing runs would otherwise apply the update many times.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .scalars import float_bits, from_bits
from .tuning import size_class, tuned

__all__ = ["CONFIGS", "PARTIAL", "flow_interpolate", "flow_interpolate_backward", "flow_matching_loss",
           "fused_step", "lerp_"]

# Elements per program x warps, plausible for a memory-bound kernel on sm_90 (4-16 elements per thread; not timed
# on a GPU yet). The first one runs under the interpreter.
CONFIGS = [
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=8),
    triton.Config({"BLOCK": 4096}, num_warps=8),
    triton.Config({"BLOCK": 512}, num_warps=4),
]
PARTIAL = 256  # elements per partial sum; every config's BLOCK is a multiple of it


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _acc(x: torch.Tensor):
    """The Triton accumulation type for x's dtype."""
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def _row_grid(B: int, n: int):
    """B rows of n elements, cdiv(n, BLOCK) programs each, on one axis."""
    return lambda meta: (B * triton.cdiv(n, meta["BLOCK"]),)


def _flat_grid(n: int):
    return lambda meta: (triton.cdiv(n, meta["BLOCK"]),)


@triton.jit
def _row_and_block(n, BLOCK: tl.constexpr):
    """(row, block) of this program in a 1-D grid of rows x cdiv(n, BLOCK) programs, as int64."""
    pid = tl.program_id(0).to(tl.int64)
    n_blocks = tl.cdiv(n, BLOCK)
    return pid // n_blocks, pid % n_blocks


@triton.jit
def _store_partials(partial_ptr, values, row, block, n, BLOCK: tl.constexpr, PARTIAL: tl.constexpr):
    """The sums of each PARTIAL consecutive values of this block (masked-out values are 0) into the row's slots
    block * BLOCK // PARTIAL + [0, BLOCK // PARTIAL) of partial (rows, cdiv(n, PARTIAL))."""
    sums = tl.sum(tl.reshape(values, (BLOCK // PARTIAL, PARTIAL)), axis=1)
    slots = block * (BLOCK // PARTIAL) + tl.arange(0, BLOCK // PARTIAL)
    n_slots = tl.cdiv(n, PARTIAL)
    tl.store(partial_ptr + row * n_slots + slots, sums, mask=slots < n_slots)


@tuned(CONFIGS, key=["size_class"], restore_value=["out_ptr"])
@triton.jit
def _interpolate_kernel(x0_ptr, x1_ptr, t_ptr, out_ptr, n, size_class, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """size_class: the tuning key (:func:`.tuning.size_class` of all the elements); unused in the body."""
    row, block = _row_and_block(n, BLOCK)
    offs = block * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    base = row * n
    t = tl.load(t_ptr + row).to(ACC)
    x0 = tl.load(x0_ptr + base + offs, mask=mask).to(ACC)
    x1 = tl.load(x1_ptr + base + offs, mask=mask).to(ACC)
    out = x0 + t * (x1 - x0)
    tl.store(out_ptr + base + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@tuned(CONFIGS, key=["size_class"])
@triton.jit
def _interpolate_backward_kernel(g_ptr, x0_ptr, x1_ptr, t_ptr, dx0_ptr, dx1_ptr, dt_partial_ptr, n, size_class,
                                 WANT_DX0: tl.constexpr, WANT_DX1: tl.constexpr, WANT_DT: tl.constexpr,
                                 ACC: tl.constexpr, PARTIAL: tl.constexpr, BLOCK: tl.constexpr):
    row, block = _row_and_block(n, BLOCK)
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
        _store_partials(dt_partial_ptr, g * (x1 - x0), row, block, n, BLOCK, PARTIAL)


@tuned(CONFIGS, key=["size_class"])
@triton.jit(do_not_specialize=["grad_scale_bits"])
def _loss_kernel(v_ptr, x0_ptr, x1_ptr, w_ptr, grad_ptr, partial_ptr, n, size_class, grad_scale_bits,
                 HAS_W: tl.constexpr, WANT_GRAD: tl.constexpr, ACC: tl.constexpr, PARTIAL: tl.constexpr,
                 BLOCK: tl.constexpr):
    row, block = _row_and_block(n, BLOCK)
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
    _store_partials(partial_ptr, w * (diff * diff), row, block, n, BLOCK, PARTIAL)


@tuned(CONFIGS, key=["size_class"], restore_value=["out_ptr"])
@triton.jit(do_not_specialize=["a", "p", "q", "lo", "hi", "b", "c", "s", "g"])
def _step_kernel(x_ptr, e_ptr, z_ptr, w_ptr, out_ptr, n, size_class, a, p, q, lo, hi, b, c, s, g,
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


@tuned(CONFIGS, key=["size_class"], restore_value=["ema_ptr"])
@triton.jit(do_not_specialize=["weight_bits"])
def _lerp_kernel(ema_ptr, src_ptr, n, size_class, weight_bits, ACC: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    ema = tl.load(ema_ptr + offs, mask=mask).to(ACC)
    src = tl.load(src_ptr + offs, mask=mask).to(ACC)
    weight = from_bits(weight_bits, ACC)
    tl.store(ema_ptr + offs, (ema + weight * (src - ema)).to(ema_ptr.dtype.element_ty), mask=mask)


def _rows(x: torch.Tensor) -> tuple[int, int]:
    return x.shape[0], x.numel() // max(x.shape[0], 1)


# The launch helpers: ``config`` (one of :data:`CONFIGS`, or any triton.Config with a BLOCK that is a power of 2
# and a multiple of PARTIAL) forces a block size and warps; by default the autotuner picks (the first config under
# the interpreter).


def flow_interpolate(x0, x1, t, out, config: triton.Config | None = None):
    """out = x0 + t (x1 - x0) for contiguous (B, ...) x0, x1, out (out may be x0 or x1) and t (B,)."""
    B, n = _rows(x0)
    if out.numel():
        _interpolate_kernel[_row_grid(B, n)](x0, x1, t, out, n, size_class(out.numel()), ACC=_acc(x0),
                                             config=config)


def _partials(x: torch.Tensor, B: int, n: int) -> torch.Tensor:
    """The partial sums' buffer: (B, cdiv(n, PARTIAL)), every entry written by the kernel."""
    return torch.empty(B, triton.cdiv(n, PARTIAL), dtype=_acc_dtype(x), device=x.device)


def flow_interpolate_backward(grad, x0, x1, t, wanted, config: triton.Config | None = None):
    """(dx0, dx1, dt) for grad (B, ...); outputs not ``wanted`` are empty tensors."""
    B, n = _rows(x0)
    dx0 = torch.empty_like(grad) if wanted[0] else grad.new_empty(0)
    dx1 = torch.empty_like(grad) if wanted[1] else grad.new_empty(0)
    partial = _partials(grad, B, n)
    if grad.numel():
        _interpolate_backward_kernel[_row_grid(B, n)](grad, x0, x1, t, dx0, dx1, partial, n,
                                                      size_class(grad.numel()), WANT_DX0=wanted[0],
                                                      WANT_DX1=wanted[1], WANT_DT=wanted[2], ACC=_acc(grad),
                                                      PARTIAL=PARTIAL, config=config)
    dt = partial.sum(dim=1).to(t.dtype) if wanted[2] else grad.new_empty(0)
    return dx0, dx1, dt


def flow_matching_loss(v, x0, x1, weight, compute_grad, config: triton.Config | None = None):
    """(loss, grad_v) of sum_b w_b sum (v - x1 + x0)^2 / numel; grad_v empty unless compute_grad."""
    B, n = _rows(v)
    grad = torch.empty_like(v) if compute_grad else v.new_empty(0)
    partial = _partials(v, B, n)
    if v.numel():
        _loss_kernel[_row_grid(B, n)](v, x0, x1, weight if weight is not None else v, grad, partial, n,
                                      size_class(v.numel()), float_bits(2.0 / v.numel()), HAS_W=weight is not None,
                                      WANT_GRAD=compute_grad, ACC=_acc(v), PARTIAL=PARTIAL, config=config)
    return (partial.sum() / max(v.numel(), 1)).to(v.dtype), grad


def fused_step(x, e, z, w, coefficients, clip, out, config: triton.Config | None = None):
    """out = a clamp(p x + q e, lo, hi) + b x + c e + s z + g w for contiguous tensors of one shape (out may be x)."""
    n = x.numel()
    if n:
        _step_kernel[_flat_grid(n)](x, e, z if z is not None else x, w if w is not None else x, out, n,
                                    size_class(n), *map(float_bits, coefficients), HAS_Z=z is not None,
                                    HAS_W=w is not None, CLIP=clip, ACC=_acc(x), config=config)


def lerp_(ema, tensors, weight, config: triton.Config | None = None):
    """In place ema[k] += weight (tensors[k] - ema[k]), one launch per tensor."""
    weight_bits = float_bits(weight)
    for e, t in zip(ema, tensors):
        if e.numel():
            _lerp_kernel[_flat_grid(e.numel())](e, t, e.numel(), size_class(e.numel()), weight_bits, ACC=_acc(e),
                                                config=config)
