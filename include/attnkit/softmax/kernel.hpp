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

/// Dense (or varlen) attention: standard_attention and sliding_window_attention.
template <class Arch, class Q, class K, class V, class O>
void dense_entry(const char* fn, const softmax_params& p, const tensor_view<Q, 4>& q,
                 const tensor_view<K, 4>& k, const tensor_view<V, 4>& v, const tensor_view<O, 4>& o,
                 const softmax_extras<accum_t<Q>>& x) {
  static_assert(std::is_same_v<std::remove_const_t<K>, std::remove_const_t<V>>,
                "attnkit: k and v must have the same element type");
  check_element_types<Q, K, V>();
  using A = accum_t<Q>;
  const auto sh = check_dense(fn, p, q, k, v, o, x);
  check_compute_range<A>(fn, p, sh);
  check_fast_layout<Q, K>(fn, q, o);
  require_inner_contiguous({fn, "k", "B,Tk,Hkv,Dk"}, k);
  require_inner_contiguous({fn, "v", "B,Tk,Hkv,Dv"}, v);
  using KV = std::remove_const_t<K>;
  const cview<KV, 4> kc(k), vc(v);
  run_softmax<A, Arch>(fn, p, sh, q, o, x,
                       [&](const softmax_seq& sq, index_t hk) { return rows_of(kc, vc, sq, hk); });
}

/// Attention over a KV cache (contiguous, paged or ring), appending k_new/v_new first.
template <class Arch, class Q, class Cache, class O, class KN, class VN>
void cache_entry(const char* fn, const softmax_params& p, const tensor_view<Q, 4>& q,
                 const Cache& cache, const tensor_view<O, 4>& o,
                 const softmax_extras<accum_t<Q>>& x, const tensor_view<KN, 4>& k_new,
                 const tensor_view<VN, 4>& v_new) {
  using KV = typename Cache::value_type;
  static_assert(std::is_same_v<std::remove_const_t<KN>, std::remove_const_t<KV>> &&
                    std::is_same_v<std::remove_const_t<VN>, std::remove_const_t<KV>>,
                "attnkit: k_new/v_new must have the cache's element type");
  check_element_types<Q, KV, KV>();
  using A = accum_t<Q>;
  const auto sh = check_cache(fn, p, q, cache, o, x, k_new, v_new);
  check_compute_range<A>(fn, p, sh);
  check_fast_layout<Q, KV>(fn, q, o);
  const auto [ck, cv] = cache_tensors(cache);
  const bool paged = std::is_same_v<Cache, paged_kv_cache<KV>>;
  require_inner_contiguous(
      {fn, paged ? "k_pages" : "k_cache", paged ? "num_pages,P,Hkv,Dk" : "B,capacity,Hkv,Dk"}, ck);
  require_inner_contiguous(
      {fn, paged ? "v_pages" : "v_cache", paged ? "num_pages,P,Hkv,Dv" : "B,capacity,Hkv,Dv"}, cv);
  append_rows(cache, sh, k_new, v_new, x.cu_seqlens_q.present());
  run_softmax<A, Arch>(fn, p, sh, q, o, x,
                       [&](const softmax_seq& sq, index_t hk) { return rows_of(cache, sq, hk); });
}

}  // namespace detail

/// Standard softmax attention (prefill, dense or varlen). See params.hpp for the contract.
///   q [B,Tq,Hq,Dk], k [B,Tk,Hkv,Dk], v [B,Tk,Hkv,Dv] -> o [B,Tq,Hq,Dv]; optional sinks [Hq],
///   lse [B,Hq,Tq], cu_seqlens_q/k [N+1] (B = 1). The last dimension of q, k, v, o needs stride 1.
template <class Q, class K, class V, class O, class Arch = simd::default_arch>
void standard_attention(const softmax_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                        tensor_view<V, 4> v, tensor_view<O, 4> o,
                        const softmax_extras<accum_t<Q>>& x = {}) {
  detail::dense_entry<Arch>("standard_attention", p, q, k, v, o, x);
}

/// Decode / chunked prefill over a KV cache (kv_cache, paged_kv_cache or ring_kv_cache). If
/// k_new/v_new [B,Tnew,Hkv,D] are given they are written into the cache at positions
/// cache_seqlens[b] ... first; then q [B,Tq,Hq,Dk] (the last Tq positions, bottom-right causal)
/// attends over cache_seqlens[b] + Tnew keys. cache_seqlens itself is not modified
/// (FlashAttention's flash_attn_with_kvcache contract): advance it yourself after appending.
/// Varlen batch (continuous batching: decode rows and prefill chunks mixed): x.cu_seqlens_q
/// [N+1] packs N sequences on q's token axis (B = 1, lse [1,Hq,total]); sequence n uses cache
/// row n, and its new tokens, if given, are its query tokens of k_new/v_new [1,total,Hkv,D].
template <class Q, class Cache, class O, class KN = const typename Cache::value_type,
          class Arch = simd::default_arch, class VN = KN>
void standard_attention_kvcache(const softmax_params& p, tensor_view<Q, 4> q, const Cache& cache,
                                tensor_view<O, 4> o, const softmax_extras<accum_t<Q>>& x = {},
                                tensor_view<KN, 4> k_new = {}, tensor_view<VN, 4> v_new = {}) {
  detail::cache_entry<Arch>("standard_attention_kvcache", p, q, cache, o, x, k_new, v_new);
}

/// Sliding-window attention: standard attention whose keys are bounded by a window
/// (p.window_left >= 0) or chunked-local attention (p.chunk > 0), optionally with token sinks
/// (p.n_sink). Work per query is bounded by the window: only key blocks that meet it (and the
/// sink block) are visited. Same tensors as standard_attention.
template <class Q, class K, class V, class O, class Arch = simd::default_arch>
void sliding_window_attention(const softmax_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                              tensor_view<V, 4> v, tensor_view<O, 4> o,
                              const softmax_extras<accum_t<Q>>& x = {}) {
  detail::require_window("sliding_window_attention", p);
  detail::dense_entry<Arch>("sliding_window_attention", p, q, k, v, o, x);
}

/// Sliding-window attention over a KV cache; with a ring_kv_cache memory stays window_left + Tq
/// + n_sink slots and decode reads the window and the sinks whatever the position.
template <class Q, class Cache, class O, class KN = const typename Cache::value_type,
          class Arch = simd::default_arch, class VN = KN>
void sliding_window_attention_kvcache(const softmax_params& p, tensor_view<Q, 4> q,
                                      const Cache& cache, tensor_view<O, 4> o,
                                      const softmax_extras<accum_t<Q>>& x = {},
                                      tensor_view<KN, 4> k_new = {},
                                      tensor_view<VN, 4> v_new = {}) {
  detail::require_window("sliding_window_attention_kvcache", p);
  detail::cache_entry<Arch>("sliding_window_attention_kvcache", p, q, cache, o, x, k_new, v_new);
}

}  // namespace attnkit

#include "../core/warnings_pop.hpp"
