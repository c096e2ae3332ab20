// SPDX-License-Identifier: Apache-2.0
// Fast kernels of the linear-attention family: linear_attn, simple_gla, gla (math: params.hpp).
//
// Work item = (sequence, head); the state lives in a float (double) buffer of the worker. Results
// do not depend on the number of threads (each item is computed by one thread, in a fixed order).
//
// recurrent (params.algo = recurrent), per token, one pass over the state:
//   S <- diag(a) S + k v^T  and  o = S^T q~   fused row by row (a = exp(g), K-first rows are key
//   channels, V-first rows are value channels); undecayed K-first states take two tokens per
//   pass. Token 0 reads h0 and the last token writes ht directly, so the decode step (T = 1)
//   reads the state once and writes it once, in place if ht == h0.
// chunk (params.algo = chunk), per chunk of L <= C rows with the chunk-local inclusive cumulative
// log gate P_r = sum_{s<=r} g_s and the suffix U_c = sum_{c<s<L} g_s (both plain sums, no
// cancellation, every exponent <= 0):
//   A[r,c] = sum_d q~[r,d] k[c,d] exp(G_r[d] - G_c[d]) for c <= r, else 0
//   O      = (q~ * exp(P)) S + A V
//   S     <- diag(exp(P_{L-1})) S + (k * exp(U))^T V
// The three products are GEMMs (register-tiled xsimd micro-kernel). Decay inside A:
//   scalar gate: A = (Q~ K^T) * D with D[r,c] = prod_{c<s<=r} exp(g_s) (running products <= 1);
//   per-channel gate (gla): 16-row sub-chunks. Off-diagonal blocks (sub-chunk i > j) factor around
//   the first row n of sub-chunk i: (q~_r * exp(G_r - G_n)) . (k_c * exp(G_n - G_c)), both
//   exponents <= 0; diagonal 16x16 blocks use exact per-pair running products
//   k_c * prod_{c<s<=r} exp(g_s).
//   Every decay factor of the per-channel path (also exp(P), exp(U)) is a running product of
//   e_s = exp(g_s) in (0, 1] over the tokens it spans (L*K exponentials per chunk; -1000 gives an
//   exact 0). Never a whole-chunk factorisation exp(G_r) exp(-G_c) (it overflows for strong gates).
#pragma once

#include "../core/warnings_push.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../core/config.hpp"
#include "../core/executor.hpp"
#include "../core/simd.hpp"
#include "params.hpp"

namespace attnkit {
namespace detail {
namespace linear_impl {

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

  void clear() { segs_.clear(), next_ = 0, offset_ = 0; }
  /// Queues the cache lines of n elements at p (from the line holding p to the one holding the
  /// last element).
  template <class T>
  void add(const T* p, index_t n, bool write) {
    const auto first = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t line = first & ~std::uintptr_t(63);
    const auto end = first + std::uintptr_t(n) * sizeof(T);
    segs_.push_back({reinterpret_cast<const char*>(line), index_t(end - line), write});
  }
  /// Issues whatever is still queued (the work ran out of tiles first: small heads).
  void drain() { step(std::numeric_limits<int>::max()); }
  /// Issues the next `lines` prefetches (none once the queue is drained).
  ATTNKIT_ALWAYS_INLINE void step(int lines = lines_per_tile) {
    for (; lines > 0 && next_ < segs_.size(); --lines) {
      const segment& s = segs_[next_];
      simd::prefetch_line<2>(s.p + offset_, s.write);  // into L2
      offset_ += 64;
      if (offset_ >= s.bytes) offset_ = 0, ++next_;
    }
  }

