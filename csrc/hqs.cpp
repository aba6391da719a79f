// CPU kernels of the HQS kernel update (see hqs.h).
//
// combine: memory-bound, one read of every spectrum. Frequencies are cut into chunks small enough that the three
// accumulators stay in L1 while the n * C spectra stream through; the complex products are accumulated lane by lane
// on the interleaved data (re*re', im*im' and re*im', im*re' lanes), so the loops are plain element-wise FMAs that
// the compiler vectorises, and the lane pairs are combined once per chunk.
//
// step: (kh kw)^2 multiply-adds per iteration, independent of the image size. Blocks of output rows are shared among
// threads; each block is computed in register tiles of rows x vectors along v, phi broadcast and b_window read with
// unaligned loads from a zero-padded copy (so tiles never test a boundary). One parallel region runs all iterations;
// the normalising sum is taken in row order by one thread, so the result does not depend on the thread count.
#include "hqs.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "simd.h"

namespace blindfast {
namespace {

// Complex frequencies per combine work unit: 3 accumulators + y and its swapped copy = 5 x 2 x 256 values, 20 kB in
// double, inside a 32 kB L1. Not tuned further: the pass runs at the memory bandwidth either way.
constexpr int64_t kChunk = 256;
// Below this many multiply-adds (kh kw)^2 * iters a step call runs on one thread: forking a team and its barriers
// (two per iteration) cost more than they save for kernels of a few pixels.
constexpr int64_t kParallelWork = int64_t(1) << 20;
// Register block of the step's correlation: kRowBlock output rows x kStripVectors vectors, 8 accumulators + 2 bw
// vectors + a broadcast fit the 16 AVX2 registers. Must match the row-count switch in clipped_rows.
constexpr int kRowBlock = 4;
constexpr int kStripVectors = 2;

// ---------------------------------------------------------------------------------------------------------------
// combine

template <typename T>
void combine_chunk(const T* __restrict x_spec, const T* __restrict y_spec, T* __restrict ab, int64_t n, int64_t C,
                   int64_t F, int64_t f0, int64_t len, T alpha) {
  // Lane sums over (i, c) of the interleaved products x * y, x * swap(y) and x * x, where swap exchanges re and im:
  //   conj(x) y = (xr yr + xi yi) + i (xr yi - xi yr),   |x|^2 = xr^2 + xi^2.
  alignas(64) T prod[2 * kChunk];
  alignas(64) T cross[2 * kChunk];
  alignas(64) T square[2 * kChunk];
  alignas(64) T y_swapped[2 * kChunk];
  const int64_t m = 2 * len;
  std::fill(prod, prod + m, T(0));
  std::fill(cross, cross + m, T(0));
  std::fill(square, square + m, T(0));
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict y = y_spec + (c * F + f0) * 2;
    for (int64_t k = 0; k < m; k += 2) {
      y_swapped[k] = y[k + 1];
      y_swapped[k + 1] = y[k];
    }
    for (int64_t i = 0; i < n; ++i) {
      const T* __restrict x = x_spec + ((i * C + c) * F + f0) * 2;
      for (int64_t k = 0; k < m; ++k) {
        prod[k] += x[k] * y[k];
        cross[k] += x[k] * y_swapped[k];
        square[k] += x[k] * x[k];
      }
    }
  }
  T* __restrict a_out = ab + f0 * 2;
  T* __restrict b_out = ab + (F + f0) * 2;
  for (int64_t j = 0; j < len; ++j) {
    const T denominator = square[2 * j] + square[2 * j + 1] + alpha;
    a_out[2 * j] = (prod[2 * j] + prod[2 * j + 1]) / denominator;
    a_out[2 * j + 1] = (cross[2 * j] - cross[2 * j + 1]) / denominator;
    b_out[2 * j] = alpha / denominator;
    b_out[2 * j + 1] = T(0);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// step

// Rows [u0, u0 + R) x NV vectors of columns [col0, col0 + NV * width) of the correlation, without a_crop:
//   out[r][v] = sum_{u', v'} phi[u', v'] * bw[u0 + r - u' + kh - 1, v - v' + kw - 1]
// Loops over the rows q of bw instead of u': a vector of bw row q is then shared by the R output rows (each with its
// own phi row u' = u0 + r + kh - 1 - q), NV + R loads per R * NV FMAs instead of one load per FMA. phi_pad holds phi
// with R - 1 zero rows above and below (row u' at u' + R - 1), so the u' outside [0, kh) at the ends of the q range
// need no test (phi_pad has kRowBlock - 1 >= R - 1 such rows). bw: rows of bw_stride >= kw_pad + kw - 1 values, zero past column 2kw - 2.
template <typename T, int R, int NV>
inline void correlate_block(const T* bw, int64_t bw_stride, const T* phi_pad, int64_t kh, int64_t kw, int64_t u0,
                            int64_t col0, T* out, int64_t out_stride) {
  using V = Simd<T>;
  typename V::vec acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = typename V::vec{};
  for (int64_t q = u0; q < u0 + R + kh - 1; ++q) {
    const T* b_row = bw + q * bw_stride + col0 + kw - 1;
    const T* phi_rows = phi_pad + (u0 + kh - 1 - q + kRowBlock - 1) * kw;  // output row r: phi_rows + r * kw
    for (int64_t vp = 0; vp < kw; ++vp) {
      typename V::vec b[NV];
      for (int j = 0; j < NV; ++j) b[j] = V::pin(V::load(b_row - vp + j * V::width));  // one load, R uses
      for (int r = 0; r < R; ++r) {
        const typename V::vec p = V::broadcast(phi_rows[r * kw + vp]);
        for (int j = 0; j < NV; ++j) acc[r][j] += p * b[j];
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) V::store(out + r * out_stride + j * V::width, acc[r][j]);
}

// Rows [u0, u0 + R) of the correlation into z_rows (rows of kw_pad values), all column strips.
template <typename T, int R>
void correlate_rows(const T* bw, int64_t bw_stride, const T* phi_pad, int64_t kh, int64_t kw, int64_t u0,
                    T* z_rows, int64_t kw_pad) {
  const int64_t width = Simd<T>::width;
  const int64_t vectors = kw_pad / width;
  T* out = z_rows + u0 * kw_pad;
  int64_t vec = 0;
  for (; vec + kStripVectors <= vectors; vec += kStripVectors)
    correlate_block<T, R, kStripVectors>(bw, bw_stride, phi_pad, kh, kw, u0, vec * width, out + vec * width, kw_pad);
  for (; vec < vectors; ++vec)
    correlate_block<T, R, 1>(bw, bw_stride, phi_pad, kh, kw, u0, vec * width, out + vec * width, kw_pad);
}

// Rows [u0, u0 + rows) of Z = max(a_crop + correlation, 0) (rows <= kRowBlock); returns each row's sum in row_sums.
template <typename T>
void clipped_rows(const T* a_crop, const T* bw, int64_t bw_stride, const T* phi_pad, int64_t kh, int64_t kw,
                  int64_t u0, int64_t rows, T* z_rows, int64_t kw_pad, T* row_sums) {
  switch (rows) {
    case 4: correlate_rows<T, 4>(bw, bw_stride, phi_pad, kh, kw, u0, z_rows, kw_pad); break;
    case 3: correlate_rows<T, 3>(bw, bw_stride, phi_pad, kh, kw, u0, z_rows, kw_pad); break;
    case 2: correlate_rows<T, 2>(bw, bw_stride, phi_pad, kh, kw, u0, z_rows, kw_pad); break;
    default: correlate_rows<T, 1>(bw, bw_stride, phi_pad, kh, kw, u0, z_rows, kw_pad); break;
  }
  for (int64_t u = u0; u < u0 + rows; ++u) {
    T* z_row = z_rows + u * kw_pad;
    T sum = 0;
    for (int64_t v = 0; v < kw; ++v) {
      z_row[v] = std::max(z_row[v] + a_crop[u * kw + v], T(0));
      sum += z_row[v];
    }
    row_sums[u] = sum;
  }
}

// dst = Z / sum(Z) from the clipped rows (z_rows: [kh, kw_pad], row_sums: [kh]); a centred delta if the sum is 0.
template <typename T>
void normalise(const T* z_rows, int64_t kw_pad, const T* row_sums, int64_t kh, int64_t kw, T* dst) {
  T total = 0;
  for (int64_t u = 0; u < kh; ++u) total += row_sums[u];
  if (!(total > T(0))) {
    std::fill(dst, dst + kh * kw, T(0));
    dst[(kh / 2) * kw + kw / 2] = T(1);
    return;
  }
  for (int64_t u = 0; u < kh; ++u)
    for (int64_t v = 0; v < kw; ++v) dst[u * kw + v] = z_rows[u * kw_pad + v] / total;
}

}  // namespace

template <typename T>
void hqs_combine_cpu(const T* x_spec, const T* y_spec, T* ab, int64_t n, int64_t C, int64_t F, T alpha) {
  const int64_t chunks = (F + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t f0 = chunk * kChunk;
    combine_chunk(x_spec, y_spec, ab, n, C, F, f0, std::min(kChunk, F - f0), alpha);
  }
}

template <typename T>
void hqs_step_cpu(const T* a_crop, const T* b_window, const T* phi, T* z, int64_t kh, int64_t kw, int64_t iters) {
  const int64_t width = Simd<T>::width;
  const int64_t kw_pad = (kw + width - 1) / width * width;
  const int64_t bw_cols = 2 * kw - 1;
  const int64_t bw_stride = kw_pad + kw - 1;
  std::vector<T> bw((2 * kh - 1) * bw_stride, T(0));
  for (int64_t r = 0; r < 2 * kh - 1; ++r)
    std::memcpy(bw.data() + r * bw_stride, b_window + r * bw_cols, sizeof(T) * bw_cols);
  // phi between kRowBlock - 1 zero rows above and below (see correlate_block).
  std::vector<T> phi_pad((kh + 2 * (kRowBlock - 1)) * kw, T(0));
  T* phi_now = phi_pad.data() + (kRowBlock - 1) * kw;
  std::copy(phi, phi + kh * kw, phi_now);
  std::vector<T> z_rows(kh * kw_pad);
  std::vector<T> row_sums(kh);
  const int64_t blocks = (kh + kRowBlock - 1) / kRowBlock;
  const bool parallel = blocks > 1 && (kh * kw) * (kh * kw) * iters >= kParallelWork;
#pragma omp parallel if (parallel)
  for (int64_t t = 0; t < iters; ++t) {
#pragma omp for schedule(static)
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t u0 = block * kRowBlock;
      clipped_rows(a_crop, bw.data(), bw_stride, phi_pad.data(), kh, kw, u0, std::min<int64_t>(kRowBlock, kh - u0),
                   z_rows.data(), kw_pad, row_sums.data());
    }
#pragma omp single
    normalise(z_rows.data(), kw_pad, row_sums.data(), kh, kw, t + 1 == iters ? z : phi_now);
  }
}

template <typename T>
void hqs_recentre_cpu(const T* kernel, T* out, int64_t kh, int64_t kw) {
  const auto centred_delta = [&] {
    std::fill(out, out + kh * kw, T(0));
    out[(kh / 2) * kw + kw / 2] = T(1);
  };
  // Centre of mass of the clipped kernel, accumulated in double (a float sum could move a rounding decision).
  double mass = 0, row_moment = 0, col_moment = 0;
  for (int64_t u = 0; u < kh; ++u)
    for (int64_t v = 0; v < kw; ++v) {
      const double w = std::max(double(kernel[u * kw + v]), 0.0);
      mass += w;
      row_moment += double(u) * w;
      col_moment += double(v) * w;
    }
  if (!(mass > 0)) return centred_delta();
  const int64_t shift_u = int64_t(std::floor(double(kh / 2) - row_moment / mass + 0.5));
  const int64_t shift_v = int64_t(std::floor(double(kw / 2) - col_moment / mass + 0.5));
  T kept = 0;
  for (int64_t u = 0; u < kh; ++u)
    for (int64_t v = 0; v < kw; ++v) {
      const int64_t su = u - shift_u, sv = v - shift_v;
      const bool inside = su >= 0 && su < kh && sv >= 0 && sv < kw;
      out[u * kw + v] = inside ? std::max(kernel[su * kw + sv], T(0)) : T(0);
      kept += out[u * kw + v];
    }
  // Mass shifted out of the window is dropped; all of it can go for an even size (a kernel on two opposite corners).
  if (!(kept > T(0))) return centred_delta();
  for (int64_t k = 0; k < kh * kw; ++k) out[k] /= kept;
}

template void hqs_combine_cpu<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, float);
template void hqs_combine_cpu<double>(const double*, const double*, double*, int64_t, int64_t, int64_t, double);
template void hqs_step_cpu<float>(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t);
template void hqs_step_cpu<double>(const double*, const double*, const double*, double*, int64_t, int64_t, int64_t);
template void hqs_recentre_cpu<float>(const float*, float*, int64_t, int64_t);
template void hqs_recentre_cpu<double>(const double*, double*, int64_t, int64_t);

}  // namespace blindfast
