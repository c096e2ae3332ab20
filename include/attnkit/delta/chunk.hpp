// SPDX-License-Identifier: Apache-2.0
// Chunk algorithm of the delta family (params.algo = chunk; delta_rule, gated_delta_rule, kda),
// per chunk of L <= C tokens with the state S0 [K, V] at the chunk start and the chunk-local
// inclusive cumulative log gate G_r = sum_{s<=r} g_s (per channel for kda, scalar for
// gated_delta_rule, 0 for delta_rule). Unrolling the recurrence (WY form):
//   Akk[r,c] = beta_r k_r . (k_c * e^{G_r - G_c})   (c < r)      Aqk[r,c] = q~_r . (k_c * e^{G_r -
//   G_c}) (c <= r) Z = [k * e^G ; q~ * e^G] S0                          (one GEMM over the state,
//   2L rows) u = (I + Akk)^{-1} diag(beta) (V - Z_k)              (T = (I + Akk)^{-1}: unit lower)
//   O = Z_q + Aqk u
//   S = diag(e^{G_{L-1}}) S0 + (k * e^{G_{L-1} - G})^T u
// The products run on the register-tiled micro-kernel of core/chunk_kernels.hpp over padded
// buffers laid out once per chunk; the causal ones read only the lower triangles (later tokens
// never reach earlier rows). Decay factors, every exponent <= 0:
//   scalar gate: e^{G_r}, e^{G_{L-1} - G_r} from plain prefix and suffix sums; the pair factors
//     D[r,c] = prod_{c<s<=r} e^{g_s} as running row products (no cancellation of large sums);
//   per-channel gate (kda): the rows r whose decay from the chunk start is bounded (every
//     e^{-G_r} <= e^{60} in float: core/chunk_kernels.hpp kMaxDecaySpan) as one causal GEMM of
//     the factorisation (k_r * e^{G_r}) . (k_c * e^{-G_c}), where no factor overflows; the later
//     rows (strong gates) as gla, by 16-row sub-chunks: off-diagonal blocks factor around the
//     first row n of sub-chunk i, (x_r * e^{G_r - G_n}) . (k_c * e^{G_n - G_c}); diagonal blocks
//     use exact per-pair running products k_c * prod_{c<s<=r} e_s. A row's scheme depends only
//     on its own and earlier tokens.
// A chunk also ends at every position whose state is saved (snapshots: the state exists only at
// chunk boundaries); a chunk of one token takes the recurrent token step (recurrent.hpp) on the
// same state strips, as the per-token tail of snapshots.last does.
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../core/chunk_kernels.hpp"
#include "item.hpp"
#include "recurrent.hpp"

