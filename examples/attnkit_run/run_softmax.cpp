// SPDX-License-Identifier: Apache-2.0
// attnkit-run variants `softmax` and `sliding_window`:
//   q [B,Tq,Hq,Dk], k [B,Tk,Hkv,Dk], v [B,Tk,Hkv,Dv], optional sinks [Hq], optional cu_seqlens_q/k
//   [N+1] (int32 or int64; then B = 1) -> o [B,Tq,Hq,Dv], lse [B,Hq,Tq] in the input dtype.
// With --cache contiguous|paged, k and v are first copied into a KV cache of that kind (varlen:
// one cache row per sequence) and the kernel attends from the cache. sliding_window runs the
// sliding-window variant (--window-left required; --n-sink N, --chunk C) and adds --cache ring:
// a ring of window_left + Tq + n_sink slots per sequence is fed k, v one token at a time (so it
// wraps around), then the Tq queries (the last positions) attend from it.
#include <limits>

#include "common.hpp"

namespace attnkit_run {
namespace {

struct softmax_options {
  attnkit::softmax_params p;
  bool sliding = false;     // the sliding_window variant
  bool zero_scale = false;  // --scale 0: every logit is 0
  std::string cache;        // "", "contiguous" or "paged"
  index_t page_size = 16;
};

softmax_options read_options(context& ctx, bool sliding) {
  auto& o = ctx.opts();
  softmax_options s;
  s.p.causal = o.flag("causal");
  // any window: one wider than the context is the same as none
  const long long max_i = std::numeric_limits<long long>::max();
  if (sliding && !o.has("window-left"))
    fail("option '--window-left' is required for variant 'sliding_window'");
  s.p.window_left = index_t(o.get_int("window-left", -1, sliding ? 0 : -1, max_i));
  s.p.window_right = index_t(o.get_int("window-right", -1, -1, max_i));
  const double scale = o.get_double("scale", 0.0);
  // attnkit reads scale 0 as "default"; an explicit 0 makes every logit 0, which zeroed queries
  // with scale 1 reproduce exactly.
  s.zero_scale = o.has("scale") && scale == 0.0;
  s.p.scale = s.zero_scale ? 1.0 : scale;
  s.p.softcap = o.get_double("softcap", 0.0);
  if (s.p.softcap < 0) fail("option '--softcap': must be >= 0 (0 = off), got ", s.p.softcap);
  s.sliding = sliding;
  if (sliding) {
    s.p.n_sink = index_t(o.get_int("n-sink", 0, 0, max_i));
    s.p.chunk = index_t(o.get_int("chunk", 0, 0, max_i));
  }
  s.cache = sliding ? o.get_choice("cache", {"contiguous", "paged", "ring"}, "")
                    : o.get_choice("cache", {"contiguous", "paged"}, "");
  if (s.cache == "ring" && !s.p.causal) fail("option '--cache ring' needs '--causal'");
  if (s.cache == "ring" && s.p.window_right > 0)
    fail("option '--cache ring' needs '--window-right' 0 or -1, got ", s.p.window_right);
  s.page_size = index_t(o.get_int("page-size", 16, 1, 1 << 20));
  if (o.has("page-size") && s.cache.empty()) fail("option '--page-size' needs '--cache paged'");
  s.p.exec = ctx.exec();
  return s;
}

/// Where the kernel reads k/v from: a contiguous cache or a paged one, with per-row lengths.
template <class T>
struct cache_store {
  std::vector<T> kbuf, vbuf;
  std::vector<std::int32_t> seqlens, table;
  attnkit::kv_cache<T> contiguous;
  attnkit::paged_kv_cache<T> paged;
  attnkit::ring_kv_cache<T> ring;
};

/// Restricts a ring cache to row n (a B = 1 cache for one sequence).
template <class T>
attnkit::ring_kv_cache<T> cache_row(const attnkit::ring_kv_cache<T>& c, index_t n) {
  return {slice(c.k, 0, n, n + 1), slice(c.v, 0, n, n + 1), slice(c.seqlens, 0, n, n + 1),
          c.n_sink};
}

/// A ring cache of window_left + max Tq + n_sink slots per sequence, fed each sequence's keys one
/// token at a time (cache_append, then the length advanced), so it wraps around.
template <class T>
void build_ring(cache_store<T>& cs, const softmax_options& so, const attnkit::cview<T, 4>& k,
                const attnkit::cview<T, 4>& v,
                const std::vector<attnkit::detail::softmax_seq>& seqs) {
  const index_t N = index_t(seqs.size()), Hkv = k.extent(2), Dk = k.extent(3), Dv = v.extent(3);
  index_t max_tq = 0;
  for (const auto& s : seqs) max_tq = std::max(max_tq, s.tq);
  if (so.p.window_left > std::numeric_limits<index_t>::max() / 4 - max_tq - so.p.n_sink)
    fail("option '--window-left' ", so.p.window_left, " is too large for a ring cache");
  const index_t cap = so.p.window_left + max_tq + so.p.n_sink;
  cs.kbuf.assign(checked_elems("k_cache", {N, cap, Hkv, Dk}), T(0));
  cs.vbuf.assign(checked_elems("v_cache", {N, cap, Hkv, Dv}), T(0));
  cs.seqlens.assign(std::size_t(N), 0);
  cs.ring = {attnkit::make_view(cs.kbuf.data(), N, cap, Hkv, Dk),
             attnkit::make_view(cs.vbuf.data(), N, cap, Hkv, Dv),
             attnkit::make_view(static_cast<const std::int32_t*>(cs.seqlens.data()), N),
             so.p.n_sink};
  for (index_t n = 0; n < N; ++n) {
    const auto& s = seqs[std::size_t(n)];
    const auto row = cache_row(cs.ring, n);
    for (index_t t = 0; t < s.tk; ++t) {
      const auto kt = slice(slice(k, 0, s.kb, s.kb + 1), 1, s.k0 + t, s.k0 + t + 1);
      const auto vt = slice(slice(v, 0, s.kb, s.kb + 1), 1, s.k0 + t, s.k0 + t + 1);
      attnkit::cache_append(row, kt, vt);
      ++cs.seqlens[std::size_t(n)];
    }
  }
}

/// Copies sequence n's keys (tokens [k0, k0+len) of batch row kb) into cache row n. Pages of a
/// paged cache are handed out interleaved across sequences and in reverse order (plus one spare
/// page that is never referenced), so the block table is exercised.
template <class T>
void build_cache(cache_store<T>& cs, const softmax_options& so, const attnkit::cview<T, 4>& k,
                 const attnkit::cview<T, 4>& v,
                 const std::vector<attnkit::detail::softmax_seq>& seqs) {
  const index_t N = index_t(seqs.size()), Hkv = k.extent(2), Dk = k.extent(3), Dv = v.extent(3);
  index_t max_len = 1;
  for (const auto& s : seqs) max_len = std::max(max_len, s.tk);
  for (const auto& s : seqs) cs.seqlens.push_back(std::int32_t(s.tk));
  const auto lens = attnkit::make_view(static_cast<const std::int32_t*>(cs.seqlens.data()), N);
  // row(n, t) -> (k row pointer, v row pointer) of cached token t of sequence n
  std::function<std::pair<T*, T*>(index_t, index_t)> row;
  if (so.cache == "contiguous") {
    cs.kbuf.assign(checked_elems("k_cache", {N, max_len, Hkv, Dk}), T(0));
    cs.vbuf.assign(checked_elems("v_cache", {N, max_len, Hkv, Dv}), T(0));
    cs.contiguous = {attnkit::make_view(cs.kbuf.data(), N, max_len, Hkv, Dk),
                     attnkit::make_view(cs.vbuf.data(), N, max_len, Hkv, Dv), lens};
    row = [&](index_t n, index_t t) {
      return std::make_pair(&cs.contiguous.k(n, t, 0, 0), &cs.contiguous.v(n, t, 0, 0));
    };
  } else {
    const index_t P = so.page_size, per_seq = (max_len + P - 1) / P, np = N * per_seq + 1;
    cs.kbuf.assign(checked_elems("k_pages", {np, P, Hkv, Dk}), T(0));
    cs.vbuf.assign(checked_elems("v_pages", {np, P, Hkv, Dv}), T(0));
    cs.table.resize(std::size_t(N * per_seq));
    for (index_t n = 0; n < N; ++n)
      for (index_t j = 0; j < per_seq; ++j)
        cs.table[std::size_t(n * per_seq + j)] = std::int32_t(np - 2 - (j * N + n));
    cs.paged = {attnkit::make_view(cs.kbuf.data(), np, P, Hkv, Dk),
                attnkit::make_view(cs.vbuf.data(), np, P, Hkv, Dv),
                attnkit::make_view(static_cast<const std::int32_t*>(cs.table.data()), N, per_seq),
                lens};
    row = [&, P](index_t n, index_t t) {
      const index_t pg = cs.paged.block_table(n, t / P);
      return std::make_pair(&cs.paged.k_pages(pg, t % P, 0, 0), &cs.paged.v_pages(pg, t % P, 0, 0));
    };
  }
  for (index_t n = 0; n < N; ++n) {
    const auto& s = seqs[std::size_t(n)];
    for (index_t t = 0; t < s.tk; ++t) {
      const auto [kr, vr] = row(n, t);
      for (index_t h = 0; h < Hkv; ++h) {
        for (index_t d = 0; d < Dk; ++d) kr[h * Dk + d] = k(s.kb, s.k0 + t, h, d);
        for (index_t d = 0; d < Dv; ++d) vr[h * Dv + d] = v(s.kb, s.k0 + t, h, d);
      }
    }
  }
}

template <class T, class Cache>
void attend_cache(const softmax_options& so, bool ref, const attnkit::cview<T, 4>& q,
                  const Cache& cache, const attnkit::tensor_view<T, 4>& o,
                  const attnkit::softmax_extras<T>& x) {
  if (so.sliding && ref)
    attnkit::reference::sliding_window_attention_kvcache(so.p, q, cache, o, x);
  else if (so.sliding)
    attnkit::sliding_window_attention_kvcache(so.p, q, cache, o, x);
  else if (ref)
    attnkit::reference::standard_attention_kvcache(so.p, q, cache, o, x);
  else
    attnkit::standard_attention_kvcache(so.p, q, cache, o, x);
}

template <class T, class Cache>
void attend_cache_seqs(const softmax_options& so, bool ref, const attnkit::cview<T, 4>& q,
                       const Cache& cache, const attnkit::tensor_view<T, 4>& o,
                       const attnkit::softmax_extras<T>& x,
                       const std::vector<attnkit::detail::softmax_seq>& seqs, bool varlen) {
  if (!varlen) {
    attend_cache(so, ref, q, cache, o, x);
    return;
  }
  // One varlen call: sequence n's packed query rows attend over cache row n.
  std::vector<std::int32_t> cu(1, 0);
  for (const auto& s : seqs) cu.push_back(std::int32_t(s.q0 + s.tq));
  attnkit::softmax_extras<T> xv = x;
  xv.cu_seqlens_q =
      attnkit::make_view(static_cast<const std::int32_t*>(cu.data()), index_t(cu.size()));
  attend_cache(so, ref, q, cache, o, xv);
}

/// cu_seqlens: at least one entry, starts at 0, non-decreasing, ends at the packed token count.
void check_offsets(const tensor<std::int32_t>& cu, index_t total, const char* what) {
  const auto& c = cu.buf;
  if (c.empty()) fail("'", cu.file, "': needs at least one entry (N+1 >= 1)");
  if (c[0] != 0) fail("'", cu.file, "': [0] must be 0, got ", c[0]);
  for (std::size_t i = 1; i < c.size(); ++i)
    if (c[i] < c[i - 1])
      fail("'", cu.file, "': must be non-decreasing, but [", i, "] = ", c[i], " < [", i - 1,
           "] = ", c[i - 1]);
  if (c.back() != total)
    fail("'", cu.file, "': last entry is ", c.back(), ", expected ", total, " (", what, ")");
}

template <class T>
void run_typed(context& ctx, const softmax_options& so) {
  const std::string qa = "B,Tq,Hq,Dk", ka = "B,Tk,Hkv,Dk", va = "B,Tk,Hkv,Dv";
  auto q = ctx.load<T>("q", qa);
  auto k = ctx.load<T>("k", ka);
  auto v = ctx.load<T>("v", va);
  auto sinks = ctx.load_optional<T>("sinks", "Hq");
  auto cu_q = ctx.load_index_optional("cu_seqlens_q");
  auto cu_k = ctx.load_index_optional("cu_seqlens_k");

  const index_t B = q.dim(0), Tq = q.dim(1), Hq = q.dim(2), Dk = q.dim(3);
  ctx.expect_dim(k, ka, 0, B, "B of q.npy");
  ctx.expect_dim(k, ka, 3, Dk, "Dk of q.npy");
  const index_t Tk = k.dim(1), Hkv = k.dim(2), Dv = v.dim(3);
  ctx.expect_dim(v, va, 0, B, "B of q.npy");
  ctx.expect_dim(v, va, 1, Tk, "Tk of k.npy");
  ctx.expect_dim(v, va, 2, Hkv, "Hkv of k.npy");
  if (Hkv < 1) fail("'", k.file, "': dim 2 (Hkv) must be >= 1");
  if (Hq < 1) fail("'", q.file, "': dim 2 (Hq) must be >= 1");
  if (Hq % Hkv != 0)
    fail("'", q.file, "': dim 2 (Hq) is ", Hq, ", not a multiple of Hkv = ", Hkv, " of k.npy");
  if (Dk < 1) fail("'", q.file, "': dim 3 (Dk) must be >= 1");
  if (Dv < 1) fail("'", v.file, "': dim 3 (Dv) must be >= 1");
  if (sinks.present()) ctx.expect_dim(sinks, "Hq", 0, Hq, "Hq of q.npy");
  if (cu_q.present() != cu_k.present())
    fail("'", (cu_q.present() ? cu_q.file : cu_k.file),
         "': varlen needs both cu_seqlens_q.npy and "
         "cu_seqlens_k.npy");
  const bool varlen = cu_q.present();
  if (varlen && B != 1)
    fail("'", q.file, "': dim 0 (B) is ", B, ", varlen (cu_seqlens) needs B = 1");
  if (varlen) {
    check_offsets(cu_q, Tq, "Tq = dim 1 of q.npy");
    check_offsets(cu_k, Tk, "Tk = dim 1 of k.npy");
    ctx.expect_dim(cu_k, "N+1", 0, cu_q.dim(0), "N+1 of cu_seqlens_q.npy");
  }

  if (so.zero_scale) std::fill(q.buf.begin(), q.buf.end(), T(0));
  std::vector<T> o(checked_elems("o", {B, Tq, Hq, Dv}), T(0)),
      lse(checked_elems("lse", {B, Hq, Tq}), T(0));
  const auto ov = attnkit::make_view(o.data(), B, Tq, Hq, Dv);
  attnkit::softmax_extras<T> x;
  x.lse = attnkit::make_view(lse.data(), B, Hq, Tq);
  if (sinks.present()) x.sinks = sinks.template cview<1>();
  if (varlen) {
    x.cu_seqlens_q = cu_q.template cview<1>();
    x.cu_seqlens_k = cu_k.template cview<1>();
  }
  const auto qv = q.template cview<4>();
  const auto kv = k.template cview<4>(), vv = v.template cview<4>();

  if (so.cache.empty()) {
    if (so.sliding && ctx.reference())
      attnkit::reference::sliding_window_attention(so.p, qv, kv, vv, ov, x);
    else if (so.sliding)
      attnkit::sliding_window_attention(so.p, qv, kv, vv, ov, x);
    else if (ctx.reference())
      attnkit::reference::standard_attention(so.p, qv, kv, vv, ov, x);
    else
      attnkit::standard_attention(so.p, qv, kv, vv, ov, x);
  } else {
    // Full validation (including the cu_seqlens contents) by the dense checker, which also yields
    // the per-sequence key ranges to load into the cache.
    const auto shape = attnkit::detail::check_dense("attnkit-run", so.p, qv, kv, vv, ov, x);
    cache_store<T> cs;
    if (so.cache == "ring")
      build_ring(cs, so, kv, vv, shape.seqs);
    else
      build_cache(cs, so, kv, vv, shape.seqs);
    attnkit::softmax_extras<T> xc = x;
    xc.cu_seqlens_q = {};
    xc.cu_seqlens_k = {};
    if (so.cache == "contiguous")
      attend_cache_seqs(so, ctx.reference(), qv, cs.contiguous, ov, xc, shape.seqs, varlen);
    else if (so.cache == "ring")
      attend_cache_seqs(so, ctx.reference(), qv, cs.ring, ov, xc, shape.seqs, varlen);
    else
      attend_cache_seqs(so, ctx.reference(), qv, cs.paged, ov, xc, shape.seqs, varlen);
  }
  ctx.save("o", std::move(o), {B, Tq, Hq, Dv});
  ctx.save("lse", std::move(lse), {B, Hq, Tq});
}

void run(context& ctx, bool sliding) {
  const auto so = read_options(ctx, sliding);
  dispatch_float(ctx, {"q", "k", "v", "sinks"},
                 [&](auto tag) { run_typed<decltype(tag)>(ctx, so); });
}

void run_softmax(context& ctx) { run(ctx, false); }
void run_sliding_window(context& ctx) { run(ctx, true); }

constexpr const char* kUsage =
    "q [B,Tq,Hq,Dk], k [B,Tk,Hkv,Dk], v [B,Tk,Hkv,Dv], optional sinks [Hq], cu_seqlens_q/k [N+1] "
    "-> o [B,Tq,Hq,Dv], lse [B,Hq,Tq]; options --causal, --window-left N, --window-right N "
    "(-1 = unbounded), --scale X, --softcap X, --cache contiguous|paged, --page-size P (16)";

const variant_registrar reg_softmax("softmax", &run_softmax, kUsage);
const variant_registrar reg_sliding(
    "sliding_window", &run_sliding_window,
    "as softmax, --window-left N (>= 0) required; --n-sink N (token sinks), --chunk C "
    "(chunked-local), --cache contiguous|paged|ring");

}  // namespace
}  // namespace attnkit_run
