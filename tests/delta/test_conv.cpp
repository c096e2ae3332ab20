// SPDX-License-Identifier: Apache-2.0
// The short causal convolution (short_conv1d): the golden float64 cases (fast kernel and
// reference, float64 and float32), a PyTorch-convention reference (grouped conv1d with W-1 zeros
// of left padding, truncated to T), kernel against reference on awkward shapes, prefill then
// decode (in place) equals one longer prefill, varlen with an empty sequence, a state pool with
// rows out of order and skipped sequences, and errors.
#include <attnkit/delta.hpp>
#include <support/golden.hpp>
#include <support/test_util.hpp>

using namespace attnkit;
using namespace attnkit::test;
using Catch::Matchers::Contains;

namespace {

template <class E>
struct conv_case {
  using A = accum_t<E>;
  owned_tensor<E, 3> x;
  owned_tensor<E, 2> w;
  owned_tensor<E, 1> bias;
  owned_tensor<A, 3> state;
  conv_case(index_t B, index_t T, index_t D, index_t W, index_t N, std::uint64_t seed)
      : x({B, T, D}), w({D, W}), bias({D}), state({N, D, W - 1}) {
    std::mt19937_64 rng(seed);
    fill_normal(x.v(), rng);
    fill_normal(w.v(), rng, 0.5);
    fill_normal(bias.v(), rng);
    fill_normal(state.v(), rng);
  }
};

template <class E>
struct conv_out {
  owned_tensor<E, 3> y;
  owned_tensor<accum_t<E>, 3> state;
};

/// One call: fast or reference, with or without bias / state in / state out.
template <class E>
conv_out<E> run(bool ref, const conv1d_params& p, const conv_case<E>& c, bool with_bias,
                bool with_state, const cview<std::int32_t, 1>& cu = {}) {
  const auto ext = c.x.view.extents();
  conv_out<E> r{owned_tensor<E, 3>(ext), owned_tensor<accum_t<E>, 3>(c.state.view.extents())};
  conv1d_state<accum_t<E>> s;
  if (with_state) s.state_in = c.state.cv();
  s.state_out = r.state.v();
  s.cu_seqlens = cu;
  const cview<E, 1> b = with_bias ? c.bias.cv() : cview<E, 1>();
  ATTNKIT_CALL(ref, short_conv1d, p, c.x.cv(), c.w.cv(), b, r.y.v(), s);
  return r;
}

conv1d_params act(conv_activation a) {
  conv1d_params p;
  p.activation = a;
  return p;
}

}  // namespace

TEMPLATE_TEST_CASE("conv1d: golden cases", "[conv1d][golden]", double, float) {
  using E = TestType;
  using A = accum_t<E>;
  for (const char* name : {"conv_small", "conv_varlen_small"}) {
    INFO("case " << name);
    const golden_case g{"conv1d", name};
    const bool varlen = std::string(name) == "conv_varlen_small";
    const auto x = g.load<E, 3>("x");
    const auto w = g.load<E, 2>("w");
    const auto st = g.load<A, 3>("conv_state");
    const auto y_gold = g.load<double, 3>("y");
    const auto st_gold = g.load<double, 3>("conv_state_out");
    owned_tensor<E, 1> bias;
    if (!varlen) bias = g.load<E, 1>("bias");
    const std::vector<std::int32_t> cu =
        varlen ? g.load_offsets("cu_seqlens") : std::vector<std::int32_t>{};
    for (const bool ref : {false, true}) {
      INFO((ref ? "reference" : "fast kernel"));
      owned_tensor<E, 3> y(x.view.extents());
      owned_tensor<A, 3> so(st.view.extents());
      conv1d_state<A> s{
          st.cv(),
          so.v(),
          varlen ? make_view(cu.data(), index_t(cu.size())) : cview<std::int32_t, 1>(),
          {}};
      const auto p = act(varlen ? conv_activation::none : conv_activation::silu);
      ATTNKIT_CALL(ref, short_conv1d, p, x.cv(), w.cv(), varlen ? cview<E, 1>() : bias.cv(), y.v(),
                   s);
      const double tol = std::is_same_v<E, double> ? 1e-10 : 1e-5;
      const auto e = compare(y.cv(), y_gold.cv());
      const auto es = compare(so.cv(), st_gold.cv());
      CHECK(e.finite);
      CHECK(e.max_abs <= tol * e.max_ref);
      CHECK(e.rel_rms <= tol);
      CHECK(es.max_abs <= tol * es.max_ref);
    }
  }
}

