// SPDX-License-Identifier: Apache-2.0
// Varlen batches over KV caches (continuous batching): one call with cu_seqlens_q mixing decode
// rows, prefill chunks, a fresh prompt and an empty sequence equals one call per sequence, for
// contiguous, paged and ring caches, with the new tokens appended in the call or beforehand by
// cache_append (batched and varlen); mixed constness of k_new / v_new; the errors.
#include <attnkit/softmax.hpp>
#include <support/test_util.hpp>

using namespace attnkit;
using namespace attnkit::test;
using Catch::Matchers::Contains;

namespace {

enum class kind { contiguous, paged, ring };
const char* name_of(kind c) {
  return c == kind::contiguous ? "contiguous" : c == kind::paged ? "paged" : "ring";
}

/// Cached tokens and query (= new) tokens of the batch: a decode row, a prefill chunk after a
/// prompt, an empty sequence, a fresh prompt, a second decode row.
const std::vector<std::int32_t> kCached = {37, 10, 5, 0, 64};
const std::vector<std::int32_t> kNew = {1, 23, 0, 17, 1};

/// N sequences' cache rows (any kind), filled with random cached tokens.
template <class T>
struct cache_store {
  kind c;
  index_t N, cap, Hkv, Dk, Dv;
  owned_tensor<T, 4> k, v;  // contiguous / ring rows
  paged_store<T> pages;
  cache_store(kind c_, index_t N_, index_t cap_, index_t P, index_t Hkv_, index_t Dk_, index_t Dv_,
              std::uint64_t seed)
      : c(c_),
        N(N_),
        cap(cap_),
        Hkv(Hkv_),
        Dk(Dk_),
        Dv(Dv_),
        k({N_, cap_, Hkv_, Dk_}),
        v({N_, cap_, Hkv_, Dv_}),
        pages(N_, cap_, P, Hkv_, Dk_, Dv_) {
    std::mt19937_64 rng(seed);
    fill_normal(k.v(), rng);
    fill_normal(v.v(), rng);
    fill_normal(pages.kp.v(), rng);
    fill_normal(pages.vp.v(), rng);
  }
  /// Calls f(cache) with the cache of rows [n0, n1) and their lengths.
  template <class F>
  void with_rows(index_t n0, index_t n1, const std::int32_t* lens, index_t n_sink, F f) const {
    const auto len = make_view(lens, n1 - n0);
    if (c == kind::paged)
      f(paged_kv_cache<T>{pages.kp.v(), pages.vp.v(), slice(pages.block_table(), 0, n0, n1), len});
    else if (c == kind::ring)
      f(ring_kv_cache<T>{slice(k.v(), 0, n0, n1), slice(v.v(), 0, n0, n1), len, n_sink});
    else
      f(kv_cache<T>{slice(k.v(), 0, n0, n1), slice(v.v(), 0, n0, n1), len});
  }
};

/// cu_seqlens of the new tokens.
std::vector<std::int32_t> offsets(const std::vector<std::int32_t>& n) {
  std::vector<std::int32_t> cu(1, 0);
  for (auto t : n) cu.push_back(cu.back() + t);
  return cu;
}

template <class T>
void check_mixed_batch(kind c, const softmax_params& p, bool sinks) {
  const index_t N = index_t(kCached.size()), Hq = 6, Hkv = 2, Dk = 20, Dv = 12;
  const index_t cap = c == kind::ring ? p.window_left + 24 + p.n_sink : 96;
  const auto cu = offsets(kNew);
  const index_t total = cu.back();
  owned_tensor<T, 4> q({1, total, Hq, Dk}), kn({1, total, Hkv, Dk}), vn({1, total, Hkv, Dv});
  std::mt19937_64 rng(5);
  fill_normal(q.v(), rng);
  fill_normal(kn.v(), rng);
  fill_normal(vn.v(), rng);
  owned_tensor<T, 1> sink({Hq});
  fill_normal(sink.v(), rng);
  // For the ring: the cached tokens were appended one by one earlier (positions kCached[n]).
  cache_store<T> one(c, N, cap, 5, Hkv, Dk, Dv, 9), sep(c, N, cap, 5, Hkv, Dk, Dv, 9),
      ref(c, N, cap, 5, Hkv, Dk, Dv, 9);
  owned_tensor<T, 4> o({1, total, Hq, Dv}), o_sep({1, total, Hq, Dv}), o_ref({1, total, Hq, Dv});
  owned_tensor<T, 3> lse({1, Hq, total}), lse_sep({1, Hq, total}), lse_ref({1, Hq, total});
  softmax_extras<T> x, xr;
  x.cu_seqlens_q = make_view(cu.data(), N + 1);
  x.lse = lse.v();
  xr.cu_seqlens_q = x.cu_seqlens_q;
  xr.lse = lse_ref.v();
  if (sinks) x.sinks = xr.sinks = sink.cv();
  one.with_rows(0, N, kCached.data(), p.n_sink, [&](const auto& cache) {
    if (p.window_left >= 0)
      sliding_window_attention_kvcache(p, q.cv(), cache, o.v(), x, kn.cv(), vn.cv());
    else
      standard_attention_kvcache(p, q.cv(), cache, o.v(), x, kn.cv(), vn.cv());
  });
  ref.with_rows(0, N, kCached.data(), p.n_sink, [&](const auto& cache) {
    reference::standard_attention_kvcache(p, q.cv(), cache, o_ref.v(), xr, kn.cv(), vn.cv());
  });
  for (index_t n = 0; n < N; ++n) {
    const index_t t0 = cu[std::size_t(n)], t1 = cu[std::size_t(n) + 1];
    softmax_extras<T> xs;
    owned_tensor<T, 3> l({1, Hq, t1 - t0});
    xs.lse = l.v();
    if (sinks) xs.sinks = sink.cv();
    sep.with_rows(n, n + 1, &kCached[std::size_t(n)], p.n_sink, [&](const auto& cache) {
      standard_attention_kvcache(p, slice(q.cv(), 1, t0, t1), cache, slice(o_sep.v(), 1, t0, t1),
                                 xs, slice(kn.cv(), 1, t0, t1), slice(vn.cv(), 1, t0, t1));
    });
    for (index_t h = 0; h < Hq; ++h)
      for (index_t t = t0; t < t1; ++t) lse_sep.view(0, h, t) = l.view(0, h, t - t0);
  }
  INFO("cache=" << name_of(c) << " window_left=" << p.window_left << " sinks=" << sinks);
  ATTNKIT_CHECK_CLOSE(o.cv(), o_sep.cv(), tolerance<T>());
  ATTNKIT_CHECK_CLOSE(lse.cv(), lse_sep.cv(), tolerance<T>());
  ATTNKIT_CHECK_CLOSE(o.cv(), o_ref.cv(), tolerance<T>());
  ATTNKIT_CHECK_CLOSE(lse.cv(), lse_ref.cv(), tolerance<T>());
  // The same tokens were appended to the same rows (the empty sequence's row untouched).
  CHECK(one.k.buf == sep.k.buf);
  CHECK(one.v.buf == sep.v.buf);
  CHECK(one.pages.kp.buf == sep.pages.kp.buf);
  CHECK(one.pages.vp.buf == sep.pages.vp.buf);
  const cache_store<T> fresh(c, N, cap, 5, Hkv, Dk, Dv, 9);
  for (index_t j = 0; j < cap; ++j)
    for (index_t d = 0; d < Dk; ++d) CHECK(one.k.view(2, j, 1, d) == fresh.k.view(2, j, 1, d));
}

}  // namespace

