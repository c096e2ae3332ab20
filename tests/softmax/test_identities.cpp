// SPDX-License-Identifier: Apache-2.0
// Identities of the softmax-family windows (FlashAttention's bottom-right aligned, inclusive
// window: query row i of Tq sits at position pos = i + Tk - Tq and sees keys
// pos - window_left <= j <= pos + window_right), for the fast kernel and for the reference, in
// float64 (1e-12 relative) and float32 (the family's usual tolerance), on awkward shapes (T in
// {1, 63, 65, 130}, head dims that are not powers of two, GQA):
//   a window wider than the context (window_left >= Tk - 1, window_right >= Tq - 1) == no window
//   decode over a KV cache (contiguous or paged) with window_left = W == standard attention over
//     the cache sliced to its last W + Tq keys (Tq = 1: the last W + 1 keys, without a window)
// o and lse are compared; each check also asserts the compared results are not trivially zero,
// and a negative control (a window one key narrower, or a window that cuts) shows the comparison
// can fail.
#include <attnkit/softmax.hpp>
#include <limits>
#include <set>
#include <support/test_util.hpp>

using namespace attnkit;
using namespace attnkit::test;

namespace {

/// Who computes: the reference, or the fast kernel (automatic split-KV, or 3 splits forced).
enum class path { reference, kernel, kernel_3_splits };

const char* name_of(path p) {
  return p == path::reference ? "reference" : p == path::kernel ? "kernel" : "kernel(3 splits)";
}

/// Dense attention by the chosen path.
template <class Q, class K, class O, class A>
void attend(path pth, softmax_params p, const tensor_view<Q, 4>& q, const tensor_view<K, 4>& k,
            const tensor_view<K, 4>& v, const tensor_view<O, 4>& o, const softmax_extras<A>& x) {
  if (pth == path::reference) {
    reference::standard_attention(p, q, k, v, o, x);
  } else {
    p.num_splits = pth == path::kernel_3_splits ? 3 : 0;
    standard_attention(p, q, k, v, o, x);
  }
}

template <class E>
void wide_window_is_no_window(path pth, index_t B, index_t Tq, index_t Tk, index_t Hq, index_t Hkv,
                              index_t Dk, index_t Dv, bool causal) {
  using A = accum_t<E>;
  owned_tensor<E, 4> q({B, Tq, Hq, Dk}), k({B, Tk, Hkv, Dk}), v({B, Tk, Hkv, Dv});
  std::mt19937_64 rng(std::uint64_t(4000 + Tq * 1000 + Tk));
  test::fill_normal(q.v(), rng);
  test::fill_normal(k.v(), rng);
  test::fill_normal(v.v(), rng);
  auto call = [&](index_t left, index_t right) {
    std::pair<owned_tensor<E, 4>, owned_tensor<A, 3>> r{owned_tensor<E, 4>({B, Tq, Hq, Dv}),
                                                        owned_tensor<A, 3>({B, Hq, Tq})};
    softmax_params p;
    p.causal = causal;
    p.window_left = left;
    p.window_right = right;
    softmax_extras<A> x;
    x.lse = r.second.v();
    attend(pth, p, q.cv(), k.cv(), v.cv(), r.first.v(), x);
    return r;
  };
  const auto none = call(-1, -1);
  const index_t huge = index_t(1) << 40;
  // left: pos - left <= 0 for every row (pos <= Tk - 1); right: pos + right >= Tk - 1 for every
  // row (pos >= Tk - Tq)
  for (index_t left : {Tk - 1, 3 * Tk + 5, huge})
    for (index_t right : {index_t(-1), Tq - 1, huge}) {
      if (left == -1 && right == -1) continue;
      INFO("window_left=" << left << " window_right=" << right);
      const auto w = call(left, right);
      check_identity<E>("o", w.first.cv(), none.first.cv());
      check_identity<E>("lse", w.second.cv(), none.second.cv());
    }
  // negative controls: one key narrower on the left (the last row loses key 0) or on the right
  // (without causal, the first row loses key Tk - 1)
  if (Tk >= 2) {
    INFO("window_left=" << Tk - 2);
    check_differs<E>("o", call(Tk - 2, -1).first.cv(), none.first.cv());
  }
  if (Tk >= 2 && Tq >= 2 && !causal) {
    INFO("window_right=" << Tq - 2);
    check_differs<E>("o", call(-1, Tq - 2).first.cv(), none.first.cv());
  }
}

/// Decode (Tq query rows at the end of the cache) with window_left = W against standard attention
/// over the last W + Tq keys of each sequence. P = 0: contiguous cache, else paged with page size
/// P. append: the last Tnew = min(Tq, shortest sequence) tokens come in as k_new / v_new. Cache
/// slots past the valid tokens hold NaN (never read).
template <class E>
void windowed_decode_is_sliced_attention(path pth, index_t P, index_t L, index_t Tq, index_t Hq,
                                         index_t Hkv, index_t Dk, index_t Dv, bool causal,
                                         bool append) {
  using A = accum_t<E>;
  const index_t B = 2, cap = 136;
  const std::vector<index_t> len = {L, std::max<index_t>(1, L - 37)};
  const index_t tnew = append ? std::min(Tq, len[1]) : 0;
  std::vector<std::int32_t> cached;
  for (index_t l : len) cached.push_back(std::int32_t(l - tnew));
  // the tokens of each sequence (NaN past its length), and the query rows
  owned_tensor<E, 4> ks({B, cap, Hkv, Dk}), vs({B, cap, Hkv, Dv}), q({B, Tq, Hq, Dk});
  std::mt19937_64 rng(std::uint64_t(5000 + L * 10 + Tq));
  for (index_t b = 0; b < B; ++b) {
    test::fill_normal(slice(slice(ks.v(), 0, b, b + 1), 1, 0, len[std::size_t(b)]), rng);
    test::fill_normal(slice(slice(vs.v(), 0, b, b + 1), 1, 0, len[std::size_t(b)]), rng);
  }
  test::fill_normal(q.v(), rng);
  owned_tensor<E, 4> k_new({B, tnew, Hkv, Dk}), v_new({B, tnew, Hkv, Dv});
  for (index_t b = 0; b < B; ++b) {
    const index_t c = cached[std::size_t(b)];
    test::copy(slice(slice(ks.cv(), 0, b, b + 1), 1, c, c + tnew), slice(k_new.v(), 0, b, b + 1));
    test::copy(slice(slice(vs.cv(), 0, b, b + 1), 1, c, c + tnew), slice(v_new.v(), 0, b, b + 1));
  }
  // the cache holds the first cached[b] tokens of sequence b
  owned_tensor<E, 4> kc({B, cap, Hkv, Dk}), vc({B, cap, Hkv, Dv});
  paged_store<E> ps(B, cap, std::max<index_t>(P, 1), Hkv, Dk, Dv);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < cached[std::size_t(b)]; ++t)
      for (index_t h = 0; h < Hkv; ++h) {
        const index_t page = P ? ps.table[std::size_t(b * ps.max_pages + t / P)] : 0;
        for (index_t d = 0; d < Dk; ++d) {
          kc.view(b, t, h, d) = ks.view(b, t, h, d);
          if (P) ps.kp.view(page, t % P, h, d) = ks.view(b, t, h, d);
        }
        for (index_t d = 0; d < Dv; ++d) {
          vc.view(b, t, h, d) = vs.view(b, t, h, d);
          if (P) ps.vp.view(page, t % P, h, d) = vs.view(b, t, h, d);
        }
      }
  const auto seqlens = make_view(static_cast<const std::int32_t*>(cached.data()), B);
  const kv_cache<E> contiguous{kc.v(), vc.v(), seqlens};
  const paged_kv_cache<E> paged{ps.kp.v(), ps.vp.v(), ps.block_table(), seqlens};

