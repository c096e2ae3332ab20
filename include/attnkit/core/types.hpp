// SPDX-License-Identifier: Apache-2.0
// Element types: float and double compute; bf16 and fp16 storage (converted on load, float math).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "config.hpp"
#include "error.hpp"

namespace attnkit {

/// bfloat16 storage type: the high 16 bits of an IEEE float. Conversion from float rounds to
/// nearest even; NaN stays NaN.
struct bf16 {
  std::uint16_t bits = 0;
  bf16() = default;
  explicit bf16(float f) : bits(from_float(f)) {}
  explicit operator float() const { return to_float(bits); }

  static float to_float(std::uint16_t b) {
    std::uint32_t u = std::uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static std::uint16_t from_float(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return std::uint16_t(u >> 16);
  }
};

/// IEEE binary16 storage type. Conversion from float rounds to nearest even, handles
/// subnormals, overflow to inf and NaN.
struct fp16 {
  std::uint16_t bits = 0;
  fp16() = default;
  explicit fp16(float f) : bits(from_float(f)) {}
  explicit operator float() const { return to_float(bits); }

  static float to_float(std::uint16_t h) {
    std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
      if (man == 0) {
        u = sign;
      } else {  // subnormal: normalise
        int e = -1;
        do {
          ++e;
          man <<= 1;
        } while ((man & 0x400u) == 0);
        u = sign | (std::uint32_t(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
      }
    } else if (exp == 31) {
      u = sign | 0x7f800000u | (man << 13);
    } else {
      u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static std::uint16_t from_float(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
    std::uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return std::uint16_t(sign | 0x7e00u);   // NaN
    if (a >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (a < 0x38800000u) {                                       // subnormal or zero in fp16
      if (a < 0x33000000u) return sign;                          // < 2^-25: rounds to 0
      std::uint32_t man = (a & 0x7fffffu) | 0x800000u;
      int shift = 113 - int(a >> 23) + 13;  // 126 - exp + 1 ... bits to drop
      std::uint32_t r = man >> shift;
      std::uint32_t rem = man & ((1u << shift) - 1u), half = 1u << (shift - 1);
      if (rem > half || (rem == half && (r & 1u))) ++r;
      return std::uint16_t(sign | r);
    }
    std::uint32_t r = ((a >> 13) - ((127 - 15) << 10));
    std::uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
    return std::uint16_t(sign | r);
  }
};

/// The accumulation type for a storage type: double for double, float for everything else.
template <class T>
struct accum_type {
  using type = float;
};
template <>
struct accum_type<double> {
  using type = double;
};
template <class T>
using accum_t = typename accum_type<std::remove_cv_t<T>>::type;

template <class T>
inline constexpr bool is_storage_type_v =
    std::is_same_v<std::remove_cv_t<T>, float> || std::is_same_v<std::remove_cv_t<T>, double> ||
    std::is_same_v<std::remove_cv_t<T>, bf16> || std::is_same_v<std::remove_cv_t<T>, fp16>;

namespace detail {
/// Compile-time checks of an entry point's element types: q, keys/values and the rest are
/// storage types (float, double, bf16, fp16); double queries need double keys and values (the
/// kernels compute in accum_t of q).
template <class Q, class K, class V, class... Rest>
constexpr void check_element_types() {
  static_assert(is_storage_type_v<Q> && is_storage_type_v<K> && is_storage_type_v<V> &&
                    (is_storage_type_v<Rest> && ...),
                "attnkit: element types must be float, double, bf16 or fp16");
  static_assert(
      !std::is_same_v<accum_t<Q>, double> || (std::is_same_v<std::remove_cv_t<K>, double> &&
                                              std::is_same_v<std::remove_cv_t<V>, double>),
      "attnkit: double queries need double keys/values");
}

}  // namespace detail

/// Converts one stored element to the compute type A.
template <class A, class T>
ATTNKIT_ALWAYS_INLINE A to_compute(const T& x) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, fp16>)
    return A(static_cast<float>(x));
  else
    return A(x);
}

/// Converts a compute value to the storage type T.
template <class T, class A>
ATTNKIT_ALWAYS_INLINE T from_compute(A x) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, fp16>)
    return T(static_cast<float>(x));
  else
    return T(x);
}

template <class T>
inline const char* type_name() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>)
    return "float32";
  else if constexpr (std::is_same_v<U, double>)
    return "float64";
  else if constexpr (std::is_same_v<U, bf16>)
    return "bfloat16";
  else if constexpr (std::is_same_v<U, fp16>)
    return "float16";
  else if constexpr (std::is_same_v<U, std::int32_t>)
    return "int32";
  else if constexpr (std::is_same_v<U, std::int64_t>)
    return "int64";
  else
    return "unknown";
}

namespace detail {
/// An option the kernel applies in compute type A (scale, softcap) must be representable there:
/// zero, or of magnitude within A's normal range (a float kernel would otherwise compute with
/// inf or a flushed 0 where the double reference does not).
template <class A>
void check_option_range(const char* fn, const char* name, double value) {
  const double m = std::abs(value);
  if (value != 0 &&
      !(m <= double(std::numeric_limits<A>::max()) && m >= double(std::numeric_limits<A>::min())))
    fail(fn, ": option '", name, "' = ", value, " is outside the range of the ", type_name<A>(),
         " compute type [", double(std::numeric_limits<A>::min()), ", ",
         double(std::numeric_limits<A>::max()), "]");
}
}  // namespace detail

}  // namespace attnkit
