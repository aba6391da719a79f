// InfoNCE loss of MoCo (He et al. 2020, Eq. 1), fused over one chunk of rows.
//
//   s_i0 = q_i . k_i / tau,   s_ij = q_i . queue_j / tau (j = 1..K),   loss_i = logsumexp_j(s_ij) - s_i0
//
// The caller computes the negative dot products of the chunk with BLAS (logits = q_chunk @ queue^T); this kernel
// does everything else in one sweep per row, so the (N, 1 + K) logits never exist whole. With gradients it also
// overwrites logits with d loss / d l_ij = p_ij / (N tau) (p = softmax(s_i)), from which the caller finishes
// grad_q with one more product, grad_q_chunk += logits @ queue (see blindfast/ops/info_nce.py).
#pragma once
#include <cstdint>

namespace blindfast {

struct InfoNceChunk {
  int64_t rows;         // rows of this chunk
  int64_t D;            // feature dimension
  int64_t K;            // queue length (negatives per row)
  double inv_tau;       // 1 / temperature
  double grad_scale;    // 1 / (N tau), N the rows of the whole batch (the loss is a mean over them)
};

// q, k_pos: [rows, D]; logits: [rows, K] (in: q . queue_j; out, if grad_q: p_ij / (N tau), else unchanged);
// row_loss: [rows] (out: loss_i).
// grad_q, grad_k: [rows, D] or both null (no gradient): out, grad_q_i = g_i k_i and grad_k_i = g_i q_i with the
// positive's coefficient g_i = (p_i0 - 1) / (N tau); the caller adds logits @ queue to grad_q.
template <typename T>
void info_nce_chunk_cpu(const T* q, const T* k_pos, T* logits, T* row_loss, T* grad_q, T* grad_k,
                        const InfoNceChunk& c);

// out_i = exp(x_i) with the vectorised exp of simd_math.h (exposed for its accuracy test).  x, out: [n].
template <typename T>
void simd_exp_cpu(const T* x, T* out, int64_t n);

}  // namespace blindfast
