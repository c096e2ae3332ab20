// SPDX-License-Identifier: Apache-2.0
// Standard softmax attention: parameters, optional tensors, KV caches, and the input validation
// shared by the fast kernel (kernel.hpp) and the naive reference (reference.hpp).
//
//   q [B,Tq,Hq,Dk], k [B,Tk,Hkv,Dk], v [B,Tk,Hkv,Dv] -> o [B,Tq,Hq,Dv], lse [B,Hq,Tq]
//   x_ij = scale * q_i . k_j            (then softcap: x = cap * tanh(x / cap))
//   o_i  = sum_{j visible} e^{x_ij} v_j / (e^{sink_h} + sum_{j visible} e^{x_ij})
//   lse_i = log sum_{j visible} e^{x_ij}  (natural log, sink excluded; -inf for an empty row)
// Query head h reads kv head h / (Hq / Hkv). Visibility: core/mask.hpp (bottom-right causal).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/mask.hpp"
#include "../core/tensor_view.hpp"
#include "../core/types.hpp"
#include "../core/varlen.hpp"

namespace attnkit {

/// Runtime options of the softmax family (FlashAttention names and defaults).
struct softmax_params {
  double scale = 0;           ///< logit scale; 0 means Dk^-0.5
  bool causal = false;        ///< bottom-right aligned causal mask
  index_t window_left = -1;   ///< inclusive left window (keys >= pos - left); -1 = unbounded
  index_t window_right = -1;  ///< inclusive right window (keys <= pos + right); -1 = unbounded
  double softcap = 0;         ///< x = cap * tanh(x / cap) when > 0; 0 = off
  int num_splits = 0;         ///< split-KV partitions per row: 0 = automatic, 1 = off
  executor* exec = nullptr;   ///< where work runs; nullptr = attnkit::default_executor()
};

/// Optional tensors of a softmax-family call. A is the compute type (float, or double).
template <class A>
struct softmax_extras {
  cview<A, 1> sinks;                    ///< [Hq] learned sink logits (not scaled)
  tensor_view<A, 3> lse;                ///< [B,Hq,Tq] output: natural-log LSE, sink excluded
  cview<std::int32_t, 1> cu_seqlens_q;  ///< [N+1] varlen query offsets (then B = 1)
  cview<std::int32_t, 1> cu_seqlens_k;  ///< [N+1] varlen key offsets (then B = 1)
};

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

/// One attention problem after validation: sequence n has tq query rows starting at token q0 of
/// batch row qb, and tk keys (starting at k0 of batch row kb for dense inputs).
struct softmax_seq {
  index_t qb, q0, tq, kb, k0, tk;
};

struct softmax_shape {
  index_t B = 0, Tq = 0, Hq = 0, Hkv = 0, Dk = 0, Dv = 0, group = 1;
  double scale = 1;
  std::vector<softmax_seq> seqs;
  mask_rule mask;
};

inline void check_softmax_params(const char* fn, const softmax_params& p) {
  if (!(p.scale == 0 || std::isfinite(p.scale)))
    fail(fn, ": option 'scale' must be finite, got ", p.scale);
  if (!(p.softcap >= 0 && std::isfinite(p.softcap)))
    fail(fn, ": option 'softcap' must be finite and >= 0, got ", p.softcap);
  if (p.window_left < -1) fail(fn, ": option 'window_left' must be >= -1, got ", p.window_left);
  if (p.window_right < -1) fail(fn, ": option 'window_right' must be >= -1, got ", p.window_right);
  if (p.num_splits < 0) fail(fn, ": option 'num_splits' must be >= 0, got ", p.num_splits);
}

/// Checks q and o (and the optional sinks/lse) and fills B, Tq, Hq, Dk, Dv, scale, mask.
template <class Q, class O, class A>
void check_queries(const char* fn, const softmax_params& p, const tensor_view<Q, 4>& q,
                   const tensor_view<O, 4>& o, const softmax_extras<A>& x, index_t Hkv, index_t Dk,
                   index_t Dv, softmax_shape& s) {
  check_softmax_params(fn, p);
  check_tensor({fn, "q", "B,Tq,Hq,Dk"}, q, {-1, -1, -1, Dk});
  s.B = q.extent(0);
  s.Tq = q.extent(1);
  s.Hq = q.extent(2);
  s.Hkv = Hkv;
  s.Dk = Dk;
  s.Dv = Dv;
  if (s.Hq < 1) fail(fn, ": tensor 'q' dim 2 (Hq): must be >= 1, got ", s.Hq);
  if (Hkv < 1) fail(fn, ": tensor 'k' dim 2 (Hkv): must be >= 1, got ", Hkv);
  if (s.Hq % Hkv != 0)
    fail(fn, ": tensor 'q' dim 2 (Hq): Hq = ", s.Hq, " is not a multiple of Hkv = ", Hkv,
         " (GQA needs Hq % Hkv == 0)");
  if (Dk < 1) fail(fn, ": tensor 'q' dim 3 (Dk): must be >= 1, got ", Dk);
  if (Dv < 1) fail(fn, ": tensor 'v' dim 3 (Dv): must be >= 1, got ", Dv);
  s.group = s.Hq / Hkv;
  check_tensor({fn, "o", "B,Tq,Hq,Dv"}, o, {s.B, s.Tq, s.Hq, Dv});
  check_no_self_overlap({fn, "o", "B,Tq,Hq,Dv"}, o);
  if (x.sinks.present()) check_tensor({fn, "sinks", "Hq"}, x.sinks, {s.Hq});
  if (x.lse.present()) {
    check_tensor({fn, "lse", "B,Hq,Tq"}, x.lse, {s.B, s.Hq, s.Tq});
    check_no_self_overlap({fn, "lse", "B,Hq,Tq"}, x.lse);
  }
  s.scale = p.scale != 0 ? p.scale : 1.0 / std::sqrt(double(Dk));
  s.mask = mask_rule{p.causal, p.window_left, p.window_right};
}

/// Validates a dense (or varlen) call and returns its problem description.
template <class Q, class K, class V, class O, class A>
softmax_shape check_dense(const char* fn, const softmax_params& p, const tensor_view<Q, 4>& q,
                          const tensor_view<K, 4>& k, const tensor_view<V, 4>& v,
                          const tensor_view<O, 4>& o, const softmax_extras<A>& x) {
  // q defines B and Dk; k and v are checked against it, then o against all three.
  check_tensor({fn, "q", "B,Tq,Hq,Dk"}, q, {-1, -1, -1, -1});
  check_tensor({fn, "k", "B,Tk,Hkv,Dk"}, k, {q.extent(0), -1, -1, q.extent(3)});
  check_tensor({fn, "v", "B,Tk,Hkv,Dv"}, v, {q.extent(0), k.extent(1), k.extent(2), -1});
  softmax_shape s;
  check_queries(fn, p, q, o, x, k.extent(2), q.extent(3), v.extent(3), s);
  const index_t Tk = k.extent(1);
  const bool vq = x.cu_seqlens_q.present(), vk = x.cu_seqlens_k.present();
  if (vq != vk)
    fail(fn, ": varlen needs both 'cu_seqlens_q' and 'cu_seqlens_k' (got only '",
         vq ? "cu_seqlens_q" : "cu_seqlens_k", "')");
  if (vq) {
    if (s.B != 1) fail(fn, ": tensor 'q' dim 0 (B): varlen (cu_seqlens) needs B = 1, got ", s.B);
    auto cq = read_cu_seqlens(fn, "cu_seqlens_q", x.cu_seqlens_q, s.Tq);
    auto ck = read_cu_seqlens(fn, "cu_seqlens_k", x.cu_seqlens_k, Tk);
    if (cq.size() != ck.size())
      fail(fn, ": tensor 'cu_seqlens_k' dim 0 (N+1): expected ", cq.size(),
           " (as cu_seqlens_q), got ", ck.size());
    for (std::size_t n = 0; n + 1 < cq.size(); ++n)
      s.seqs.push_back({0, cq[n], cq[n + 1] - cq[n], 0, ck[n], ck[n + 1] - ck[n]});
  } else {
    for (index_t b = 0; b < s.B; ++b) s.seqs.push_back({b, 0, s.Tq, b, 0, Tk});
  }
  return s;
}

/// Validates a KV-cache call (contiguous or paged); `capacity` is the per-row token capacity.
template <class Q, class O, class A, class KN>
softmax_shape check_cache_common(const char* fn, const softmax_params& p,
                                 const tensor_view<Q, 4>& q, const tensor_view<O, 4>& o,
                                 const softmax_extras<A>& x, index_t Hkv, index_t Dk, index_t Dv,
                                 const cview<std::int32_t, 1>& seqlens, index_t capacity,
                                 const tensor_view<KN, 4>& k_new, const tensor_view<KN, 4>& v_new) {
  softmax_shape s;
  check_queries(fn, p, q, o, x, Hkv, Dk, Dv, s);
  if (x.cu_seqlens_q.present() || x.cu_seqlens_k.present())
    fail(fn, ": cu_seqlens are not used with a KV cache (the cache has one row per sequence)");
  check_tensor({fn, "cache_seqlens", "B"}, seqlens, {s.B});
  if (k_new.present() != v_new.present()) fail(fn, ": appending needs both 'k_new' and 'v_new'");
  index_t tn = 0;
  if (k_new.present()) {
    check_tensor({fn, "k_new", "B,Tnew,Hkv,Dk"}, k_new, {s.B, -1, Hkv, Dk});
    tn = k_new.extent(1);
    check_tensor({fn, "v_new", "B,Tnew,Hkv,Dv"}, v_new, {s.B, tn, Hkv, Dv});
  }
  for (index_t b = 0; b < s.B; ++b) {
    const index_t len = seqlens(b);
    if (len < 0) fail(fn, ": cache_seqlens[", b, "] must be >= 0, got ", len);
    if (len + tn > capacity)
      fail(fn, ": cache_seqlens[", b, "] + Tnew = ", len + tn, " exceeds the cache capacity ",
           capacity);
    s.seqs.push_back({b, 0, s.Tq, b, 0, len + tn});
  }
  return s;
}

template <class Q, class O, class A, class KV, class KN>
softmax_shape check_cache(const char* fn, const softmax_params& p, const tensor_view<Q, 4>& q,
                          const kv_cache<KV>& c, const tensor_view<O, 4>& o,
                          const softmax_extras<A>& x, const tensor_view<KN, 4>& k_new,
                          const tensor_view<KN, 4>& v_new) {
  check_tensor({fn, "k_cache", "B,capacity,Hkv,Dk"}, c.k, {q.extent(0), -1, -1, -1});
  const index_t cap = c.k.extent(1), Hkv = c.k.extent(2);
  check_tensor({fn, "v_cache", "B,capacity,Hkv,Dv"}, c.v, {q.extent(0), cap, Hkv, -1});
  if (k_new.present()) {
    check_no_self_overlap({fn, "k_cache", "B,capacity,Hkv,Dk"}, c.k);
    check_no_self_overlap({fn, "v_cache", "B,capacity,Hkv,Dv"}, c.v);
  }
  return check_cache_common(fn, p, q, o, x, Hkv, c.k.extent(3), c.v.extent(3), c.seqlens, cap,
                            k_new, v_new);
}

template <class Q, class O, class A, class KV, class KN>
softmax_shape check_cache(const char* fn, const softmax_params& p, const tensor_view<Q, 4>& q,
                          const paged_kv_cache<KV>& c, const tensor_view<O, 4>& o,
                          const softmax_extras<A>& x, const tensor_view<KN, 4>& k_new,
                          const tensor_view<KN, 4>& v_new) {
  check_tensor({fn, "k_pages", "num_pages,P,Hkv,Dk"}, c.k_pages, {-1, -1, -1, -1});
  const index_t np = c.k_pages.extent(0), P = c.k_pages.extent(1), Hkv = c.k_pages.extent(2);
  if (P < 1) fail(fn, ": tensor 'k_pages' dim 1 (P): page size must be >= 1, got ", P);
  check_tensor({fn, "v_pages", "num_pages,P,Hkv,Dv"}, c.v_pages, {np, P, Hkv, -1});
  check_tensor({fn, "block_table", "B,max_pages"}, c.block_table, {q.extent(0), -1});
  if (k_new.present()) {
    check_no_self_overlap({fn, "k_pages", "num_pages,P,Hkv,Dk"}, c.k_pages);
    check_no_self_overlap({fn, "v_pages", "num_pages,P,Hkv,Dv"}, c.v_pages);
  }
  auto s = check_cache_common(fn, p, q, o, x, Hkv, c.k_pages.extent(3), c.v_pages.extent(3),
                              c.seqlens, c.block_table.extent(1) * P, k_new, v_new);
  for (const auto& sq : s.seqs) {
    const index_t pages = (sq.tk + P - 1) / P;
    for (index_t i = 0; i < pages; ++i) {
      const index_t pg = c.block_table(sq.qb, i);
      if (pg < 0 || pg >= np)
        fail(fn, ": block_table[", sq.qb, "][", i, "] = ", pg, " is not a page index in [0, ", np,
             ")");
    }
  }
  return s;
}

/// Key/value rows of one (sequence, kv head) in a dense tensor or contiguous cache. KV may be
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

template <class K, class V>
dense_rows<K> rows_of(const tensor_view<K, 4>& k, const tensor_view<V, 4>& v, const softmax_seq& s,
                      index_t hk) {
  static_assert(std::is_same_v<K, V>, "k and v must have the same element type");
  return {k.data() + s.kb * k.stride(0) + s.k0 * k.stride(1) + hk * k.stride(2),
          k.stride(1),
          k.stride(3),
          v.data() + s.kb * v.stride(0) + s.k0 * v.stride(1) + hk * v.stride(2),
          v.stride(1),
          v.stride(3)};
}
template <class KV>
dense_rows<KV> rows_of(const kv_cache<KV>& c, const softmax_seq& s, index_t hk) {
  return rows_of(c.k, c.v, s, hk);
}
template <class KV>
paged_rows<KV> rows_of(const paged_kv_cache<KV>& c, const softmax_seq& s, index_t hk) {
  return {c.k_pages.data() + hk * c.k_pages.stride(2),
          c.k_pages.stride(0),
          c.k_pages.stride(1),
          c.k_pages.stride(3),
          c.v_pages.data() + hk * c.v_pages.stride(2),
          c.v_pages.stride(0),
          c.v_pages.stride(1),
          c.v_pages.stride(3),
          c.block_table.data() + s.qb * c.block_table.stride(0),
          c.block_table.stride(1),
          c.k_pages.extent(1)};
}

/// Writes k_new/v_new [B,Tnew,Hkv,D] into the cache at positions seqlens[b] .. seqlens[b]+Tnew-1
/// (s comes from check_cache, so seqs[b].tk = seqlens[b] + Tnew).
template <class Cache, class KN>
void append_rows(const Cache& c, const softmax_shape& s, const tensor_view<KN, 4>& k_new,
                 const tensor_view<KN, 4>& v_new) {
  if (!k_new.present()) return;
  const index_t tn = k_new.extent(1);
  for (const auto& sq : s.seqs)
    for (index_t hk = 0; hk < s.Hkv; ++hk) {
      const auto rows = rows_of(c, sq, hk);
      for (index_t t = 0; t < tn; ++t) {
        const index_t j = sq.tk - tn + t;
        auto* kd = rows.k_row(j);
        auto* vd = rows.v_row(j);
        for (index_t d = 0; d < s.Dk; ++d) kd[d * rows.kd] = k_new(sq.qb, t, hk, d);
        for (index_t d = 0; d < s.Dv; ++d) vd[d * rows.vd] = v_new(sq.qb, t, hk, d);
      }
    }
}

}  // namespace detail
}  // namespace attnkit