 private:
  struct segment {
    const char* p;
    index_t bytes;
    bool write;
  };
  std::vector<segment> segs_;
  std::size_t next_ = 0;
  index_t offset_ = 0;
};

// ---------------------------------------------------------------------------------------------
// GEMM micro-kernel: C[0:MR, 0:2W] = diag(cs) C + sum_{p<kd} a(i, p) Bm[p, 0:2W]
// with a(i, p) = a[i*ars + p*acs] (row-major A: acs = 1; A^T of a row-major buffer: ars = 1),
// Bm rows contiguous (stride ldb). acc = false: C starts at 0; cs = nullptr: no row scaling.
template <int MR, class A, class Arch>
inline void gemm_tile(const A* a, index_t ars, index_t acs, const A* ATTNKIT_RESTRICT b,
                      index_t ldb, A* ATTNKIT_RESTRICT c, index_t ldc, index_t kd, bool acc,
                      const A* cs) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  B c0[MR], c1[MR];
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

// ---------------------------------------------------------------------------------------------
// Recurrent token steps. src == nullptr means a zero state. src may equal dst (in place).

// K-first, rows = key channels d, columns = value channels:
//   dst[d, 0:V] = a[d*as] src[d, 0:V] + kk[d] vv[0:V];   out[0:V] = sum_d qq[d] dst[d, 0:V]
template <int NB, bool Gated, class A, class Arch>
ATTNKIT_ALWAYS_INLINE void kfirst_cols(index_t j, index_t K, const A* src, index_t lds, A* dst,
                                       index_t ldd, const A* a, index_t as, const A* kk,
                                       const A* qq, const A* vv, A* out) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  B vb[NB], ob[NB];
  ATTNKIT_UNROLL for (int u = 0; u < NB; ++u) {
    vb[u] = B::load_unaligned(vv + j + u * W);
    ob[u] = B(A(0));
  }
  for (index_t d = 0; d < K; ++d) {
    const B kd(kk[d]), qd(qq[d]);
    A* dr = dst + d * ldd + j;
    if (src) {
      const A* sr = src + d * lds + j;
      if constexpr (Gated) {
        const B ad(a[d * as]);
        ATTNKIT_UNROLL for (int u = 0; u < NB; ++u) {
          const B s = xsimd::fma(kd, vb[u], ad * B::load_unaligned(sr + u * W));
          s.store_unaligned(dr + u * W);
          ob[u] = xsimd::fma(qd, s, ob[u]);
        }
      } else {
        ATTNKIT_UNROLL for (int u = 0; u < NB; ++u) {
          const B s = xsimd::fma(kd, vb[u], B::load_unaligned(sr + u * W));
          s.store_unaligned(dr + u * W);
          ob[u] = xsimd::fma(qd, s, ob[u]);
        }
      }
    } else {
      ATTNKIT_UNROLL for (int u = 0; u < NB; ++u) {
        const B s = kd * vb[u];
        s.store_unaligned(dr + u * W);
        ob[u] = xsimd::fma(qd, s, ob[u]);
      }
    }
  }
  ATTNKIT_UNROLL for (int u = 0; u < NB; ++u) ob[u].store_unaligned(out + j + u * W);
}

template <bool Gated, class A, class Arch>
void step_kfirst(index_t K, index_t V, const A* src, index_t lds, A* dst, index_t ldd, const A* a,
                 index_t as, const A* kk, const A* qq, const A* vv, A* out) {
  constexpr index_t W = simd::lanes<A, Arch>;
  index_t j = 0;
  for (; j + 4 * W <= V; j += 4 * W)
    kfirst_cols<4, Gated, A, Arch>(j, K, src, lds, dst, ldd, a, as, kk, qq, vv, out);
  for (; j + W <= V; j += W)
    kfirst_cols<1, Gated, A, Arch>(j, K, src, lds, dst, ldd, a, as, kk, qq, vv, out);
  for (; j < V; ++j) {  // tail columns (V not a multiple of W)
    A o = 0;
    for (index_t d = 0; d < K; ++d) {
      A s = kk[d] * vv[j];
      if (src) s += (Gated ? a[d * as] : A(1)) * src[d * lds + j];
      dst[d * ldd + j] = s;
      o += qq[d] * s;
    }
    out[j] = o;
  }
}

// Two consecutive tokens of an undecayed K-first state (linear_attn) in one pass over the state:
// half the state's L2 <-> L1 traffic per token, the intermediate state stays in a register (so
// the vector path does the same operations as two single steps):
//   s = src[d, j] + k1[d] v1[j];  out1[j] += q1[d] s;  s += k2[d] v2[j];  out2[j] += q2[d] s;
//   dst[d, j] = s
// Undecayed only: the decayed variants run slower this way than with single steps, so they keep
// those.
template <int NB, class A, class Arch>
ATTNKIT_ALWAYS_INLINE void kfirst_cols2(index_t j, index_t K, const A* src, index_t lds, A* dst,
                                        index_t ldd, const A* k1, const A* q1, const A* v1,
                                        const A* k2, const A* q2, const A* v2, A* out1, A* out2) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  B vb1[NB], vb2[NB], ob1[NB], ob2[NB];
  ATTNKIT_UNROLL for (int u = 0; u < NB; ++u) {
    vb1[u] = B::load_unaligned(v1 + j + u * W);
    vb2[u] = B::load_unaligned(v2 + j + u * W);
    ob1[u] = ob2[u] = B(A(0));
  }
  for (index_t d = 0; d < K; ++d) {
    const B kd1(k1[d]), qd1(q1[d]), kd2(k2[d]), qd2(q2[d]);
    A* dr = dst + d * ldd + j;
    const A* sr = src ? src + d * lds + j : nullptr;
    ATTNKIT_UNROLL for (int u = 0; u < NB; ++u) {
      B s = sr ? xsimd::fma(kd1, vb1[u], B::load_unaligned(sr + u * W)) : kd1 * vb1[u];
      ob1[u] = xsimd::fma(qd1, s, ob1[u]);
      s = xsimd::fma(kd2, vb2[u], s);
      s.store_unaligned(dr + u * W);
      ob2[u] = xsimd::fma(qd2, s, ob2[u]);
    }
  }
  ATTNKIT_UNROLL for (int u = 0; u < NB; ++u) {
    ob1[u].store_unaligned(out1 + j + u * W);
    ob2[u].store_unaligned(out2 + j + u * W);
  }
}

template <class A, class Arch>
void step2_kfirst(index_t K, index_t V, const A* src, index_t lds, A* dst, index_t ldd, const A* k1,
                  const A* q1, const A* v1, const A* k2, const A* q2, const A* v2, A* out1,
                  A* out2) {
  constexpr index_t W = simd::lanes<A, Arch>;
  index_t j = 0;
  for (; j + 2 * W <= V; j += 2 * W)
    kfirst_cols2<2, A, Arch>(j, K, src, lds, dst, ldd, k1, q1, v1, k2, q2, v2, out1, out2);
  for (; j + W <= V; j += W)
    kfirst_cols2<1, A, Arch>(j, K, src, lds, dst, ldd, k1, q1, v1, k2, q2, v2, out1, out2);
  for (; j < V; ++j) {  // tail columns (V not a multiple of W)
    A o1 = 0, o2 = 0;
    for (index_t d = 0; d < K; ++d) {
      A s = k1[d] * v1[j];
      if (src) s += src[d * lds + j];
      o1 += q1[d] * s;
      s += k2[d] * v2[j];
      dst[d * ldd + j] = s;
      o2 += q2[d] * s;
    }
    out1[j] = o1;
    out2[j] = o2;
  }
}

