// SPDX-License-Identifier: Apache-2.0
// Fast kernels of the delta-rule family: delta_rule, gated_delta_rule, kda (math: params.hpp).
//
// recurrent (params.algo = recurrent). The update of one token decomposes by value column: for
// column e, w[e] = sum_c S'[c,e] k[c], u[e] = beta (v[e] - w[e]), S[c,e] = S'[c,e] + k[c] u[e],
// o[e] = sum_c q~[c] S[c,e], so columns never mix. Work item = (sequence, value head); its state
// lives in the worker's buffer as column strips of 4W columns (then 2W, W; W = batch width), each
// [K, width] contiguous (a strip of 4W floats x K = 128 is 32 KB: it stays in L1 without set
// conflicts). Tokens are taken in blocks of kTokenBlock: the block's normalised q~, k, beta and
// decays are prepared once, then each strip runs through all tokens of the block:
//   pass 1: S'[c] = a_c S[c] (decay), w += k_c S'[c]       (K FMAs per token and slice)
//   u = beta (v - w)
//   pass 2: S[c] = S'[c] + k_c u, o += q~_c S[c]            (2K FMAs)
// with separate accumulators for even and odd rows (8 independent FMA chains per strip).
// Results do not depend on the thread count (one thread per item, fixed order).
//
// chunk (params.algo = chunk): delta_rule and gated_delta_rule, the WY form over chunks of
// params.chunk_size tokens (run_chunked below). kda has none (per-channel gates need a sub-chunk
// scheme): core/variants.hpp refuses algorithm::chunk for it.
#pragma once

#include "../core/warnings_push.hpp"

#include <Eigen/Core>
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../core/config.hpp"
#include "../core/executor.hpp"
#include "../core/simd.hpp"
#include "../core/variants.hpp"
#include "params.hpp"

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

/// Everything an item needs: shape, options, views and the gate reader.
template <class A, class Q, class Kt, class Vt, class Bt, class O, class Gate>
struct item_ctx {
  const delta_shape& sh;
  const delta_params& p;
  const tensor_view<Q, 4>& q;
  const tensor_view<Kt, 4>& k;
  const tensor_view<Vt, 4>& v;
  const tensor_view<Bt, 3>& beta;
  const tensor_view<O, 4>& o;
  const recurrent_state<A>& s;
  const Gate& gate;  // gate(b, t, j, c): log decay (double)
};

/// Loads K elements of a [.,.,.,K] row as A, L2-normalised if asked, times `scale`.
template <class A, class Arch, class T>
void load_row(const T* src, index_t K, bool l2norm, A scale, A* dst) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  simd::convert<A, Arch>(src, dst, K);
  if (l2norm) {
    B ss(A(0));
    index_t c = 0;
    for (; c + W <= K; c += W) {
      const B x = B::load_unaligned(dst + c);
      ss = xsimd::fma(x, x, ss);
    }
    A tail = 0;
    for (; c < K; ++c) tail += dst[c] * dst[c];
    scale /= std::sqrt(simd::reduce_add(ss) + tail + A(1e-6));
  }
  if (scale != A(1))
    for (index_t c = 0; c < K; ++c) dst[c] *= scale;
}

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
    return p.state_v_first ? view(n, j, e, r) : view(n, j, r, e);
  };
  if (c.s.h0.present() && !direct) {
    const bool rows = !p.state_v_first && c.s.h0.stride(3) == 1;
    for_each_strip_row([&](A* x, index_t r, index_t e0, index_t ne) {
      if (rows) {
        const A* src = &c.s.h0(n, j, r, e0);
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
        for (index_t r = 0; r < K; ++r) a[r] = A(c.gate(sq.b, t, j, r));
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
        const A* src = &c.s.h0(n, j, 0, e0);
        A* dst = &c.s.ht(n, j, 0, e0);
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
        std::copy(x, x + ne, &c.s.ht(n, j, r, e0));
      else
        for (index_t e = 0; e < ne; ++e) state_at(c.s.ht, r, e0 + e) = x[e];
    });
  }
}

