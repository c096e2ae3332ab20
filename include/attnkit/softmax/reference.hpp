// SPDX-License-Identifier: Apache-2.0
// Naive reference for standard softmax attention: plain loops, double accumulation, any strides.
// Same signatures as kernel.hpp; the tests check the fast kernel against these functions.
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "params.hpp"

namespace attnkit::reference {

namespace detail_std {

/// Attends every (sequence, query head, row) of `s`; `rows_of(seq, hk)` gives the key rows.
template <class Q, class O, class A, class RowsOf>
void attend_all(const attnkit::detail::softmax_shape& s, const softmax_params& p,
                const tensor_view<Q, 4>& q, const tensor_view<O, 4>& o, const softmax_extras<A>& x,
                RowsOf rows_of) {
  constexpr double ninf = -std::numeric_limits<double>::infinity();
  std::vector<double> logits, acc;
  for (const auto& sq : s.seqs) {
    for (index_t h = 0; h < s.Hq; ++h) {
      const index_t hk = h / s.group;
      const auto rows = rows_of(sq, hk);
      for (index_t i = 0; i < sq.tq; ++i) {
        // logits x_j = softcap(scale * q . k_j) over the visible keys, -inf elsewhere
        logits.assign(std::size_t(sq.tk), ninf);
        double mx = ninf;
        for (index_t j = 0; j < sq.tk; ++j) {
          if (!s.mask.visible(i, j, sq.tq, sq.tk)) continue;
          const auto* kr = rows.k_row(j);
          double dot = 0;
          for (index_t d = 0; d < s.Dk; ++d)
            dot +=
                to_compute<double>(q(sq.qb, sq.q0 + i, h, d)) * to_compute<double>(kr[d * rows.kd]);
          double xj = s.scale * dot;
          if (p.softcap > 0) xj = p.softcap * std::tanh(xj / p.softcap);
          logits[std::size_t(j)] = xj;
          mx = std::max(mx, xj);
        }
        // o = sum_j e^{x_j - mx} v_j / (sum_j e^{x_j - mx} + e^{sink - mx})
        double sum = 0;
        acc.assign(std::size_t(s.Dv), 0.0);
        for (index_t j = 0; j < sq.tk; ++j) {
          if (logits[std::size_t(j)] == ninf) continue;
          const double w = std::exp(logits[std::size_t(j)] - mx);
          sum += w;
          const auto* vr = rows.v_row(j);
          for (index_t d = 0; d < s.Dv; ++d)
            acc[std::size_t(d)] += w * to_compute<double>(vr[d * rows.vd]);
        }
        double den = sum;
        if (sum > 0 && x.sinks.present()) {
          const double sink = double(x.sinks(h));
          const double m2 = std::max(mx, sink);
          den = sum * std::exp(mx - m2) + std::exp(sink - m2);
          for (auto& a : acc) a *= std::exp(mx - m2);
        }
        for (index_t d = 0; d < s.Dv; ++d)
          o(sq.qb, sq.q0 + i, h, d) =
              from_compute<std::remove_const_t<O>>(sum > 0 ? acc[std::size_t(d)] / den : 0.0);
        if (x.lse.present()) x.lse(sq.qb, h, sq.q0 + i) = A(sum > 0 ? mx + std::log(sum) : ninf);
      }
    }
  }
}

}  // namespace detail_std

/// Reference of attnkit::standard_attention (same contract, see params.hpp).
template <class Q, class K, class V, class O>
void standard_attention(const softmax_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                        tensor_view<V, 4> v, tensor_view<O, 4> o,
                        const softmax_extras<accum_t<Q>>& x = {}) {
  const auto s = attnkit::detail::check_dense("reference::standard_attention", p, q, k, v, o, x);
  detail_std::attend_all(s, p, q, o, x, [&](const auto& sq, index_t hk) {
    return attnkit::detail::rows_of(cview<std::remove_const_t<K>, 4>(k),
                                    cview<std::remove_const_t<V>, 4>(v), sq, hk);
  });
}

/// Reference of attnkit::standard_attention_kvcache: appends k_new/v_new (if given) at
/// cache_seqlens[b], then attends q (the last Tq positions) over seqlens[b] + Tnew keys; varlen
/// with x.cu_seqlens_q as the kernel.
template <class Q, class Cache, class O, class KN = const typename Cache::value_type, class VN = KN>
void standard_attention_kvcache(const softmax_params& p, tensor_view<Q, 4> q, const Cache& cache,
                                tensor_view<O, 4> o, const softmax_extras<accum_t<Q>>& x = {},
                                tensor_view<KN, 4> k_new = {}, tensor_view<VN, 4> v_new = {}) {
  const auto s = attnkit::detail::check_cache("reference::standard_attention_kvcache", p, q, cache,
                                              o, x, k_new, v_new);
  attnkit::detail::append_rows(cache, s, k_new, v_new, x.cu_seqlens_q.present());
  detail_std::attend_all(s, p, q, o, x, [&](const auto& sq, index_t hk) {
    return attnkit::detail::rows_of(cache, sq, hk);
  });
}

/// Reference of attnkit::sliding_window_attention (standard attention with a bounded window).
template <class Q, class K, class V, class O>
void sliding_window_attention(const softmax_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                              tensor_view<V, 4> v, tensor_view<O, 4> o,
                              const softmax_extras<accum_t<Q>>& x = {}) {
  attnkit::detail::require_window("reference::sliding_window_attention", p);
  reference::standard_attention(p, q, k, v, o, x);
}

/// Reference of attnkit::sliding_window_attention_kvcache (any cache, including the ring).
template <class Q, class Cache, class O, class KN = const typename Cache::value_type, class VN = KN>
void sliding_window_attention_kvcache(const softmax_params& p, tensor_view<Q, 4> q,
                                      const Cache& cache, tensor_view<O, 4> o,
                                      const softmax_extras<accum_t<Q>>& x = {},
                                      tensor_view<KN, 4> k_new = {},
                                      tensor_view<VN, 4> v_new = {}) {
  attnkit::detail::require_window("reference::sliding_window_attention_kvcache", p);
  reference::standard_attention_kvcache(p, q, cache, o, x, k_new, v_new);
}

}  // namespace attnkit::reference
