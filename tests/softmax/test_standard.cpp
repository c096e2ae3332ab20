// SPDX-License-Identifier: Apache-2.0
// Standard attention: the fast kernel against the naive reference (float64 tight, float32, 16-bit
// storage) on awkward shapes and layouts, plus metamorphic checks (merge, split-KV, decode vs
// prefill, paged vs contiguous, thread count) and every input error.
#include <support/test_util.hpp>

using namespace attnkit;
using namespace attnkit::test;

namespace {

struct problem_spec {
  index_t B = 1, Tq = 1, Tk = 1, Hq = 1, Hkv = 1, Dk = 8, Dv = 8;
  softmax_params p;
  bool sinks = false;
  index_t pad = 0;          // padding after each row (strided views)
  bool head_first = false;  // [B,H,T,D] memory order
};

/// A problem of shape B, Tq, Tk, Hq, Hkv, Dk, Dv (default options).
problem_spec spec(index_t B, index_t Tq, index_t Tk, index_t Hq, index_t Hkv, index_t Dk,
                  index_t Dv) {
  problem_spec sp;
  sp.B = B;
  sp.Tq = Tq;
  sp.Tk = Tk;
  sp.Hq = Hq;
  sp.Hkv = Hkv;
  sp.Dk = Dk;
  sp.Dv = Dv;
  return sp;
}

template <class T>
struct problem {
  problem_spec sp;
  owned_tensor<T, 4> q, k, v;
  owned_tensor<accum_t<T>, 1> sinks;
  problem(const problem_spec& s, std::uint64_t seed) : sp(s) {
    const std::array<std::size_t, 4> order = s.head_first ? std::array<std::size_t, 4>{0, 2, 1, 3}
                                                          : std::array<std::size_t, 4>{0, 1, 2, 3};
    q = owned_tensor<T, 4>({s.B, s.Tq, s.Hq, s.Dk}, s.pad, order);
    k = owned_tensor<T, 4>({s.B, s.Tk, s.Hkv, s.Dk}, s.pad, order);
    v = owned_tensor<T, 4>({s.B, s.Tk, s.Hkv, s.Dv}, s.pad, order);
    sinks = owned_tensor<accum_t<T>, 1>({s.Hq});
    std::mt19937_64 rng(seed);
    test::fill_normal(q.v(), rng);
    test::fill_normal(k.v(), rng);
    test::fill_normal(v.v(), rng);
    test::fill_normal(sinks.v(), rng, 1.0, 0.5);
  }
  owned_tensor<T, 4> make_o() const {
    const std::array<std::size_t, 4> order = sp.head_first ? std::array<std::size_t, 4>{0, 2, 1, 3}
                                                           : std::array<std::size_t, 4>{0, 1, 2, 3};
    return owned_tensor<T, 4>({sp.B, sp.Tq, sp.Hq, sp.Dv}, sp.pad, order);
  }
  owned_tensor<accum_t<T>, 3> make_lse() const {
    return owned_tensor<accum_t<T>, 3>({sp.B, sp.Hq, sp.Tq});
  }
  softmax_extras<accum_t<T>> extras(owned_tensor<accum_t<T>, 3>& lse) const {
    softmax_extras<accum_t<T>> x;
    x.lse = lse.v();
    if (sp.sinks) x.sinks = sinks.cv();
    return x;
  }
};

// Runs the fast kernel and the reference (on the same inputs) and compares o and lse.
template <class T>
void check_against_reference(const problem_spec& sp, std::uint64_t seed = 1) {
  problem<T> pr(sp, seed);
  auto o = pr.make_o(), o_ref = pr.make_o();
  auto lse = pr.make_lse(), lse_ref = pr.make_lse();
  standard_attention(sp.p, pr.q.cv(), pr.k.cv(), pr.v.cv(), o.v(), pr.extras(lse));
  reference::standard_attention(sp.p, pr.q.cv(), pr.k.cv(), pr.v.cv(), o_ref.v(),
                                pr.extras(lse_ref));
  INFO("B=" << sp.B << " Tq=" << sp.Tq << " Tk=" << sp.Tk << " Hq=" << sp.Hq << " Hkv=" << sp.Hkv
            << " Dk=" << sp.Dk << " Dv=" << sp.Dv << " causal=" << sp.p.causal << " window=("
            << sp.p.window_left << "," << sp.p.window_right << ") softcap=" << sp.p.softcap
            << " sinks=" << sp.sinks << " pad=" << sp.pad << " head_first=" << sp.head_first);
  ATTNKIT_CHECK_CLOSE(o.cv(), o_ref.cv(), test::tolerance<T>());
  ATTNKIT_CHECK_CLOSE(lse.cv(), lse_ref.cv(), test::tolerance<T>());
}

}  // namespace

