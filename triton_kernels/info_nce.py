"""Triton (CUDA) kernels of the fused InfoNCE loss ``blindfast.ops.info_nce`` (ground truth:
``blindfast/ops/reference/info_nce.py``).

Flash-decoding style (Dao et al. 2023, "Flash-Decoding for long-context inference"): the queue is split among
programs as well as the rows, so that MoCo's few rows and long queue (N = 256, K = 65536: 4 row blocks) still fill a
GPU's multiprocessors. Program (row block, split) sweeps its split's queue tiles, s = q @ tile^T / tau with
``tl.dot``, keeping a running max m and sum-exp l per row (online softmax: l <- l e^(m - m') + sum e^(s - m')), and
writes (m, l); no logits ever reach memory. Torch then combines the splits with the positive s_0 = q . k / tau:
m = max(s_0, m_s), l_neg = sum_s l_s e^(m_s - m), loss_i = (m - s_0) + log1p(e^(s_0 - m) - 1 + l_neg). For
gradients a second sweep over the same (row block, split) programs recomputes each tile's p = exp(s - lse) and
accumulates its split's share of dq = p @ tile (``tl.dot``); torch adds the shares in split order (deterministic),
then

    grad_q_i = (dq_i + g_i k_i) / (N tau),   grad_k_i = g_i q_i / (N tau),   g_i = p_i0 - 1 = -l_neg / l,

with l_neg the negatives' share of l (kept apart, so that g and the loss keep their relative accuracy as p_i0 -> 1).

float16 / bfloat16 / float32 accumulate in float32 (the dots in IEEE float32, not TF32), float64 in float64.
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
def _program_split(splits):
    """(row block, split) of this program in a 1-D grid of row blocks x splits, as int64."""
    pid = tl.program_id(0).to(tl.int64)
    return pid // splits, pid % splits


@triton.jit(do_not_specialize=["inv_tau_bits"])
def _lse_partials_kernel(q_ptr, queue_ptr, m_ptr, l_ptr, inv_tau_bits, N, D, K, keys_per_split, splits,
                         ACC: tl.constexpr, DOT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         BLOCK_D: tl.constexpr):
    """(m, l) of the negatives of one split, per row: m = max_j s_j, l = sum_j e^(s_j - m) (m = -inf, l = 0 for an
    empty split)."""
    row_block, split = _program_split(splits)
    rows = row_block * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    inv_tau = from_bits(inv_tau_bits, ACC)
    q = tl.load(q_ptr + rows[:, None] * D + cols[None, :], mask=row_mask[:, None] & col_mask[None, :], other=0.0)
    q_dot = q.to(DOT)
    m = tl.full((BLOCK_N,), float("-inf"), ACC)
    l = tl.zeros((BLOCK_N,), ACC)
    first = split * keys_per_split
    for tile_start in range(first, tl.minimum(first + keys_per_split, K), BLOCK_K):
        _, s = _scores(q_dot, queue_ptr, tile_start, K, D, cols, col_mask, inv_tau, DOT, BLOCK_K)
        m_new = tl.maximum(m, tl.max(s, axis=1))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m = m_new
    tl.store(m_ptr + rows * splits + split, m, mask=row_mask)
    tl.store(l_ptr + rows * splits + split, l, mask=row_mask)


@triton.jit(do_not_specialize=["inv_tau_bits"])
def _dq_partials_kernel(q_ptr, queue_ptr, lse_ptr, dq_ptr, inv_tau_bits, N, D, K, keys_per_split, splits,
                        ACC: tl.constexpr, DOT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        BLOCK_D: tl.constexpr):
    """One split's share of dq_i = sum_j p_ij u_j, p_ij = e^(s_ij - lse_i), into dq[split] (splits, N, D)."""
    row_block, split = _program_split(splits)
    rows = row_block * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    mask = row_mask[:, None] & col_mask[None, :]
    inv_tau = from_bits(inv_tau_bits, ACC)
    q_dot = tl.load(q_ptr + rows[:, None] * D + cols[None, :], mask=mask, other=0.0).to(DOT)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    dq = tl.zeros((BLOCK_N, BLOCK_D), ACC)
    first = split * keys_per_split
    for tile_start in range(first, tl.minimum(first + keys_per_split, K), BLOCK_K):
        tile, s = _scores(q_dot, queue_ptr, tile_start, K, D, cols, col_mask, inv_tau, DOT, BLOCK_K)
        p = tl.exp(s - lse[:, None])
        dq += tl.dot(p.to(tile.dtype), tile, input_precision="ieee").to(ACC)
    tl.store(dq_ptr + (split * N + rows)[:, None] * D + cols[None, :], dq, mask=mask)


