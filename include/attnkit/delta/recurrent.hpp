// SPDX-License-Identifier: Apache-2.0
// Recurrent algorithm of the delta family (params.algo = recurrent). The update of one token
// decomposes by value column: for column e, w[e] = sum_c S'[c,e] k[c], u[e] = beta (v[e] - w[e]),
// S[c,e] = S'[c,e] + k[c] u[e], o[e] = sum_c q~[c] S[c,e], so columns never mix. Work item =
// (sequence, value head); its state lives in the worker's buffer as column strips of 4W columns
// (then 2W, W; W = batch width), each [K, width] contiguous (a strip of 4W floats x K = 128 is 32
// KB: it stays in L1 without set conflicts). Tokens are taken in blocks of kTokenBlock: the block's
// normalised q~, k, beta and decays are prepared once, then each strip runs through all tokens of
// the block:
//   pass 1: S'[c] = a_c S[c] (decay), w += k_c S'[c]       (K FMAs per token and slice)
//   u = beta (v - w)
//   pass 2: S[c] = S'[c] + k_c u, o += q~_c S[c]            (2K FMAs)
// with separate accumulators for even and odd rows (8 independent FMA chains per strip).
// Results do not depend on the thread count (one thread per item, fixed order).
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <cmath>
#include <vector>

#include "item.hpp"

