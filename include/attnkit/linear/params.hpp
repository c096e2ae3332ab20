// SPDX-License-Identifier: Apache-2.0
// Linear-attention family (flash-linear-attention conventions): parameters, optional tensors, and
// the input validation shared by the fast kernels (kernel.hpp) and the naive references
// (reference.hpp).
//
// Per (sequence, head), with q~_t = scale * q_t and the state S in R^{K x V} (S[k, v]):
//   linear_attn  S_t = S_{t-1} + k_t v_t^T
//   simple_gla   S_t = exp(g_t) S_{t-1} + k_t v_t^T          g [B,T,H] (or a fixed g_gamma [H])
//   gla          S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T    g [B,T,H,K] (decays row k of S)
//   o_t = S_t^T q~_t                       (inclusive: the state after token t's update)
// linear_attn with normalize: o_t = (S_t^T q~_t) / (q~_t . z_t + 1e-10), z_t = z_0 + sum_{s<=t} k_s
// (the denominator uses z only, never S_0; fla's additive 1e-10).
// Layouts: q, k [B,T,H,K]; v, o [B,T,H,V]; state [N,H,K,V] ("K-first"), or [N,H,V,K] with
// state_v_first; z [N,1,H,K]. Gates are natural-log decays (<= 0; a positive one is an error). N =
// B, or the number of sequences with varlen (cu_seqlens [N+1], B = 1, one state row per sequence).
// State pool (recurrent_state::state_indices [N], continuous batching): h0 / ht are pools
// [P,H,K,V] (or [P,H,V,K]) and z0 / zt pools [P,1,H,K]; sequence n reads and writes row
// state_indices[n] of each, -1 skips the sequence (its o rows are zeros, no pool row is touched);
// rows no sequence names are never read or written; a row named twice, or outside [0, P), is an
// error. ht may be h0 (and zt z0): the pool is updated in place.
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)

#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/gating.hpp"
#include "../core/recurrent_state.hpp"
#include "../core/tensor_view.hpp"
#include "../core/types.hpp"
#include "../core/varlen.hpp"

