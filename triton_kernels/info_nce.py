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

The feature dimension D is tiled too (BLOCK_D), so that D = 128..2048 needs no register tile of a whole row: a
score tile is the sum over D tiles of q[:, d] @ tile[:, d]^T (q's D tiles are re-read for each queue tile, from
cache), and a program's share of dq, (BLOCK_N, D), lives in its own slice of the dq partials in memory, to which
each queue tile adds p @ tile[:, d] one D tile at a time (read, add, write: no other program touches the slice, so
no atomics). That slice is an accumulated buffer: zeroed by the launch helper, and named in ``reset_to_zero`` for
the autotuner's timing runs.

Autotuned (:mod:`.tuning`, :data:`CONFIGS`: rows x queue rows x features per tile, and warps), keyed on (N, D, K)
and the dtype. The queue splits do not depend on the config: a split's length is a multiple of the largest
BLOCK_K of the configs (so every config's tiles stay inside their split) and the split count fills the device at the
largest BLOCK_N; the launch helper's ``config=`` forces one (then its own blocks set the splits).

float16 / bfloat16 / float32 accumulate in float32 (the dots in IEEE float32, not TF32), float64 in float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .scalars import float_bits, from_bits
from .tuning import tuned

__all__ = ["CONFIGS", "info_nce"]

# BLOCK_N x BLOCK_K score tiles (flash-attention's usual 64 x 64 for a head dimension <= 128) and BLOCK_D features
# per dot, with warps; plausible for sm_90, not timed on a GPU yet. Blocks are powers of 2 >= 16 (``tl.dot``'s
# minimum). The first config runs under the interpreter.
CONFIGS = [
    triton.Config({"BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_D": 64}, num_warps=4),
    triton.Config({"BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_D": 128}, num_warps=4),
    triton.Config({"BLOCK_N": 64, "BLOCK_K": 128, "BLOCK_D": 64}, num_warps=8),
    triton.Config({"BLOCK_N": 128, "BLOCK_K": 64, "BLOCK_D": 64}, num_warps=8),
]
_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
              torch.float64: tl.float64}


