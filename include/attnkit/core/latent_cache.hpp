// SPDX-License-Identifier: Apache-2.0
// MLA latent KV caches (DeepSeek-V2/V3, Kimi K2): one row of Dc + Dr values per token, the
// compressed latent c_kv in [0, Dc) and the rotary key k_pe (shared by all heads) in [Dc, Dc + Dr):
//
//   contiguous: kv [B, capacity, Dc + Dr], seqlens [B]
//   paged:      kv_pages [num_pages, P, Dc + Dr], block_table [B, max_pages], seqlens [B]; token t
//               of sequence b is row t % P of page block_table[b][t / P] (FlashMLA's layout with
//               its single kv head dropped)
//
// The absorbed form attends with the whole rows as keys and their first Dc values as values: two
// views of the same memory (never a copy), as one kv_cache / paged_kv_cache with one kv head.
// seqlens counts the cached tokens of each row; appending never advances it (the caller does,
// after the call), as for kv_cache.
#pragma once

#include "warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "config.hpp"
#include "error.hpp"
#include "kv_cache.hpp"
#include "tensor_view.hpp"

namespace attnkit {

/// A contiguous latent cache: row b holds seqlens[b] tokens of [c_kv ; k_pe].
template <class KV>
struct latent_cache {
  using value_type = KV;
  tensor_view<KV, 3> kv;           ///< [B, capacity, Dc + Dr]
  cview<std::int32_t, 1> seqlens;  ///< [B] tokens already cached
  index_t dc = 0;                  ///< Dc: the latent's width (the rest of a row is k_pe)
};

/// A paged latent cache (block_table form, any page size).
template <class KV>
struct paged_latent_cache {
  using value_type = KV;
  tensor_view<KV, 3> kv_pages;         ///< [num_pages, P, Dc + Dr]
  cview<std::int32_t, 2> block_table;  ///< [B, max_pages_per_seq]
  cview<std::int32_t, 1> seqlens;      ///< [B] tokens already cached
  index_t dc = 0;                      ///< Dc: the latent's width (the rest of a row is k_pe)
};

namespace detail {

template <class KV>
const tensor_view<KV, 3>& latent_rows(const latent_cache<KV>& c) {
  return c.kv;
}
template <class KV>
const tensor_view<KV, 3>& latent_rows(const paged_latent_cache<KV>& c) {
  return c.kv_pages;
}

/// [X, Y, D] as [X, Y, 1, n]: the first n values of each row, one kv head.
template <class KV>
tensor_view<KV, 4> one_head(const tensor_view<KV, 3>& v, index_t n) {
  return tensor_view<KV, 4>(v.data(), {v.extent(0), v.extent(1), 1, n},
                            {v.stride(0), v.stride(1), v.extent(2) * v.stride(2), v.stride(2)});
}

/// Checks a latent cache's own layout (rows, Dc); returns Dc + Dr.
template <class Cache>
index_t check_latent(const char* fn, const Cache& c) {
  const auto& rows = latent_rows(c);
  const char* name = std::is_same_v<Cache, latent_cache<typename Cache::value_type>>
                         ? "tensor 'kv' [B,capacity,Dc+Dr]"
                         : "tensor 'kv_pages' [num_pages,P,Dc+Dr]";
  if (!rows.present()) fail(fn, ": ", name, " is required");
  if (rows.stride(2) != 1 && rows.extent(2) > 1)
    fail(fn, ": ", name, " dim 2 needs stride 1, got ", rows.stride(2));
  if (c.dc < 1 || c.dc > rows.extent(2))
    fail(fn, ": latent cache option 'dc' must be in [1, ", rows.extent(2), "] (Dc of ", name,
         "), got ", c.dc);
  return rows.extent(2);
}

/// The latent cache as a one-head KV cache: keys = whole rows [Dc + Dr], values = their first Dc.
template <class KV>
kv_cache<KV> as_kv_cache(const latent_cache<KV>& c) {
  return {one_head(c.kv, c.kv.extent(2)), one_head(c.kv, c.dc), c.seqlens};
}
template <class KV>
paged_kv_cache<KV> as_kv_cache(const paged_latent_cache<KV>& c) {
  return {one_head(c.kv_pages, c.kv_pages.extent(2)), one_head(c.kv_pages, c.dc), c.block_table,
          c.seqlens};
}

}  // namespace detail

/// Bytes one token takes in a latent cache of Dc + Dr values of type KV (per layer).
template <class KV>
constexpr std::size_t latent_bytes_per_token(index_t dc, index_t dr) {
  return std::size_t(dc + dr) * sizeof(KV);
}

/// Bytes one token takes in the equivalent multi-head cache (H heads of Dn + Dr keys and Dv
/// values), for comparison: DeepSeek-V3 has 576 latent values against 128 * (192 + 128).
template <class KV>
constexpr std::size_t mha_bytes_per_token(index_t h, index_t dn, index_t dr, index_t dv) {
  return std::size_t(h * (dn + dr + dv)) * sizeof(KV);
}

}  // namespace attnkit

#include "warnings_pop.hpp"
