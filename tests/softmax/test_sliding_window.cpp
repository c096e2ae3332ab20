// SPDX-License-Identifier: Apache-2.0
// The sliding_window variant: sliding_window_attention (dense) and
// sliding_window_attention_kvcache (contiguous, paged and ring caches), with token sinks and
// chunked-local windows, against the naive reference (float64 1e-10, float32 2e-5) on awkward
// shapes; identities (a window wider than the context == causal attention; the model-config
// window W shows exactly W keys); decode through a ring cache for 3x the window == the dense
// windowed prefill at every step; a prefill longer than the ring appended at once; errors.
#include <attnkit/softmax.hpp>
#include <support/test_util.hpp>

using namespace attnkit;
using namespace attnkit::test;
using Catch::Matchers::Contains;

namespace {

softmax_params window(bool causal, index_t left, index_t right, index_t n_sink = 0,
                      index_t chunk = 0) {
  softmax_params p;
  p.causal = causal;
  p.window_left = left;
  p.window_right = right;
  p.n_sink = n_sink;
  p.chunk = chunk;
  return p;
}

template <class E>
struct dense_case {
  using A = accum_t<E>;
  owned_tensor<E, 4> q, k, v;
  owned_tensor<A, 1> sinks;
  dense_case(index_t B, index_t Tq, index_t Tk, index_t Hq, index_t Hkv, index_t Dk, index_t Dv,
             std::uint64_t seed)
      : q({B, Tq, Hq, Dk}), k({B, Tk, Hkv, Dk}), v({B, Tk, Hkv, Dv}), sinks({Hq}) {
    std::mt19937_64 rng(seed);
    fill_normal(q.v(), rng);
    fill_normal(k.v(), rng);
    fill_normal(v.v(), rng);
    fill_normal(sinks.v(), rng);
  }
  /// o and lse of the fast kernel (or the reference).
  std::pair<owned_tensor<E, 4>, owned_tensor<A, 3>> run(const softmax_params& p, bool ref,
                                                        bool learned_sinks = false) const {
    const auto ext = q.view.extents();
    std::pair<owned_tensor<E, 4>, owned_tensor<A, 3>> r{
        owned_tensor<E, 4>({ext[0], ext[1], ext[2], v.view.extent(3)}),
        owned_tensor<A, 3>({ext[0], ext[2], ext[1]})};
    softmax_extras<A> x;
    x.lse = r.second.v();
    if (learned_sinks) x.sinks = sinks.cv();
    ATTNKIT_CALL(ref, sliding_window_attention, p, q.cv(), k.cv(), v.cv(), r.first.v(), x);
    return r;
  }
};

}  // namespace

TEMPLATE_TEST_CASE("sliding_window: kernel matches the reference on awkward shapes",
                   "[sliding_window]", double, float) {
  using E = TestType;
  const double tol = tolerance<E>();
  struct shape {
    index_t B, Tq, Tk, Hq, Hkv, Dk, Dv;
  };
  const shape shapes[] = {{1, 130, 130, 8, 2, 72, 72}, {2, 65, 65, 3, 1, 33, 20},
                          {1, 63, 200, 4, 4, 24, 24},  {1, 1, 130, 4, 2, 40, 40},
                          {1, 3, 300, 8, 2, 64, 64},   {1, 70, 40, 2, 1, 16, 16}};
  for (const shape& s : shapes) {
    const dense_case<E> in(s.B, s.Tq, s.Tk, s.Hq, s.Hkv, s.Dk, s.Dv,
                           std::uint64_t(s.Tq * 1000 + s.Tk));
    for (const index_t left : {0, 1, 5, 63, 64, 129})
      for (const index_t n_sink : {0, 1, 4})
        for (const index_t chunk : {0, 7, 64}) {
          for (const bool causal : {true, false}) {
            const index_t right = causal ? 0 : 3;
            const softmax_params p = window(causal, left, right, n_sink, chunk);
            INFO("Tq=" << s.Tq << " Tk=" << s.Tk << " left=" << left << " right=" << right
                       << " n_sink=" << n_sink << " chunk=" << chunk);
            const bool learned = n_sink == 1;  // token sinks combined with learned sink logits
            const auto fast = in.run(p, false, learned), ref = in.run(p, true, learned);
            ATTNKIT_CHECK_CLOSE(fast.first.cv(), ref.first.cv(), tol);
            ATTNKIT_CHECK_CLOSE(fast.second.cv(), ref.second.cv(), tol);
          }
        }
  }
}

