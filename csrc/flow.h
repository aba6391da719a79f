// Fused element-wise kernels of flow matching / diffusion sampling and the EMA of training (memory-bound: one
// pass over each tensor instead of one pass per torch operator).
//
// Flow-matching convention (blindfast-wide): t = 0 noise x0, t = 1 data x1, x_t = (1 - t) x0 + t x1, target x1 - x0.
#pragma once
#include <cstdint>

namespace blindfast {

// out = x0 + t[b] (x1 - x0).  x0, x1, out: [B, n]; t: [B].
template <typename T>
void flow_interpolate_cpu(const T* x0, const T* x1, const T* t, T* out, int64_t B, int64_t n);

// Backward of flow_interpolate for grad g: dx0 = (1 - t[b]) g, dx1 = t[b] g, dt[b] = sum_j g (x1 - x0).
// g, x0, x1, dx0, dx1: [B, n]; t, dt: [B]. dx0 / dx1 / dt may be null (not wanted).
template <typename T>
void flow_interpolate_backward_cpu(const T* g, const T* x0, const T* x1, const T* t, T* dx0, T* dx1, T* dt,
                                   int64_t B, int64_t n);

// Returns loss = sum_b w[b] sum_j (v - (x1 - x0))^2 / (B n) and, if grad_v is not null, writes its gradient
// grad_v = 2 w[b] (v - (x1 - x0)) / (B n) in the same pass.  v, x0, x1, grad_v: [B, n]; w: [B] or null (w = 1).
template <typename T>
double flow_matching_loss_cpu(const T* v, const T* x0, const T* x1, const T* w, T* grad_v, int64_t B, int64_t n);

// One sampler step, every ODE / SDE update of blindfast in one form:
//   out = a * clamp(p x + q e, lo, hi) + b x + c e + s z + g w
// (the clamp only if clip). x, e, out: [n]; z, w: [n] or null (their terms dropped).
struct StepCoefficients {
  double a, p, q, lo, hi, b, c, s, g;
  bool clip;
};
template <typename T>
void fused_step_cpu(const T* x, const T* e, const T* z, const T* w, T* out, int64_t n, const StepCoefficients& k);

// Multi-tensor lerp, in place: ema[k][i] += weight (src[k][i] - ema[k][i]) for k < count, i < sizes[k].
template <typename T>
void lerp_multi_cpu(T* const* ema, const T* const* src, const int64_t* sizes, int64_t count, double weight);

}  // namespace blindfast