// V-first, rows = value channels e, columns = key channels:
//   dst[e, 0:K] = a[0:K] * src[e, 0:K] + vv[e] kk[0:K];   out[e] = qq[0:K] . dst[e, 0:K]
template <int RB, bool Gated, class A, class Arch>
ATTNKIT_ALWAYS_INLINE void vfirst_rows(index_t e0, index_t K, const A* src, index_t lds, A* dst,
                                       index_t ldd, const A* a, const A* kk, const A* qq,
                                       const A* vv, A* out) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  B acc[RB], ve[RB];
  ATTNKIT_UNROLL for (int u = 0; u < RB; ++u) {
    acc[u] = B(A(0));
    ve[u] = B(vv[e0 + u]);
  }
  index_t j = 0;
  for (; j + W <= K; j += W) {
    const B kb = B::load_unaligned(kk + j), qb = B::load_unaligned(qq + j);
    B ab(A(1));
    if constexpr (Gated) ab = B::load_unaligned(a + j);
    ATTNKIT_UNROLL for (int u = 0; u < RB; ++u) {
      B s = ve[u] * kb;
      if (src) {
        const B x = B::load_unaligned(src + (e0 + u) * lds + j);
        s = Gated ? xsimd::fma(ab, x, s) : s + x;
      }
      s.store_unaligned(dst + (e0 + u) * ldd + j);
      acc[u] = xsimd::fma(qb, s, acc[u]);
    }
  }
  ATTNKIT_UNROLL for (int u = 0; u < RB; ++u) {
    A o = simd::reduce_add(acc[u]);
    for (index_t jj = j; jj < K; ++jj) {  // tail columns (K not a multiple of W)
      A s = vv[e0 + u] * kk[jj];
      if (src) s += (Gated ? a[jj] : A(1)) * src[(e0 + u) * lds + jj];
      dst[(e0 + u) * ldd + jj] = s;
      o += qq[jj] * s;
    }
    out[e0 + u] = o;
  }
}

