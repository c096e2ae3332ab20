// SPDX-License-Identifier: Apache-2.0
// The only file that touches xsimd directly: batch aliases, version shims (xsimd 8.1 has hadd, 9+
// has reduce_add), exp, and loads/stores that convert bf16/fp16 storage to float lanes.
// Every function is templated on Arch so that TUs built with different -m flags never share an
// inline definition (the one-definition rule).
#pragma once

#include "warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>
#include <xsimd/xsimd.hpp>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__AVX__) || defined(__AVX2__) || defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "config.hpp"
#include "types.hpp"

namespace attnkit::detail {

/// x rounded up to a multiple of m (padded row lengths of the kernels' buffers).
inline index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }

/// A std::vector whose storage is 64-byte aligned (kernel workspaces: aligned batch loads).
template <class A>
using aligned_vector = std::vector<A, xsimd::aligned_allocator<A, 64>>;

}  // namespace attnkit::detail

namespace attnkit::simd {

using default_arch = xsimd::default_arch;

template <class T, class Arch = default_arch>
using batch = xsimd::batch<T, Arch>;

template <class T, class Arch = default_arch>
inline constexpr index_t lanes = index_t(batch<T, Arch>::size);

template <class T, class Arch>
ATTNKIT_ALWAYS_INLINE T reduce_add(const xsimd::batch<T, Arch>& b) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(b);
#else
  return xsimd::hadd(b);
#endif
}

template <class T, class Arch>
ATTNKIT_ALWAYS_INLINE T reduce_max(const xsimd::batch<T, Arch>& b) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_max(b);
#else
  // xsimd 8 has no horizontal max: a shuffle tree for float (the store + scalar loop below is a
  // 16-deep dependency chain through memory; the online softmax needs one per row and tile).
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && xsimd::batch<T, Arch>::size == 16)
    return _mm512_reduce_max_ps(b);
#endif
#if defined(__AVX__)
  if constexpr (std::is_same_v<T, float> && xsimd::batch<T, Arch>::size == 8) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps(b, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  }
#endif
  alignas(64) T tmp[xsimd::batch<T, Arch>::size];
  b.store_aligned(tmp);
  T m = tmp[0];
  for (std::size_t i = 1; i < xsimd::batch<T, Arch>::size; ++i) m = std::max(m, tmp[i]);
  return m;
#endif
}

/// Horizontal sums of four batches: out[i] = sum of the lanes of b_i.
template <class T, class Arch>
ATTNKIT_ALWAYS_INLINE void reduce_add4(const xsimd::batch<T, Arch>& b0,
                                       const xsimd::batch<T, Arch>& b1,
                                       const xsimd::batch<T, Arch>& b2,
                                       const xsimd::batch<T, Arch>& b3, T* out) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && xsimd::batch<T, Arch>::size == 16) {
    const auto half_sum = [](__m512 b) {  // lanes i and i + 8 added: 16 -> 8 lanes
      return _mm256_add_ps(_mm512_castps512_ps256(b),
                           _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(b), 1)));
    };
    const __m256 t0 = _mm256_hadd_ps(half_sum(b0), half_sum(b1));
    const __m256 t1 = _mm256_hadd_ps(half_sum(b2), half_sum(b3));
    const __m256 t2 = _mm256_hadd_ps(t0, t1);
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t2), _mm256_extractf128_ps(t2, 1)));
    return;
  }
#endif
#if defined(__AVX__)
  if constexpr (std::is_same_v<T, float> && xsimd::batch<T, Arch>::size == 8) {
    const __m256 t0 = _mm256_hadd_ps(b0, b1), t1 = _mm256_hadd_ps(b2, b3);
    const __m256 t2 = _mm256_hadd_ps(t0, t1);  // [s0 s1 s2 s3 | s0' s1' s2' s3'] (lane halves)
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t2), _mm256_extractf128_ps(t2, 1)));
    return;
  }
#endif
  out[0] = reduce_add(b0);
  out[1] = reduce_add(b1);
  out[2] = reduce_add(b2);
  out[3] = reduce_add(b3);
}

