// SPDX-License-Identifier: Apache-2.0
// Delta-rule family (flash-linear-attention conventions): DeltaNet (delta_rule), Gated DeltaNet
// (gated_delta_rule) and Kimi Delta Attention (kda). Parameters, optional tensors, the gate and
// beta parametrisations, and the input validation shared by the fast kernels (kernel.hpp) and the
// naive references (reference.hpp).
//
// Per (sequence, value head j), with query/key head h = j / (HV / H) (GVA), q~_t = scale * q_t and
// the state S in R^{K x V} (S[k, v]):
//   S'_t = D_t S_{t-1}          D_t = 1 (delta_rule), exp(g_t) (gated_delta_rule, g [B,T,HV]),
//                               diag(exp(g_t)) (kda, g [B,T,HV,K]: decays row k of S)
//   u_t  = beta_t (v_t - S'_t^T k_t)                 (the delta correction, on the decayed state)
//   S_t  = S'_t + k_t u_t^T
//   o_t  = S_t^T q~_t                                (inclusive: the state after token t's update)
// Layouts: q, k [B,T,H,K]; v, o [B,T,HV,V]; beta [B,T,HV]; state [N,HV,K,V] ("K-first"), or
// [N,HV,V,K] with state_v_first. HV is a multiple of H. N = B, or the number of sequences with
// varlen (cu_seqlens [N+1], B = 1, one state row per sequence).
//
// Optional in-kernel transforms (fla's use_qk_l2norm_in_kernel, use_beta_sigmoid_in_kernel,
// allow_neg_eigval, use_gate_in_kernel / lower_bound):
//   qk_l2norm      q, k <- x / sqrt(sum x^2 + 1e-6)
//   beta_sigmoid   beta holds logits: beta <- sigmoid(beta) (2 sigmoid(beta) with allow_neg_eigval)
//   gate softplus  g holds the raw projection a: g = -exp(A_log[j]) softplus(a + dt_bias)
//   gate lower_bound  g = L sigmoid(exp(A_log[j]) (a + dt_bias)), or L sigmoid(a + dt_bias) without
//                  A_log (L = lower_bound < 0)
// softplus(x) = log(1 + e^x), x above 20 taken as is (PyTorch's threshold). dt_bias is [HV] for
// gated_delta_rule and [HV*K] (channel-major per head: dt_bias[j*K + k]) for kda; it is optional.
//
// State snapshots (recurrent_state::snapshots, core/recurrent_state.hpp): besides ht, the states
// after chosen token counts of each sequence, [N,S,HV,K,V] (or [N,S,HV,V,K]): every `every`
// tokens (prefix caching) or after each of the last `last` tokens (speculative decoding). Both
// algorithms write them exactly (within rounding): the recurrent one after the token step, the
// chunk one at chunk boundaries (a chunk ends at every saved position; chunks of one token, such
// as the `last` tail, take the recurrent token step).
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/gating.hpp"
#include "../core/recurrent_state.hpp"
#include "../core/tensor_view.hpp"
#include "../core/types.hpp"
#include "../core/varlen.hpp"