template <bool Gated, class A, class Arch>
void step_vfirst(index_t K, index_t V, const A* src, index_t lds, A* dst, index_t ldd, const A* a,
                 const A* kk, const A* qq, const A* vv, A* out) {
  index_t e = 0;
  for (; e + 4 <= V; e += 4)
    vfirst_rows<4, Gated, A, Arch>(e, K, src, lds, dst, ldd, a, kk, qq, vv, out);
  for (; e < V; ++e) vfirst_rows<1, Gated, A, Arch>(e, K, src, lds, dst, ldd, a, kk, qq, vv, out);
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

// ---------------------------------------------------------------------------------------------
// Per-item context: pointers to the (validated) tensors of one (sequence, head).

template <class A>
struct workspace {
  aligned_vector<A> S, q, k, kt, kh, qg, v, am, ob, g, e, pre, suf, tmp, cs, z, a;
  prefetch_queue pf;  // chunk algorithm: the next unit's rows
};

template <class A, class Q, class Kt, class Vt, class O, class Gr>
struct item_ctx {
  const linear_shape& sh;
  const linear_params& p;
  const tensor_view<Q, 4>& q;
  const tensor_view<Kt, 4>& k;
  const tensor_view<Vt, 4>& v;
  const tensor_view<O, 4>& o;
  const linear_states<A>& s;
  const Gr& gate;
};

/// Prefetches the q, k, v, o (and gate) rows of token t of batch row b, head h into L2 (tokens of
/// one head are H*K elements apart in memory, too far apart for the hardware prefetchers).
template <class Ctx>
ATTNKIT_ALWAYS_INLINE void prefetch_token(const Ctx& c, index_t b, index_t t, index_t h) {
  simd::prefetch<2>(&c.q(b, t, h, 0), c.sh.K);
  simd::prefetch<2>(&c.k(b, t, h, 0), c.sh.K);
  simd::prefetch<2>(&c.v(b, t, h, 0), c.sh.V);
  simd::prefetch<2>(&c.o(b, t, h, 0), c.sh.V, true);
  if constexpr (std::decay_t<decltype(c.gate)>::kind == gate_kind::channel)
    simd::prefetch<2>(&c.gate.g(b, t, h, 0), c.sh.K);
}

/// Writes o row t (V values of out, divided by q~ . z + 1e-10 with normalize; z updated with k).
template <class A, class Arch, class Ctx>
ATTNKIT_ALWAYS_INLINE void write_out(const Ctx& c, index_t b, index_t t, index_t h, const A* out,
                                     const A* qrow, const A* krow, A* z, index_t Kp) {
  A f = A(1);
  if (c.p.normalize) {
    using B = xsimd::batch<A, Arch>;
    constexpr index_t W = index_t(B::size);
    for (index_t i = 0; i < Kp; i += W)
      (B::load_unaligned(z + i) + B::load_unaligned(krow + i)).store_unaligned(z + i);
    f = A(1) / (dot<A, Arch>(qrow, z, Kp) + A(1e-10));
  }
  store_row<A, Arch>(out, &c.o(b, t, h, 0), c.sh.V, f);
}

template <class A, class Ctx>
void load_z(const Ctx& c, index_t n, index_t h, A* z, index_t Kp) {
  for (index_t d = 0; d < Kp; ++d)
    z[d] = (c.s.z0.present() && d < c.sh.K) ? c.s.z0(n, 0, h, d) : A(0);
}
template <class A, class Ctx>
void store_z(const Ctx& c, index_t n, index_t h, const A* z) {
  if (c.s.zt.present())
    for (index_t d = 0; d < c.sh.K; ++d) c.s.zt(n, 0, h, d) = z[d];
}

// ---------------------------------------------------------------------------------------------
// Recurrent algorithm for one (sequence n, head h).
template <class A, class Arch, class Ctx>
void run_recurrent(const Ctx& c, index_t n, index_t h, workspace<A>& ws) {
  constexpr index_t W = simd::lanes<A, Arch>;
  constexpr gate_kind kind = std::decay_t<decltype(c.gate)>::kind;
  const auto& sh = c.sh;
  const auto& sq = sh.seqs[std::size_t(n)];
  const index_t K = sh.K, V = sh.V, Kp = round_up(K, W), Vp = round_up(V, W);
  const bool vf = c.p.state_v_first;
  const index_t rows = vf ? V : K, cols = vf ? K : V, colsp = vf ? Kp : Vp;
  ensure(ws.q, 2 * Kp);  // two token slots (two-token steps, undecayed only: a and g have one)
  ensure(ws.k, 2 * Kp);
  ensure(ws.v, 2 * Vp);
  ensure(ws.ob, 2 * Vp);
  ensure(ws.a, Kp);
  ensure(ws.g, Kp);
  ensure(ws.z, Kp);
  A* qrow = ws.q.data();
  A* krow = ws.k.data();
  A* vrow = ws.v.data();
  A* out = ws.ob.data();
  A* a = ws.a.data();
  A* z = ws.z.data();
  if (c.p.normalize) load_z(c, n, h, z, Kp);

  const A* h0 = c.s.h0.present() ? &c.s.h0(n, h, 0, 0) : nullptr;
  const index_t ld0 = c.s.h0.present() ? c.s.h0.stride(2) : 0;
  A* ht = c.s.ht.present() ? &c.s.ht(n, h, 0, 0) : nullptr;
  const index_t ldt = c.s.ht.present() ? c.s.ht.stride(2) : 0;
  if (sq.len == 0) {  // final = initial
    if (ht)
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < cols; ++j) ht[r * ldt + j] = h0 ? h0[r * ld0 + j] : A(0);
    store_z(c, n, h, z);
    return;
  }
  if (sq.len > 1 || !ht) ensure(ws.S, rows * colsp);
  const A scale = A(sh.scale);
  constexpr bool gated = kind != gate_kind::none;
  const index_t as = kind == gate_kind::channel ? 1 : 0;  // decay stride over key channels
  // token i's rows (scaled q, k, v) into buffer slot 0 or 1, and its decay a = exp(g)
  auto prepare = [&](index_t i, index_t slot) {
    const index_t t = sq.t0 + i;
    load_row<A, Arch>(&c.q(sq.b, t, h, 0), qrow + slot * Kp, K, Kp, scale);
    load_row<A, Arch>(&c.k(sq.b, t, h, 0), krow + slot * Kp, K, Kp);
    load_row<A, Arch>(&c.v(sq.b, t, h, 0), vrow + slot * Vp, V, Vp);
    if constexpr (gated) {
      A* g = ws.g.data();  // decayed variants take single steps: always slot 0
      c.gate.read(sq.b, t, h, g, K);
      if constexpr (kind == gate_kind::channel) {
        vexp<A, Arch>(g, a, Kp);
      } else {
        const A av = std::exp(g[0]);
        for (index_t d = 0; d < (vf ? Kp : 1); ++d) a[d] = av;
      }
    }
  };
  // Undecayed K-first states advance two tokens per pass over the state (step2_kfirst).
  for (index_t i = 0; i < sq.len;) {
    const index_t t = sq.t0 + i;
    const index_t step = !gated && !vf && i + 1 < sq.len ? 2 : 1;
    for (index_t u = 0; u < step; ++u)
      if (i + u + 4 < sq.len) prefetch_token(c, sq.b, t + u + 4, h);
    // state source/destination: h0 -> work buffer -> ... -> ht (the decode step: h0 -> ht)
    const A* src = i == 0 ? h0 : ws.S.data();
    const index_t lds = i == 0 ? ld0 : colsp;
    const bool last = i + step == sq.len && ht;
    A* dst = last ? ht : ws.S.data();
    const index_t ldd = last ? ldt : colsp;
    prepare(i, 0);
    if (step == 2) {
      prepare(i + 1, 1);
      step2_kfirst<A, Arch>(K, V, src, lds, dst, ldd, krow, qrow, vrow, krow + Kp, qrow + Kp,
                            vrow + Vp, out, out + Vp);
    } else if (vf) {
      step_vfirst<gated, A, Arch>(K, V, src, lds, dst, ldd, a, krow, qrow, vrow, out);
    } else {
      step_kfirst<gated, A, Arch>(K, V, src, lds, dst, ldd, a, as, krow, qrow, vrow, out);
    }
    for (index_t u = 0; u < step; ++u)
      write_out<A, Arch>(c, sq.b, t + u, h, out + u * Vp, qrow + u * Kp, krow + u * Kp, z, Kp);
    i += step;
  }
  store_z(c, n, h, z);
}

