// SPDX-License-Identifier: Apache-2.0
// Standard attention against the golden float64 cases in tests/data/softmax (computed by an
// independent NumPy implementation): the reference and the fast kernel, dense and varlen, and for
// the non-varlen cases through a contiguous and a paged KV cache (loaded, and loaded + appended).
#include <attnkit/io/npy.hpp>
#include <string>
#include <support/golden.hpp>
#include <support/test_util.hpp>

using namespace attnkit;
using namespace attnkit::test;

namespace {

// Options of each case, as recorded in its meta.json.
struct golden_case {
  const char* name;
  bool causal;
  index_t window_left, window_right;
  double softcap;
  bool sinks, varlen;
  index_t n_sink = 0, chunk = 0;
};

const golden_case kCases[] = {
    {"causal_gqa", true, -1, -1, 0.0, false, false},
    {"sinks_softcap", true, -1, -1, 5.0, true, false},
    {"varlen", true, -1, -1, 0.0, false, true},
    {"window", true, 4, 0, 0.0, false, false},
    {"window_nsink", true, 5, 0, 0.0, false, false, 2, 0},
    {"chunked_local", true, -1, -1, 0.0, false, false, 0, 8},
};

std::string case_file(const golden_case& c, const char* name) {
  return std::string(ATTNKIT_TEST_DATA_DIR) + "/softmax/" + c.name + "/" + name + ".npy";
}

/// Loads an .npy file of rank R into an owned dense tensor of T.
template <class T, std::size_t R>
owned_tensor<T, R> load(const std::string& path) {
  return test::load_npy_tensor<T, R>(path);
}

/// Max |a - b| must be <= tol * max|b|, and b's infinities must appear identically in a.
template <class A, class B, std::size_t R>
void check_rel(const tensor_view<A, R>& a, const tensor_view<B, R>& b, double tol) {
  const auto e = test::compare(a, b);
  INFO("max_abs=" << e.max_abs << " max_ref=" << e.max_ref << " tol=" << tol);
  CHECK(e.finite);
  CHECK(e.inf_match);
  CHECK(e.max_ref > 0);
  CHECK(e.max_abs <= tol * e.max_ref);
}

template <class T>
struct golden_inputs {
  golden_case c;
  owned_tensor<T, 4> q, k, v;
  owned_tensor<T, 1> sinks;
  owned_tensor<std::int32_t, 1> cu_q, cu_k;
  owned_tensor<double, 4> o_gold;
  owned_tensor<double, 3> lse_gold;
  softmax_params p;

  explicit golden_inputs(const golden_case& gc) : c(gc) {
    q = load<T, 4>(case_file(c, "q"));
    k = load<T, 4>(case_file(c, "k"));
    v = load<T, 4>(case_file(c, "v"));
    o_gold = load<double, 4>(case_file(c, "o"));
    lse_gold = load<double, 3>(case_file(c, "lse"));
    if (c.sinks) sinks = load<T, 1>(case_file(c, "sinks"));
    if (c.varlen) {
      cu_q = load<std::int32_t, 1>(case_file(c, "cu_seqlens_q"));
      cu_k = load<std::int32_t, 1>(case_file(c, "cu_seqlens_k"));
    }
    p.causal = c.causal;
    p.window_left = c.window_left;
    p.window_right = c.window_right;
    p.softcap = c.softcap;  // scale stays 0: every case uses the default Dk^-0.5
    p.n_sink = c.n_sink;
    p.chunk = c.chunk;
  }
  index_t B() const { return q.view.extent(0); }
  index_t Tq() const { return q.view.extent(1); }
  index_t Tk() const { return k.view.extent(1); }
  index_t Hq() const { return q.view.extent(2); }
  index_t Hkv() const { return k.view.extent(2); }
  index_t Dk() const { return q.view.extent(3); }
  index_t Dv() const { return v.view.extent(3); }

