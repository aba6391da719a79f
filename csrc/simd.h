// Portable fixed-width vectors (GCC/Clang vector extensions). 32 bytes: one AVX2 register where the level being
// compiled has AVX (CMakeLists.txt: one module per level), two SSE/NEON registers otherwise; the compiler picks the
// instructions.
#pragma once
#include <cstring>
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace blindfast {

template <typename T>
struct Simd {
  typedef T vec __attribute__((vector_size(32)));
  static constexpr int width = 32 / sizeof(T);

  static inline vec load(const T* p) {
    vec v;
    std::memcpy(&v, p, sizeof(vec));
    return v;
  }
  static inline void store(T* p, vec v) { std::memcpy(p, &v, sizeof(vec)); }
  // Non-temporal store to a 32-byte aligned p: bypasses the caches and skips the read-for-ownership of the line.
  // Call fence() before another thread may read what was streamed. A plain store where AVX is missing.
  static inline void stream(T* p, vec v) {
#if defined(__AVX__)
    if constexpr (sizeof(T) == 4)
      _mm256_stream_ps(reinterpret_cast<float*>(p), (__m256)v);
    else
      _mm256_stream_pd(reinterpret_cast<double*>(p), (__m256d)v);
#else
    store(p, v);
#endif
  }
  static inline void fence() {
#if defined(__AVX__)
    _mm_sfence();
#endif
  }
  // -0.0 + s == s for every s (also -0.0), so the compiler drops the add and emits a plain broadcast.
  static inline vec broadcast(T s) { return -vec{} + s; }
  // Keeps v in a register: without it GCC folds one load into every FMA that uses it, doubling the loads of
  // the two-kernel strips (measured: 7 -> 4 cycles per 8 FMAs on Zen). Only where one register holds 32 bytes
  // (AVX): on SSE or NEON the vector is a register pair, which no asm constraint names.
  static inline vec pin(vec v) {
#if defined(__AVX__)
    asm("" : "+x"(v));
#endif
    return v;
  }
  static inline T sum(vec v) {
    T s = 0;
    for (int i = 0; i < width; ++i) s += v[i];
    return s;
  }
};

}  // namespace blindfast