TEMPLATE_TEST_CASE("sliding_window: chunked-local edges and a window wider than the context",
                   "[sliding_window]", double, float) {
  using E = TestType;
  const double tol = tolerance<E>();
  const dense_case<E> in(1, 130, 130, 4, 2, 24, 24, 42);
  // chunk C = 1 (each query sees only itself), C = T, T not a multiple of C; chunk alone
  for (const index_t chunk : {1, 130, 40}) {
    INFO("chunk=" << chunk);
    const softmax_params p = window(true, -1, -1, 0, chunk);
    const auto fast = in.run(p, false), ref = in.run(p, true);
    ATTNKIT_CHECK_CLOSE(fast.first.cv(), ref.first.cv(), tol);
  }
  // C = 1: o_i = v_i exactly as far as rounding goes
  {
    const auto r = in.run(window(true, -1, -1, 0, 1), false);
    for (index_t i = 0; i < 130; ++i)
      for (index_t h = 0; h < 4; ++h)
        CHECK(std::abs(to_compute<double>(r.first.view(0, i, h, 5)) -
                       to_compute<double>(in.v.view(0, i, h / 2, 5))) < 1e-5);
  }
  // a window wider than the context is causal standard attention (T - 1 and beyond)
  for (const index_t left : {129, 130, 100000}) {
    const auto w = in.run(window(true, left, 0), false);
    owned_tensor<E, 4> o({1, 130, 4, 24});
    softmax_params p;
    p.causal = true;
    standard_attention(p, in.q.cv(), in.k.cv(), in.v.cv(), o.v());
    check_identity<E>("wide window == causal", w.first.cv(), o.cv());
  }
  // negative control: W = T - 2 cuts the last row's first key
  const auto cut = in.run(window(true, 128, 0), false);
  owned_tensor<E, 4> o({1, 130, 4, 24});
  softmax_params pc;
  pc.causal = true;
  standard_attention(pc, in.q.cv(), in.k.cv(), in.v.cv(), o.v());
  check_differs<E>("window T-2", slice(cut.first.cv(), 1, 129, 130), slice(o.cv(), 1, 129, 130));
}

TEST_CASE("sliding_window: the model-config window W shows exactly W keys", "[sliding_window]") {
  // HF sliding_window = W, llama.cpp n_swa = W: FlashAttention window (W - 1, 0), causal
  const softmax_params p = sliding_window_of_model(3);
  CHECK(p.causal);
  CHECK(p.window_left == 2);
  CHECK(p.window_right == 0);
  // W = 1: each query sees only its own key, so o = v exactly
  const dense_case<double> in(1, 20, 20, 2, 2, 8, 8, 3);
  const auto r = in.run(sliding_window_of_model(1), false);
  for (index_t i = 0; i < 20; ++i)
    CHECK(std::abs(r.first.view(0, i, 1, 3) - in.v.view(0, i, 1, 3)) < 1e-14);
  // W keys visible: a key W positions back changes nothing, the key W - 1 back does
  const index_t W = 5, T = 20;
  auto poke = [&](index_t j) {
    dense_case<double> c(1, T, T, 1, 1, 8, 8, 9);
    const auto before = c.run(sliding_window_of_model(W), false);
    c.v.view(0, j, 0, 0) += 1.0;
    const auto after = c.run(sliding_window_of_model(W), false);
    return std::abs(after.first.view(0, T - 1, 0, 0) - before.first.view(0, T - 1, 0, 0));
  };
  CHECK(poke(T - 1 - W) == 0.0);
  CHECK(poke(T - W) > 1e-6);
  CHECK_THROWS_WITH(sliding_window_of_model(0), Contains("W must be >= 1"));
  // reclaimable pages: next query at 100, window (9, 0), 2 sinks, pages of 8: tokens [2, 91) are
  // out of reach, so pages [1, 11) (tokens 8 .. 87) can go
  softmax_params w = sliding_window_of_model(10);
  w.n_sink = 2;
  const page_range r2 = reclaimable_pages(w, 100, 8);
  CHECK(r2.first == 1);
  CHECK(r2.last == 11);
  CHECK(reclaimable_pages(w, 5, 8).last == reclaimable_pages(w, 5, 8).first);  // nothing yet
}

