// SPDX-License-Identifier: Apache-2.0
// Core: tensor views (every coordinate, CuTe-style), masks, 16-bit conversions, executors and the
// online-softmax state.
#include <atomic>
#include <chrono>
#include <cstring>
#include <support/test_util.hpp>

using namespace attnkit;

TEST_CASE("core: a view maps every coordinate through its strides", "[core][view]") {
  std::vector<int> buf(1000);
  std::iota(buf.begin(), buf.end(), 0);
  const std::array<index_t, 3> ext{3, 4, 5};
  const std::array<index_t, 3> strides =
      GENERATE(std::array<index_t, 3>{20, 5, 1}, std::array<index_t, 3>{1, 3, 12},
               std::array<index_t, 3>{100, 7, 1});
  tensor_view<int, 3> v(buf.data() + 2, ext, strides);
  test::for_each_index<3>(ext, [&](const auto& i) {
    CHECK(v(i[0], i[1], i[2]) == 2 + i[0] * strides[0] + i[1] * strides[1] + i[2] * strides[2]);
  });
  // slice keeps rank and shifts one axis; subview drops it; transpose swaps two
  auto s = slice(v, 1, 1, 3);
  auto sub = subview(v, 2, 4);
  auto tr = transpose(v, 0, 2);
  test::for_each_index<3>(
      s.extents(), [&](const auto& i) { CHECK(s(i[0], i[1], i[2]) == v(i[0], i[1] + 1, i[2])); });
  test::for_each_index<2>(sub.extents(),
                          [&](const auto& i) { CHECK(sub(i[0], i[1]) == v(i[0], i[1], 4)); });
  test::for_each_index<3>(
      tr.extents(), [&](const auto& i) { CHECK(tr(i[0], i[1], i[2]) == v(i[2], i[1], i[0])); });
  CHECK(v.is_inner_contiguous() == (strides[2] == 1));
  CHECK_THROWS_AS(slice(v, 1, 2, 5), error);
  CHECK_THROWS_AS(subview(v, 0, 3), error);
}

TEST_CASE("core: dense views, const conversion and Eigen interop", "[core][view]") {
  std::vector<float> buf(24);
  std::iota(buf.begin(), buf.end(), 0.0f);
  auto v = make_view(buf.data(), 2, 3, 4);
  CHECK(v.is_contiguous());
  CHECK(v.size() == 24);
  cview<float, 3> c = v;
  CHECK(c(1, 2, 3) == 23.0f);
  auto m = as_eigen(subview(v, 0, 1));  // [3, 4] row-major
  CHECK(m(2, 3) == 23.0f);
  CHECK(m.rows() == 3);
  auto padded = tensor_view<float, 2>(buf.data(), {3, 4}, {6, 1});
  CHECK(as_eigen(padded)(2, 1) == 13.0f);
  CHECK_THROWS_AS(as_eigen(transpose(padded, 0, 1)), error);
  Eigen::Matrix<float, 2, 3, Eigen::RowMajor> e;
  e << 1, 2, 3, 4, 5, 6;
  auto ev = view_of(e);
  CHECK(ev(1, 2) == 6.0f);
}

TEST_CASE("core: mask ranges agree with the per-element rule", "[core][mask]") {
  const bool causal = GENERATE(false, true);
  const index_t left = GENERATE(-1, 0, 3, 100), right = GENERATE(-1, 0, 2);
  const index_t n_sink = GENERATE(0, 1, 4), chunk = GENERATE(0, 1, 4);
  const mask_rule m{causal, left, right, n_sink, chunk};
  for (index_t tq : {1, 5, 9})
    for (index_t tk : {0, 1, 5, 12})
      for (index_t i = 0; i < tq; ++i) {
        index_t lo, hi, sink_hi;
        m.ranges(i, tq, tk, lo, hi, sink_hi);
        CHECK((sink_hi < 0 || sink_hi < lo - 1));  // sinks: disjoint from the window, below it
        for (index_t j = -2; j < tk + 2; ++j) {
          INFO("causal=" << causal << " left=" << left << " right=" << right << " n_sink=" << n_sink
                         << " chunk=" << chunk << " tq=" << tq << " tk=" << tk << " i=" << i
                         << " j=" << j);
          const bool in_ranges = (j >= lo && j <= hi) || (j >= 0 && j <= sink_hi);
          CHECK(m.visible(i, j, tq, tk) == (in_ranges && j >= 0 && j < tk));
        }
      }
}

