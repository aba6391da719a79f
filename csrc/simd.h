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
  static inline vec broadcast(T s) { return vec{} + s; }
  static inline T sum(vec v) {
    T s = 0;
    for (int i = 0; i < width; ++i) s += v[i];
    return s;
  }
};

}  // namespace blindfast
