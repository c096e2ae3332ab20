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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/kv_cache.hpp"
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
  index_t n_sink = 0;         ///< StreamingLLM token sinks: keys j < n_sink stay visible beside
                              ///< the window (still causal)
  index_t chunk = 0;          ///< chunked-local attention (FA3 attention_chunk): a query sees
                              ///< only keys of its chunk of `chunk` positions; 0 = off
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

/// The params of a model's sliding-window layer from its config value W (Hugging Face
/// `sliding_window`, llama.cpp `n_swa`): W keys are visible including the current token, so
/// FlashAttention's inclusive window is (W - 1, 0), causal. Passing W itself as window_left
/// shows W + 1 keys: the off-by-one that broke ports (Hugging Face passed (W, W), then
/// (W - 1, W - 1), to FlashAttention before settling on (W - 1, 0) in 2025; some early model
/// references let W + 1 keys through). Local layers of common models:
///   Mistral 7B v0.1   W = 4096 on every layer
///   Gemma 2           W = 4096, local : global 1 : 1, attention softcap 50
///   Gemma 3           W = 1024, local : global 5 : 1
///   gpt-oss           W = 128, banded : full 1 : 1, learned sinks (softmax_extras::sinks)
///   Llama 4           chunked-local, chunks of 8192 (p.chunk = 8192, no window)
/// StreamingLLM keeps the first tokens besides the window: p.n_sink (about 4).
inline softmax_params sliding_window_of_model(index_t W) {
  if (W < 1) detail::fail("sliding_window_of_model: the model's window W must be >= 1, got ", W);
  softmax_params p;
  p.causal = true;
  p.window_left = W - 1;
  p.window_right = 0;
  return p;
}

/// Pages [first, last) of one sequence's block table that no query at position >= next_pos can
/// see under p (causal): every token in them is past the window (and before the query's chunk)
/// and not a token sink. An engine may give those pages to other sequences; the entries may keep
/// pointing at them (their tokens are masked, never reaching an output).
struct page_range {
  index_t first = 0, last = 0;
};
inline page_range reclaimable_pages(const softmax_params& p, index_t next_pos, index_t page_size) {
  if (page_size < 1) detail::fail("reclaimable_pages: page_size must be >= 1, got ", page_size);
  index_t dead_end = 0;  // tokens [n_sink, dead_end) are out of every later query's reach
  if (p.window_left >= 0 && next_pos - p.window_left > 0) dead_end = next_pos - p.window_left;
  if (p.chunk > 0) dead_end = std::max(dead_end, next_pos / p.chunk * p.chunk);
  page_range r;
  r.first = (std::max<index_t>(p.n_sink, 0) + page_size - 1) / page_size;
  r.last = std::max(r.first, dead_end / page_size);
  return r;
}

namespace detail {

/// sliding_window: keys bounded by a window (window_left >= 0) or by chunks (chunk > 0).
inline void require_window(const char* fn, const softmax_params& p) {
  if (p.window_left < 0 && p.chunk <= 0)
    fail(fn,
         ": needs a bounded window: option 'window_left' must be >= 0 (or 'chunk' > 0), got "
         "window_left = ",
         p.window_left);
}

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
  if (p.n_sink < 0) fail(fn, ": option 'n_sink' must be >= 0, got ", p.n_sink);
  if (p.chunk < 0) fail(fn, ": option 'chunk' must be >= 0 (0 = off), got ", p.chunk);
}

/// Hq must be a multiple of the kv heads Hkv of tensor `kv` (dim 2): GQA. Blames the kv tensor,
/// checked before anything is compared with its Hkv.
inline void check_gqa(const char* fn, const char* kv, const char* kv_axes, index_t Hq,
                      index_t Hkv) {
  if (Hkv < 1) fail(fn, ": tensor '", kv, "' [", kv_axes, "] dim 2 (Hkv): must be >= 1, got ", Hkv);
  if (Hq >= 1 && Hq % Hkv != 0)
    fail(fn, ": tensor '", kv, "' [", kv_axes, "] dim 2 (Hkv): Hq = ", Hq,
         " (dim 2 of q) is not a multiple of Hkv = ", Hkv, " (GQA needs Hq % Hkv == 0)");
}