namespace attnkit {

/// Runtime options of the linear-attention family (fla names and defaults).
struct linear_params {
  double scale = 0;                       ///< applied to q; 0 means K^-0.5
  algorithm algo = algorithm::automatic;  ///< automatic: recurrent when every sequence is
                                          ///< shorter than chunk_size (decode), else chunk
  index_t chunk_size = 64;                ///< tokens per chunk of the chunk algorithm (>= 1)
  bool normalize = false;                 ///< linear_attn only: divide by q~ . z + 1e-10
  bool state_v_first = false;             ///< states are [N,H,V,K] instead of [N,H,K,V]
  executor* exec = nullptr;               ///< where work runs; nullptr = default_executor()
};

/// The key-sum state of linear_attn with the normaliser (params.normalize); beside the
/// recurrent_state of core/recurrent_state.hpp. zt may be the very same view as z0 (in place).
/// With the recurrent_state's state_indices they are pools [P,1,H,K] indexed like h0 / ht.
template <class A>
struct linear_extras {
  cview<A, 4> z0;        ///< [N,1,H,K] (or pool [P,1,H,K]) initial key sum
  tensor_view<A, 4> zt;  ///< [N,1,H,K] (or pool [P,1,H,K]) final key sum (output)
};

namespace detail {

/// Every state view of a linear-family call in one place (the kernels' and references' view).
template <class A>
struct linear_states {
  cview<A, 4> h0;
  tensor_view<A, 4> ht;
  cview<A, 4> z0;
  tensor_view<A, 4> zt;
  cview<std::int32_t, 1> cu_seqlens;
  cview<std::int32_t, 1> state_indices = {};  ///< [N] pool rows of h0/ht and z0/zt (-1: skip)
  state_snapshots<A> snapshots = {};          ///< refused (delta-rule family only)
};
template <class A>
linear_states<A> combine(const recurrent_state<A>& s, const linear_extras<A>& x = {}) {
  return {s.h0, s.ht, x.z0, x.zt, s.cu_seqlens, s.state_indices, s.snapshots};
}

struct linear_shape : recurrent_shape {
  gate_kind gate = gate_kind::none;
};

inline const char* state_axes(const linear_params& p) {
  return p.state_v_first ? "N,H,V,K" : "N,H,K,V";
}

inline void check_linear_params(const char* fn, const linear_params& p, gate_kind gate) {
  check_scale_algo_chunk(fn, p.scale, p.algo, p.chunk_size);
  if (p.normalize && gate != gate_kind::none)
    fail(fn, ": option 'normalize' is only supported by linear_attn");
}

/// algorithm::automatic: recurrent when every sequence is shorter than one chunk (decode, short
/// prompts: nothing to batch into GEMMs), else chunk.
inline algorithm resolve_algorithm(const linear_params& p, const linear_shape& sh) {
  if (p.algo != algorithm::automatic) return p.algo;
  return longest(sh.seqs) < p.chunk_size ? algorithm::recurrent : algorithm::chunk;
}

/// Validates q, k, v, o, the state tensors and cu_seqlens; returns the problem description.
/// The gate tensor is checked by the entry point (its rank depends on the variant).
template <class Q, class K, class V, class O, class A>
linear_shape check_linear(const char* fn, const linear_params& p, gate_kind gate,
                          const tensor_view<Q, 4>& q, const tensor_view<K, 4>& k,
                          const tensor_view<V, 4>& v, const tensor_view<O, 4>& o,
                          const linear_states<A>& s) {
  check_linear_params(fn, p, gate);
  // Refused rather than ignored: a caller asking for snapshots must not get stale ones.
  if (s.snapshots.states.present() || s.snapshots.every != 0 || s.snapshots.last != 0)
    fail(fn, ": state snapshots (recurrent_state::snapshots) are supported by the delta-rule ",
         "family only");
  linear_shape sh;
  sh.gate = gate;
  check_qkvo(fn, p.scale, /*grouped_v=*/false, q, k, v, o, s.cu_seqlens, sh);

  // States: one row per sequence, or pools of P rows named by state_indices, in the layout
  // chosen by state_v_first.
  const char* axes = state_axes(p);
  const dim dk(sh.K, "K of q"), dv(sh.V, "V of v");
  check_recurrent_state(fn, recurrent_state<A>{s.h0, s.ht, s.cu_seqlens, s.state_indices}, axes,
                        sh.N, dim(sh.H, "H of q"), p.state_v_first ? dv : dk,
                        p.state_v_first ? dk : dv);
  const bool pool = s.state_indices.present();
  const index_t P = pool_extent(s.h0, s.ht, s.z0, s.zt);  // pool rows (h0's, ht's, z0's or zt's)
  auto check_z = [&](const char* name, const auto& t) {
    if (!t.present()) return;
    if (!p.normalize)
      fail(fn, ": tensor '", name, "' (key-sum state) is only used with option 'normalize'");
    if (pool) {
      check_tensor({fn, name, "P,1,H,K"}, t, {P, 1, sh.H, sh.K});
      return;
    }
    if (t.extent(0) != sh.N && s.cu_seqlens.present())
      fail(fn, ": tensor '", name, "' [N,1,H,K] dim 0 (N): expected ", sh.N,
           " (one state per sequence of cu_seqlens), got ", t.extent(0));
    check_tensor({fn, name, "N,1,H,K"}, t, {sh.N, 1, sh.H, sh.K});
  };
  check_z("z0", s.z0);
  check_z("zt", s.zt);
  if (s.zt.present()) check_no_self_overlap({fn, "zt", "N,1,H,K"}, s.zt);
  check_in_place(fn, "z0", s.z0, "zt", s.zt);
  check_outputs_disjoint(fn, q, k, v, o, s.h0, s.ht);
  check_disjoint(fn, "zt", s.zt, "q", q);
  check_disjoint(fn, "zt", s.zt, "k", k);
  check_disjoint(fn, "zt", s.zt, "o", o);
  check_disjoint(fn, "zt", s.zt, "ht", s.ht);
  // A normalised run continues only from both parts of its state (fla passes (h0, z0) together).
  if (p.normalize && s.h0.present() != s.z0.present())
    fail(fn, ": option 'normalize' with an initial state needs both 'h0' and 'z0' (got only '",
         s.h0.present() ? "h0" : "z0", "')");
  sh.rows =
      state_rows(fn, s.state_indices, sh.N, P,
                 p.normalize ? "none of h0, ht, z0, zt is given" : "neither h0 nor ht is given");
  return sh;
}

/// g [B,T,H] (simple_gla); the scan of its values runs on ex.
template <class G>
void check_gate(const char* fn, const linear_shape& sh, const tensor_view<G, 3>& g, executor& ex) {
  check_tensor({fn, "g", "B,T,H"}, g,
               {dim(sh.B, "B of q"), dim(sh.T, "T of q"), dim(sh.H, "H of q")});
  check_log_decays(fn, "g", "B,T,H", g, &ex);
}
/// g_gamma [H] (simple_gla with a fixed per-head decay).
template <class G>
void check_gate(const char* fn, const linear_shape& sh, const tensor_view<G, 1>& g, executor& ex) {
  check_tensor({fn, "g_gamma", "H"}, g, {dim(sh.H, "H of q")});
  check_log_decays(fn, "g_gamma", "H", g, &ex);
}
/// g [B,T,H,K] (gla).
template <class G>
void check_gate(const char* fn, const linear_shape& sh, const tensor_view<G, 4>& g, executor& ex) {
  check_tensor(
      {fn, "g", "B,T,H,K"}, g,
      {dim(sh.B, "B of q"), dim(sh.T, "T of q"), dim(sh.H, "H of q"), dim(sh.K, "K of q")});
  check_log_decays(fn, "g", "B,T,H,K", g, &ex);
}

}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
