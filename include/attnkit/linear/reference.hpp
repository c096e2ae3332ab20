// SPDX-License-Identifier: Apache-2.0
// Naive references of the linear-attention family: the per-token recurrence of params.hpp in
// double, plain loops, any strides (what fla's naive_recurrent_* compute), and beside it the naive
// chunk form (*_chunk, as fla's naive_chunk_*). Same signatures as kernel.hpp; the tests check the
// fast kernels against these functions and the two forms against each other.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "params.hpp"

namespace attnkit::reference {

namespace detail_lin {

/// Runs the recurrence for every (sequence, head). log_gate(b, t, h, d) is the log-decay of row d
/// of the state at token t (0 without gate).
template <class Q, class K, class V, class O, class A, class Gate>
void run(const attnkit::detail::linear_shape& sh, const linear_params& p,
         const tensor_view<Q, 4>& q, const tensor_view<K, 4>& k, const tensor_view<V, 4>& v,
         const tensor_view<O, 4>& o, const attnkit::detail::linear_states<A>& s, Gate log_gate) {
  const index_t K_ = sh.K, V_ = sh.V;
  std::vector<double> S(std::size_t(K_ * V_)), z(static_cast<std::size_t>(K_)),
      qs(static_cast<std::size_t>(K_)), out(static_cast<std::size_t>(V_));
  // State element (d, e) = S[d, e] lives at [n, h, d, e] (K-first) or [n, h, e, d] (V-first).
  auto st = [&](const auto& t, index_t n, index_t h, index_t d, index_t e) -> auto& {
    return p.state_v_first ? t(n, h, e, d) : t(n, h, d, e);
  };
  for (index_t n = 0; n < sh.N; ++n) {
    const auto& sq = sh.seqs[std::size_t(n)];
    for (index_t h = 0; h < sh.H; ++h) {
      for (index_t d = 0; d < K_; ++d) {
        for (index_t e = 0; e < V_; ++e)
          S[std::size_t(d * V_ + e)] = s.h0.present() ? double(st(s.h0, n, h, d, e)) : 0.0;
        z[std::size_t(d)] = s.z0.present() ? double(s.z0(n, 0, h, d)) : 0.0;
      }
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
      if (s.ht.present())
        for (index_t d = 0; d < K_; ++d)
          for (index_t e = 0; e < V_; ++e) st(s.ht, n, h, d, e) = A(S[std::size_t(d * V_ + e)]);
      if (s.zt.present())
        for (index_t d = 0; d < K_; ++d) s.zt(n, 0, h, d) = A(z[std::size_t(d)]);
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
  auto st = [&](const auto& t, index_t n, index_t h, index_t d, index_t e) -> auto& {
    return p.state_v_first ? t(n, h, e, d) : t(n, h, d, e);
  };
  std::vector<double> S(std::size_t(K_ * V_)), z(static_cast<std::size_t>(K_)), G, qs, ks, vs, Am;
  for (index_t n = 0; n < sh.N; ++n) {
    const auto& sq = sh.seqs[std::size_t(n)];
    for (index_t h = 0; h < sh.H; ++h) {
      for (index_t d = 0; d < K_; ++d) {
        for (index_t e = 0; e < V_; ++e)
          S[std::size_t(d * V_ + e)] = s.h0.present() ? double(st(s.h0, n, h, d, e)) : 0.0;
        z[std::size_t(d)] = s.z0.present() ? double(s.z0(n, 0, h, d)) : 0.0;
      }
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
              a += at(qs, r, d, K_) * at(ks, c, d, K_) * std::exp(at(G, r, d, K_) - at(G, c, d, K_));
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
      if (s.ht.present())
        for (index_t d = 0; d < K_; ++d)
          for (index_t e = 0; e < V_; ++e) st(s.ht, n, h, d, e) = A(S[std::size_t(d * V_ + e)]);
      if (s.zt.present())
        for (index_t d = 0; d < K_; ++d) s.zt(n, 0, h, d) = A(z[std::size_t(d)]);
    }
  }
}

}  // namespace detail_lin

/// Reference of attnkit::linear_attn (see params.hpp).
template <class Q, class K, class V, class O>
void linear_attn(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                 tensor_view<V, 4> v, tensor_view<O, 4> o, const recurrent_state<accum_t<Q>>& state = {},
                 const linear_extras<accum_t<Q>>& x = {}) {
  const auto s = attnkit::detail::combine(state, x);
  const auto sh =
      attnkit::detail::check_linear("reference::linear_attn", p, gate_kind::none, q, k, v, o, s);
  detail_lin::run(sh, p, q, k, v, o, s, [](index_t, index_t, index_t, index_t) { return 0.0; });
}

/// Reference of attnkit::simple_gla with a per-token gate g [B,T,H].
template <class Q, class K, class V, class G, class O>
void simple_gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                tensor_view<V, 4> v, tensor_view<G, 3> g, tensor_view<O, 4> o,
                const recurrent_state<accum_t<Q>>& state = {}) {
  const char* fn = "reference::simple_gla";
  const auto s = attnkit::detail::combine(state);
  const auto sh = attnkit::detail::check_linear(fn, p, gate_kind::scalar, q, k, v, o, s);
  attnkit::detail::check_gate(fn, sh, g);
  detail_lin::run(sh, p, q, k, v, o, s, [&](index_t b, index_t t, index_t h, index_t) {
    return to_compute<double>(g(b, t, h));
  });
}

/// Reference of attnkit::simple_gla with a fixed per-head decay g_gamma [H] (RetNet).
template <class Q, class K, class V, class G, class O>
void simple_gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                tensor_view<V, 4> v, tensor_view<G, 1> g_gamma, tensor_view<O, 4> o,
                const recurrent_state<accum_t<Q>>& state = {}) {
  const char* fn = "reference::simple_gla";
  const auto s = attnkit::detail::combine(state);
  const auto sh = attnkit::detail::check_linear(fn, p, gate_kind::head_decay, q, k, v, o, s);
  attnkit::detail::check_gate(fn, sh, g_gamma);
  detail_lin::run(sh, p, q, k, v, o, s, [&](index_t, index_t, index_t h, index_t) {
    return to_compute<double>(g_gamma(h));
  });
}

/// Reference of attnkit::gla (per-key-channel gate g [B,T,H,K]).
template <class Q, class K, class V, class G, class O>
void gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k, tensor_view<V, 4> v,
         tensor_view<G, 4> g, tensor_view<O, 4> o, const recurrent_state<accum_t<Q>>& state = {}) {
  const char* fn = "reference::gla";
  const auto s = attnkit::detail::combine(state);
  const auto sh = attnkit::detail::check_linear(fn, p, gate_kind::channel, q, k, v, o, s);
  attnkit::detail::check_gate(fn, sh, g);
  detail_lin::run(sh, p, q, k, v, o, s, [&](index_t b, index_t t, index_t h, index_t d) {
    return to_compute<double>(g(b, t, h, d));
  });
}