TEST_CASE("core: chunked-local and sink visibility by the definitions", "[core][mask]") {
  // chunk C = 4, causal: position 9 sees 8, 9 (its chunk [8, 12)); position 7 sees 4..7
  const mask_rule chunked{true, -1, -1, 0, 4};
  for (index_t j = 0; j < 12; ++j) {
    CHECK(chunked.visible(9, j, 12, 12) == (j == 8 || j == 9));
    CHECK(chunked.visible(7, j, 12, 12) == (j >= 4 && j <= 7));
  }
  // StreamingLLM: window of 3 keys (left 2) and 2 sinks at position 10
  const mask_rule sinks{true, 2, 0, 2, 0};
  for (index_t j = 0; j < 12; ++j)
    CHECK(sinks.visible(10, j, 12, 12) == (j < 2 || (j >= 8 && j <= 10)));
}

TEST_CASE("core: bf16 and fp16 round to nearest even and keep specials", "[core][types]") {
  CHECK(float(bf16(1.0f)) == 1.0f);
  CHECK(float(bf16(1.00390625f)) == 1.0f);       // halfway, even stays
  CHECK(float(bf16(1.01171875f)) == 1.015625f);  // halfway, rounds to even upward
  CHECK(std::isnan(float(bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isinf(float(bf16(std::numeric_limits<float>::infinity()))));
  CHECK(float(fp16(1.0f)) == 1.0f);
  CHECK(float(fp16(65504.0f)) == 65504.0f);
  CHECK(std::isinf(float(fp16(65520.0f))));
  CHECK(float(fp16(65519.0f)) == 65504.0f);
  CHECK(float(fp16(5.960464477539063e-08f)) == 5.960464477539063e-08f);  // smallest subnormal
  CHECK(float(fp16(2.98023223876953125e-08f)) == 0.0f);                  // half of it: ties to even
  CHECK(float(fp16(-0.333333f)) == Approx(-0.333333f).epsilon(1e-3));
  CHECK(std::isnan(float(fp16(std::numeric_limits<float>::quiet_NaN()))));
  // every fp16 bit pattern survives a round trip through float
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = fp16::to_float(std::uint16_t(b));
    if (std::isnan(f)) continue;
    REQUIRE(fp16::from_float(f) == std::uint16_t(b));
  }
  // relative rounding error bounds over random values
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> u(-100.0f, 100.0f);
  for (int i = 0; i < 10000; ++i) {
    const float x = u(rng);
    CHECK(std::abs(float(bf16(x)) - x) <= std::abs(x) * (1.0f / 256));
    CHECK(std::abs(float(fp16(x)) - x) <= std::abs(x) * (1.0f / 2048) + 1e-7f);
  }
}

TEST_CASE("core: SIMD loads convert 16-bit storage exactly", "[core][simd]") {
  std::vector<bf16> b(37);
  std::vector<fp16> h(37);
  for (std::size_t i = 0; i < b.size(); ++i) {
    b[i] = bf16(float(i) * 0.37f - 3.0f);
    h[i] = fp16(float(i) * 0.37f - 3.0f);
  }
  std::vector<float> out(37);
  simd::convert<float>(b.data(), out.data(), 37);
  for (std::size_t i = 0; i < b.size(); ++i) CHECK(out[i] == float(b[i]));
  simd::convert<float>(h.data(), out.data(), 37, 2.0f);
  for (std::size_t i = 0; i < h.size(); ++i) CHECK(out[i] == 2.0f * float(h[i]));
}

TEST_CASE("core: SIMD transpose of any block size stays inside the destination", "[core][simd]") {
  auto check = [](auto zero) {
    using T = decltype(zero);
    for (index_t rows : {1, 7, 8, 9, 16, 23, 64})
      for (index_t cols : {1, 5, 8, 13, 16, 130}) {
        const index_t lds = cols + 3, ldd = rows + 5;
        std::vector<T> src(std::size_t(rows * lds)), dst(std::size_t(cols * ldd + 64), T(-1));
        for (std::size_t i = 0; i < src.size(); ++i) src[i] = T(i);
        simd::transpose<T, simd::default_arch>(src.data(), lds, dst.data(), ldd, rows, cols);
        INFO("rows " << rows << " cols " << cols);
        for (index_t j = 0; j < cols; ++j)
          for (index_t i = 0; i < ldd; ++i)
            CHECK(dst[std::size_t(j * ldd + i)] ==
                  (i < rows ? src[std::size_t(i * lds + j)] : T(-1)));
        for (std::size_t g = std::size_t(cols * ldd); g < dst.size(); ++g) CHECK(dst[g] == T(-1));
      }
  };
  check(0.0f);
  check(0.0);
}

TEST_CASE("core: SIMD horizontal sums keep their order", "[core][simd]") {
  // reduce_add_n<N>: out[a] = sum of the lanes of b[a], for the 4-at-a-time path and (with 16
  // float lanes) the transposing add tree. Every batch has a different lane sum (small integers,
  // exact in float), so any swapped lane or source shows up exactly.
  auto check = [](auto zero, auto n) {
    using T = decltype(zero);
    constexpr int N = decltype(n)::value;
    using B = simd::batch<T>;
    constexpr std::size_t W = B::size;
    B b[N];
    T expect[N];
    for (int a = 0; a < N; ++a) {
      alignas(64) T lanes[W];
      expect[a] = 0;
      for (std::size_t l = 0; l < W; ++l) expect[a] += lanes[l] = T(1000 * a + int(l) * (a + 1));
      b[a] = B::load_aligned(lanes);
    }
    T out[N];
    simd::reduce_add_n<N>(b, out);
    for (int a = 0; a < N; ++a) CHECK(out[a] == expect[a]);
  };
  check(0.0f, std::integral_constant<int, 4>{});
  check(0.0f, std::integral_constant<int, 8>{});
  check(0.0f, std::integral_constant<int, 16>{});
  check(0.0, std::integral_constant<int, 8>{});
  check(0.0, std::integral_constant<int, 16>{});
}

TEST_CASE("core: executors run every item once and rethrow errors", "[core][executor]") {
  thread_pool pool(3);
  serial_executor serial;
  for (executor* e : std::vector<executor*>{&pool, &serial, &default_executor()}) {
    std::vector<std::atomic<int>> hits(1000);
    for (int rep = 0; rep < 5; ++rep)
      e->parallel_for(1000, [&](index_t i) { hits[std::size_t(i)]++; });
    for (auto& h : hits) CHECK(h.load() == 5);
    CHECK_THROWS_WITH(e->parallel_for(10,
                                      [](index_t i) {
                                        if (i == 7) throw std::runtime_error("item 7 failed");
                                      }),
                      "item 7 failed");
    // nested calls run inline instead of deadlocking
    std::atomic<int> nested{0};
    e->parallel_for(4, [&](index_t) { e->parallel_for(3, [&](index_t) { nested++; }); });
    CHECK(nested.load() == 12);
  }
  CHECK(pool.num_threads() == 3);
}

TEST_CASE("core: back-to-back tiny parallel_for calls never straddle", "[core][executor]") {
  // Regression: a worker that woke late for one call could claim items of the next one (run them
  // twice, or through a null body) and push the done count past the item count (a hang). Seen in
  // CI under load; a standalone loop of such calls crashed or hung within 20 s on a busy machine
  // (3 threads) or an oversubscribed pool (16 threads). This bounded version is a probabilistic
  // guard: many short calls where the caller often finishes before the workers wake, every item
  // run exactly once.
  for (int threads : {3, 16}) {
    thread_pool pool(threads);
    std::vector<std::atomic<int>> hits(8);
    long wrong = 0, calls = 0;
    const auto t0 = std::chrono::steady_clock::now();
    while (calls < 200000 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2)) {
      const index_t n = 2 + calls % 5;
      for (index_t i = 0; i < n; ++i) hits[std::size_t(i)].store(0);
      pool.parallel_for(n, [&](index_t i) { hits[std::size_t(i)].fetch_add(1); });
      for (index_t i = 0; i < n; ++i) wrong += hits[std::size_t(i)].load() != 1;
      ++calls;
    }
    INFO(threads << " threads, " << calls << " calls");
    CHECK(wrong == 0);
  }
}

