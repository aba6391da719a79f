// Boundary handling shared by the kernels: where a padded coordinate reads from in the unpadded image.
#pragma once
#include <cstdint>

namespace blindfast {

// Same codes as blindfast/ops/_padding.py.
enum class Padding : int { Valid = 0, Zeros = 1, Replicate = 2, Reflect = 3, Circular = 4 };

// Source index of padded coordinate p (already shifted by the leading pad) in [0, n), or -1 for a zero.
inline int64_t pad_source(int64_t p, int64_t n, Padding mode) {
  if (p >= 0 && p < n) return p;
  switch (mode) {
    case Padding::Replicate:
      return p < 0 ? 0 : n - 1;
    case Padding::Reflect: {  // mirror without repeating the edge sample (numpy "reflect", torch "reflect")
      if (n == 1) return 0;
      const int64_t period = 2 * (n - 1);
      int64_t q = p % period;
      if (q < 0) q += period;
      return q < n ? q : period - q;
    }
    case Padding::Circular: {
      int64_t q = p % n;
      return q < 0 ? q + n : q;
    }
    default:
      return -1;
  }
}

}  // namespace blindfast
