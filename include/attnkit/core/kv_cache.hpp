// SPDX-License-Identifier: Apache-2.0
// KV caches shared by the softmax-family variants: a contiguous cache (one row of `capacity`
// token slots per sequence) and a paged cache (FlashAttention's block_table form), their
// validation, per-(sequence, kv head) row accessors, and the append of new tokens.
//
//   contiguous: k [B, capacity, Hkv, Dk], v [B, capacity, Hkv, Dv], seqlens [B]
//   paged:      k_pages [num_pages, P, Hkv, Dk], v_pages [num_pages, P, Hkv, Dv],
//               block_table [B, max_pages], seqlens [B]; token t of sequence b is row t % P of
//               page block_table[b][t / P]
//   ring:       k [B, capacity, Hkv, Dk], v [B, capacity, Hkv, Dv], seqlens [B], n_sink: the
//               first n_sink slots keep tokens 0 .. n_sink-1 for good; token t >= n_sink lives in
//               slot n_sink + (t - n_sink) % (capacity - n_sink), so the ring holds the most
//               recent capacity - n_sink tokens (sliding-window attention: memory W + n_sink + Tq
//               slots whatever the generation length)
// seqlens[b] counts the tokens of row b (for the ring: every token ever appended, its position).
// Appending (cache_append, or k_new/v_new of an attention call) never advances it: the caller
// does, after the call (FlashAttention's flash_attn_with_kvcache contract). A varlen batch
// (cu_seqlens [N+1] over packed tokens) maps sequence n to cache row n.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "error.hpp"
#include "tensor_view.hpp"
#include "varlen.hpp"

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

/// A ring-buffer KV cache for sliding-window attention (see the layout above). Positions stay
/// absolute: seqlens[b] is the number of tokens appended so far, and a query at position p sees
/// the window of keys before p as if every token were still cached. The caller applies RoPE at
/// the absolute positions before appending.
template <class KV>
struct ring_kv_cache {
  using value_type = KV;
  tensor_view<KV, 4> k;            ///< [B, capacity, Hkv, Dk]
  tensor_view<KV, 4> v;            ///< [B, capacity, Hkv, Dv]
  cview<std::int32_t, 1> seqlens;  ///< [B] tokens appended so far (the next token's position)
  index_t n_sink = 0;              ///< leading slots that keep the first tokens (token sinks)
};

/// Slot of token t in a ring of `capacity` slots with n_sink sink slots (t >= 0).
constexpr index_t ring_slot(index_t t, index_t capacity, index_t n_sink) {
  return t < n_sink ? t : n_sink + (t - n_sink) % (capacity - n_sink);
}

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

