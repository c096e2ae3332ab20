// SPDX-License-Identifier: Apache-2.0
// Naive references of the linear-attention family: the per-token recurrence of params.hpp in
// double, plain loops, any strides (what fla's naive_recurrent_* compute). Same signatures as
// kernel.hpp; the tests check the fast kernels against these functions.
#pragma once

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

}  // namespace attnkit::reference