  owned_tensor<T, 4> make_o() const { return owned_tensor<T, 4>({B(), Tq(), Hq(), Dv()}); }
  owned_tensor<T, 3> make_lse() const { return owned_tensor<T, 3>({B(), Hq(), Tq()}); }
  softmax_extras<T> extras(owned_tensor<T, 3>& lse) const {
    softmax_extras<T> x;
    x.lse = lse.v();
    if (c.sinks) x.sinks = sinks.cv();
    if (c.varlen) {
      x.cu_seqlens_q = cu_q.cv();
      x.cu_seqlens_k = cu_k.cv();
    }
    return x;
  }
  /// Varlen only: appends a sequence of m queries and no keys. Its expected rows follow from the
  /// definitions (o = 0, lse = -inf); the other sequences' expectations are unchanged.
  void add_empty_sequence(index_t m) {
    const index_t tq = Tq(), H = Hq();
    owned_tensor<T, 4> q2({1, tq + m, H, Dk()});
    owned_tensor<double, 4> o2({1, tq + m, H, Dv()});
    owned_tensor<double, 3> l2({1, H, tq + m});
    std::mt19937_64 rng(7);
    test::fill_normal(q2.v(), rng);
    test::copy(q.cv(), slice(q2.v(), 1, 0, tq));
    for (auto& x : o2.buf) x = 0;
    test::copy(o_gold.cv(), slice(o2.v(), 1, 0, tq));
    for (auto& x : l2.buf) x = -std::numeric_limits<double>::infinity();
    test::copy(lse_gold.cv(), slice(l2.v(), 2, 0, tq));
    q = std::move(q2);
    o_gold = std::move(o2);
    lse_gold = std::move(l2);
    const auto extend = [](owned_tensor<std::int32_t, 1>& cu, std::int32_t add) {
      auto b = cu.buf;
      b.push_back(b.back() + add);
      cu = owned_tensor<std::int32_t, 1>({index_t(b.size())});
      cu.buf = b;
      cu.view = make_view(cu.buf.data(), index_t(b.size()));
    };
    extend(cu_q, std::int32_t(m));
    extend(cu_k, 0);
  }
  void check(const owned_tensor<T, 4>& o, const owned_tensor<T, 3>& lse) const {
    check_rel(o.cv(), o_gold.cv(), test::tolerance<T>());
    check_rel(lse.cv(), lse_gold.cv(), test::tolerance<T>());
  }
};

/// Copies tokens [t0, t1) of k/v row b into a destination given as a per-token row pointer.
template <class T, class Row>
void copy_tokens(const tensor_view<const T, 4>& src, index_t b, index_t t0, index_t t1, Row row) {
  for (index_t t = t0; t < t1; ++t)
    for (index_t h = 0; h < src.extent(2); ++h)
      for (index_t d = 0; d < src.extent(3); ++d) row(t, h)[d] = src(b, t, h, d);
}

}  // namespace

TEMPLATE_TEST_CASE("golden: dense and varlen cases, reference and fast kernel", "[golden]", double,
                   float) {
  using T = TestType;
  for (const auto& c : kCases) {
    INFO("case " << c.name);
    golden_inputs<T> g(c);
    {
      auto o = g.make_o();
      auto lse = g.make_lse();
      reference::standard_attention(g.p, g.q.cv(), g.k.cv(), g.v.cv(), o.v(), g.extras(lse));
      INFO("reference");
      g.check(o, lse);
    }
    {
      auto o = g.make_o();
      auto lse = g.make_lse();
      standard_attention(g.p, g.q.cv(), g.k.cv(), g.v.cv(), o.v(), g.extras(lse));
      INFO("fast kernel");
      g.check(o, lse);
    }
    if (c.varlen) {
      // Plus a trailing sequence with 2 queries and no keys: rows of o = 0, lse = -inf.
      g.add_empty_sequence(2);
      auto o = g.make_o(), o_ref = g.make_o();
      auto lse = g.make_lse(), lse_ref = g.make_lse();
      standard_attention(g.p, g.q.cv(), g.k.cv(), g.v.cv(), o.v(), g.extras(lse));
      reference::standard_attention(g.p, g.q.cv(), g.k.cv(), g.v.cv(), o_ref.v(),
                                    g.extras(lse_ref));
      INFO("with an empty trailing sequence");
      g.check(o, lse);
      g.check(o_ref, lse_ref);
      CHECK(std::isinf(lse.view(0, 0, g.Tq() - 1)));
    }
  }
}

