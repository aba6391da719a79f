"""Triton (CUDA) kernel of the fused InfoNCE loss ``blindfast.ops.info_nce`` (ground truth:
``blindfast/ops/reference/info_nce.py``).

Flash-attention style: each program owns a block of rows of q and sweeps the queue in tiles, s = q @ tile^T / tau
with ``tl.dot``, keeping a running max m and sum-exp l per row (online softmax: l <- l e^(m - m') + sum e^(s - m')),
so no logits ever reach memory. lse = m + log l gives loss_i = lse_i - s_i0. For gradients a second sweep recomputes
each tile's p = exp(s - lse) and accumulates dq = p @ tile (``tl.dot``); then

    grad_q_i = (dq_i + g_i k_i) / (N tau),   grad_k_i = g_i q_i / (N tau),   g_i = p_i0 - 1 = -l_neg / l,

with l_neg the negatives' share of l (kept apart, so that g and the loss keep their relative accuracy as p_i0 -> 1).

float16 / bfloat16 / float32 accumulate in float32 (the dots in IEEE float32, not TF32), float64 in float64. Each
program writes its rows' losses; torch takes the mean.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .scalars import float_bits, from_bits

__all__ = ["info_nce"]

# Rows per program and queue rows per tile: 64 x 64 score tiles (flash-attention's usual size for D <= 128).
BLOCK_N = 64
BLOCK_K = 64
_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
              torch.float64: tl.float64}


@triton.jit
def _scores(q, queue_ptr, tile_start, K, D, cols, col_mask, inv_tau, DOT: tl.constexpr, BLOCK_K: tl.constexpr):
    """Queue rows [tile_start, tile_start + BLOCK_K) (as DOT) and the (BLOCK_N, BLOCK_K) scores q . u_j / tau of this
    block of rows; columns past K are -inf (their exp is 0)."""
    keys = tile_start + tl.arange(0, BLOCK_K)
    key_mask = keys < K
    tile = tl.load(queue_ptr + keys.to(tl.int64)[:, None] * D + cols[None, :],
                   mask=key_mask[:, None] & col_mask[None, :], other=0.0).to(DOT)
    s = tl.dot(q, tl.trans(tile), input_precision="ieee") * inv_tau
    return tile, tl.where(key_mask[None, :], s, float("-inf"))


@triton.jit
def _log1p(x):
    """log(1 + x) to full relative accuracy for small x (Goldberg 1991, Theorem 4): with u = 1 + x rounded,
    log(u) * x / (u - 1) cancels the rounding of u; x itself where u rounds to 1."""
    u = 1.0 + x
    exact = u == 1.0
    return tl.where(exact, x, tl.log(u) * (x / tl.where(exact, 1.0, u - 1.0)))


@triton.jit(do_not_specialize=["inv_tau_bits", "grad_scale_bits"])
def _info_nce_kernel(q_ptr, k_ptr, queue_ptr, row_loss_ptr, grad_q_ptr, grad_k_ptr, inv_tau_bits, grad_scale_bits,
                     N, D, K,
                     COMPUTE_GRAD: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    offsets = rows.to(tl.int64)[:, None] * D + cols[None, :]  # (BLOCK_N, BLOCK_D)
    mask = row_mask[:, None] & col_mask[None, :]
    inv_tau = from_bits(inv_tau_bits, ACC)
    grad_scale = from_bits(grad_scale_bits, ACC)  # 1 / (N tau)

    q = tl.load(q_ptr + offsets, mask=mask, other=0.0)
    k = tl.load(k_ptr + offsets, mask=mask, other=0.0)
    positive = tl.sum(q.to(ACC) * k.to(ACC), axis=1) * inv_tau  # (BLOCK_N,)
    q_dot = q.to(DOT)

    # Online softmax over [positive, queue tiles...] with running max m (starting at the positive) and the
    # negatives' sum-exp kept apart from the positive's: l_neg <- l_neg e^(m - m') + sum_j e^(s_j - m').
    m = positive
    l_neg = tl.zeros((BLOCK_N,), ACC)
    for tile_start in range(0, K, BLOCK_K):
        _, s = _scores(q_dot, queue_ptr, tile_start, K, D, cols, col_mask, inv_tau, DOT, BLOCK_K)
        m_new = tl.maximum(m, tl.max(s, axis=1))
        l_neg = l_neg * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m = m_new
    positive_exp = tl.exp(positive - m)
    total = positive_exp + l_neg
    log_total = _log1p((positive_exp - 1.0) + l_neg)
    tl.store(row_loss_ptr + rows, (m - positive) + log_total, mask=row_mask)

    if COMPUTE_GRAD:
        lse = m + log_total
        dq = tl.zeros((BLOCK_N, BLOCK_D), ACC)
        for tile_start in range(0, K, BLOCK_K):
            tile, s = _scores(q_dot, queue_ptr, tile_start, K, D, cols, col_mask, inv_tau, DOT, BLOCK_K)
            p = tl.exp(s - lse[:, None])
            dq += tl.dot(p.to(tile.dtype), tile, input_precision="ieee").to(ACC)
        g = -(l_neg / total)  # p_i0 - 1, without its cancellation as p_i0 -> 1
        grad_q = (dq + g[:, None] * k.to(ACC)) * grad_scale
        grad_k = g[:, None] * q.to(ACC) * grad_scale
        tl.store(grad_q_ptr + offsets, grad_q.to(grad_q_ptr.dtype.element_ty), mask=mask)
        tl.store(grad_k_ptr + offsets, grad_k.to(grad_k_ptr.dtype.element_ty), mask=mask)


def info_nce(q: torch.Tensor, k_pos: torch.Tensor, queue: torch.Tensor, temperature: float, compute_grad: bool, *,
             block_n: int = BLOCK_N, block_k: int = BLOCK_K) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, grad_q, grad_k) for contiguous q, k_pos (N, D) and queue (K, D); the gradients are (0, D) unless
    ``compute_grad``. The blocks are powers of two >= 16 (``tl.dot``'s minimum)."""
    N, D = q.shape
    K = queue.shape[0]
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    dot_dtype = _TL_DTYPES[q.dtype]
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        # CPU tensors mean the interpreter, whose tl.dot multiplies bfloat16 operands as their uint16 bit patterns
        # (triton-lang/triton#11584, Triton 3.8): there the bfloat16 tiles go through float32 dots.
        dot_dtype = tl.float32
    rows = N if compute_grad else 0
    grad_q, grad_k = q.new_empty(rows, D), q.new_empty(rows, D)
    row_loss = torch.empty(N, dtype=acc_dtype, device=q.device)
    _info_nce_kernel[(triton.cdiv(N, block_n),)](
        q, k_pos, queue, row_loss, grad_q if compute_grad else q, grad_k if compute_grad else q,
        float_bits(1.0 / temperature), float_bits(1.0 / (N * temperature)), N, D, K,
        COMPUTE_GRAD=compute_grad, ACC=tl.float64 if q.dtype == torch.float64 else tl.float32, DOT=dot_dtype,
        BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_D=max(16, triton.next_power_of_2(D)))
    return row_loss.mean().to(q.dtype), grad_q, grad_k
