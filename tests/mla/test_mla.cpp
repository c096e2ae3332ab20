// SPDX-License-Identifier: Apache-2.0
// MLA: the absorbed kernel over latent caches (with the absorption helpers) against the naive
// (decompressed) form and the references; golden replay (tests/data/softmax/mla_small, float64
// NumPy reference of the naive form); paged == contiguous; appending then attending == a longer
// cache; bf16 latent cache; learned sinks and LSE; errors.
#include <attnkit/mla.hpp>
#include <catch2/catch.hpp>
#include <random>

#include "../support/golden.hpp"
#include "../support/test_util.hpp"

using namespace attnkit;
using Catch::Matchers::Contains;
using test::owned_tensor;

namespace {

/// One MLA problem: q_nope [B,Tq,H,Dn], q_pe [B,Tq,H,Dr], c_kv [B,Tk,Dc], k_pe [B,Tk,Dr],
/// w_uk [H,Dn,Dc], w_uv [H,Dv,Dc], sinks [H].
template <class T>
struct problem {
  index_t B, Tq, Tk, H, Dn, Dr, Dc, Dv;
  owned_tensor<T, 4> q_nope, q_pe;
  owned_tensor<T, 3> c_kv, k_pe, w_uk, w_uv;
  std::vector<T> sinks;

