// SPDX-License-Identifier: Apache-2.0
// Bulk conversion between float and the 16-bit storage types, for engines that hold bf16/fp16
// tensors in raw std::uint16_t buffers. dst[i] = convert(src[i]) for i < n, bit for bit the
// scalar conversion of types.hpp (round to nearest even, NaN stays NaN, fp16 subnormals and
// overflow to inf), vectorised with xsimd integer lanes (no floating-point rounding mode, FTZ or
// DAZ dependence). src and dst must not overlap; neither needs any alignment.
//
// Layout guarantee (static_asserted below): bf16 and fp16 are standard-layout structs whose only
// member is `std::uint16_t bits` (the IEEE bit pattern), trivially copyable, of size and alignment
// 2 and without padding, so an array of n bf16 has the same bytes as n uint16_t bit patterns.
// That makes std::memcpy between a uint16_t buffer and a bf16/fp16 array (or std::bit_cast of
// one element in C++20) well defined. It does NOT make `reinterpret_cast<bf16*>(u16_ptr)` safe to
// dereference: no bf16 object lives in uint16_t storage, so reading through it breaks the strict
// aliasing rule ([basic.lval]; only char, unsigned char and std::byte may alias). The uint16_t
// overloads below are the safe way: they read and write the buffer with memcpy-based loads.
#pragma once

#include "warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "simd.hpp"
#include "types.hpp"