namespace attnkit {
namespace detail {
namespace delta_impl {

constexpr index_t kTokenBlock = 32;

template <class A>
struct workspace {
  aligned_vector<A> S;      // the state as column strips (run_recurrent), K * Vp elements
  aligned_vector<A> q, k;   // [kTokenBlock, K] normalised (q scaled)
  aligned_vector<A> decay;  // [kTokenBlock] (scalar) or [kTokenBlock, K] (channel): exp(g)
  aligned_vector<A> beta;   // [kTokenBlock]
};

// NS adjacent W-wide column slices [e0, e0 + NS W) of item (n, j)'s state through the tokens
// [t0, t0 + nt) of its sequence, whose normalised rows, betas and decays are in ws (params.hpp:
// S' = D S; w = S'^T k; u = beta (v - w); S = S' + k u^T; o = S^T q~). The slices' state rows
// are read at src (row stride lds) and written at dst (row stride ldd): a strip of the worker's
// buffer (src == dst), or for a single token the caller's h0 and ht rows (one read, one write).
template <int NS, class A, class Arch, class Ctx>
void slices_through_block(const Ctx& c, workspace<A>& ws, index_t n, index_t j, index_t t0,
                          index_t nt, index_t e0, const A* src, index_t lds, A* dst, index_t ldd) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  const delta_shape& sh = c.sh;
  const index_t K = sh.K, V = sh.V;
  const token_seq& sq = sh.seqs[std::size_t(n)];
  const index_t row = sh.rows[std::size_t(n)];  // the sequence's state row (pool)
  if (row < 0) {                                // a skipped sequence: zero outputs, no state
    zero_outputs(c.o, sq, j);
    return;
  }
  const bool channel = sh.decay == gate_kind::channel, decayed = sh.decay != gate_kind::none;
  for (index_t i = 0; i < nt; ++i) {
    const index_t t = sq.t0 + t0 + i;
    const A* qi = ws.q.data() + i * K;
    const A* ki = ws.k.data() + i * K;
    const A* ai = ws.decay.data() + (channel ? i * K : i);
    // pass 1: S' = D S, w = S'^T k
    B w[2][NS];
    ATTNKIT_UNROLL for (int h = 0; h < 2; ++h) ATTNKIT_UNROLL for (int u = 0; u < NS; ++u) w[h][u] =
        B(A(0));
    auto pass1_row = [&](index_t r, B(&wa)[NS]) {
      const A* in = src + r * lds;
      A* out = dst + r * ldd;
      const B kr(ki[r]);
      B x[NS];
      ATTNKIT_UNROLL for (int u = 0; u < NS; ++u) x[u] = B::load_unaligned(in + u * W);
      if (decayed) {
        const B a(ai[channel ? r : 0]);
        ATTNKIT_UNROLL for (int u = 0; u < NS; ++u) {
          x[u] *= a;
          x[u].store_unaligned(out + u * W);
        }
      }
      ATTNKIT_UNROLL for (int u = 0; u < NS; ++u) wa[u] = xsimd::fma(x[u], kr, wa[u]);
    };
    index_t r = 0;
    for (; r + 2 <= K; r += 2) {  // even and odd rows into separate accumulators
      pass1_row(r, w[0]);
      pass1_row(r + 1, w[1]);
    }
    if (r < K) pass1_row(r, w[0]);
    // u = beta (v - w)  (padding columns: v = 0 and S = 0, so u = 0 there)
    B upd[NS];
    ATTNKIT_UNROLL for (int u = 0; u < NS; ++u) {
      const index_t e = e0 + u * W, ne = std::min(W, V - e);
      const auto* vsrc = &c.v(sq.b, t, j, 0) + e;
      const B vb = ne >= W  ? simd::load<A, Arch>(vsrc)
                   : ne > 0 ? simd::load_partial<A, Arch>(vsrc, ne)
                            : B(A(0));
      upd[u] = B(ws.beta[std::size_t(i)]) * (vb - (w[0][u] + w[1][u]));
    }
    // pass 2: S = S' + k u^T, o = S^T q~
    B acc[2][NS];
    ATTNKIT_UNROLL for (int h = 0; h < 2; ++h) ATTNKIT_UNROLL for (int u = 0; u < NS; ++u)
        acc[h][u] = B(A(0));
    auto pass2_row = [&](index_t r, B(&aa)[NS]) {
      const A* in = decayed ? dst + r * ldd : src + r * lds;  // S' (decayed) or S
      A* out = dst + r * ldd;
      const B kr(ki[r]), qr(qi[r]);
      ATTNKIT_UNROLL for (int u = 0; u < NS; ++u) {
        const B x = xsimd::fma(kr, upd[u], B::load_unaligned(in + u * W));
        x.store_unaligned(out + u * W);
        aa[u] = xsimd::fma(x, qr, aa[u]);
      }
    };
    for (r = 0; r + 2 <= K; r += 2) {
      pass2_row(r, acc[0]);
      pass2_row(r + 1, acc[1]);
    }
    if (r < K) pass2_row(r, acc[0]);
    ATTNKIT_UNROLL for (int u = 0; u < NS; ++u) {
      const index_t e = e0 + u * W, ne = std::min(W, V - e);
      if (ne <= 0) continue;
      alignas(64) A out[W];
      (acc[0][u] + acc[1][u]).store_aligned(out);
      simd::store_converted(out, &c.o(sq.b, t, j, 0) + e, ne);
    }
  }
}

template <class A, class Arch, class Ctx>
void run_recurrent(const Ctx& c, index_t n, index_t j, workspace<A>& ws) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  const delta_shape& sh = c.sh;
  const delta_params& p = c.p;
  const index_t K = sh.K, V = sh.V, Vp = round_up(V, W), h = j / (sh.HV / sh.H);
  const token_seq& sq = sh.seqs[std::size_t(n)];
  const index_t row = sh.rows[std::size_t(n)];  // the sequence's state row (pool)
  if (row < 0) {                                // a skipped sequence: zero outputs, no state
    zero_outputs(c.o, sq, j);
    return;
  }
  const bool channel = sh.decay == gate_kind::channel, decayed = sh.decay != gate_kind::none;
  // A single token (the decode step) with K-first h0 and ht rows of stride 1 and V a multiple of
  // W runs on the caller's rows directly: the state is read once and written once (in place if
  // ht == h0), no copies into the strips and back.
  const bool direct = sq.len == 1 && !p.state_v_first && V % W == 0 && c.s.h0.present() &&
                      c.s.ht.present() && c.s.h0.stride(3) == 1 && c.s.ht.stride(3) == 1;
  if (!direct) ws.S.assign(std::size_t(K * Vp), A(0));  // zero padding columns stay zero
  ws.q.resize(std::size_t(kTokenBlock * K));
  ws.k.resize(std::size_t(kTokenBlock * K));
  ws.decay.resize(std::size_t(kTokenBlock * (channel ? K : 1)));
  ws.beta.resize(std::size_t(kTokenBlock));
  // The state is kept as column strips of 4W (then 2W, W) columns, each [K, width] contiguous,
  // so a strip maps onto L1 without set conflicts (rows of a [K, Vp] array 2^n bytes apart would
  // all fall into the same few sets).
  const index_t full4 = Vp / (4 * W) * (4 * W), full2 = full4 + (Vp - full4) / (2 * W) * (2 * W);
  const auto strip_width = [&](index_t e0) { return e0 < full4 ? 4 * W : e0 < full2 ? 2 * W : W; };
  // f(strip row pointer, r, e0, ne) for every row of every strip: columns [e0, e0 + ne).
  const auto for_each_strip_row = [&](auto&& f) {
    for (index_t e0 = 0; e0 < Vp;) {
      const index_t sw = strip_width(e0);
      for (index_t r = 0; r < K; ++r)
        f(ws.S.data() + e0 * K + r * sw, r, e0, std::min(e0 + sw, V) - e0);
      e0 += sw;
    }
  };
  // State views are [N,HV,K,V] or, with state_v_first, [N,HV,V,K]; K-first rows with stride 1
  // move as contiguous runs.
  const auto state_at = [&](const auto& view, index_t r, index_t e) -> auto& {
    return p.state_v_first ? view(row, j, e, r) : view(row, j, r, e);
  };
  if (c.s.h0.present() && !direct) {
    const bool rows = !p.state_v_first && c.s.h0.stride(3) == 1;
    for_each_strip_row([&](A* x, index_t r, index_t e0, index_t ne) {
      if (rows) {
        const A* src = &c.s.h0(row, j, r, e0);
        std::copy(src, src + ne, x);
      } else {
        for (index_t e = 0; e < ne; ++e) x[e] = state_at(c.s.h0, r, e0 + e);
      }
    });
  }