TEMPLATE_TEST_CASE("standard: fast kernel matches the reference on awkward shapes", "[standard]",
                   double, float) {
  const auto lens =
      GENERATE(std::make_pair(1, 1), std::make_pair(1, 130), std::make_pair(63, 63),
               std::make_pair(65, 130), std::make_pair(130, 65), std::make_pair(63, 200));
  const auto ratio = GENERATE(1, 2, 3, 4, 8);
  const auto dims = GENERATE(std::make_pair(8, 8), std::make_pair(24, 40), std::make_pair(5, 3));
  const bool causal = GENERATE(false, true);
  auto sp = spec(2, lens.first, lens.second, 2 * ratio, 2, dims.first, dims.second);
  sp.p.causal = causal;
  check_against_reference<TestType>(sp);
}

TEMPLATE_TEST_CASE("standard: head dim 128 and decode-like shapes", "[standard]", double, float) {
  const auto tq = GENERATE(1, 2, 7, 64);
  const auto ratio = GENERATE(1, 3, 4, 5, 8);  // decode rows per kv head: 1..7 and 8+
  auto sp = spec(1, tq, 300, 2 * ratio, 2, 128, 128);
  sp.p.causal = true;
  check_against_reference<TestType>(sp);
}

TEMPLATE_TEST_CASE("standard: windows, softcap, sinks, scale", "[standard]", double, float) {
  const auto win = GENERATE(std::make_pair(-1, -1), std::make_pair(4, 0), std::make_pair(0, 0),
                            std::make_pair(10, 3), std::make_pair(-1, 2), std::make_pair(70, -1));
  const bool causal = GENERATE(false, true);
  const double softcap = GENERATE(0.0, 5.0);
  const bool sinks = GENERATE(false, true);
  auto sp = spec(1, 65, 130, 4, 2, 12, 20);
  sp.p.causal = causal;
  sp.p.window_left = win.first;
  sp.p.window_right = win.second;
  sp.p.softcap = softcap;
  sp.p.scale = 0.7;
  sp.sinks = sinks;
  check_against_reference<TestType>(sp);
}

TEMPLATE_TEST_CASE("standard: strided, padded and head-first views", "[standard]", double, float) {
  const index_t pad = GENERATE(0, 3);
  const bool head_first = GENERATE(false, true);
  auto sp = spec(2, 33, 70, 6, 3, 16, 9);
  sp.p.causal = true;
  sp.pad = pad;
  sp.head_first = head_first;
  check_against_reference<TestType>(sp);
}

TEST_CASE("standard: a slice of a bigger buffer is read and written in place", "[standard]") {
  // q, k, v are heads [1, 3) of bigger tensors; o is written into the middle heads of a bigger
  // buffer.
  owned_tensor<float, 4> qb({1, 20, 4, 8}), kb({1, 20, 4, 8}), vb({1, 20, 4, 8});
  std::mt19937_64 rng(3);
  test::fill_normal(qb.v(), rng);
  test::fill_normal(kb.v(), rng);
  test::fill_normal(vb.v(), rng);
  std::vector<float> big(1 * 20 * 4 * 8, 7.0f);
  auto obig = make_view(big.data(), 1, 20, 4, 8);
  auto o = slice(obig, 2, 1, 3);
  owned_tensor<float, 4> o_ref({1, 20, 2, 8});
  softmax_params p;
  p.causal = true;
  standard_attention(p, slice(qb.cv(), 2, 1, 3), slice(kb.cv(), 2, 1, 3), slice(vb.cv(), 2, 1, 3),
                     o);
  reference::standard_attention(p, slice(qb.cv(), 2, 1, 3), slice(kb.cv(), 2, 1, 3),
                                slice(vb.cv(), 2, 1, 3), o_ref.v());
  const cview<float, 4> oc(o);
  ATTNKIT_CHECK_CLOSE(oc, o_ref.cv(), 2e-5);
  for (index_t t = 0; t < 20; ++t)
    for (index_t d = 0; d < 8; ++d) {
      CHECK(obig(0, t, 0, d) == 7.0f);  // untouched outside the view
      CHECK(obig(0, t, 3, d) == 7.0f);
    }
}

