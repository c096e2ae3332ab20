// SPDX-License-Identifier: Apache-2.0
// Chunk algorithm of the delta family (WY form, Eigen GEMMs and one unit-lower solve per chunk).
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <Eigen/Core>
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <vector>

#include "item.hpp"

namespace attnkit {
namespace detail {
namespace delta_impl {

// chunk (params.algo = chunk; delta_rule and gated_delta_rule), per chunk of L <= C tokens with
// the chunk-local inclusive cumulative log gate G_r = sum_{s<=r} g_s (0 without gate) and the
// state S0 at the chunk start. Unrolling the recurrence (WY form):
//   u = (I + A)^{-1} (beta (V - diag(e^G) K S0)),  A[r,c] = beta_r e^{G_r - G_c} k_r . k_c (c < r)
//     = U - W S0  with  U = (I + A)^{-1} diag(beta) V,  W = (I + A)^{-1} diag(beta e^G) K
//   O = diag(e^G) Q~ S0 + ((Q~ K^T) * Gamma) u,  Gamma[r,c] = e^{G_r - G_c} (c <= r), else 0
//   S = e^{G_{L-1}} S0 + (diag(e^{G_{L-1} - G}) K)^T u
// Every exponent is <= 0. The products are Eigen GEMMs and one unit-lower triangular solve; the
// causal ones read only the lower triangles (later tokens never reach earlier rows).
template <class A>
struct chunk_workspace {
  using Mat = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Mat S, Q, K, V, KK, U, Wm, u, O, P;
  std::vector<A> G, beta;
};

// O[r0 + i] += sum_{c <= i} P[r0 + i, r0 + c] u[r0 + c] for i < n: the causal product, halved
// recursively into dense GEMMs below the diagonal and row products on 8-row triangles, so that a
// row never reads the u rows of later tokens (0 * NaN would reach it through a dense product).
template <class Mat>
void add_lower_product(const Mat& P, const Mat& u, Mat& O, index_t r0, index_t n) {
  if (n <= 8) {
    for (index_t i = 0; i < n; ++i)
      O.row(r0 + i).noalias() += P.row(r0 + i).segment(r0, i + 1) * u.middleRows(r0, i + 1);
    return;
  }
  const index_t h = n / 2;
  add_lower_product(P, u, O, r0, h);
  O.middleRows(r0 + h, n - h).noalias() += P.block(r0 + h, r0, n - h, h) * u.middleRows(r0, h);
  add_lower_product(P, u, O, r0 + h, n - h);
}

template <class A, class Arch, class Ctx>
void run_chunked(const Ctx& c, index_t n, index_t j, chunk_workspace<A>& ws) {
  using Mat = typename chunk_workspace<A>::Mat;
  const delta_shape& sh = c.sh;
  const delta_params& p = c.p;
  const index_t K = sh.K, V = sh.V, C = p.chunk_size, h = j / (sh.HV / sh.H);
  const token_seq& sq = sh.seqs[std::size_t(n)];
  const index_t row = sh.rows[std::size_t(n)];  // the sequence's state row (pool)
  if (row < 0) {                                // a skipped sequence: zero outputs, no state
    zero_outputs(c, sq, j);
    return;
  }
  const bool decayed = sh.decay != gate_kind::none;
  Mat& S = ws.S;
  S.resize(K, V);
  for (index_t r = 0; r < K; ++r)
    for (index_t e = 0; e < V; ++e)
      S(r, e) = !c.s.h0.present() ? A(0)
                : p.state_v_first ? c.s.h0(row, j, e, r)
                                  : c.s.h0(row, j, r, e);
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
    ws.P.noalias() = ws.Q * ws.K.transpose();  // only its lower triangle is read below
    for (index_t r = 0; r < L && decayed; ++r)
      for (index_t cc = 0; cc <= r; ++cc) ws.P(r, cc) *= std::exp(G[r] - G[cc]);
    ws.O.noalias() = ws.Q * S;
    for (index_t r = 0; r < L && decayed; ++r) ws.O.row(r) *= std::exp(G[r]);
    add_lower_product(ws.P, ws.u, ws.O, 0, L);
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
        (p.state_v_first ? c.s.ht(row, j, e, r) : c.s.ht(row, j, r, e)) = S(r, e);
}

}  // namespace delta_impl
}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
