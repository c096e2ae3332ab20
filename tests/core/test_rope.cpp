// SPDX-License-Identifier: Apache-2.0
// Rotary position embedding: both pair styles against the formula written out here, partial
// rotary, the three position forms, 16-bit storage, relative-position invariance of q . k, and
// YaRN frequencies / attention factor against values computed independently from the formula.
#include <attnkit/core/rope.hpp>
#include <cmath>
#include <support/test_util.hpp>
#include <vector>

using namespace attnkit;

namespace {

using Catch::Matchers::Contains;

const double kPi = std::acos(-1.0);

/// The logical elements of x [B,T,H,D] as doubles, row-major.
template <class T>
std::vector<double> values_of(const tensor_view<T, 4>& x) {
  std::vector<double> out;
  test::for_each_index<4>(
      x.extents(), [&](const auto& i) { out.push_back(to_compute<double>(test::at(x, i))); });
  return out;
}

/// RoPE written out: x [B,T,H,D] (row-major values), position pos[b][t], rotary dims d, base theta,
/// no YaRN. Returns the rotated values.
std::vector<double> rope_formula(const std::vector<double>& x, index_t B, index_t T, index_t H,
                                 index_t D, const std::vector<std::vector<double>>& pos, index_t d,
                                 double theta, rope_style style) {
  std::vector<double> y = x;
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h) {
        const index_t row = ((b * T + t) * H + h) * D;
        for (index_t i = 0; i < d / 2; ++i) {
          const double freq = std::pow(theta, -double(2 * i) / double(d));  // theta^(-2i/d)
          const double a = pos[std::size_t(b)][std::size_t(t)] * freq;
          index_t j1, j2;
          if (style == rope_style::interleaved) {
            j1 = 2 * i;
            j2 = 2 * i + 1;
          } else {
            j1 = i;
            j2 = i + d / 2;
          }
          const double x1 = x[std::size_t(row + j1)], x2 = x[std::size_t(row + j2)];
          y[std::size_t(row + j1)] = x1 * std::cos(a) - x2 * std::sin(a);
          y[std::size_t(row + j2)] = x2 * std::cos(a) + x1 * std::sin(a);
        }
      }
  return y;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

const char* style_name(rope_style s) {
  return s == rope_style::interleaved ? "interleaved" : "half_split";
}

/// A DeepSeek-V3-like YaRN setup on d = 64 rope dims.
rope_params deepseek_yarn() {
  rope_params p;
  p.theta = 10000;
  p.yarn_factor = 40;
  p.yarn_original_max_position = 4096;
  p.yarn_beta_fast = 32;
  p.yarn_beta_slow = 1;
  return p;
}

}  // namespace

TEST_CASE("rope: both styles match the formula, full and partial rotary", "[core][rope]") {
  const rope_style style = GENERATE(rope_style::interleaved, rope_style::half_split);
  const index_t rotary_dim = GENERATE(0, 6, 2);
  const bool per_batch = GENERATE(false, true);
  INFO(style_name(style) << " rotary_dim=" << rotary_dim << " per_batch=" << per_batch);
  const index_t B = 2, T = 5, H = 3, D = 10;
  const index_t d = rotary_dim == 0 ? D : rotary_dim;
  std::mt19937_64 rng(7);
  // head-first, padded layout: strides are honoured and padding is never written
  test::owned_tensor<double, 4> x({B, T, H, D}, 3, {0, 2, 1, 3});
  test::fill_normal(x.v(), rng);
  const auto before = values_of(x.v());

  std::vector<std::int32_t> pos1(T), pos2(B * T);
  std::uniform_int_distribution<std::int32_t> ud(0, 100000);
  for (auto& v : pos1) v = ud(rng);
  for (auto& v : pos2) v = ud(rng);
  std::vector<std::vector<double>> pos(B, std::vector<double>(T));
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      pos[std::size_t(b)][std::size_t(t)] =
          per_batch ? pos2[std::size_t(b * T + t)] : pos1[std::size_t(t)];

  rope_params p;
  p.rotary_dim = rotary_dim;
  p.style = style;
  p.theta = 10000;
  if (per_batch)
    apply_rope(p, x.v(), make_view(static_cast<const std::int32_t*>(pos2.data()), B, T));
  else
    apply_rope(p, x.v(), make_view(static_cast<const std::int32_t*>(pos1.data()), T));
  const auto after = values_of(x.v());
  const auto want = rope_formula(before, B, T, H, D, pos, d, 10000, style);
  INFO("max diff " << max_abs_diff(after, want));
  CHECK(max_abs_diff(after, want) <= 1e-12);
  CHECK(test::padding_untouched(x));
  // dims [d, D) are bitwise unchanged
  for (std::size_t row = 0; row < std::size_t(B * T * H); ++row)
    for (index_t j = d; j < D; ++j) {
      const std::size_t k = row * std::size_t(D) + std::size_t(j);
      CHECK(after[k] == before[k]);
    }
  // negative control: the other style gives a different result (for d >= 4)
  if (d >= 4) {
    const auto other = rope_formula(
        before, B, T, H, D, pos, d, 10000,
        style == rope_style::interleaved ? rope_style::half_split : rope_style::interleaved);
    CHECK(max_abs_diff(after, other) > 1e-3);
  }
}