TEST_CASE("standard: fully masked rows give o = 0 and lse = -inf", "[standard]") {
  problem_spec sp;
  sp.Tq = 10;
  sp.Tk = 4;  // bottom-right causal: the first 6 rows see nothing
  sp.Hq = 2;
  sp.Hkv = 1;
  sp.p.causal = true;
  sp.sinks = true;
  problem<float> pr(sp, 5);
  auto o = pr.make_o();
  auto lse = pr.make_lse();
  standard_attention(sp.p, pr.q.cv(), pr.k.cv(), pr.v.cv(), o.v(), pr.extras(lse));
  for (index_t h = 0; h < 2; ++h)
    for (index_t i = 0; i < 10; ++i) {
      if (i < 6) {
        CHECK(lse.view(0, h, i) == -std::numeric_limits<float>::infinity());
        for (index_t d = 0; d < 8; ++d) CHECK(o.view(0, i, h, d) == 0.0f);
      } else {
        CHECK(std::isfinite(lse.view(0, h, i)));
      }
    }
  check_against_reference<double>(sp);
  // A window entirely outside the keys: every row empty, still no NaN.
  sp.p.causal = false;
  sp.Tq = 3;
  sp.Tk = 50;
  sp.p.window_left = 2;
  sp.p.window_right = -1;
  check_against_reference<double>(sp);
}

TEST_CASE("standard: sinks and softcap change the output", "[standard]") {
  auto sp = spec(1, 9, 9, 2, 2, 8, 8);
  sp.p.causal = true;
  problem<double> pr(sp, 11);
  // scale the logits up so the cap matters
  test::for_each_index<4>(pr.q.view.extents(),
                          [&](const auto& i) { test::at(pr.q.view, i) *= 4.0; });
  auto run = [&](bool sinks, double cap) {
    auto o = pr.make_o();
    auto lse = pr.make_lse();
    problem_spec s2 = sp;
    s2.sinks = sinks;
    pr.sp = s2;
    softmax_params p = sp.p;
    p.softcap = cap;
    standard_attention(p, pr.q.cv(), pr.k.cv(), pr.v.cv(), o.v(), pr.extras(lse));
    return o;
  };
  auto base = run(false, 0), with_sink = run(true, 0), capped = run(false, 2.0);
  CHECK(test::compare(with_sink.cv(), base.cv()).max_abs > 1e-3);
  CHECK(test::compare(capped.cv(), base.cv()).max_abs > 1e-3);
}

TEST_CASE("standard: merge of two key halves equals the whole", "[standard][merge]") {
  auto sp = spec(2, 7, 130, 4, 2, 16, 24);
  problem<double> pr(sp, 21);
  auto o_full = pr.make_o();
  auto lse_full = pr.make_lse();
  standard_attention(sp.p, pr.q.cv(), pr.k.cv(), pr.v.cv(), o_full.v(), pr.extras(lse_full));
  const index_t cut = 45;
  owned_tensor<double, 5> parts({2, sp.B, sp.Tq, sp.Hq, sp.Dv});
  owned_tensor<double, 4> lparts({2, sp.B, sp.Hq, sp.Tq});
  for (index_t n = 0; n < 2; ++n) {
    softmax_extras<double> x;
    x.lse = subview(lparts.v(), 0, n);
    const index_t b = n == 0 ? 0 : cut, e = n == 0 ? cut : sp.Tk;
    standard_attention(sp.p, pr.q.cv(), slice(pr.k.cv(), 1, b, e), slice(pr.v.cv(), 1, b, e),
                       subview(parts.v(), 0, n), x);
  }
  auto o = pr.make_o();
  auto lse = pr.make_lse();
  merge_states(parts.cv(), lparts.cv(), o.v(), lse.v());
  ATTNKIT_CHECK_CLOSE(o.cv(), o_full.cv(), 1e-12);
  ATTNKIT_CHECK_CLOSE(lse.cv(), lse_full.cv(), 1e-12);
  // without the lse output: the same o, bit for bit
  auto o_nolse = pr.make_o();
  merge_states(parts.cv(), lparts.cv(), o_nolse.v());
  ATTNKIT_CHECK_CLOSE(o_nolse.cv(), o.cv(), 0.0);
  ATTNKIT_CHECK_CLOSE(o_nolse.cv(), o_full.cv(), 1e-12);
  // in-place two-way merge gives the same
  auto o2 = pr.make_o();
  auto l2 = pr.make_lse();
  test::copy(subview(parts.cv(), 0, 0), o2.v());
  test::copy(subview(lparts.cv(), 0, 0), l2.v());
  merge_state_inplace(o2.v(), l2.v(), subview(parts.cv(), 0, 1), subview(lparts.cv(), 0, 1));
  ATTNKIT_CHECK_CLOSE(o2.cv(), o_full.cv(), 1e-12);
  // merging with an empty partial (lse = -inf) is the identity, never NaN
  owned_tensor<double, 3> empty_l({sp.B, sp.Hq, sp.Tq});
  owned_tensor<double, 4> empty_o({sp.B, sp.Tq, sp.Hq, sp.Dv});
  test::fill_normal(empty_o.v(), *std::make_unique<std::mt19937_64>(1));
  test::for_each_index<3>(empty_l.view.extents(), [&](const auto& i) {
    test::at(empty_l.view, i) = -std::numeric_limits<double>::infinity();
  });
  merge_state_inplace(o2.v(), l2.v(), empty_o.cv(), empty_l.cv());
  ATTNKIT_CHECK_CLOSE(o2.cv(), o_full.cv(), 1e-12);
}