  auto decode = [&](index_t W) {
    std::pair<owned_tensor<E, 4>, owned_tensor<A, 3>> r{owned_tensor<E, 4>({B, Tq, Hq, Dv}),
                                                        owned_tensor<A, 3>({B, Hq, Tq})};
    softmax_params p;
    p.causal = causal;
    p.window_left = W;
    if (pth == path::kernel_3_splits) p.num_splits = 3;
    softmax_extras<A> x;
    x.lse = r.second.v();
    const cview<E, 4> kn = tnew ? k_new.cv() : cview<E, 4>{},
                      vn = tnew ? v_new.cv() : cview<E, 4>{};
    if (pth == path::reference) {
      if (P)
        reference::standard_attention_kvcache(p, q.cv(), paged, r.first.v(), x, kn, vn);
      else
        reference::standard_attention_kvcache(p, q.cv(), contiguous, r.first.v(), x, kn, vn);
    } else {
      if (P)
        standard_attention_kvcache(p, q.cv(), paged, r.first.v(), x, kn, vn);
      else
        standard_attention_kvcache(p, q.cv(), contiguous, r.first.v(), x, kn, vn);
    }
    return r;
  };
  // standard attention over keys [start, len) of each sequence; Tq = 1: without a window
  auto sliced = [&](index_t W) {
    std::pair<owned_tensor<E, 4>, owned_tensor<A, 3>> r{owned_tensor<E, 4>({B, Tq, Hq, Dv}),
                                                        owned_tensor<A, 3>({B, Hq, Tq})};
    for (index_t b = 0; b < B; ++b) {
      const index_t l = len[std::size_t(b)];
      const index_t start = W >= l ? 0 : std::max<index_t>(0, l - Tq - W);
      softmax_params p;
      p.causal = causal;
      p.window_left = Tq == 1 ? -1 : W;
      softmax_extras<A> x;
      x.lse = slice(r.second.v(), 0, b, b + 1);
      attend(pth, p, slice(q.cv(), 0, b, b + 1), slice(slice(ks.cv(), 0, b, b + 1), 1, start, l),
             slice(slice(vs.cv(), 0, b, b + 1), 1, start, l), slice(r.first.v(), 0, b, b + 1), x);
    }
    return r;
  };
  const auto full = decode(-1);
  std::set<index_t> windows = {0, 6, L - 2, L - 1, 3 * L + 5, index_t(1) << 40};
  for (index_t W : windows) {
    if (W < 0) continue;
    INFO("window_left=" << W);
    const auto got = decode(W), want = sliced(W);
    check_identity<E>("o", got.first.cv(), want.first.cv());
    check_identity<E>("lse", got.second.cv(), want.second.cv());
    if (W + Tq < len[0] / 2)  // the window cuts the first sequence: it must matter
      check_differs<E>("o of sequence 0 against no window", slice(got.first.cv(), 0, 0, 1),
                       slice(full.first.cv(), 0, 0, 1));
  }
}

}  // namespace

