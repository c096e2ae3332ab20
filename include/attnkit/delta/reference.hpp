// SPDX-License-Identifier: Apache-2.0
// Naive references of the delta-rule family: the per-token recurrence of params.hpp in double,
// plain loops, any strides (what fla's naive_recurrent_* compute, with the in-kernel transforms
// of the fused kernels), or with p.algo = chunk the naive chunk (WY) form (fla's naive_chunk_*;
// kda's per-channel form included).
// Same signatures as kernel.hpp; the tests check the fast kernels against these functions, the
// two forms against each other, and both against fla's float64 golden data.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "conv.hpp"
#include "params.hpp"

namespace attnkit::reference {

namespace detail_delta {

/// Row (b, t, h) of q or k [B,T,H,K] as doubles: x / sqrt(sum x^2 + 1e-6) with p.qk_l2norm, else
/// x; times f.
template <class X>
void load_qk(const delta_params& p, const X& x, index_t b, index_t t, index_t h, index_t K,
             double f, double* out) {
  double ss = 0;
  for (index_t c = 0; c < K; ++c) {
    out[c] = to_compute<double>(x(b, t, h, c));
    ss += out[c] * out[c];
  }
  const double norm = p.qk_l2norm ? std::sqrt(ss + 1e-6) : 1.0;
  for (index_t c = 0; c < K; ++c) out[c] = f * (out[c] / norm);
}

/// Runs the recurrence for every (sequence, value head). log_decay(b, t, j, c) is the log decay
/// of row c of value head j's state at token t (not called without decay).
template <class Q, class K, class V, class Bt, class O, class A, class Decay>
void run(const attnkit::detail::delta_shape& sh, const delta_params& p, const tensor_view<Q, 4>& q,
         const tensor_view<K, 4>& k, const tensor_view<V, 4>& v, const tensor_view<Bt, 3>& beta,
         const tensor_view<O, 4>& o, const recurrent_state<A>& s, Decay log_decay) {
  const index_t K_ = sh.K, V_ = sh.V, group = sh.HV / sh.H;
  std::vector<double> S(std::size_t(K_ * V_)), qs(static_cast<std::size_t>(K_)),
      ks(static_cast<std::size_t>(K_)), u(static_cast<std::size_t>(V_));
  for (index_t n = 0; n < sh.N; ++n) {
    const auto& sq = sh.seqs[std::size_t(n)];
    const index_t srow = sh.rows[std::size_t(n)];  // state row (pool); -1: skipped
    for (index_t j = 0; j < sh.HV; ++j) {
      const index_t h = j / group;
      if (srow < 0) {
        attnkit::detail::zero_outputs(o, sq, j);
        continue;
      }
      attnkit::detail::read_state(s.h0, p.state_v_first, srow, j, K_, V_, S);
      for (index_t i = 0; i < sq.len; ++i) {
        const index_t t = sq.t0 + i;
        load_qk(p, q, sq.b, t, h, K_, 1.0, qs.data());
        load_qk(p, k, sq.b, t, h, K_, 1.0, ks.data());
        // S' = D_t S
        if (sh.decay != gate_kind::none)
          for (index_t c = 0; c < K_; ++c) {
            const double a = std::exp(log_decay(sq.b, t, j, c));
            for (index_t e = 0; e < V_; ++e) S[std::size_t(c * V_ + e)] *= a;
          }
        // u = beta (v - S'^T k);  S = S' + k u^T
        const double bt = attnkit::detail::delta_beta(p, to_compute<double>(beta(sq.b, t, j)));
        for (index_t e = 0; e < V_; ++e) {
          double w = 0;
          for (index_t c = 0; c < K_; ++c) w += S[std::size_t(c * V_ + e)] * ks[std::size_t(c)];
          u[std::size_t(e)] = bt * (to_compute<double>(v(sq.b, t, j, e)) - w);
        }
        for (index_t c = 0; c < K_; ++c)
          for (index_t e = 0; e < V_; ++e)
            S[std::size_t(c * V_ + e)] += ks[std::size_t(c)] * u[std::size_t(e)];
        // o_t = S^T (scale q_t)
        for (index_t e = 0; e < V_; ++e) {
          double acc = 0;
          for (index_t c = 0; c < K_; ++c) acc += qs[std::size_t(c)] * S[std::size_t(c * V_ + e)];
          o(sq.b, t, j, e) = from_compute<std::remove_const_t<O>>(sh.scale * acc);
        }
      }
      attnkit::detail::write_state(s.ht, p.state_v_first, srow, j, K_, V_, S);
    }
  }
}

/// The naive chunk form of the same recurrence (WY form; fla's naive_chunk_* for delta_rule,
/// gated_delta_rule and kda), per-pair exponents, plain loops, double. Per chunk of L <= C tokens
/// with the inclusive cumulative log decay G_r[c] = sum_{s<=r} g_s[c] (the same for every row c
/// with a scalar gate) and the state S0 at the chunk start:
///   A[r,c'] = beta_r sum_c k_r[c] k_c'[c] e^{G_r[c] - G_c'[c]}   (c' < r)
///   u_r     = beta_r (v_r - S0^T (k_r * e^{G_r})) - sum_{c' < r} A[r,c'] u_c'   (forward solve)
///   o_r     = S0^T (q~_r * e^{G_r}) + sum_{c' <= r} (sum_c q~_r[c] k_c'[c] e^{G_r[c] - G_c'[c]})
///   u_c' S      <- diag(e^{G_{L-1}}) S0 + sum_c' (k_c' * e^{G_{L-1} - G_c'}) u_c'^T
template <class Q, class K, class V, class Bt, class O, class A, class Decay>
void run_chunk(const attnkit::detail::delta_shape& sh, const delta_params& p,
               const tensor_view<Q, 4>& q, const tensor_view<K, 4>& k, const tensor_view<V, 4>& v,
               const tensor_view<Bt, 3>& beta, const tensor_view<O, 4>& o,
               const recurrent_state<A>& s, Decay log_decay) {
  const index_t K_ = sh.K, V_ = sh.V, group = sh.HV / sh.H, C = p.chunk_size;
  std::vector<double> S(std::size_t(K_ * V_)), G, qs, ks, bt, u, Am;
  // Row r of x (width w).
  const auto row = [](std::vector<double>& x, index_t r, index_t w) {
    return &x[std::size_t(r * w)];
  };
  for (index_t n = 0; n < sh.N; ++n) {
    const auto& sq = sh.seqs[std::size_t(n)];
    const index_t srow = sh.rows[std::size_t(n)];  // state row (pool); -1: skipped
    for (index_t j = 0; j < sh.HV; ++j) {
      const index_t h = j / group;
      if (srow < 0) {
        attnkit::detail::zero_outputs(o, sq, j);
        continue;
      }
      attnkit::detail::read_state(s.h0, p.state_v_first, srow, j, K_, V_, S);
      for (index_t c0 = 0; c0 < sq.len; c0 += C) {
        const index_t L = std::min(C, sq.len - c0);
        G.assign(std::size_t(L * K_), 0.0);
        qs.resize(std::size_t(L * K_));
        ks.resize(std::size_t(L * K_));
        bt.resize(std::size_t(L));
        u.assign(std::size_t(L * V_), 0.0);
        Am.assign(std::size_t(L * L), 0.0);
        for (index_t r = 0; r < L; ++r) {
          const index_t t = sq.t0 + c0 + r;
          load_qk(p, q, sq.b, t, h, K_, sh.scale, row(qs, r, K_));
          load_qk(p, k, sq.b, t, h, K_, 1.0, row(ks, r, K_));
          bt[std::size_t(r)] = attnkit::detail::delta_beta(p, to_compute<double>(beta(sq.b, t, j)));
          for (index_t c = 0; c < K_; ++c) {
            const double g = sh.decay == gate_kind::none ? 0.0 : log_decay(sq.b, t, j, c);
            row(G, r, K_)[c] = (r ? row(G, r - 1, K_)[c] : 0.0) + g;
          }
        }
        // decayed dot product sum_c x_r[c] k_c'[c] e^{G_r[c] - G_c'[c]}
        const auto ddot = [&](std::vector<double>& x, index_t r, index_t cp) {
          double a = 0;
          for (index_t c = 0; c < K_; ++c)
            a += row(x, r, K_)[c] * row(ks, cp, K_)[c] *
                 std::exp(row(G, r, K_)[c] - row(G, cp, K_)[c]);
          return a;
        };
        for (index_t r = 0; r < L; ++r) {
          const index_t t = sq.t0 + c0 + r;
          for (index_t cp = 0; cp < r; ++cp)
            Am[std::size_t(r * L + cp)] = bt[std::size_t(r)] * ddot(ks, r, cp);
          for (index_t e = 0; e < V_; ++e) {
            double w = 0;
            for (index_t c = 0; c < K_; ++c)
              w += S[std::size_t(c * V_ + e)] * row(ks, r, K_)[c] * std::exp(row(G, r, K_)[c]);
            double x = bt[std::size_t(r)] * (to_compute<double>(v(sq.b, t, j, e)) - w);
            for (index_t cp = 0; cp < r; ++cp) x -= Am[std::size_t(r * L + cp)] * row(u, cp, V_)[e];
            row(u, r, V_)[e] = x;
          }
        }
        for (index_t r = 0; r < L; ++r) {
          for (index_t cp = 0; cp <= r; ++cp) Am[std::size_t(r * L + cp)] = ddot(qs, r, cp);
          for (index_t e = 0; e < V_; ++e) {
            double acc = 0;
            for (index_t c = 0; c < K_; ++c)
              acc += S[std::size_t(c * V_ + e)] * row(qs, r, K_)[c] * std::exp(row(G, r, K_)[c]);
            for (index_t cp = 0; cp <= r; ++cp)
              acc += Am[std::size_t(r * L + cp)] * row(u, cp, V_)[e];
            o(sq.b, sq.t0 + c0 + r, j, e) = from_compute<std::remove_const_t<O>>(acc);
          }
        }
        for (index_t c = 0; c < K_; ++c) {
          const double gl = row(G, L - 1, K_)[c];
          for (index_t e = 0; e < V_; ++e) {
            double x = std::exp(gl) * S[std::size_t(c * V_ + e)];
            for (index_t cp = 0; cp < L; ++cp)
              x += row(ks, cp, K_)[c] * std::exp(gl - row(G, cp, K_)[c]) * row(u, cp, V_)[e];
            S[std::size_t(c * V_ + e)] = x;
          }
        }
      }
      attnkit::detail::write_state(s.ht, p.state_v_first, srow, j, K_, V_, S);
    }
  }
}

/// Validates a call and runs it in the chunk form (run_chunk) for p.algo = chunk, else as the
/// recurrence (run); g is the gate
/// tensor (absent for delta_rule), read through the in-kernel gate of p.gate_fn.
template <class Q, class K, class V, class G, std::size_t R, class Bt, class O, class A, class P>
void call(const char* fn, gate_kind kind, const delta_params& p, const tensor_view<Q, 4>& q,
          const tensor_view<K, 4>& k, const tensor_view<V, 4>& v, const tensor_view<G, R>& g,
          const tensor_view<Bt, 3>& beta, const tensor_view<O, 4>& o, const recurrent_state<A>& s,
          const delta_gate_params<P>& gp) {
  const auto sh = attnkit::detail::check_delta(fn, p, kind, q, k, v, beta, o, s);
  if (kind != gate_kind::none) attnkit::detail::check_delta_gate(fn, p, sh, g, gp);
  const auto log_decay = [&](index_t b, index_t t, index_t j, index_t c) {
    if constexpr (R == 3)
      return attnkit::detail::delta_gate_log_decay(p, sh, gp, to_compute<double>(g(b, t, j)), j, 0);
    else
      return attnkit::detail::delta_gate_log_decay(p, sh, gp, to_compute<double>(g(b, t, j, c)), j,
                                                   c);
  };
  if (sh.T == 0 && !s.ht.present()) return;  // nothing to compute or write
  if (p.algo == algorithm::chunk)
    run_chunk(sh, p, q, k, v, beta, o, s, log_decay);
  else
    run(sh, p, q, k, v, beta, o, s, log_decay);
}

}  // namespace detail_delta

/// Reference of attnkit::delta_rule (DeltaNet; see delta/params.hpp).
template <class Q, class K, class V, class Bt, class O>
void delta_rule(const delta_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                tensor_view<V, 4> v, tensor_view<Bt, 3> beta, tensor_view<O, 4> o,
                const recurrent_state<accum_t<Q>>& s = {}) {
  detail_delta::call("reference::delta_rule", gate_kind::none, p, q, k, v, cview<double, 3>{}, beta,
                     o, s, delta_gate_params<float>{});
}

/// Reference of attnkit::gated_delta_rule (Gated DeltaNet; scalar gate g [B,T,HV]).
template <class Q, class K, class V, class G, class Bt, class O, class P = float>
void gated_delta_rule(const delta_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                      tensor_view<V, 4> v, tensor_view<G, 3> g, tensor_view<Bt, 3> beta,
                      tensor_view<O, 4> o, const recurrent_state<accum_t<Q>>& s = {},
                      const delta_gate_params<P>& gp = {}) {
  detail_delta::call("reference::gated_delta_rule", gate_kind::scalar, p, q, k, v, g, beta, o, s,
                     gp);
}

/// Reference of attnkit::kda (Kimi Delta Attention; per-key-channel gate g [B,T,HV,K]).
template <class Q, class K, class V, class G, class Bt, class O, class P = float>
void kda(const delta_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k, tensor_view<V, 4> v,
         tensor_view<G, 4> g, tensor_view<Bt, 3> beta, tensor_view<O, 4> o,
         const recurrent_state<accum_t<Q>>& s = {}, const delta_gate_params<P>& gp = {}) {
  detail_delta::call("reference::kda", gate_kind::channel, p, q, k, v, g, beta, o, s, gp);
}

/// Reference of attnkit::short_conv1d: plain loops over xp = state followed by the inputs,
/// double accumulation.
template <class X, class Wt, class Y>
void short_conv1d(const conv1d_params& p, tensor_view<X, 3> x, tensor_view<Wt, 2> w,
                  tensor_view<Wt, 1> bias, tensor_view<Y, 3> y,
                  const conv1d_state<accum_t<X>>& s = {}) {
  using A = accum_t<X>;
  const auto c = attnkit::detail::check_conv1d("reference::short_conv1d", x, w, bias, y, s);
  const index_t D = c.D, W = c.W, H = W - 1;
  std::vector<double> xp, out_state;
  for (std::size_t n = 0; n < c.seqs.size(); ++n) {
    const attnkit::detail::token_seq& sq = c.seqs[n];
    const index_t row = c.rows[n];
    if (row < 0) {
      for (index_t t = 0; t < sq.len; ++t)
        for (index_t d = 0; d < D; ++d) y(sq.b, sq.t0 + t, d) = from_compute<Y>(0.0);
      continue;
    }
    // xp [H + len, D]
    xp.assign(std::size_t((H + sq.len) * D), 0.0);
    for (index_t j = 0; j < H; ++j)
      for (index_t d = 0; d < D; ++d)
        xp[std::size_t(j * D + d)] = s.state_in.present() ? double(s.state_in(row, d, j)) : 0.0;
    for (index_t t = 0; t < sq.len; ++t)
      for (index_t d = 0; d < D; ++d)
        xp[std::size_t((H + t) * D + d)] = to_compute<double>(x(sq.b, sq.t0 + t, d));
    for (index_t t = 0; t < sq.len; ++t)
      for (index_t d = 0; d < D; ++d) {
        double acc = bias.present() ? to_compute<double>(bias(d)) : 0.0;
        for (index_t i = 0; i < W; ++i)
          acc += to_compute<double>(w(d, i)) * xp[std::size_t((t + i) * D + d)];
        if (p.activation == conv_activation::silu) acc = acc / (1.0 + std::exp(-acc));
        y(sq.b, sq.t0 + t, d) = from_compute<Y>(acc);
      }
    if (s.state_out.present())
      for (index_t j = 0; j < H; ++j)
        for (index_t d = 0; d < D; ++d)
          s.state_out(row, d, j) = A(xp[std::size_t((sq.len + j) * D + d)]);
  }
}

}  // namespace attnkit::reference