TEMPLATE_TEST_CASE("varlen cache: a mixed batch equals one call per sequence",
                   "[standard][kvcache][varlen]", double, float) {
  softmax_params p;
  p.causal = true;
  for (kind c : {kind::contiguous, kind::paged}) {
    check_mixed_batch<TestType>(c, p, false);
    check_mixed_batch<TestType>(c, p, true);
  }
  p.window_left = 8;  // sliding window over every cache, the ring included
  p.window_right = 0;
  for (kind c : {kind::contiguous, kind::paged, kind::ring})
    check_mixed_batch<TestType>(c, p, false);
  p.n_sink = 2;
  check_mixed_batch<TestType>(kind::ring, p, true);
}

TEMPLATE_TEST_CASE("varlen cache: append then attend equals attend with the new tokens",
                   "[standard][kvcache][varlen]", double, float) {
  const index_t N = index_t(kCached.size()), Hq = 4, Hkv = 4, D = 16, cap = 96;
  const auto cu = offsets(kNew);
  const index_t total = cu.back();
  owned_tensor<TestType, 4> q({1, total, Hq, D}), kn({1, total, Hkv, D}), vn({1, total, Hkv, D});
  std::mt19937_64 rng(6);
  fill_normal(q.v(), rng);
  fill_normal(kn.v(), rng);
  fill_normal(vn.v(), rng);
  softmax_params p;
  p.causal = true;
  softmax_extras<TestType> x;
  x.cu_seqlens_q = make_view(cu.data(), N + 1);
  for (kind c : {kind::contiguous, kind::paged}) {
    INFO("cache=" << name_of(c));
    cache_store<TestType> a(c, N, cap, 7, Hkv, D, D, 3), b(c, N, cap, 7, Hkv, D, D, 3);
    owned_tensor<TestType, 4> oa({1, total, Hq, D}), ob({1, total, Hq, D});
    a.with_rows(0, N, kCached.data(), 0, [&](const auto& cache) {
      standard_attention_kvcache(p, q.cv(), cache, oa.v(), x, kn.cv(), vn.cv());
    });
    std::vector<std::int32_t> lens = kCached;
    b.with_rows(0, N, lens.data(), 0,
                [&](const auto& cache) { cache_append(cache, kn.cv(), vn.cv(), x.cu_seqlens_q); });
    for (index_t n = 0; n < N; ++n) lens[std::size_t(n)] += kNew[std::size_t(n)];  // the caller
    b.with_rows(0, N, lens.data(), 0, [&](const auto& cache) {
      standard_attention_kvcache(p, q.cv(), cache, ob.v(), x);
    });
    CHECK(a.k.buf == b.k.buf);
    CHECK(a.pages.vp.buf == b.pages.vp.buf);
    ATTNKIT_CHECK_CLOSE(oa.cv(), ob.cv(), 0.0);
  }
  // Batched append of equal-length rows, then attend, equals attend with k_new/v_new.
  cache_store<TestType> a(kind::paged, 2, cap, 4, Hkv, D, D, 4),
      b(kind::paged, 2, cap, 4, Hkv, D, D, 4);
  owned_tensor<TestType, 4> q2({2, 3, Hq, D}), k2({2, 3, Hkv, D}), v2({2, 3, Hkv, D}),
      oa({2, 3, Hq, D}), ob({2, 3, Hq, D});
  fill_normal(q2.v(), rng);
  fill_normal(k2.v(), rng);
  fill_normal(v2.v(), rng);
  std::vector<std::int32_t> lens = {11, 40};
  a.with_rows(0, 2, lens.data(), 0, [&](const auto& cache) {
    standard_attention_kvcache(p, q2.cv(), cache, oa.v(), {}, k2.cv(), v2.cv());
  });
  b.with_rows(0, 2, lens.data(), 0,
              [&](const auto& cache) { cache_append(cache, k2.cv(), v2.cv()); });
  for (auto& l : lens) l += 3;
  b.with_rows(0, 2, lens.data(), 0,
              [&](const auto& cache) { standard_attention_kvcache(p, q2.cv(), cache, ob.v()); });
  ATTNKIT_CHECK_CLOSE(oa.cv(), ob.cv(), 0.0);
}