TEMPLATE_TEST_CASE("sliding_window: decode through a ring cache equals the dense window",
                   "[sliding_window][ring]", double, float) {
  using E = TestType;
  using A = accum_t<E>;
  const index_t W = 20, T = 3 * W + 7, Hq = 4, Hkv = 2, D = 24;
  for (const index_t n_sink : {0, 3}) {
    INFO("n_sink=" << n_sink);
    const softmax_params p = window(true, W, 0, n_sink);
    const dense_case<E> in(1, T, T, Hq, Hkv, D, D, std::uint64_t(77 + n_sink));
    const auto dense = in.run(p, false);
    // ring of W + 1 + n_sink slots (Tq = 1): its memory never grows
    const index_t cap = W + 1 + n_sink;
    owned_tensor<E, 4> kr({1, cap, Hkv, D}), vr({1, cap, Hkv, D});
    std::vector<std::int32_t> len = {0};
    const ring_kv_cache<E> ring{kr.v(), vr.v(),
                                make_view(static_cast<const std::int32_t*>(len.data()), 1), n_sink};
    double worst = 0;
    for (index_t t = 0; t < T; ++t) {
      owned_tensor<E, 4> o({1, 1, Hq, D});
      owned_tensor<A, 3> lse({1, Hq, 1});
      softmax_extras<A> x;
      x.lse = lse.v();
      sliding_window_attention_kvcache(p, slice(in.q.cv(), 1, t, t + 1), ring, o.v(), x,
                                       slice(in.k.cv(), 1, t, t + 1),
                                       slice(in.v.cv(), 1, t, t + 1));
      len[0] = std::int32_t(t + 1);  // the caller advances the length
      const auto e = compare(o.cv(), slice(dense.first.cv(), 1, t, t + 1));
      const auto el = compare(lse.cv(), slice(dense.second.cv(), 2, t, t + 1));
      CHECK(e.finite);
      worst = std::max(
          {worst, e.max_abs / std::max(1.0, e.max_ref), el.max_abs / std::max(1.0, el.max_ref)});
    }
    CHECK(worst <= (std::is_same_v<E, double> ? 1e-12 : 2e-5));
  }
}

TEMPLATE_TEST_CASE("sliding_window: a prefill longer than the ring, appended at once",
                   "[sliding_window][ring]", double, float) {
  using E = TestType;
  const index_t W = 16, Tq = 24, Hq = 4, Hkv = 1, D = 16;
  for (const index_t n_sink : {0, 2}) {
    const softmax_params p = window(true, W, 0, n_sink);
    // 70 tokens: 46 appended first (one cache_append, more than the ring holds), then 24 more
    // appended by the attention call, whose 24 queries are the last positions
    const index_t T = 70, T0 = T - Tq;
    const dense_case<E> in(1, T, T, Hq, Hkv, D, D, 5);
    const auto dense = in.run(p, false);
    const index_t cap = W + Tq + n_sink;
    owned_tensor<E, 4> kr({1, cap, Hkv, D}), vr({1, cap, Hkv, D});
    std::vector<std::int32_t> len = {0};
    const ring_kv_cache<E> ring{kr.v(), vr.v(),
                                make_view(static_cast<const std::int32_t*>(len.data()), 1), n_sink};
    cache_append(ring, slice(in.k.cv(), 1, 0, T0), slice(in.v.cv(), 1, 0, T0));
    len[0] = std::int32_t(T0);
    owned_tensor<E, 4> o({1, Tq, Hq, D});
    sliding_window_attention_kvcache(p, slice(in.q.cv(), 1, T0, T), ring, o.v(), {},
                                     slice(in.k.cv(), 1, T0, T), slice(in.v.cv(), 1, T0, T));
    ATTNKIT_CHECK_CLOSE(o.cv(), slice(dense.first.cv(), 1, T0, T), tolerance<E>());
    // the reference over the same ring agrees
    owned_tensor<E, 4> o_ref({1, Tq, Hq, D});
    reference::sliding_window_attention_kvcache(p, slice(in.q.cv(), 1, T0, T), ring, o_ref.v(), {},
                                                slice(in.k.cv(), 1, T0, T),
                                                slice(in.v.cv(), 1, T0, T));
    ATTNKIT_CHECK_CLOSE(o_ref.cv(), o.cv(), tolerance<E>());
  }
}

