// SPDX-License-Identifier: Apache-2.0
// Naive references of the linear-attention family: the per-token recurrence of params.hpp in
// double, plain loops, any strides (what fla's naive_recurrent_* compute), or with p.algo = chunk
// the naive chunk form (as fla's naive_chunk_*). Same signatures as kernel.hpp; the tests check the
// fast kernels against these functions and the two forms against each other. State pools
// (state_indices) as the kernels: each sequence's state row is its pool row, -1 zeroes its o rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "params.hpp"

namespace attnkit::reference {

namespace detail_lin {

/// The initial state S [K, V] and key sum z [K] of head h from state row `row` (the sequence's
/// row, or its pool row); zeros where absent.
template <class A>
void read_states(const linear_params& p, const attnkit::detail::linear_states<A>& s, index_t row,
                 index_t h, std::vector<double>& S, std::vector<double>& z) {
  const index_t K = index_t(z.size()), V = index_t(S.size()) / K;
  attnkit::detail::read_state(s.h0, p.state_v_first, row, h, K, V, S);
  for (index_t d = 0; d < K; ++d)
    z[std::size_t(d)] = s.z0.present() ? double(s.z0(row, 0, h, d)) : 0.0;
}
/// The final state S and key sum z of head h to state row `row` (where ht / zt are given).
template <class A>
void write_states(const linear_params& p, const attnkit::detail::linear_states<A>& s, index_t row,
                  index_t h, const std::vector<double>& S, const std::vector<double>& z) {
  const index_t K = index_t(z.size()), V = index_t(S.size()) / K;
  attnkit::detail::write_state(s.ht, p.state_v_first, row, h, K, V, S);
  if (s.zt.present())
    for (index_t d = 0; d < K; ++d) s.zt(row, 0, h, d) = A(z[std::size_t(d)]);
}

/// Runs the recurrence for every (sequence, head). log_gate(b, t, h, d) is the log-decay of row d
/// of the state at token t (0 without gate).
template <class Q, class K, class V, class O, class A, class Gate>
void run(const attnkit::detail::linear_shape& sh, const linear_params& p,
         const tensor_view<Q, 4>& q, const tensor_view<K, 4>& k, const tensor_view<V, 4>& v,
         const tensor_view<O, 4>& o, const attnkit::detail::linear_states<A>& s, Gate log_gate) {
  const index_t K_ = sh.K, V_ = sh.V;
  std::vector<double> S(std::size_t(K_ * V_)), z(static_cast<std::size_t>(K_)),
      qs(static_cast<std::size_t>(K_)), out(static_cast<std::size_t>(V_));
  for (index_t n = 0; n < sh.N; ++n) {
    const auto& sq = sh.seqs[std::size_t(n)];
    const index_t srow = sh.rows[std::size_t(n)];  // state row (pool); -1: skipped
    for (index_t h = 0; h < sh.H; ++h) {
      if (srow < 0) {
        attnkit::detail::zero_outputs(o, sq, h);
        continue;
      }
      read_states(p, s, srow, h, S, z);
      for (index_t i = 0; i < sq.len; ++i) {
        const index_t t = sq.t0 + i;
        // S <- diag(exp(g_t)) S + k_t v_t^T ; z <- z + k_t
        for (index_t d = 0; d < K_; ++d) {
          const double a = sh.gate == gate_kind::none ? 1.0 : std::exp(log_gate(sq.b, t, h, d));
          const double kd = to_compute<double>(k(sq.b, t, h, d));
          for (index_t e = 0; e < V_; ++e) {
            double& x = S[std::size_t(d * V_ + e)];
            x = a * x + kd * to_compute<double>(v(sq.b, t, h, e));
          }
          z[std::size_t(d)] += kd;
          qs[std::size_t(d)] = sh.scale * to_compute<double>(q(sq.b, t, h, d));
        }
        // o_t = S^T q~_t  (/ (q~_t . z_t + 1e-10) with normalize)
        double den = 0;
        for (index_t d = 0; d < K_; ++d) den += qs[std::size_t(d)] * z[std::size_t(d)];
        for (index_t e = 0; e < V_; ++e) out[std::size_t(e)] = 0;
        for (index_t d = 0; d < K_; ++d)
          for (index_t e = 0; e < V_; ++e)
            out[std::size_t(e)] += qs[std::size_t(d)] * S[std::size_t(d * V_ + e)];
        for (index_t e = 0; e < V_; ++e) {
          const double val =
              p.normalize ? out[std::size_t(e)] / (den + 1e-10) : out[std::size_t(e)];
          o(sq.b, t, h, e) = from_compute<std::remove_const_t<O>>(val);
        }
      }
      write_states(p, s, srow, h, S, z);
    }
  }
}

/// The naive chunk form of the same recurrence (what chunk.hpp computes, without its numerical
/// care: per-pair exponents, plain loops, double). Per chunk of L <= C tokens with the inclusive
/// cumulative log gate G_r[d] = sum_{s<=r} g_s[d] and the state S at the chunk start:
///   o_r  = (q~_r * e^{G_r})^T S + sum_{c<=r} (sum_d q~_r[d] k_c[d] e^{G_r[d] - G_c[d]}) v_c
///   S   <- diag(e^{G_{L-1}}) S + sum_c (k_c * e^{G_{L-1} - G_c}) v_c^T
/// (normalize: o_r / (q~_r . z_r + 1e-10) with z_r the running key sum).
template <class Q, class K, class V, class O, class A, class Gate>
void run_chunk(const attnkit::detail::linear_shape& sh, const linear_params& p,
               const tensor_view<Q, 4>& q, const tensor_view<K, 4>& k, const tensor_view<V, 4>& v,
               const tensor_view<O, 4>& o, const attnkit::detail::linear_states<A>& s,
               Gate log_gate) {
  const index_t K_ = sh.K, V_ = sh.V, C = p.chunk_size;
  std::vector<double> S(std::size_t(K_ * V_)), z(static_cast<std::size_t>(K_)), G, qs, ks, vs, Am;
  for (index_t n = 0; n < sh.N; ++n) {
    const auto& sq = sh.seqs[std::size_t(n)];
    const index_t srow = sh.rows[std::size_t(n)];  // state row (pool); -1: skipped
    for (index_t h = 0; h < sh.H; ++h) {
      if (srow < 0) {
        attnkit::detail::zero_outputs(o, sq, h);
        continue;
      }
      read_states(p, s, srow, h, S, z);
      for (index_t c0 = 0; c0 < sq.len; c0 += C) {
        const index_t L = std::min(C, sq.len - c0);
        G.assign(std::size_t(L * K_), 0.0);
        qs.resize(std::size_t(L * K_));
        ks.resize(std::size_t(L * K_));
        vs.resize(std::size_t(L * V_));
        Am.resize(std::size_t(L));
        for (index_t r = 0; r < L; ++r) {
          const index_t t = sq.t0 + c0 + r;
          for (index_t d = 0; d < K_; ++d) {
            const double g = sh.gate == gate_kind::none ? 0.0 : log_gate(sq.b, t, h, d);
            G[std::size_t(r * K_ + d)] = (r ? G[std::size_t((r - 1) * K_ + d)] : 0.0) + g;
            qs[std::size_t(r * K_ + d)] = sh.scale * to_compute<double>(q(sq.b, t, h, d));
            ks[std::size_t(r * K_ + d)] = to_compute<double>(k(sq.b, t, h, d));
          }
          for (index_t e = 0; e < V_; ++e)
            vs[std::size_t(r * V_ + e)] = to_compute<double>(v(sq.b, t, h, e));
        }
        const auto at = [&](const std::vector<double>& x, index_t r, index_t d, index_t w) {
          return x[std::size_t(r * w + d)];
        };
        for (index_t r = 0; r < L; ++r) {
          double den = 0;
          for (index_t d = 0; d < K_; ++d) {
            z[std::size_t(d)] += at(ks, r, d, K_);
            den += at(qs, r, d, K_) * z[std::size_t(d)];
          }
          for (index_t c = 0; c <= r; ++c) {  // Am[c] = sum_d q~_r[d] k_c[d] e^{G_r[d] - G_c[d]}
            double a = 0;
            for (index_t d = 0; d < K_; ++d)
              a +=
                  at(qs, r, d, K_) * at(ks, c, d, K_) * std::exp(at(G, r, d, K_) - at(G, c, d, K_));
            Am[std::size_t(c)] = a;
          }
          for (index_t e = 0; e < V_; ++e) {
            double acc = 0;
            for (index_t d = 0; d < K_; ++d)
              acc += at(qs, r, d, K_) * std::exp(at(G, r, d, K_)) * S[std::size_t(d * V_ + e)];
            for (index_t c = 0; c <= r; ++c) acc += Am[std::size_t(c)] * at(vs, c, e, V_);
            o(sq.b, sq.t0 + c0 + r, h, e) =
                from_compute<std::remove_const_t<O>>(p.normalize ? acc / (den + 1e-10) : acc);
          }
        }
        for (index_t d = 0; d < K_; ++d) {
          const double gl = at(G, L - 1, d, K_);
          for (index_t e = 0; e < V_; ++e) {
            double x = std::exp(gl) * S[std::size_t(d * V_ + e)];
            for (index_t c = 0; c < L; ++c)
              x += at(ks, c, d, K_) * std::exp(gl - at(G, c, d, K_)) * at(vs, c, e, V_);
            S[std::size_t(d * V_ + e)] = x;
          }
        }
      }
      write_states(p, s, srow, h, S, z);
    }
  }
}

/// Validates a call and runs it in the chunk form (run_chunk) for p.algo = chunk, else as the
/// recurrence (run). gate(b, t, h, d)
/// reads the stored log gate; g is the gate tensor (absent for linear_attn).
template <class Q, class K, class V, class O, class A, class G, std::size_t R>
void call(const char* fn, gate_kind kind, const linear_params& p, const tensor_view<Q, 4>& q,
          const tensor_view<K, 4>& k, const tensor_view<V, 4>& v, const tensor_view<G, R>& g,
          const tensor_view<O, 4>& o, const attnkit::detail::linear_states<A>& s) {
  const auto sh = attnkit::detail::check_linear(fn, p, kind, q, k, v, o, s);
  if (kind != gate_kind::none)
    attnkit::detail::check_gate(fn, sh, g, attnkit::detail::resolve(p.exec));
  const auto gate = [&](index_t b, index_t t, index_t h, index_t d) {
    if constexpr (R == 1)
      return to_compute<double>(g(h));
    else if constexpr (R == 3)
      return to_compute<double>(g(b, t, h));
    else
      return to_compute<double>(g(b, t, h, d));
  };
  if (sh.T == 0 && !s.ht.present() && !s.zt.present()) return;  // nothing to compute or write
  if (p.algo == algorithm::chunk)
    run_chunk(sh, p, q, k, v, o, s, gate);
  else
    run(sh, p, q, k, v, o, s, gate);
}

}  // namespace detail_lin

/// Reference of attnkit::linear_attn (see params.hpp).
template <class Q, class K, class V, class O>
void linear_attn(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                 tensor_view<V, 4> v, tensor_view<O, 4> o,
                 const recurrent_state<accum_t<Q>>& state = {},
                 const linear_extras<accum_t<Q>>& x = {}) {
  detail_lin::call("reference::linear_attn", gate_kind::none, p, q, k, v, cview<double, 1>{}, o,
                   attnkit::detail::combine(state, x));
}

/// Reference of attnkit::simple_gla with a per-token gate g [B,T,H] (R = 3) or a fixed per-head
/// decay g_gamma [H] (R = 1, RetNet).
template <class Q, class K, class V, class G, std::size_t R, class O>
void simple_gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                tensor_view<V, 4> v, tensor_view<G, R> g, tensor_view<O, 4> o,
                const recurrent_state<accum_t<Q>>& state = {}) {
  static_assert(R == 1 || R == 3, "simple_gla: g [B,T,H] or g_gamma [H]");
  detail_lin::call("reference::simple_gla", R == 3 ? gate_kind::scalar : gate_kind::head_decay, p,
                   q, k, v, g, o, attnkit::detail::combine(state));
}

/// Reference of attnkit::gla (per-key-channel gate g [B,T,H,K]).
template <class Q, class K, class V, class G, class O>
void gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k, tensor_view<V, 4> v,
         tensor_view<G, 4> g, tensor_view<O, 4> o, const recurrent_state<accum_t<Q>>& state = {}) {
  detail_lin::call("reference::gla", gate_kind::channel, p, q, k, v, g, o,
                   attnkit::detail::combine(state));
}

}  // namespace attnkit::reference
