// SPDX-License-Identifier: Apache-2.0
// Workspace sizes: a size that cannot be addressed is refused before any work, naming the buffer;
// an allocation that fails becomes an attnkit::error naming the call (not a bare std::bad_alloc);
// a chunk longer than the sequence is the whole sequence (bounded workspace, same result).
#include <attnkit/attnkit.hpp>
#include <support/test_util.hpp>

using namespace attnkit;
using namespace attnkit::test;
using Catch::Matchers::Contains;

namespace {

// Views that claim huge extents at addresses 16 TiB apart (in the 128 TiB user address space), so
// that they are valid (addressable, disjoint) views. They are never read: the call is refused,
// or fails to allocate its workspace, before reading them.
template <class T>
tensor_view<T, 4> far_view(int slot, index_t d0, index_t d1, index_t d2, index_t d3) {
  return tensor_view<T, 4>(reinterpret_cast<T*>(std::uintptr_t(slot) << 44), {d0, d1, d2, d3});
}

}  // namespace

TEST_CASE("workspace: unaddressable sizes are refused by name", "[workspace]") {
  const index_t big = index_t(1) << 31;  // K = V = 2^31: the K x V state's bytes overflow
  const auto q = far_view<const float>(1, 1, 1, 1, big), k = far_view<const float>(2, 1, 1, 1, big);
  const auto v = far_view<const float>(3, 1, 1, 1, big);
  const auto o = far_view<float>(4, 1, 1, 1, big);
  owned_tensor<float, 3> beta({1, 1, 1});
  beta.view(0, 0, 0) = 0.5f;
  for (const algorithm a : {algorithm::recurrent, algorithm::chunk}) {
    linear_params lp;
    lp.algo = a;
    CHECK_THROWS_WITH(linear_attn(lp, q, k, v, o),
                      Contains("linear_attn: workspace buffer") && Contains("cannot be addressed"));
    delta_params dp;
    dp.algo = a;
    CHECK_THROWS_WITH(delta_rule(dp, q, k, v, beta.cv(), o),
                      Contains("delta_rule: workspace buffer") && Contains("cannot be addressed"));
  }
}

#if !defined(__SANITIZE_ADDRESS__)  // AddressSanitizer aborts on a failed operator new
TEST_CASE("workspace: an allocation that fails is an attnkit::error", "[workspace]") {
  // K = V = 2^20: inputs of 4 MiB each, a K x V state of 4 TiB
  const index_t K = index_t(1) << 20;
  owned_tensor<float, 4> q({1, 1, 1, K}), v({1, 1, 1, K}), o({1, 1, 1, K});
  std::mt19937_64 rng(1);
  fill_normal(q.v(), rng);
  fill_normal(v.v(), rng);
  CHECK_THROWS_WITH(linear_attn(linear_params{}, q.cv(), q.cv(), v.cv(), o.v()),
                    Contains("linear_attn: out of memory allocating the workspace") &&
                        Contains("largest buffer 'state'"));
  owned_tensor<float, 3> beta({1, 1, 1});
  beta.view(0, 0, 0) = 0.5f;
  CHECK_THROWS_WITH(delta_rule(delta_params{}, q.cv(), q.cv(), v.cv(), beta.cv(), o.v()),
                    Contains("delta_rule: out of memory allocating the workspace"));
  // softmax: Dv = 2^40 (values and output far away, never reached): 4 TiB of accumulators
  const index_t Dv = index_t(1) << 40;
  owned_tensor<float, 4> qs({1, 1, 1, 4}), ks({1, 1, 1, 4});
  CHECK_THROWS_WITH(
      standard_attention(softmax_params{}, qs.cv(), ks.cv(), far_view<const float>(1, 1, 1, 1, Dv),
                         far_view<float>(2, 1, 1, 1, Dv)),
      Contains("standard_attention: out of memory allocating the workspace"));
}
#endif

TEMPLATE_TEST_CASE("workspace: a chunk longer than the sequence is the whole sequence",
                   "[workspace]", double, float) {
  using E = TestType;
  const index_t T = 130, H = 2, K = 24, V = 20;
  owned_tensor<E, 4> q({1, T, H, K}), k({1, T, H, K}), v({1, T, H, V});
  owned_tensor<accum_t<E>, 3> beta({1, T, H});
  std::mt19937_64 rng(3);
  fill_normal(q.v(), rng);
  fill_normal(k.v(), rng);
  fill_normal(v.v(), rng);
  fill_uniform(beta.v(), rng, 0.1, 0.9);
  auto same = [](const owned_tensor<E, 4>& a, const owned_tensor<E, 4>& b) {
    return std::equal(a.buf.begin(), a.buf.end(), b.buf.begin(),
                      [](E x, E y) { return std::memcmp(&x, &y, sizeof(E)) == 0; });
  };
  for (const index_t huge : {index_t(131), index_t(4096)}) {  // the largest chunk allowed
    owned_tensor<E, 4> o1({1, T, H, V}), o2({1, T, H, V});
    linear_params lp;
    lp.algo = algorithm::chunk;
    lp.chunk_size = T;
    linear_attn(lp, q.cv(), k.cv(), v.cv(), o1.v());
    lp.chunk_size = huge;
    linear_attn(lp, q.cv(), k.cv(), v.cv(), o2.v());
    CHECK(same(o1, o2));
    delta_params dp;
    dp.algo = algorithm::chunk;
    dp.qk_l2norm = true;
    dp.chunk_size = T;
    delta_rule(dp, q.cv(), k.cv(), v.cv(), beta.cv(), o1.v());
    dp.chunk_size = huge;
    delta_rule(dp, q.cv(), k.cv(), v.cv(), beta.cv(), o2.v());
    CHECK(same(o1, o2));
  }
}
