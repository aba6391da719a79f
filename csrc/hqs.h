// Half-quadratic-splitting (HQS) update of a blur kernel: the M-step of FastEM (Laroche et al. 2024) and LatentDEM
// (Bai et al. 2024), with circular boundaries and the kernel centre at index (kh/2, kw/2).
//
// Per HQS iteration the data step is, with X_ic = F x_hat[i, c], Y_c = F y[c], alpha = n * delta * sigma^2,
//
//   Z_full = F^-1[ (sum_ic conj(X_ic) Y_c + alpha F phi_pad) / (sum_ic |X_ic|^2 + alpha) ] = a + b (*) phi_pad,
//   a = F^-1[num / (den + alpha)],   b = F^-1[alpha / (den + alpha)]   (num, den: the two sums above),
//
// so that a and b are computed once per call and, restricted to the kernel support, the iteration is a small dense
// correlation with a (2kh-1) x (2kw-1) window of b (the caller does the FFTs and the crops; blindfast/ops/hqs.py):
//
//   Z[u, v] = a_crop[u, v] + sum_{u', v'} phi[u', v'] * b_window[u - u' + kh - 1, v - v' + kw - 1],
//   Z <- max(Z, 0) / sum(max(Z, 0))   (a delta at the centre when that sum is 0).
#pragma once
#include <cstdint>

namespace blindfast {

// Spectral terms of one call, one pass over the spectra. Complex numbers are interleaved (re, im) pairs.
// x_spec: [n, C, F, 2] with F = H * (W/2 + 1) the rfft2 frequencies; y_spec: [C, F, 2];
// ab: [2, F, 2] (out): ab[0] = num / (den + alpha), ab[1] = alpha / (den + alpha) + 0i.
template <typename T>
void hqs_combine_cpu(const T* x_spec, const T* y_spec, T* ab, int64_t n, int64_t C, int64_t F, T alpha);

// `iters` data steps from phi (each one's normalised output is the next one's phi); z gets the last Z.
// a_crop: [kh, kw]; b_window: [2kh-1, 2kw-1]; phi: [kh, kw]; z: [kh, kw] (out).
template <typename T>
void hqs_step_cpu(const T* a_crop, const T* b_window, const T* phi, T* z, int64_t kh, int64_t kw, int64_t iters);

// Re-centring of a denoised kernel: clip at 0, move the centre of mass to (kh/2, kw/2) by the nearest integer shift
// (floor(offset + 1/2)), zero fill, renormalise to sum 1; a delta at the centre when nothing positive is left.
// kernel: [kh, kw]; out: [kh, kw].
template <typename T>
void hqs_recentre_cpu(const T* kernel, T* out, int64_t kh, int64_t kw);

}  // namespace blindfast