/// Checks q and o (and the optional sinks/lse) and fills B, Tq, Hq, Dk, Dv, scale, mask. `kv`
/// names where Hkv, Dk and Dv come from ("k" for dense inputs, else the cache).
template <class Q, class O, class A>
void check_queries(const char* fn, const softmax_params& p, const tensor_view<Q, 4>& q,
                   const tensor_view<O, 4>& o, const softmax_extras<A>& x, index_t Hkv, index_t Dk,
                   index_t Dv, softmax_shape& s, bool dense) {
  check_softmax_params(fn, p);
  check_tensor({fn, "q", "B,Tq,Hq,Dk"}, q,
               {-1, -1, -1, dim{Dk, dense ? "Dk of k" : "Dk of the cache"}});
  s.B = q.extent(0);
  s.Tq = q.extent(1);
  s.Hq = q.extent(2);
  s.Hkv = Hkv;
  s.Dk = Dk;
  s.Dv = Dv;
  if (s.Hq < 1) fail(fn, ": tensor 'q' dim 2 (Hq): must be >= 1, got ", s.Hq);
  if (Dk < 1) fail(fn, ": tensor 'q' dim 3 (Dk): must be >= 1, got ", Dk);
  if (Dv < 1)
    fail(fn, ": tensor '", dense ? "v" : "v_cache", "' dim 3 (Dv): must be >= 1, got ", Dv);
  s.group = s.Hq / Hkv;
  check_tensor({fn, "o", "B,Tq,Hq,Dv"}, o,
               {dim{s.B, "B of q"}, dim{s.Tq, "Tq of q"}, dim{s.Hq, "Hq of q"},
                dim{Dv, dense ? "Dv of v" : "Dv of the cache"}});
  check_no_self_overlap({fn, "o", "B,Tq,Hq,Dv"}, o);
  if (x.sinks.present()) check_tensor({fn, "sinks", "Hq"}, x.sinks, {dim{s.Hq, "Hq of q"}});
  if (x.lse.present()) {
    check_tensor({fn, "lse", "B,Hq,Tq"}, x.lse,
                 {dim{s.B, "B of q"}, dim{s.Hq, "Hq of q"}, dim{s.Tq, "Tq of q"}});
    check_no_self_overlap({fn, "lse", "B,Hq,Tq"}, x.lse);
  }
  s.scale = p.scale != 0 ? p.scale : 1.0 / std::sqrt(double(Dk));
  s.mask = mask_rule{p.causal, p.window_left, p.window_right, p.n_sink, p.chunk};
}

/// o and lse must not alias the inputs q, k, v (or the cache) nor each other.
template <class Q, class K, class V, class O, class A>
void check_softmax_outputs_disjoint(const char* fn, const tensor_view<Q, 4>& q,
                                    const tensor_view<K, 4>& k, const tensor_view<V, 4>& v,
                                    const tensor_view<O, 4>& o, const softmax_extras<A>& x) {
  check_disjoint(fn, "o", o, "q", q);
  check_disjoint(fn, "o", o, "k", k);
  check_disjoint(fn, "o", o, "v", v);
  check_disjoint(fn, "lse", x.lse, "q", q);
  check_disjoint(fn, "lse", x.lse, "k", k);
  check_disjoint(fn, "lse", x.lse, "v", v);
  check_disjoint(fn, "lse", x.lse, "o", o);
}

