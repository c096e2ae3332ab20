// SPDX-License-Identifier: Apache-2.0
// KV caches shared by the softmax-family variants: a contiguous cache (one row of `capacity`
// token slots per sequence) and a paged cache (FlashAttention's block_table form), their
// validation, per-(sequence, kv head) row accessors, and the append of new tokens.
//
//   contiguous: k [B, capacity, Hkv, Dk], v [B, capacity, Hkv, Dv], seqlens [B]
//   paged:      k_pages [num_pages, P, Hkv, Dk], v_pages [num_pages, P, Hkv, Dv],
//               block_table [B, max_pages], seqlens [B]; token t of sequence b is row t % P of
//               page block_table[b][t / P]
// seqlens[b] counts the valid tokens of row b. Appending never advances it: the caller does,
// after the call (FlashAttention's flash_attn_with_kvcache contract).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "config.hpp"
#include "error.hpp"
#include "tensor_view.hpp"

namespace attnkit {

/// A contiguous KV cache: row b holds seqlens[b] valid tokens.
template <class KV>
struct kv_cache {
  using value_type = KV;
  tensor_view<KV, 4> k;            ///< [B, capacity, Hkv, Dk]
  tensor_view<KV, 4> v;            ///< [B, capacity, Hkv, Dv]
  cview<std::int32_t, 1> seqlens;  ///< [B] tokens already cached
};

/// A paged KV cache (FlashAttention block_table form, any page size): token t of sequence b lives
/// in page block_table[b][t / P], row t % P.
template <class KV>
struct paged_kv_cache {
  using value_type = KV;
  tensor_view<KV, 4> k_pages;          ///< [num_pages, P, Hkv, Dk]
  tensor_view<KV, 4> v_pages;          ///< [num_pages, P, Hkv, Dv]
  cview<std::int32_t, 2> block_table;  ///< [B, max_pages_per_seq]
  cview<std::int32_t, 1> seqlens;      ///< [B] tokens already cached
};

namespace detail {

/// Key/value rows of one (sequence, kv head) in dense tensors or a contiguous cache. KV may be
/// const. Row j of k starts at k + j*ks, elements step by kd (1 on the fast paths).
template <class KV>
struct dense_rows {
  KV* k;
  index_t ks, kd;
  KV* v;
  index_t vs, vd;
  KV* k_row(index_t j) const { return k + j * ks; }
  KV* v_row(index_t j) const { return v + j * vs; }
};

/// Key/value rows of one (sequence, kv head) in a paged cache: token j is row j % P of page
/// table[j / P].
template <class KV>
struct paged_rows {
  KV* k;
  index_t k_page, ks, kd;
  KV* v;
  index_t v_page, vs, vd;
  const std::int32_t* table;
  index_t table_s, P;
  KV* k_row(index_t j) const {
    return k + index_t(table[(j / P) * table_s]) * k_page + (j % P) * ks;
  }
  KV* v_row(index_t j) const {
    return v + index_t(table[(j / P) * table_s]) * v_page + (j % P) * vs;
  }
};

/// Rows of kv head hk of batch row b, starting at token t0, in dense k [B,T,Hkv,Dk], v
/// [B,T,Hkv,Dv].
template <class K, class V>
dense_rows<K> dense_rows_of(const tensor_view<K, 4>& k, const tensor_view<V, 4>& v, index_t b,
                            index_t t0, index_t hk) {
  static_assert(std::is_same_v<K, V>, "k and v must have the same element type");
  return {
      k.data() + b * k.stride(0) + t0 * k.stride(1) + hk * k.stride(2), k.stride(1), k.stride(3),
      v.data() + b * v.stride(0) + t0 * v.stride(1) + hk * v.stride(2), v.stride(1), v.stride(3)};
}
template <class KV>
dense_rows<KV> cache_rows(const kv_cache<KV>& c, index_t b, index_t hk) {
  return dense_rows_of(c.k, c.v, b, 0, hk);
}
template <class KV>
paged_rows<KV> cache_rows(const paged_kv_cache<KV>& c, index_t b, index_t hk) {
  return {c.k_pages.data() + hk * c.k_pages.stride(2),
          c.k_pages.stride(0),
          c.k_pages.stride(1),
          c.k_pages.stride(3),
          c.v_pages.data() + hk * c.v_pages.stride(2),
          c.v_pages.stride(0),
          c.v_pages.stride(1),
          c.v_pages.stride(3),
          c.block_table.data() + b * c.block_table.stride(0),
          c.block_table.stride(1),
          c.k_pages.extent(1)};
}

/// The K and V storage of a cache (rows or pages), for aliasing checks.
template <class KV>
std::pair<tensor_view<KV, 4>, tensor_view<KV, 4>> cache_tensors(const kv_cache<KV>& c) {
  return {c.k, c.v};
}
template <class KV>
std::pair<tensor_view<KV, 4>, tensor_view<KV, 4>> cache_tensors(const paged_kv_cache<KV>& c) {
  return {c.k_pages, c.v_pages};
}

/// What a validated cache holds: token slots per sequence, kv heads, key and value dims.
struct cache_dims {
  index_t capacity = 0, Hkv = 0, Dk = 0, Dv = 0;
};

/// Checks a contiguous cache for B sequences. `written`: the call appends tokens to it.
template <class KV>
cache_dims check_kv_cache(const char* fn, const kv_cache<KV>& c, index_t B, bool written) {
  check_tensor({fn, "k_cache", "B,capacity,Hkv,Dk"}, c.k, {B, -1, -1, -1});
  const index_t cap = c.k.extent(1), Hkv = c.k.extent(2);
  check_tensor({fn, "v_cache", "B,capacity,Hkv,Dv"}, c.v, {B, cap, Hkv, -1});
  if (written) {
    check_no_self_overlap({fn, "k_cache", "B,capacity,Hkv,Dk"}, c.k);
    check_no_self_overlap({fn, "v_cache", "B,capacity,Hkv,Dv"}, c.v);
  }
  check_tensor({fn, "cache_seqlens", "B"}, c.seqlens, {B});
  return {cap, Hkv, c.k.extent(3), c.v.extent(3)};
}

/// Checks a paged cache for B sequences; capacity = max_pages * P.
template <class KV>
cache_dims check_kv_cache(const char* fn, const paged_kv_cache<KV>& c, index_t B, bool written) {
  check_tensor({fn, "k_pages", "num_pages,P,Hkv,Dk"}, c.k_pages, {-1, -1, -1, -1});
  const index_t np = c.k_pages.extent(0), P = c.k_pages.extent(1), Hkv = c.k_pages.extent(2);
  if (P < 1) fail(fn, ": tensor 'k_pages' dim 1 (P): page size must be >= 1, got ", P);
  check_tensor({fn, "v_pages", "num_pages,P,Hkv,Dv"}, c.v_pages, {np, P, Hkv, -1});
  check_tensor({fn, "block_table", "B,max_pages"}, c.block_table, {B, -1});
  if (written) {
    check_no_self_overlap({fn, "k_pages", "num_pages,P,Hkv,Dk"}, c.k_pages);
    check_no_self_overlap({fn, "v_pages", "num_pages,P,Hkv,Dv"}, c.v_pages);
  }
  check_tensor({fn, "cache_seqlens", "B"}, c.seqlens, {B});
  return {c.block_table.extent(1) * P, Hkv, c.k_pages.extent(3), c.v_pages.extent(3)};
}

/// Every page that tokens [0, tokens) of sequence b live in must be a page of the cache.
template <class KV>
void check_cache_pages(const char*, const kv_cache<KV>&, index_t, index_t) {}
template <class KV>
void check_cache_pages(const char* fn, const paged_kv_cache<KV>& c, index_t b, index_t tokens) {
  const index_t np = c.k_pages.extent(0), P = c.k_pages.extent(1);
  for (index_t i = 0; i < (tokens + P - 1) / P; ++i) {
    const index_t pg = c.block_table(b, i);
    if (pg < 0 || pg >= np)
      fail(fn, ": block_table[", b, "][", i, "] = ", pg, " is not a page index in [0, ", np, ")");
  }
}

/// Writes tokens [0, Tnew) of k_new/v_new [B,Tnew,Hkv,D] row b into the cache of sequence b at
/// positions pos0 .. pos0 + Tnew - 1 (converted to the cache's element type).
template <class Cache, class KN, class VN>
void write_cache_tokens(const Cache& c, index_t b, index_t pos0, const tensor_view<KN, 4>& k_new,
                        const tensor_view<VN, 4>& v_new) {
  const index_t tn = k_new.extent(1), Hkv = k_new.extent(2), Dk = k_new.extent(3),
                Dv = v_new.extent(3);
  for (index_t hk = 0; hk < Hkv; ++hk) {
    const auto rows = cache_rows(c, b, hk);
    for (index_t t = 0; t < tn; ++t) {
      auto* kd = rows.k_row(pos0 + t);
      auto* vd = rows.v_row(pos0 + t);
      for (index_t d = 0; d < Dk; ++d) kd[d * rows.kd] = k_new(b, t, hk, d);
      for (index_t d = 0; d < Dv; ++d) vd[d * rows.vd] = v_new(b, t, hk, d);
    }
  }
}

}  // namespace detail
}  // namespace attnkit
