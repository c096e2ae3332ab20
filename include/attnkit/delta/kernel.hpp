// SPDX-License-Identifier: Apache-2.0
// Fast kernels of the delta-rule family: delta_rule, gated_delta_rule, kda (math: params.hpp;
// algorithms: recurrent.hpp and chunk.hpp). Work item = (sequence, value head). Results do not
// depend on the thread count (one thread per item, fixed order).
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <type_traits>

#include "../core/config.hpp"
#include "../core/executor.hpp"
#include "../core/gating.hpp"
#include "../core/simd.hpp"
#include "../core/variants.hpp"
#include "../core/workspace.hpp"
#include "chunk.hpp"
#include "params.hpp"
#include "recurrent.hpp"

namespace attnkit {
namespace detail {
namespace delta_impl {

template <class A, class Arch, class Q, class Kt, class Vt, class Bt, class O, class Gate>
void run(const delta_shape& sh, const delta_params& p, const tensor_view<Q, 4>& q,
         const tensor_view<Kt, 4>& k, const tensor_view<Vt, 4>& v, const tensor_view<Bt, 3>& beta,
         const tensor_view<O, 4>& o, const recurrent_state<A>& s, const Gate& gate) {
  const item_ctx<A, Q, Kt, Vt, Bt, O, Gate> c{sh, p, q, k, v, beta, o, s, gate};
  if (resolve_algorithm(p, sh) == algorithm::chunk) {
    // items of up to 8 consecutive value heads of one sequence (their rows are adjacent: the
    // inputs are read in long runs), fewer when that leaves fewer than 4 items per thread (a
    // thread slowed by a neighbour then takes fewer items instead of holding up the call); each
    // head's arithmetic is the same in any grouping, so results depend neither on it nor on the
    // threads
    executor& ex = resolve(p.exec);
    const index_t hg = std::max<index_t>(
        1, std::min<index_t>({8, sh.HV, sh.N * sh.HV / (4 * index_t(ex.num_threads()))}));
    const index_t groups = (sh.HV + hg - 1) / hg;
    ex.parallel_for(sh.N * groups, [&](index_t item) {
      thread_local chunk_workspace<A> ws;
      const index_t n = item / groups, jb = item % groups * hg;
      run_chunked<A, Arch>(c, n, jb, std::min(sh.HV, jb + hg), ws);
    });
    return;
  }
  resolve(p.exec).parallel_for(sh.N * sh.HV, [&](index_t item) {
    thread_local workspace<A> ws;
    run_recurrent<A, Arch>(c, item / sh.HV, item % sh.HV, ws);
  });
}

/// The per-thread workspace of a call, every size checked (rows padded to 32 elements). The
/// chunk algorithm's chunk is at most the longest sequence.
template <class A, class Arch>
workspace_plan plan_workspace(const char* fn, const delta_shape& sh, const delta_params& p) {
  constexpr index_t pad = 32;
  const index_t threads = index_t(resolve(p.exec).num_threads());
  workspace_plan ws(fn);
  if (resolve_algorithm(p, sh) == algorithm::recurrent) {
    ws.add("state", {sh.K, round_up(sh.V, pad)}, sizeof(A), threads)
        .add("token block rows", {kTokenBlock, sh.K, 3}, sizeof(A), threads);
  } else {
    const index_t C = std::max<index_t>(1, std::min(p.chunk_size, longest(sh.seqs)));
    const auto [Kp, Vp, Cp] = chunk_padding<A, Arch>(sh.K, sh.V, C);
    ws.add("states of a head group", {8, Kp, Vp}, sizeof(A), threads)
        .add("chunk rows (k, q~, decayed, kda sub-chunks)", {6 + 2 * kSubChunk, C + 1, Kp},
             sizeof(A), threads)
        .add("chunk rows (Z, y, u)", {4, C, Vp}, sizeof(A), threads)
        .add("transposed k", {Kp, Cp}, sizeof(A), threads)
        .add("intra-chunk products", {3, C, Cp}, sizeof(A), threads)
        .add("token step rows (1-token chunks)", {4, Kp}, sizeof(A), threads);
  }
  return ws;
}

/// Checks shared by the fast entry points: the algorithm and stride 1 on the last dimension of
/// q, k, v, o (the kernel reads rows of K and column slices of V, writes slices of o).
template <class Q, class K, class V, class O>
void check_fast(const char* fn, const delta_params& p, const tensor_view<Q, 4>& q,
                const tensor_view<K, 4>& k, const tensor_view<V, 4>& v,
                const tensor_view<O, 4>& o) {
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
  static constexpr gate_kind kind = Raw::kind;
  const delta_params& p;
  const delta_shape& sh;
  Raw raw;
  const delta_gate_params<P>& gp;
  double operator()(index_t b, index_t t, index_t j, index_t c) const {
    return delta_gate_log_decay(p, sh, gp, raw(b, t, j, c), j, c);
  }
  /// The K log decays of row (b, t, j) of a per-channel gate, as A.
  template <class A>
  void read_row(index_t b, index_t t, index_t j, A* dst, index_t K) const {
    if constexpr (Raw::kind == gate_kind::channel)
      if (p.gate_fn == delta_gate_fn::none && raw.g.stride(3) == 1) {
        raw.read(b, t, j, dst, K);  // stored log decays, converted as a row
        return;
      }
    for (index_t d = 0; d < K; ++d) dst[d] = A((*this)(b, t, j, d));
  }
};

/// Validates a call and runs it; GateView is void (delta_rule) or the gate's view type, read
/// through the in-kernel gate transform of p.gate_fn.
template <class Arch, class GateView, class Q, class K, class V, class Bt, class O, class P>
void entry(const char* fn, const delta_params& p, const tensor_view<Q, 4>& q,
           const tensor_view<K, 4>& k, const tensor_view<V, 4>& v, const GateView* g,
           const tensor_view<Bt, 3>& beta, const tensor_view<O, 4>& o,
           const recurrent_state<accum_t<Q>>& s, const delta_gate_params<P>& gp) {
  check_element_types<Q, K, V, Bt, O>();
  using A = accum_t<Q>;
  using Raw = gate_reader<A, Arch, GateView>;
  const auto sh = check_delta(fn, p, Raw::kind, q, k, v, beta, o, s);
  check_option_range<A>(fn, "scale", sh.scale);
  if constexpr (!std::is_void_v<GateView>) check_delta_gate(fn, p, sh, *g, gp, s.snapshots);
  check_fast(fn, p, q, k, v, o);
  // No tokens and no state to write: nothing to do, however many heads.
  if (sh.T == 0 && !s.ht.present()) return;
  // algorithm::automatic: the algorithm by shape, chunks of kAutoChunkSize tokens
  delta_params pe = p;
  pe.algo = resolve_algorithm(p, sh);
  if (p.algo == algorithm::automatic) pe.chunk_size = kAutoChunkSize;
  plan_workspace<A, Arch>(fn, sh, pe).run([&] {
    if constexpr (std::is_void_v<GateView>)
      run<A, Arch>(sh, pe, q, k, v, beta, o, s, Raw{});
    else
      run<A, Arch>(sh, pe, q, k, v, beta, o, s, transformed_gate<Raw, P>{pe, sh, Raw{*g}, gp});
  });
}

}  // namespace delta_impl
}  // namespace detail

/// DeltaNet: u_t = beta_t (v_t - S_{t-1}^T k_t), S_t = S_{t-1} + k_t u_t^T, o_t = S_t^T (scale
/// q_t). q, k [B,T,H,K], v, o [B,T,HV,V], beta [B,T,HV]; states in s ([N,HV,K,V]), and with
/// s.snapshots the intermediate states [N,S,HV,K,V] (every `every` tokens for prefix caching, or
/// after each of the last `last` tokens for speculative decoding; core/recurrent_state.hpp). The
/// last dimension of q, k, v, o needs stride 1. p.algo: recurrent, chunk, or automatic (chunk when
/// some sequence has a run of 8 tokens between saved states, else recurrent; resolve_algorithm).
template <class Q, class K, class V, class Bt, class O, class Arch = simd::default_arch>
void delta_rule(const delta_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                tensor_view<V, 4> v, tensor_view<Bt, 3> beta, tensor_view<O, 4> o,
                const recurrent_state<accum_t<Q>>& s = {}) {
  detail::delta_impl::entry<Arch, void>("delta_rule", p, q, k, v, nullptr, beta, o, s,
                                        delta_gate_params<float>{});
}

/// Gated DeltaNet: the state is decayed by exp(g_t) (g [B,T,HV], log space, or the raw gate of
/// p.gate_fn with gp) before the delta update of delta_rule (states and snapshots as there).
template <class Q, class K, class V, class G, class Bt, class O, class P = float,
          class Arch = simd::default_arch>
void gated_delta_rule(const delta_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                      tensor_view<V, 4> v, tensor_view<G, 3> g, tensor_view<Bt, 3> beta,
                      tensor_view<O, 4> o, const recurrent_state<accum_t<Q>>& s = {},
                      const delta_gate_params<P>& gp = {}) {
  static_assert(is_storage_type_v<G>, "attnkit: gate must be float, double, bf16 or fp16");
  detail::delta_impl::entry<Arch>("gated_delta_rule", p, q, k, v, &g, beta, o, s, gp);
}

/// Kimi Delta Attention: row c of the state is decayed by exp(g_t[c]) (g [B,T,HV,K], log space,
/// or the raw gate of p.gate_fn with gp) before the delta update of delta_rule (states and
/// snapshots as there).
template <class Q, class K, class V, class G, class Bt, class O, class P = float,
          class Arch = simd::default_arch>
void kda(const delta_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k, tensor_view<V, 4> v,
         tensor_view<G, 4> g, tensor_view<Bt, 3> beta, tensor_view<O, 4> o,
         const recurrent_state<accum_t<Q>>& s = {}, const delta_gate_params<P>& gp = {}) {
  static_assert(is_storage_type_v<G>, "attnkit: gate must be float, double, bf16 or fp16");
  detail::delta_impl::entry<Arch>("kda", p, q, k, v, &g, beta, o, s, gp);
}

}  // namespace attnkit

#include "../core/warnings_pop.hpp"