/// Validates a dense (or varlen) call and returns its problem description.
template <class Q, class K, class V, class O, class A>
softmax_shape check_dense(const char* fn, const softmax_params& p, const tensor_view<Q, 4>& q,
                          const tensor_view<K, 4>& k, const tensor_view<V, 4>& v,
                          const tensor_view<O, 4>& o, const softmax_extras<A>& x) {
  // q defines B and Dk; k and v are checked against it, then o against all three.
  check_tensor({fn, "q", "B,Tq,Hq,Dk"}, q, {-1, -1, -1, -1});
  check_tensor({fn, "k", "B,Tk,Hkv,Dk"}, k,
               {dim{q.extent(0), "B of q"}, -1, -1, dim{q.extent(3), "Dk of q"}});
  check_gqa(fn, "k", "B,Tk,Hkv,Dk", q.extent(2), k.extent(2));
  check_tensor(
      {fn, "v", "B,Tk,Hkv,Dv"}, v,
      {dim{q.extent(0), "B of q"}, dim{k.extent(1), "Tk of k"}, dim{k.extent(2), "Hkv of k"}, -1});
  softmax_shape s;
  check_queries(fn, p, q, o, x, k.extent(2), q.extent(3), v.extent(3), s, true);
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
  check_softmax_outputs_disjoint(fn, q, k, v, o, x);
  return s;
}

/// A contiguous or paged cache must hold every token of sequence b.
template <class Cache>
void check_cache_room(const char* fn, const softmax_params&, const Cache&, const cache_dims& cd,
                      index_t b, index_t tokens, index_t) {
  if (tokens > cd.capacity)
    fail(fn, ": cache_seqlens[", b, "] + Tnew = ", tokens, " exceeds the cache capacity ",
         cd.capacity);
}
/// A ring cache must hold every key the Tq queries can see: their window (the ring keeps the
/// last capacity - n_sink tokens) and their token sinks (kept in the sink slots).
template <class KV>
void check_cache_room(const char* fn, const softmax_params& p, const ring_kv_cache<KV>& c,
                      const cache_dims& cd, index_t, index_t, index_t Tq) {
  if (p.window_left < 0)
    fail(fn, ": a ring cache needs a bounded window (option 'window_left' >= 0, got ",
         p.window_left, ")");
  if (p.n_sink > c.n_sink)
    fail(fn, ": option 'n_sink' = ", p.n_sink,
         " needs as many sink slots in the ring cache, which has ", c.n_sink);
  if (p.window_left > cd.capacity - c.n_sink - Tq)
    fail(fn, ": tensor 'k_cache' dim 1 (capacity): a ring of ", cd.capacity, " slots (", c.n_sink,
         " sinks) is too small for window_left = ", p.window_left, " and Tq = ", Tq,
         " (it needs window_left + Tq + n_sink slots)");
}