  problem(index_t b, index_t tq, index_t tk, index_t h, index_t dn, index_t dr, index_t dc,
          index_t dv, std::uint64_t seed)
      : B(b),
        Tq(tq),
        Tk(tk),
        H(h),
        Dn(dn),
        Dr(dr),
        Dc(dc),
        Dv(dv),
        q_nope({b, tq, h, dn}),
        q_pe({b, tq, h, dr}),
        c_kv({b, tk, dc}),
        k_pe({b, tk, dr}),
        w_uk({h, dn, dc}),
        w_uv({h, dv, dc}) {
    std::mt19937_64 rng(seed);
    test::fill_normal(q_nope.v(), rng);
    test::fill_normal(q_pe.v(), rng);
    test::fill_normal(c_kv.v(), rng);
    test::fill_normal(k_pe.v(), rng);
    test::fill_normal(w_uk.v(), rng, 1 / std::sqrt(double(dc)));
    test::fill_normal(w_uv.v(), rng, 1 / std::sqrt(double(dc)));
    std::normal_distribution<double> nd;
    for (index_t i = 0; i < h; ++i) sinks.push_back(T(nd(rng)));
  }
  /// From the golden case's tensors.
  explicit problem(const test::golden_case& g)
      : q_nope(g.load<T, 4>("q_nope")),
        q_pe(g.load<T, 4>("q_pe")),
        c_kv(g.load<T, 3>("c_kv")),
        k_pe(g.load<T, 3>("k_pe")),
        w_uk(g.load<T, 3>("w_uk")),
        w_uv(g.load<T, 3>("w_uv")) {
    B = q_nope.view.extent(0), Tq = q_nope.view.extent(1), H = q_nope.view.extent(2);
    Dn = q_nope.view.extent(3), Dr = q_pe.view.extent(3), Tk = c_kv.view.extent(1);
    Dc = c_kv.view.extent(2), Dv = w_uv.view.extent(1);
  }
};

enum class cache_kind { contiguous, paged };

/// The absorbed path as an engine runs it: q~ = absorb_q, the first Tk - n_new tokens in a latent
/// cache (KV storage), the last n_new appended by the call, o~ over the cache, o = absorb_o.
template <bool Ref, class T, class KV = T>
void run_absorbed(const problem<T>& pr, mla_params p, cache_kind ck, const tensor_view<T, 4>& o,
                  const tensor_view<T, 3>& lse, bool with_sinks, index_t n_new = 0,
                  index_t page = 4) {
  using A = accum_t<T>;
  const index_t W = pr.Dc + pr.Dr, cached = pr.Tk - n_new;
  p.dn = pr.Dn;
  owned_tensor<T, 4> q_abs({pr.B, pr.Tq, pr.H, W}), o_lat({pr.B, pr.Tq, pr.H, pr.Dc});
  // latent rows [c ; k_pe] of every token, as KV
  owned_tensor<KV, 3> rows({pr.B, pr.Tk, W});
  for (index_t b = 0; b < pr.B; ++b)
    for (index_t t = 0; t < pr.Tk; ++t) {
      for (index_t c = 0; c < pr.Dc; ++c) rows.view(b, t, c) = KV(pr.c_kv.view(b, t, c));
      for (index_t r = 0; r < pr.Dr; ++r) rows.view(b, t, pr.Dc + r) = KV(pr.k_pe.view(b, t, r));
    }
  const index_t max_pages = (pr.Tk + page - 1) / page, np = pr.B * max_pages + 2;
  owned_tensor<KV, 3> contiguous({pr.B, pr.Tk + 3, W}), pages({np, page, W});
  std::vector<std::int32_t> table(std::size_t(pr.B * max_pages)),
      seqlens(std::size_t(pr.B), std::int32_t(cached));
  for (index_t i = 0; i < pr.B * max_pages; ++i)  // pages handed out backwards
    table[std::size_t(i)] = std::int32_t(np - 1 - i);
  const auto slot = [&](index_t b, index_t t) -> KV* {
    return ck == cache_kind::contiguous
               ? &contiguous.view(b, t, 0)
               : &pages.view(table[std::size_t(b * max_pages + t / page)], t % page, 0);
  };
  for (index_t b = 0; b < pr.B; ++b)
    for (index_t t = 0; t < cached; ++t)
      for (index_t c = 0; c < W; ++c) slot(b, t)[c] = rows.view(b, t, c);
  softmax_extras<A> x;
  x.lse = lse;
  if (with_sinks) x.sinks = make_view<const A>(pr.sinks.data(), pr.H);
  const auto kv_new = n_new > 0 ? cview<KV, 3>(slice(rows.view, 1, cached, pr.Tk)) : cview<KV, 3>{};
  const auto sl = make_view<const std::int32_t>(seqlens.data(), pr.B);
  const auto attend = [&](const auto& cache) {
    if constexpr (Ref) {
      reference::mla_absorb_q(p, pr.q_nope.cv(), pr.q_pe.cv(), pr.w_uk.cv(), q_abs.v());
      reference::mla_attention_absorbed(p, q_abs.cv(), cache, o_lat.v(), x, kv_new);
      reference::mla_absorb_o(p, o_lat.cv(), pr.w_uv.cv(), o);
    } else {
      mla_absorb_q(p, pr.q_nope.cv(), pr.q_pe.cv(), pr.w_uk.cv(), q_abs.v());
      mla_attention_absorbed(p, q_abs.cv(), cache, o_lat.v(), x, kv_new);
      mla_absorb_o(p, o_lat.cv(), pr.w_uv.cv(), o);
    }
  };
  if (ck == cache_kind::contiguous)
    attend(latent_cache<KV>{contiguous.v(), sl, pr.Dc});
  else
    attend(paged_latent_cache<KV>{
        pages.v(), make_view<const std::int32_t>(table.data(), pr.B, max_pages), sl, pr.Dc});
}

template <bool Ref, class T>
void run_naive(const problem<T>& pr, const mla_params& p, const tensor_view<T, 4>& o,
               const tensor_view<T, 3>& lse, bool with_sinks) {
  using A = accum_t<T>;
  softmax_extras<A> x;
  x.lse = lse;
  if (with_sinks) x.sinks = make_view<const A>(pr.sinks.data(), pr.H);
  if constexpr (Ref)
    reference::mla_attention_naive(p, pr.q_nope.cv(), pr.q_pe.cv(), pr.c_kv.cv(), pr.k_pe.cv(),
                                   pr.w_uk.cv(), pr.w_uv.cv(), o, x);
  else
    mla_attention_naive(p, pr.q_nope.cv(), pr.q_pe.cv(), pr.c_kv.cv(), pr.k_pe.cv(), pr.w_uk.cv(),
                        pr.w_uv.cv(), o, x);
}

template <class T>
struct outputs {
  owned_tensor<T, 4> o;
  owned_tensor<T, 3> lse;
  outputs(const problem<T>& pr) : o({pr.B, pr.Tq, pr.H, pr.Dv}), lse({pr.B, pr.H, pr.Tq}) {}
};

}  // namespace