namespace attnkit {

/// How the g tensor is turned into the log decay (fla's in-kernel gate options).
enum class delta_gate_fn {
  none,         ///< g already holds the log decays (<= 0; a positive one is an error)
  softplus,     ///< g = -exp(A_log[j]) * softplus(g + dt_bias)
  lower_bound,  ///< g = lower_bound * sigmoid(exp(A_log[j]) * (g + dt_bias)) (A_log optional)
};

/// Runtime options of the delta-rule family (fla names and defaults).
struct delta_params {
  double scale = 0;                             ///< applied to q; 0 means K^-0.5
  algorithm algo = algorithm::automatic;        ///< automatic: by shape (resolve_algorithm)
  index_t chunk_size = 64;                      ///< tokens per chunk of the chunk algorithm
  bool state_v_first = false;                   ///< states are [N,HV,V,K] instead of [N,HV,K,V]
  bool qk_l2norm = false;                       ///< L2-normalise q and k in the kernel (eps 1e-6)
  bool beta_sigmoid = false;                    ///< beta holds logits (kernel applies sigmoid)
  bool allow_neg_eigval = false;                ///< with beta_sigmoid: beta = 2 sigmoid(logit)
  delta_gate_fn gate_fn = delta_gate_fn::none;  ///< how g becomes the log decay
  double lower_bound = -5;                      ///< L of delta_gate_fn::lower_bound (< 0)
  executor* exec = nullptr;                     ///< where work runs; nullptr = default_executor()
};

/// Gate parameters of the in-kernel gate (delta_gate_fn::softplus / lower_bound); P is float
/// (as fla's parameters) or double.
template <class P = float>
struct delta_gate_params {
  cview<P, 1> A_log;    ///< [HV]; required by softplus, optional for lower_bound
  cview<P, 1> dt_bias;  ///< [HV] (gated_delta_rule) or [HV*K] (kda); optional
};

namespace detail {

struct delta_shape : recurrent_shape {
  gate_kind decay = gate_kind::none;
};

inline const char* delta_state_axes(const delta_params& p) {
  return p.state_v_first ? "N,HV,V,K" : "N,HV,K,V";
}

/// softplus with PyTorch's threshold (linear above 20).
inline double softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }
inline double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

/// The log decay from the raw gate value `a` of value head j (channel c for kda), per
/// p.gate_fn. a_log, dt: the head's A_log and the dt_bias entry (0 when absent).
inline double delta_log_decay(const delta_params& p, double a, bool has_a_log, double a_log,
                              double dt) {
  switch (p.gate_fn) {
    case delta_gate_fn::softplus:
      return -std::exp(a_log) * softplus(a + dt);
    case delta_gate_fn::lower_bound:
      return p.lower_bound * sigmoid(has_a_log ? std::exp(a_log) * (a + dt) : a + dt);
    case delta_gate_fn::none:
      break;
  }
  return a;
}

/// The log decay of value head j (row c for kda) from the stored gate value `a`: `a` itself, or
/// the in-kernel gate of p.gate_fn with gp's A_log[j] and dt_bias ([HV] or [HV*K]: j*K + c).
template <class P>
double delta_gate_log_decay(const delta_params& p, const delta_shape& sh,
                            const delta_gate_params<P>& gp, double a, index_t j, index_t c) {
  if (p.gate_fn == delta_gate_fn::none) return a;
  const bool has_a = gp.A_log.present();
  double dt = 0;
  if (gp.dt_bias.present())
    dt = double(gp.dt_bias(sh.decay == gate_kind::channel ? j * sh.K + c : j));
  return delta_log_decay(p, a, has_a, has_a ? double(gp.A_log(j)) : 0.0, dt);
}

/// beta from the stored value per p.beta_sigmoid / allow_neg_eigval.
inline double delta_beta(const delta_params& p, double b) {
  if (!p.beta_sigmoid) return b;
  return p.allow_neg_eigval ? 2 * sigmoid(b) : sigmoid(b);
}

inline void check_delta_params(const char* fn, const delta_params& p, gate_kind decay) {
  check_scale_algo_chunk(fn, p.scale, p.algo, p.chunk_size);
  if (p.allow_neg_eigval && !p.beta_sigmoid)
    fail(fn, ": option 'allow_neg_eigval' needs 'beta_sigmoid' (beta = 2 sigmoid(logit))");
  if (p.gate_fn != delta_gate_fn::none && p.gate_fn != delta_gate_fn::softplus &&
      p.gate_fn != delta_gate_fn::lower_bound)
    fail(fn, ": option 'gate_fn' must be none, softplus or lower_bound, got ", int(p.gate_fn));
  if (decay == gate_kind::none && p.gate_fn != delta_gate_fn::none)
    fail(fn, ": option 'gate_fn' needs a gate (delta_rule has none)");
  if (p.gate_fn == delta_gate_fn::lower_bound &&
      !(p.lower_bound < 0 && std::isfinite(p.lower_bound)))
    fail(fn, ": option 'lower_bound' must be finite and < 0, got ", p.lower_bound);
}

/// Runs of at least this many tokens make algorithm::automatic pick chunk, with chunks of
/// kAutoChunkSize tokens (fewer FLOP than 64: the chunk algorithm then executes about the
/// recurrence's count; chunk_size applies to algorithm::chunk).
constexpr index_t kAutoChunkMinTokens = 8;
constexpr index_t kAutoChunkSize = 32;

/// algorithm::automatic: chunk when some sequence has a run of at least kAutoChunkMinTokens
/// tokens between snapshot positions (its start, its end and every position whose state is
/// saved cut it; without snapshots the run is the sequence), else recurrent (decode steps,
/// short speculative runs, snapshots every few tokens: chunks that short would not pay).
inline algorithm resolve_algorithm(const delta_params& p, const delta_shape& sh) {
  if (p.algo != algorithm::automatic) return p.algo;
  if (sh.snap.every == 0 && sh.snap.last == 0)
    return longest(sh.seqs) >= kAutoChunkMinTokens ? algorithm::chunk : algorithm::recurrent;
  for (index_t n = 0; n < index_t(sh.seqs.size()); ++n)
    if (sh.schedule(n).longest_run() >= kAutoChunkMinTokens) return algorithm::chunk;
  return algorithm::recurrent;
}

/// Validates q, k, v, beta, o, the states and cu_seqlens; returns the problem description. The
/// gate tensor and its parameters are checked by check_delta_gate.
template <class Q, class K, class V, class Bt, class O, class A>
delta_shape check_delta(const char* fn, const delta_params& p, gate_kind decay,
                        const tensor_view<Q, 4>& q, const tensor_view<K, 4>& k,
                        const tensor_view<V, 4>& v, const tensor_view<Bt, 3>& beta,
                        const tensor_view<O, 4>& o, const recurrent_state<A>& s) {
  check_delta_params(fn, p, decay);
  delta_shape sh;
  sh.decay = decay;
  check_qkvo(fn, p.scale, /*grouped_v=*/true, q, k, v, o, s.cu_seqlens, sh);
  check_tensor({fn, "beta", "B,T,HV"}, beta,
               {dim(sh.B, "B of q"), dim(sh.T, "T of q"), dim(sh.HV, "HV of v")});

  const char* axes = delta_state_axes(p);
  const dim dk(sh.K, "K of q"), dv(sh.V, "V of v");
  check_recurrent_state(fn, s, axes, sh.N, dim(sh.HV, "HV of v"), p.state_v_first ? dv : dk,
                        p.state_v_first ? dk : dv);
  sh.rows = state_rows(fn, s, sh.N);
  check_outputs_disjoint(fn, q, k, v, o, s.h0, s.ht);
  check_disjoint(fn, "o", o, "beta", beta);
  check_disjoint(fn, "ht", s.ht, "beta", beta);

  sh.snap =
      check_snapshots(fn, s.snapshots, p.state_v_first ? "N,S,HV,V,K" : "N,S,HV,K,V", sh.N,
                      dim(sh.HV, "HV of v"), p.state_v_first ? dv : dk, p.state_v_first ? dk : dv);
  const auto& st = s.snapshots.states;
  const char* sn = "snapshots.states";
  check_disjoint(fn, sn, st, "q", q);
  check_disjoint(fn, sn, st, "k", k);
  check_disjoint(fn, sn, st, "v", v);
  check_disjoint(fn, sn, st, "beta", beta);
  check_disjoint(fn, sn, st, "o", o);
  check_disjoint(fn, sn, st, "h0", s.h0);
  check_disjoint(fn, sn, st, "ht", s.ht);
  check_disjoint(fn, sn, st, "cu_seqlens", s.cu_seqlens);
  check_disjoint(fn, sn, st, "state_indices", s.state_indices);
  return sh;
}

/// The gate tensor g ([B,T,HV] scalar, [B,T,HV,K] channel) and the in-kernel gate parameters;
/// the snapshots (an output) must not overlap any of them.
template <class G, std::size_t R, class P, class A>
void check_delta_gate(const char* fn, const delta_params& p, const delta_shape& sh,
                      const tensor_view<G, R>& g, const delta_gate_params<P>& gp,
                      const state_snapshots<A>& snapshots) {
  static_assert(std::is_same_v<P, float> || std::is_same_v<P, double>,
                "attnkit: gate parameters (A_log, dt_bias) must be float or double");
  if constexpr (R == 3)
    check_tensor({fn, "g", "B,T,HV"}, g,
                 {dim(sh.B, "B of q"), dim(sh.T, "T of q"), dim(sh.HV, "HV of v")});
  else
    check_tensor(
        {fn, "g", "B,T,HV,K"}, g,
        {dim(sh.B, "B of q"), dim(sh.T, "T of q"), dim(sh.HV, "HV of v"), dim(sh.K, "K of q")});
  check_disjoint(fn, "snapshots.states", snapshots.states, "g", g);
  check_disjoint(fn, "snapshots.states", snapshots.states, "A_log", gp.A_log);
  check_disjoint(fn, "snapshots.states", snapshots.states, "dt_bias", gp.dt_bias);
  if (p.gate_fn == delta_gate_fn::none) {
    if (gp.A_log.present() || gp.dt_bias.present())
      fail(fn, ": tensors 'A_log'/'dt_bias' are only used with an in-kernel gate (option ",
           "'gate_fn' softplus or lower_bound)");
    check_log_decays(fn, "g", R == 3 ? "B,T,HV" : "B,T,HV,K", g, &resolve(p.exec));
    return;
  }
  if (p.gate_fn == delta_gate_fn::softplus && !gp.A_log.present())
    fail(fn, ": option 'gate_fn' softplus needs tensor 'A_log' [HV]");
  if (gp.A_log.present()) check_tensor({fn, "A_log", "HV"}, gp.A_log, {dim(sh.HV, "HV of v")});
  if (gp.dt_bias.present()) {
    if (sh.decay == gate_kind::channel)
      check_tensor({fn, "dt_bias", "HV*K"}, gp.dt_bias, {dim(sh.HV * sh.K, "HV of v x K of q")});
    else
      check_tensor({fn, "dt_bias", "HV"}, gp.dt_bias, {dim(sh.HV, "HV of v")});
  }
}

}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