// chunk (params.algo = chunk; delta_rule and gated_delta_rule), per chunk of L <= C tokens with
// the chunk-local inclusive cumulative log gate G_r = sum_{s<=r} g_s (0 without gate) and the
// state S0 at the chunk start. Unrolling the recurrence (WY form):
//   u = (I + A)^{-1} (beta (V - diag(e^G) K S0)),  A[r,c] = beta_r e^{G_r - G_c} k_r . k_c (c < r)
//     = U - W S0  with  U = (I + A)^{-1} diag(beta) V,  W = (I + A)^{-1} diag(beta e^G) K
//   O = diag(e^G) Q~ S0 + ((Q~ K^T) * Gamma) u,  Gamma[r,c] = e^{G_r - G_c} (c <= r), else 0
//   S = e^{G_{L-1}} S0 + (diag(e^{G_{L-1} - G}) K)^T u
// Every exponent is <= 0. The products are Eigen GEMMs and one unit-lower triangular solve.
template <class A>
struct chunk_workspace {
  using Mat = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Mat S, Q, K, V, KK, U, Wm, u, O, P;
  std::vector<A> G, beta;
};

template <class A, class Arch, class Ctx>
void run_chunked(const Ctx& c, index_t n, index_t j, chunk_workspace<A>& ws) {
  using Mat = typename chunk_workspace<A>::Mat;
  const delta_shape& sh = c.sh;
  const delta_params& p = c.p;
  const index_t K = sh.K, V = sh.V, C = p.chunk_size, h = j / (sh.HV / sh.H);
  const token_seq& sq = sh.seqs[std::size_t(n)];
  const bool decayed = sh.decay != gate_kind::none;
  Mat& S = ws.S;
  S.resize(K, V);
  for (index_t r = 0; r < K; ++r)
    for (index_t e = 0; e < V; ++e)
      S(r, e) = !c.s.h0.present() ? A(0)
                : p.state_v_first ? c.s.h0(n, j, e, r)
                                  : c.s.h0(n, j, r, e);
  for (index_t t0 = 0; t0 < sq.len; t0 += C) {
    const index_t L = std::min(C, sq.len - t0);
    ws.Q.resize(L, K);
    ws.K.resize(L, K);
    ws.V.resize(L, V);
    ws.G.assign(std::size_t(L), A(0));
    ws.beta.resize(std::size_t(L));
    double g_run = 0;
    for (index_t i = 0; i < L; ++i) {
      const index_t t = sq.t0 + t0 + i;
      load_row<A, Arch>(&c.q(sq.b, t, h, 0), K, p.qk_l2norm, A(sh.scale), ws.Q.row(i).data());
      load_row<A, Arch>(&c.k(sq.b, t, h, 0), K, p.qk_l2norm, A(1), ws.K.row(i).data());
      simd::convert<A, Arch>(&c.v(sq.b, t, j, 0), ws.V.row(i).data(), V);
      ws.beta[std::size_t(i)] = A(delta_beta(p, to_compute<double>(c.beta(sq.b, t, j))));
      if (decayed) g_run += c.gate(sq.b, t, j, 0);
      ws.G[std::size_t(i)] = A(g_run);
    }
    const A* G = ws.G.data();
    const A* beta = ws.beta.data();
    // (I + A) as a unit-lower matrix (strict lower part A, diagonal implied)
    ws.KK.noalias() = ws.K * ws.K.transpose();
    for (index_t r = 0; r < L; ++r)
      for (index_t cc = 0; cc < r; ++cc)
        ws.KK(r, cc) *= decayed ? beta[r] * std::exp(G[r] - G[cc]) : beta[r];
    // U = (I + A)^{-1} diag(beta) V ; W = (I + A)^{-1} diag(beta e^G) K
    ws.U = ws.V;
    ws.Wm = ws.K;
    for (index_t r = 0; r < L; ++r) {
      ws.U.row(r) *= beta[r];
      ws.Wm.row(r) *= decayed ? beta[r] * std::exp(G[r]) : beta[r];
    }
    const auto unit_lower = ws.KK.template triangularView<Eigen::UnitLower>();
    unit_lower.solveInPlace(ws.U);
    unit_lower.solveInPlace(ws.Wm);
    // u = U - W S0
    ws.u = ws.U;
    ws.u.noalias() -= ws.Wm * S;
    // O = diag(e^G) Q~ S0 + ((Q~ K^T) * Gamma) u
    ws.P.noalias() = ws.Q * ws.K.transpose();
    for (index_t r = 0; r < L; ++r) {
      for (index_t cc = 0; cc <= r && decayed; ++cc) ws.P(r, cc) *= std::exp(G[r] - G[cc]);
      for (index_t cc = r + 1; cc < L; ++cc) ws.P(r, cc) = A(0);
    }
    ws.O.noalias() = ws.Q * S;
    for (index_t r = 0; r < L && decayed; ++r) ws.O.row(r) *= std::exp(G[r]);
    ws.O.noalias() += ws.P * ws.u;
    for (index_t i = 0; i < L; ++i)
      simd::store_converted(ws.O.row(i).data(), &c.o(sq.b, sq.t0 + t0 + i, j, 0), V);
    // S = e^{G_last} S0 + (diag(e^{G_last - G}) K)^T u
    if (decayed) {
      const A g_last = G[L - 1];
      for (index_t r = 0; r < L; ++r) ws.K.row(r) *= std::exp(g_last - G[r]);
      S *= std::exp(g_last);
    }
    S.noalias() += ws.K.transpose() * ws.u;
  }
  if (c.s.ht.present())
    for (index_t r = 0; r < K; ++r)
      for (index_t e = 0; e < V; ++e)
        (p.state_v_first ? c.s.ht(n, j, e, r) : c.s.ht(n, j, r, e)) = S(r, e);
}