// ---------------------------------------------------------------------------------------------
// Chunk algorithm for sequence n and heads [hb, he), chunk by chunk and head by head within a
// chunk: the rows of consecutive heads are adjacent in memory ([B,T,H,K]), so this reads the inputs
// (nearly) sequentially; each head keeps its own state (one Kp x Vp buffer per head).
template <class A, class Arch, class Ctx>
void run_chunked(const Ctx& c, index_t n, index_t hb, index_t he, workspace<A>& ws) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size), NR = 2 * W, BC = 16;
  constexpr gate_kind kind = std::decay_t<decltype(c.gate)>::kind;
  const auto& sh = c.sh;
  const auto& sq = sh.seqs[std::size_t(n)];
  const index_t K = sh.K, V = sh.V, C = c.p.chunk_size;
  const index_t Kp = round_up(K, NR), Vp = round_up(V, NR), Cp = round_up(C, NR);
  const bool vf = c.p.state_v_first;
  const index_t nh = he - hb;
  ensure(ws.S, nh * Kp * Vp);
  ensure(ws.q, C * Kp);
  ensure(ws.k, C * Kp);
  ensure(ws.v, C * Vp);
  ensure(ws.kt, Kp * Cp);
  ensure(ws.kh, C * Kp);
  ensure(ws.am, C * Cp);
  ensure(ws.ob, C * Vp);
  ensure(ws.z, nh * Kp);
  A* const Sg = ws.S.data();  // [nh, Kp, Vp] states of the heads
  A* const zg = ws.z.data();  // [nh, Kp] key sums (normalize)
  A* Qs = ws.q.data();        // [C, Kp] scale * q
  A* Kc = ws.k.data();        // [C, Kp] k
  A* Vc = ws.v.data();        // [C, Vp] v
  A* Kt = ws.kt.data();       // [Kp, Cp] k^T (gla: the decayed off-diagonal k^T)
  A* Kh = ws.kh.data();       // [C, Kp] k * exp(U)
  A* Am = ws.am.data();       // [C, Cp] intra-chunk A
  A* Ob = ws.ob.data();       // [C, Vp] output rows
  A* Qg = Qs;                 // q~ * exp(P) (aliases Qs without gate)
  if constexpr (kind != gate_kind::none) {
    ensure(ws.qg, C * Kp);
    ensure(ws.cs, Kp);
    Qg = ws.qg.data();
  }
  const index_t gw = kind == gate_kind::channel ? Kp : 1;  // gate values per token
  if constexpr (kind != gate_kind::none) {
    ensure(ws.g, C * gw);
    if (kind != gate_kind::channel) {
      ensure(ws.e, C);
      ensure(ws.pre, C);
      ensure(ws.suf, C);
    }
    ensure(ws.tmp, std::max(Cp, (BC + 2 + C) * Kp));
  }
  // S <- h0 (K-first internally; V-first states are transposed on the way in and out).
  for (index_t h = hb; h < he; ++h) {
    A* S = Sg + (h - hb) * Kp * Vp;
    for (index_t d = 0; d < Kp; ++d)
      for (index_t e = 0; e < Vp; ++e)
        S[d * Vp + e] = (c.s.h0.present() && d < K && e < V)
                            ? (vf ? c.s.h0(n, h, e, d) : c.s.h0(n, h, d, e))
                            : A(0);
    if (c.p.normalize) load_z(c, n, h, zg + (h - hb) * Kp, Kp);
  }
  const A scale = A(sh.scale);
  auto all = [](index_t) { return index_t(1) << 40; };

  for (index_t c0 = 0; c0 < sq.len; c0 += C) {
    for (index_t h = hb; h < he; ++h) {
      A* S = Sg + (h - hb) * Kp * Vp;
      A* z = zg + (h - hb) * Kp;
      const index_t L = std::min(C, sq.len - c0);
      // the rows of the next (chunk, head) unit, prefetched between this unit's GEMM tiles
      const index_t nc0 = h + 1 < he ? c0 : c0 + C, nhd = h + 1 < he ? h + 1 : hb;
      prefetch_queue* pf = &ws.pf;
      pf->clear();
      for (index_t t = sq.t0 + nc0; t < sq.t0 + std::min(sq.len, nc0 + C); ++t) {
        pf->add(&c.q(sq.b, t, nhd, 0), K, false);
        pf->add(&c.k(sq.b, t, nhd, 0), K, false);
        pf->add(&c.v(sq.b, t, nhd, 0), V, false);
        pf->add(&c.o(sq.b, t, nhd, 0), V, true);
        if constexpr (kind == gate_kind::channel) pf->add(&c.gate.g(sq.b, t, nhd, 0), K, false);
      }
      for (index_t r = 0; r < L; ++r) {
        const index_t t = sq.t0 + c0 + r;
        load_row<A, Arch>(&c.q(sq.b, t, h, 0), Qs + r * Kp, K, Kp, scale);
        load_row<A, Arch>(&c.k(sq.b, t, h, 0), Kc + r * Kp, K, Kp);
        load_row<A, Arch>(&c.v(sq.b, t, h, 0), Vc + r * Vp, V, Vp);
      }
      const A* cs = nullptr;  // row factors of S in the state update
      const A* Khp = Kc;
      if constexpr (kind != gate_kind::none) {
        A* g = ws.g.data();
        A* e = kind == gate_kind::channel ? g : ws.e.data();  // (channel: exp in place)
        A* pre = ws.pre.data();
        A* suf = ws.suf.data();
        for (index_t r = 0; r < L; ++r) {
          c.gate.read(sq.b, sq.t0 + c0 + r, h, g + r * gw, K);
          for (index_t d = (kind == gate_kind::channel ? K : 1); d < gw; ++d)
            g[r * gw + d] = A(0);
        }
        // scalar gate: P_r = sum_{s<=r} g_s ; U_r = sum_{r<s<L} g_s ; e_r = exp(g_r)
        if constexpr (kind != gate_kind::channel) {
          for (index_t d = 0; d < gw; ++d) {
            A acc = 0;
            for (index_t r = 0; r < L; ++r) pre[r * gw + d] = acc += g[r * gw + d];
            acc = 0;
            for (index_t r = L; r-- > 0;) {
              suf[r * gw + d] = acc;
              acc += g[r * gw + d];
            }
          }
        }
        A* csb = ws.cs.data();
        if constexpr (kind == gate_kind::channel) {
          // per channel, as running products of e_r = exp(g_r) in (0, 1] (only L*K exponentials):
          // exp(P_r) = prod_{s<=r} e_s ; exp(U_r) = prod_{r<s<L} e_s
          vexp<A, Arch>(g, e, L * Kp);
          std::fill(csb, csb + Kp, A(1));  // running exp(P_r), ends as exp(P_{L-1})
          for (index_t r = 0; r < L; ++r) {
            vmul<A, Arch>(csb, e + r * Kp, csb, Kp);
            vmul<A, Arch>(Qs + r * Kp, csb, Qg + r * Kp, Kp);
          }
          A* run = ws.tmp.data();  // running exp(U_r)
          std::fill(run, run + Kp, A(1));
          for (index_t r = L; r-- > 0;) {
            vmul<A, Arch>(Kc + r * Kp, run, Kh + r * Kp, Kp);
            vmul<A, Arch>(run, e + r * Kp, run, Kp);
          }
        } else {
          for (index_t r = 0; r < L; ++r) {
            e[r] = std::exp(g[r]);
            const B fq(std::exp(pre[r])), fk(std::exp(suf[r]));
            for (index_t d = 0; d < Kp; d += W) {
              (B::load_unaligned(Qs + r * Kp + d) * fq).store_unaligned(Qg + r * Kp + d);
              (B::load_unaligned(Kc + r * Kp + d) * fk).store_unaligned(Kh + r * Kp + d);
            }
          }
          std::fill(csb, csb + Kp, std::exp(pre[L - 1]));
        }
        cs = csb;
        Khp = Kh;
      }

      // ---- intra-chunk A [L, L] (lower triangle incl. diagonal; zero above) ----
      if constexpr (kind != gate_kind::channel) {
        simd::transpose<A, Arch>(Kc, Kp, Kt, Cp, L, K);
        gemm<A, Arch>(
            L, L, Qs, Kp, 1, Kt, Cp, Am, Cp, false, nullptr, [&](index_t) { return K; },
            [](index_t r1) { return r1; }, pf);
        if constexpr (kind == gate_kind::none) {
          for (index_t r = 0; r < L; ++r)
            for (index_t cc = r + 1; cc < Cp; ++cc) Am[r * Cp + cc] = A(0);
        } else {
          // D[r, c] = prod_{c<s<=r} exp(g_s): running row products, D[r, r] = 1
          A* D = ws.tmp.data();
          for (index_t r = 0; r < L; ++r) {
            const A er = ws.e[std::size_t(r)];
            for (index_t cc = 0; cc < r; ++cc) D[cc] *= er;
            D[r] = A(1);
            for (index_t cc = 0; cc <= r; ++cc) Am[r * Cp + cc] *= D[cc];
            for (index_t cc = r + 1; cc < Cp; ++cc) Am[r * Cp + cc] = A(0);
          }
        }
      } else {
        const A* e = ws.g.data();     // exp(g), computed in place above
        A* qf = ws.tmp.data();        // [BC, Kp] q~ rows of the sub-chunk * exp(G_r - G_n)
        A* acc = qf + (BC + 1) * Kp;  // [Kp] running products; after it, up to C - 1 decayed k rows
        for (index_t i0 = 0; i0 < L; i0 += BC) {
          const index_t i1 = std::min(L, i0 + BC);
          if (i0 > 0) {
            // off-diagonal: rows [i0, i1) x columns [0, i0), reference row n = i0
            std::fill(acc, acc + Kp, A(1));
            for (index_t r = i0; r < i1; ++r) {  // exp(G_r - G_n) = prod_{n<s<=r} e_s
              if (r > i0) vmul<A, Arch>(acc, e + r * Kp, acc, Kp);
              vmul<A, Arch>(Qs + r * Kp, acc, qf + (r - i0) * Kp, Kp);
            }
            std::fill(acc, acc + Kp, A(1));
            A* kb = acc + Kp;                   // [i0, Kp] rows k_c * exp(G_n - G_c)
            for (index_t cc = i0; cc-- > 0;) {  // exp(G_n - G_c) = prod_{c<s<=n} e_s
              vmul<A, Arch>(acc, e + (cc + 1) * Kp, acc, Kp);
              vmul<A, Arch>(Kc + cc * Kp, acc, kb + cc * Kp, Kp);
            }
            simd::transpose<A, Arch>(kb, Kp, Kt, Cp, i0, K);
            for (index_t d = 0; d < K; ++d)
              for (index_t cc = i0; cc < round_up(i0, NR); ++cc) Kt[d * Cp + cc] = A(0);
            gemm<A, Arch>(
                i1 - i0, i0, qf, Kp, 1, Kt, Cp, Am + i0 * Cp, Cp, false, nullptr,
                [&](index_t) { return K; }, all, pf);
          }
          // diagonal block: exact per-pair running products
          for (index_t cc = i0; cc < i1; ++cc) {
            std::copy(Kc + cc * Kp, Kc + cc * Kp + Kp, acc);
            for (index_t r0 = cc; r0 < i1; r0 += 4) {
              auto rows = [&](auto first) {
                constexpr bool F = decltype(first)::value;
                switch (std::min<index_t>(4, i1 - r0)) {
                  case 4:
                    diag_rows<4, F, A, Arch>(Qs, e, Kp, r0, acc, Am + cc, Cp);
                    break;
                  case 3:
                    diag_rows<3, F, A, Arch>(Qs, e, Kp, r0, acc, Am + cc, Cp);
                    break;
                  case 2:
                    diag_rows<2, F, A, Arch>(Qs, e, Kp, r0, acc, Am + cc, Cp);
                    break;
                  default:
                    diag_rows<1, F, A, Arch>(Qs, e, Kp, r0, acc, Am + cc, Cp);
                    break;
                }
              };
              if (r0 == cc)
                rows(std::true_type{});
              else
                rows(std::false_type{});
            }
          }
          for (index_t r = i0; r < i1; ++r)
            for (index_t cc = r + 1; cc < Cp; ++cc) Am[r * Cp + cc] = A(0);
        }
      }

      // ---- O = (q~ * exp(P)) S + A V ----
      gemm<A, Arch>(
          L, V, Qg, Kp, 1, S, Vp, Ob, Vp, false, nullptr, [&](index_t) { return K; }, all, pf);
      gemm<A, Arch>(
          L, V, Am, Cp, 1, Vc, Vp, Ob, Vp, true, nullptr,
          [&](index_t r1) { return std::min(L, r1); }, all, pf);
      for (index_t r = 0; r < L; ++r)
        write_out<A, Arch>(c, sq.b, sq.t0 + c0 + r, h, Ob + r * Vp, Qs + r * Kp, Kc + r * Kp, z,
                           Kp);

      // ---- S <- diag(exp(P_{L-1})) S + (k * exp(U))^T V ----
      gemm<A, Arch>(
          K, V, Khp, 1, Kp, Vc, Vp, S, Vp, true, cs, [&](index_t) { return L; }, all, pf);
      pf->drain();
    }
  }

  for (index_t h = hb; h < he; ++h) {
    const A* S = Sg + (h - hb) * Kp * Vp;
    if (c.s.ht.present())
      for (index_t d = 0; d < K; ++d)
        for (index_t e = 0; e < V; ++e)
          (vf ? c.s.ht(n, h, e, d) : c.s.ht(n, h, d, e)) = S[d * Vp + e];
    store_z(c, n, h, zg + (h - hb) * Kp);
  }
}