namespace attnkit {

static_assert(sizeof(bf16) == 2 && alignof(bf16) == alignof(std::uint16_t),
              "attnkit: bf16 must have the size and alignment of std::uint16_t");
static_assert(sizeof(fp16) == 2 && alignof(fp16) == alignof(std::uint16_t),
              "attnkit: fp16 must have the size and alignment of std::uint16_t");
static_assert(std::is_trivially_copyable_v<bf16> && std::is_standard_layout_v<bf16> &&
                  std::has_unique_object_representations_v<bf16>,
              "attnkit: bf16 must be a trivially copyable, standard-layout bit pattern");
static_assert(std::is_trivially_copyable_v<fp16> && std::is_standard_layout_v<fp16> &&
                  std::has_unique_object_representations_v<fp16>,
              "attnkit: fp16 must be a trivially copyable, standard-layout bit pattern");

namespace detail::cvt {

template <class Arch>
using i32b = xsimd::batch<std::int32_t, Arch>;
template <class Arch>
using u32b = xsimd::batch<std::uint32_t, Arch>;

/// The W 16-bit patterns at p (bf16, fp16 or uint16_t; read with memcpy), zero-extended.
template <class Arch, class S>
ATTNKIT_ALWAYS_INLINE i32b<Arch> load_u16(const S* p) {
  constexpr std::size_t W = i32b<Arch>::size;
  std::uint16_t h[W];
  std::memcpy(h, p, sizeof h);
  alignas(64) std::int32_t w[W];
  for (std::size_t k = 0; k < W; ++k) w[k] = h[k];
  return i32b<Arch>::load_aligned(w);
}

/// Stores the low 16 bits of each lane of v at p (written with memcpy).
template <class Arch, class D>
ATTNKIT_ALWAYS_INLINE void store_u16(D* p, const i32b<Arch>& v) {
  constexpr std::size_t W = i32b<Arch>::size;
  alignas(64) std::int32_t w[W];
  v.store_aligned(w);
  std::uint16_t h[W];
  for (std::size_t k = 0; k < W; ++k) h[k] = std::uint16_t(w[k]);
  std::memcpy(static_cast<void*>(p), h, sizeof h);  // (void*: bf16 is not trivial)
}

/// The bit patterns of W floats at p, and their store.
template <class Arch>
ATTNKIT_ALWAYS_INLINE u32b<Arch> load_f32_bits(const float* p) {
  alignas(64) std::uint32_t w[u32b<Arch>::size];
  std::memcpy(w, p, sizeof w);
  return u32b<Arch>::load_aligned(w);
}
template <class Arch>
ATTNKIT_ALWAYS_INLINE void store_f32_bits(float* p, const u32b<Arch>& v) {
  alignas(64) std::uint32_t w[u32b<Arch>::size];
  v.store_aligned(w);
  std::memcpy(p, w, sizeof w);
}

template <class S>
ATTNKIT_ALWAYS_INLINE std::uint16_t bits_at(const S* p) {
  std::uint16_t b;
  std::memcpy(&b, p, 2);
  return b;
}
template <class D>
ATTNKIT_ALWAYS_INLINE void set_bits_at(D* p, std::uint16_t b) {
  std::memcpy(static_cast<void*>(p), &b, 2);
}

/// bf16 lane math, bit for bit bf16::to_float / bf16::from_float.
struct bf16_lanes {
  using type = bf16;
  /// bf16 -> float: u = h << 16.
  template <class Arch>
  static ATTNKIT_ALWAYS_INLINE u32b<Arch> widen(const i32b<Arch>& h) {
    return xsimd::bitwise_cast<u32b<Arch>>(h) << 16;
  }
  /// float -> bf16: a = |u|; NaN: (u >> 16) | 0x40 (quiet); else the high half of a + 0x7fff +
  /// lsb (round to nearest even; never carries into the sign), with u's sign.
  template <class Arch>
  static ATTNKIT_ALWAYS_INLINE i32b<Arch> narrow(const u32b<Arch>& u) {
    using I = i32b<Arch>;
    const I a = xsimd::bitwise_cast<I>(u & u32b<Arch>(0x7fffffffu));
    const I hi = xsimd::bitwise_cast<I>(u >> 16);  // logical shift: sign in bit 15
    const I rounded = ((a + I(0x7fff) + ((a >> 16) & I(1))) >> 16) | (hi & I(0x8000));
    return xsimd::select(a > I(0x7f800000), hi | I(0x40), rounded);
  }
};

/// fp16 lane math, bit for bit fp16::to_float / fp16::from_float.
struct fp16_lanes {
  using type = fp16;
  /// fp16 -> float: exponent 0: +-m * 2^-24 (0 or a normal float); 31: inf/NaN with the mantissa
  /// shifted in unchanged; else rebias the exponent (+112).
  template <class Arch>
  static ATTNKIT_ALWAYS_INLINE u32b<Arch> widen(const i32b<Arch>& h) {
    using I = i32b<Arch>;
    const I e = h & I(0x7c00), m = h & I(0x3ff);
    const I normal = ((h & I(0x7fff)) << 13) + I(112 << 23);
    const I special = I(0x7f800000) | (m << 13);
    // m * 2^-24: m converts to float exactly, then the exponent drops by 24 (stays normal).
    const I sub = xsimd::bitwise_cast<I>(xsimd::to_float(m)) - I(24 << 23);
    I mag = xsimd::select(e == I(0x7c00), special, normal);
    mag = xsimd::select(e == I(0), xsimd::select(m == I(0), I(0), sub), mag);
    const u32b<Arch> sign = xsimd::bitwise_cast<u32b<Arch>>(h & I(0x8000)) << 16;
    return xsimd::bitwise_cast<u32b<Arch>>(mag) | sign;
  }
  /// float -> fp16 on a = |u|: NaN -> 0x7e00; a >= 0x477ff000 (rounds to >= 65520) -> inf;
  /// a < 2^-25 -> 0; a < 2^-14: fp16 subnormal (24-bit mantissa >> (126 - exp), shift in [14, 24],
  /// rounded to nearest even); else rebias with the round-to-nearest-even bias 0xfff + lsb added
  /// below bit 13. The sign is u's.
  template <class Arch>
  static ATTNKIT_ALWAYS_INLINE i32b<Arch> narrow(const u32b<Arch>& u) {
    using I = i32b<Arch>;
    const I a = xsimd::bitwise_cast<I>(u & u32b<Arch>(0x7fffffffu));
    const I sign = xsimd::bitwise_cast<I>(u >> 16) & I(0x8000);
    const I normal = ((a + I(0xfff) + ((a >> 13) & I(1))) >> 13) - I((127 - 15) << 10);
    const I shift = xsimd::min(xsimd::max(I(126) - (a >> 23), I(14)), I(24));
    const I man = (a & I(0x7fffff)) | I(0x800000);
    const I sub = (man + ((I(1) << (shift - I(1))) - I(1)) + ((man >> shift) & I(1))) >> shift;
    I r = xsimd::select(a < I(0x38800000), sub, normal);
    r = xsimd::select(a < I(0x33000000), I(0), r);
    r = xsimd::select(a >= I(0x477ff000), I(0x7c00), r);
    r = xsimd::select(a > I(0x7f800000), I(0x7e00), r);
    return r | sign;
  }
};

/// 16-bit format F (bf16_lanes, fp16_lanes) -> float: whole batches with F's lane math, the tail
/// with F's scalar conversion. One loop for both formats: they differ only in the lane math.
template <class Arch, class F, class S>
inline void widen(const S* ATTNKIT_RESTRICT src, float* ATTNKIT_RESTRICT dst, std::size_t n) {
  constexpr std::size_t W = i32b<Arch>::size;
  std::size_t i = 0;
  for (; i + W <= n; i += W)
    store_f32_bits<Arch>(dst + i, F::template widen<Arch>(load_u16<Arch>(src + i)));
  // (a tail counted from 0: `for (; i < n; ++i)` draws a false -Waggressive-loop-optimizations
  // from GCC when n is a constant multiple of W)
  for (std::size_t k = 0, rem = n - i; k < rem; ++k)
    dst[i + k] = F::type::to_float(bits_at(src + i + k));
}

/// float -> 16-bit format F, as widen.
template <class Arch, class F, class D>
inline void narrow(const float* ATTNKIT_RESTRICT src, D* ATTNKIT_RESTRICT dst, std::size_t n) {
  constexpr std::size_t W = i32b<Arch>::size;
  std::size_t i = 0;
  for (; i + W <= n; i += W)
    store_u16<Arch>(dst + i, F::template narrow<Arch>(load_f32_bits<Arch>(src + i)));
  for (std::size_t k = 0, rem = n - i; k < rem; ++k)
    set_bits_at(dst + i + k, F::type::from_float(src[i + k]));
}

}  // namespace detail::cvt

/// dst[i] = bf16(src[i]) for i < n: round to nearest even, NaN stays (quiet) NaN; equal bit for
/// bit to the element-wise conversion. Arch is the xsimd architecture (default: the build's).
template <class Arch = simd::default_arch>
inline void to_bf16(const float* src, bf16* dst, std::size_t n) {
  detail::cvt::narrow<Arch, detail::cvt::bf16_lanes>(src, dst, n);
}
/// As above into a raw buffer of bf16 bit patterns (written with memcpy: no aliasing issue).
template <class Arch = simd::default_arch>
inline void to_bf16(const float* src, std::uint16_t* dst, std::size_t n) {
  detail::cvt::narrow<Arch, detail::cvt::bf16_lanes>(src, dst, n);
}

/// dst[i] = fp16(src[i]) for i < n: round to nearest even, fp16 subnormals, overflow to inf, NaN
/// to 0x7e00 with the sign; equal bit for bit to the element-wise conversion.
template <class Arch = simd::default_arch>
inline void to_fp16(const float* src, fp16* dst, std::size_t n) {
  detail::cvt::narrow<Arch, detail::cvt::fp16_lanes>(src, dst, n);
}
/// As above into a raw buffer of fp16 bit patterns (written with memcpy).
template <class Arch = simd::default_arch>
inline void to_fp16(const float* src, std::uint16_t* dst, std::size_t n) {
  detail::cvt::narrow<Arch, detail::cvt::fp16_lanes>(src, dst, n);
}

/// dst[i] = float(src[i]) for i < n (exact).
template <class Arch = simd::default_arch>
inline void from_bf16(const bf16* src, float* dst, std::size_t n) {
  detail::cvt::widen<Arch, detail::cvt::bf16_lanes>(src, dst, n);
}
/// As above from a raw buffer of bf16 bit patterns (read with memcpy).
template <class Arch = simd::default_arch>
inline void from_bf16(const std::uint16_t* src, float* dst, std::size_t n) {
  detail::cvt::widen<Arch, detail::cvt::bf16_lanes>(src, dst, n);
}

/// dst[i] = float(src[i]) for i < n (exact; NaN payloads kept, signalling NaNs not quieted).
template <class Arch = simd::default_arch>
inline void from_fp16(const fp16* src, float* dst, std::size_t n) {
  detail::cvt::widen<Arch, detail::cvt::fp16_lanes>(src, dst, n);
}
/// As above from a raw buffer of fp16 bit patterns (read with memcpy).
template <class Arch = simd::default_arch>
inline void from_fp16(const std::uint16_t* src, float* dst, std::size_t n) {
  detail::cvt::widen<Arch, detail::cvt::fp16_lanes>(src, dst, n);
}

}  // namespace attnkit

#include "warnings_pop.hpp"