TEST_CASE("rope: bad options and shapes name the option or tensor", "[core][rope]") {
  std::vector<float> buf(2 * 3 * 2 * 8, 1.0f);
  auto x = make_view(buf.data(), 2, 3, 2, 8);
  rope_params p;
  p.rotary_dim = 5;
  CHECK_THROWS_AS(apply_rope(p, x, index_t(0)), error);
  CHECK_THROWS_WITH(apply_rope(p, x, index_t(0)), Contains("apply_rope") &&
                                                      Contains("option 'rotary_dim' = 5") &&
                                                      Contains("must be even"));
  CHECK_THROWS_WITH(rope_inv_freq(p, 8), Contains("option 'rotary_dim'"));
  p.rotary_dim = 10;
  CHECK_THROWS_WITH(apply_rope(p, x, index_t(0)),
                    Contains("option 'rotary_dim' = 10 exceeds the head dim D = 8"));
  p.rotary_dim = -2;
  CHECK_THROWS_WITH(apply_rope(p, x, index_t(0)), Contains("option 'rotary_dim'"));
  p.rotary_dim = 0;  // whole head dim, odd
  std::vector<float> odd(2 * 3 * 2 * 7);
  CHECK_THROWS_WITH(
      apply_rope(p, make_view(odd.data(), 2, 3, 2, 7), index_t(0)),
      Contains("option 'rotary_dim' = 0 (the whole head dim D = 7") && Contains("must be even"));
  CHECK_THROWS_WITH(rope_inv_freq(p, 7), Contains("option 'rotary_dim'"));

  p = rope_params{};
  p.theta = 0;
  CHECK_THROWS_WITH(apply_rope(p, x, index_t(0)), Contains("option 'theta'"));
  p = rope_params{};
  p.yarn_factor = 0.5;
  CHECK_THROWS_WITH(apply_rope(p, x, index_t(0)), Contains("option 'yarn_factor'"));
  p = rope_params{};
  p.yarn_factor = 4;  // original context missing
  CHECK_THROWS_WITH(apply_rope(p, x, index_t(0)), Contains("option 'yarn_original_max_position'"));
  CHECK_THROWS_WITH(rope_attention_factor(p),
                    Contains("rope_attention_factor") && Contains("'yarn_original_max_position'"));
  p.yarn_original_max_position = 4096;
  p.yarn_beta_fast = 0.5;  // below beta_slow
  CHECK_THROWS_WITH(apply_rope(p, x, index_t(0)), Contains("option 'yarn_beta_fast'"));
  p = rope_params{};
  p.yarn_mscale = -1;
  CHECK_THROWS_WITH(apply_rope(p, x, index_t(0)), Contains("option 'yarn_mscale'"));

  // positions of the wrong shape
  p = rope_params{};
  std::vector<std::int32_t> pos(6, 0);
  CHECK_THROWS_WITH(apply_rope(p, x, make_view(static_cast<const std::int32_t*>(pos.data()), 2)),
                    Contains("tensor 'positions'") && Contains("dim 0 (T): expected 3, got 2"));
  CHECK_THROWS_WITH(apply_rope(p, x, make_view(static_cast<const std::int32_t*>(pos.data()), 3, 2)),
                    Contains("tensor 'positions'") && Contains("dim 0 (B): expected 2, got 3"));
  CHECK_THROWS_WITH(apply_rope(p, x, index_t(1) << 60), Contains("argument 'pos0'"));
  // an in-place output whose strides overlap would be rotated twice
  auto overlapping = tensor_view<float, 4>(buf.data(), {2, 3, 2, 8}, {8, 8, 8, 1});
  CHECK_THROWS_WITH(apply_rope(p, overlapping, index_t(0)), Contains("tensor 'x'"));
  // rotary_dim = 0 on an empty head dim is a no-op, not an error
  CHECK(rope_inv_freq(p, 0).empty());
}