template <class A, class Arch, class Q, class Kt, class Vt, class O, class Gr>
void run(const linear_shape& sh, const linear_params& p, const tensor_view<Q, 4>& q,
         const tensor_view<Kt, 4>& k, const tensor_view<Vt, 4>& v, const tensor_view<O, 4>& o,
         const linear_states<A>& s, const Gr& gate) {
  const item_ctx<A, Q, Kt, Vt, O, Gr> c{sh, p, q, k, v, o, s, gate};
  executor& ex = resolve(p.exec);
  if (resolve_algorithm(p, sh) == algorithm::recurrent) {
    ex.parallel_for(sh.N * sh.H, [&](index_t item) {
      thread_local workspace<A> ws;
      run_recurrent<A, Arch>(c, item / sh.H, item % sh.H, ws);
    });
    return;
  }
  // chunk: items of up to 8 consecutive heads of one sequence (their rows are adjacent in
  // [B,T,H,K], so the inputs are read in longer runs), fewer when that leaves fewer items than
  // threads. Each head's arithmetic is the same in any grouping, so results depend neither on it
  // nor on the thread count.
  const index_t hg =
      std::max<index_t>(1, std::min<index_t>({8, sh.H, sh.N * sh.H / index_t(ex.num_threads())}));
  const index_t groups = (sh.H + hg - 1) / hg;
  ex.parallel_for(sh.N * groups, [&](index_t item) {
    thread_local workspace<A> ws;
    const index_t n = item / groups, hb = item % groups * hg;
    run_chunked<A, Arch>(c, n, hb, std::min(sh.H, hb + hg), ws);
  });
}