template <class A, class Arch, class Q, class Kt, class Vt, class Bt, class O, class Gate>
void run(const delta_shape& sh, const delta_params& p, const tensor_view<Q, 4>& q,
         const tensor_view<Kt, 4>& k, const tensor_view<Vt, 4>& v, const tensor_view<Bt, 3>& beta,
         const tensor_view<O, 4>& o, const recurrent_state<A>& s, const Gate& gate) {
  const item_ctx<A, Q, Kt, Vt, Bt, O, Gate> c{sh, p, q, k, v, beta, o, s, gate};
  if (resolve_algorithm(p) == algorithm::chunk) {
    resolve(p.exec).parallel_for(sh.N * sh.HV, [&](index_t item) {
      thread_local chunk_workspace<A> ws;
      run_chunked<A, Arch>(c, item / sh.HV, item % sh.HV, ws);
    });
    return;
  }
  resolve(p.exec).parallel_for(sh.N * sh.HV, [&](index_t item) {
    thread_local workspace<A> ws;
    run_recurrent<A, Arch>(c, item / sh.HV, item % sh.HV, ws);
  });
}

template <class Q, class K, class V, class Bt, class O>
constexpr void check_types() {
  using A = accum_t<Q>;
  static_assert(is_storage_type_v<Q> && is_storage_type_v<K> && is_storage_type_v<V> &&
                    is_storage_type_v<Bt> && is_storage_type_v<O>,
                "attnkit: element types must be float, double, bf16 or fp16");
  static_assert(!std::is_same_v<A, double> || (std::is_same_v<std::remove_const_t<K>, double> &&
                                               std::is_same_v<std::remove_const_t<V>, double>),
                "attnkit: double queries need double keys/values");
}

/// Checks shared by the fast entry points: the algorithm and stride 1 on the last dimension of
/// q, k, v, o (the kernel reads rows of K and column slices of V, writes slices of o).
template <class Q, class K, class V, class O>
void check_fast(const char* fn, const delta_params& p, const tensor_view<Q, 4>& q,
                const tensor_view<K, 4>& k, const tensor_view<V, 4>& v, const tensor_view<O, 4>& o) {
  require_algorithm(fn, variant_by_name(fn), p.algo);
  require_inner_contiguous({fn, "q", "B,T,H,K"}, q);
  require_inner_contiguous({fn, "k", "B,T,H,K"}, k);
  require_inner_contiguous({fn, "v", "B,T,HV,V"}, v);
  require_inner_contiguous({fn, "o", "B,T,HV,V"}, o);
}

/// The log decay of value head j, row c at token t: the stored gate (read by core's
/// gate_reader) through the in-kernel gate transform of p.gate_fn.
template <class Raw, class P>
struct transformed_gate {
  const delta_params& p;
  const delta_shape& sh;
  Raw raw;
  const delta_gate_params<P>& gp;
  double operator()(index_t b, index_t t, index_t j, index_t c) const {
    return delta_gate_log_decay(p, sh, gp, raw(b, t, j, c), j, c);
  }
};

}  // namespace delta_impl
}  // namespace detail