TEMPLATE_TEST_CASE("standard: split-KV result does not depend on the split count", "[standard]",
                   double, float) {
  auto sp = spec(1, 3, 1000, 8, 2, 32, 32);
  sp.p.causal = true;
  sp.sinks = true;
  problem<TestType> pr(sp, 9);
  auto o_ref = pr.make_o();
  auto lse_ref = pr.make_lse();
  reference::standard_attention(sp.p, pr.q.cv(), pr.k.cv(), pr.v.cv(), o_ref.v(),
                                pr.extras(lse_ref));
  for (int splits : {1, 2, 3, 7, 16, 100}) {
    softmax_params p = sp.p;
    p.num_splits = splits;
    auto o = pr.make_o();
    auto lse = pr.make_lse();
    standard_attention(p, pr.q.cv(), pr.k.cv(), pr.v.cv(), o.v(), pr.extras(lse));
    INFO("num_splits=" << splits);
    ATTNKIT_CHECK_CLOSE(o.cv(), o_ref.cv(), test::tolerance<TestType>());
    ATTNKIT_CHECK_CLOSE(lse.cv(), lse_ref.cv(), test::tolerance<TestType>());
  }
}

TEST_CASE("standard: results do not depend on the thread count", "[standard][threads]") {
  auto sp = spec(2, 130, 2100, 4, 1, 32, 32);
  sp.p.causal = true;
  problem<float> pr(sp, 4);
  std::vector<std::vector<float>> outs;
  serial_executor serial;
  thread_pool one(1), two(2), three(3);
  for (executor* e : std::vector<executor*>{&serial, &one, &two, &three}) {
    softmax_params p = sp.p;
    p.exec = e;
    auto o = pr.make_o();
    standard_attention(p, pr.q.cv(), pr.k.cv(), pr.v.cv(), o.v());
    outs.push_back(o.buf);
    // decode shape too (split-KV path)
    auto od = owned_tensor<float, 4>({2, 1, 4, 32});
    standard_attention(p, slice(pr.q.cv(), 1, 0, 1), pr.k.cv(), pr.v.cv(), od.v());
    outs.push_back(od.buf);
  }
  for (std::size_t i = 2; i < outs.size(); ++i) {
    auto eq = [](float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); };
    CHECK(std::equal(outs[i].begin(), outs[i].end(), outs[i % 2].begin(), eq));
  }
}