template <class Q, class K, class V, class O>
constexpr void check_types() {
  using A = accum_t<Q>;
  static_assert(
      is_storage_type_v<Q> && is_storage_type_v<K> && is_storage_type_v<V> && is_storage_type_v<O>,
      "attnkit: element types must be float, double, bf16 or fp16");
  static_assert(!std::is_same_v<A, double> || (std::is_same_v<std::remove_const_t<K>, double> &&
                                               std::is_same_v<std::remove_const_t<V>, double>),
                "attnkit: double queries need double keys/values");
}

/// Strides the fast kernels need: stride 1 on the last dimension of q, k, v, o and the states.
template <class Q, class K, class V, class O, class A>
void check_fast_layout(const char* fn, const linear_params& p, const tensor_view<Q, 4>& q,
                       const tensor_view<K, 4>& k, const tensor_view<V, 4>& v,
                       const tensor_view<O, 4>& o, const linear_states<A>& s) {
  require_inner_contiguous({fn, "q", "B,T,H,K"}, q);
  require_inner_contiguous({fn, "k", "B,T,H,K"}, k);
  require_inner_contiguous({fn, "v", "B,T,H,V"}, v);
  require_inner_contiguous({fn, "o", "B,T,H,V"}, o);
  if (s.h0.present()) require_inner_contiguous({fn, "h0", state_axes(p)}, s.h0);
  if (s.ht.present()) require_inner_contiguous({fn, "ht", state_axes(p)}, s.ht);
}

}  // namespace linear_impl
}  // namespace detail