TEST_CASE("softmax identity: a window wider than the context equals no window",
          "[softmax][identity]") {
  const precision pr = GENERATE(precision::f64, precision::f32);
  const path pth = GENERATE(path::reference, path::kernel, path::kernel_3_splits);
  const auto lens = GENERATE(std::make_pair(1, 1), std::make_pair(1, 130), std::make_pair(65, 130),
                             std::make_pair(130, 65), std::make_pair(130, 130));
  const index_t ratio = GENERATE(1, 4);
  const auto dims = GENERATE(std::make_pair(20, 12), std::make_pair(7, 33));
  const bool causal = GENERATE(false, true);
  if (kSanitized && pth == path::reference) return;  // see kSanitized
  const index_t B = 2, Hkv = 2;
  INFO(name_of(pr) << " " << name_of(pth) << " B=" << B << " Tq=" << lens.first
                   << " Tk=" << lens.second << " Hq=" << Hkv * ratio << " Hkv=" << Hkv
                   << " Dk=" << dims.first << " Dv=" << dims.second << " causal=" << causal);
  if (pr == precision::f64)
    wide_window_is_no_window<double>(pth, B, lens.first, lens.second, Hkv * ratio, Hkv, dims.first,
                                     dims.second, causal);
  else
    wide_window_is_no_window<float>(pth, B, lens.first, lens.second, Hkv * ratio, Hkv, dims.first,
                                    dims.second, causal);
}