TEST_CASE("standard: varlen equals separate runs", "[standard][varlen]") {
  const std::vector<std::int32_t> lq = {3, 1, 0, 70, 5}, lk = {3, 4, 6, 70, 130};
  std::vector<std::int32_t> cq{0}, ck{0};
  for (std::size_t i = 0; i < lq.size(); ++i) {
    cq.push_back(cq.back() + lq[i]);
    ck.push_back(ck.back() + lk[i]);
  }
  const index_t Hq = 4, Hkv = 2, D = 16;
  owned_tensor<double, 4> q({1, cq.back(), Hq, D}), k({1, ck.back(), Hkv, D}),
      v({1, ck.back(), Hkv, D}), o({1, cq.back(), Hq, D});
  owned_tensor<double, 3> lse({1, Hq, cq.back()});
  std::mt19937_64 rng(8);
  test::fill_normal(q.v(), rng);
  test::fill_normal(k.v(), rng);
  test::fill_normal(v.v(), rng);
  softmax_params p;
  p.causal = true;
  softmax_extras<double> x;
  x.lse = lse.v();
  x.cu_seqlens_q = make_view(static_cast<const std::int32_t*>(cq.data()), index_t(cq.size()));
  x.cu_seqlens_k = make_view(static_cast<const std::int32_t*>(ck.data()), index_t(ck.size()));
  standard_attention(p, q.cv(), k.cv(), v.cv(), o.v(), x);
  for (std::size_t n = 0; n < lq.size(); ++n) {
    owned_tensor<double, 4> on({1, lq[n], Hq, D});
    owned_tensor<double, 3> ln({1, Hq, lq[n]});
    softmax_extras<double> xn;
    xn.lse = ln.v();
    reference::standard_attention(p, slice(q.cv(), 1, cq[n], cq[n + 1]),
                                  slice(k.cv(), 1, ck[n], ck[n + 1]),
                                  slice(v.cv(), 1, ck[n], ck[n + 1]), on.v(), xn);
    ATTNKIT_CHECK_CLOSE(slice(o.cv(), 1, cq[n], cq[n + 1]), on.cv(), 1e-10);
    ATTNKIT_CHECK_CLOSE(slice(lse.cv(), 2, cq[n], cq[n + 1]), ln.cv(), 1e-10);
  }
}

TEMPLATE_TEST_CASE("standard: prefill then token-by-token decode equals one longer prefill",
                   "[standard][kvcache]", double, float) {
  const index_t B = 2, T = 70, Hq = 8, Hkv = 2, D = 24, prompt = 40;
  owned_tensor<TestType, 4> q({B, T, Hq, D}), k({B, T, Hkv, D}), v({B, T, Hkv, D});
  std::mt19937_64 rng(12);
  test::fill_normal(q.v(), rng);
  test::fill_normal(k.v(), rng);
  test::fill_normal(v.v(), rng);
  softmax_params p;
  p.causal = true;
  owned_tensor<TestType, 4> o_full({B, T, Hq, D});
  reference::standard_attention(p, q.cv(), k.cv(), v.cv(), o_full.v());

  for (int paged = 0; paged < 2; ++paged) {
    owned_tensor<TestType, 4> kc({B, 96, Hkv, D}), vc({B, 96, Hkv, D});
    paged_store<TestType> ps(B, 96, 7, Hkv, D, D);
    std::vector<std::int32_t> seqlens(B, 0);
    owned_tensor<TestType, 4> o({B, T, Hq, D});
    auto step = [&](index_t t0, index_t t1) {
      auto qs = slice(q.cv(), 1, t0, t1);
      auto os = slice(o.v(), 1, t0, t1);
      if (paged)
        standard_attention_kvcache(p, qs, ps.cache(seqlens), os, {}, slice(k.cv(), 1, t0, t1),
                                   slice(v.cv(), 1, t0, t1));
      else
        standard_attention_kvcache(p, qs,
                                   kv_cache<TestType>{kc.v(), vc.v(), make_view(seqlens.data(), B)},
                                   os, {}, slice(k.cv(), 1, t0, t1), slice(v.cv(), 1, t0, t1));
      for (auto& s : seqlens) s += std::int32_t(t1 - t0);
    };
    step(0, prompt);                                           // chunked prefill of the prompt
    for (index_t t = prompt; t < T - 10; ++t) step(t, t + 1);  // decode one token at a time
    step(T - 10, T);  // a second chunk (speculative-verify shape)
    INFO("paged=" << paged);
    ATTNKIT_CHECK_CLOSE(o.cv(), o_full.cv(), test::tolerance<TestType>());
  }
}

