"""Triton (CUDA) kernels of the HQS kernel update ``blindfast.ops.hqs.hqs_kernel_update``.

Semantics (see ``blindfast/ops/hqs.py`` and the float64 reference ``blindfast/ops/reference/hqs.py``):

* combine: ``[A, B]`` from interleaved rfft2 spectra, ``A = sum_ic conj(X_ic) Y_c / (den + alpha)``,
  ``B = alpha / (den + alpha)``, ``den = sum_ic |X_ic|^2``; one pass over the spectra.
* step: ``Z = max(a_crop + b_window (x) phi, 0) / sum`` (a centred delta when the sum is 0), ``iters`` times, each Z
  the next phi. A normalisation needs the sum of the whole kernel, so there is one launch per iteration: each program
  computes one output row, stores it clipped but not normalised with its row sum, and the next launch (or the final
  one) divides by the sum of the row sums as it reads. The row sums are added in row order: no atomics, the same
  result at every run.
* recentre: clip at 0, nearest integer shift of the centre of mass to (kh // 2, kw // 2), zero fill, renormalise;
  one program (a kernel is at most a few thousand values).

Dtypes: float16 / bfloat16 / float32 accumulate in float32, float64 in float64. Scalars that must keep float64
precision (alpha) travel as bit patterns (:mod:`.scalars`): a Python float argument would be float32 in the kernel.

Autotuned (:mod:`.tuning`): the combine's frequencies per program and warps, keyed on the planes and the spectrum
size; the kernel-sized kernels' warps (their blocks are the kernel's size rounded up to powers of 2), keyed on the
kernel size. Every kernel writes all of its outputs and reads none of them, so the autotuner's timing runs need no
reset. The launch helpers take ``config=`` to force one.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .scalars import float_bits, from_bits
from .tuning import tuned

__all__ = ["COMBINE_CONFIGS", "KERNEL_SIZED_CONFIGS", "hqs_combine", "hqs_step", "hqs_recentre"]

# Frequencies per program x warps for the memory-bound combine (plausible for sm_90, not timed on a GPU yet); the
# first one runs under the interpreter.
COMBINE_CONFIGS = [
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 512}, num_warps=4),
    triton.Config({"BLOCK": 256}, num_warps=2),
    triton.Config({"BLOCK": 2048}, num_warps=8),
]
# Warps for the kernels whose blocks are a whole (kh, kw) kernel or one of its rows (at most 64 x 64 values).
KERNEL_SIZED_CONFIGS = [triton.Config({}, num_warps=4), triton.Config({}, num_warps=2), triton.Config({}, num_warps=8)]


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


@tuned(COMBINE_CONFIGS, key=["planes", "F"])
@triton.jit(do_not_specialize=["alpha_bits"])
def _combine_kernel(x_ptr, y_ptr, ab_ptr, alpha_bits, planes, C, F, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """One program per BLOCK frequencies. x: (planes = n * C, F, 2), y: (C, F, 2), ab: (2, F, 2) interleaved."""
    f = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = f < F
    num_re = tl.zeros((BLOCK,), dtype=ACC)
    num_im = tl.zeros((BLOCK,), dtype=ACC)
    den = tl.zeros((BLOCK,), dtype=ACC)
    x = x_ptr + 2 * f  # plane p = i * C + c; the pointer advances (64-bit) by one plane per step
    for p in range(planes):
        y = y_ptr + (p % C) * F * 2 + 2 * f
        xr = tl.load(x, mask=mask, other=0).to(ACC)
        xi = tl.load(x + 1, mask=mask, other=0).to(ACC)
        yr = tl.load(y, mask=mask, other=0).to(ACC)
        yi = tl.load(y + 1, mask=mask, other=0).to(ACC)
        num_re += xr * yr + xi * yi  # conj(x) y
        num_im += xr * yi - xi * yr
        den += xr * xr + xi * xi
        x += 2 * F
    alpha = from_bits(alpha_bits, ACC)
    denominator = den + alpha
    out_ty = ab_ptr.dtype.element_ty
    tl.store(ab_ptr + 2 * f, (num_re / denominator).to(out_ty), mask=mask)
    tl.store(ab_ptr + 2 * f + 1, (num_im / denominator).to(out_ty), mask=mask)
    tl.store(ab_ptr + 2 * (F + f), (alpha / denominator).to(out_ty), mask=mask)
    tl.store(ab_ptr + 2 * (F + f) + 1, tl.zeros((BLOCK,), dtype=out_ty), mask=mask)


@triton.jit
def _normalised_phi(phi_ptr, sums_ptr, rows, cols, kh, kw, NORMALISE: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_H: tl.constexpr):
    """phi[rows, cols] (broadcast shapes): the stored kernel as is, or, with NORMALISE, the previous step's clipped
    rows divided by the sum of their row sums (``sums_ptr``: (kh,)), a centred delta when that sum is 0."""
    mask = (rows < kh) & (cols < kw)
    phi = tl.load(phi_ptr + rows * kw + cols, mask=mask, other=0).to(ACC)
    if NORMALISE:
        r = tl.arange(0, BLOCK_H)
        total = tl.sum(tl.load(sums_ptr + r, mask=r < kh, other=0).to(ACC), axis=0)
        delta = tl.where((rows == kh // 2) & (cols == kw // 2), 1.0, 0.0).to(ACC)
        phi = tl.where(total > 0, phi / tl.where(total > 0, total, 1.0), delta)
    return phi


@tuned(KERNEL_SIZED_CONFIGS, key=["kh", "kw"])
@triton.jit
def _step_kernel(a_ptr, bw_ptr, phi_ptr, phi_sums_ptr, z_ptr, z_sums_ptr, kh, kw, NORMALISE_PHI: tl.constexpr,
                 ACC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """One data step, one program per output row u:

        z[u, v] = max(a[u, v] + sum_{u', v'} phi[u', v'] * bw[u - u' + kh - 1, v - v' + kw - 1], 0),
        z_sums[u] = sum_v z[u, v]

    a, z: (kh, kw); bw: (2kh - 1, 2kw - 1); phi: (kh, kw), normalised on the fly when NORMALISE_PHI (see
    :func:`_normalised_phi`). Each row u' of phi is a product of the (kw x kw) Toeplitz block of bw row
    u - u' + kh - 1 with the phi row: a gathered 2-D block and a reduction over v'.
    """
    u = tl.program_id(0)
    v = tl.arange(0, BLOCK_W)
    vp = tl.arange(0, BLOCK_W)
    v_ok = v < kw
    block_ok = v_ok[:, None] & (vp < kw)[None, :]
    bw_cols = 2 * kw - 1
    acc = tl.load(a_ptr + u * kw + v, mask=v_ok, other=0).to(ACC)
    for up in range(kh):
        phi_row = _normalised_phi(phi_ptr, phi_sums_ptr, up, vp, kh, kw, NORMALISE_PHI, ACC, BLOCK_H)
        window = bw_ptr + (u - up + kh - 1) * bw_cols + (v[:, None] - vp[None, :] + kw - 1)
        toeplitz = tl.load(window, mask=block_ok, other=0).to(ACC)
        acc += tl.sum(toeplitz * phi_row[None, :], axis=1)
    z = tl.where(v_ok, tl.maximum(acc, 0.0), 0.0)
    tl.store(z_ptr + u * kw + v, z.to(z_ptr.dtype.element_ty), mask=v_ok)
    tl.store(z_sums_ptr + u, tl.sum(z, axis=0).to(z_sums_ptr.dtype.element_ty))


@tuned(KERNEL_SIZED_CONFIGS, key=["kh", "kw"])
@triton.jit
def _normalise_kernel(z_ptr, sums_ptr, out_ptr, kh, kw, ACC: tl.constexpr, BLOCK_H: tl.constexpr,
                      BLOCK_W: tl.constexpr):
    """out = z / sum(sums) (a centred delta when the sum is 0); one program. z, out: (kh, kw), sums: (kh,)."""
    rows = tl.arange(0, BLOCK_H)[:, None]
    cols = tl.arange(0, BLOCK_W)[None, :]
    z = _normalised_phi(z_ptr, sums_ptr, rows, cols, kh, kw, True, ACC, BLOCK_H)
    tl.store(out_ptr + rows * kw + cols, z.to(out_ptr.dtype.element_ty), mask=(rows < kh) & (cols < kw))


@tuned(KERNEL_SIZED_CONFIGS, key=["kh", "kw"])
@triton.jit
def _recentre_kernel(k_ptr, out_ptr, kh, kw, ACC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Re-centring of one (kh, kw) kernel in one program (see the module docstring)."""
    rows = tl.arange(0, BLOCK_H)[:, None]
    cols = tl.arange(0, BLOCK_W)[None, :]
    inside = (rows < kh) & (cols < kw)
    w = tl.maximum(tl.load(k_ptr + rows * kw + cols, mask=inside, other=0).to(ACC), 0.0)
    mass = tl.sum(tl.sum(w, axis=1), axis=0)
    safe_mass = tl.where(mass > 0, mass, 1.0)
    row_com = tl.sum(tl.sum(w * rows.to(ACC), axis=1), axis=0) / safe_mass
    col_com = tl.sum(tl.sum(w * cols.to(ACC), axis=1), axis=0) / safe_mass
    shift_u = tl.floor((kh // 2) - row_com + 0.5).to(tl.int32)
    shift_v = tl.floor((kw // 2) - col_com + 0.5).to(tl.int32)
    src_rows = rows - shift_u
    src_cols = cols - shift_v
    src_ok = inside & (src_rows >= 0) & (src_rows < kh) & (src_cols >= 0) & (src_cols < kw)
    shifted = tl.maximum(tl.load(k_ptr + src_rows * kw + src_cols, mask=src_ok, other=0).to(ACC), 0.0)
    kept = tl.sum(tl.sum(shifted, axis=1), axis=0)
    # Nothing positive, or all of the mass shifted out of the window (possible for even sizes): a centred delta.
    delta = tl.where((rows == kh // 2) & (cols == kw // 2), 1.0, 0.0).to(ACC)
    out = tl.where(kept > 0, shifted / tl.where(kept > 0, kept, 1.0), delta)
    tl.store(out_ptr + rows * kw + cols, out.to(out_ptr.dtype.element_ty), mask=inside)


def hqs_combine(x_spec: torch.Tensor, y_spec: torch.Tensor, alpha: float,
                config: triton.Config | None = None) -> torch.Tensor:
    """``x_spec: (n, C, H, Wr, 2)``, ``y_spec: (C, H, Wr, 2)`` contiguous -> ``(2, H, Wr, 2)``: [A, B + 0i].
    ``config``: a triton.Config with BLOCK (frequencies per program) to force; by default the autotuner's."""
    n, C, H, Wr, _ = x_spec.shape
    F = H * Wr
    ab = x_spec.new_empty(2, H, Wr, 2)
    _combine_kernel[lambda meta: (triton.cdiv(F, meta["BLOCK"]),)](
        x_spec, y_spec, ab, float_bits(alpha), n * C, C, F, ACC=_acc(x_spec.dtype), config=config)
    return ab


def _blocks(kh: int, kw: int) -> dict:
    return {"BLOCK_H": triton.next_power_of_2(kh), "BLOCK_W": triton.next_power_of_2(kw)}


def hqs_step(a_crop: torch.Tensor, b_window: torch.Tensor, phi: torch.Tensor, iters: int,
             step_config: triton.Config | None = None, normalise_config: triton.Config | None = None
             ) -> torch.Tensor:
    """``iters`` data steps from ``phi``; ``a_crop, phi: (kh, kw)``, ``b_window: (2kh - 1, 2kw - 1)`` contiguous.
    Returns the last normalised Z: (kh, kw). The configs (warps) force the step's and the normalisation's."""
    kh, kw = phi.shape
    acc = _acc(phi.dtype)
    blocks = _blocks(kh, kw)
    # Clipped, unnormalised rows of the last two steps, and their row sums (float32 at least: they are divided).
    sum_dtype = torch.float64 if phi.dtype == torch.float64 else torch.float32
    rows = torch.empty(2, kh, kw, dtype=sum_dtype, device=phi.device)
    sums = torch.empty(2, kh, dtype=sum_dtype, device=phi.device)
    for t in range(iters):
        first = t == 0
        src = phi if first else rows[(t - 1) % 2]
        _step_kernel[lambda meta: (kh,)](a_crop, b_window, src, sums[(t - 1) % 2], rows[t % 2], sums[t % 2], kh, kw,
                                         NORMALISE_PHI=not first, ACC=acc, **blocks, config=step_config)
    z = torch.empty_like(phi)
    last = (iters - 1) % 2
    _normalise_kernel[lambda meta: (1,)](rows[last], sums[last], z, kh, kw, ACC=acc, **blocks,
                                         config=normalise_config)
    return z


def hqs_recentre(kernel: torch.Tensor, config: triton.Config | None = None) -> torch.Tensor:
    """``kernel: (kh, kw)`` contiguous -> re-centred (kh, kw), non-negative, sum 1."""
    kh, kw = kernel.shape
    out = torch.empty_like(kernel)
    _recentre_kernel[lambda meta: (1,)](kernel, out, kh, kw, ACC=_acc(kernel.dtype), **_blocks(kh, kw),
                                        config=config)
    return out