TEST_CASE("rope: positions [T], positions [B,T] and pos0 agree", "[core][rope]") {
  const rope_style style = GENERATE(rope_style::interleaved, rope_style::half_split);
  const index_t B = 3, T = 7, H = 2, D = 16, pos0 = 1234;
  std::mt19937_64 rng(11);
  test::owned_tensor<float, 4> x0({B, T, H, D});
  test::fill_normal(x0.v(), rng);
  auto x1 = test::clone(x0), x2 = test::clone(x0);
  std::vector<std::int32_t> p1(T), p2(B * T);
  for (index_t t = 0; t < T; ++t) {
    p1[std::size_t(t)] = std::int32_t(pos0 + t);
    for (index_t b = 0; b < B; ++b) p2[std::size_t(b * T + t)] = std::int32_t(pos0 + t);
  }
  rope_params p;
  p.style = style;
  p.rotary_dim = 12;
  apply_rope(p, x0.v(), pos0);
  apply_rope(p, x1.v(), make_view(static_cast<const std::int32_t*>(p1.data()), T));
  apply_rope(p, x2.v(), make_view(static_cast<const std::int32_t*>(p2.data()), B, T));
  CHECK(x0.buf == x1.buf);
  CHECK(x0.buf == x2.buf);
  // a different position for one token of one batch row changes that token only
  p2[std::size_t(1 * T + 3)] += 1;
  test::owned_tensor<float, 4> in({B, T, H, D});
  std::mt19937_64 rng2(11);
  test::fill_normal(in.v(), rng2);
  auto y1 = test::clone(in), y2 = test::clone(in);
  apply_rope(p, y1.v(), pos0);
  apply_rope(p, y2.v(), make_view(static_cast<const std::int32_t*>(p2.data()), B, T));
  test::for_each_index<4>(y1.view.extents(), [&](const auto& i) {
    const bool moved = i[0] == 1 && i[1] == 3 && i[3] < 12;
    if (!moved) CHECK(test::at(y1.view, i) == test::at(y2.view, i));
  });
  CHECK(test::at(y1.view, {1, 3, 0, 0}) != test::at(y2.view, {1, 3, 0, 0}));
}

TEST_CASE("rope: 16-bit storage and large positions stay close to the double formula",
          "[core][rope]") {
  const rope_style style = GENERATE(rope_style::interleaved, rope_style::half_split);
  const index_t B = 2, T = 4, H = 2, D = 64, pos0 = GENERATE(0, 2000000);
  std::mt19937_64 rng(3);
  test::owned_tensor<double, 4> xd({B, T, H, D});
  test::fill_normal(xd.v(), rng);
  test::owned_tensor<float, 4> xf({B, T, H, D});
  test::owned_tensor<bf16, 4> xb({B, T, H, D});
  test::owned_tensor<fp16, 4> xh({B, T, H, D});
  test::copy(xd.cv(), xf.v());
  test::copy(xd.cv(), xb.v());
  test::copy(xd.cv(), xh.v());
  // the reference starts from the 16-bit inputs, so only the rotation's error is measured
  const auto in_b = values_of(xb.v()), in_h = values_of(xh.v()), in_f = values_of(xf.v());
  std::vector<std::vector<double>> pos(B, std::vector<double>(T));
  for (auto& row : pos)
    for (index_t t = 0; t < T; ++t) row[std::size_t(t)] = double(pos0 + t);
  rope_params p;
  p.style = style;
  apply_rope(p, xf.v(), pos0);
  apply_rope(p, xb.v(), pos0);
  apply_rope(p, xh.v(), pos0);
  // float: angles in double keep large positions accurate (float angles would be ~0.1 rad off)
  CHECK(max_abs_diff(values_of(xf.v()), rope_formula(in_f, B, T, H, D, pos, D, 10000, style)) <=
        1e-5);
  // 16-bit: one rounding of the output (bf16: 2^-9 relative, |x| < ~5)
  CHECK(max_abs_diff(values_of(xb.v()), rope_formula(in_b, B, T, H, D, pos, D, 10000, style)) <=
        test::tolerance<bf16>());
  CHECK(max_abs_diff(values_of(xh.v()), rope_formula(in_h, B, T, H, D, pos, D, 10000, style)) <=
        5e-3);
}

