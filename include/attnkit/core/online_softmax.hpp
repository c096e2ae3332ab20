// SPDX-License-Identifier: Apache-2.0
// The online-softmax state shared by every softmax-family kernel, and the public LSE merge.
//
// A partial result over a key subset J is (m, l, acc): m = max_j x_j, l = sum_j e^{x_j - m},
// acc = sum_j e^{x_j - m} v_j. Its normalised form is (o = acc / l, lse = m + log l).
// Two disjoint partials merge as m = max(m_a, m_b), l = l_a e^{m_a-m} + l_b e^{m_b-m} (same for
// acc). An empty partial has m = -inf, l = 0, acc = 0; every rescale guards (-inf) - (-inf) so
// empty rows give o = 0 and lse = -inf, never NaN.
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>

#include "config.hpp"
#include "error.hpp"
#include "executor.hpp"
#include "tensor_view.hpp"
#include "types.hpp"

namespace attnkit {

template <class A>
struct softmax_state {
  A m = -std::numeric_limits<A>::infinity();
  A l = A(0);

  /// e^{m_old - m_new}, 0 when the old state was empty (no NaN from -inf - -inf).
  static A rescale(A m_old, A m_new) {
    if (m_old == -std::numeric_limits<A>::infinity()) return A(0);
    return std::exp(m_old - m_new);
  }
  /// Merges `other` into *this; returns the factors (for this, for other) to apply to the two accs.
  void merge(const softmax_state& other, A& w_self, A& w_other) {
    const A mn = std::max(m, other.m);
    w_self = rescale(m, mn);
    w_other = rescale(other.m, mn);
    l = l * w_self + other.l * w_other;
    m = mn;
  }
  /// Natural-log sum of exponentials, -inf for an empty state.
  A lse() const { return l > A(0) ? m + std::log(l) : -std::numeric_limits<A>::infinity(); }
  /// Factor that turns acc into the output o. `sink` is a learned per-head logit added once to the
  /// denominator (an extra key with value 0): o = acc e^{m} / (l e^{m} + e^{sink}).
  A output_factor(A sink = -std::numeric_limits<A>::infinity()) const {
    if (!(l > A(0))) return A(0);
    if (sink == -std::numeric_limits<A>::infinity()) return A(1) / l;
    const A mx = std::max(m, sink);
    const A em = std::exp(m - mx);
    return em / (l * em + std::exp(sink - mx));
  }
};

/// Merges two normalised partial results in place: (o, lse) <- merge((o, lse), (o_other,
/// lse_other)). o, o_other [B,T,H,Dv]; lse, lse_other [B,H,T] (natural log; -inf = empty partial).
template <class O, class L, class O2, class L2>
void merge_state_inplace(tensor_view<O, 4> o, tensor_view<L, 3> lse, tensor_view<O2, 4> o_other,
                         tensor_view<L2, 3> lse_other) {
  using A = std::remove_const_t<L>;
  static_assert(std::is_same_v<A, std::remove_const_t<L2>>, "lse types must match");
  static_assert(std::is_same_v<std::remove_const_t<O>, std::remove_const_t<O2>>,
                "o types must match");
  const detail::tensor_desc d_o{"merge_state_inplace", "o", "B,T,H,Dv"},
      d_l{"merge_state_inplace", "lse", "B,H,T"},
      d_oo{"merge_state_inplace", "o_other", "B,T,H,Dv"},
      d_lo{"merge_state_inplace", "lse_other", "B,H,T"};
  detail::check_tensor(d_o, o, {-1, -1, -1, -1});
  const index_t B = o.extent(0), T = o.extent(1), H = o.extent(2), Dv = o.extent(3);
  detail::check_tensor(d_l, lse, {B, H, T});
  detail::check_tensor(d_oo, o_other, {B, T, H, Dv});
  detail::check_tensor(d_lo, lse_other, {B, H, T});
  detail::check_no_self_overlap(d_o, o);
  detail::check_no_self_overlap(d_l, lse);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h) {
        softmax_state<A> s{lse(b, h, t), A(1)}, s2{lse_other(b, h, t), A(1)};
        if (s.m == -std::numeric_limits<A>::infinity()) s.l = 0;
        if (s2.m == -std::numeric_limits<A>::infinity()) s2.l = 0;
        A wa, wb;
        s.merge(s2, wa, wb);
        const A f = s.output_factor();
        for (index_t c = 0; c < Dv; ++c) {
          const A val =
              (to_compute<A>(o(b, t, h, c)) * wa + to_compute<A>(o_other(b, t, h, c)) * wb) * f;
          o(b, t, h, c) = from_compute<std::remove_const_t<O>>(val);
        }
        lse(b, h, t) = s.lse();
      }
}

/// Merges N partial results over disjoint key sets (split-KV, cascade, context parallel):
/// o_parts [N,B,T,H,Dv], lse_parts [N,B,H,T] -> o [B,T,H,Dv], lse [B,H,T] (lse optional).
/// o = sum_n w_n o_n / sum_n w_n with w_n = e^{lse_n - max lse}; lse = log sum_n e^{lse_n}.
/// Parts with lse = -inf are empty and contribute nothing; if all are empty, o = 0, lse = -inf.
/// L defaults to the lse_parts element type: a call without lse leaves nothing to deduce it from.
template <class OP, class LP, class O, class L = std::remove_const_t<LP>>
void merge_states(tensor_view<OP, 5> o_parts, tensor_view<LP, 4> lse_parts, tensor_view<O, 4> o,
                  tensor_view<L, 3> lse = {}) {
  using A = std::remove_const_t<LP>;
  const char* fn = "merge_states";
  const detail::tensor_desc d_op{fn, "o_parts", "N,B,T,H,Dv"}, d_lp{fn, "lse_parts", "N,B,H,T"},
      d_o{fn, "o", "B,T,H,Dv"}, d_l{fn, "lse", "B,H,T"};
  detail::check_tensor(d_op, o_parts, {-1, -1, -1, -1, -1});
  const index_t N = o_parts.extent(0), B = o_parts.extent(1), T = o_parts.extent(2),
                H = o_parts.extent(3), Dv = o_parts.extent(4);
  detail::check_tensor(d_lp, lse_parts, {N, B, H, T});
  detail::check_tensor(d_o, o, {B, T, H, Dv});
  detail::check_no_self_overlap(d_o, o);
  if (lse.present()) {
    detail::check_tensor(d_l, lse, {B, H, T});
    detail::check_no_self_overlap(d_l, lse);
  }
  constexpr A ninf = -std::numeric_limits<A>::infinity();
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h) {
        A mx = ninf;
        for (index_t n = 0; n < N; ++n) mx = std::max(mx, A(lse_parts(n, b, h, t)));
        A den = 0;
        for (index_t n = 0; n < N; ++n) den += softmax_state<A>::rescale(lse_parts(n, b, h, t), mx);
        for (index_t c = 0; c < Dv; ++c) {
          A num = 0;
          for (index_t n = 0; n < N; ++n) {
            const A w = softmax_state<A>::rescale(lse_parts(n, b, h, t), mx);
            if (w != A(0)) num += w * to_compute<A>(o_parts(n, b, t, h, c));
          }
          o(b, t, h, c) = from_compute<std::remove_const_t<O>>(den > 0 ? num / den : A(0));
        }
        if (lse.present()) lse(b, h, t) = den > 0 ? mx + std::log(den) : ninf;
      }
}

}  // namespace attnkit