TEMPLATE_TEST_CASE("golden: contiguous and paged KV cache paths", "[golden][kvcache]", double,
                   float) {
  using T = TestType;
  for (const auto& c : kCases) {
    if (c.varlen) continue;  // a KV cache holds one sequence per row; varlen is dense-only
    INFO("case " << c.name);
    golden_inputs<T> g(c);
    const index_t B = g.B(), Tk = g.Tk(), Hkv = g.Hkv(), Dk = g.Dk(), Dv = g.Dv();
    const cview<T, 4> kin = g.k.cv(), vin = g.v.cv();
    // 0: everything preloaded; 2: the last 2 keys appended by the call (k_new / v_new).
    for (const index_t tn : {index_t(0), index_t(2)}) {
      INFO("appended keys: " << tn);
      const std::vector<std::int32_t> seqlens(std::size_t(B), std::int32_t(Tk - tn));
      const auto lens = make_view(seqlens.data(), B);
      const cview<T, 4> k_new = tn ? slice(kin, 1, Tk - tn, Tk) : cview<T, 4>();
      const cview<T, 4> v_new = tn ? slice(vin, 1, Tk - tn, Tk) : cview<T, 4>();

      // Contiguous cache with spare capacity (the tail stays NaN: it must never be read).
      const index_t cap = Tk + 3;
      owned_tensor<T, 4> kc({B, cap, Hkv, Dk}), vc({B, cap, Hkv, Dv});
      for (index_t b = 0; b < B; ++b) {
        copy_tokens<T>(kin, b, 0, Tk - tn,
                       [&](index_t t, index_t h) { return &kc.view(b, t, h, 0); });
        copy_tokens<T>(vin, b, 0, Tk - tn,
                       [&](index_t t, index_t h) { return &vc.view(b, t, h, 0); });
      }
      const kv_cache<T> cache{kc.v(), vc.v(), lens};

      // Paged cache, page size 3, pages handed out in reverse order plus one unused page.
      const index_t P = 3, per_seq = (Tk + P - 1) / P, np = B * per_seq + 1;
      owned_tensor<T, 4> kp({np, P, Hkv, Dk}), vp({np, P, Hkv, Dv});
      std::vector<std::int32_t> table(std::size_t(B * per_seq));
      for (std::size_t i = 0; i < table.size(); ++i) table[i] = std::int32_t(np - 1 - index_t(i));
      const auto tv = make_view(static_cast<const std::int32_t*>(table.data()), B, per_seq);
      for (index_t b = 0; b < B; ++b) {
        const auto page_row = [&](const owned_tensor<T, 4>& pages) {
          return [&, b](index_t t, index_t h) { return &pages.view(tv(b, t / P), t % P, h, 0); };
        };
        copy_tokens<T>(kin, b, 0, Tk - tn, page_row(kp));
        copy_tokens<T>(vin, b, 0, Tk - tn, page_row(vp));
      }
      const paged_kv_cache<T> paged{kp.v(), vp.v(), tv, lens};

      // Each run appends the same tokens again (cache_seqlens is not advanced), so runs repeat.
      for (int which = 0; which < 4; ++which) {
        const bool fast = which % 2 == 1, use_paged = which >= 2;
        INFO((fast ? "fast" : "reference") << (use_paged ? " paged" : " contiguous"));
        auto o = g.make_o();
        auto lse = g.make_lse();
        const auto x = g.extras(lse);
        if (use_paged) {
          if (fast)
            standard_attention_kvcache(g.p, g.q.cv(), paged, o.v(), x, k_new, v_new);
          else
            reference::standard_attention_kvcache(g.p, g.q.cv(), paged, o.v(), x, k_new, v_new);
        } else {
          if (fast)
            standard_attention_kvcache(g.p, g.q.cv(), cache, o.v(), x, k_new, v_new);
          else
            reference::standard_attention_kvcache(g.p, g.q.cv(), cache, o.v(), x, k_new, v_new);
        }
        g.check(o, lse);
      }
    }
  }
}

