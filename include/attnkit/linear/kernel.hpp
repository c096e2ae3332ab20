// SPDX-License-Identifier: Apache-2.0
// Fast kernels of the linear-attention family: linear_attn, simple_gla, gla (math: params.hpp;
// algorithms: recurrent.hpp and chunk.hpp; automatic picks by params.hpp's resolve_algorithm).
//
// Work item = (sequence, head) for recurrent, (sequence, up to 8 heads) for chunk; the state lives
// in a float (double) buffer of the worker. Results do not depend on the number of threads (each
// item is computed by one thread, in a fixed order).
#pragma once

#include "../core/warnings_push.hpp"

#include <algorithm>
#include <type_traits>

#include "../core/config.hpp"
#include "../core/executor.hpp"
#include "../core/simd.hpp"
#include "chunk.hpp"
#include "params.hpp"
#include "recurrent.hpp"

namespace attnkit {
namespace detail {
namespace linear_impl {

template <class A, class Arch, class Q, class Kt, class Vt, class O, class Gr>
void run(const linear_shape& sh, const linear_params& p, const tensor_view<Q, 4>& q,
         const tensor_view<Kt, 4>& k, const tensor_view<Vt, 4>& v, const tensor_view<O, 4>& o,
         const linear_states<A>& s, const Gr& gate) {
  const item_ctx<A, Q, Kt, Vt, O, Gr> c{sh, p, q, k, v, o, s, gate};
  executor& ex = resolve(p.exec);
  if (resolve_algorithm(p, sh) == algorithm::recurrent) {
    ex.parallel_for(sh.N * sh.H, [&](index_t item) {
      thread_local workspace<A> ws;
      run_recurrent<A, Arch>(c, item / sh.H, item % sh.H, ws);
    });
    return;
  }
  // chunk: items of up to 8 consecutive heads of one sequence (their rows are adjacent in
  // [B,T,H,K], so the inputs are read in longer runs), fewer when that leaves fewer items than
  // threads. Each head's arithmetic is the same in any grouping, so results depend neither on it
  // nor on the thread count.
  const index_t hg =
      std::max<index_t>(1, std::min<index_t>({8, sh.H, sh.N * sh.H / index_t(ex.num_threads())}));
  const index_t groups = (sh.H + hg - 1) / hg;
  ex.parallel_for(sh.N * groups, [&](index_t item) {
    thread_local workspace<A> ws;
    const index_t n = item / groups, hb = item % groups * hg;
    run_chunked<A, Arch>(c, n, hb, std::min(sh.H, hb + hg), ws);
  });
}

template <class Q, class K, class V, class O>
constexpr void check_types() {
  using A = accum_t<Q>;
  static_assert(
      is_storage_type_v<Q> && is_storage_type_v<K> && is_storage_type_v<V> && is_storage_type_v<O>,
      "attnkit: element types must be float, double, bf16 or fp16");
  static_assert(!std::is_same_v<A, double> || (std::is_same_v<std::remove_const_t<K>, double> &&
                                               std::is_same_v<std::remove_const_t<V>, double>),
                "attnkit: double queries need double keys/values");
}

/// Strides the fast kernels need: stride 1 on the last dimension of q, k, v, o and the states.
template <class Q, class K, class V, class O, class A>
void check_fast_layout(const char* fn, const linear_params& p, const tensor_view<Q, 4>& q,
                       const tensor_view<K, 4>& k, const tensor_view<V, 4>& v,
                       const tensor_view<O, 4>& o, const linear_states<A>& s) {
  require_inner_contiguous({fn, "q", "B,T,H,K"}, q);
  require_inner_contiguous({fn, "k", "B,T,H,K"}, k);
  require_inner_contiguous({fn, "v", "B,T,H,V"}, v);
  require_inner_contiguous({fn, "o", "B,T,H,V"}, o);
  if (s.h0.present()) require_inner_contiguous({fn, "h0", state_axes(p)}, s.h0);
  if (s.ht.present()) require_inner_contiguous({fn, "ht", state_axes(p)}, s.ht);
}

}  // namespace linear_impl
}  // namespace detail

/// Linear attention: S_t = S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t) (optionally normalised by
/// q~_t . z_t + 1e-10, params.normalize). q, k [B,T,H,K], v, o [B,T,H,V]; states in s.
/// The last dimension of q, k, v, o, h0, ht needs stride 1.
template <class Q, class K, class V, class O, class Arch = simd::default_arch>
void linear_attn(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                 tensor_view<V, 4> v, tensor_view<O, 4> o, const recurrent_state<accum_t<Q>>& state = {},
                 const linear_extras<accum_t<Q>>& x = {}) {
  namespace li = detail::linear_impl;
  li::check_types<std::remove_const_t<Q>, K, V, std::remove_const_t<O>>();
  using A = accum_t<Q>;
  const char* fn = "linear_attn";
  const auto s = detail::combine(state, x);
  const auto sh = detail::check_linear(fn, p, gate_kind::none, q, k, v, o, s);
  li::check_fast_layout(fn, p, q, k, v, o, s);
  li::run<A, Arch>(sh, p, q, k, v, o, s, detail::gate_reader<A, Arch, void>{});
}

/// Scalar-gated linear attention: S_t = exp(g_t) S_{t-1} + k_t v_t^T with g [B,T,H] (log decay).
template <class Q, class K, class V, class G, class O, class Arch = simd::default_arch>
void simple_gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                tensor_view<V, 4> v, tensor_view<G, 3> g, tensor_view<O, 4> o,
                const recurrent_state<accum_t<Q>>& state = {}) {
  namespace li = detail::linear_impl;
  li::check_types<std::remove_const_t<Q>, K, V, std::remove_const_t<O>>();
  static_assert(is_storage_type_v<G>, "attnkit: gate must be float, double, bf16 or fp16");
  using A = accum_t<Q>;
  const char* fn = "simple_gla";
  const auto s = detail::combine(state);
  const auto sh = detail::check_linear(fn, p, gate_kind::scalar, q, k, v, o, s);
  detail::check_gate(fn, sh, g);
  li::check_fast_layout(fn, p, q, k, v, o, s);
  li::run<A, Arch>(sh, p, q, k, v, o, s, detail::gate_reader<A, Arch, tensor_view<G, 3>>{g});
}

