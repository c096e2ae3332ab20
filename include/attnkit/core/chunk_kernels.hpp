// SPDX-License-Identifier: Apache-2.0
// Building blocks of the chunk algorithms (linear and delta-rule families), over padded float
// (double) buffers: a register-tiled GEMM micro-kernel and its driver, small vector helpers, a
// prefetch queue that spreads the next work unit's cache lines over the GEMM tiles, and the
// per-channel sub-chunk diagonal block (gla, kda):
//   A[r, c] = q~_r . (k_c * prod_{c<s<=r} e_s)   for the rows r >= c of one sub-chunk,
// a running product of e_s = exp(g_s) in (0, 1], so no exponent is ever positive.
#pragma once

#include "warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "simd.hpp"
#include "types.hpp"

namespace attnkit {
namespace detail {

template <class A>
void ensure(aligned_vector<A>& v, index_t n) {
  if (index_t(v.size()) < n) v.assign(std::size_t(n), A(0));
}

/// The cache lines of the next work unit's input and output rows, prefetched a few at a time
/// between GEMM tiles so that their DRAM reads overlap the arithmetic (a whole unit's prefetches
/// issued in one burst stall on the miss buffers).
class prefetch_queue {
 public:
  static constexpr int lines_per_tile = 6;  // fewer leave rows unfetched, more gain nothing

  /// Empties the queue (each step() issues lines_per_tile prefetches until set_step).
  void clear() { segs_.clear(), next_ = 0, offset_ = 0, per_step_ = lines_per_tile; }
  /// Each step() issues n prefetches.
  void set_step(int n) { per_step_ = n; }
  /// Cache lines still queued (an upper bound: whole segments).
  index_t lines_queued() const {
    index_t n = 0;
    for (std::size_t i = next_; i < segs_.size(); ++i) n += (segs_[i].bytes + 63) / 64;
    return n;
  }
  /// Queues the cache lines of n elements at p (from the line holding p to the one holding the
  /// last element).
  template <class T>
  void add(const T* p, index_t n, bool write) {
    const auto first = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t line = first & ~std::uintptr_t(63);
    const auto end = first + std::uintptr_t(n) * sizeof(T);
    segs_.emplace_back(reinterpret_cast<const char*>(line), index_t(end - line), write);
  }
  /// Issues whatever is still queued (the work ran out of tiles first: small heads).
  void drain() { step(std::numeric_limits<int>::max()); }
  /// Issues the next `lines` prefetches (default: per_step; none once the queue is drained).
  ATTNKIT_ALWAYS_INLINE void step(int lines = 0) {
    if (lines <= 0) lines = per_step_;
    for (; lines > 0 && next_ < segs_.size(); --lines) {
      const segment& s = segs_[next_];
      simd::prefetch_line<2>(s.p + offset_, s.write);  // into L2
      offset_ += 64;
      if (offset_ >= s.bytes) offset_ = 0, ++next_;
    }
  }

 private:
  struct segment {
    // built in place (a braced temporary is stored in pieces and reloaded whole: a stall)
    segment(const char* p_, index_t bytes_, bool write_) : p(p_), bytes(bytes_), write(write_) {}
    const char* p;
    index_t bytes;
    bool write;
  };
  std::vector<segment> segs_;
  std::size_t next_ = 0;
  index_t offset_ = 0;
  int per_step_ = lines_per_tile;
};

// ---------------------------------------------------------------------------------------------
// GEMM micro-kernel: C[0:MR, 0:2W] = diag(cs) C + sum_{p<kd} a(i, p) Bm[p, 0:2W]
// with a(i, p) = a[i*ars + p*acs] (row-major A: acs = 1; A^T of a row-major buffer: ars = 1),
// Bm rows contiguous (stride ldb). acc = false: C starts at 0; cs = nullptr: no row scaling.
// Lower: row i also adds the lower triangle sum_{q<=i} a(i, kd + q) Bm[kd + q, 0:2W] (causal
// products: row i never touches the Bm rows of later positions, whatever they hold).
template <int MR, class A, class Arch, bool Lower = false>
inline void gemm_tile(const A* a, index_t ars, index_t acs, const A* ATTNKIT_RESTRICT b,
                      index_t ldb, A* ATTNKIT_RESTRICT c, index_t ldc, index_t kd, bool acc,
                      const A* cs) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  B c0[std::size_t(MR)], c1[std::size_t(MR)];
  if (acc) {
    ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) {
      c0[i] = B::load_unaligned(c + i * ldc);
      c1[i] = B::load_unaligned(c + i * ldc + W);
      if (cs) {
        const B f(cs[i]);
        c0[i] *= f;
        c1[i] *= f;
      }
    }
  } else {
    ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) c0[i] = c1[i] = B(A(0));
  }
  for (index_t p = 0; p < kd; ++p) {
    const B b0 = B::load_unaligned(b + p * ldb), b1 = B::load_unaligned(b + p * ldb + W);
    const A* ap = a + p * acs;
    ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) {
      const B ai(ap[i * ars]);
      c0[i] = xsimd::fma(ai, b0, c0[i]);
      c1[i] = xsimd::fma(ai, b1, c1[i]);
    }
  }
  if constexpr (Lower) {
    ATTNKIT_UNROLL for (int q = 0; q < MR; ++q) {
      const index_t p = kd + q;
      const B b0 = B::load_unaligned(b + p * ldb), b1 = B::load_unaligned(b + p * ldb + W);
      const A* ap = a + p * acs;
      ATTNKIT_UNROLL for (int i = q; i < MR; ++i) {
        const B ai(ap[i * ars]);
        c0[i] = xsimd::fma(ai, b0, c0[i]);
        c1[i] = xsimd::fma(ai, b1, c1[i]);
      }
    }
  }
  ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) {
    c0[i].store_unaligned(c + i * ldc);
    c1[i].store_unaligned(c + i * ldc + W);
  }
}

