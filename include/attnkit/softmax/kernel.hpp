// SPDX-License-Identifier: Apache-2.0
// Fast standard softmax attention (FlashAttention-style tiling on the CPU): the entry points.
//
// Work item = (sequence, kv head, block of query positions, key split). Its rows are the G = Hq/Hkv
// query heads of that kv head times the query positions (GQA packing: each K/V row is read once
// for all G heads). For each block of kBlockN keys:
//   S = Q K^T            (packed micro-kernel when the item has >= kSmallRows rows, else row dots)
//   online softmax       (m, l, alpha per row; masked tiles skipped, partial tiles masked to -inf)
//   O = alpha O + P V
// Long key ranges are split (split-KV) and the partial states merged in a fixed order. The split
// depends only on the problem shape, never on the thread count, so results are reproducible.
// Stages: driver.hpp (plan, schedule, pack, run, merge); items: item.hpp (prefill_item,
// decode_item); micro-kernels and packing: tiles.hpp.
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <type_traits>

#include "../core/kv_cache.hpp"
#include "../core/simd.hpp"
#include "driver.hpp"
#include "params.hpp"

namespace attnkit {
namespace detail {

/// scale, softcap and the query scale scale / softcap are applied in compute type A.
template <class A>
void check_compute_range(const char* fn, const softmax_params& p, const softmax_shape& sh) {
  check_option_range<A>(fn, "scale", sh.scale);
  if (p.softcap > 0) {
    check_option_range<A>(fn, "softcap", p.softcap);
    check_option_range<A>(fn, "scale / softcap", sh.scale / p.softcap);
  }
}

template <class Q, class KV, class O>
void check_fast_layout(const char* fn, const tensor_view<Q, 4>& q, const tensor_view<O, 4>& o) {
  require_inner_contiguous({fn, "q", "B,Tq,Hq,Dk"}, q);
  require_inner_contiguous({fn, "o", "B,Tq,Hq,Dv"}, o);
}

}  // namespace detail

/// Standard softmax attention (prefill, dense or varlen). See params.hpp for the contract.
///   q [B,Tq,Hq,Dk], k [B,Tk,Hkv,Dk], v [B,Tk,Hkv,Dv] -> o [B,Tq,Hq,Dv]; optional sinks [Hq],
///   lse [B,Hq,Tq], cu_seqlens_q/k [N+1] (B = 1). The last dimension of q, k, v, o needs stride 1.
template <class Q, class K, class V, class O, class Arch = simd::default_arch>
void standard_attention(const softmax_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                        tensor_view<V, 4> v, tensor_view<O, 4> o,
                        const softmax_extras<accum_t<Q>>& x = {}) {
  static_assert(std::is_same_v<std::remove_const_t<K>, std::remove_const_t<V>>,
                "attnkit: k and v must have the same element type");
  detail::check_element_types<Q, K, V>();
  using A = accum_t<Q>;
  const char* fn = "standard_attention";
  const auto sh = detail::check_dense(fn, p, q, k, v, o, x);
  detail::check_compute_range<A>(fn, p, sh);
  detail::check_fast_layout<Q, K>(fn, q, o);
  detail::require_inner_contiguous({fn, "k", "B,Tk,Hkv,Dk"}, k);
  detail::require_inner_contiguous({fn, "v", "B,Tk,Hkv,Dv"}, v);
  using KV = std::remove_const_t<K>;
  const cview<KV, 4> kc(k), vc(v);
  detail::run_softmax<A, Arch>(fn, p, sh, q, o, x, [&](const detail::softmax_seq& sq, index_t hk) {
    return detail::rows_of(kc, vc, sq, hk);
  });
}

/// Decode / chunked prefill over a KV cache (kv_cache or paged_kv_cache). If k_new/v_new
/// [B,Tnew,Hkv,D] are given they are written into the cache at positions cache_seqlens[b] ...
/// first; then q [B,Tq,Hq,Dk] (the last Tq positions, bottom-right causal) attends over
/// cache_seqlens[b] + Tnew keys. cache_seqlens itself is not modified (FlashAttention's
/// flash_attn_with_kvcache contract): advance it yourself after appending.
template <class Q, class Cache, class O, class KN = const typename Cache::value_type,
          class Arch = simd::default_arch>
void standard_attention_kvcache(const softmax_params& p, tensor_view<Q, 4> q, const Cache& cache,
                                tensor_view<O, 4> o, const softmax_extras<accum_t<Q>>& x = {},
                                tensor_view<KN, 4> k_new = {}, tensor_view<KN, 4> v_new = {}) {
  using KV = typename Cache::value_type;
  static_assert(std::is_same_v<std::remove_const_t<KN>, std::remove_const_t<KV>>,
                "attnkit: k_new/v_new must have the cache's element type");
  detail::check_element_types<Q, KV, KV>();
  using A = accum_t<Q>;
  const char* fn = "standard_attention_kvcache";
  const auto sh = detail::check_cache(fn, p, q, cache, o, x, k_new, v_new);
  detail::check_compute_range<A>(fn, p, sh);
  detail::check_fast_layout<Q, KV>(fn, q, o);
  if constexpr (std::is_same_v<Cache, kv_cache<KV>>) {
    detail::require_inner_contiguous({fn, "k_cache", "B,capacity,Hkv,Dk"}, cache.k);
    detail::require_inner_contiguous({fn, "v_cache", "B,capacity,Hkv,Dv"}, cache.v);
  } else {
    detail::require_inner_contiguous({fn, "k_pages", "num_pages,P,Hkv,Dk"}, cache.k_pages);
    detail::require_inner_contiguous({fn, "v_pages", "num_pages,P,Hkv,Dv"}, cache.v_pages);
  }
  detail::append_rows(cache, sh, k_new, v_new);
  detail::run_softmax<A, Arch>(fn, p, sh, q, o, x, [&](const detail::softmax_seq& sq, index_t hk) {
    return detail::rows_of(cache, sq, hk);
  });
}

}  // namespace attnkit

#include "../core/warnings_pop.hpp"