TEMPLATE_TEST_CASE("conv1d: PyTorch convention (grouped conv1d, left zero padding)", "[conv1d]",
                   double, float) {
  using E = TestType;
  const index_t B = 2, T = 37, D = 11, W = 4;
  const conv_case<E> c(B, T, D, W, B, 5);
  const auto r = run(false, act(conv_activation::none), c, true, false);
  // F.conv1d(x^T, w[:, None, :], bias, padding=W-1, groups=D)[..., :T]: cross-correlation over
  // the input padded with W-1 zeros on the left
  owned_tensor<double, 3> y_torch({B, T, D});
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t d = 0; d < D; ++d) {
        double acc = to_compute<double>(c.bias.view(d));
        for (index_t i = 0; i < W; ++i) {
          const index_t src = t - (W - 1) + i;
          if (src >= 0)
            acc += to_compute<double>(c.w.view(d, i)) * to_compute<double>(c.x.view(b, src, d));
        }
        y_torch.view(b, t, d) = acc;
      }
  ATTNKIT_CHECK_CLOSE(r.y.cv(), y_torch.cv(), tolerance<E>());
}

TEMPLATE_TEST_CASE("conv1d: kernel matches the reference on awkward shapes", "[conv1d]", double,
                   float, bf16) {
  using E = TestType;
  for (const index_t D : {1, 5, 33, 130})
    for (const index_t W : {1, 2, 4, 5})
      for (const index_t T : {1, 3, 65, 300}) {
        const conv_case<E> c(2, T, D, W, 2, std::uint64_t(D * 100 + W * 10 + T));
        for (const bool bias : {false, true})
          for (const bool state : {false, true})
            for (const auto a : {conv_activation::none, conv_activation::silu}) {
              INFO("D=" << D << " W=" << W << " T=" << T << " bias=" << bias << " state=" << state);
              const auto fast = run(false, act(a), c, bias, state),
                         ref = run(true, act(a), c, bias, state);
              ATTNKIT_CHECK_CLOSE(fast.y.cv(), ref.y.cv(), tolerance<E>());
              if (W > 1) ATTNKIT_CHECK_CLOSE(fast.state.cv(), ref.state.cv(), tolerance<E>());
            }
      }
}

TEMPLATE_TEST_CASE("conv1d: prefill then in-place decode equals one longer prefill", "[conv1d]",
                   double, float) {
  using E = TestType;
  using A = accum_t<E>;
  const index_t B = 2, T = 20, D = 9, W = 4, T0 = 13;
  const conv_case<E> c(B, T, D, W, B, 9);
  const auto full = run(false, act(conv_activation::silu), c, true, true);
  // prefill of T0 tokens, then token by token with the state updated in place
  owned_tensor<A, 3> st({B, D, W - 1});
  copy(c.state.cv(), st.v());
  owned_tensor<E, 3> y({B, T, D});
  const cview<E, 1> bias = c.bias.cv();
  for (index_t t0 = 0; t0 < T;) {
    const index_t t1 = t0 == 0 ? T0 : t0 + 1;
    conv1d_state<A> s{st.cv(), st.v(), {}, {}};
    short_conv1d(act(conv_activation::silu), slice(c.x.cv(), 1, t0, t1), c.w.cv(), bias,
                 slice(y.v(), 1, t0, t1), s);
    t0 = t1;
  }
  check_identity<E>("y", y.cv(), full.y.cv());
  check_identity<E>("state", st.cv(), full.state.cv());
}

TEMPLATE_TEST_CASE("conv1d: varlen with an empty sequence, and a state pool", "[conv1d]", double,
                   float) {
  using E = TestType;
  using A = accum_t<E>;
  const index_t T = 12, D = 7, W = 4;
  const std::vector<std::int32_t> cu = {0, 5, 5, 12};
  const auto cu_v = make_view(cu.data(), index_t(cu.size()));
  const conv_case<E> c(1, T, D, W, 3, 13);
  const auto fast = run(false, act(conv_activation::silu), c, true, true, cu_v);
  const auto ref = run(true, act(conv_activation::silu), c, true, true, cu_v);
  ATTNKIT_CHECK_CLOSE(fast.y.cv(), ref.y.cv(), tolerance<E>());
  ATTNKIT_CHECK_CLOSE(fast.state.cv(), ref.state.cv(), tolerance<E>());
  // the empty sequence keeps its state
  for (index_t d = 0; d < D; ++d)
    for (index_t j = 0; j < W - 1; ++j) CHECK(fast.state.view(1, d, j) == c.state.view(1, d, j));

  // a pool of 5 rows: sequences use rows 3, -1 (skipped) and 0, updated in place
  owned_tensor<A, 3> pool({5, D, W - 1});
  std::mt19937_64 rng(2);
  fill_normal(pool.v(), rng);
  const auto pool0 = clone(pool);
  const std::vector<std::int32_t> idx = {3, -1, 0};
  const std::vector<std::int32_t> cu2 = {0, 5, 9, 12};
  owned_tensor<E, 3> y({1, T, D});
  conv1d_state<A> s{pool.cv(), pool.v(), make_view(cu2.data(), index_t(4)),
                    make_view(idx.data(), index_t(3))};
  short_conv1d(act(conv_activation::silu), c.x.cv(), c.w.cv(), c.bias.cv(), y.v(), s);
  // separate calls per sequence with its own state row
  for (std::size_t n = 0; n < 3; ++n) {
    const index_t t0 = cu2[n], t1 = cu2[n + 1];
    if (idx[n] < 0) {
      for (index_t t = t0; t < t1; ++t)
        for (index_t d = 0; d < D; ++d) CHECK(to_compute<double>(y.view(0, t, d)) == 0.0);
      continue;
    }
    owned_tensor<A, 3> st({1, D, W - 1});
    copy(slice(pool0.cv(), 0, idx[n], idx[n] + 1), st.v());
    owned_tensor<E, 3> yn({1, t1 - t0, D});
    conv1d_state<A> sn{st.cv(), st.v(), {}, {}};
    short_conv1d(act(conv_activation::silu), slice(c.x.cv(), 1, t0, t1), c.w.cv(), c.bias.cv(),
                 yn.v(), sn);
    check_identity<E>("y", slice(y.cv(), 1, t0, t1), yn.cv());
    check_identity<E>("state row", slice(pool.cv(), 0, idx[n], idx[n] + 1), st.cv());
  }
  // rows no sequence names are untouched
  for (const index_t r : {1, 2, 4})
    for (index_t d = 0; d < D; ++d)
      for (index_t j = 0; j < W - 1; ++j) CHECK(pool.view(r, d, j) == pool0.view(r, d, j));
}

