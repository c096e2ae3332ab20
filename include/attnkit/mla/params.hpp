// SPDX-License-Identifier: Apache-2.0
// Multi-head latent attention (DeepSeek-V2/V3/V3.2, Kimi K2): options, scale and checks shared by
// the fast kernels (kernel.hpp) and the references (reference.hpp).
//
// Per token the cache holds the latent c [Dc] and the rotary key k_pe [Dr] (core/latent_cache.hpp).
// Per head h, with w_uk [H, Dn, Dc] and w_uv [H, Dv, Dc] (DeepSeek's wkv_b viewed as
// [H, Dn + Dv, Dc]):
//   naive (decompressed):  k_h = [w_uk[h] c ; k_pe], v_h = w_uv[h] c, q_h = [q_nope ; q_pe],
//                          o_h = softmax(scale q_h . k_h) v_h           (Dk = Dn + Dr != Dv)
//   absorbed:              q~_h = [w_uk[h]^T q_nope ; q_pe]              ([Dc + Dr])
//                          o~_h = softmax(scale q~_h . [c ; k_pe]) c     (one kv head, V = c)
//                          o_h = w_uv[h] o~_h
// Both use scale = (Dn + Dr)^-0.5 by default (the pre-absorption head dim, not Dc + Dr), times
// yarn_mscale(factor)^2 when YaRN extends the context. Causal masks are bottom-right.
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <cmath>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../softmax/params.hpp"

namespace attnkit {

/// The form mla_attention computes with (the other entry points are one form each).
enum class mla_form {
  automatic,  ///< absorbed below kMlaNaiveMinQueries query tokens per sequence, naive from there
  absorbed,   ///< q~ = w_uk^T q_nope, attention over the latent rows, o = w_uv o~
  naive,      ///< keys and values decompressed per head
};

/// From this many query tokens mla_form::automatic computes the naive form: per visible pair it
/// does 2 (Dn + Dr + Dv) FLOP per head against 2 (2 Dc + Dr), and its per-key decompression is
/// amortised over the queries (bench/README.md has the measured crossover).
constexpr index_t kMlaNaiveMinQueries = 1024;

/// Runtime options of the MLA kernels.
struct mla_params {
  double scale = 0;     ///< logit scale; 0 means (dn + Dr)^-0.5
  index_t dn = 0;       ///< Dn (qk_nope_head_dim): the absorbed form's default scale needs it
  bool causal = false;  ///< bottom-right aligned (multi-token prediction rows, prefill)
  int num_splits = 0;   ///< split-KV partitions per row: 0 = automatic, 1 = off
  mla_form form = mla_form::automatic;  ///< mla_attention's form (by shape when automatic)
  executor* exec = nullptr;             ///< where work runs; nullptr = default_executor()
};

/// YaRN's attention factor (DeepSeek's yarn_get_mscale): 0.1 * mscale_all_dim * ln(factor) + 1
/// for factor > 1, else 1. DeepSeek-V3 multiplies the softmax scale by its square (factor 40:
/// 1.369^2 = 1.874).
inline double yarn_mscale(double factor, double mscale_all_dim = 1) {
  return factor <= 1 ? 1.0 : 0.1 * mscale_all_dim * std::log(factor) + 1.0;
}

namespace detail {

/// The logit scale of a call: p.scale, or (dn + dr)^-0.5 with dn from the weights (naive form,
/// helpers) or from p.dn (absorbed form).
inline double mla_scale(const char* fn, const mla_params& p, index_t dn, index_t dr) {
  if (p.scale != 0) {
    if (!std::isfinite(p.scale)) fail(fn, ": option 'scale' must be finite, got ", p.scale);
    return p.scale;
  }
  if (dn <= 0)
    fail(fn, ": option 'scale' 0 (the default (Dn + Dr)^-0.5) needs option 'dn' ",
         "(qk_nope_head_dim) > 0, got ", dn);
  return 1.0 / std::sqrt(double(dn + dr));
}

/// The form of an mla_attention call with Tq query tokens per sequence.
inline mla_form resolve_form(const mla_params& p, index_t Tq) {
  if (p.form != mla_form::automatic) return p.form;
  return Tq >= kMlaNaiveMinQueries ? mla_form::naive : mla_form::absorbed;
}

/// The softmax-family options of an MLA call.
inline softmax_params mla_softmax_params(const mla_params& p, double scale) {
  softmax_params s;
  s.scale = scale;
  s.causal = p.causal;
  s.num_splits = p.num_splits;
  s.exec = p.exec;
  return s;
}

/// The shape of a naive-form call, from its tensors (checked against each other).
struct mla_shape {
  index_t B, Tq, Tk, H, Dn, Dr, Dc, Dv;
};

template <class Q, class C, class W, class O>
mla_shape check_naive(const char* fn, const tensor_view<Q, 4>& q_nope,
                      const tensor_view<Q, 4>& q_pe, const tensor_view<C, 3>& c_kv,
                      const tensor_view<C, 3>& k_pe, const tensor_view<W, 3>& w_uk,
                      const tensor_view<W, 3>& w_uv, const tensor_view<O, 4>& o) {
  check_tensor({fn, "q_nope", "B,Tq,H,Dn"}, q_nope, {-1, -1, -1, -1});
  mla_shape s{
      q_nope.extent(0), q_nope.extent(1), -1, q_nope.extent(2), q_nope.extent(3), -1, -1, -1};
  check_tensor({fn, "q_pe", "B,Tq,H,Dr"}, q_pe, {s.B, s.Tq, s.H, -1});
  s.Dr = q_pe.extent(3);
  check_tensor({fn, "c_kv", "B,Tk,Dc"}, c_kv, {s.B, -1, -1});
  s.Tk = c_kv.extent(1);
  s.Dc = c_kv.extent(2);
  check_tensor({fn, "k_pe", "B,Tk,Dr"}, k_pe, {s.B, s.Tk, s.Dr});
  check_tensor({fn, "w_uk", "H,Dn,Dc"}, w_uk, {s.H, s.Dn, s.Dc});
  check_tensor({fn, "w_uv", "H,Dv,Dc"}, w_uv, {s.H, -1, s.Dc});
  s.Dv = w_uv.extent(1);
  check_tensor({fn, "o", "B,Tq,H,Dv"}, o, {s.B, s.Tq, s.H, s.Dv});
  if (s.Dn < 1 || s.Dc < 1 || s.Dv < 1)
    fail(fn, ": head dims Dn, Dc, Dv must be >= 1, got ", s.Dn, ", ", s.Dc, ", ", s.Dv);
  return s;
}

}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