TEMPLATE_TEST_CASE("standard: paged cache equals contiguous cache", "[standard][kvcache]", double,
                   float) {
  const index_t B = 3, Hq = 8, Hkv = 4, Dk = 20, Dv = 12, cap = 200;
  const index_t P = GENERATE(1, 3, 16, 64);
  const index_t tq = GENERATE(1, 5);
  std::vector<std::int32_t> seqlens = {150, 1, 77};
  owned_tensor<TestType, 4> kc({B, cap, Hkv, Dk}), vc({B, cap, Hkv, Dv}), q({B, tq, Hq, Dk});
  std::mt19937_64 rng(2);
  test::fill_normal(kc.v(), rng);
  test::fill_normal(vc.v(), rng);
  test::fill_normal(q.v(), rng);
  paged_store<TestType> ps(B, cap, P, Hkv, Dk, Dv);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < seqlens[std::size_t(b)]; ++t) {
      const index_t page = ps.table[std::size_t(b * ps.max_pages + t / P)];
      for (index_t h = 0; h < Hkv; ++h) {
        for (index_t d = 0; d < Dk; ++d) ps.kp.view(page, t % P, h, d) = kc.view(b, t, h, d);
        for (index_t d = 0; d < Dv; ++d) ps.vp.view(page, t % P, h, d) = vc.view(b, t, h, d);
      }
    }
  softmax_params p;
  p.causal = true;
  owned_tensor<TestType, 4> o1({B, tq, Hq, Dv}), o2({B, tq, Hq, Dv}), o3({B, tq, Hq, Dv});
  const kv_cache<TestType> c{kc.v(), vc.v(), make_view(seqlens.data(), B)};
  standard_attention_kvcache(p, q.cv(), c, o1.v());
  standard_attention_kvcache(p, q.cv(), ps.cache(seqlens), o2.v());
  reference::standard_attention_kvcache(p, q.cv(), c, o3.v());
  ATTNKIT_CHECK_CLOSE(o2.cv(), o1.cv(), test::tolerance<TestType>());
  ATTNKIT_CHECK_CLOSE(o1.cv(), o3.cv(), test::tolerance<TestType>());
}

TEMPLATE_TEST_CASE("standard: bf16 and fp16 storage within tolerance", "[standard][lowp]", bf16,
                   fp16) {
  const index_t B = 1, Tq = 65, Tk = 130, Hq = 4, Hkv = 2;
  // D = 67: keys converted in pieces of 64 columns and a ragged last piece
  const index_t D = GENERATE(40, 67);
  INFO("D=" << D);
  owned_tensor<TestType, 4> q({B, Tq, Hq, D}), k({B, Tk, Hkv, D}), v({B, Tk, Hkv, D}),
      o({B, Tq, Hq, D});
  std::mt19937_64 rng(31);
  test::fill_normal(q.v(), rng);
  test::fill_normal(k.v(), rng);
  test::fill_normal(v.v(), rng);
  softmax_params p;
  p.causal = true;
  owned_tensor<float, 3> lse({B, Hq, Tq}), lse_ref({B, Hq, Tq});
  softmax_extras<float> x, xr;
  x.lse = lse.v();
  xr.lse = lse_ref.v();
  standard_attention(p, q.cv(), k.cv(), v.cv(), o.v(), x);
  // Reference in double on the same (rounded) inputs: the only extra error is float accumulation
  // and the final rounding of o to 16 bits.
  owned_tensor<double, 4> o_ref({B, Tq, Hq, D});
  reference::standard_attention(p, q.cv(), k.cv(), v.cv(), o_ref.v());
  const double unit = std::is_same_v<TestType, bf16> ? 1.0 / 128 : 1.0 / 1024;  // 2^-7 / 2^-10
  const auto e = test::compare(o.cv(), o_ref.cv());
  INFO("max_abs=" << e.max_abs << " max_ref=" << e.max_ref);
  CHECK(e.max_abs <= unit * e.max_ref);
  // and a float cache with a bf16 cache read the same way: mixed KV storage with float queries
  owned_tensor<float, 4> qf({B, Tq, Hq, D}), of({B, Tq, Hq, D});
  test::copy(q.cv(), qf.v());
  standard_attention(p, qf.cv(), k.cv(), v.cv(), of.v());
  ATTNKIT_CHECK_CLOSE(of.cv(), o_ref.cv(), 2e-5);
}