namespace attnkit {
namespace detail {
namespace delta_impl {

constexpr index_t kSubChunk = 16;  // rows of a per-channel sub-chunk (kda)

/// Buffers of one worker (rows padded: Kp, Vp, Cp multiples of the micro-kernel width).
template <class A>
struct chunk_workspace {
  aligned_vector<A> S;          // [Kp, Vp] state
  aligned_vector<A> kq;         // [2C, Kp] k rows, then q~ rows (normalised, q~ scaled)
  aligned_vector<A> x;          // [2C, Kp] k * e^G rows, then q~ * e^G rows (gated)
  aligned_vector<A> kh;         // [C, Kp] k * e^{G_{L-1} - G} (gated)
  aligned_vector<A> kt;         // [Kp, Cp] k^T (kda: the decayed off-diagonal k^T)
  aligned_vector<A> akk, aqk;   // [C, Cp] intra-chunk products (lower triangles)
  aligned_vector<A> tinv;       // [C, Cp] (I + Akk)^{-1} - I (strictly lower, zero elsewhere)
  aligned_vector<A> z;          // [2C, 2W] a strip of Z = [k e^G ; q~ e^G] S0, then O (q~ rows)
  aligned_vector<A> y;          // [C, Vp] v rows
  aligned_vector<A> u;          // [2C, 2W] a strip of beta (v - Z_k), then of u
  aligned_vector<A> e;          // exp(g): [C, Kp] (kda) or [C] (gated_delta_rule)
  aligned_vector<A> beta;       // [C]
  aligned_vector<A> cs;         // [Kp] e^{G_{L-1}}: the state's row factors
  aligned_vector<A> tmp;        // kda: [(2 sub-chunks + 1 + C), Kp]; gated: [Cp]
  aligned_vector<double> glog;  // gated: [C] log decays
  prefetch_queue pf;            // the next chunk's rows, issued between GEMM tiles
  workspace<A> tok;             // one token's rows for the recurrent token step (1-token chunks)
};

/// Element count of each buffer of chunk_workspace for chunks of C tokens (plan_workspace).
struct chunk_sizes {
  index_t Kp, Vp, Cp;
};
template <class A, class Arch>
chunk_sizes chunk_padding(index_t K, index_t V, index_t C) {
  constexpr index_t NR = 2 * simd::lanes<A, Arch>;
  return {round_up(K, NR), round_up(V, NR), round_up(C, NR)};
}

// Per-channel decayed products (kda) of one chunk, e = exp(g) [L, Kp]:
//   ak[r, c] = k_r . (k_c * prod_{c<s<=r} e_s), aq[r, c] = q~_r . (k_c * prod_{c<s<=r} e_s), c <= r
// by 16-row sub-chunks (see the top of this file), for the rows of the sub-chunks from the one
// holding row `from` on (each row's result depends only on its own and earlier tokens). tmp holds
// (2 * 16 + 1 + L) * Kp elements.
template <class A, class Arch>
void channel_products(index_t L, index_t from, index_t K, index_t Kp, index_t Cp, const A* Kc,
                      const A* Qs, const A* e, A* Kt, A* ak, A* aq, A* tmp) {
  constexpr index_t BC = kSubChunk;
  A* kf = tmp;            // [BC, Kp] k rows of the sub-chunk * e^{G_r - G_n}
  A* qf = kf + BC * Kp;   // [BC, Kp] q~ rows likewise
  A* run = qf + BC * Kp;  // [Kp] running products
  A* kb = run + Kp;       // [L, Kp] rows k_c * e^{G_n - G_c}
  const auto kd = [&](index_t) { return K; };
  const auto all = [](index_t) { return index_t(1) << 40; };
  for (index_t i0 = from / BC * BC; i0 < L; i0 += BC) {
    const index_t i1 = std::min(L, i0 + BC);
    if (i0 > 0) {  // off-diagonal: rows [i0, i1) x columns [0, i0), reference row n = i0
      std::fill(run, run + Kp, A(1));
      for (index_t r = i0; r < i1; ++r) {  // e^{G_r - G_n} = prod_{n<s<=r} e_s
        if (r > i0) vmul<A, Arch>(run, e + r * Kp, run, Kp);
        vmul<A, Arch>(Kc + r * Kp, run, kf + (r - i0) * Kp, Kp);
        vmul<A, Arch>(Qs + r * Kp, run, qf + (r - i0) * Kp, Kp);
      }
      std::fill(run, run + Kp, A(1));
      for (index_t c = i0; c-- > 0;) {  // e^{G_n - G_c} = prod_{c<s<=n} e_s
        vmul<A, Arch>(run, e + (c + 1) * Kp, run, Kp);
        vmul<A, Arch>(Kc + c * Kp, run, kb + c * Kp, Kp);
      }
      // (Kt columns from i0 to the tile's end hold stale values: they only reach ak / aq columns
      // >= i0 of these rows, which the diagonal block below overwrites or nobody reads)
      simd::transpose<A, Arch>(kb, Kp, Kt, Cp, i0, K);
      gemm<A, Arch>(i1 - i0, i0, kf, Kp, 1, Kt, Cp, ak + i0 * Cp, Cp, false, nullptr, kd, all);
      gemm<A, Arch>(i1 - i0, i0, qf, Kp, 1, Kt, Cp, aq + i0 * Cp, Cp, false, nullptr, kd, all);
    }
    // diagonal block: exact per-pair running products, column by column
    for (index_t c = i0; c < i1; ++c)
      for (const auto& xa : {std::make_pair(Kc, ak), std::make_pair(Qs, aq)}) {
        std::copy(Kc + c * Kp, Kc + c * Kp + Kp, run);
        for (index_t r0 = c; r0 < i1; r0 += 4) {
          const auto rows = [&](auto first) {
            constexpr bool F = decltype(first)::value;
            switch (std::min<index_t>(4, i1 - r0)) {
              case 4:
                diag_rows<4, F, A, Arch>(xa.first, e, Kp, r0, run, xa.second + c, Cp);
                break;
              case 3:
                diag_rows<3, F, A, Arch>(xa.first, e, Kp, r0, run, xa.second + c, Cp);
                break;
              case 2:
                diag_rows<2, F, A, Arch>(xa.first, e, Kp, r0, run, xa.second + c, Cp);
                break;
              default:
                diag_rows<1, F, A, Arch>(xa.first, e, Kp, r0, run, xa.second + c, Cp);
                break;
            }
          };
          if (r0 == c)
            rows(std::true_type{});
          else
            rows(std::false_type{});
        }
      }
  }
}

// T = (I + Akk)^{-1} - I for the strictly lower Akk [L, L] (row stride Cp), by rows:
//   T[r, :] = -sum_{m<r} Akk[r, m] (T[m, :] + e_m)
// in column blocks of 2W held in registers (even and odd m in separate accumulators). T is
// strictly lower; its diagonal and upper part are written as 0 (read as zeros). Cp is a multiple
// of 2W.
template <class A, class Arch>
void unit_lower_inverse(index_t L, index_t Cp, const A* akk, A* T) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  for (index_t r = 0; r < L; ++r) {
    A* tr = T + r * Cp;
    const A* ar = akk + r * Cp;
    for (index_t cb = 0; cb < Cp; cb += 2 * W) {
      B acc[4] = {B(A(0)), B(A(0)), B(A(0)), B(A(0))};
      // rows m < r with T[m, c] != 0 for some c in the block: m > cb
      index_t m = cb + 1;
      for (; m + 1 < r; m += 2) {
        const B a0(-ar[m]), a1(-ar[m + 1]);
        const A* t0 = T + m * Cp + cb;
        const A* t1 = t0 + Cp;
        acc[0] = xsimd::fma(a0, B::load_unaligned(t0), acc[0]);
        acc[1] = xsimd::fma(a0, B::load_unaligned(t0 + W), acc[1]);
        acc[2] = xsimd::fma(a1, B::load_unaligned(t1), acc[2]);
        acc[3] = xsimd::fma(a1, B::load_unaligned(t1 + W), acc[3]);
      }
      if (m < r) {
        const B a0(-ar[m]);
        const A* t0 = T + m * Cp + cb;
        acc[0] = xsimd::fma(a0, B::load_unaligned(t0), acc[0]);
        acc[1] = xsimd::fma(a0, B::load_unaligned(t0 + W), acc[1]);
      }
      (acc[0] + acc[2]).store_unaligned(tr + cb);
      (acc[1] + acc[3]).store_unaligned(tr + cb + W);
      for (index_t c = cb; c < std::min(r, cb + 2 * W); ++c) tr[c] -= ar[c];  // the e_m terms
    }
  }
}

// Sequence n, value heads [jb, je): chunk by chunk, and head by head within a chunk (the rows of
// consecutive heads are adjacent in [B,T,H,K], so the inputs are read in long runs); each head
// keeps its own state ([Kp, Vp] per head in ws.S).
template <class A, class Arch, class Ctx>
void run_chunked(const Ctx& c, index_t n, index_t jb, index_t je, chunk_workspace<A>& ws) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  const delta_shape& sh = c.sh;
  const delta_params& p = c.p;
  const index_t K = sh.K, V = sh.V;
  const token_seq& sq = sh.seqs[std::size_t(n)];
  const index_t row = sh.rows[std::size_t(n)];  // the sequence's state row (pool)
  if (row < 0) {                                // a skipped sequence: zero outputs, no state
    for (index_t j = jb; j < je; ++j) zero_outputs(c.o, sq, j);
    return;
  }
  // a chunk longer than the sequence is the whole sequence (same grid, bounded workspace)
  const index_t C = std::min(p.chunk_size, std::max<index_t>(sq.len, 1));
  // (no structured bindings: lambdas below capture these, which C++17 does not allow for them)
  const chunk_sizes pad = chunk_padding<A, Arch>(K, V, C);
  const index_t Kp = pad.Kp, Vp = pad.Vp, Cp = pad.Cp;
  const bool channel = sh.decay == gate_kind::channel, decayed = sh.decay != gate_kind::none;
  ensure(ws.S, (je - jb) * Kp * Vp);
  ensure(ws.kq, 2 * C * Kp);
  ensure(ws.kt, Kp * Cp);
  ensure(ws.akk, C * Cp);
  ensure(ws.aqk, C * Cp);
  ensure(ws.tinv, C * Cp);
  ensure(ws.z, 2 * C * 2 * W);
  ensure(ws.y, C * Vp);
  ensure(ws.u, 2 * C * 2 * W);
  ensure(ws.beta, C);
  if (decayed) {
    ensure(ws.x, 2 * C * Kp);
    ensure(ws.kh, C * Kp);
    ensure(ws.cs, Kp);
    ensure(ws.e, channel ? C * Kp : C);
    ensure(ws.tmp, channel ? (2 * kSubChunk + 1 + C) * Kp : Cp);
  }
  // S <- h0 as column strips of NR columns, each [Kp, NR] contiguous (16 KB for K = 128 floats
  // on AVX-512): a strip stays in L1 through its products of one chunk. K-first internally;
  // V-first states are transposed on the way in and out.
  constexpr index_t NR = 2 * W;
  // head j's strip of columns [e0, e0 + NR)
  const auto strip = [&](index_t j, index_t e0) {
    return ws.S.data() + (j - jb) * Kp * Vp + e0 * Kp;
  };
  std::fill(ws.S.data(), ws.S.data() + (je - jb) * Kp * Vp, A(0));
  const auto rows_of = [&](const auto& st) { return !p.state_v_first && st.stride(3) == 1; };
  for (index_t j = jb; j < je && c.s.h0.present(); ++j)
    for (index_t d = 0; d < K; ++d)
      for (index_t e0 = 0; e0 < V; e0 += NR) {
        A* dst = strip(j, e0) + d * NR;
        const index_t ne = std::min(NR, V - e0);
        if (rows_of(c.s.h0)) {
          const A* src = &c.s.h0(row, j, d, e0);
          std::copy(src, src + ne, dst);
        } else {
          for (index_t e = 0; e < ne; ++e)
            dst[e] = p.state_v_first ? c.s.h0(row, j, e0 + e, d) : c.s.h0(row, j, d, e0 + e);
        }
      }
  const auto kd_k = [&](index_t) { return K; };
  const auto all = [](index_t) { return index_t(1) << 40; };
  const auto causal = [](index_t r1) { return r1; };
  // head j's state into row vrow of dst (ht, or a snapshot's [N,HV,.,.] slice)
  const auto store_state = [&](const tensor_view<A, 4>& dst, index_t vrow, index_t j) {
    for (index_t d = 0; d < K; ++d)
      for (index_t e0 = 0; e0 < V; e0 += NR) {
        const A* src = strip(j, e0) + d * NR;
        const index_t ne = std::min(NR, V - e0);
        if (rows_of(dst))
          std::copy(src, src + ne, &dst(vrow, j, d, e0));
        else
          for (index_t e = 0; e < ne; ++e)
            (p.state_v_first ? dst(vrow, j, e0 + e, d) : dst(vrow, j, d, e0 + e)) = src[e];
      }
  };
  // Chunks of up to C tokens that end at every saved position (snapshots), where the state is
  // then complete; a chunk of one token (e.g. the tail of snapshots.last) takes the recurrent
  // token step on the same strips (no chunk products to amortise).
  const snapshot_schedule sched = sh.schedule(n);
  const auto chunk_end = [&](index_t t) { return std::min(t + C, sched.next_cut(t)); };
  size_token_block(ws.tok, K, channel, 1);