TEST_CASE("core: online-softmax state merges exactly and never makes NaN", "[core][softmax]") {
  const std::vector<double> x = {0.3, -2.0, 5.0, 1.5, -0.7};
  // whole
  softmax_state<double> all;
  double w_self, w_other;
  for (double xi : x) all.merge({xi, 1.0}, w_self, w_other);
  double ref = 0;
  for (double xi : x) ref += std::exp(xi);
  CHECK(all.lse() == Approx(std::log(ref)).epsilon(1e-14));
  // empty with empty stays empty
  softmax_state<double> e1, e2;
  e1.merge(e2, w_self, w_other);
  CHECK(e1.lse() == -std::numeric_limits<double>::infinity());
  CHECK(w_self == 0.0);
  CHECK(w_other == 0.0);
  CHECK(e1.output_factor() == 0.0);
  CHECK(e1.output_factor(3.0) == 0.0);
  // a sink is an extra key of value 0: o = acc e^m / (l e^m + e^s)
  softmax_state<double> s{2.0, 3.0};
  CHECK(s.output_factor(1.0) == Approx(std::exp(2.0) / (3.0 * std::exp(2.0) + std::exp(1.0))));
  CHECK(s.output_factor(-std::numeric_limits<double>::infinity()) == Approx(1.0 / 3.0));
  CHECK(std::isfinite(s.output_factor(1000.0)));
}

