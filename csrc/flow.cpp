// Fused element-wise kernels for flow matching, diffusion sampling and the EMA (see flow.h). All memory-bound: each
// reads its inputs once and writes its outputs once, vectorised (Simd<T>), OpenMP over blocks of elements.
#include "flow.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "simd.h"

namespace blindfast {
namespace {

// Elements per OpenMP work item: 64 KiB of float32, enough to amortise the scheduling and stream well.
constexpr int64_t kBlock = 1 << 14;
// Below this many elements one thread finishes before a second one would have started.
constexpr int64_t kParallelMin = 1 << 15;
// Outputs at least this large are written with non-temporal stores: they would be evicted from the caches before
// anyone reads them, and streaming stores skip the read-for-ownership of each destination line (one stream of
// traffic in five for fused_step).
constexpr int64_t kStreamBytes = int64_t(8) << 20;

// body(item, row, lo, hi) for blocks [lo, hi) of kBlock elements in each of `rows` rows of n elements.
template <typename Body>
void for_row_blocks(int64_t rows, int64_t n, Body body) {
  const int64_t per_row = (n + kBlock - 1) / kBlock, items = rows * per_row;
#pragma omp parallel for schedule(static) if (rows * n >= kParallelMin)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t row = item / per_row, lo = (item % per_row) * kBlock;
    body(item, row, lo, std::min(n, lo + kBlock));
  }
}

template <typename T>
struct Loaders {
  using V = Simd<T>;
  static typename V::vec vec(const T* p) { return V::load(p); }
  static T scalar(const T* p) { return *p; }
};

// out[i] = f(load, i) for i in [lo, hi): f is written once, generic over vectors and scalars (load returns either).
template <typename T, typename F>
inline void map_range(T* out, int64_t lo, int64_t hi, bool stream, F f) {
  using V = Simd<T>;
  using vec = typename V::vec;
  const auto vload = Loaders<T>::vec;
  const auto sload = Loaders<T>::scalar;
  int64_t i = lo;
  if (stream) {
    for (; i < hi && reinterpret_cast<uintptr_t>(out + i) % sizeof(vec) != 0; ++i) out[i] = f(sload, i);
    for (; i + V::width <= hi; i += V::width) V::stream(out + i, f(vload, i));
    V::fence();
  } else {
    for (; i + V::width <= hi; i += V::width) V::store(out + i, f(vload, i));
  }
  for (; i < hi; ++i) out[i] = f(sload, i);
}

// Same-type broadcast of a scalar: a vector for vector v, the scalar itself for scalar v.
template <typename V, typename T>
inline V splat(T s) {
  return V{} + s;
}

template <typename V>
inline V clamp_between(V v, V lo, V hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// Whether an output of n elements is written with streaming stores.
template <typename T>
bool streams(int64_t n) {
  return n * int64_t(sizeof(T)) >= kStreamBytes;
}

template <typename T, bool kHasZ, bool kHasW, bool kClip>
void fused_step_impl(const T* x, const T* e, const T* z, const T* w, T* out, int64_t n, const StepCoefficients& k) {
  const T a = T(k.a), p = T(k.p), q = T(k.q), lo = T(k.lo), hi = T(k.hi), b = T(k.b), c = T(k.c), s = T(k.s),
          g = T(k.g);
  const bool stream = streams<T>(n);
  for_row_blocks(1, n, [&](int64_t, int64_t, int64_t begin, int64_t end) {
    map_range(out, begin, end, stream, [&](auto ld, int64_t i) {
      const auto xi = ld(x + i), ei = ld(e + i);
      auto r = b * xi + c * ei;
      if constexpr (kClip) {
        using V = decltype(xi);
        r += a * clamp_between(p * xi + q * ei, splat<V>(lo), splat<V>(hi));
      } else {
        r += a * (p * xi + q * ei);
      }
      if constexpr (kHasZ) r += s * ld(z + i);
      if constexpr (kHasW) r += g * ld(w + i);
      return r;
    });
  });
}

}  // namespace

template <typename T>
void flow_interpolate_cpu(const T* x0, const T* x1, const T* t, T* out, int64_t B, int64_t n) {
  const bool stream = streams<T>(B * n);
  for_row_blocks(B, n, [&](int64_t, int64_t row, int64_t lo, int64_t hi) {
    const T tb = t[row];
    const int64_t base = row * n;
    map_range(out + base, lo, hi, stream, [&](auto ld, int64_t i) {
      const auto a = ld(x0 + base + i);
      return a + tb * (ld(x1 + base + i) - a);
    });
  });
}

template <typename T>
void flow_interpolate_backward_cpu(const T* g, const T* x0, const T* x1, const T* t, T* dx0, T* dx1, T* dt,
                                   int64_t B, int64_t n) {
  using V = Simd<T>;
  const int64_t per_row = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(dt ? B * per_row : 0);
  for_row_blocks(B, n, [&](int64_t item, int64_t row, int64_t lo, int64_t hi) {
    const T tb = t[row], sb = T(1) - tb;
    const int64_t base = row * n;
    const T *gr = g + base, *x0r = x0 + base, *x1r = x1 + base;
    typename V::vec acc{};
    T tail = 0;
    int64_t i = lo;
    for (; i + V::width <= hi; i += V::width) {
      const auto gi = V::load(gr + i);
      if (dx0) V::store(dx0 + base + i, sb * gi);
      if (dx1) V::store(dx1 + base + i, tb * gi);
      if (dt) acc += gi * (V::load(x1r + i) - V::load(x0r + i));
    }
    for (; i < hi; ++i) {
      if (dx0) dx0[base + i] = sb * gr[i];
      if (dx1) dx1[base + i] = tb * gr[i];
      if (dt) tail += gr[i] * (x1r[i] - x0r[i]);
    }
    if (dt) partial[item] = double(V::sum(acc)) + double(tail);
  });
  // Fixed block partition, summed in order: the result does not depend on the thread count.
  for (int64_t row = 0; dt && row < B; ++row) {
    double sum = 0;
    for (int64_t j = 0; j < per_row; ++j) sum += partial[row * per_row + j];
    dt[row] = T(sum);
  }
}

template <typename T>
double flow_matching_loss_cpu(const T* v, const T* x0, const T* x1, const T* w, T* grad_v, int64_t B, int64_t n) {
  using V = Simd<T>;
  const int64_t per_row = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(B * per_row);
  const double inv_count = 1.0 / double(B * n);
  for_row_blocks(B, n, [&](int64_t item, int64_t row, int64_t lo, int64_t hi) {
    const T scale = T(2 * inv_count * (w ? double(w[row]) : 1.0));
    const int64_t base = row * n;
    const T *vr = v + base, *x0r = x0 + base, *x1r = x1 + base;
    T* gr = grad_v ? grad_v + base : nullptr;
    typename V::vec acc{};
    T tail = 0;
    int64_t i = lo;
    for (; i + V::width <= hi; i += V::width) {
      const auto diff = V::load(vr + i) - V::load(x1r + i) + V::load(x0r + i);
      acc += diff * diff;
      if (gr) V::store(gr + i, scale * diff);
    }
    for (; i < hi; ++i) {
      const T diff = vr[i] - x1r[i] + x0r[i];
      tail += diff * diff;
      if (gr) gr[i] = scale * diff;
    }
    partial[item] = (double(V::sum(acc)) + double(tail)) * (w ? double(w[row]) : 1.0);
  });
  double sum = 0;
  for (double s : partial) sum += s;
  return sum * inv_count;
}

template <typename T>
void fused_step_cpu(const T* x, const T* e, const T* z, const T* w, T* out, int64_t n, const StepCoefficients& k) {
  const int variant = (z ? 4 : 0) | (w ? 2 : 0) | (k.clip ? 1 : 0);
  switch (variant) {
    case 0: return fused_step_impl<T, false, false, false>(x, e, z, w, out, n, k);
    case 1: return fused_step_impl<T, false, false, true>(x, e, z, w, out, n, k);
    case 2: return fused_step_impl<T, false, true, false>(x, e, z, w, out, n, k);
    case 3: return fused_step_impl<T, false, true, true>(x, e, z, w, out, n, k);
    case 4: return fused_step_impl<T, true, false, false>(x, e, z, w, out, n, k);
    case 5: return fused_step_impl<T, true, false, true>(x, e, z, w, out, n, k);
    case 6: return fused_step_impl<T, true, true, false>(x, e, z, w, out, n, k);
    default: return fused_step_impl<T, true, true, true>(x, e, z, w, out, n, k);
  }
}

template <typename T>
void lerp_multi_cpu(T* const* ema, const T* const* src, const int64_t* sizes, int64_t count, double weight) {
  struct Item {
    int64_t tensor, lo, hi;
  };
  std::vector<Item> items;
  int64_t total = 0;
  for (int64_t k = 0; k < count; ++k) {
    for (int64_t lo = 0; lo < sizes[k]; lo += kBlock) items.push_back({k, lo, std::min(sizes[k], lo + kBlock)});
    total += sizes[k];
  }
  const T wt = T(weight);
  const int64_t n_items = int64_t(items.size());
  // In place: every destination line is read first, so streaming stores would save nothing.
#pragma omp parallel for schedule(static) if (total >= kParallelMin)
  for (int64_t j = 0; j < n_items; ++j) {
    const Item it = items[j];
    T* dst = ema[it.tensor];
    const T* s = src[it.tensor];
    map_range(dst, it.lo, it.hi, false, [&](auto ld, int64_t i) {
      const auto d = ld(dst + i);
      return d + wt * (ld(s + i) - d);
    });
  }
}

#define BLINDFAST_INSTANTIATE(T)                                                                                   \
  template void flow_interpolate_cpu<T>(const T*, const T*, const T*, T*, int64_t, int64_t);                       \
  template void flow_interpolate_backward_cpu<T>(const T*, const T*, const T*, const T*, T*, T*, T*, int64_t,      \
                                                 int64_t);                                                         \
  template double flow_matching_loss_cpu<T>(const T*, const T*, const T*, const T*, T*, int64_t, int64_t);         \
  template void fused_step_cpu<T>(const T*, const T*, const T*, const T*, T*, int64_t, const StepCoefficients&);   \
  template void lerp_multi_cpu<T>(T* const*, const T* const*, const int64_t*, int64_t, double);
BLINDFAST_INSTANTIATE(float)
BLINDFAST_INSTANTIATE(double)
#undef BLINDFAST_INSTANTIATE

}  // namespace blindfast