// C[0:M, 0:N] = diag(cs) C + A[0:M, 0:kd] Bm[0:kd, 0:N] over tiles of MR x 2W. Writes columns up to
// round_up(N, 2W) (buffers are padded). Row block [r0, r1) uses kd = kd_of(r1) inner terms and
// skips column tiles starting at or after col_end(r1) (causal products; those entries are not
// written). After each tile, pf (if given) issues its next few prefetches.
template <class A, class Arch, class KdOf, class ColEnd>
void gemm(index_t M, index_t N, const A* a, index_t ars, index_t acs, const A* b, index_t ldb, A* c,
          index_t ldc, bool acc, const A* cs, KdOf kd_of, ColEnd col_end,
          prefetch_queue* pf = nullptr) {
  constexpr index_t NR = 2 * simd::lanes<A, Arch>;
  constexpr int MR = 6;
  for (index_t j0 = 0; j0 < N; j0 += NR)
    simd::dispatch_rows<MR>(M, [&](auto mr, index_t i0) {
      constexpr int R = decltype(mr)::value;
      const index_t r1 = i0 + R;
      if (j0 >= col_end(r1)) return;
      gemm_tile<R, A, Arch>(a + i0 * ars, ars, acs, b + j0, ldb, c + i0 * ldc + j0, ldc, kd_of(r1),
                            acc, cs ? cs + i0 : nullptr);
      if (pf) pf->step();
    });
}

// C[0:M, 0:N] += A[0:M, 0:M] Bm[0:M, 0:N] for a lower-triangular A (row i reads A[i, 0..i] and Bm
// rows 0..i only): the causal intra-chunk product. Whatever A's upper triangle and the Bm rows of
// later positions hold (NaN, inf) never reaches a row, as it would through a zero multiplied in.
template <class A, class Arch>
void gemm_lower(index_t M, index_t N, const A* a, index_t lda, const A* b, index_t ldb, A* c,
                index_t ldc, prefetch_queue* pf = nullptr) {
  constexpr index_t NR = 2 * simd::lanes<A, Arch>;
  constexpr int MR = 6;
  for (index_t j0 = 0; j0 < N; j0 += NR)
    simd::dispatch_rows<MR>(M, [&](auto mr, index_t i0) {
      constexpr int R = decltype(mr)::value;
      gemm_tile<R, A, Arch, true>(a + i0 * lda, lda, 1, b + j0, ldb, c + i0 * ldc + j0, ldc, i0,
                                  true, nullptr);
      if (pf) pf->step();
    });
}

// ---------------------------------------------------------------------------------------------
// Small vector helpers over n elements, n a multiple of W (padded buffers).

template <class A, class Arch>
ATTNKIT_ALWAYS_INLINE A dot(const A* x, const A* y, index_t n) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  B s0(A(0)), s1(A(0));
  index_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    s0 = xsimd::fma(B::load_unaligned(x + i), B::load_unaligned(y + i), s0);
    s1 = xsimd::fma(B::load_unaligned(x + i + W), B::load_unaligned(y + i + W), s1);
  }
  for (; i < n; i += W) s0 = xsimd::fma(B::load_unaligned(x + i), B::load_unaligned(y + i), s0);
  return simd::reduce_add(s0 + s1);
}

/// y[i] = exp(x[i]).
template <class A, class Arch>
ATTNKIT_ALWAYS_INLINE void vexp(const A* x, A* y, index_t n) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  for (index_t i = 0; i < n; i += W) simd::exp(B::load_unaligned(x + i)).store_unaligned(y + i);
}

/// z[i] = x[i] * y[i].
template <class A, class Arch>
ATTNKIT_ALWAYS_INLINE void vmul(const A* x, const A* y, A* z, index_t n) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  for (index_t i = 0; i < n; i += W)
    (B::load_unaligned(x + i) * B::load_unaligned(y + i)).store_unaligned(z + i);
}

