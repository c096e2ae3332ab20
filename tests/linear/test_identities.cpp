// SPDX-License-Identifier: Apache-2.0
// Identities between the linear-attention variants, for the fast kernels and for the references,
// in float64 (1e-12 relative) and float32 (the family's usual tolerance), on awkward shapes (T
// around the chunk size, head dims that are not powers of two), every algorithm, with an initial
// state h0 and the final state ht compared too:
//   gla with every key-channel gate equal to g[b,t,h]    == simple_gla with g [B,T,H]
//   gla with every key-channel gate equal to g_gamma[h]  == simple_gla with g_gamma [H]
// Each check also asserts the compared results are not trivially zero, and a negative control
// (one key channel of the gate changed) shows the comparison can fail.
#include <attnkit/linear.hpp>
#include <support/test_util.hpp>

using namespace attnkit;
using namespace attnkit::test;

namespace {

/// Who computes: the reference, or the fast kernel with the given algorithm.
enum class path { reference, recurrent, chunk, automatic };

/// The scalar gate of simple_gla: per token and head g [B,T,H], or a fixed g_gamma [H].
enum class scalar_gate { per_token, gamma };

const char* name_of(path p) {
  switch (p) {
    case path::reference:
      return "reference";
    case path::recurrent:
      return "recurrent";
    case path::chunk:
      return "chunk";
    default:
      return "automatic";
  }
}

struct shape {
  index_t B = 2, T = 1, H = 1, K = 8, V = 8;
  bool v_first = false;
};

/// Inputs: q, k [B,T,H,K], v [B,T,H,V], the scalar gates g [B,T,H] and g_gamma [H]
/// (logsigmoid(N(0,1)), g with a few full resets at -1000), the channel gate equal to one of them
/// on every key channel, and h0.
template <class E>
struct inputs {
  using A = accum_t<E>;
  shape sh;
  owned_tensor<E, 4> q, k, v;
  owned_tensor<A, 3> g;
  owned_tensor<A, 1> gamma;
  owned_tensor<A, 4> g_chan, h0;

  inputs(const shape& s, scalar_gate kind, std::uint64_t seed) : sh(s) {
    q = owned_tensor<E, 4>({s.B, s.T, s.H, s.K});
    k = owned_tensor<E, 4>({s.B, s.T, s.H, s.K});
    v = owned_tensor<E, 4>({s.B, s.T, s.H, s.V});
    g = owned_tensor<A, 3>({s.B, s.T, s.H});
    gamma = owned_tensor<A, 1>({s.H});
    g_chan = owned_tensor<A, 4>({s.B, s.T, s.H, s.K});
    std::mt19937_64 rng(seed);
    test::fill_normal(q.v(), rng);
    test::fill_normal(k.v(), rng);
    test::fill_normal(v.v(), rng);
    std::normal_distribution<double> nd;
    auto logsigmoid = [&] { return A(-std::log1p(std::exp(-nd(rng)))); };
    test::for_each_index<3>(g.view.extents(),
                            [&](const auto& i) { test::at(g.view, i) = logsigmoid(); });
    for (index_t t = 5; t < s.T; t += 37) g.view(s.B - 1, t, s.H - 1) = A(-1000);
    for (index_t h = 0; h < s.H; ++h) gamma.view(h) = logsigmoid();
    test::for_each_index<4>(g_chan.view.extents(), [&](const auto& i) {
      test::at(g_chan.view, i) =
          kind == scalar_gate::gamma ? gamma.view(i[2]) : g.view(i[0], i[1], i[2]);
    });
    h0 = make_state();
    test::fill_normal(h0.v(), rng);
  }
  owned_tensor<A, 4> make_state() const {
    return sh.v_first ? owned_tensor<A, 4>({sh.B, sh.H, sh.V, sh.K})
                      : owned_tensor<A, 4>({sh.B, sh.H, sh.K, sh.V});
  }
  owned_tensor<E, 4> make_o() const { return owned_tensor<E, 4>({sh.B, sh.T, sh.H, sh.V}); }
};

template <class E>
void gla_with_equal_channels_is_simple_gla(path pth, scalar_gate kind, const shape& s) {
  using A = accum_t<E>;
  const inputs<E> in(s, kind, 3000 + std::uint64_t(s.T * 7 + s.K));
  linear_params p;
  p.algo = pth == path::chunk       ? algorithm::chunk
           : pth == path::automatic ? algorithm::automatic
                                    : algorithm::recurrent;
  p.state_v_first = s.v_first;
  const bool ref = pth == path::reference;
  const auto q = in.q.cv(), k = in.k.cv(), v = in.v.cv();
  auto gla_of = [&](const cview<A, 4>& g) {
    return run_with_state(
        in, [&](auto o, const auto& st) { ATTNKIT_CALL(ref, gla, p, q, k, v, g, o, st); });
  };
  const auto simple = run_with_state(in, [&](auto o, const auto& st) {
    if (kind == scalar_gate::gamma) {
      ATTNKIT_CALL(ref, simple_gla, p, q, k, v, in.gamma.cv(), o, st);
    } else {
      ATTNKIT_CALL(ref, simple_gla, p, q, k, v, in.g.cv(), o, st);
    }
  });
  const auto chan = gla_of(in.g_chan.cv());
  constexpr double tol = identity_tol<E>();
  check_identity<E>("o", chan.o.cv(), simple.o.cv(), tol);
  check_identity<E>("ht", chan.ht.cv(), simple.ht.cv(), tol);
  // negative control: one key channel of every gate changed
  owned_tensor<A, 4> g2({s.B, s.T, s.H, s.K});
  test::copy(in.g_chan.cv(), g2.v());
  for (index_t b = 0; b < s.B; ++b)
    for (index_t t = 0; t < s.T; ++t)
      for (index_t h = 0; h < s.H; ++h) g2.view(b, t, h, s.K / 2) -= A(1);
  const auto other = gla_of(g2.cv());
  check_differs<E>("o", other.o.cv(), simple.o.cv(), tol);
  check_differs<E>("ht", other.ht.cv(), simple.ht.cv(), tol);
}

}  // namespace