@triton.jit
def _scores(q_ptr, queue_ptr, rows, row_mask, tile_start, K, D, inv_tau, ACC: tl.constexpr, DOT: tl.constexpr,
            BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """The (BLOCK_N, BLOCK_K) scores q_i . u_j / tau of these rows and queue rows [tile_start, tile_start + BLOCK_K),
    summed over D tiles; columns past K are -inf (their exp is 0)."""
    keys = tile_start + tl.arange(0, BLOCK_K)
    key_mask = keys < K
    s = tl.zeros((BLOCK_N, BLOCK_K), ACC)
    for d_start in range(0, D, BLOCK_D):
        cols = d_start + tl.arange(0, BLOCK_D)
        col_mask = cols < D
        q = tl.load(q_ptr + rows[:, None] * D + cols[None, :], mask=row_mask[:, None] & col_mask[None, :],
                    other=0.0).to(DOT)
        tile = tl.load(queue_ptr + keys.to(tl.int64)[:, None] * D + cols[None, :],
                       mask=key_mask[:, None] & col_mask[None, :], other=0.0).to(DOT)
        s += tl.dot(q, tl.trans(tile), input_precision="ieee").to(ACC)
    return tl.where(key_mask[None, :], s * inv_tau, float("-inf"))


@triton.jit
def _program_split(splits):
    """(row block, split) of this program in a 1-D grid of row blocks x splits, as int64."""
    pid = tl.program_id(0).to(tl.int64)
    return pid // splits, pid % splits


@tuned(CONFIGS, key=["N", "D", "K"])
@triton.jit(do_not_specialize=["inv_tau_bits"])
def _lse_partials_kernel(q_ptr, queue_ptr, m_ptr, l_ptr, inv_tau_bits, N, D, K, keys_per_split, splits,
                         ACC: tl.constexpr, DOT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         BLOCK_D: tl.constexpr):
    """(m, l) of the negatives of one split, per row: m = max_j s_j, l = sum_j e^(s_j - m) (m = -inf, l = 0 for an
    empty split). m, l: (N, splits)."""
    row_block, split = _program_split(splits)
    rows = row_block * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    inv_tau = from_bits(inv_tau_bits, ACC)
    m = tl.full((BLOCK_N,), float("-inf"), ACC)
    l = tl.zeros((BLOCK_N,), ACC)
    first = split * keys_per_split
    for tile_start in range(first, tl.minimum(first + keys_per_split, K), BLOCK_K):
        s = _scores(q_ptr, queue_ptr, rows, row_mask, tile_start, K, D, inv_tau, ACC, DOT, BLOCK_N, BLOCK_K,
                    BLOCK_D)
        m_new = tl.maximum(m, tl.max(s, axis=1))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m = m_new
    tl.store(m_ptr + rows * splits + split, m, mask=row_mask)
    tl.store(l_ptr + rows * splits + split, l, mask=row_mask)


@tuned(CONFIGS, key=["N", "D", "K"], reset_to_zero=["dq_ptr"])
@triton.jit(do_not_specialize=["inv_tau_bits"])
def _dq_partials_kernel(q_ptr, queue_ptr, lse_ptr, dq_ptr, inv_tau_bits, N, D, K, keys_per_split, splits,
                        ACC: tl.constexpr, DOT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        BLOCK_D: tl.constexpr):
    """One split's share of dq_i = sum_j p_ij u_j, p_ij = e^(s_ij - lse_i), added into dq[split] (splits, N, D),
    zero on entry."""
    row_block, split = _program_split(splits)
    rows = row_block * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    inv_tau = from_bits(inv_tau_bits, ACC)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    dq_rows = dq_ptr + (split * N + rows)[:, None] * D
    first = split * keys_per_split
    for tile_start in range(first, tl.minimum(first + keys_per_split, K), BLOCK_K):
        s = _scores(q_ptr, queue_ptr, rows, row_mask, tile_start, K, D, inv_tau, ACC, DOT, BLOCK_N, BLOCK_K,
                    BLOCK_D)
        p = tl.exp(s - lse[:, None]).to(DOT)
        keys = tile_start + tl.arange(0, BLOCK_K)
        for d_start in range(0, D, BLOCK_D):
            cols = d_start + tl.arange(0, BLOCK_D)
            col_mask = cols < D
            tile = tl.load(queue_ptr + keys.to(tl.int64)[:, None] * D + cols[None, :],
                           mask=(keys < K)[:, None] & col_mask[None, :], other=0.0).to(DOT)
            mask = row_mask[:, None] & col_mask[None, :]
            dq = tl.load(dq_rows + cols[None, :], mask=mask, other=0.0)
            dq += tl.dot(p, tile, input_precision="ieee").to(ACC)
            tl.store(dq_rows + cols[None, :], dq, mask=mask)


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
             config: triton.Config | None = None, target_programs: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, grad_q, grad_k) for contiguous q, k_pos (N, D) and queue (K, D); the gradients are (0, D) unless
    ``compute_grad``. ``config``: a triton.Config with BLOCK_N, BLOCK_K, BLOCK_D (powers of 2 >= 16) to force;
    by default the autotuner's. ``target_programs`` sets the queue splits (default: :func:`_target_programs`)."""
    N, D = q.shape
    K = queue.shape[0]
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    acc = tl.float64 if q.dtype == torch.float64 else tl.float32
    dot_dtype = _TL_DTYPES[q.dtype]
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        # CPU tensors mean the interpreter, whose tl.dot multiplies bfloat16 operands as their uint16 bit patterns
        # (triton-lang/triton#11584, Triton 3.8): there the bfloat16 tiles go through float32 dots.
        dot_dtype = tl.float32
    candidates = [config] if config is not None else CONFIGS
    split_block_n = max(c.kwargs["BLOCK_N"] for c in candidates)
    split_granule = max(c.kwargs["BLOCK_K"] for c in candidates)
    splits = _splits(N, K, split_block_n, split_granule, target_programs or _target_programs(q.device))
    keys_per_split = triton.cdiv(triton.cdiv(K, split_granule), splits) * split_granule

    def grid(meta):
        return (triton.cdiv(N, meta["BLOCK_N"]) * splits,)

    m_split = torch.empty(N, splits, dtype=acc_dtype, device=q.device)
    l_split = torch.empty(N, splits, dtype=acc_dtype, device=q.device)
    if N:
        _lse_partials_kernel[grid](q, queue, m_split, l_split, float_bits(1.0 / temperature), N, D, K,
                                   keys_per_split, splits, ACC=acc, DOT=dot_dtype, config=config)
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
    dq_split = torch.zeros(splits, N, D, dtype=acc_dtype, device=q.device)
    if N:
        _dq_partials_kernel[grid](q, queue, lse, dq_split, float_bits(1.0 / temperature), N, D, K, keys_per_split,
                                  splits, ACC=acc, DOT=dot_dtype, config=config)
    g = -(l_neg / (positive_exp + l_neg))[:, None]   # p_i0 - 1, without its cancellation as p_i0 -> 1
    grad_scale = 1.0 / (N * temperature)
    grad_q = (dq_split.sum(dim=0) + g * k_acc) * grad_scale
    grad_k = g * q_acc * grad_scale
    return loss, grad_q.to(q.dtype), grad_k.to(q.dtype)