/// DeltaNet: u_t = beta_t (v_t - S_{t-1}^T k_t), S_t = S_{t-1} + k_t u_t^T, o_t = S_t^T (scale
/// q_t). q, k [B,T,H,K], v, o [B,T,HV,V], beta [B,T,HV]; states in s ([N,HV,K,V]). The last
/// dimension of q, k, v, o needs stride 1. p.algo: automatic (= recurrent), recurrent or chunk.
template <class Q, class K, class V, class Bt, class O, class Arch = simd::default_arch>
void delta_rule(const delta_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                tensor_view<V, 4> v, tensor_view<Bt, 3> beta, tensor_view<O, 4> o,
                const recurrent_state<accum_t<Q>>& s = {}) {
  namespace di = detail::delta_impl;
  di::check_types<std::remove_const_t<Q>, K, V, Bt, std::remove_const_t<O>>();
  const char* fn = "delta_rule";
  const auto sh = detail::check_delta(fn, p, gate_kind::none, q, k, v, beta, o, s);
  di::check_fast(fn, p, q, k, v, o);
  di::run<accum_t<Q>, Arch>(sh, p, q, k, v, beta, o, s, detail::gate_reader<accum_t<Q>, Arch, void>{});
}

/// Gated DeltaNet: the state is decayed by exp(g_t) (g [B,T,HV], log space, or the raw gate of
/// p.gate_fn with gp) before the delta update of delta_rule.
template <class Q, class K, class V, class G, class Bt, class O, class P = float,
          class Arch = simd::default_arch>
void gated_delta_rule(const delta_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                      tensor_view<V, 4> v, tensor_view<G, 3> g, tensor_view<Bt, 3> beta,
                      tensor_view<O, 4> o, const recurrent_state<accum_t<Q>>& s = {},
                      const delta_gate_params<P>& gp = {}) {
  namespace di = detail::delta_impl;
  di::check_types<std::remove_const_t<Q>, K, V, Bt, std::remove_const_t<O>>();
  static_assert(is_storage_type_v<G>, "attnkit: gate must be float, double, bf16 or fp16");
  const char* fn = "gated_delta_rule";
  const auto sh = detail::check_delta(fn, p, gate_kind::scalar, q, k, v, beta, o, s);
  detail::check_delta_gate(fn, p, sh, g, gp);
  di::check_fast(fn, p, q, k, v, o);
  di::run<accum_t<Q>, Arch>(sh, p, q, k, v, beta, o, s, di::transformed_gate<detail::gate_reader<accum_t<Q>, Arch, tensor_view<G, 3>>, P>{
                                      p, sh, {g}, gp});
}

/// Kimi Delta Attention: row c of the state is decayed by exp(g_t[c]) (g [B,T,HV,K], log space,
/// or the raw gate of p.gate_fn with gp) before the delta update of delta_rule.
template <class Q, class K, class V, class G, class Bt, class O, class P = float,
          class Arch = simd::default_arch>
void kda(const delta_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k, tensor_view<V, 4> v,
         tensor_view<G, 4> g, tensor_view<Bt, 3> beta, tensor_view<O, 4> o,
         const recurrent_state<accum_t<Q>>& s = {}, const delta_gate_params<P>& gp = {}) {
  namespace di = detail::delta_impl;
  di::check_types<std::remove_const_t<Q>, K, V, Bt, std::remove_const_t<O>>();
  static_assert(is_storage_type_v<G>, "attnkit: gate must be float, double, bf16 or fp16");
  const char* fn = "kda";
  const auto sh = detail::check_delta(fn, p, gate_kind::channel, q, k, v, beta, o, s);
  detail::check_delta_gate(fn, p, sh, g, gp);
  di::check_fast(fn, p, q, k, v, o);
  di::run<accum_t<Q>, Arch>(sh, p, q, k, v, beta, o, s, di::transformed_gate<detail::gate_reader<accum_t<Q>, Arch, tensor_view<G, 4>>, P>{
                                      p, sh, {g}, gp});
}

}  // namespace attnkit

#include "../core/warnings_pop.hpp"
