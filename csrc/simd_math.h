// Vectorised elementary functions on Simd<T>::vec (std::exp does not vectorise: GCC calls libm per element).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "simd.h"

namespace blindfast {

template <typename T>
struct ExpTraits;

// Taylor degree: the truncation error |r|^(n+1) / (n+1)! on |r| <= ln2 / 2 is 5.2e-9 (0.09 float ulp) for n = 7 and
// 4.1e-18 (0.04 double ulp) for n = 13, so what is left is the rounding: measured <= 0.79 / 0.74 ulp (float /
// double, every level, with or without FMA) against a long-double exp over [-104, 89] / [-746, 710]
// (tests/ops/test_info_nce.py::test_simd_exp_ulp checks <= 1 ulp).
template <>
struct ExpTraits<float> {
  using Bits = int32_t;
  static constexpr int mantissa_bits = 23;
  static constexpr Bits exponent_bias = 127;
  static constexpr float lowest = -104.0f;  // exp(-104) < 2^-150: rounds to 0
  static constexpr float highest = 89.0f;   // exp(89) > FLT_MAX: overflows to inf
  static constexpr float log2e = 1.44269504088896341f;
  // ln 2 = ln2_hi + ln2_lo with ln2_hi on 9 bits, so n * ln2_hi is exact for |n| < 2^15 (Cody & Waite).
  static constexpr float ln2_hi = 0.693359375f;
  static constexpr float ln2_lo = -2.12194440e-4f;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  static constexpr int degree = 7;
};

template <>
struct ExpTraits<double> {
  using Bits = int64_t;
  static constexpr int mantissa_bits = 52;
  static constexpr Bits exponent_bias = 1023;
  static constexpr double lowest = -746.0;  // exp(-746) < 2^-1075: rounds to 0
  static constexpr double highest = 710.0;  // exp(710) > DBL_MAX: overflows to inf
  static constexpr double log2e = 1.4426950408889634074;
  // fdlibm's split: ln2_hi has 21 trailing zero bits, so n * ln2_hi is exact for every n used here.
  static constexpr double ln2_hi = 6.93147180369123816490e-01;
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr int degree = 13;
};

// exp(x) for every lane: ~1 ulp, 0 below exp's underflow, inf above its overflow, NaN for NaN, subnormal results
// included. Branch-free: x = n ln2 + r with |r| <= ln2 / 2, e^r by a Taylor polynomial (Horner), and 2^n applied as
// 2^(n/2) * 2^(n - n/2) so that both factors are normal numbers over the whole clamped range of n.
template <typename T>
inline typename Simd<T>::vec simd_exp(typename Simd<T>::vec x) {
  using E = ExpTraits<T>;
  using vec = typename Simd<T>::vec;
  using Bits = typename E::Bits;
  typedef Bits bits_vec __attribute__((vector_size(sizeof(vec))));
  typedef std::make_unsigned_t<Bits> ubits_vec __attribute__((vector_size(sizeof(vec))));

  const vec lowest = Simd<T>::broadcast(E::lowest), highest = Simd<T>::broadcast(E::highest);
  x = x < lowest ? lowest : x;  // comparisons with NaN are false: NaN passes through both clamps
  x = x > highest ? highest : x;

  const vec magic = Simd<T>::broadcast(E::round_magic);
  const vec shifted = x * E::log2e + magic;  // round-to-nearest of x / ln 2 lands in the low mantissa bits
  const vec n = shifted - magic;
  const vec r = (x - n * E::ln2_hi) - n * E::ln2_lo;

  // e^r = 1 + r + r^2 q(r), q by Horner on the Taylor coefficients 1/k!, k = degree .. 2. The leading 1 + r is
  // added with its rounding error carried (Fast2Sum, exact as |r| < 1), so what is left is one final rounding and
  // the small r^2 q term's: ~0.8 ulp at most with or without FMA (plain Horner to k = 0 reaches 1.2 ulp on the
  // baseline level, whose multiply and add round separately).
  T coefficient[E::degree + 1];
  coefficient[0] = 1;
  for (int k = 1; k <= E::degree; ++k) coefficient[k] = coefficient[k - 1] / T(k);
  vec q = Simd<T>::broadcast(coefficient[E::degree]);
  for (int k = E::degree - 1; k >= 2; --k) q = q * r + coefficient[k];
  const vec one = Simd<T>::broadcast(T(1));
  const vec head = one + r;
  const vec head_error = (one - head) + r;
  const vec p = head + (head_error + r * r * q);

  bits_vec shifted_bits, magic_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof(vec));
  std::memcpy(&magic_bits, &magic, sizeof(vec));
  const bits_vec n_int = shifted_bits - magic_bits;
  const bits_vec n_half = n_int >> 1;
  const ubits_vec scale1_bits = (ubits_vec)(n_half + E::exponent_bias) << E::mantissa_bits;
  const ubits_vec scale2_bits = (ubits_vec)(n_int - n_half + E::exponent_bias) << E::mantissa_bits;
  vec scale1, scale2;
  std::memcpy(&scale1, &scale1_bits, sizeof(vec));
  std::memcpy(&scale2, &scale2_bits, sizeof(vec));
  return p * scale1 * scale2;
}

}  // namespace blindfast
