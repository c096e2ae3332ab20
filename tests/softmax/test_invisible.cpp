// SPDX-License-Identifier: Apache-2.0
// Values a query cannot see never reach its output. NaN and inf are planted in keys and values a
// row cannot see (outside its causal or sliding window, in another sequence of a varlen batch,
// in cache slots past the sequence length, in pages outside the block table, past a split-KV
// boundary); every row that sees none of them must equal, bit for bit, the same kernel
// run with finite values there, and (negative control) the rows that do see a planted key must
// turn non-finite. Shapes put the planted keys on tile edges (63, 64, 129) and mid-tile.
#include <attnkit/softmax.hpp>
#include <support/invisible.hpp>

using namespace attnkit;
using namespace attnkit::test;

namespace {

/// Query row i (of tq) at position i + tk - tq sees key j: bottom-right aligned causal / window.
bool visible(const softmax_params& p, index_t i, index_t tq, index_t tk, index_t j) {
  const index_t pos = i + tk - tq;
  if (p.causal && j > pos) return false;
  if (p.window_right >= 0 && j > pos + p.window_right) return false;
  if (p.window_left >= 0 && j < pos - p.window_left) return false;
  return true;
}

/// Dense attention: the keys in `keys` planted in every batch row.
template <class T>
void dense_case(softmax_params p, index_t B, index_t Tq, index_t Tk, index_t Hq, index_t Hkv,
                index_t D, const std::vector<index_t>& keys) {
  owned_tensor<T, 4> q({B, Tq, Hq, D}), k({B, Tk, Hkv, D}), v({B, Tk, Hkv, D});
  std::mt19937_64 rng(std::uint64_t(Tq * 7919 + Tk));
  fill_normal(q.v(), rng);
  fill_normal(k.v(), rng);
  fill_normal(v.v(), rng);
  auto run = [&](const owned_tensor<T, 4>& kk, const owned_tensor<T, 4>& vv) {
    owned_tensor<T, 4> o({B, Tq, Hq, D});
    standard_attention(p, q.cv(), kk.cv(), vv.cv(), o.v());
    return o;
  };
  const auto clean = run(k, v);
  for (const garbage& g : kGarbage) {
    auto kd = clone(k), vd = clone(v);
    for (index_t b = 0; b < B; ++b)
      for (index_t j : keys) {
        plant(kd.v(), b, j, g.k);
        plant(vd.v(), b, j, g.v);
      }
    check_rows(clean, run(kd, vd), [&](index_t, index_t i) {
      for (index_t j : keys)
        if (visible(p, i, Tq, Tk, j)) return true;
      return false;
    });
  }
}

softmax_params params(bool causal, index_t left, index_t right, int splits = 0) {
  softmax_params p;
  p.causal = causal;
  p.window_left = left;
  p.window_right = right;
  p.num_splits = splits;
  return p;
}

}  // namespace

TEMPLATE_TEST_CASE("invisible keys: causal prefill, tile edges", "[invisible][softmax]", double,
                   float, bf16) {
  for (index_t j : {63, 64, 129, 100}) {
    INFO("planted key " << j);
    dense_case<TestType>(params(true, -1, -1), 1, 130, 130, 8, 2, 72, {j});  // prefill tiles
    dense_case<TestType>(params(true, -1, -1), 2, 130, 130, 3, 3, 40, {j});  // MHA, G = 1
  }
  // Tq < Tk (bottom-right), the last key planted
  dense_case<TestType>(params(true, -1, -1), 1, 65, 200, 4, 1, 33, {199});
}

TEMPLATE_TEST_CASE("invisible keys: sliding windows", "[invisible][softmax]", double, float) {
  dense_case<TestType>(params(true, 20, 0), 1, 200, 200, 4, 2, 24, {30});      // left edge
  dense_case<TestType>(params(true, 64, 0), 1, 200, 200, 4, 2, 24, {0, 130});  // block edge
  dense_case<TestType>(params(false, 5, 5), 1, 130, 130, 2, 2, 20, {64});      // both sides
  dense_case<TestType>(params(false, 0, 3), 1, 130, 130, 2, 1, 20, {127});     // right only
}

TEMPLATE_TEST_CASE("invisible keys: decode shapes and split-KV", "[invisible][softmax]", double,
                   float, bf16) {
  // speculative decode (Tq = 2, 3): the last keys are hidden from the earlier rows
  dense_case<TestType>(params(true, -1, -1), 2, 2, 300, 8, 2, 64, {299});
  dense_case<TestType>(params(true, -1, -1), 1, 3, 300, 4, 4, 20, {298, 299});
  // a window over a long context: keys before it, and the last key (seen by the last row only)
  dense_case<TestType>(params(true, 100, 0), 1, 2, 300, 8, 2, 64, {0, 150, 299});
  // split-KV (4 splits) with the last key planted
  dense_case<TestType>(params(true, -1, -1, 4), 1, 3, 4000, 4, 1, 32, {3999});
}