  for (index_t t0 = 0; t0 < sq.len; t0 += kTokenBlock) {
    const index_t nt = std::min(kTokenBlock, sq.len - t0);
    for (index_t i = 0; i < nt; ++i) {  // the block's normalised rows, betas and decays
      const index_t t = sq.t0 + t0 + i;
      load_row<A, Arch>(&c.q(sq.b, t, h, 0), K, p.qk_l2norm, A(sh.scale), ws.q.data() + i * K);
      load_row<A, Arch>(&c.k(sq.b, t, h, 0), K, p.qk_l2norm, A(1), ws.k.data() + i * K);
      ws.beta[std::size_t(i)] = A(delta_beta(p, to_compute<double>(c.beta(sq.b, t, j))));
      if (channel) {  // the row's log decays, then one vector exp over them
        A* a = ws.decay.data() + i * K;
        if constexpr (std::decay_t<decltype(c.gate)>::kind == gate_kind::channel)
          c.gate.read_row(sq.b, t, j, a, K);
        index_t r = 0;
        for (; r + W <= K; r += W) simd::exp(B::load_unaligned(a + r)).store_unaligned(a + r);
        for (; r < K; ++r) a[r] = std::exp(a[r]);
      } else if (decayed)
        ws.decay[std::size_t(i)] = A(std::exp(c.gate(sq.b, t, j, 0)));
    }
    // Each strip through the block (4W columns: 32 KB of state for K = 128 and 16 float lanes,
    // in L1), two accumulators per slice (even and odd rows): 8 independent FMA chains.
    const auto strips = [&](auto ns, index_t e0) {
      constexpr int NS = decltype(ns)::value;
      if (direct) {
        const A* src = &c.s.h0(row, j, 0, e0);
        A* dst = &c.s.ht(row, j, 0, e0);
        slices_through_block<NS, A, Arch>(c, ws, n, j, t0, nt, e0, src, c.s.h0.stride(2), dst,
                                          c.s.ht.stride(2));
      } else {
        A* strip = ws.S.data() + e0 * K;
        slices_through_block<NS, A, Arch>(c, ws, n, j, t0, nt, e0, strip, NS * W, strip, NS * W);
      }
    };
    index_t e0 = 0;
    for (; e0 < full4; e0 += 4 * W) strips(std::integral_constant<int, 4>{}, e0);
    for (; e0 < full2; e0 += 2 * W) strips(std::integral_constant<int, 2>{}, e0);
    for (; e0 < Vp; e0 += W) strips(std::integral_constant<int, 1>{}, e0);
  }
  if (c.s.ht.present() && !direct) {
    const bool rows = !p.state_v_first && c.s.ht.stride(3) == 1;
    for_each_strip_row([&](const A* x, index_t r, index_t e0, index_t ne) {
      if (rows)
        std::copy(x, x + ne, &c.s.ht(row, j, r, e0));
      else
        for (index_t e = 0; e < ne; ++e) state_at(c.s.ht, r, e0 + e) = x[e];
    });
  }
}

}  // namespace delta_impl
}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