TEST_CASE("softmax identity: windowed decode over a KV cache equals attention over its last keys",
          "[softmax][identity][kvcache]") {
  const precision pr = GENERATE(precision::f64, precision::f32);
  const path pth = GENERATE(path::reference, path::kernel, path::kernel_3_splits);
  const index_t P = GENERATE(0, 1, 7, 16);  // 0: contiguous cache, else the page size
  const index_t L = GENERATE(1, 65, 130);
  const index_t Tq = GENERATE(1, 4);
  const index_t ratio = GENERATE(1, 4);
  const auto dims = GENERATE(std::make_pair(20, 12), std::make_pair(7, 33));
  const bool causal = GENERATE(true, false);
  const bool append = GENERATE(false, true);
  if (kSanitized && pth == path::reference) return;  // see kSanitized
  const index_t Hkv = 2;
  INFO(name_of(pr) << " " << name_of(pth) << (P ? " paged P=" : " contiguous") << (P ? P : 0)
                   << " lengths=(" << L << "," << std::max<index_t>(1, L - 37) << ") Tq=" << Tq
                   << " Hq=" << Hkv * ratio << " Hkv=" << Hkv << " Dk=" << dims.first
                   << " Dv=" << dims.second << " causal=" << causal << " append=" << append);
  if (pr == precision::f64)
    windowed_decode_is_sliced_attention<double>(pth, P, L, Tq, Hkv * ratio, Hkv, dims.first,
                                                dims.second, causal, append);
  else
    windowed_decode_is_sliced_attention<float>(pth, P, L, Tq, Hkv * ratio, Hkv, dims.first,
                                               dims.second, causal, append);
}

// The widest window of all: window_left / window_right = the largest index_t (a caller's
// "unbounded"). Same identity as above, at the end of the range.
TEST_CASE("softmax identity: a window of the largest index_t equals no window",
          "[softmax][identity]") {
  const precision pr = GENERATE(precision::f64, precision::f32);
  const path pth = GENERATE(path::reference, path::kernel);
  const auto lens = GENERATE(std::make_pair(1, 1), std::make_pair(1, 63), std::make_pair(2, 2),
                             std::make_pair(65, 130), std::make_pair(130, 65));
  const bool causal = GENERATE(false, true);
  const auto side = GENERATE(0, 1);  // 0: window_left, 1: window_right
  const index_t B = 1, Tq = lens.first, Tk = lens.second, Hq = 3, Hkv = 1, Dk = 20, Dv = 12;
  const index_t huge = std::numeric_limits<index_t>::max();
  INFO(name_of(pr) << " " << name_of(pth) << " Tq=" << Tq << " Tk=" << Tk << " causal=" << causal
                   << (side == 0 ? " window_left" : " window_right") << " = " << huge);
  auto check = [&](auto tag) {
    using E = decltype(tag);
    using A = accum_t<E>;
    owned_tensor<E, 4> q({B, Tq, Hq, Dk}), k({B, Tk, Hkv, Dk}), v({B, Tk, Hkv, Dv});
    std::mt19937_64 rng(std::uint64_t(6000 + Tq * 1000 + Tk));
    test::fill_normal(q.v(), rng);
    test::fill_normal(k.v(), rng);
    test::fill_normal(v.v(), rng);
    owned_tensor<E, 4> o({B, Tq, Hq, Dv}), o_none({B, Tq, Hq, Dv});
    owned_tensor<A, 3> lse({B, Hq, Tq}), lse_none({B, Hq, Tq});
    softmax_params p;
    p.causal = causal;
    softmax_extras<A> x;
    x.lse = lse_none.v();
    attend(pth, p, q.cv(), k.cv(), v.cv(), o_none.v(), x);
    (side == 0 ? p.window_left : p.window_right) = huge;
    x.lse = lse.v();
    attend(pth, p, q.cv(), k.cv(), v.cv(), o.v(), x);
    check_identity<E>("o", o.cv(), o_none.cv());
    check_identity<E>("lse", lse.cv(), lse_none.cv());
  };
  if (pr == precision::f64)
    check(double{});
  else
    check(float{});
}