/// Naive chunk references (detail_lin::run_chunk, chunks of p.chunk_size tokens): the same
/// signatures and results as linear_attn, simple_gla and gla above, computed chunk by chunk.
template <class Q, class K, class V, class O>
void linear_attn_chunk(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                       tensor_view<V, 4> v, tensor_view<O, 4> o,
                       const recurrent_state<accum_t<Q>>& state = {},
                       const linear_extras<accum_t<Q>>& x = {}) {
  const auto s = attnkit::detail::combine(state, x);
  const auto sh = attnkit::detail::check_linear("reference::linear_attn_chunk", p, gate_kind::none,
                                                q, k, v, o, s);
  detail_lin::run_chunk(sh, p, q, k, v, o, s,
                        [](index_t, index_t, index_t, index_t) { return 0.0; });
}
template <class Q, class K, class V, class G, std::size_t R, class O>
void simple_gla_chunk(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                      tensor_view<V, 4> v, tensor_view<G, R> g, tensor_view<O, 4> o,
                      const recurrent_state<accum_t<Q>>& state = {}) {
  static_assert(R == 1 || R == 3, "simple_gla: g [B,T,H] or g_gamma [H]");
  const char* fn = "reference::simple_gla_chunk";
  const auto s = attnkit::detail::combine(state);
  const auto sh = attnkit::detail::check_linear(
      fn, p, R == 3 ? gate_kind::scalar : gate_kind::head_decay, q, k, v, o, s);
  attnkit::detail::check_gate(fn, sh, g);
  detail_lin::run_chunk(sh, p, q, k, v, o, s, [&](index_t b, index_t t, index_t h, index_t) {
    if constexpr (R == 3)
      return to_compute<double>(g(b, t, h));
    else
      return to_compute<double>(g(h));
  });
}
template <class Q, class K, class V, class G, class O>
void gla_chunk(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
               tensor_view<V, 4> v, tensor_view<G, 4> g, tensor_view<O, 4> o,
               const recurrent_state<accum_t<Q>>& state = {}) {
  const char* fn = "reference::gla_chunk";
  const auto s = attnkit::detail::combine(state);
  const auto sh = attnkit::detail::check_linear(fn, p, gate_kind::channel, q, k, v, o, s);
  attnkit::detail::check_gate(fn, sh, g);
  detail_lin::run_chunk(sh, p, q, k, v, o, s, [&](index_t b, index_t t, index_t h, index_t d) {
    return to_compute<double>(g(b, t, h, d));
  });
}

}  // namespace attnkit::reference
