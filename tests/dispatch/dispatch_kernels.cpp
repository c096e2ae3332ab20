// SPDX-License-Identifier: Apache-2.0
#include <attnkit/dispatch.hpp>
#include <random>

#include "support/test_util.hpp"

using namespace attnkit;
using namespace attnkit::test;

TEST_CASE("standard_attention") {
  std::mt19937_64 rng(1);
  owned_tensor<float, 4> q({1, 37, 4, 64}), k({1, 37, 2, 64}), v({1, 37, 2, 64});
  fill_normal(q.v(), rng);
  fill_normal(k.v(), rng);
  fill_normal(v.v(), rng);
  softmax_params p;
  p.causal = true;
  owned_tensor<float, 4> want({1, 37, 4, 64});
  standard_attention(p, q.cv(), k.cv(), v.cv(), want.v());
  for (auto i : {dispatch::isa::sse2, dispatch::isa::avx2, dispatch::isa::avx512}) {
    if (!dispatch::isa_supported(i)) continue;
    dispatch::force_isa(i);
    owned_tensor<float, 4> got({1, 37, 4, 64});
    dispatch::standard_attention(p, q.cv(), k.cv(), v.cv(), got.v());
    INFO(dispatch::isa_name(i));
    ATTNKIT_CHECK_CLOSE(got.cv(), want.cv(), 1e-6);
  }
}