TEST_CASE("mla: golden case, naive and absorbed forms, fast and reference, both caches",
          "[mla][golden]") {
  const test::golden_case g{"softmax", "mla_small"};
  const auto o_ref = g.load<double, 4>("o");
  const auto lse_ref = g.load<double, 3>("lse");
  mla_params p;
  p.causal = true;  // as the case's meta.json; scale: the default (Dn + Dr)^-0.5
  {
    const problem<double> pr(g);
    for (int form = 0; form < 6; ++form) {
      outputs<double> out(pr);
      INFO("float64 form " << form);
      switch (form) {
        case 0:
          run_naive<false>(pr, p, out.o.v(), out.lse.v(), false);
          break;
        case 1:
          run_naive<true>(pr, p, out.o.v(), out.lse.v(), false);
          break;
        case 2:
          run_absorbed<false>(pr, p, cache_kind::contiguous, out.o.v(), out.lse.v(), false);
          break;
        case 3:
          run_absorbed<false>(pr, p, cache_kind::paged, out.o.v(), out.lse.v(), false, 2);
          break;
        case 4:
          run_absorbed<true>(pr, p, cache_kind::contiguous, out.o.v(), out.lse.v(), false);
          break;
        default:
          run_absorbed<true>(pr, p, cache_kind::paged, out.o.v(), out.lse.v(), false, 3);
          break;
      }
      test::check_golden("o", out.o.cv(), o_ref.cv(), 1e-10, false);
      test::check_golden("lse", out.lse.cv(), lse_ref.cv(), 1e-10, false);
    }
  }
  const problem<float> pr(g);
  for (int form = 0; form < 3; ++form) {
    outputs<float> out(pr);
    INFO("float32 form " << form);
    if (form == 0) run_naive<false>(pr, p, out.o.v(), out.lse.v(), false);
    if (form == 1)
      run_absorbed<false>(pr, p, cache_kind::contiguous, out.o.v(), out.lse.v(), false);
    if (form == 2) run_absorbed<false>(pr, p, cache_kind::paged, out.o.v(), out.lse.v(), false, 1);
    test::check_golden("o", out.o.cv(), o_ref.cv(), 1e-5, true);
    test::check_golden("lse", out.lse.cv(), lse_ref.cv(), 1e-5, true);
  }
}

TEMPLATE_TEST_CASE("mla: absorbed equals naive on awkward shapes (decode, MTP, prefill)", "[mla]",
                   double, float) {
  using T = TestType;
  const double tol = test::tolerance<T>() * (std::is_same_v<T, float> ? 5 : 1);
  struct shape {
    index_t B, Tq, Tk, H;
    bool causal;
  };
  for (const shape s :
       {shape{2, 1, 1, 4, false}, shape{2, 1, 63, 3, false}, shape{1, 1, 65, 4, true},
        shape{2, 2, 130, 4, true}, shape{1, 5, 65, 2, true}, shape{1, 65, 65, 3, true},
        // wide groups (64+ heads on the latent head): several positions per work item
        shape{2, 2, 70, 128, true}, shape{1, 5, 130, 65, true}, shape{1, 3, 9, 64, false}})
    for (const bool sinks : {false, true}) {
      const problem<T> pr(s.B, s.Tq, s.Tk, s.H, 12, 6, 40, 20, 7 + std::uint64_t(s.Tk * 3 + s.Tq));
      mla_params p;
      p.causal = s.causal;
      outputs<T> naive(pr), ref(pr), contiguous(pr), paged(pr), appended(pr);
      run_naive<false>(pr, p, naive.o.v(), naive.lse.v(), sinks);
      run_naive<true>(pr, p, ref.o.v(), ref.lse.v(), sinks);
      run_absorbed<false>(pr, p, cache_kind::contiguous, contiguous.o.v(), contiguous.lse.v(),
                          sinks);
      run_absorbed<false>(pr, p, cache_kind::paged, paged.o.v(), paged.lse.v(), sinks, 0, 5);
      // the last Tq tokens appended by the call (decode / MTP after a prefill)
      run_absorbed<false>(pr, p, cache_kind::paged, appended.o.v(), appended.lse.v(), sinks,
                          std::min(s.Tq, s.Tk), 4);
      INFO("B=" << s.B << " Tq=" << s.Tq << " Tk=" << s.Tk << " H=" << s.H << " causal=" << s.causal
                << " sinks=" << sinks);
      for (const auto* out : {&naive, &contiguous, &paged, &appended}) {
        ATTNKIT_CHECK_CLOSE(out->o.cv(), ref.o.cv(), tol);
        ATTNKIT_CHECK_CLOSE(out->lse.cv(), ref.lse.cv(), tol);
      }
    }
}

TEST_CASE("mla: bf16 latent cache within tolerance of the float naive form", "[mla]") {
  problem<float> pr(2, 2, 70, 4, 16, 8, 64, 16, 99);
  for (index_t b = 0; b < pr.B; ++b)  // the naive form sees the values the bf16 cache holds
    for (index_t t = 0; t < pr.Tk; ++t) {
      for (index_t c = 0; c < pr.Dc; ++c)
        pr.c_kv.view(b, t, c) = float(bf16(pr.c_kv.view(b, t, c)));
      for (index_t r = 0; r < pr.Dr; ++r)
        pr.k_pe.view(b, t, r) = float(bf16(pr.k_pe.view(b, t, r)));
    }
  mla_params p;
  p.causal = true;
  outputs<float> naive(pr), bf(pr);
  run_naive<false>(pr, p, naive.o.v(), naive.lse.v(), false);
  run_absorbed<false, float, bf16>(pr, p, cache_kind::paged, bf.o.v(), bf.lse.v(), false, 2);
  ATTNKIT_CHECK_CLOSE(bf.o.cv(), naive.o.cv(), 1e-4);
  ATTNKIT_CHECK_CLOSE(bf.lse.cv(), naive.lse.cv(), 1e-4);
}