def _splits(N: int, K: int, block_n: int, block_k: int, target_programs: int) -> int:
    """Queue splits: enough (row block, split) programs for ``target_programs``, at most one per queue tile."""
    tiles = triton.cdiv(K, block_k)
    return max(1, min(tiles, triton.cdiv(target_programs, triton.cdiv(N, block_n))))


def _target_programs(device: torch.device) -> int:
    """Programs that fill the device: 4 per multiprocessor on CUDA; 4 elsewhere (the interpreter, where the
    splits only need exercising)."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def info_nce(q: torch.Tensor, k_pos: torch.Tensor, queue: torch.Tensor, temperature: float, compute_grad: bool, *,
             block_n: int = BLOCK_N, block_k: int = BLOCK_K, target_programs: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, grad_q, grad_k) for contiguous q, k_pos (N, D) and queue (K, D); the gradients are (0, D) unless
    ``compute_grad``. The blocks are powers of two >= 16 (``tl.dot``'s minimum); ``target_programs`` sets the queue
    splits (default: :func:`_target_programs`)."""
    N, D = q.shape
    K = queue.shape[0]
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    acc = tl.float64 if q.dtype == torch.float64 else tl.float32
    dot_dtype = _TL_DTYPES[q.dtype]
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        # CPU tensors mean the interpreter, whose tl.dot multiplies bfloat16 operands as their uint16 bit patterns
        # (triton-lang/triton#11584, Triton 3.8): there the bfloat16 tiles go through float32 dots.
        dot_dtype = tl.float32
    splits = _splits(N, K, block_n, block_k, target_programs or _target_programs(q.device))
    keys_per_split = triton.cdiv(triton.cdiv(K, block_k), splits) * block_k
    grid = (triton.cdiv(N, block_n) * splits,)
    blocks = dict(ACC=acc, DOT=dot_dtype, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_D=max(16, triton.next_power_of_2(D)))
    m_split = torch.empty(N, splits, dtype=acc_dtype, device=q.device)
    l_split = torch.empty(N, splits, dtype=acc_dtype, device=q.device)
    if N:
        _lse_partials_kernel[grid](q, queue, m_split, l_split, float_bits(1.0 / temperature), N, D, K,
                                   keys_per_split, splits, **blocks)
    q_acc, k_acc = q.to(acc_dtype), k_pos.to(acc_dtype)
    positive = (q_acc * k_acc).sum(dim=1) / temperature
    m = torch.maximum(positive, m_split.amax(dim=1))
    l_neg = (l_split * torch.exp(m_split - m[:, None])).sum(dim=1)
    positive_exp = torch.exp(positive - m)
    log_total = torch.log1p((positive_exp - 1.0) + l_neg)
    loss = ((m - positive) + log_total).mean().to(q.dtype)
    if not compute_grad:
        return loss, q.new_empty(0, D), q.new_empty(0, D)
    lse = m + log_total
    dq_split = torch.empty(splits, N, D, dtype=acc_dtype, device=q.device)
    if N:
        _dq_partials_kernel[grid](q, queue, lse, dq_split, float_bits(1.0 / temperature), N, D, K, keys_per_split,
                                  splits, **blocks)
    g = -(l_neg / (positive_exp + l_neg))[:, None]   # p_i0 - 1, without its cancellation as p_i0 -> 1
    grad_scale = 1.0 / (N * temperature)
    grad_q = (dq_split.sum(dim=0) + g * k_acc) * grad_scale
    grad_k = g * q_acc * grad_scale
    return loss, grad_q.to(q.dtype), grad_k.to(q.dtype)
