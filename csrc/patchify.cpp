// Patch extraction with fused normalisation and its adjoint, overlap-add (see patchify.h). Both are memory-bound
// copies: every patch row is a contiguous segment of an image row, so both kernels move whole segments with
// vector loads and stores, OpenMP over image rows (patchify) or bands of `stride` rows (overlap_add). overlap_add
// is a gather over the output (each thread owns the image rows it writes), so it needs no atomics and no
// per-thread copies of the image.
#include "patchify.h"

#include <algorithm>

#include "simd.h"

namespace blindfast {
namespace {

// Below this many elements moved, one thread finishes before a second one would have started.
constexpr int64_t kParallelMin = int64_t(1) << 15;
// Patch outputs larger than the last-level cache (32 MiB on the Zen 3 machine this was tuned on) are written with
// non-temporal stores: they would be evicted before the encoder reads them, and streaming stores skip the
// read-for-ownership of every destination line. Measured on 2 cores, float32, normalised, warm pages (medians of
// 15): (1, 3, 1024, 1024) size 64 stride 32 (45 MiB): 1.7 ms streamed vs 2.7-3.0 ms plain; (2, 3, 512, 512) size
// 64 stride 8 (190 MiB): 11.5 vs 14.5-18.6 ms; but (16, 3, 128, 128) size 32 stride 8 (31.7 MiB, fits the cache):
// 1.2 vs 0.87 ms, plain wins.
constexpr int64_t kStreamBytes = int64_t(32) << 20;

// dst[j] = (src[j] - mean) * inv_std (kNormalise) or src[j], for j < n. With kStream, dst is 32-byte aligned and n
// a multiple of the vector width.
template <typename T, bool kNormalise, bool kStream>
inline void copy_segment(T* __restrict dst, const T* __restrict src, int64_t n, T mean, T inv_std) {
  using V = Simd<T>;
  const auto mean_v = V::broadcast(mean), inv_std_v = V::broadcast(inv_std);
  int64_t j = 0;
  for (; j + V::width <= n; j += V::width) {
    auto v = V::load(src + j);
    if constexpr (kNormalise) v = (v - mean_v) * inv_std_v;
    if constexpr (kStream)
      V::stream(dst + j, v);
    else
      V::store(dst + j, v);
  }
  for (; j < n; ++j) dst[j] = kNormalise ? (src[j] - mean) * inv_std : src[j];
}

// dst[j] += src[j] for j < n.
template <typename T>
inline void add_segment(T* __restrict dst, const T* __restrict src, int64_t n) {
  using V = Simd<T>;
  int64_t j = 0;
  for (; j + V::width <= n; j += V::width) V::store(dst + j, V::load(dst + j) + V::load(src + j));
  for (; j < n; ++j) dst[j] += src[j];
}

// dst[j] *= scale for j < n.
template <typename T>
inline void scale_segment(T* dst, int64_t n, T scale) {
  using V = Simd<T>;
  const auto scale_v = V::broadcast(scale);
  int64_t j = 0;
  for (; j + V::width <= n; j += V::width) V::store(dst + j, V::load(dst + j) * scale_v);
  for (; j < n; ++j) dst[j] *= scale;
}

template <typename T, bool kNormalise, bool kStream>
void patchify_impl(const T* x, const T* mean, const T* std, T* patches, const PatchGrid& g) {
  const int64_t S = g.size, L = g.Ly * g.Lx, patch_elems = g.C * S * S;
  // One work item per (b, py, c, r): image row py * stride + r of plane (b, c), cut into the Lx patch rows that
  // start on it. Consecutive items read consecutive rows and write consecutive rows of the same patches.
  const int64_t items = g.B * g.Ly * g.C * S;
#pragma omp parallel if (items * g.Lx * S >= kParallelMin)
  {
#pragma omp for schedule(static) nowait
    for (int64_t item = 0; item < items; ++item) {
      const int64_t r = item % S, c = (item / S) % g.C, py = (item / (S * g.C)) % g.Ly, b = item / (S * g.C * g.Ly);
      const T* src = x + ((b * g.C + c) * g.H + py * g.stride + r) * g.W;
      T* dst = patches + ((b * L + py * g.Lx) * g.C + c) * S * S + r * S;
      const T mean_c = mean ? mean[c] : T(0), inv_std_c = std ? T(1) / std[c] : T(1);
      for (int64_t px = 0; px < g.Lx; ++px)
        copy_segment<T, kNormalise, kStream>(dst + px * patch_elems, src + px * g.stride, S, mean_c, inv_std_c);
    }
    // Streamed stores must be globally visible before another thread (or the caller) reads the patches.
    if constexpr (kStream) Simd<T>::fence();
  }
}

}  // namespace

template <typename T>
void patchify_cpu(const T* x, const T* mean, const T* std, T* patches, const PatchGrid& g) {
  using V = Simd<T>;
  const int64_t out_bytes = g.B * g.Ly * g.Lx * g.C * g.size * g.size * int64_t(sizeof(T));
  // Streaming needs every patch row to start on a vector boundary: an aligned base and whole vectors per row.
  const bool stream = out_bytes > kStreamBytes && g.size % V::width == 0 &&
                      reinterpret_cast<uintptr_t>(patches) % sizeof(typename V::vec) == 0;
  const bool normalise = mean != nullptr || std != nullptr;
  if (normalise && stream)
    patchify_impl<T, true, true>(x, mean, std, patches, g);
  else if (normalise)
    patchify_impl<T, true, false>(x, mean, std, patches, g);
  else if (stream)
    patchify_impl<T, false, true>(x, mean, std, patches, g);
  else
    patchify_impl<T, false, false>(x, mean, std, patches, g);
}

template <typename T>
void overlap_add_cpu(const T* patches, const T* std, T* x, const PatchGrid& g) {
  const int64_t S = g.size, L = g.Ly * g.Lx, patch_elems = g.C * S * S;
  // One work item per band of `stride` image rows of a plane (b, c): band t holds rows [t * stride, (t + 1) *
  // stride), and patch row py covers part of it iff t - ceil(size / stride) < py <= t. Each covering patch adds a
  // contiguous block of its rows (up to stride * size elements, read front to back) to the band, which stays in
  // L1 / L2 while it is summed. Measured on 2 Zen 3 cores, float32, against one item per image row (which reads
  // one size-long segment from each of ceil(size / stride) * Lx patches in turn), medians of 15 over 3 runs:
  // (16, 3, 128, 128) size 32 stride 8: 1.2-2.7 ms vs 2.4-4.9 ms; (8, 3, 256, 256) size 64 stride 16 and
  // (1, 3, 1024, 1024) size 64 stride 32: within the noise; (2, 3, 512, 512) size 64 stride 8: 20-23 ms vs
  // 17-26 ms.
  const int64_t bands_per_plane = (g.H + g.stride - 1) / g.stride, items = g.B * g.C * bands_per_plane;
#pragma omp parallel for schedule(static) if (g.B * L * patch_elems >= kParallelMin)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t t = item % bands_per_plane, plane = item / bands_per_plane, c = plane % g.C, b = plane / g.C;
    const int64_t band_first = t * g.stride, band_end = std::min(band_first + g.stride, g.H);
    T* band = x + (plane * g.H + band_first) * g.W;
    std::fill(band, band + (band_end - band_first) * g.W, T(0));
    const int64_t py_first = std::max<int64_t>(0, t - (S + g.stride - 1) / g.stride + 1);
    const int64_t py_last = std::min(g.Ly - 1, t);
    for (int64_t py = py_first; py <= py_last; ++py) {
      // Rows of the band that patch row py covers: i < py * stride + size.
      const int64_t rows_end = std::min(band_end, py * g.stride + S);
      const T* src = patches + ((b * L + py * g.Lx) * g.C + c) * S * S + (band_first - py * g.stride) * S;
      for (int64_t px = 0; px < g.Lx; ++px)
        for (int64_t i = band_first; i < rows_end; ++i)
          add_segment(band + (i - band_first) * g.W + px * g.stride, src + px * patch_elems + (i - band_first) * S, S);
    }
    if (std) scale_segment(band, (band_end - band_first) * g.W, T(1) / std[c]);
  }
}

template void patchify_cpu<float>(const float*, const float*, const float*, float*, const PatchGrid&);
template void patchify_cpu<double>(const double*, const double*, const double*, double*, const PatchGrid&);
template void overlap_add_cpu<float>(const float*, const float*, float*, const PatchGrid&);
template void overlap_add_cpu<double>(const double*, const double*, double*, const PatchGrid&);

}  // namespace blindfast