TEST_CASE("rope: q . k depends only on the relative position", "[core][rope]") {
  const rope_style style = GENERATE(rope_style::interleaved, rope_style::half_split);
  const bool yarn = GENERATE(false, true);
  INFO(style_name(style) << " yarn=" << yarn);
  const index_t D = 64;
  rope_params p = yarn ? deepseek_yarn() : rope_params{};
  p.style = style;
  p.rotary_dim = 48;  // partial: the pass-through dims contribute a constant
  std::mt19937_64 rng(5);
  std::vector<double> q(D), k(D);
  std::normal_distribution<double> nd;
  for (auto& v : q) v = nd(rng);
  for (auto& v : k) v = nd(rng);
  const auto dot_at = [&](index_t m, index_t n) {
    std::vector<double> qr = q, kr = k;
    apply_rope(p, make_view(qr.data(), 1, 1, 1, D), m);
    apply_rope(p, make_view(kr.data(), 1, 1, 1, D), n);
    double s = 0;
    for (index_t j = 0; j < D; ++j) s += qr[std::size_t(j)] * kr[std::size_t(j)];
    return s;
  };
  const index_t m = GENERATE(0, 17, 5000), n = GENERATE(0, 3, 4999);
  const index_t shift = GENERATE(1, 100, 123457);
  const double base = dot_at(m, n), shifted = dot_at(m + shift, n + shift);
  CHECK(std::abs(shifted - base) <= 1e-11 * std::max(1.0, std::abs(base)));
  // negative control: moving q alone changes the score
  CHECK(std::abs(dot_at(m + 1, n) - base) > 1e-6);
}