TEMPLATE_TEST_CASE("invisible keys: other sequences of a varlen batch", "[invisible][softmax]",
                   double, float) {
  using T = TestType;
  const index_t T_total = 150, Hq = 4, Hkv = 2, D = 24;
  const std::vector<std::int32_t> cu = {0, 70, 150};
  const auto cu_v = make_view(cu.data(), index_t(cu.size()));
  owned_tensor<T, 4> q({1, T_total, Hq, D}), k({1, T_total, Hkv, D}), v({1, T_total, Hkv, D});
  std::mt19937_64 rng(5);
  fill_normal(q.v(), rng);
  fill_normal(k.v(), rng);
  fill_normal(v.v(), rng);
  for (const bool causal : {true, false}) {
    softmax_extras<accum_t<T>> x;
    x.cu_seqlens_q = cu_v;
    x.cu_seqlens_k = cu_v;
    auto run = [&](const owned_tensor<T, 4>& kk, const owned_tensor<T, 4>& vv) {
      owned_tensor<T, 4> o({1, T_total, Hq, D});
      standard_attention(params(causal, -1, -1), q.cv(), kk.cv(), vv.cv(), o.v(), x);
      return o;
    };
    const auto clean = run(k, v);
    for (const garbage& g : kGarbage) {
      auto kd = clone(k), vd = clone(v);
      plant(kd.v(), 0, 120, g.k);  // a key of the second sequence
      plant(vd.v(), 0, 120, g.v);
      check_rows(clean, run(kd, vd),
                 [&](index_t, index_t t) { return t >= 70 && t < 150 && (!causal || t >= 120); });
    }
  }
}

TEMPLATE_TEST_CASE("invisible keys: unwritten cache slots and pages", "[invisible][softmax]",
                   double, float, bf16) {
  using T = TestType;
  const index_t B = 2, cap = 300, Hq = 8, Hkv = 2, D = 40, Tnew = 2, P = 16;
  const std::vector<std::int32_t> lens = {131, 257};
  const auto lens_v = make_view(lens.data(), index_t(lens.size()));
  std::mt19937_64 rng(11);
  owned_tensor<T, 4> kin({B, cap, Hkv, D}), vin({B, cap, Hkv, D});
  fill_normal(kin.v(), rng);
  fill_normal(vin.v(), rng);
  for (const index_t Tq : {1, 3}) {
    owned_tensor<T, 4> q({B, Tq, Hq, D}), kn({B, Tnew, Hkv, D}), vn({B, Tnew, Hkv, D});
    fill_normal(q.v(), rng);
    fill_normal(kn.v(), rng);
    fill_normal(vn.v(), rng);
    const softmax_params p = params(true, -1, -1);
    // The cache holds tokens [0, len) (plus the Tnew appended); every other slot and page holds
    // `fill` (0, or garbage). With Tq = 3 the newest appended token is garbage too (only the last
    // row sees it); with Tq = 1 no row sees any garbage.
    const bool planted = Tq > 1;
    auto sees = [&](index_t b, index_t i) {
      return planted && visible(p, i, Tq, lens[std::size_t(b)] + Tnew, lens[std::size_t(b)] + 1);
    };
    auto fill_store = [&](auto&& slot_k, auto&& slot_v, double fk, double fv) {
      for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < cap; ++t)
          for (index_t h = 0; h < Hkv; ++h)
            for (index_t d = 0; d < D; ++d) {
              const bool valid = t < lens[std::size_t(b)];
              *slot_k(b, t, h, d) = valid ? kin.view(b, t, h, d) : from_compute<T>(fk);
              *slot_v(b, t, h, d) = valid ? vin.view(b, t, h, d) : from_compute<T>(fv);
            }
    };
    for (const bool paged : {false, true}) {
      INFO((paged ? "paged" : "contiguous") << " Tq=" << Tq);
      auto run = [&](double fk, double fv) {
        owned_tensor<T, 4> o({B, Tq, Hq, D});
        auto knc = clone(kn), vnc = clone(vn);
        if (planted)
          for (index_t b = 0; b < B; ++b) {
            plant(knc.v(), b, Tnew - 1, fk);
            plant(vnc.v(), b, Tnew - 1, fv);
          }
        const cview<T, 4> knv = knc.cv(), vnv = vnc.cv();
        if (!paged) {
          owned_tensor<T, 4> kc({B, cap, Hkv, D}), vc({B, cap, Hkv, D});
          fill_store(
              [&](index_t b, index_t t, index_t h, index_t d) { return &kc.view(b, t, h, d); },
              [&](index_t b, index_t t, index_t h, index_t d) { return &vc.view(b, t, h, d); }, fk,
              fv);
          standard_attention_kvcache(p, q.cv(), kv_cache<T>{kc.v(), vc.v(), lens_v}, o.v(), {}, knv,
                                     vnv);
        } else {
          paged_store<T> st(B, cap, P, Hkv, D, D);
          // every page element (including pages outside the block table) starts as `fill`
          for (auto& e : st.kp.buf) e = from_compute<T>(fk);
          for (auto& e : st.vp.buf) e = from_compute<T>(fv);
          const auto tbl = st.block_table();
          fill_store([&](index_t b, index_t t, index_t h,
                         index_t d) { return &st.kp.view(tbl(b, t / P), t % P, h, d); },
                     [&](index_t b, index_t t, index_t h, index_t d) {
                       return &st.vp.view(tbl(b, t / P), t % P, h, d);
                     },
                     fk, fv);
          standard_attention_kvcache(p, q.cv(), st.cache(lens), o.v(), {}, knv, vnv);
        }
        return o;
      };
      const auto clean = run(0, 0);
      for (const garbage& g : kGarbage) check_rows(clean, run(g.k, g.v), sees, planted);
    }
  }
}
