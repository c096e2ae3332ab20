// SPDX-License-Identifier: Apache-2.0
// State pools (continuous batching): h0 / ht are pools [P,HV,K,V] and sequence n uses row
// state_indices[n] (-1: skipped, zero outputs, no state). For every delta-rule variant and
// algorithm, the fast kernel and the reference: a pooled call (rows out of order, a skipped
// sequence, in place and into a separate pool, prefill and the one-token decode step) equals
// separate calls per sequence; rows no sequence names are untouched; errors name the bad slot.
#include <support/delta_inputs.hpp>

using namespace attnkit;
using namespace attnkit::test;
using Catch::Matchers::Contains;

namespace {

using variant = delta_variant;

/// The pool tests' inputs: seeded by the shape, log decays in [-0.5, -0.01].
template <class E>
struct inputs : delta_inputs<E> {
  inputs(index_t B, index_t T, index_t H, index_t HV, index_t K, index_t V)
      : delta_inputs<E>(B, T, H, HV, K, V, std::uint64_t(T * 13 + K), -0.5) {}
};

/// One call on batch rows [b0, b1) with the given state.
template <class E>
void call(bool ref, variant var, algorithm algo, const inputs<E>& in, index_t b0, index_t b1,
          const tensor_view<E, 4>& o, const recurrent_state<accum_t<E>>& s) {
  delta_params p;
  p.algo = algo;
  p.qk_l2norm = true;
  const auto cut = [&](auto x) { return slice(x, 0, b0, b1); };
  call_delta(ref, var, p, in, cut, o, s);
}

}  // namespace

TEMPLATE_TEST_CASE("state pool: pooled calls equal separate calls", "[delta][pool]", double,
                   float) {
  using E = TestType;
  using A = accum_t<E>;
  const index_t B = 3, H = 2, HV = 4, K = 16, V = 12, P = 6;
  const std::vector<std::int32_t> idx = {4, -1, 1};
  const auto idx_v = make_view(idx.data(), index_t(3));
  for (const variant var : {variant::delta_rule, variant::gated_delta_rule, variant::kda})
    for (const algorithm algo : {algorithm::chunk, algorithm::recurrent}) {
      if (!supports(variant_by_name(name_of(var)), algo)) continue;
      for (const index_t T : {1, 37}) {  // the decode step (direct path) and a prefill
        for (const bool ref : {false, true})
          for (const bool in_place : {true, false}) {
            INFO(name_of(var) << " " << algorithm_name(algo) << " T=" << T
                              << (ref ? " reference" : " kernel")
                              << (in_place ? " in place" : " separate ht pool"));
            const inputs<E> in(B, T, H, HV, K, V);
            owned_tensor<A, 4> pool({P, HV, K, V});
            std::mt19937_64 rng(5);
            fill_normal(pool.v(), rng, 0.3);
            const auto pool0 = clone(pool);
            owned_tensor<A, 4> ht_pool({P, HV, K, V});  // NaN: rows not named stay NaN
            owned_tensor<E, 4> o({B, T, HV, V});
            recurrent_state<A> s{pool.cv(), in_place ? pool.v() : ht_pool.v(), {}, idx_v};
            call(ref, var, algo, in, 0, B, o.v(), s);
            const auto& out_pool = in_place ? pool : ht_pool;
            for (index_t b = 0; b < B; ++b) {
              const index_t r = idx[std::size_t(b)];
              if (r < 0) {
                bool zeros = true;
                for_each_index<4>({1, T, HV, V}, [&](std::array<index_t, 4> i) {
                  i[0] = b;
                  zeros &= to_compute<double>(at(o.view, i)) == 0.0;
                });
                CHECK(zeros);
                continue;
              }
              // the same sequence alone, from its pool row
              owned_tensor<A, 4> h({1, HV, K, V});
              copy(slice(pool0.cv(), 0, r, r + 1), h.v());
              owned_tensor<E, 4> ob({1, T, HV, V});
              call(ref, var, algo, in, b, b + 1, ob.v(), recurrent_state<A>{h.cv(), h.v(), {}});
              check_identity<E>("o", slice(o.cv(), 0, b, b + 1), ob.cv());
              check_identity<E>("state row", slice(out_pool.cv(), 0, r, r + 1), h.cv());
            }
            // rows no sequence names: untouched
            for (const index_t r : {0, 2, 3, 5}) {
              bool same = true;
              for_each_index<4>({1, HV, K, V}, [&](std::array<index_t, 4> i) {
                i[0] = r;
                const A x = at(out_pool.view, i), y = in_place ? at(pool0.view, i) : A(0);
                same &= in_place ? x == y : std::isnan(double(x));
              });
              CHECK(same);
            }
          }
      }
    }
}

TEST_CASE("state pool: errors name the bad slot", "[delta][pool][errors]") {
  const inputs<float> in(2, 3, 1, 1, 4, 4);
  owned_tensor<float, 4> pool({3, 1, 4, 4}), o({2, 3, 1, 4});
  const std::vector<std::int32_t> bad = {0, 3}, dup = {2, 2}, ok = {2, 0};
  auto run = [&](const std::vector<std::int32_t>& idx, bool with_pool) {
    const recurrent_state<float> s{with_pool ? pool.cv() : cview<float, 4>(),
                                   with_pool ? pool.v() : tensor_view<float, 4>(),
                                   {},
                                   make_view(idx.data(), index_t(idx.size()))};
    call(false, variant::delta_rule, algorithm::recurrent, in, 0, 2, o.v(), s);
  };
  CHECK_THROWS_WITH(run(bad, true), Contains("state_indices[1] = 3 is not a pool row in [0, 3)"));
  CHECK_THROWS_WITH(run(dup, true), Contains("state_indices[1] = 2 names a pool row another"));
  CHECK_THROWS_WITH(run(ok, false), Contains("neither h0 nor ht is given"));
  const std::vector<std::int32_t> short_idx = {0};
  CHECK_THROWS_WITH(run(short_idx, true), Contains("tensor 'state_indices' [N] dim 0 (N)"));
  CHECK_NOTHROW(run(ok, true));
}
