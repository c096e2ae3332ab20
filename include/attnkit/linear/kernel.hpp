// SPDX-License-Identifier: Apache-2.0
// Fast kernels of the linear-attention family: linear_attn, simple_gla, gla (math: params.hpp;
// algorithms: recurrent.hpp and chunk.hpp; automatic picks by params.hpp's resolve_algorithm).
//
// Work item = (sequence, head) for recurrent, (sequence, up to 8 heads) for chunk; the state lives
// in a float (double) buffer of the worker. Results do not depend on the number of threads (each
// item is computed by one thread, in a fixed order).
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <type_traits>

#include "../core/config.hpp"
#include "../core/executor.hpp"
#include "../core/simd.hpp"
#include "../core/workspace.hpp"
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

/// The per-thread workspace of a call, every size checked (rows padded to 32 elements, the
/// widest register tile). The chunk algorithm's chunk is at most the longest sequence.
template <class A>
workspace_plan plan_workspace(const char* fn, const linear_shape& sh, const linear_params& p) {
  constexpr index_t pad = 32;
  const index_t Kp = round_up(sh.K, pad), Vp = round_up(sh.V, pad);
  const index_t threads = index_t(resolve(p.exec).num_threads());
  workspace_plan ws(fn);
  if (resolve_algorithm(p, sh) == algorithm::recurrent) {
    ws.add("state", {Kp, Vp}, sizeof(A), threads)
        .add("token rows", {8, std::max(Kp, Vp)}, sizeof(A), threads);
  } else {
    const index_t C = std::min(p.chunk_size, longest(sh.seqs)), Cp = round_up(C, pad);
    ws.add("states", {std::min<index_t>(8, sh.H), Kp, Vp}, sizeof(A), threads)
        .add("chunk rows (q, k, gates)", {6, C, Kp}, sizeof(A), threads)
        .add("chunk rows (v, o)", {2, C, Vp}, sizeof(A), threads)
        .add("chunk k^T", {Kp, Cp}, sizeof(A), threads)
        .add("intra-chunk scores", {C, Cp}, sizeof(A), threads)
        .add("sub-chunk products", {C + 18, Kp}, sizeof(A), threads);
  }
  return ws;
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

/// Validates a call and runs it; GateView is void (linear_attn) or the gate's view type.
template <class Arch, class GateView, class Q, class K, class V, class O>
void entry(const char* fn, const linear_params& p, const tensor_view<Q, 4>& q,
           const tensor_view<K, 4>& k, const tensor_view<V, 4>& v, const GateView* g,
           const tensor_view<O, 4>& o, const linear_states<accum_t<Q>>& s) {
  check_element_types<Q, K, V, O>();
  using A = accum_t<Q>;
  using Reader = gate_reader<A, Arch, GateView>;
  const auto sh = check_linear(fn, p, Reader::kind, q, k, v, o, s);
  check_option_range<A>(fn, "scale", sh.scale);
  check_fast_layout(fn, p, q, k, v, o, s);
  if constexpr (!std::is_void_v<GateView>) {
    check_gate(fn, sh, *g, resolve(p.exec));
    if constexpr (Reader::kind == gate_kind::channel)
      require_inner_contiguous({fn, "g", "B,T,H,K"}, *g);
  }
  // No tokens and no state to write: nothing to do, however many heads.
  if (sh.T == 0 && !s.ht.present() && !s.zt.present()) return;
  plan_workspace<A>(fn, sh, p).run([&] {
    if constexpr (std::is_void_v<GateView>)
      run<A, Arch>(sh, p, q, k, v, o, s, Reader{});
    else
      run<A, Arch>(sh, p, q, k, v, o, s, Reader{*g});
  });
}

}  // namespace linear_impl
}  // namespace detail

/// Linear attention: S_t = S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t) (optionally normalised by
/// q~_t . z_t + 1e-10, params.normalize). q, k [B,T,H,K], v, o [B,T,H,V]; states in `state`
/// (h0 / ht [N,H,K,V]) and x (z0 / zt [N,1,H,K]), or pools [P,...] of them whose rows
/// state.state_indices names (params.hpp). The last dimension of q, k, v, o, h0, ht needs stride 1.
template <class Q, class K, class V, class O, class Arch = simd::default_arch>
void linear_attn(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                 tensor_view<V, 4> v, tensor_view<O, 4> o,
                 const recurrent_state<accum_t<Q>>& state = {},
                 const linear_extras<accum_t<Q>>& x = {}) {
  detail::linear_impl::entry<Arch, void>("linear_attn", p, q, k, v, nullptr, o,
                                         detail::combine(state, x));
}

/// Scalar-gated linear attention: S_t = exp(g_t) S_{t-1} + k_t v_t^T with a log decay per token
/// and head, g [B,T,H] (R = 3), or a fixed one per head, g_gamma [H] (R = 1, RetNet). States as
/// linear_attn's h0 / ht (one row per sequence, or a pool with state_indices).
template <class Q, class K, class V, class G, std::size_t R, class O,
          class Arch = simd::default_arch>
void simple_gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                tensor_view<V, 4> v, tensor_view<G, R> g, tensor_view<O, 4> o,
                const recurrent_state<accum_t<Q>>& state = {}) {
  static_assert(R == 1 || R == 3, "attnkit: simple_gla takes g [B,T,H] or g_gamma [H]");
  static_assert(is_storage_type_v<G>, "attnkit: gate must be float, double, bf16 or fp16");
  detail::linear_impl::entry<Arch>("simple_gla", p, q, k, v, &g, o, detail::combine(state));
}

/// Gated linear attention with a per-key-channel log decay g [B,T,H,K]:
/// S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T. The last dimension of g needs stride 1 too. States
/// as linear_attn's h0 / ht (one row per sequence, or a pool with state_indices).
template <class Q, class K, class V, class G, class O, class Arch = simd::default_arch>
void gla(const linear_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k, tensor_view<V, 4> v,
         tensor_view<G, 4> g, tensor_view<O, 4> o, const recurrent_state<accum_t<Q>>& state = {}) {
  static_assert(is_storage_type_v<G>, "attnkit: gate must be float, double, bf16 or fp16");
  detail::linear_impl::entry<Arch>("gla", p, q, k, v, &g, o, detail::combine(state));
}

}  // namespace attnkit

#include "../core/warnings_pop.hpp"
