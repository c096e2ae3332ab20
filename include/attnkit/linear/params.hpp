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
// state_v_first; z [N,1,H,K]. Gates are natural-log decays (<= 0). N = B, or the number of
// sequences with varlen (cu_seqlens [N+1], B = 1, one state row per sequence).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/tensor_view.hpp"
#include "../core/types.hpp"
#include "../core/varlen.hpp"

namespace attnkit {

/// Which algorithm computes the result (same math, same signature).
enum class linear_algo {
  chunk,      ///< chunkwise parallel: intra-chunk masked products + inter-chunk state passing
  recurrent,  ///< token by token (decode; T = 1 updates a caller-owned state, in place if wanted)
};

/// Runtime options of the linear-attention family (fla names and defaults).
struct linear_params {
  double scale = 0;                       ///< applied to q; 0 means K^-0.5
  linear_algo algo = linear_algo::chunk;  ///< chunk (prefill) or recurrent (decode)
  index_t chunk_size = 64;                ///< tokens per chunk of the chunk algorithm (>= 1)
  bool normalize = false;                 ///< linear_attn only: divide by q~ . z + 1e-10
  bool state_v_first = false;             ///< states are [N,H,V,K] instead of [N,H,K,V]
  executor* exec = nullptr;               ///< where work runs; nullptr = default_executor()
};

/// The decay of a variant (chosen by the entry point, not by the caller).
enum class linear_gate {
  none,        ///< linear attention: no decay
  scalar,      ///< one log-decay per token and head, g [B,T,H]
  head_decay,  ///< one fixed log-decay per head, g_gamma [H] (RetNet)
  channel,     ///< one log-decay per token, head and key channel, g [B,T,H,K]
};

/// Optional state tensors of a linear-family call. A is the state type: float, or double when
/// computing in double (also float for bf16/fp16 inputs). Absent views mean: initial state zero,
/// final state not written. ht may be the very same view as h0 (in-place update of a caller-owned
/// state, e.g. the decode step); any other overlap between them is an error. Same for z0 / zt.
template <class A>
struct linear_state {
  cview<A, 4> h0;                     ///< [N,H,K,V] (or [N,H,V,K]) initial state
  tensor_view<A, 4> ht;               ///< [N,H,K,V] (or [N,H,V,K]) final state (output)
  cview<A, 4> z0;                     ///< [N,1,H,K] initial key sum (linear_attn, normalize)
  tensor_view<A, 4> zt;               ///< [N,1,H,K] final key sum (output; normalize)
  cview<std::int32_t, 1> cu_seqlens;  ///< [N+1] varlen token offsets (then B = 1)
};

namespace detail {

/// One sequence after validation: tokens [t0, t0 + len) of batch row b; its state row is its
/// index in linear_shape::seqs.
struct linear_seq {
  index_t b, t0, len;
};

struct linear_shape {
  index_t B = 0, T = 0, H = 0, K = 0, V = 0, N = 0;
  double scale = 1;
  linear_gate gate = linear_gate::none;
  std::vector<linear_seq> seqs;
};

inline const char* state_axes(const linear_params& p) {
  return p.state_v_first ? "N,H,V,K" : "N,H,K,V";
}

/// Lowest and one-past-highest element address a view can touch (strides are positive here).
template <class T, std::size_t R>
std::pair<const void*, const void*> address_range(const tensor_view<T, R>& v) {
  const T* lo = v.data();
  index_t span = 0;
  for (std::size_t r = 0; r < R; ++r) span += (v.extent(r) - 1) * v.stride(r);
  return {static_cast<const void*>(lo), static_cast<const void*>(lo + span + 1)};
}

/// An output that shares memory with an input must be the very same view (in-place update).
template <class T, std::size_t R>
void check_in_place(const char* fn, const char* in_name, const tensor_view<const T, R>& in,
                    const char* out_name, const tensor_view<T, R>& out) {
  if (!in.present() || !out.present() || in.size() == 0 || out.size() == 0) return;
  const auto a = address_range(in), b = address_range(out);
  const bool disjoint = std::less_equal<const void*>()(a.second, b.first) ||
                        std::less_equal<const void*>()(b.second, a.first);
  if (disjoint) return;
  if (in.data() == out.data() && in.strides() == out.strides()) return;
  fail(fn, ": tensor '", out_name, "' overlaps '", in_name,
       "' without being the same view (an in-place update needs ", out_name, " == ", in_name,
       ": same data and strides)");
}

/// The sequences of a call: one per batch row, or (varlen, B must be 1) one per cu_seqlens range.
inline std::vector<linear_seq> sequences_of(const char* fn,
                                            const cview<std::int32_t, 1>& cu_seqlens, index_t B,
                                            index_t T) {
  std::vector<linear_seq> seqs;
  if (cu_seqlens.present()) {
    if (B != 1)
      fail(fn, ": tensor 'q' [B,T,H,K] dim 0 (B): varlen (cu_seqlens) needs B = 1, got ", B);
    const auto cu = read_cu_seqlens(fn, "cu_seqlens", cu_seqlens, T);
    for (std::size_t n = 0; n + 1 < cu.size(); ++n) seqs.push_back({0, cu[n], cu[n + 1] - cu[n]});
  } else {
    for (index_t b = 0; b < B; ++b) seqs.push_back({b, 0, T});
  }
  return seqs;
}

/// A state tensor (h0 / ht): [N, heads, d2, d3] in `axes`, one row per sequence.
template <class T>
void check_state_rows(const char* fn, const char* name, const tensor_view<T, 4>& t,
                      const char* axes, bool varlen, index_t N, index_t heads, index_t d2,
                      index_t d3) {
  if (!t.present()) return;
  if (t.extent(0) != N && varlen)
    fail(fn, ": tensor '", name, "' [", axes, "] dim 0 (N): expected ", N,
         " (one state per sequence of cu_seqlens), got ", t.extent(0));
  check_tensor({fn, name, axes}, t, {N, heads, d2, d3});
}

/// The options every linear-family call has: scale (0 = default), algorithm, chunk size.
inline void check_scale_algo_chunk(const char* fn, double scale, linear_algo algo,
                                   index_t chunk_size) {
  if (!(scale == 0 || std::isfinite(scale)))
    fail(fn, ": option 'scale' must be finite, got ", scale);
  if (algo != linear_algo::chunk && algo != linear_algo::recurrent)
    fail(fn, ": option 'algo' must be linear_algo::chunk or linear_algo::recurrent, got ",
         int(algo));
  if (chunk_size < 1 || chunk_size > 4096)
    fail(fn, ": option 'chunk_size' must be in [1, 4096], got ", chunk_size);
}

inline void check_linear_params(const char* fn, const linear_params& p, linear_gate gate) {
  check_scale_algo_chunk(fn, p.scale, p.algo, p.chunk_size);
  if (p.normalize && gate != linear_gate::none)
    fail(fn, ": option 'normalize' is only supported by linear_attn");
}

/// Validates q, k, v, o, the state tensors and cu_seqlens; returns the problem description.
/// The gate tensor is checked by the entry point (its rank depends on the variant).
template <class Q, class K, class V, class O, class A>
linear_shape check_linear(const char* fn, const linear_params& p, linear_gate gate,
                          const tensor_view<Q, 4>& q, const tensor_view<K, 4>& k,
                          const tensor_view<V, 4>& v, const tensor_view<O, 4>& o,
                          const linear_state<A>& s) {
  check_linear_params(fn, p, gate);
  // q defines B, T, H, K; k and v are checked against it, then o against all three.
  check_tensor({fn, "q", "B,T,H,K"}, q, {-1, -1, -1, -1});
  linear_shape sh;
  sh.B = q.extent(0);
  sh.T = q.extent(1);
  sh.H = q.extent(2);
  sh.K = q.extent(3);
  sh.gate = gate;
  check_tensor({fn, "k", "B,T,H,K"}, k, {sh.B, sh.T, sh.H, sh.K});
  check_tensor({fn, "v", "B,T,H,V"}, v, {sh.B, sh.T, sh.H, -1});
  sh.V = v.extent(3);
  if (sh.K < 1) fail(fn, ": tensor 'q' [B,T,H,K] dim 3 (K): must be >= 1, got ", sh.K);
  if (sh.V < 1) fail(fn, ": tensor 'v' [B,T,H,V] dim 3 (V): must be >= 1, got ", sh.V);
  check_tensor({fn, "o", "B,T,H,V"}, o, {sh.B, sh.T, sh.H, sh.V});
  check_no_self_overlap({fn, "o", "B,T,H,V"}, o);
  sh.scale = p.scale != 0 ? p.scale : 1.0 / std::sqrt(double(sh.K));

  sh.seqs = sequences_of(fn, s.cu_seqlens, sh.B, sh.T);
  sh.N = index_t(sh.seqs.size());

  // States: one row per sequence, in the layout chosen by state_v_first.
  const char* axes = state_axes(p);
  const index_t d2 = p.state_v_first ? sh.V : sh.K, d3 = p.state_v_first ? sh.K : sh.V;
  auto check_state = [&](const char* name, const auto& t) {
    check_state_rows(fn, name, t, axes, s.cu_seqlens.present(), sh.N, sh.H, d2, d3);
  };
  auto check_z = [&](const char* name, const auto& t) {
    if (!t.present()) return;
    if (!p.normalize)
      fail(fn, ": tensor '", name, "' (key-sum state) is only used with option 'normalize'");
    if (t.extent(0) != sh.N && s.cu_seqlens.present())
      fail(fn, ": tensor '", name, "' [N,1,H,K] dim 0 (N): expected ", sh.N,
           " (one state per sequence of cu_seqlens), got ", t.extent(0));
    check_tensor({fn, name, "N,1,H,K"}, t, {sh.N, 1, sh.H, sh.K});
  };
  check_state("h0", s.h0);
  check_state("ht", s.ht);
  check_z("z0", s.z0);
  check_z("zt", s.zt);
  if (s.ht.present()) check_no_self_overlap({fn, "ht", axes}, s.ht);
  if (s.zt.present()) check_no_self_overlap({fn, "zt", "N,1,H,K"}, s.zt);
  check_in_place(fn, "h0", s.h0, "ht", s.ht);
  check_in_place(fn, "z0", s.z0, "zt", s.zt);
  // A normalised run continues only from both parts of its state (fla passes (h0, z0) together).
  if (p.normalize && s.h0.present() != s.z0.present())
    fail(fn, ": option 'normalize' with an initial state needs both 'h0' and 'z0' (got only '",
         s.h0.present() ? "h0" : "z0", "')");
  return sh;
}

/// g [B,T,H] (simple_gla).
template <class G>
void check_gate(const char* fn, const linear_shape& sh, const tensor_view<G, 3>& g) {
  check_tensor({fn, "g", "B,T,H"}, g, {sh.B, sh.T, sh.H});
}
/// g_gamma [H] (simple_gla with a fixed per-head decay).
template <class G>
void check_gate(const char* fn, const linear_shape& sh, const tensor_view<G, 1>& g) {
  check_tensor({fn, "g_gamma", "H"}, g, {sh.H});
}
/// g [B,T,H,K] (gla).
template <class G>
void check_gate(const char* fn, const linear_shape& sh, const tensor_view<G, 4>& g) {
  check_tensor({fn, "g", "B,T,H,K"}, g, {sh.B, sh.T, sh.H, sh.K});
}

}  // namespace detail
}  // namespace attnkit