/// Key/value rows of one (sequence, kv head) in a ring cache: token j is slot ring_slot(j). The
/// live tokens (the last L = capacity - n_sink) map without a division: j - n_sink - base, with
/// base a multiple of L just below them, lies in [0, 2L).
template <class KV>
struct ring_rows {
  KV* k;
  index_t ks, kd;
  KV* v;
  index_t vs, vd;
  index_t n_sink, L, base;
  index_t slot(index_t j) const {
    if (j < n_sink) return j;
    const index_t r = j - n_sink - base;
    if (r >= 0 && r < L) return n_sink + r;
    if (r >= L && r < 2 * L) return n_sink + r - L;
    return n_sink + (j - n_sink) % L;  // a token out of the window's reach
  }
  KV* k_row(index_t j) const { return k + slot(j) * ks; }
  KV* v_row(index_t j) const { return v + slot(j) * vs; }
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

template <class KV>
ring_rows<KV> cache_rows(const ring_kv_cache<KV>& c, index_t b, index_t hk) {
  const dense_rows<KV> d = dense_rows_of(c.k, c.v, b, 0, hk);
  const index_t L = c.k.extent(1) - c.n_sink, live0 = index_t(c.seqlens(b)) - c.n_sink - L;
  return {d.k, d.ks, d.kd, d.v, d.vs, d.vd, c.n_sink, L, live0 > 0 ? live0 / L * L : 0};
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
template <class KV>
std::pair<tensor_view<KV, 4>, tensor_view<KV, 4>> cache_tensors(const ring_kv_cache<KV>& c) {
  return {c.k, c.v};
}

/// What a validated cache holds: token slots per sequence, kv heads, key and value dims.
struct cache_dims {
  index_t capacity = 0, Hkv = 0, Dk = 0, Dv = 0;
};

/// Checks the k, v [B,capacity,Hkv,D] rows and seqlens [B] of a contiguous or ring cache.
/// `written`: the call appends tokens to it.
template <class KV>
cache_dims check_cache_rows(const char* fn, const tensor_view<KV, 4>& k,
                            const tensor_view<KV, 4>& v, const cview<std::int32_t, 1>& seqlens,
                            dim B, bool written) {
  check_tensor({fn, "k_cache", "B,capacity,Hkv,Dk"}, k, {B, -1, -1, -1});
  const index_t cap = k.extent(1), Hkv = k.extent(2);
  check_tensor({fn, "v_cache", "B,capacity,Hkv,Dv"}, v,
               {B, dim{cap, "capacity of k_cache"}, dim{Hkv, "Hkv of k_cache"}, -1});
  if (written) {
    check_no_self_overlap({fn, "k_cache", "B,capacity,Hkv,Dk"}, k);
    check_no_self_overlap({fn, "v_cache", "B,capacity,Hkv,Dv"}, v);
  }
  check_tensor({fn, "cache_seqlens", "B"}, seqlens, {B});
  return {cap, Hkv, k.extent(3), v.extent(3)};
}

/// Checks a contiguous cache for B sequences.
template <class KV>
cache_dims check_kv_cache(const char* fn, const kv_cache<KV>& c, dim B, bool written) {
  return check_cache_rows(fn, c.k, c.v, c.seqlens, B, written);
}

/// Checks a ring cache for B sequences (capacity: its slots; the window check is the caller's).
template <class KV>
cache_dims check_kv_cache(const char* fn, const ring_kv_cache<KV>& c, dim B, bool written) {
  const cache_dims cd = check_cache_rows(fn, c.k, c.v, c.seqlens, B, written);
  const index_t cap = cd.capacity;
  if (c.n_sink < 0) fail(fn, ": ring cache n_sink must be >= 0, got ", c.n_sink);
  if (cap <= c.n_sink)
    fail(fn, ": tensor 'k_cache' dim 1 (capacity): a ring cache needs more slots than its ",
         c.n_sink, " sink slots, got ", cap);
  return cd;
}

/// Checks a paged cache for B sequences; capacity = max_pages * P.
template <class KV>
cache_dims check_kv_cache(const char* fn, const paged_kv_cache<KV>& c, dim B, bool written) {
  check_tensor({fn, "k_pages", "num_pages,P,Hkv,Dk"}, c.k_pages, {-1, -1, -1, -1});
  const index_t np = c.k_pages.extent(0), P = c.k_pages.extent(1), Hkv = c.k_pages.extent(2);
  if (P < 1) fail(fn, ": tensor 'k_pages' dim 1 (P): page size must be >= 1, got ", P);
  check_tensor(
      {fn, "v_pages", "num_pages,P,Hkv,Dv"}, c.v_pages,
      {dim{np, "num_pages of k_pages"}, dim{P, "P of k_pages"}, dim{Hkv, "Hkv of k_pages"}, -1});
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
void check_cache_pages(const char*, const ring_kv_cache<KV>&, index_t, index_t) {}
template <class KV>
void check_cache_pages(const char* fn, const paged_kv_cache<KV>& c, index_t b, index_t tokens) {
  const index_t np = c.k_pages.extent(0), P = c.k_pages.extent(1);
  for (index_t i = 0; i < (tokens + P - 1) / P; ++i) {
    const index_t pg = c.block_table(b, i);
    if (pg < 0 || pg >= np)
      fail(fn, ": block_table[", b, "][", i, "] = ", pg, " is not a page index in [0, ", np, ")");
  }
}

/// The tokens t0 <= t < tn of an append at positions pos0 .. pos0 + tn - 1 that a ring cache
/// keeps: its sinks and the last capacity - n_sink (earlier ones would be overwritten in the same
/// append). Every token for the other caches.
template <class Cache>
bool kept_token(const Cache&, index_t, index_t, index_t) {
  return true;
}
template <class KV>
bool kept_token(const ring_kv_cache<KV>& c, index_t pos, index_t pos0, index_t tn) {
  return pos < c.n_sink || pos >= pos0 + tn - (c.k.extent(1) - c.n_sink);
}

/// Writes tn tokens of k_new/v_new [.,T,Hkv,D] (batch row nb, tokens t0 .. t0 + tn - 1) into the
/// cache of sequence b at positions pos0 .. pos0 + tn - 1 (converted to the cache's element type).
template <class Cache, class KN, class VN>
void write_cache_tokens(const Cache& c, index_t b, index_t pos0, const tensor_view<KN, 4>& k_new,
                        const tensor_view<VN, 4>& v_new, index_t nb, index_t t0, index_t tn) {
  const index_t Hkv = k_new.extent(2), Dk = k_new.extent(3), Dv = v_new.extent(3);
  for (index_t hk = 0; hk < Hkv; ++hk) {
    const auto rows = cache_rows(c, b, hk);
    for (index_t t = 0; t < tn; ++t) {
      if (!kept_token(c, pos0 + t, pos0, tn)) continue;
      auto* kd = rows.k_row(pos0 + t);
      auto* vd = rows.v_row(pos0 + t);
      for (index_t d = 0; d < Dk; ++d) kd[d * rows.kd] = k_new(nb, t0 + t, hk, d);
      for (index_t d = 0; d < Dv; ++d) vd[d * rows.vd] = v_new(nb, t0 + t, hk, d);
    }
  }
}

/// cache_append's checks and writes; cu (cu_seqlens) empty: batched.
template <class Cache, class KN, class VN>
void append_tokens(const char* fn, const Cache& cache, const tensor_view<KN, 4>& k_new,
                   const tensor_view<VN, 4>& v_new, const std::vector<index_t>& cu) {
  static_assert(std::is_same_v<std::remove_const_t<KN>, std::remove_const_t<VN>>,
                "attnkit: k_new and v_new must have the same element type");
  const bool varlen = !cu.empty();
  const index_t N = varlen ? index_t(cu.size()) - 1 : k_new.extent(0);
  const cache_dims cd =
      check_kv_cache(fn, cache, dim{N, varlen ? "N of cu_seqlens" : "B of k_new"}, true);
  check_tensor({fn, "k_new", "B,Tnew,Hkv,Dk"}, k_new,
               {varlen ? dim{1, "varlen (cu_seqlens)"} : dim{-1}, -1,
                dim{cd.Hkv, "Hkv of the cache"}, dim{cd.Dk, "Dk of the cache"}});
  check_tensor({fn, "v_new", "B,Tnew,Hkv,Dv"}, v_new,
               {dim{k_new.extent(0), "B of k_new"}, dim{k_new.extent(1), "Tnew of k_new"},
                dim{cd.Hkv, "Hkv of the cache"}, dim{cd.Dv, "Dv of the cache"}});
  const auto ct = cache_tensors(cache);
  check_disjoint(fn, "k_cache", ct.first, "k_new", k_new);
  check_disjoint(fn, "k_cache", ct.first, "v_new", v_new);
  check_disjoint(fn, "v_cache", ct.second, "k_new", k_new);
  check_disjoint(fn, "v_cache", ct.second, "v_new", v_new);
  constexpr bool ring = std::is_same_v<Cache, ring_kv_cache<typename Cache::value_type>>;
  const auto tokens = [&](index_t n) {
    return varlen ? cu[std::size_t(n) + 1] - cu[std::size_t(n)] : k_new.extent(1);
  };
  for (index_t n = 0; n < N; ++n) {
    const index_t len = cache.seqlens(n), tn = tokens(n);
    if (len < 0) fail(fn, ": cache_seqlens[", n, "] must be >= 0, got ", len);
    if (!ring && len + tn > cd.capacity)
      fail(fn, ": cache_seqlens[", n, "] + Tnew = ", len + tn, " exceeds the cache capacity ",
           cd.capacity);
    check_cache_pages(fn, cache, n, len + tn);
  }
  for (index_t n = 0; n < N; ++n)
    write_cache_tokens(cache, n, cache.seqlens(n), k_new, v_new, varlen ? 0 : n,
                       varlen ? cu[std::size_t(n)] : 0, tokens(n));
}

}  // namespace detail

/// Writes k_new/v_new [B,Tnew,Hkv,D] into the cache at positions seqlens[b] .. seqlens[b] + Tnew
/// - 1 without attending (vLLM's reshape_and_cache), converting to the cache's element type.
/// seqlens is not advanced: the caller does, after the call. A ring cache keeps its sinks and
/// the last capacity - n_sink tokens; the other caches must have room for every token.
template <class Cache, class KN, class VN>
void cache_append(const Cache& cache, tensor_view<KN, 4> k_new, tensor_view<VN, 4> v_new) {
  detail::append_tokens("cache_append", cache, k_new, v_new, {});
}

/// Varlen append: k_new/v_new [1,total,Hkv,D] packed by cu_seqlens [N+1]; sequence n's tokens
/// go to cache row n at positions seqlens[n] .. (an empty sequence writes nothing).
template <class Cache, class KN, class VN>
void cache_append(const Cache& cache, tensor_view<KN, 4> k_new, tensor_view<VN, 4> v_new,
                  cview<std::int32_t, 1> cu_seqlens) {
  const char* fn = "cache_append";
  detail::append_tokens(fn, cache, k_new, v_new,
                        detail::read_cu_seqlens(fn, "cu_seqlens", cu_seqlens, k_new.extent(1)));
}

}  // namespace attnkit