TEMPLATE_TEST_CASE("golden: sliding_window variant, dense and through a ring cache",
                   "[golden][sliding_window]", double, float) {
  using T = TestType;
  for (const auto& c : kCases) {
    if (c.window_left < 0 && c.chunk == 0) continue;  // not a bounded window
    INFO("case " << c.name);
    golden_inputs<T> g(c);
    for (const bool ref : {false, true}) {
      INFO((ref ? "reference" : "fast kernel"));
      auto o = g.make_o();
      auto lse = g.make_lse();
      ATTNKIT_CALL(ref, sliding_window_attention, g.p, g.q.cv(), g.k.cv(), g.v.cv(), o.v(),
                   g.extras(lse));
      g.check(o, lse);
    }
    if (c.window_left < 0 || c.varlen) continue;
    // A ring of window_left + Tq + n_sink slots fed one token at a time (wrapping around), then
    // the Tq queries (the last positions) attend from it.
    const index_t B = g.B(), Tk = g.Tk(), cap = c.window_left + g.Tq() + c.n_sink;
    owned_tensor<T, 4> kr({B, cap, g.Hkv(), g.Dk()}), vr({B, cap, g.Hkv(), g.Dv()});
    std::vector<std::int32_t> lens(std::size_t(B), 0);
    const ring_kv_cache<T> ring{
        kr.v(), vr.v(), make_view(static_cast<const std::int32_t*>(lens.data()), B), c.n_sink};
    for (index_t t = 0; t < Tk; ++t) {
      cache_append(ring, slice(g.k.cv(), 1, t, t + 1), slice(g.v.cv(), 1, t, t + 1));
      for (auto& l : lens) ++l;
    }
    for (const bool ref : {false, true}) {
      INFO((ref ? "reference" : "fast kernel") << " over the ring of " << cap << " slots");
      auto o = g.make_o();
      auto lse = g.make_lse();
      ATTNKIT_CALL(ref, sliding_window_attention_kvcache, g.p, g.q.cv(), ring, o.v(),
                   g.extras(lse));
      g.check(o, lse);
    }
  }
}

TEST_CASE("golden: the cases have the shapes their meta.json records", "[golden]") {
  golden_inputs<double> a(kCases[0]);
  CHECK(a.q.view.extents() == std::array<index_t, 4>{2, 5, 4, 16});
  CHECK(a.k.view.extents() == std::array<index_t, 4>{2, 9, 2, 16});
  golden_inputs<double> w(kCases[3]);
  CHECK(w.v.view.extents() == std::array<index_t, 4>{1, 20, 1, 12});
  golden_inputs<double> vl(kCases[2]);
  CHECK(vl.cu_q.buf == std::vector<std::int32_t>{0, 3, 4, 10});
  CHECK(vl.cu_k.buf == std::vector<std::int32_t>{0, 3, 7, 13});
  vl.add_empty_sequence(2);
  CHECK(vl.cu_q.buf == std::vector<std::int32_t>{0, 3, 4, 10, 12});
  CHECK(vl.cu_k.buf == std::vector<std::int32_t>{0, 3, 7, 13, 13});
  CHECK(vl.q.view.extent(1) == 12);
  CHECK(std::isinf(vl.lse_gold.view(0, 1, 11)));
}
