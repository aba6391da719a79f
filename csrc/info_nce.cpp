// CPU kernel of the fused InfoNCE loss (see info_nce.h).
//
// Per row, three sweeps over its K logits: the max (read from wherever BLAS left the chunk), then exp and its sum
// (the row, 16 kB for K = 4096 floats, is now in L1), then, with gradients, the scaling to p / (N tau) in place.
// The unfused MoCo reference instead makes 5-7 passes over the whole (N, 1 + K) array in memory (cat, divide,
// log-softmax, nll and their backward).
#include "info_nce.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "simd.h"
#include "simd_math.h"

namespace blindfast {
namespace {

// Independent accumulators per reduction, so consecutive vectors do not wait on one add's latency. Measured per
// logit, one thread, a 256 x 4096 float chunk (no gradient / gradient): 1: 0.53-0.66 / 1.24 ns, 2: 0.49 / 0.96 ns,
// 4: 0.49 / 1.09 ns, 8: 0.52 / 1.15 ns.
constexpr int kUnroll = 2;
// Below this many logits a chunk runs on one thread: 2^14 take 8-16 us on one (0.5-1 ns each, above), where a
// second thread would save less than the fork / join of a team costs on a loaded machine.
constexpr int64_t kParallelLogits = int64_t(1) << 14;

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  using S = Simd<T>;
  constexpr int W = S::width;
  typename S::vec acc[kUnroll] = {};
  int64_t j = 0;
  for (; j + kUnroll * W <= n; j += kUnroll * W)
    for (int u = 0; u < kUnroll; ++u) acc[u] += S::load(a + j + u * W) * S::load(b + j + u * W);
  for (; j + W <= n; j += W) acc[0] += S::load(a + j) * S::load(b + j);
  for (int u = 1; u < kUnroll; ++u) acc[0] += acc[u];
  T sum = S::sum(acc[0]);
  for (; j < n; ++j) sum += a[j] * b[j];
  return sum;
}

template <typename T>
T max_of(const T* x, int64_t n) {
  using S = Simd<T>;
  constexpr int W = S::width;
  T result = -INFINITY;
  int64_t j = 0;
  if (n >= W) {
    typename S::vec acc[kUnroll];
    for (int u = 0; u < kUnroll; ++u) acc[u] = S::load(x);
    for (; j + kUnroll * W <= n; j += kUnroll * W)
      for (int u = 0; u < kUnroll; ++u) {
        const typename S::vec v = S::load(x + j + u * W);
        acc[u] = v > acc[u] ? v : acc[u];
      }
    for (; j + W <= n; j += W) {
      const typename S::vec v = S::load(x + j);
      acc[0] = v > acc[0] ? v : acc[0];
    }
    for (int u = 1; u < kUnroll; ++u) acc[0] = acc[u] > acc[0] ? acc[u] : acc[0];
    for (int l = 0; l < W; ++l) result = std::max(result, acc[0][l]);
  }
  for (; j < n; ++j) result = std::max(result, x[j]);
  return result;
}

// sum_j exp(x_j * inv_tau - shift); with store, x_j is overwritten by its exp.
template <typename T, bool store>
T sum_exp(T* x, int64_t n, T inv_tau, T shift) {
  using S = Simd<T>;
  constexpr int W = S::width;
  const typename S::vec scale = S::broadcast(inv_tau), offset = S::broadcast(shift);
  typename S::vec acc[kUnroll] = {};
  int64_t j = 0;
  for (; j + kUnroll * W <= n; j += kUnroll * W)
    for (int u = 0; u < kUnroll; ++u) {
      const typename S::vec e = simd_exp<T>(S::load(x + j + u * W) * scale - offset);
      if constexpr (store) S::store(x + j + u * W, e);
      acc[u] += e;
    }
  for (; j + W <= n; j += W) {
    const typename S::vec e = simd_exp<T>(S::load(x + j) * scale - offset);
    if constexpr (store) S::store(x + j, e);
    acc[0] += e;
  }
  for (int u = 1; u < kUnroll; ++u) acc[0] += acc[u];
  T sum = S::sum(acc[0]);
  for (; j < n; ++j) {
    const T e = std::exp(x[j] * inv_tau - shift);
    if constexpr (store) x[j] = e;
    sum += e;
  }
  return sum;
}

template <typename T>
void scale_in_place(T* x, int64_t n, T factor) {
  using S = Simd<T>;
  constexpr int W = S::width;
  int64_t j = 0;
  for (; j + W <= n; j += W) S::store(x + j, S::load(x + j) * factor);
  for (; j < n; ++j) x[j] *= factor;
}

}  // namespace

template <typename T>
void info_nce_chunk_cpu(const T* q, const T* k_pos, T* logits, T* row_loss, T* grad_q, T* grad_k,
                        const InfoNceChunk& c) {
  const T inv_tau = T(c.inv_tau), grad_scale = T(c.grad_scale);
  const bool with_grad = grad_q != nullptr;
#pragma omp parallel for schedule(static) if (c.rows * c.K >= kParallelLogits)
  for (int64_t i = 0; i < c.rows; ++i) {
    const T* q_i = q + i * c.D;      // [D]
    const T* k_i = k_pos + i * c.D;  // [D]
    T* l_i = logits + i * c.K;       // [K]
    const T positive = dot(q_i, k_i, c.D) * inv_tau;
    // tau > 0, so max_j(l_ij) / tau is the max of the scaled logits.
    const T shift = std::max(positive, max_of(l_i, c.K) * inv_tau);
    const T positive_exp = std::exp(positive - shift);
    const T negatives = with_grad ? sum_exp<T, true>(l_i, c.K, inv_tau, shift)
                                  : sum_exp<T, false>(l_i, c.K, inv_tau, shift);
    const T total = positive_exp + negatives;
    // logsumexp - positive = (shift - positive) + log(total). When the positive is the max, positive_exp == 1 and
    // log1p(negatives) keeps the loss's relative accuracy as it goes to 0, where log(1 + negatives) would not.
    row_loss[i] = (shift - positive) + std::log1p((positive_exp - T(1)) + negatives);
    if (!with_grad) continue;
    scale_in_place(l_i, c.K, grad_scale / total);
    // p_i0 - 1 = -negatives / total, without the cancellation of p_i0 - 1 as p_i0 -> 1.
    const T g = -(negatives / total) * grad_scale;
    for (int64_t d = 0; d < c.D; ++d) {
      grad_q[i * c.D + d] = g * k_i[d];
      grad_k[i * c.D + d] = g * q_i[d];
    }
  }
}

template <typename T>
void simd_exp_cpu(const T* x, T* out, int64_t n) {
  using S = Simd<T>;
  constexpr int W = S::width;
  int64_t j = 0;
  for (; j + W <= n; j += W) S::store(out + j, simd_exp<T>(S::load(x + j)));
  // The tail through a zero-padded vector, so that every element goes through the same code.
  if (j < n) {
    T tail[W] = {};
    std::copy(x + j, x + n, tail);
    const typename S::vec e = simd_exp<T>(S::load(tail));
    for (int64_t l = 0; l < n - j; ++l) out[j + l] = e[l];
  }
}

template void info_nce_chunk_cpu<float>(const float*, const float*, float*, float*, float*, float*,
                                        const InfoNceChunk&);
template void info_nce_chunk_cpu<double>(const double*, const double*, double*, double*, double*, double*,
                                         const InfoNceChunk&);
template void simd_exp_cpu<float>(const float*, float*, int64_t);
template void simd_exp_cpu<double>(const double*, double*, int64_t);

}  // namespace blindfast