/// Validates a KV-cache call (contiguous, paged or ring cache of core/kv_cache.hpp). Batched:
/// q [B,Tq,Hq,Dk] over cache rows 0..B-1, k_new/v_new [B,Tnew,Hkv,D] (optional, appended
/// first). Varlen (x.cu_seqlens_q [N+1], then B = 1): sequence n has the query tokens
/// cu_seqlens_q[n] .. cu_seqlens_q[n+1]-1 and cache row n; k_new/v_new [1,total,Hkv,D] are packed
/// the same way (each query token is a new token: chunked prefill and decode rows in one batch).
template <class Q, class O, class A, class Cache, class KN, class VN>
softmax_shape check_cache(const char* fn, const softmax_params& p, const tensor_view<Q, 4>& q,
                          const Cache& c, const tensor_view<O, 4>& o, const softmax_extras<A>& x,
                          const tensor_view<KN, 4>& k_new, const tensor_view<VN, 4>& v_new) {
  check_tensor({fn, "q", "B,Tq,Hq,Dk"}, q, {-1, -1, -1, -1});
  if (x.cu_seqlens_k.present())
    fail(fn,
         ": 'cu_seqlens_k' is not used with a KV cache (the keys of sequence n are its "
         "cache_seqlens[n] cached tokens and its new ones); a varlen batch gives 'cu_seqlens_q'");
  const bool varlen = x.cu_seqlens_q.present();
  std::vector<index_t> cq;
  if (varlen) {
    if (q.extent(0) != 1)
      fail(fn, ": tensor 'q' dim 0 (B): varlen (cu_seqlens_q) needs B = 1, got ", q.extent(0));
    cq = read_cu_seqlens(fn, "cu_seqlens_q", x.cu_seqlens_q, q.extent(1));
  }
  const index_t N = varlen ? index_t(cq.size()) - 1 : q.extent(0);
  const cache_dims cd =
      check_kv_cache(fn, c, dim{N, varlen ? "N of cu_seqlens_q" : "B of q"}, k_new.present());
  const bool paged = std::is_same_v<Cache, paged_kv_cache<typename Cache::value_type>>;
  check_gqa(fn, paged ? "k_pages" : "k_cache", paged ? "num_pages,P,Hkv,Dk" : "B,capacity,Hkv,Dk",
            q.extent(2), cd.Hkv);
  softmax_shape s;
  check_queries(fn, p, q, o, x, cd.Hkv, cd.Dk, cd.Dv, s, false);
  if (k_new.present() != v_new.present()) fail(fn, ": appending needs both 'k_new' and 'v_new'");
  if (k_new.present()) {
    const dim tn = varlen ? dim{s.Tq, "total tokens of q (varlen)"} : dim{-1};
    check_tensor(
        {fn, "k_new", "B,Tnew,Hkv,Dk"}, k_new,
        {dim{s.B, "B of q"}, tn, dim{cd.Hkv, "Hkv of the cache"}, dim{cd.Dk, "Dk of the cache"}});
    check_tensor({fn, "v_new", "B,Tnew,Hkv,Dv"}, v_new,
                 {dim{s.B, "B of q"}, dim{k_new.extent(1), "Tnew of k_new"},
                  dim{cd.Hkv, "Hkv of the cache"}, dim{cd.Dv, "Dv of the cache"}});
  }
  for (index_t n = 0; n < N; ++n) {
    const index_t q0 = varlen ? cq[std::size_t(n)] : 0;
    const index_t tq = varlen ? cq[std::size_t(n) + 1] - q0 : s.Tq;
    const index_t tn = !k_new.present() ? 0 : varlen ? tq : k_new.extent(1);
    const index_t len = c.seqlens(n);
    if (len < 0) fail(fn, ": cache_seqlens[", n, "] must be >= 0, got ", len);
    check_cache_room(fn, p, c, cd, n, len + tn, tq);
    check_cache_pages(fn, c, n, len + tn);
    s.seqs.push_back({varlen ? 0 : n, q0, tq, n, 0, len + tn});
  }
  const auto [ck, cv] = cache_tensors(c);
  check_softmax_outputs_disjoint(fn, q, ck, cv, o, x);
  return s;
}

/// Key/value rows of kv head hk of one sequence: dense inputs (from its key offset) or a cache.
template <class K, class V>
dense_rows<K> rows_of(const tensor_view<K, 4>& k, const tensor_view<V, 4>& v, const softmax_seq& s,
                      index_t hk) {
  return dense_rows_of(k, v, s.kb, s.k0, hk);
}
template <class Cache>
auto rows_of(const Cache& c, const softmax_seq& s, index_t hk) {
  return cache_rows(c, s.kb, hk);
}

/// Writes the new tokens of every sequence into its cache row at positions seqlens[n] ..
/// seqlens[n] + tnew - 1 (s comes from check_cache: seqs[n].tk = seqlens[n] + tnew). Batched:
/// row n of k_new/v_new; varlen: the sequence's query tokens of row 0.
template <class Cache, class KN, class VN>
void append_rows(const Cache& c, const softmax_shape& s, const tensor_view<KN, 4>& k_new,
                 const tensor_view<VN, 4>& v_new, bool varlen) {
  if (!k_new.present()) return;
  for (const auto& sq : s.seqs) {
    const index_t tn = varlen ? sq.tq : k_new.extent(1);
    write_cache_tokens(c, sq.kb, sq.tk - tn, k_new, v_new, sq.qb, varlen ? sq.q0 : 0, tn);
  }
}

}  // namespace detail
}  // namespace attnkit
