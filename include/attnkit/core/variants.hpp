// SPDX-License-Identifier: Apache-2.0
// The variant table: one descriptor per attention variant (its name, family, entry point,
// algorithms, inputs and the FLOP it counts). attnkit-run, the benchmarks and the tests look
// variants up here; an algorithm a variant does not have is refused here, in one place.
#pragma once

#include <cstddef>
#include <string_view>

#include "config.hpp"
#include "error.hpp"
#include "recurrent_state.hpp"

namespace attnkit {

enum class variant_family { softmax, linear, delta };

/// What every variant declares about itself.
struct variant_info {
  const char* name;         ///< as attnkit-run and the benchmarks spell it
  variant_family family;    ///< the folder and umbrella header it lives in
  const char* entry_point;  ///< the fast kernel (the reference has the same name and signature
                            ///< in attnkit::reference)
  bool has_chunk;           ///< algorithm::chunk is implemented (recurrent families)
  bool has_recurrent;       ///< algorithm::recurrent is implemented (recurrent families)
  const char* inputs;       ///< tensors in, FlashAttention / fla layouts
  const char* outputs;      ///< tensors out
  /// Nominal FLOP (an FMA = 2) the variant's math needs per token and (value) head of a
  /// recurrent family, per query-key pair and head for the softmax family; dk, dv: key and
  /// value head dims.
  double (*nominal_flop)(index_t dk, index_t dv);
  /// Bytes a decode step moves, `elem` bytes a value: per cached token and kv head for the
  /// softmax family ((dk + dv) elem: K and V read), per sequence and (value) head for a
  /// recurrent family (2 dk dv elem: the state read once and written once).
  double (*decode_bytes)(index_t dk, index_t dv, std::size_t elem);
};

namespace detail {
// softmax: q.k (2 Dk) + p.v (2 Dv) per (query, key) pair and query head.
constexpr double softmax_pair_flop(index_t dk, index_t dv) { return 2.0 * double(dk + dv); }
// linear: S += k v^T (2KV) and o = S^T q (2KV); a decay multiply adds KV.
constexpr double linear_flop(index_t k, index_t v) { return 4.0 * double(k * v); }
constexpr double gated_linear_flop(index_t k, index_t v) { return 5.0 * double(k * v); }
// delta: w = S^T k (2KV), S += k u^T (2KV), o = S^T q (2KV); a decay multiply adds KV.
constexpr double delta_flop(index_t k, index_t v) { return 6.0 * double(k * v); }
constexpr double gated_delta_flop(index_t k, index_t v) { return 7.0 * double(k * v); }
// conv1d: W multiply-adds per token and channel (dk = W, dv unused).
constexpr double conv_flop(index_t w, index_t) { return 2.0 * double(w); }
// conv1d decode: the W-1 state values of a channel read and written.
constexpr double conv_state_bytes(index_t w, index_t, std::size_t elem) {
  return 2.0 * double(w - 1) * double(elem);
}
constexpr double kv_row_bytes(index_t dk, index_t dv, std::size_t elem) {
  return double(dk + dv) * double(elem);
}
// MLA (absorbed): one latent row of dk = Dc + Dr values per cached token; the values (its first
// dv = Dc) are the same bytes.
constexpr double latent_row_bytes(index_t dk, index_t, std::size_t elem) {
  return double(dk) * double(elem);
}
constexpr double state_bytes(index_t k, index_t v, std::size_t elem) {
  return 2.0 * double(k * v) * double(elem);
}
}  // namespace detail

inline constexpr variant_info variant_table[] = {
    {"softmax", variant_family::softmax, "standard_attention / standard_attention_kvcache", false,
     false, "q [B,Tq,Hq,Dk], k [B,Tk,Hkv,Dk], v [B,Tk,Hkv,Dv]; sinks [Hq]; cu_seqlens_q/k",
     "o [B,Tq,Hq,Dv], lse [B,Hq,Tq]", detail::softmax_pair_flop, detail::kv_row_bytes},
    {"sliding_window", variant_family::softmax,
     "sliding_window_attention / sliding_window_attention_kvcache", false, false,
     "as softmax, with window_left >= 0 (or chunk > 0), n_sink; caches incl. ring_kv_cache",
     "o [B,Tq,Hq,Dv], lse [B,Hq,Tq]", detail::softmax_pair_flop, detail::kv_row_bytes},
    {"mla", variant_family::softmax, "mla_attention_absorbed / mla_attention_naive", false, false,
     "q_nope [B,Tq,H,Dn], q_pe [B,Tq,H,Dr], c_kv [B,Tk,Dc], k_pe [B,Tk,Dr], w_uk [H,Dn,Dc], "
     "w_uv [H,Dv,Dc]; latent caches [.., Dc+Dr]",
     "o [B,Tq,H,Dv], lse [B,H,Tq]", detail::softmax_pair_flop, detail::latent_row_bytes},
    {"linear_attn", variant_family::linear, "linear_attn", true, true,
     "q, k [B,T,H,K], v [B,T,H,V]; h0 [N,H,K,V]; z0 [N,1,H,K] (normalize); cu_seqlens",
     "o [B,T,H,V], ht [N,H,K,V], zt [N,1,H,K]", detail::linear_flop, detail::state_bytes},
    {"simple_gla", variant_family::linear, "simple_gla", true, true,
     "q, k [B,T,H,K], v [B,T,H,V], g [B,T,H] or g_gamma [H]; h0; cu_seqlens",
     "o [B,T,H,V], ht [N,H,K,V]", detail::gated_linear_flop, detail::state_bytes},
    {"gla", variant_family::linear, "gla", true, true,
     "q, k [B,T,H,K], v [B,T,H,V], g [B,T,H,K]; h0; cu_seqlens", "o [B,T,H,V], ht [N,H,K,V]",
     detail::gated_linear_flop, detail::state_bytes},
    {"delta_rule", variant_family::delta, "delta_rule", true, true,
     "q, k [B,T,H,K], v [B,T,HV,V], beta [B,T,HV]; h0 [N,HV,K,V]; cu_seqlens",
     "o [B,T,HV,V], ht [N,HV,K,V]", detail::delta_flop, detail::state_bytes},
    {"gated_delta_rule", variant_family::delta, "gated_delta_rule", true, true,
     "q, k [B,T,H,K], v [B,T,HV,V], g [B,T,HV], beta [B,T,HV]; A_log, dt_bias; h0; cu_seqlens",
     "o [B,T,HV,V], ht [N,HV,K,V]", detail::gated_delta_flop, detail::state_bytes},
    {"kda", variant_family::delta, "kda", true, true,
     "q, k [B,T,H,K], v [B,T,HV,V], g [B,T,HV,K], beta [B,T,HV]; A_log, dt_bias [HV*K]; h0; "
     "cu_seqlens",
     "o [B,T,HV,V], ht [N,HV,K,V]", detail::gated_delta_flop, detail::state_bytes},
    {"conv1d", variant_family::delta, "short_conv1d", false, false,
     "x [B,T,D], w [D,W]; bias [D]; state_in [N,D,W-1]; cu_seqlens; state_indices [N]",
     "y [B,T,D], state_out [N,D,W-1]", detail::conv_flop, detail::conv_state_bytes},
};

/// The descriptor of `name`, or nullptr.
inline const variant_info* find_variant(std::string_view name) {
  for (const auto& v : variant_table)
    if (name == v.name) return &v;
  return nullptr;
}

/// The descriptor of `name`; an unknown name is an error.
inline const variant_info& variant_by_name(std::string_view name) {
  const variant_info* v = find_variant(name);
  if (!v) detail::fail("unknown variant '", std::string(name), "'");
  return *v;
}

/// Whether the variant implements `a` (automatic: always; the family picks one it has).
inline bool supports(const variant_info& v, algorithm a) {
  switch (a) {
    case algorithm::automatic:
      return v.has_chunk || v.has_recurrent;
    case algorithm::chunk:
      return v.has_chunk;
    case algorithm::recurrent:
      return v.has_recurrent;
  }
  return false;
}

namespace detail {
/// Refuses an algorithm the variant does not have (never substituted silently).
inline void require_algorithm(const char* fn, const variant_info& v, algorithm a) {
  if (!supports(v, a))
    fail(fn, ": option 'algo' algorithm::", algorithm_name(a), " is not available for ", v.name,
         " (it has: ", v.has_chunk ? "chunk, " : "", v.has_recurrent ? "recurrent, " : "",
         "automatic)");
}
}  // namespace detail

}  // namespace attnkit