TEST_CASE("standard: every bad input gets a clear error", "[standard][errors]") {
  using Catch::Matchers::Contains;
  std::vector<float> buf(100000, 0.0f);
  float* b = buf.data();
  auto q = make_view(static_cast<const float*>(b), 1, 4, 4, 8);
  auto k = make_view(static_cast<const float*>(b), 1, 6, 2, 8);
  auto v = make_view(static_cast<const float*>(b), 1, 6, 2, 8);
  std::vector<float> obuf(1000);
  auto o = make_view(obuf.data(), 1, 4, 4, 8);
  softmax_params p;
  CHECK_NOTHROW(standard_attention(p, q, k, v, o));

  CHECK_THROWS_WITH(
      standard_attention(p, q, make_view(static_cast<const float*>(b), 1, 6, 2, 7), v, o),
      Contains("tensor 'k'") && Contains("dim 3 (Dk)") && Contains("expected 8 (Dk of q), got 7"));
  CHECK_THROWS_WITH(standard_attention(p, q, make_view(static_cast<const float*>(b), 1, 6, 3, 8),
                                       make_view(static_cast<const float*>(b), 1, 6, 3, 8), o),
                    Contains("tensor 'k'") && Contains("dim 2 (Hkv)") &&
                        Contains("Hq = 4 (dim 2 of q) is not a multiple of Hkv = 3"));
  // The message blames the wrong tensor and names where the expected value comes from: a k
  // with a bad head count beside a good v is k's error, and v is compared with k's Hkv.
  CHECK_THROWS_WITH(
      standard_attention(p, q, make_view(static_cast<const float*>(b), 1, 6, 3, 8), v, o),
      Contains("tensor 'k'") && Contains("Hq = 4 (dim 2 of q)"));
  CHECK_THROWS_WITH(
      standard_attention(p, q, k, make_view(static_cast<const float*>(b), 1, 6, 1, 8), o),
      Contains("tensor 'v'") && Contains("dim 2 (Hkv)") &&
          Contains("expected 2 (Hkv of k), got 1"));
  CHECK_THROWS_WITH(standard_attention(p, q, k, v, make_view(obuf.data(), 1, 4, 2, 8)),
                    Contains("tensor 'o'") && Contains("expected 4 (Hq of q), got 2"));
  CHECK_THROWS_WITH(
      standard_attention(p, q, k, make_view(static_cast<const float*>(b), 1, 5, 2, 8), o),
      Contains("tensor 'v'") && Contains("dim 1 (Tk)") && Contains("expected 6 (Tk of k), got 5"));
  CHECK_THROWS_WITH(standard_attention(p, q, k, v, make_view(obuf.data(), 1, 4, 4, 9)),
                    Contains("tensor 'o'") && Contains("dim 3 (Dv)"));
  CHECK_THROWS_WITH(
      standard_attention(p, make_view(static_cast<const float*>(b), 2, 4, 4, 8), k, v, o),
      Contains("tensor 'k'") && Contains("dim 0 (B)"));
  CHECK_THROWS_WITH(standard_attention(p, make_view(static_cast<const float*>(b), 1, 4, 0, 8), k, v,
                                       make_view(obuf.data(), 1, 4, 0, 8)),
                    Contains("tensor 'q' dim 2 (Hq): must be >= 1"));
  // strides
  tensor_view<const float, 4> k_strided(b, {1, 6, 2, 8}, {96, 16, 8, 2});
  CHECK_THROWS_WITH(standard_attention(p, q, k_strided, v, o),
                    Contains("tensor 'k'") && Contains("must have stride 1"));
  tensor_view<float, 4> o_overlap(obuf.data(), {1, 4, 4, 8}, {128, 8, 8, 1});
  CHECK_THROWS_WITH(standard_attention(p, q, k, v, o_overlap),
                    Contains("output tensor 'o'") && Contains("overlap"));
  // outputs aliasing inputs: o over q's buffer, lse over o's
  CHECK_THROWS_WITH(standard_attention(p, q, k, v, make_view(b, 1, 4, 4, 8)),
                    Contains("output tensor 'o' overlaps tensor 'q'"));
  {
    softmax_extras<float> xl;
    xl.lse = make_view(obuf.data() + 8, 1, 4, 4);
    CHECK_THROWS_WITH(standard_attention(p, q, k, v, o, xl),
                      Contains("output tensor 'lse' overlaps tensor 'o'"));
  }
  // options outside the float compute type (the double reference and double kernels take them)
  {
    softmax_params ps;
    ps.scale = 1e300;
    CHECK_THROWS_WITH(standard_attention(ps, q, k, v, o),
                      Contains("option 'scale' = 1e+300 is outside the range of the float32"));
    ps = {};
    ps.softcap = 1e-40;
    CHECK_THROWS_WITH(standard_attention(ps, q, k, v, o), Contains("option 'softcap'"));
    CHECK_NOTHROW(reference::standard_attention(ps, q, k, v, o));
  }
  tensor_view<const float, 4> k_neg(b + 200, {1, 6, 2, 8}, {96, -16, 8, 1});
  CHECK_THROWS_WITH(standard_attention(p, q, k_neg, v, o), Contains("stride must be positive"));
  // options
  softmax_params bad = p;
  bad.window_left = -2;
  CHECK_THROWS_WITH(standard_attention(bad, q, k, v, o), Contains("window_left"));
  bad = p;
  bad.softcap = -1;
  CHECK_THROWS_WITH(standard_attention(bad, q, k, v, o), Contains("softcap"));
  bad = p;
  bad.scale = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(standard_attention(bad, q, k, v, o), Contains("scale"));
  bad = p;
  bad.num_splits = -1;
  CHECK_THROWS_WITH(standard_attention(bad, q, k, v, o), Contains("num_splits"));
  // optional tensors
  softmax_extras<float> x;
  std::vector<float> lbuf(64);
  x.lse = make_view(lbuf.data(), 1, 4, 3);
  CHECK_THROWS_WITH(standard_attention(p, q, k, v, o, x),
                    Contains("tensor 'lse'") && Contains("dim 2 (Tq)"));
  x = {};
  x.sinks = make_view(static_cast<const float*>(b), 3);
  CHECK_THROWS_WITH(standard_attention(p, q, k, v, o, x), Contains("tensor 'sinks'"));
  // varlen
  std::vector<std::int32_t> cq = {0, 2, 4}, ck = {0, 3, 5}, ck_bad = {0, 3, 2};
  x = {};
  x.cu_seqlens_q = make_view(static_cast<const std::int32_t*>(cq.data()), 3);
  CHECK_THROWS_WITH(standard_attention(p, q, k, v, o, x), Contains("cu_seqlens_k"));
  x.cu_seqlens_k = make_view(static_cast<const std::int32_t*>(ck.data()), 3);
  CHECK_THROWS_WITH(standard_attention(p, q, k, v, o, x),
                    Contains("cu_seqlens_k'[N] = 5") && Contains("6"));
  x.cu_seqlens_k = make_view(static_cast<const std::int32_t*>(ck_bad.data()), 3);
  CHECK_THROWS_WITH(standard_attention(p, q, k, v, o, x), Contains("non-decreasing"));
  // KV cache capacity, seqlens, block table
  std::vector<float> cbuf(2 * 10 * 2 * 8);
  std::vector<std::int32_t> lens = {9, 2};
  auto q2 = make_view(static_cast<const float*>(b), 2, 1, 4, 8);
  auto o2 = make_view(obuf.data(), 2, 1, 4, 8);
  kv_cache<float> c{make_view(cbuf.data(), 2, 10, 2, 8), make_view(cbuf.data(), 2, 10, 2, 8),
                    make_view(static_cast<const std::int32_t*>(lens.data()), 2)};
  auto kn = make_view(static_cast<const float*>(b), 2, 2, 2, 8);
  CHECK_THROWS_WITH(standard_attention_kvcache(p, q2, c, o2, {}, kn, kn),
                    Contains("exceeds the cache capacity 10"));
  lens[1] = -1;
  CHECK_THROWS_WITH(standard_attention_kvcache(p, q2, c, o2),
                    Contains("cache_seqlens[1] must be >= 0"));
  lens[1] = 5;  // needs pages table[1][0] = 3 and table[1][1] = 4 (out of range)
  std::vector<float> pages(4 * 4 * 2 * 8);
  std::vector<std::int32_t> table = {0, 1, 2, 3, 4, 0};
  paged_kv_cache<float> pc{make_view(pages.data(), 4, 4, 2, 8), make_view(pages.data(), 4, 4, 2, 8),
                           make_view(static_cast<const std::int32_t*>(table.data()), 2, 3),
                           make_view(static_cast<const std::int32_t*>(lens.data()), 2)};
  CHECK_THROWS_WITH(standard_attention_kvcache(p, q2, pc, o2), Contains("block_table[1][1] = 4"));
}