/// y[i] = x[i] * exp(e[i]).
template <class A, class Arch>
ATTNKIT_ALWAYS_INLINE void mul_exp(const A* x, const A* e, A* y, index_t n) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  for (index_t i = 0; i < n; i += W)
    (B::load_unaligned(x + i) * simd::exp(B::load_unaligned(e + i))).store_unaligned(y + i);
}

/// Loads n stored elements as compute type A into dst (times scale) and zero-fills dst[n, np).
template <class A, class Arch, class S>
ATTNKIT_ALWAYS_INLINE void load_row(const S* src, A* dst, index_t n, index_t np, A scale = A(1)) {
  simd::convert<A, Arch>(src, dst, n, scale);
  for (index_t i = n; i < np; ++i) dst[i] = A(0);
}

/// Writes n elements to storage type S, times f.
template <class A, class Arch, class S>
ATTNKIT_ALWAYS_INLINE void store_row(const A* src, S* dst, index_t n, A f) {
  if constexpr (std::is_same_v<S, A>) {
    using B = xsimd::batch<A, Arch>;
    constexpr index_t W = index_t(B::size);
    const B fb(f);
    index_t i = 0;
    for (; i + W <= n; i += W) (B::load_unaligned(src + i) * fb).store_unaligned(dst + i);
    for (; i < n; ++i) dst[i] = src[i] * f;
  } else {
    for (index_t i = 0; i < n; ++i) dst[i] = from_compute<S>(src[i] * f);
  }
}

/// The per-channel decay of a chunk may be factored around its start,
///   x_r . kb_c = (k_r * e^{G_r}) . (k_c * e^{-G_c})   (c <= r),
/// as one GEMM over the rows r whose e^{-G_r} <= e^{kMaxDecaySpan<A>} in every channel (G falls
/// with r, so every factor of those rows is bounded too): no factor overflows or leaves the normal
/// range, and each product keeps the relative error of a few roundings. Later rows take the
/// sub-chunk scheme.
template <class A>
constexpr double kMaxDecaySpan = std::is_same_v<A, float> ? 60.0 : 600.0;

/// True when the decays cs [n] = e^{G_r} of a row allow the factorisation (kMaxDecaySpan).
template <class A, class Arch>
ATTNKIT_ALWAYS_INLINE bool decay_factorisable(const A* cs, index_t n) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  static const A floor = A(std::exp(-kMaxDecaySpan<A>));
  const B vfloor(floor);
  xsimd::batch_bool<A, Arch> ok(true);
  index_t i = 0;
  for (; i + W <= n; i += W) ok = ok && (B::load_unaligned(cs + i) >= vfloor);  // NaN: false
  bool all = xsimd::all(ok);
  for (; i < n; ++i) all &= cs[i] >= floor;
  return all;
}

/// z[i] = x[i] / y[i].
template <class A, class Arch>
ATTNKIT_ALWAYS_INLINE void vdiv(const A* x, const A* y, A* z, index_t n) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  for (index_t i = 0; i < n; i += W)
    (B::load_unaligned(x + i) / B::load_unaligned(y + i)).store_unaligned(z + i);
}

// ---------------------------------------------------------------------------------------------
// gla diagonal sub-chunk block, column c, rows r0 .. r0 + NR - 1 (all >= c):
//   A[r, c] = q~_r . p_r  with the running product p_r = k_c * prod_{c<s<=r} e_s  (p_c = k_c)
// pk holds p_{r0 - 1} (First: k_c, and row r0 = c takes no factor) and ends as p_{r0 + NR - 1}.
// One pass over the K channels for NR rows (the running product stays in a register).
template <int NR, bool First, class A, class Arch>
ATTNKIT_ALWAYS_INLINE void diag_rows(const A* qs, const A* e, index_t Kp, index_t r0, A* pk,
                                     A* acol, index_t Cp) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  B acc[4] = {B(A(0)), B(A(0)), B(A(0)), B(A(0))};
  for (index_t d = 0; d < Kp; d += W) {
    B p = B::load_unaligned(pk + d);
    ATTNKIT_UNROLL for (int j = 0; j < NR; ++j) {
      const index_t r = r0 + j;
      if (!First || j > 0) p *= B::load_unaligned(e + r * Kp + d);
      acc[j] = xsimd::fma(B::load_unaligned(qs + r * Kp + d), p, acc[j]);
    }
    p.store_unaligned(pk + d);
  }
  A out[4];
  simd::reduce_add4(acc[0], acc[1], acc[2], acc[3], out);
  for (int j = 0; j < NR; ++j) acol[(r0 + j) * Cp] = out[j];
}

}  // namespace detail
}  // namespace attnkit

#include "warnings_pop.hpp"