TEST_CASE("varlen cache: k_new and v_new of mixed constness", "[standard][kvcache]") {
  const index_t B = 2, T = 3, H = 2, D = 8;
  owned_tensor<float, 4> q({B, T, H, D}), kn({B, T, H, D}), vn({B, T, H, D}), o1({B, T, H, D}),
      o2({B, T, H, D});
  std::mt19937_64 rng(8);
  fill_normal(q.v(), rng);
  fill_normal(kn.v(), rng);
  fill_normal(vn.v(), rng);
  cache_store<float> a(kind::contiguous, B, 16, 4, H, D, D, 1),
      b(kind::contiguous, B, 16, 4, H, D, D, 1);
  const std::vector<std::int32_t> lens = {2, 5};
  a.with_rows(0, B, lens.data(), 0, [&](const auto& cache) {
    standard_attention_kvcache(softmax_params{}, q.cv(), cache, o1.v(), {}, kn.cv(), vn.v());
    cache_append(cache, kn.v(), vn.cv());
  });
  b.with_rows(0, B, lens.data(), 0, [&](const auto& cache) {
    standard_attention_kvcache(softmax_params{}, q.cv(), cache, o2.v(), {}, kn.v(), vn.cv());
    cache_append(cache, kn.cv(), vn.v());
  });
  ATTNKIT_CHECK_CLOSE(o1.cv(), o2.cv(), 0.0);
  CHECK(a.k.buf == b.k.buf);
}