/// Horizontal sums of N batches: out[a] = sum of the lanes of b[a] (N a multiple of 4). With 16
/// float lanes and N = 16, one transposing add tree (45 shuffles and adds instead of 80; xsimd
/// 8.1's haddp returns the sums in the wrong lane order on AVX-512).
template <int N, class T, class Arch>
ATTNKIT_ALWAYS_INLINE void reduce_add_n(const xsimd::batch<T, Arch> (&b)[std::size_t(N)], T* out) {
  static_assert(N % 4 == 0, "attnkit::simd::reduce_add_n: N must be a multiple of 4");
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && xsimd::batch<T, Arch>::size == 16 && N == 16) {
    // 128-bit lane view: after each level a lane holds partial sums of more sources.
    __m512 w[8], z[4];
    for (int i = 0; i < 8; ++i) {  // [a0+a2, b0+b2, a1+a3, b1+b3] per lane
      const __m512 a = b[2 * i], c = b[2 * i + 1];
      w[i] = _mm512_add_ps(_mm512_unpacklo_ps(a, c), _mm512_unpackhi_ps(a, c));
    }
    for (int j = 0; j < 4; ++j) {  // sources 4j..4j+3 at positions 0..3 of every lane
      const __m512d x = _mm512_castps_pd(w[2 * j]), y = _mm512_castps_pd(w[2 * j + 1]);
      z[j] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                           _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    const __m512 y01 = _mm512_add_ps(_mm512_shuffle_f32x4(z[0], z[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_f32x4(z[0], z[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512 y23 = _mm512_add_ps(_mm512_shuffle_f32x4(z[2], z[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_f32x4(z[2], z[3], _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_ps(out, _mm512_add_ps(_mm512_shuffle_f32x4(y01, y23, _MM_SHUFFLE(2, 0, 2, 0)),
                                        _mm512_shuffle_f32x4(y01, y23, _MM_SHUFFLE(3, 1, 3, 1))));
    return;
  }
#endif
  for (int a = 0; a < N; a += 4) reduce_add4(b[a], b[a + 1], b[a + 2], b[a + 3], out + a);
}

/// exp with exp(-inf) = 0 (xsimd's vectorised exp).
template <class T, class Arch>
ATTNKIT_ALWAYS_INLINE xsimd::batch<T, Arch> exp(const xsimd::batch<T, Arch>& x) {
  return xsimd::exp(x);
}

/// An uninitialised 64-byte-aligned scratch buffer (packing workspaces are fully overwritten, so
/// std::vector's zero fill would be a wasted pass over memory). Buffers of kHugeBytes or more are
/// 2 MiB-aligned and, on Linux, advised to use transparent huge pages: first touch then faults
/// once per 2 MiB instead of once per 4 KiB.
template <class T>
class aligned_buffer {
 public:
  static constexpr std::size_t kHugeBytes = std::size_t(4) << 20, kHugePage = std::size_t(2) << 20;
  aligned_buffer() = default;
  explicit aligned_buffer(std::size_t n) {
    if (n == 0) return;
    size_ = n;
    const bool huge = n * sizeof(T) >= kHugeBytes;
    const std::size_t align = huge ? kHugePage : 64;
    const std::size_t bytes = (n * sizeof(T) + align - 1) / align * align;
    ptr_.reset(static_cast<T*>(std::aligned_alloc(align, bytes)));
    if (!ptr_) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (huge) madvise(static_cast<void*>(ptr_.get()), bytes, MADV_HUGEPAGE);  // advisory only
#endif
  }
  T* data() const { return ptr_.get(); }
  std::size_t size() const { return size_; }

 private:
  struct deleter {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, deleter> ptr_;
  std::size_t size_ = 0;
};

/// Requests the 64-byte line holding p, for reading or for writing, with __builtin_prefetch's
/// locality hint (3: into all cache levels, 2: into L2 and below).
template <int Locality = 3>
ATTNKIT_ALWAYS_INLINE void prefetch_line(const void* p, bool write = false) {
#if defined(__GNUC__) || defined(__clang__)
  if (write)
    __builtin_prefetch(p, 1, Locality);
  else
    __builtin_prefetch(p, 0, Locality);
#else
  (void)p;
  (void)write;
#endif
}

/// Prefetches n elements starting at p (one request per 64-byte line).
template <int Locality = 3, class T>
ATTNKIT_ALWAYS_INLINE void prefetch(const T* p, index_t n, bool write = false) {
  const char* c = reinterpret_cast<const char*>(p);
  for (index_t b = 0; b < n * index_t(sizeof(T)); b += 64) prefetch_line<Locality>(c + b, write);
}

/// Pins a batch in a register: stops GCC from folding its load into every FMA that uses it (a
/// reload per use doubles the wide loads, the limit on AMD Zen's two 256-bit load ports).
template <class T, class Arch>
ATTNKIT_ALWAYS_INLINE void keep_in_register(xsimd::batch<T, Arch>& b) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  auto r = static_cast<typename xsimd::batch<T, Arch>::register_type>(b);
  __asm__("" : "+x"(r));
  b = xsimd::batch<T, Arch>(r);
#else
  (void)b;
#endif
}

/// Loads lanes<A> consecutive elements of storage type S as a batch of compute type A.
template <class A, class Arch, class S>
ATTNKIT_ALWAYS_INLINE xsimd::batch<A, Arch> load(const S* p) {
  using B = xsimd::batch<A, Arch>;
  if constexpr (std::is_same_v<S, A>) {
    return B::load_unaligned(p);
  } else {
    static_assert(std::is_same_v<A, float> || std::is_same_v<S, float>,
                  "attnkit::simd::load: unsupported conversion");
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<S, bf16> && B::size == 16) {  // bf16 = the high half of a float
      __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      return B(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    }
    if constexpr (std::is_same_v<S, fp16> && B::size == 16) {
      __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      return B(_mm512_cvtph_ps(h));
    }
#endif
#if defined(__AVX2__)
    if constexpr (std::is_same_v<S, bf16> && B::size == 8) {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      return B(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
    }
#endif
#if defined(__F16C__) && defined(__AVX__)
    if constexpr (std::is_same_v<S, fp16> && B::size == 8) {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      return B(_mm256_cvtph_ps(h));
    }
#endif
    alignas(64) A tmp[B::size];
    for (std::size_t i = 0; i < B::size; ++i) tmp[i] = to_compute<A>(p[i]);
    return B::load_aligned(tmp);
  }
}

/// Loads n < lanes elements (zero-filled tail).
template <class A, class Arch, class S>
ATTNKIT_ALWAYS_INLINE xsimd::batch<A, Arch> load_partial(const S* p, index_t n) {
  using B = xsimd::batch<A, Arch>;
  alignas(64) A tmp[B::size] = {};
  for (index_t i = 0; i < n; ++i) tmp[i] = to_compute<A>(p[i]);
  return B::load_aligned(tmp);
}

/// Converts n elements of storage type S into compute type A (vectorised where possible).
template <class A, class Arch = default_arch, class S>
inline void convert(const S* ATTNKIT_RESTRICT src, A* ATTNKIT_RESTRICT dst, index_t n,
                    A scale = A(1)) {
  constexpr index_t W = lanes<A, Arch>;
  const xsimd::batch<A, Arch> s(scale);
  index_t i = 0;
  for (; i + W <= n; i += W) (load<A, Arch>(src + i) * s).store_unaligned(dst + i);
  for (; i < n; ++i) dst[i] = to_compute<A>(src[i]) * scale;
}

/// Converts exactly N elements (N a multiple of the batch width): a fixed trip count, no tail.
template <class A, class Arch, index_t N, class S>
ATTNKIT_ALWAYS_INLINE void convert_fixed(const S* ATTNKIT_RESTRICT src, A* ATTNKIT_RESTRICT dst) {
  constexpr index_t W = lanes<A, Arch>;
  static_assert(N % W == 0, "attnkit::simd::convert_fixed: N must be a multiple of the width");
  for (index_t i = 0; i < N; i += W) load<A, Arch>(src + i).store_unaligned(dst + i);
}

/// Stores n elements of compute type A into storage type S (bf16/fp16 round to nearest even).
template <class S, class A>
inline void store_converted(const A* ATTNKIT_RESTRICT src, S* ATTNKIT_RESTRICT dst, index_t n) {
  for (index_t i = 0; i < n; ++i) dst[i] = from_compute<S>(src[i]);
}

/// store_converted of exactly N elements (a fixed trip count: short rows inline, no library call).
template <index_t N, class S, class A>
ATTNKIT_ALWAYS_INLINE void store_converted_fixed(const A* ATTNKIT_RESTRICT src,
                                                 S* ATTNKIT_RESTRICT dst) {
  for (index_t i = 0; i < N; ++i) dst[i] = from_compute<S>(src[i]);
}

#if defined(__AVX__)
/// d[k * ldd + u] = r[u][k] for u, k < 8: one 8x8 float block of eight rows, transposed.
ATTNKIT_ALWAYS_INLINE void transpose8x8(const float* const (&r)[8], float* d, index_t ldd) {
  __m256 x[8], t[8];
  for (int k = 0; k < 8; ++k) x[k] = _mm256_loadu_ps(r[k]);
  for (int k = 0; k < 8; k += 2) {
    t[k] = _mm256_unpacklo_ps(x[k], x[k + 1]);  // rows k, k+1 interleaved (pairs)
    t[k + 1] = _mm256_unpackhi_ps(x[k], x[k + 1]);
  }
  for (int k = 0; k < 8; k += 4) {
    x[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));  // quads
    x[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
    x[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
    x[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {  // 128-bit halves: columns k and k + 4
    _mm256_storeu_ps(d + k * ldd, _mm256_permute2f128_ps(x[k], x[k + 4], 0x20));
    _mm256_storeu_ps(d + (k + 4) * ldd, _mm256_permute2f128_ps(x[k], x[k + 4], 0x31));
  }
}
#endif

/// dst[j * ldd + u] = rows[u][j] for u < 8, j < cols: eight rows (any addresses) transposed into
/// eight columns. float with AVX: 8x8 register transposes, scalar tail.
template <class T, class Arch>
inline void transpose_rows8(const T* const (&rows)[8], T* ATTNKIT_RESTRICT dst, index_t ldd,
                            index_t cols) {
  index_t j0 = 0;
#if defined(__AVX__)
  if constexpr (std::is_same_v<T, float> && xsimd::batch<T, Arch>::size >= 8) {
    for (; j0 + 8 <= cols; j0 += 8) {
      const float* r[8];
      for (int u = 0; u < 8; ++u) r[u] = rows[u] + j0;
      transpose8x8(r, dst + j0 * ldd, ldd);
    }
  }
#endif
  for (index_t j = j0; j < cols; ++j)
    for (int u = 0; u < 8; ++u) dst[j * ldd + u] = rows[u][j];
}

/// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols (a [rows, cols] block transposed).
/// float with AVX (Arch AVX or wider): 8x8 register transposes, scalar edges.
template <class T, class Arch>
inline void transpose(const T* ATTNKIT_RESTRICT src, index_t lds, T* ATTNKIT_RESTRICT dst,
                      index_t ldd, index_t rows, index_t cols) {
  index_t i0 = 0;
  for (; i0 + 8 <= rows; i0 += 8) {
    const T* r[8];
    for (int u = 0; u < 8; ++u) r[u] = src + (i0 + u) * lds;
    transpose_rows8<T, Arch>(r, dst + i0, ldd, cols);
  }
  for (index_t i = i0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

namespace detail {
template <int MR, class F>
inline void dispatch_rest(index_t rest, index_t r, F& f) {  // the tile of exactly `rest` rows
  if constexpr (MR >= 1) {
    if (rest == MR)
      f(std::integral_constant<int, MR>{}, r);
    else
      dispatch_rest<MR - 1>(rest, r, f);
  }
}
}  // namespace detail

/// Register tiles are templates on their row count MR. Calls f(std::integral_constant<int, MR>{},
/// r0) over rows [0, m) in tiles of MaxMR rows, then one tile of the m % MaxMR remaining rows
/// (only MR <= MaxMR are instantiated). Shared by the softmax and linear kernels' micro-kernels.
template <int MaxMR, class F>
inline void dispatch_rows(index_t m, F&& f) {
  static_assert(MaxMR >= 1, "attnkit::simd::dispatch_rows: tiles of at least one row");
  index_t r = 0;
  for (; r + MaxMR <= m; r += MaxMR) f(std::integral_constant<int, MaxMR>{}, r);
  detail::dispatch_rest<MaxMR - 1>(m - r, r, f);
}

}  // namespace attnkit::simd

#include "warnings_pop.hpp"