TEST_CASE("sliding_window: paged and contiguous caches with windows and sinks",
          "[sliding_window][kvcache]") {
  const index_t B = 2, cap = 200, Hq = 4, Hkv = 2, D = 16, P = 16;
  const std::vector<std::int32_t> lens = {150, 77};
  owned_tensor<float, 4> kc({B, cap, Hkv, D}), vc({B, cap, Hkv, D}), q({B, 2, Hq, D});
  std::mt19937_64 rng(8);
  for (index_t b = 0; b < B; ++b) {
    fill_normal(slice(slice(kc.v(), 0, b, b + 1), 1, 0, lens[std::size_t(b)]), rng);
    fill_normal(slice(slice(vc.v(), 0, b, b + 1), 1, 0, lens[std::size_t(b)]), rng);
  }
  fill_normal(q.v(), rng);
  paged_store<float> ps(B, cap, P, Hkv, D, D);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < lens[std::size_t(b)]; ++t)
      for (index_t h = 0; h < Hkv; ++h)
        for (index_t d = 0; d < D; ++d) {
          const index_t pg = ps.table[std::size_t(b * ps.max_pages + t / P)];
          ps.kp.view(pg, t % P, h, d) = kc.view(b, t, h, d);
          ps.vp.view(pg, t % P, h, d) = vc.view(b, t, h, d);
        }
  const auto lv = make_view(lens.data(), B);
  const softmax_params p = window(true, 30, 0, 4);
  owned_tensor<float, 4> o1({B, 2, Hq, D}), o2({B, 2, Hq, D}), o3({B, 2, Hq, D});
  sliding_window_attention_kvcache(p, q.cv(), kv_cache<float>{kc.v(), vc.v(), lv}, o1.v());
  sliding_window_attention_kvcache(p, q.cv(), ps.cache(lens), o2.v());
  reference::sliding_window_attention_kvcache(p, q.cv(), kv_cache<float>{kc.v(), vc.v(), lv},
                                              o3.v());
  ATTNKIT_CHECK_CLOSE(o1.cv(), o3.cv(), 2e-5);
  ATTNKIT_CHECK_CLOSE(o2.cv(), o3.cv(), 2e-5);
}

TEST_CASE("sliding_window: clear errors", "[sliding_window][errors]") {
  const dense_case<float> in(1, 8, 8, 2, 1, 8, 8, 1);
  owned_tensor<float, 4> o({1, 8, 2, 8});
  auto call = [&](const softmax_params& p) {
    sliding_window_attention(p, in.q.cv(), in.k.cv(), in.v.cv(), o.v());
  };
  CHECK_THROWS_WITH(call(window(true, -1, 0)), Contains("needs a bounded window"));
  CHECK_THROWS_WITH(call(window(true, 4, 0, -1)), Contains("option 'n_sink' must be >= 0"));
  CHECK_THROWS_WITH(call(window(true, 4, 0, 0, -2)), Contains("option 'chunk' must be >= 0"));
  CHECK_THROWS_WITH(call(window(true, -3, 0)), Contains("needs a bounded window"));
  // a ring too small for the window and the query count, or with fewer sink slots than n_sink
  owned_tensor<float, 4> kr({1, 10, 1, 8}), vr({1, 10, 1, 8});
  const std::vector<std::int32_t> len = {0};
  const ring_kv_cache<float> ring{kr.v(), vr.v(), make_view(len.data(), 1), 1};
  owned_tensor<float, 4> o1({1, 1, 2, 8});
  const auto q1 = slice(in.q.cv(), 1, 0, 1);
  const auto k1 = slice(in.k.cv(), 1, 0, 1), v1 = slice(in.v.cv(), 1, 0, 1);
  CHECK_THROWS_WITH(
      sliding_window_attention_kvcache(window(true, 9, 0, 1), q1, ring, o1.v(), {}, k1, v1),
      Contains("is too small for window_left = 9"));
  CHECK_NOTHROW(
      sliding_window_attention_kvcache(window(true, 8, 0, 1), q1, ring, o1.v(), {}, k1, v1));
  CHECK_THROWS_WITH(
      sliding_window_attention_kvcache(window(true, 4, 0, 2), q1, ring, o1.v(), {}, k1, v1),
      Contains("needs as many sink slots"));
  const ring_kv_cache<float> all_sinks{kr.v(), vr.v(), make_view(len.data(), 1), 10};
  CHECK_THROWS_WITH(
      sliding_window_attention_kvcache(window(true, 4, 0), q1, all_sinks, o1.v(), {}, k1, v1),
      Contains("needs more slots than its 10 sink slots"));
  CHECK_THROWS_WITH(standard_attention_kvcache(softmax_params{}, q1, ring, o1.v(), {}, k1, v1),
                    Contains("a ring cache needs a bounded window"));
}