TEST_CASE("linear identity: gla with equal key-channel gates equals simple_gla",
          "[linear][identity]") {
  const precision pr = GENERATE(precision::f64, precision::f32);
  const path pth = GENERATE(path::reference, path::recurrent, path::chunk, path::automatic);
  if (kSanitized && pth == path::reference) return;  // see kSanitized
  const scalar_gate kind = GENERATE(scalar_gate::per_token, scalar_gate::gamma);
  shape s;
  s.T = GENERATE(1, 65, 130);
  s.H = GENERATE(1, 3);
  const auto dims = GENERATE(std::make_pair(20, 12), std::make_pair(7, 33), std::make_pair(72, 40));
  s.v_first = GENERATE(false, true);
  s.K = dims.first;
  s.V = dims.second;
  INFO(name_of(pr) << " " << name_of(pth)
                   << (kind == scalar_gate::gamma ? " g_gamma [H]" : " g [B,T,H]") << " B=" << s.B
                   << " T=" << s.T << " H=" << s.H << " K=" << s.K << " V=" << s.V
                   << " v_first=" << s.v_first);
  if (pr == precision::f64)
    gla_with_equal_channels_is_simple_gla<double>(pth, kind, s);
  else
    gla_with_equal_channels_is_simple_gla<float>(pth, kind, s);
}

TEST_CASE("linear identity: the references' naive chunk form equals their recurrence",
          "[linear][identity][reference]") {
  if (kSanitized) return;  // reference code only: see kSanitized
  using A = double;
  shape s;
  s.T = GENERATE(1, 65, 130);
  s.H = GENERATE(1, 3);
  const auto dims = GENERATE(std::make_pair(20, 12), std::make_pair(7, 33));
  const index_t chunk = GENERATE(7, 64);
  s.v_first = GENERATE(false, true);
  s.K = dims.first;
  s.V = dims.second;
  INFO("T=" << s.T << " H=" << s.H << " K=" << s.K << " V=" << s.V << " v_first=" << s.v_first
            << " chunk=" << chunk);
  const inputs<double> in(s, scalar_gate::per_token, 4000 + std::uint64_t(s.T * 7 + s.K));
  linear_params p;
  p.chunk_size = chunk;
  p.state_v_first = s.v_first;
  linear_params pc = p;  // the references' naive chunk form
  pc.algo = algorithm::chunk;
  const auto q = in.q.cv(), k = in.k.cv(), v = in.v.cv();
  // gla with gates that differ per key channel
  owned_tensor<A, 4> gc({s.B, s.T, s.H, s.K});
  test::copy(in.g_chan.cv(), gc.v());
  for (index_t b = 0; b < s.B; ++b)
    for (index_t t = 0; t < s.T; ++t)
      for (index_t h = 0; h < s.H; ++h)
        for (index_t c = 0; c < s.K; ++c) gc.view(b, t, h, c) *= 0.5 + double(c % 3) * 0.5;
  constexpr double tol = identity_tol<double>();
  const auto both = [&](const char* what, auto recurrent, auto chunked) {
    INFO(what);
    const auto a = run_with_state(in, recurrent), b = run_with_state(in, chunked);
    check_identity<double>("o", b.o.cv(), a.o.cv(), tol);
    check_identity<double>("ht", b.ht.cv(), a.ht.cv(), tol);
  };
  both(
      "linear_attn", [&](auto o, const auto& st) { reference::linear_attn(p, q, k, v, o, st); },
      [&](auto o, const auto& st) { reference::linear_attn(pc, q, k, v, o, st); });
  both(
      "simple_gla",
      [&](auto o, const auto& st) { reference::simple_gla(p, q, k, v, in.g.cv(), o, st); },
      [&](auto o, const auto& st) { reference::simple_gla(pc, q, k, v, in.g.cv(), o, st); });
  both(
      "simple_gla g_gamma",
      [&](auto o, const auto& st) { reference::simple_gla(p, q, k, v, in.gamma.cv(), o, st); },
      [&](auto o, const auto& st) { reference::simple_gla(pc, q, k, v, in.gamma.cv(), o, st); });
  both(
      "gla", [&](auto o, const auto& st) { reference::gla(p, q, k, v, gc.cv(), o, st); },
      [&](auto o, const auto& st) { reference::gla(pc, q, k, v, gc.cv(), o, st); });
  // linear_attn with the normaliser: o and the key sum zt too
  const std::vector<A> z0v(std::size_t(s.B * s.H * s.K), 0.25);
  owned_tensor<A, 4> zt_a({s.B, 1, s.H, s.K}), zt_b({s.B, 1, s.H, s.K});
  linear_params pn = p;
  pn.normalize = true;
  linear_params pnc = pn;
  pnc.algo = algorithm::chunk;
  const cview<A, 4> z0(z0v.data(), {s.B, 1, s.H, s.K});
  const auto a = run_with_state(in, [&](auto o, const auto& st) {
    reference::linear_attn(pn, q, k, v, o, st, linear_extras<A>{z0, zt_a.v()});
  });
  const auto b = run_with_state(in, [&](auto o, const auto& st) {
    reference::linear_attn(pnc, q, k, v, o, st, linear_extras<A>{z0, zt_b.v()});
  });
  check_identity<double>("normalized o", b.o.cv(), a.o.cv(), tol);
  check_identity<double>("zt", zt_b.cv(), zt_a.cv(), tol);
}