  for (index_t t0 = 0, t1 = 0; t0 < sq.len; t0 = t1) {
    t1 = chunk_end(t0);
    const index_t slot = sched.slot(t1);
    for (index_t j = jb; j < je; ++j) {
      const index_t L = t1 - t0, h = j / (sh.HV / sh.H);
      if (L == 1) {
        load_token_block<A, Arch>(c, ws.tok, sq, h, j, t0, 1);
        for (index_t e0 = 0; e0 < V; e0 += NR)
          slices_through_block<2, A, Arch>(c, ws.tok, n, j, t0, 1, e0, strip(j, e0), NR,
                                           strip(j, e0), NR);
        if (slot >= 0) store_state(subview(c.s.snapshots.states, 1, slot), n, j);
        continue;
      }
      A* const Kc = ws.kq.data();  // [L, Kp] k, then [L, Kp] q~ (one operand of Z without gate)
      A* const Qs = Kc + L * Kp;
      A* const Y = ws.y.data();
      A* const beta = ws.beta.data();
      for (index_t i = 0; i < L; ++i) {
        const index_t t = sq.t0 + t0 + i;
        delta_impl::load_row<A, Arch>(&c.q(sq.b, t, h, 0), K, p.qk_l2norm, A(sh.scale),
                                      Qs + i * Kp);
        delta_impl::load_row<A, Arch>(&c.k(sq.b, t, h, 0), K, p.qk_l2norm, A(1), Kc + i * Kp);
        std::fill(Qs + i * Kp + K, Qs + (i + 1) * Kp, A(0));
        std::fill(Kc + i * Kp + K, Kc + (i + 1) * Kp, A(0));
        detail::load_row<A, Arch>(&c.v(sq.b, t, j, 0), Y + i * Vp, V, Vp);
        beta[i] = A(delta_beta(p, to_compute<double>(c.beta(sq.b, t, j))));
      }
      // the next (chunk, head) unit's input and output rows, spread over this unit's GEMM tiles
      prefetch_queue* pf = &ws.pf;
      {
        const index_t tiles = (5 * L / 6 + K / 6 + 4) * ((V + NR - 1) / NR);
        const index_t nt0 = j + 1 < je ? t0 : t1, nj = j + 1 < je ? j + 1 : jb;
        const index_t nt1 = j + 1 < je ? t1 : t1 < sq.len ? chunk_end(t1) : t1;
        // rows [r0, r1) of value head vj's inputs and output; whole rows, or their first element
        const auto queue_rows = [&](index_t r0, index_t r1, index_t vj, bool whole) {
          const index_t vh = vj / (sh.HV / sh.H), nk = whole ? K : 1, nv = whole ? V : 1;
          for (index_t t = sq.t0 + r0; t < sq.t0 + r1; ++t) {
            pf->add(&c.q(sq.b, t, vh, 0), nk, false);
            pf->add(&c.k(sq.b, t, vh, 0), nk, false);
            pf->add(&c.v(sq.b, t, vj, 0), nv, false);
            pf->add(&c.o(sq.b, t, vj, 0), nv, true);
            if constexpr (std::decay_t<decltype(c.gate)>::kind == gate_kind::channel)
              pf->add(&c.gate.raw.g(sq.b, t, vj, 0), nk, false);
          }
        };
        pf->clear();
        queue_rows(nt0, nt1, nj, true);
        // one line of every row of the chunk after next: its page walks ahead of its reads
        if (j == jb && t1 < sq.len && chunk_end(t1) < sq.len)
          queue_rows(chunk_end(t1), chunk_end(chunk_end(t1)), jb, false);
        pf->set_step(
            int(std::max<index_t>(prefetch_queue::lines_per_tile, pf->lines_queued() / tiles + 1)));
      }
      A* ak = ws.akk.data();
      A* aq = ws.aqk.data();
      const A* X = Kc;   // [k * e^G ; q~ * e^G], 2L rows
      const A* Kh = Kc;  // k * e^{G_{L-1} - G}
      const A* cs = nullptr;
      if constexpr (std::decay_t<decltype(c.gate)>::kind == gate_kind::channel) {
        A* e = ws.e.data();
        for (index_t i = 0; i < L; ++i) {  // log decays, then exp in place
          A* er = e + i * Kp;
          c.gate.read_row(sq.b, sq.t0 + t0 + i, j, er, K);
          std::fill(er + K, er + Kp, A(0));
        }
        vexp<A, Arch>(e, e, L * Kp);
        A* x = ws.x.data();
        A* kh = ws.kh.data();
        A* csb = ws.cs.data();
        // e^{G_r} = prod_{s<=r} e_s (running; ends as e^{G_{L-1}}), e^{G_{L-1} - G_r} =
        // prod_{r<s<L}; rows [0, rf) have every e^{G_r} within the factorisation's bound
        index_t rf = L;
        std::fill(csb, csb + Kp, A(1));
        for (index_t r = 0; r < L; ++r) {
          vmul<A, Arch>(csb, e + r * Kp, csb, Kp);
          vmul<A, Arch>(Kc + r * Kp, csb, x + r * Kp, Kp);
          vmul<A, Arch>(Qs + r * Kp, csb, x + (L + r) * Kp, Kp);
          if (rf == L && !decay_factorisable<A, Arch>(csb, K)) rf = r;
        }
        A* suf = ws.tmp.data();
        std::fill(suf, suf + Kp, A(1));
        for (index_t r = L; r-- > 0;) {
          vmul<A, Arch>(Kc + r * Kp, suf, kh + r * Kp, Kp);
          vmul<A, Arch>(suf, e + r * Kp, suf, Kp);
        }
        // Rows from rf on by sub-chunks, then rows [0, rf) (overwriting any of theirs the
        // sub-chunks touched) as x kb^T with kb_c = k_c * e^{-G_c}: the scheme of a row depends
        // only on its own and earlier tokens
        if (rf < L)
          channel_products<A, Arch>(L, rf, K, Kp, Cp, Kc, Qs, e, ws.kt.data(), ak, aq,
                                    ws.tmp.data());
        if (rf > 0) {
          A* kb = suf + Kp;  // [rf, Kp] after the running product e^{G_c} in suf
          std::fill(suf, suf + Kp, A(1));
          for (index_t r = 0; r < rf; ++r) {
            vmul<A, Arch>(suf, e + r * Kp, suf, Kp);
            vdiv<A, Arch>(Kc + r * Kp, suf, kb + r * Kp, Kp);
          }
          A* Kt = ws.kt.data();
          simd::transpose<A, Arch>(kb, Kp, Kt, Cp, rf, K);
          gemm<A, Arch>(rf, rf, x, Kp, 1, Kt, Cp, ak, Cp, false, nullptr, kd_k, causal, pf);
          gemm<A, Arch>(rf, rf, x + L * Kp, Kp, 1, Kt, Cp, aq, Cp, false, nullptr, kd_k, causal,
                        pf);
        }
        X = x, Kh = kh, cs = csb;
      }
      if (!channel) {
        A* Kt = ws.kt.data();
        simd::transpose<A, Arch>(Kc, Kp, Kt, Cp, L, K);
        gemm<A, Arch>(L, L, Kc, Kp, 1, Kt, Cp, ak, Cp, false, nullptr, kd_k, causal, pf);
        gemm<A, Arch>(L, L, Qs, Kp, 1, Kt, Cp, aq, Cp, false, nullptr, kd_k, causal, pf);
        if (decayed) {
          A* e = ws.e.data();
          double G = 0;  // e^{G_r} from the prefix sum, e^{G_{L-1} - G_r} from the suffix sum
          A* x = ws.x.data();
          A* kh = ws.kh.data();
          ensure(ws.glog, L);
          double* gl = ws.glog.data();  // the L log decays, read (and transformed) once
          for (index_t r = 0; r < L; ++r) {
            const double g = gl[r] = c.gate(sq.b, sq.t0 + t0 + r, j, 0);
            e[r] = A(std::exp(g));
            G += g;
            const B f(A(std::exp(G)));
            for (index_t d = 0; d < Kp; d += W) {
              (B::load_unaligned(Kc + r * Kp + d) * f).store_unaligned(x + r * Kp + d);
              (B::load_unaligned(Qs + r * Kp + d) * f).store_unaligned(x + (L + r) * Kp + d);
            }
          }
          double U = 0;
          for (index_t r = L; r-- > 0;) {
            const B f(A(std::exp(U)));
            for (index_t d = 0; d < Kp; d += W)
              (B::load_unaligned(Kc + r * Kp + d) * f).store_unaligned(kh + r * Kp + d);
            U += gl[r];
          }
          std::fill(ws.cs.begin(), ws.cs.begin() + Kp, A(std::exp(G)));
          // D[r, c] = prod_{c<s<=r} e_s (running row products, D[r, r] = 1) on both products
          A* D = ws.tmp.data();
          for (index_t r = 0; r < L; ++r) {
            const B er(e[r]);
            for (index_t cc = 0; cc < r; cc += W)
              (B::load_unaligned(D + cc) * er).store_unaligned(D + cc);
            D[r] = A(1);
            for (index_t cc = 0; cc <= r; ++cc) {
              ak[r * Cp + cc] *= D[cc];
              aq[r * Cp + cc] *= D[cc];
            }
          }
          X = x, Kh = kh, cs = ws.cs.data();
        }
      }
      // T = (I + diag(beta) Akk)^{-1} - I
      for (index_t r = 0; r < L; ++r)
        for (index_t cc = 0; cc < r; ++cc) ak[r * Cp + cc] *= beta[r];
      unit_lower_inverse<A, Arch>(L, Cp, ak, ws.tinv.data());
      // Columns never mix: each strip of NR value columns runs through the chunk on its own.
      A* const Z = ws.z.data();   // [2L, NR]
      A* const Ys = ws.u.data();  // [L, NR] y, then (second half of the buffer) u
      A* const U = Ys + L * NR;
      for (index_t e0 = 0; e0 < V; e0 += NR) {
        A* const Se = strip(j, e0);
        // Z = [k * e^G ; q~ * e^G] S0
        gemm<A, Arch>(2 * L, NR, X, Kp, 1, Se, NR, Z, NR, false, nullptr, kd_k, all, pf);
        // y = diag(beta) (v - Z_k);  u = (I + T) y
        for (index_t r = 0; r < L; ++r) {
          const B br(beta[r]);
          for (index_t e = 0; e < NR; e += W) {
            const B yv =
                br * (B::load_unaligned(Y + r * Vp + e0 + e) - B::load_unaligned(Z + r * NR + e));
            yv.store_unaligned(Ys + r * NR + e);
            yv.store_unaligned(U + r * NR + e);
          }
        }
        gemm_lower<A, Arch>(L, NR, ws.tinv.data(), Cp, Ys, NR, U, NR, pf);
        // O = Z_q + Aqk u
        A* const O = Z + L * NR;
        gemm_lower<A, Arch>(L, NR, aq, Cp, U, NR, O, NR, pf);
        const index_t ne = std::min(NR, V - e0);
        for (index_t i = 0; i < L; ++i) {
          auto* dst = &c.o(sq.b, sq.t0 + t0 + i, j, e0);
          if (ne == NR)
            simd::store_converted_fixed<NR>(O + i * NR, dst);
          else
            simd::store_converted(O + i * NR, dst, ne);
        }
        // S = diag(e^{G_{L-1}}) S0 + Kh^T u
        gemm<A, Arch>(
            K, NR, Kh, 1, Kp, U, NR, Se, NR, true, cs, [&](index_t) { return L; }, all, pf);
      }
      pf->drain();
      if (slot >= 0) store_state(subview(c.s.snapshots.states, 1, slot), n, j);
    }
  }
  for (index_t j = jb; j < je && c.s.ht.present(); ++j) store_state(c.s.ht, row, j);
}

}  // namespace delta_impl
}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