TEST_CASE("varlen cache: bad inputs get clear errors", "[standard][kvcache][errors]") {
  const index_t N = 3, H = 2, D = 8;
  const std::vector<std::int32_t> cu = {0, 1, 4, 4}, lens = {3, 0, 2};
  owned_tensor<float, 4> q({1, 4, H, D}), kn({1, 4, H, D}), vn({1, 4, H, D}), o({1, 4, H, D});
  std::mt19937_64 rng(8);
  fill_normal(q.v(), rng);
  fill_normal(kn.v(), rng);
  fill_normal(vn.v(), rng);
  cache_store<float> s(kind::paged, N, 16, 4, H, D, D, 1);
  softmax_extras<float> x;
  x.cu_seqlens_q = make_view(cu.data(), N + 1);
  const paged_kv_cache<float> c{s.pages.kp.v(), s.pages.vp.v(), s.pages.block_table(),
                                make_view(lens.data(), N)};
  CHECK_NOTHROW(
      standard_attention_kvcache(softmax_params{}, q.cv(), c, o.v(), x, kn.cv(), vn.cv()));
  softmax_extras<float> xk = x;
  xk.cu_seqlens_k = x.cu_seqlens_q;
  CHECK_THROWS_WITH(standard_attention_kvcache(softmax_params{}, q.cv(), c, o.v(), xk),
                    Contains("'cu_seqlens_k' is not used with a KV cache"));
  // a cache of 2 rows for 3 sequences: the expected count names cu_seqlens_q
  const paged_kv_cache<float> c2{s.pages.kp.v(), s.pages.vp.v(),
                                 slice(s.pages.block_table(), 0, 0, 2), make_view(lens.data(), 2)};
  CHECK_THROWS_WITH(standard_attention_kvcache(softmax_params{}, q.cv(), c2, o.v(), x),
                    Contains("tensor 'block_table'") && Contains("expected 3 (N of cu_seqlens_q)"));
  // new tokens packed differently from the queries
  CHECK_THROWS_WITH(
      standard_attention_kvcache(softmax_params{}, q.cv(), c, o.v(), x, slice(kn.cv(), 1, 0, 3),
                                 slice(vn.cv(), 1, 0, 3)),
      Contains("tensor 'k_new'") && Contains("dim 1 (Tnew)") && Contains("total tokens of q"));
  CHECK_THROWS_WITH(standard_attention_kvcache(softmax_params{}, q.cv(), c, o.v(), x, kn.cv(),
                                               slice(vn.cv(), 3, 0, 7)),
                    Contains("tensor 'v_new'") && Contains("expected 8 (Dv of the cache)"));
  // cu_seqlens_q must cover q's tokens; varlen needs B = 1
  const std::vector<std::int32_t> short_cu = {0, 1, 2, 3};
  softmax_extras<float> xs;
  xs.cu_seqlens_q = make_view(short_cu.data(), N + 1);
  CHECK_THROWS_WITH(standard_attention_kvcache(softmax_params{}, q.cv(), c, o.v(), xs),
                    Contains("'cu_seqlens_q'[N] = 3 must equal the packed token count 4"));
  owned_tensor<float, 4> q2({2, 2, H, D}), o2({2, 2, H, D});
  CHECK_THROWS_WITH(standard_attention_kvcache(softmax_params{}, q2.cv(), c, o2.v(), x),
                    Contains("varlen (cu_seqlens_q) needs B = 1, got 2"));
  // a sequence that outgrows its pages
  const std::vector<std::int32_t> full = {3, 15, 2};
  const paged_kv_cache<float> c3{s.pages.kp.v(), s.pages.vp.v(), s.pages.block_table(),
                                 make_view(full.data(), N)};
  CHECK_THROWS_WITH(
      standard_attention_kvcache(softmax_params{}, q.cv(), c3, o.v(), x, kn.cv(), vn.cv()),
      Contains("cache_seqlens[1] + Tnew = 18 exceeds the cache capacity 16"));
  // varlen append: k_new must be one packed row; the cache rows follow cu_seqlens
  CHECK_THROWS_WITH(cache_append(c, q2.cv(), q2.cv(), x.cu_seqlens_q),
                    Contains("'cu_seqlens'[N] = 4 must equal the packed token count 2"));
  CHECK_THROWS_WITH(cache_append(c2, kn.cv(), vn.cv(), x.cu_seqlens_q),
                    Contains("expected 3 (N of cu_seqlens)"));
}
