// SPDX-License-Identifier: Apache-2.0
// Set-up shared by the delta-family tests that run every variant (tests/delta/test_state_pool.cpp,
// test_snapshots.cpp, test_invisible.cpp): the three variants, random inputs for all of them, and
// one call of a variant (kernel or reference) on a cut of those inputs.
#pragma once

#include <attnkit/delta.hpp>
#include <cstdint>
#include <random>

#include "test_util.hpp"

namespace attnkit::test {

enum class delta_variant { delta_rule, gated_delta_rule, kda };

inline const char* name_of(delta_variant v) {
  return v == delta_variant::delta_rule         ? "delta_rule"
         : v == delta_variant::gated_delta_rule ? "gated_delta_rule"
                                                : "kda";
}

/// q, k [B,T,H,K]; v [B,T,HV,V]; beta, g [B,T,HV]; gc [B,T,HV,K]. Normal q, k, v; beta in
/// [0.1, 0.9]; the log decays g, gc in [g_min, -0.01].
template <class E>
struct delta_inputs {
  using A = accum_t<E>;
  owned_tensor<E, 4> q, k, v;
  owned_tensor<A, 3> beta, g;
  owned_tensor<A, 4> gc;
  delta_inputs(index_t B, index_t T, index_t H, index_t HV, index_t K, index_t V,
               std::uint64_t seed, double g_min)
      : q({B, T, H, K}),
        k({B, T, H, K}),
        v({B, T, HV, V}),
        beta({B, T, HV}),
        g({B, T, HV}),
        gc({B, T, HV, K}) {
    std::mt19937_64 rng(seed);
    fill_normal(q.v(), rng);
    fill_normal(k.v(), rng);
    fill_normal(v.v(), rng);
    fill_uniform(beta.v(), rng, 0.1, 0.9);
    fill_uniform(g.v(), rng, g_min, -0.01);
    fill_uniform(gc.v(), rng, g_min, -0.01);
  }
};

/// One call of `var` (the reference if `ref`, else the kernel) on cut(x) of every input x.
template <class E, class Cut>
void call_delta(bool ref, delta_variant var, const delta_params& p, const delta_inputs<E>& in,
                const Cut& cut, const tensor_view<E, 4>& o, const recurrent_state<accum_t<E>>& s) {
  const auto q = cut(in.q.cv()), k = cut(in.k.cv()), v = cut(in.v.cv());
  const auto beta = cut(in.beta.cv());
  switch (var) {
    case delta_variant::delta_rule:
      ATTNKIT_CALL(ref, delta_rule, p, q, k, v, beta, o, s);
      break;
    case delta_variant::gated_delta_rule:
      ATTNKIT_CALL(ref, gated_delta_rule, p, q, k, v, cut(in.g.cv()), beta, o, s);
      break;
    case delta_variant::kda:
      ATTNKIT_CALL(ref, kda, p, q, k, v, cut(in.gc.cv()), beta, o, s);
      break;
  }
}

}  // namespace attnkit::test