TEST_CASE("mla: the default scale is (Dn + Dr)^-0.5 and YaRN's mscale", "[mla]") {
  problem<double> pr(1, 1, 9, 2, 8, 4, 16, 8, 5);
  mla_params p, q;
  q.scale = 1 / std::sqrt(12.0);
  outputs<double> a(pr), b(pr);
  run_naive<false>(pr, p, a.o.v(), a.lse.v(), false);
  run_naive<false>(pr, q, b.o.v(), b.lse.v(), false);
  ATTNKIT_CHECK_CLOSE(a.o.cv(), b.o.cv(), 1e-14);
  q.scale = 1 / std::sqrt(576.0);  // the row width's scale is a different result
  run_naive<false>(pr, q, b.o.v(), b.lse.v(), false);
  CHECK(test::compare(a.o.cv(), b.o.cv()).max_abs > 1e-3);
  CHECK(yarn_mscale(1) == 1);
  CHECK(yarn_mscale(40) == Approx(1.3688879).epsilon(1e-6));
}

TEST_CASE("mla: bad inputs name the tensor and the dimension", "[mla]") {
  problem<float> pr(1, 1, 8, 2, 8, 4, 16, 8, 3);
  const index_t W = pr.Dc + pr.Dr;
  owned_tensor<float, 3> kv({1, 8, W});
  std::vector<std::int32_t> sl{8};
  const auto seqlens = make_view<const std::int32_t>(sl.data(), 1);
  owned_tensor<float, 4> q({1, 1, 2, W}), q_bad({1, 1, 2, W - 1}), o({1, 1, 2, pr.Dc}),
      o_bad({1, 1, 2, pr.Dc + 1});
  test::copy(kv.cv(), kv.v());
  mla_params p;
  p.dn = 8;
  latent_cache<float> c{kv.v(), seqlens, pr.Dc};
  CHECK_THROWS_WITH(mla_attention_absorbed(p, q_bad.cv(), c, o.v()),
                    Contains("tensor 'q' [B,Tq,H,Dc+Dr] dim 3 (Dc+Dr): expected 20"));
  CHECK_THROWS_WITH(mla_attention_absorbed(p, q.cv(), c, o_bad.v()),
                    Contains("tensor 'o' [B,Tq,H,Dc] dim 3 (Dc): expected 16"));
  c.dc = 0;
  CHECK_THROWS_WITH(mla_attention_absorbed(p, q.cv(), c, o.v()),
                    Contains("latent cache option 'dc' must be in [1, 20]"));
  c.dc = pr.Dc;
  p.dn = 0;
  CHECK_THROWS_WITH(mla_attention_absorbed(p, q.cv(), c, o.v()), Contains("needs option 'dn'"));
  owned_tensor<float, 3> w_bad({3, pr.Dn, pr.Dc});
  owned_tensor<float, 4> on({1, 1, 2, pr.Dv});
  CHECK_THROWS_WITH(mla_attention_naive(p, pr.q_nope.cv(), pr.q_pe.cv(), pr.c_kv.cv(), pr.k_pe.cv(),
                                        w_bad.cv(), pr.w_uv.cv(), on.v()),
                    Contains("tensor 'w_uk' [H,Dn,Dc] dim 0 (H): expected 2, got 3"));
  owned_tensor<float, 4> qa({1, 1, 2, W + 1});
  CHECK_THROWS_WITH(mla_absorb_q(p, pr.q_nope.cv(), pr.q_pe.cv(), pr.w_uk.cv(), qa.v()),
                    Contains("tensor 'q_abs' [B,T,H,Dc+Dr] dim 3 (Dc+Dr): expected 20"));
}

