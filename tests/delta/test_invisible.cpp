// SPDX-License-Identifier: Apache-2.0
// Tokens never reach the outputs of earlier tokens, nor other sequences of a varlen batch: NaN
// and inf planted in k, v (and NaN in beta and the gate) at token j leave every output before j
// (and every other sequence's outputs and final state) bitwise equal to a clean run of the same
// kernel, for every delta-rule variant and algorithm; j sits on chunk edges (63, 64, 129) and
// mid-chunk. Negative control: the outputs from token j on turn non-finite.
#include <support/delta_inputs.hpp>
#include <support/invisible.hpp>

using namespace attnkit;
using namespace attnkit::test;

namespace {

using variant = delta_variant;

/// The invisible tests' inputs: HV = 2H, seeded by the shape, log decays in [-1, -0.01].
template <class E>
struct inputs : delta_inputs<E> {
  inputs(index_t B, index_t T, index_t H, index_t K, index_t V)
      : delta_inputs<E>(B, T, H, 2 * H, K, V, std::uint64_t(T * 37 + K), -1.0) {}
  /// A copy with garbage at token t of batch row b.
  inputs planted(index_t b, index_t t, const garbage& gb) const {
    inputs d = *this;
    d.q = clone(this->q), d.k = clone(this->k), d.v = clone(this->v);
    d.beta = clone(this->beta), d.g = clone(this->g), d.gc = clone(this->gc);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    plant(d.k.v(), b, t, gb.k);
    plant(d.v.v(), b, t, gb.v);
    plant(d.beta.v(), b, t, nan);
    plant(d.g.v(), b, t, nan);
    plant(d.gc.v(), b, t, nan);
    return d;
  }
};

template <class E>
struct result {
  owned_tensor<E, 4> o;
  owned_tensor<accum_t<E>, 4> ht;
};

template <class E>
result<E> run(variant var, algorithm algo, const inputs<E>& in, const cview<std::int32_t, 1>& cu) {
  using A = accum_t<E>;
  const auto ext = in.v.view.extents();
  const index_t N = cu.present() ? cu.extent(0) - 1 : ext[0];
  result<E> r{owned_tensor<E, 4>(ext),
              owned_tensor<A, 4>({N, ext[2], in.k.view.extent(3), ext[3]})};
  delta_params p;
  p.algo = algo;
  p.qk_l2norm = true;
  const recurrent_state<A> st{{}, r.ht.v(), cu};
  const auto whole = [](auto x) { return x; };
  call_delta(false, var, p, in, whole, r.o.v(), st);
  return r;
}

/// The algorithms each variant has.
std::vector<algorithm> algorithms_of(variant var) {
  const variant_info& vi = variant_by_name(name_of(var));
  std::vector<algorithm> a;
  if (vi.has_chunk) a.push_back(algorithm::chunk);
  if (vi.has_recurrent) a.push_back(algorithm::recurrent);
  return a;
}

const variant kVariants[] = {variant::delta_rule, variant::gated_delta_rule, variant::kda};

}  // namespace

TEMPLATE_TEST_CASE("invisible tokens: later tokens of a chunk", "[invisible][delta]", double,
                   float) {
  using E = TestType;
  const inputs<E> in(2, 130, 2, 24, 20);
  for (const variant var : kVariants)
    for (const algorithm algo : algorithms_of(var)) {
      const auto clean = run(var, algo, in, {});
      for (const index_t j : {63, 64, 100, 129})
        for (const garbage& gb : kGarbage) {
          INFO(name_of(var) << " " << algorithm_name(algo) << " token " << j);
          const auto dirty = run(var, algo, in.planted(1, j, gb), {});
          check_rows(clean.o, dirty.o, [&](index_t b, index_t t) { return b == 1 && t >= j; });
        }
    }
}

TEMPLATE_TEST_CASE("invisible tokens: other sequences of a varlen batch", "[invisible][delta]",
                   double, float) {
  using E = TestType;
  const inputs<E> in(1, 150, 2, 24, 20);
  const std::vector<std::int32_t> cu = {0, 70, 150};
  const auto cu_v = make_view(cu.data(), index_t(cu.size()));
  for (const variant var : kVariants)
    for (const algorithm algo : algorithms_of(var)) {
      INFO(name_of(var) << " " << algorithm_name(algo));
      const auto clean = run(var, algo, in, cu_v);
      for (const garbage& gb : kGarbage) {
        const auto dirty = run(var, algo, in.planted(0, 100, gb), cu_v);
        check_rows(clean.o, dirty.o, [&](index_t, index_t t) { return t >= 100; });
        // the first sequence's final state is untouched
        const auto ht_ext = clean.ht.view.extents();
        bool same = true;
        for_each_index<4>({1, ht_ext[1], ht_ext[2], ht_ext[3]}, [&](const auto& i) {
          same &= at(clean.ht.view, i) == at(dirty.ht.view, i);
        });
        CHECK(same);
      }
    }
}