/// Scalar-gated linear attention with a fixed per-head log decay g_gamma [H] (RetNet):
/// S_t = exp(g_gamma[h]) S_{t-1} + k_t v_t^T.
template <class Q, class K, class V, class G, class O, class Arch = simd::default_arch>
void simple_gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                tensor_view<V, 4> v, tensor_view<G, 1> g_gamma, tensor_view<O, 4> o,
                const recurrent_state<accum_t<Q>>& state = {}) {
  namespace li = detail::linear_impl;
  li::check_types<std::remove_const_t<Q>, K, V, std::remove_const_t<O>>();
  static_assert(is_storage_type_v<G>, "attnkit: gate must be float, double, bf16 or fp16");
  using A = accum_t<Q>;
  const char* fn = "simple_gla";
  const auto s = detail::combine(state);
  const auto sh = detail::check_linear(fn, p, gate_kind::head_decay, q, k, v, o, s);
  detail::check_gate(fn, sh, g_gamma);
  li::check_fast_layout(fn, p, q, k, v, o, s);
  li::run<A, Arch>(sh, p, q, k, v, o, s, detail::gate_reader<A, Arch, tensor_view<G, 1>>{g_gamma});
}

/// Gated linear attention with a per-key-channel log decay g [B,T,H,K]:
/// S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T. The last dimension of g needs stride 1 too.
template <class Q, class K, class V, class G, class O, class Arch = simd::default_arch>
void gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k, tensor_view<V, 4> v,
         tensor_view<G, 4> g, tensor_view<O, 4> o, const recurrent_state<accum_t<Q>>& state = {}) {
  namespace li = detail::linear_impl;
  li::check_types<std::remove_const_t<Q>, K, V, std::remove_const_t<O>>();
  static_assert(is_storage_type_v<G>, "attnkit: gate must be float, double, bf16 or fp16");
  using A = accum_t<Q>;
  const char* fn = "gla";
  const auto s = detail::combine(state);
  const auto sh = detail::check_linear(fn, p, gate_kind::channel, q, k, v, o, s);
  detail::check_gate(fn, sh, g);
  li::check_fast_layout(fn, p, q, k, v, o, s);
  detail::require_inner_contiguous({fn, "g", "B,T,H,K"}, g);
  li::run<A, Arch>(sh, p, q, k, v, o, s, detail::gate_reader<A, Arch, tensor_view<G, 4>>{g});
}

}  // namespace attnkit

#include "../core/warnings_pop.hpp"