TEMPLATE_TEST_CASE("mla: mla_attention computes either form from the model's tensors", "[mla]",
                   double, float) {
  using T = TestType;
  const double tol = test::tolerance<T>() * (std::is_same_v<T, float> ? 5 : 1);
  for (const index_t Tq : {1, 3}) {
    const problem<T> pr(2, Tq, 37, 3, 12, 6, 40, 20, 41 + std::uint64_t(Tq));
    mla_params p;
    p.causal = true;
    outputs<T> ref(pr);
    run_naive<true>(pr, p, ref.o.v(), ref.lse.v(), true);
    for (const mla_form form : {mla_form::automatic, mla_form::absorbed, mla_form::naive}) {
      p.form = form;
      outputs<T> out(pr);
      softmax_extras<T> x;
      x.lse = out.lse.v();
      x.sinks = make_view<const T>(pr.sinks.data(), pr.H);
      mla_attention(p, pr.q_nope.cv(), pr.q_pe.cv(), pr.c_kv.cv(), pr.k_pe.cv(), pr.w_uk.cv(),
                    pr.w_uv.cv(), out.o.v(), x);
      INFO("Tq=" << Tq << " form=" << int(form));
      ATTNKIT_CHECK_CLOSE(out.o.cv(), ref.o.cv(), tol);
      ATTNKIT_CHECK_CLOSE(out.lse.cv(), ref.lse.cv(), tol);
    }
  }
  mla_params p;
  CHECK(detail::resolve_form(p, 1) == mla_form::absorbed);
  CHECK(detail::resolve_form(p, kMlaNaiveMinQueries - 1) == mla_form::absorbed);
  CHECK(detail::resolve_form(p, kMlaNaiveMinQueries) == mla_form::naive);
  p.form = mla_form::absorbed;
  CHECK(detail::resolve_form(p, 1 << 20) == mla_form::absorbed);
}

TEMPLATE_TEST_CASE("mla: a varlen batch over a paged latent cache equals one call per sequence",
                   "[mla][varlen]", double, float) {
  using T = TestType;
  // decode row, MTP pair, empty sequence, prefill chunk after a prompt
  const std::vector<std::int32_t> cached = {30, 12, 4, 9}, fresh = {1, 2, 0, 13};
  const index_t N = 4, H = 5, Dc = 24, Dr = 8, W = Dc + Dr, P = 6, max_pages = 8;
  std::vector<std::int32_t> cu(1, 0);
  for (auto t : fresh) cu.push_back(cu.back() + t);
  const index_t total = cu.back();
  owned_tensor<T, 4> q({1, total, H, W}), o({1, total, H, Dc}), o_sep({1, total, H, Dc});
  owned_tensor<T, 3> kv_new({1, total, W}), lse({1, H, total}), lse_sep({1, H, total});
  owned_tensor<T, 3> pages({N * max_pages, P, W}), pages_sep({N * max_pages, P, W});
  std::mt19937_64 rng(21);
  test::fill_normal(q.v(), rng);
  test::fill_normal(kv_new.v(), rng);
  test::fill_normal(pages.v(), rng);
  test::copy(pages.cv(), pages_sep.v());
  std::vector<std::int32_t> table(std::size_t(N * max_pages));
  for (std::size_t i = 0; i < table.size(); ++i)  // pages handed out backwards
    table[i] = std::int32_t(table.size() - 1 - i);
  const auto bt = make_view<const std::int32_t>(table.data(), N, max_pages);
  mla_params p;
  p.dn = 16;
  p.causal = true;
  softmax_extras<T> x;
  x.cu_seqlens_q = make_view<const std::int32_t>(cu.data(), N + 1);
  x.lse = lse.v();
  mla_attention_absorbed(p, q.cv(),
                         paged_latent_cache<T>{pages.v(), bt, make_view(cached.data(), N), Dc},
                         o.v(), x, kv_new.cv());
  for (index_t n = 0; n < N; ++n) {
    const index_t t0 = cu[std::size_t(n)], t1 = cu[std::size_t(n) + 1];
    owned_tensor<T, 3> l({1, H, t1 - t0});
    softmax_extras<T> xs;
    xs.lse = l.v();
    mla_attention_absorbed(p, slice(q.cv(), 1, t0, t1),
                           paged_latent_cache<T>{pages_sep.v(), slice(bt, 0, n, n + 1),
                                                 make_view(&cached[std::size_t(n)], 1), Dc},
                           slice(o_sep.v(), 1, t0, t1), xs, slice(kv_new.cv(), 1, t0, t1));
    for (index_t h = 0; h < H; ++h)
      for (index_t t = t0; t < t1; ++t) lse_sep.view(0, h, t) = l.view(0, h, t - t0);
  }
  ATTNKIT_CHECK_CLOSE(o.cv(), o_sep.cv(), test::tolerance<T>());
  ATTNKIT_CHECK_CLOSE(lse.cv(), lse_sep.cv(), test::tolerance<T>());
  CHECK(pages.buf == pages_sep.buf);  // the same tokens appended to the same pages
}