TEST_CASE("core: huge extents are refused by name; a zero extent makes any view empty",
          "[core][view][errors]") {
  using Catch::Matchers::Contains;
  float x[8] = {};
  const index_t huge = index_t(1) << 62;
  const tensor_view<const float, 2> big(x, {huge, 4});
  CHECK_THROWS_WITH(detail::check_tensor({"f", "q", "A,B"}, big, {-1, -1}),
                    Contains("tensor 'q' [A,B] with extents (4611686018427387904,4) cannot be "
                             "addressed"));
  const tensor_view<const float, 2> empty(x, {0, huge});
  CHECK_NOTHROW(detail::check_tensor({"f", "q", "A,B"}, empty, {-1, -1}));
  // empty work returns at once, whatever the other extents (2^40 heads, no tokens, no state)
  const index_t H = index_t(1) << 40;
  const auto q = make_view<const float>(x, 1, 0, H, 4);
  const auto beta = make_view<const float>(x, 1, 0, H);
  const auto o = make_view(x, 1, 0, H, 4);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_NOTHROW(delta_rule(delta_params{}, q, q, q, beta, o));
  CHECK_NOTHROW(reference::delta_rule(delta_params{}, q, q, q, beta, o));
  CHECK_NOTHROW(linear_attn(linear_params{}, q, q, q, o));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
}
