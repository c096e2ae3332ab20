// SPDX-License-Identifier: Apache-2.0
// Chunk algorithm of the linear family (params.algo = chunk), per chunk of L <= C rows with the
// chunk-local inclusive cumulative log gate P_r = sum_{s<=r} g_s and the suffix U_c = sum_{c<s<L}
// g_s (both plain sums, no cancellation, every exponent <= 0):
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
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "item.hpp"

namespace attnkit {
namespace detail {
namespace linear_impl {

// ---------------------------------------------------------------------------------------------
// Chunk algorithm for sequence n and heads [hb, he), chunk by chunk and head by head within a
// chunk: the rows of consecutive heads are adjacent in memory ([B,T,H,K]), so this reads the inputs
// (nearly) sequentially; each head keeps its own state (one Kp x Vp buffer per head). The states
// are read from and written to the sequence's state row (its pool row with state_indices).
template <class A, class Arch, class Ctx>
void run_chunked(const Ctx& c, index_t n, index_t hb, index_t he, workspace<A>& ws) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size), NR = 2 * W, BC = 16;
  constexpr gate_kind kind = std::decay_t<decltype(c.gate)>::kind;
  const auto& sh = c.sh;
  const auto& sq = sh.seqs[std::size_t(n)];
  const index_t row = sh.rows[std::size_t(n)];  // the sequence's state row (pool)
  if (row < 0) {                                // a skipped sequence: zero outputs, no state
    for (index_t h = hb; h < he; ++h) zero_outputs(c.o, sq, h);
    return;
  }
  // a chunk longer than the sequence is the whole sequence (same grid, bounded workspace)
  const index_t K = sh.K, V = sh.V, C = std::min(c.p.chunk_size, std::max<index_t>(sq.len, 1));
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
                            ? (vf ? c.s.h0(row, h, e, d) : c.s.h0(row, h, d, e))
                            : A(0);
    if (c.p.normalize) load_z(c, row, h, zg + (h - hb) * Kp, Kp);
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
          for (index_t d = (kind == gate_kind::channel ? K : 1); d < gw; ++d) g[r * gw + d] = A(0);
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
      gemm_lower<A, Arch>(L, V, Am, Cp, Vc, Vp, Ob, Vp, pf);
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
          (vf ? c.s.ht(row, h, e, d) : c.s.ht(row, h, d, e)) = S[d * Vp + e];
    store_z(c, row, h, zg + (h - hb) * Kp);
  }
}

}  // namespace linear_impl
}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
