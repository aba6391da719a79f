"""MoCo's InfoNCE loss, fused: the (N, 1 + K) logits are never materialised whole.

CPU: a Python loop over chunks of rows; per chunk one BLAS product for the negative logits, one C++ kernel for the
positive logit, softmax, loss and softmax gradient, and, when gradients are wanted, one more BLAS product for
grad_q. The gradients are computed during the forward (Liger-Kernel's fused linear cross-entropy): the backward only
scales them by grad_output, so forward + backward costs two matrix products, as unfused, instead of three.
CUDA: a flash-attention-style Triton kernel (``blindfast/triton_kernels/info_nce.py``), no logits in memory at all.
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast import _validate
from blindfast.ops import _backend
from blindfast.ops._checks import check_same, check_tensor

__all__ = ["info_nce", "DEFAULT_CHUNK_ELEMENTS"]

# Logits per chunk (rows = this // K, at least 1): 2^21, 512 rows at K = 4096, an 8 MB float32 chunk that stays in
# the 32 MB L3 between the two products. Forward + backward at N = 16384, D = 128, K = 4096 on the 2-core dev machine
# (benchmarks/bench_info_nce.py::test_chunk_rows, two runs, ms): 32 rows 355 / 401, 64: 261 / 366, 128: 247 / 340,
# 256: 239 / 336, 512: 240 / 300, 1024: 245 / 311. Of the equals, 512 has half the chunks of 256, so half the
# parallel regions, each a barrier that stalls when another process holds a core.
DEFAULT_CHUNK_ELEMENTS = 1 << 21


def _check(q: Tensor, k_pos: Tensor, queue: Tensor, temperature, chunk_elements) -> None:
    """The checker of info_nce: the public function, the op bodies (CPU and CUDA) and the fake implementation call
    it first."""
    check_tensor("q", q, 2, "(N, D)")
    check_tensor("k_pos", k_pos, 2, "(N, D)")
    check_tensor("queue", queue, 2, "(K, D)")
    check_same(("q", "k_pos", "queue"), (q, k_pos, queue))
    if q.shape != k_pos.shape:
        raise ValueError(f"q and k_pos must have the same shape (N, D), got {tuple(q.shape)} and "
                         f"{tuple(k_pos.shape)}")
    if q.shape[0] == 0:
        raise ValueError(f"q must have at least one row (the loss is a mean over rows), got shape {tuple(q.shape)}")
    if q.shape[1] == 0:
        raise ValueError(f"q must have a feature dimension D >= 1, got shape {tuple(q.shape)}")
    if queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must have shape (K, D) with D = {q.shape[1]} (q's feature dimension), got shape "
                         f"{tuple(queue.shape)} with D = {queue.shape[1]}")
    _validate.real("temperature", temperature, 0, low_open=True)
    _validate.positive_int("chunk_elements", chunk_elements)


def _grads_like(q: Tensor, compute_grad: bool) -> tuple[Tensor, Tensor]:
    """grad_q, grad_k: (N, D) when computed, (0, D) otherwise (so the output shapes depend only on the inputs)."""
    rows = q.shape[0] if compute_grad else 0
    return q.new_empty(rows, q.shape[1]), q.new_empty(rows, q.shape[1])


# ---------------------------------------------------------------------------------------------------------------
# The torch op. Its bodies make the inputs contiguous after the check (a no-op for contiguous ones; torch.mm would
# take a strided queue, but with another summation order than the contiguous one's).


@torch.library.custom_op("blindfast::info_nce", mutates_args=(), device_types="cpu")
def _info_nce(q: Tensor, k_pos: Tensor, queue: Tensor, temperature: float, compute_grad: bool,
              chunk_elements: int) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, grad_q, grad_k): the 0-dim loss and, if ``compute_grad``, its gradients w.r.t. q and k_pos."""
    _check(q, k_pos, queue, temperature, chunk_elements)
    q, k_pos, queue = q.contiguous(), k_pos.contiguous(), queue.contiguous()
    N, D = q.shape
    K = queue.shape[0]
    row_loss = q.new_empty(N)
    grad_q, grad_k = _grads_like(q, compute_grad)
    chunk_rows = min(N, max(1, chunk_elements // max(K, 1)))
    logits = q.new_empty(chunk_rows, K)
    negatives_grad = q.new_empty(chunk_rows, D) if compute_grad else None
    queue_t = queue.t()
    kernels = _backend.cpu()
    inv_tau, grad_scale = 1.0 / temperature, 1.0 / (N * temperature)
    is_double = q.dtype == torch.float64
    for start in range(0, N, chunk_rows):
        rows = min(chunk_rows, N - start)
        q_chunk = q[start:start + rows]
        chunk_logits = logits[:rows]
        torch.mm(q_chunk, queue_t, out=chunk_logits)
        kernels.info_nce_chunk(q_chunk.data_ptr(), k_pos[start].data_ptr(), chunk_logits.data_ptr(),
                               row_loss[start].data_ptr(), grad_q[start].data_ptr() if compute_grad else 0,
                               grad_k[start].data_ptr() if compute_grad else 0, rows, D, K, inv_tau, grad_scale,
                               is_double)
        if compute_grad:
            # The kernel wrote the positive's term g_i k_i; add the negatives' sum_j p_ij queue_j / (N tau). Not
            # with addmm_: for 1-3 rows torch's CPU addmm (beta = 1) loses ~20 float32 ulps (a short last chunk
            # failed the float32 test), where mm then add stays within torch's float32 error.
            torch.mm(chunk_logits, queue, out=negatives_grad[:rows])
            grad_q[start:start + rows] += negatives_grad[:rows]
    return row_loss.mean(), grad_q, grad_k


@_info_nce.register_kernel("cuda")
def _(q, k_pos, queue, temperature, compute_grad, chunk_elements):
    _check(q, k_pos, queue, temperature, chunk_elements)
    kernels = _backend.triton_kernels("info_nce")
    return kernels.info_nce(q.contiguous(), k_pos.contiguous(), queue.contiguous(), temperature, compute_grad)


@_info_nce.register_fake
def _(q, k_pos, queue, temperature, compute_grad, chunk_elements):
    _check(q, k_pos, queue, temperature, chunk_elements)
    return (q.new_empty(()), *_grads_like(q, compute_grad))


def _setup(ctx, inputs, output):
    _, grad_q, grad_k = output
    ctx.mark_non_differentiable(grad_q, grad_k)
    ctx.save_for_backward(grad_q, grad_k)


def _backward(ctx, grad_loss, _grad_of_grad_q, _grad_of_grad_k):
    if torch.is_grad_enabled():
        # The saved gradients are constants here: a double backward through them would be silently zero.
        raise NotImplementedError("info_nce supports first-order gradients only (called with create_graph=True)")
    grad_q, grad_k = ctx.saved_tensors
    if grad_q.shape[0] == 0:
        raise RuntimeError("blindfast::info_nce was called with compute_grad=False, so it has no gradient to give; "
                           "call blindfast.ops.info_nce.info_nce, which sets compute_grad when q or k_pos requires "
                           "grad")
    return (grad_loss * grad_q if ctx.needs_input_grad[0] else None,
            grad_loss * grad_k if ctx.needs_input_grad[1] else None, None, None, None, None)


_info_nce.register_autograd(_backward, setup_context=_setup)


def info_nce(q: Tensor, k_pos: Tensor, queue: Tensor, temperature: float, *,
             chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> Tensor:
    r"""InfoNCE loss of MoCo (He et al. 2020, Eq. 1), the positive at index 0:

    .. math:: \mathcal{L} = \frac{1}{N} \sum_{i=1}^{N} -\log
              \frac{\exp(q_i \cdot k_i / \tau)}{\exp(q_i \cdot k_i / \tau) + \sum_{j=1}^{K} \exp(q_i \cdot u_j / \tau)}

    with ``u_j`` the rows of ``queue``. The vectors are used as given (MoCo L2-normalises them before). The softmax
    is max-subtracted; the (N, 1 + K) logits are never stored whole (CPU: chunks of ``chunk_elements`` logits;
    CUDA: none at all). Differentiable w.r.t. ``q`` and ``k_pos`` (first order); ``queue`` is a constant buffer
    and gets no gradient (passing one that requires grad is an error). The gradients are computed in the forward
    when grad mode is on and ``q`` or ``k_pos`` requires grad, and only rescaled in the backward.

    Args:
        q: (N, D) queries, N >= 1.
        k_pos: (N, D) positive keys, one per query.
        queue: (K, D) negative keys.
        temperature: tau, finite and > 0.
        chunk_elements: CPU only: logits per chunk of rows (rows = max(1, chunk_elements // K)).
    Returns:
        0-dim tensor of q's dtype: the loss averaged over the N rows.
    """
    _check(q, k_pos, queue, temperature, chunk_elements)
    if queue.requires_grad and torch.is_grad_enabled():  # the op body runs below autograd: only here can it tell
        raise ValueError("queue must not require grad: info_nce treats it as a constant buffer (MoCo's queue of "
                         "past keys) and gives it no gradient; pass queue.detach(), got requires_grad=True")
    compute_grad = torch.is_grad_enabled() and (q.requires_grad or k_pos.requires_grad)
    return _info_nce(q, k_pos, queue, float(temperature), compute_grad, chunk_elements)[0]