TEST_CASE("rope: YaRN frequencies match the formula computed here", "[core][rope][yarn]") {
  const index_t d = 64;
  rope_params plain;
  const auto f0 = rope_inv_freq(plain, d);
  REQUIRE(f0.size() == std::size_t(d / 2));
  for (index_t i = 0; i < d / 2; ++i)
    CHECK(f0[std::size_t(i)] ==
          Approx(std::pow(10000.0, -2.0 * double(i) / double(d))).epsilon(1e-15));

  SECTION("factor 1 is plain RoPE") {
    rope_params p = deepseek_yarn();
    p.yarn_factor = 1;
    CHECK(rope_inv_freq(p, d) == f0);
    CHECK(rope_attention_factor(p) == 1.0);
  }

  SECTION("factor 40, original 4096, beta 32 / 1 (DeepSeek-V3's rope dims)") {
    const rope_params p = deepseek_yarn();
    const auto f = rope_inv_freq(p, d);
    REQUIRE(f.size() == std::size_t(d / 2));
    // correction range: pair i turns L * theta^(-2i/d) / (2 pi) times over L tokens; solve for
    // r turns: i = d ln(L / (2 pi r)) / (2 ln theta).
    const auto pair_for_turns = [&](double r) {
      return double(d) * std::log(4096.0 / (2 * kPi * r)) / (2 * std::log(10000.0));
    };
    CHECK(pair_for_turns(32) == Approx(10.4722408103).epsilon(1e-9));
    CHECK(pair_for_turns(1) == Approx(22.5134406369).epsilon(1e-9));
    const double low = 10, high = 23;  // floor / ceil of the two
    for (index_t i = 0; i < d / 2; ++i) {
      const double plain_f = f0[std::size_t(i)];
      INFO("pair " << i);
      if (i <= 10) {
        CHECK(f[std::size_t(i)] == plain_f);  // high frequencies: unscaled (extrapolated)
      } else if (i >= 23) {
        CHECK(f[std::size_t(i)] == Approx(plain_f / 40).epsilon(1e-15));  // low: interpolated
      } else {
        const double ramp = (double(i) - low) / (high - low);
        CHECK(f[std::size_t(i)] ==
              Approx(plain_f * (1 - ramp) + plain_f / 40 * ramp).epsilon(1e-14));
        CHECK(f[std::size_t(i)] < plain_f);
        CHECK(f[std::size_t(i)] > plain_f / 40);
      }
    }
    // a few values written out: pair 16 = theta^(-0.5) * (1 - 6/13 + 6/13/40)
    CHECK(f[16] == Approx(0.01 * (7.0 / 13 + 6.0 / 13 / 40)).epsilon(1e-14));
    CHECK(f[11] ==
          Approx(std::pow(10000.0, -22.0 / 64) * (12.0 / 13 + 1.0 / 13 / 40)).epsilon(1e-14));
    CHECK(f[31] == Approx(std::pow(10000.0, -62.0 / 64) / 40).epsilon(1e-15));

    // without truncation the ramp runs between the unrounded bounds
    rope_params nt = p;
    nt.yarn_truncate = false;
    const auto g = rope_inv_freq(nt, d);
    const double lo = pair_for_turns(32), hi = pair_for_turns(1);
    for (index_t i = 0; i < d / 2; ++i) {
      const double ramp = std::clamp((double(i) - lo) / (hi - lo), 0.0, 1.0);
      const double plain_f = f0[std::size_t(i)];
      CHECK(g[std::size_t(i)] == Approx(plain_f * (1 - ramp) + plain_f / 40 * ramp).epsilon(1e-14));
    }
    CHECK(g[20] != f[20]);
  }

  SECTION("the cos/sin attention factor") {
    rope_params p = deepseek_yarn();
    CHECK(rope_attention_factor(p) == Approx(0.1 * std::log(40.0) + 1).epsilon(1e-15));
    CHECK(rope_attention_factor(p) == Approx(1.3688879454).epsilon(1e-10));
    p.yarn_mscale = 1;
    p.yarn_mscale_all_dim = 1;  // DeepSeek-V3: the factor cancels (it goes to the softmax scale)
    CHECK(rope_attention_factor(p) == 1.0);
    p.yarn_mscale = 1;
    p.yarn_mscale_all_dim = 0.707;
    CHECK(rope_attention_factor(p) ==
          Approx((0.1 * std::log(40.0) + 1) / (0.0707 * std::log(40.0) + 1)).epsilon(1e-15));
    p.yarn_attention_factor = 1.25;  // explicit wins
    CHECK(rope_attention_factor(p) == 1.25);

    // apply_rope scales the rotated dims by it (a rotation keeps the norm), the rest not
    p = deepseek_yarn();
    p.rotary_dim = d;
    const index_t D = d + 8;
    std::vector<double> x(static_cast<std::size_t>(D));
    std::mt19937_64 rng(9);
    std::normal_distribution<double> nd;
    for (auto& v : x) v = nd(rng);
    auto y = x;
    apply_rope(p, make_view(y.data(), 1, 1, 1, D), index_t(777));
    double nx = 0, ny = 0;
    for (index_t j = 0; j < d; ++j) {
      nx += x[std::size_t(j)] * x[std::size_t(j)];
      ny += y[std::size_t(j)] * y[std::size_t(j)];
    }
    CHECK(std::sqrt(ny) == Approx(rope_attention_factor(p) * std::sqrt(nx)).epsilon(1e-13));
    for (index_t j = d; j < D; ++j) CHECK(y[std::size_t(j)] == x[std::size_t(j)]);
    // and pair i at position m is turned by m * inv_freq[i] (checked on one pair)
    const auto f = rope_inv_freq(p, D);
    const double a = 777 * f[20], af = rope_attention_factor(p);
    CHECK(y[20] == Approx(af * (x[20] * std::cos(a) - x[52] * std::sin(a))).margin(1e-12));
    CHECK(y[52] == Approx(af * (x[52] * std::cos(a) + x[20] * std::sin(a))).margin(1e-12));
  }
}

TEST_CASE("rope: results do not depend on the executor", "[core][rope]") {
  const index_t B = 2, T = 300, H = 2, D = 64;  // several work items
  std::mt19937_64 rng(13);
  test::owned_tensor<float, 4> a({B, T, H, D});
  test::fill_normal(a.v(), rng);
  auto b = test::clone(a);
  std::vector<std::int32_t> pos(B * T);
  for (auto& v : pos) v = std::int32_t(rng() % 50000);
  const auto pv = make_view(static_cast<const std::int32_t*>(pos.data()), B, T);
  serial_executor serial;
  thread_pool pool(3);
  rope_params p = deepseek_yarn();
  p.style = rope_style::interleaved;
  p.exec = &serial;
  apply_rope(p, a.v(), pv);
  p.exec = &pool;
  apply_rope(p, b.v(), pv);
  CHECK(a.buf == b.buf);
}
