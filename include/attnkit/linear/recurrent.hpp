// SPDX-License-Identifier: Apache-2.0
// Recurrent algorithm of the linear family (params.algo = recurrent), per token, one pass over the
// state:
//   S <- diag(a) S + k v^T  and  o = S^T q~   fused row by row (a = exp(g), K-first rows are key
//   channels, V-first rows are value channels); undecayed K-first states take two tokens per
//   pass. Token 0 reads h0 and the last token writes ht directly, so the decode step (T = 1)
//   reads the state once and writes it once, in place if ht == h0. With a state pool the state
//   rows are the sequence's pool row (state_indices); a skipped sequence only zeroes its o rows.
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <type_traits>

#include "item.hpp"

namespace attnkit {
namespace detail {
namespace linear_impl {

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
// Recurrent algorithm for one (sequence n, head h).
template <class A, class Arch, class Ctx>
void run_recurrent(const Ctx& c, index_t n, index_t h, workspace<A>& ws) {
  constexpr index_t W = simd::lanes<A, Arch>;
  constexpr gate_kind kind = std::decay_t<decltype(c.gate)>::kind;
  const auto& sh = c.sh;
  const auto& sq = sh.seqs[std::size_t(n)];
  const index_t row = sh.rows[std::size_t(n)];  // the sequence's state row (pool)
  if (row < 0) {                                // a skipped sequence: zero outputs, no state
    zero_outputs(c.o, sq, h);
    return;
  }
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
  if (c.p.normalize) load_z(c, row, h, z, Kp);

  const A* h0 = c.s.h0.present() ? &c.s.h0(row, h, 0, 0) : nullptr;
  const index_t ld0 = c.s.h0.present() ? c.s.h0.stride(2) : 0;
  A* ht = c.s.ht.present() ? &c.s.ht(row, h, 0, 0) : nullptr;
  const index_t ldt = c.s.ht.present() ? c.s.ht.stride(2) : 0;
  if (sq.len == 0) {  // final = initial
    if (ht)
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < cols; ++j) ht[r * ldt + j] = h0 ? h0[r * ld0 + j] : A(0);
    store_z(c, row, h, z);
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
  store_z(c, row, h, z);
}

}  // namespace linear_impl
}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
