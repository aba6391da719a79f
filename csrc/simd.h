// Portable fixed-width vectors (GCC/Clang vector extensions). 32 bytes: one AVX2 register where the building
// machine has AVX2, two SSE/NEON registers otherwise; the compiler picks the instructions.
#pragma once
#include <cstring>

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
  // -0.0 + s == s for every s (also -0.0), so the compiler drops the add and emits a plain broadcast.
  static inline vec broadcast(T s) { return -vec{} + s; }
  // Keeps v in a register: without it GCC folds one load into every FMA that uses it, doubling the loads of
  // the two-kernel strips (measured: 7 -> 4 cycles per 8 FMAs on Zen).
  static inline vec pin(vec v) {
#if defined(__x86_64__) || defined(__i386__)
    asm("" : "+x"(v));
#elif defined(__aarch64__)
    asm("" : "+w"(v));
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
