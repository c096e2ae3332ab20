// SPDX-License-Identifier: Apache-2.0
// Tokens never reach the outputs of earlier tokens, nor other sequences of a varlen batch: NaN
// and inf planted in k, v (and NaN in the gate) at token j leave every output before j (and every
// other sequence's outputs and final state) bitwise equal to a clean run of the same kernel, for
// every linear variant and both algorithms; j sits on chunk edges (63, 64, 129) and mid-chunk.
// Negative control: the outputs from token j on turn non-finite.
#include <attnkit/linear.hpp>
#include <support/invisible.hpp>

using namespace attnkit;
using namespace attnkit::test;

namespace {

enum class variant { linear_attn, normalized, simple_gla, gla };

const char* name_of(variant v) {
  switch (v) {
    case variant::linear_attn:
      return "linear_attn";
    case variant::normalized:
      return "linear_attn(normalize)";
    case variant::simple_gla:
      return "simple_gla";
    default:
      return "gla";
  }
}

template <class E>
struct inputs {
  using A = accum_t<E>;
  owned_tensor<E, 4> q, k, v;
  owned_tensor<A, 3> g;       // [B,T,H] logsigmoid
  owned_tensor<A, 4> g_chan;  // [B,T,H,K]
  inputs(index_t B, index_t T, index_t H, index_t K, index_t V) {
    q = owned_tensor<E, 4>({B, T, H, K});
    k = owned_tensor<E, 4>({B, T, H, K});
    v = owned_tensor<E, 4>({B, T, H, V});
    g = owned_tensor<A, 3>({B, T, H});
    g_chan = owned_tensor<A, 4>({B, T, H, K});
    std::mt19937_64 rng(std::uint64_t(T * 31 + K));
    fill_normal(q.v(), rng);
    fill_normal(k.v(), rng);
    fill_normal(v.v(), rng);
    fill_uniform(g.v(), rng, -1.0, -0.01);
    fill_uniform(g_chan.v(), rng, -1.0, -0.01);
  }
  /// A copy with garbage at token t of every batch row listed.
  inputs planted(index_t b, index_t t, const garbage& gb) const {
    inputs d = *this;
    d.q = clone(q), d.k = clone(k), d.v = clone(v), d.g = clone(g), d.g_chan = clone(g_chan);
    plant(d.k.v(), b, t, gb.k);
    plant(d.v.v(), b, t, gb.v);
    plant(d.g.v(), b, t, std::numeric_limits<double>::quiet_NaN());
    plant(d.g_chan.v(), b, t, std::numeric_limits<double>::quiet_NaN());
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
  linear_params p;
  p.algo = algo;
  p.normalize = var == variant::normalized;
  const recurrent_state<A> st{{}, r.ht.v(), cu};
  switch (var) {
    case variant::linear_attn:
    case variant::normalized:
      linear_attn(p, in.q.cv(), in.k.cv(), in.v.cv(), r.o.v(), st);
      break;
    case variant::simple_gla:
      simple_gla(p, in.q.cv(), in.k.cv(), in.v.cv(), in.g.cv(), r.o.v(), st);
      break;
    case variant::gla:
      gla(p, in.q.cv(), in.k.cv(), in.v.cv(), in.g_chan.cv(), r.o.v(), st);
      break;
  }
  return r;
}

const variant kVariants[] = {variant::linear_attn, variant::normalized, variant::simple_gla,
                             variant::gla};

}  // namespace

TEMPLATE_TEST_CASE("invisible tokens: later tokens of a chunk", "[invisible][linear]", double,
                   float) {
  using E = TestType;
  const inputs<E> in(2, 130, 2, 24, 20);
  for (const variant var : kVariants)
    for (const algorithm algo : {algorithm::chunk, algorithm::recurrent}) {
      const auto clean = run(var, algo, in, {});
      for (const index_t j : {63, 64, 100, 129})
        for (const garbage& gb : kGarbage) {
          INFO(name_of(var) << " " << algorithm_name(algo) << " token " << j);
          const auto dirty = run(var, algo, in.planted(1, j, gb), {});
          check_rows(clean.o, dirty.o, [&](index_t b, index_t t) { return b == 1 && t >= j; });
        }
    }
}

TEMPLATE_TEST_CASE("invisible tokens: other sequences of a varlen batch", "[invisible][linear]",
                   double, float) {
  using E = TestType;
  const inputs<E> in(1, 150, 2, 24, 20);
  const std::vector<std::int32_t> cu = {0, 70, 150};
  const auto cu_v = make_view(cu.data(), index_t(cu.size()));
  for (const variant var : kVariants)
    for (const algorithm algo : {algorithm::chunk, algorithm::recurrent}) {
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