TEST_CASE("conv1d: clear errors", "[conv1d][errors]") {
  const conv_case<float> c(1, 6, 4, 4, 1, 1);
  owned_tensor<float, 3> y({1, 6, 4});
  const conv1d_params p;
  auto call = [&](const conv1d_state<float>& s, const cview<float, 2>& w) {
    short_conv1d(p, c.x.cv(), w, cview<float, 1>(), y.v(), s);
  };
  owned_tensor<float, 3> pool({2, 4, 3});
  const std::vector<std::int32_t> bad = {2}, dup = {0, 0}, cu = {0, 3, 6};
  CHECK_THROWS_WITH(call({pool.cv(), pool.v(), {}, make_view(bad.data(), index_t(1))}, c.w.cv()),
                    Contains("state_indices[0] = 2 is not a pool row in [0, 2)"));
  CHECK_THROWS_WITH(call({pool.cv(), pool.v(), make_view(cu.data(), index_t(3)),
                          make_view(dup.data(), index_t(2))},
                         c.w.cv()),
                    Contains("names a pool row another sequence uses"));
  owned_tensor<float, 2> w5({4, 5});
  CHECK_THROWS_WITH(call({c.state.cv(), {}, {}, {}}, w5.cv()),
                    Contains("tensor 'state_in' [N,D,W-1] dim 2 (W-1)"));
  owned_tensor<float, 2> w0({4, 0});
  CHECK_THROWS_WITH(call({}, w0.cv()), Contains("kernel width must be >= 1"));
  CHECK_THROWS_WITH(call({{}, {}, {}, make_view(bad.data(), index_t(1))}, c.w.cv()),
                    Contains("'state_indices' needs a state pool"));
  owned_tensor<float, 3> x2({2, 3, 4}), y2({2, 3, 4});
  CHECK_THROWS_WITH(short_conv1d(p, x2.cv(), c.w.cv(), cview<float, 1>(), y2.v(),
                                 {{}, {}, make_view(cu.data(), index_t(3)), {}}),
                    Contains("varlen (cu_seqlens) needs B = 1"));
  CHECK_THROWS_WITH(short_conv1d(p, y.cv(), c.w.cv(), cview<float, 1>(), y.v()),
                    Contains("output tensor 'y' overlaps tensor 'x'"));
}

TEMPLATE_TEST_CASE("conv1d: a NaN input reaches only the W outputs that see it",
                   "[conv1d][invisible]", double, float) {
  using E = TestType;
  const index_t T = 300, D = 20, W = 4, j = 256;  // j starts the second work item
  const conv_case<E> c(1, T, D, W, 1, 21);
  const auto clean = run(false, act(conv_activation::silu), c, true, true);
  conv_case<E> dirty = c;
  dirty.x = clone(c.x);
  for (index_t d = 0; d < D; ++d) dirty.x.view(0, j, d) = std::numeric_limits<E>::quiet_NaN();
  const auto r = run(false, act(conv_activation::silu), dirty, true, true);
  for (index_t t = 0; t < T; ++t) {
    const bool sees = t >= j && t < j + W;
    bool same = true, finite = true;
    for (index_t d = 0; d < D; ++d) {
      same &= r.y.view(0, t, d) == clean.y.view(0, t, d);
      finite &= std::isfinite(double(r.y.view(0, t, d)));
    }
    INFO("t=" << t);
    if (sees)
      CHECK(!finite);
    else
      CHECK((same && finite));
  }
}