/// Linear attention: S_t = S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t) (optionally normalised by
/// q~_t . z_t + 1e-10, params.normalize). q, k [B,T,H,K], v, o [B,T,H,V]; states in s.
/// The last dimension of q, k, v, o, h0, ht needs stride 1.
template <class Q, class K, class V, class O, class Arch = simd::default_arch>
void linear_attn(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                 tensor_view<V, 4> v, tensor_view<O, 4> o, const recurrent_state<accum_t<Q>>& state = {},
                 const linear_extras<accum_t<Q>>& x = {}) {
  namespace li = detail::linear_impl;
  li::check_types<std::remove_const_t<Q>, K, V, std::remove_const_t<O>>();
  using A = accum_t<Q>;
  const char* fn = "linear_attn";
  const auto s = detail::combine(state, x);
  const auto sh = detail::check_linear(fn, p, gate_kind::none, q, k, v, o, s);
  li::check_fast_layout(fn, p, q, k, v, o, s);
  li::run<A, Arch>(sh, p, q, k, v, o, s, detail::gate_reader<A, Arch, void>{});
}

/// Scalar-gated linear attention: S_t = exp(g_t) S_{t-1} + k_t v_t^T with g [B,T,H] (log decay).
template <class Q, class K, class V, class G, class O, class Arch = simd::default_arch>
void simple_gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                tensor_view<V, 4> v, tensor_view<G, 3> g, tensor_view<O, 4> o,
                const recurrent_state<accum_t<Q>>& state = {}) {
  namespace li = detail::linear_impl;
  li::check_types<std::remove_const_t<Q>, K, V, std::remove_const_t<O>>();
  static_assert(is_storage_type_v<G>, "attnkit: gate must be float, double, bf16 or fp16");
  using A = accum_t<Q>;
  const char* fn = "simple_gla";
  const auto s = detail::combine(state);
  const auto sh = detail::check_linear(fn, p, gate_kind::scalar, q, k, v, o, s);
  detail::check_gate(fn, sh, g);
  li::check_fast_layout(fn, p, q, k, v, o, s);
  li::run<A, Arch>(sh, p, q, k, v, o, s, detail::gate_reader<A, Arch, tensor_view<G, 3>>{g});
}

/// Scalar-gated linear attention with a fixed per-head log decay g_gamma [H] (RetNet):
/// S_t = exp(g_gamma[h]) S_{t-1} + k_t v_t^T.
template <class Q, class K, class V, class G, class O, class Arch = simd::default_arch>
void simple_gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                tensor_view<V, 4> v, tensor_view<G, 1> g_gamma, tensor_view<O, 4> o,
                const recurrent_state<accum_t<Q>>& state = {}) {
  namespace li = detail::linear_impl;
  li::check_types<std::remove_const_t<Q>, K, V, std::remove_const_t<O>>();
  static_assert(is_storage_type_v<G>, "attnkit: gate must be float, double, bf16 or fp16");
  using A = accum_t<Q>;
  const char* fn = "simple_gla";
  const auto s = detail::combine(state);
  const auto sh = detail::check_linear(fn, p, gate_kind::head_decay, q, k, v, o, s);
  detail::check_gate(fn, sh, g_gamma);
  li::check_fast_layout(fn, p, q, k, v, o, s);
  li::run<A, Arch>(sh, p, q, k, v, o, s, detail::gate_reader<A, Arch, tensor_view<G, 1>>{g_gamma});
}

/// Gated linear attention with a per-key-channel log decay g [B,T,H,K]:
/// S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T. The last dimension of g needs stride 1 too.
template <class Q, class K, class V, class G, class O, class Arch = simd::default_arch>
void gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k, tensor_view<V, 4> v,
         tensor_view<G, 4> g, tensor_view<O, 4> o, const recurrent_state<accum_t<Q>>& state = {}) {
  namespace li = detail::linear_impl;
  li::check_types<std::remove_const_t<Q>, K, V, std::remove_const_t<O>>();
  static_assert(is_storage_type_v<G>, "attnkit: gate must be float, double, bf16 or fp16");
  using A = accum_t<Q>;
  const char* fn = "gla";
  const auto s = detail::combine(state);
  const auto sh = detail::check_linear(fn, p, gate_kind::channel, q, k, v, o, s);
  detail::check_gate(fn, sh, g);
  li::check_fast_layout(fn, p, q, k, v, o, s);
  detail::require_inner_contiguous({fn, "g", "B,T,H,K"}, g);
  li::run<A, Arch>(sh, p, q, k, v, o, s, detail::gate_reader<A, Arch, tensor_view<G, 4>>{g});
}

}  // namespace attnkit

#include "../core/warnings_pop.hpp"
