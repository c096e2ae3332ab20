// SPDX-License-Identifier: Apache-2.0
// Identities between the delta-rule variants, for the fast kernels and for the references, in
// float64 (1e-12 relative) and float32 (the family's usual tolerance), on awkward shapes (T around
// the chunk size, head dims that are not powers of two, GVA), both algorithms, with an initial
// state h0 and the final state ht compared too:
//   gated_delta_rule with g = 0                     == delta_rule
//   kda with every key-channel gate equal to g[b,t,j] == gated_delta_rule with g
// Each check also asserts the compared results are not trivially zero, and a negative control
// (a gate that differs) shows the comparison can fail.
#include <attnkit/delta.hpp>
#include <sstream>
#include <string>
#include <support/test_util.hpp>

using namespace attnkit;
using namespace attnkit::test;

namespace {

/// Who computes: the reference, or the fast kernel with the given algorithm.
enum class path { reference, recurrent, chunk };

const char* name_of(path p) {
  return p == path::reference ? "reference" : p == path::recurrent ? "recurrent" : "chunk";
}

struct shape {
  index_t B = 2, T = 1, H = 1, HV = 1, K = 8, V = 8;
  bool v_first = false;
};

/// B = 2 and T tokens, (H, HV) heads, (K, V) dims.
shape shape_of(index_t T, std::pair<int, int> heads, std::pair<int, int> dims, bool v_first) {
  shape s;
  s.T = T;
  s.H = heads.first;
  s.HV = heads.second;
  s.K = dims.first;
  s.V = dims.second;
  s.v_first = v_first;
  return s;
}

/// Inputs of one identity: q, k [B,T,H,K], v [B,T,HV,V], beta [B,T,HV], a scalar gate g [B,T,HV],
/// the same gate broadcast over the key channels g_chan [B,T,HV,K], a zero gate, h0, and the
/// in-kernel gate parameters (A_log [HV], dt_bias [HV] and its broadcast [HV*K]).
template <class E>
struct inputs {
  using A = accum_t<E>;
  shape sh;
  owned_tensor<E, 4> q, k, v;
  owned_tensor<A, 3> beta, g, g_zero;
  owned_tensor<A, 4> g_chan, h0;
  std::vector<A> a_log, dt_bias, dt_bias_chan;

  /// raw: q, k, beta and g are raw projections for the in-kernel transforms; otherwise unit-norm
  /// q, k, beta in (0,1) and log gates logsigmoid(N(0,1)) with a few full resets (-1000).
  inputs(const shape& s, std::uint64_t seed, bool raw) : sh(s) {
    q = owned_tensor<E, 4>({s.B, s.T, s.H, s.K});
    k = owned_tensor<E, 4>({s.B, s.T, s.H, s.K});
    v = owned_tensor<E, 4>({s.B, s.T, s.HV, s.V});
    beta = owned_tensor<A, 3>({s.B, s.T, s.HV});
    g = owned_tensor<A, 3>({s.B, s.T, s.HV});
    g_zero = owned_tensor<A, 3>({s.B, s.T, s.HV});
    g_chan = owned_tensor<A, 4>({s.B, s.T, s.HV, s.K});
    std::mt19937_64 rng(seed);
    test::fill_normal(q.v(), rng);
    test::fill_normal(k.v(), rng);
    test::fill_normal(v.v(), rng);
    if (raw) {
      test::fill_normal(beta.v(), rng);
      test::fill_normal(g.v(), rng);
    } else {
      test::normalise_rows(q.v());
      test::normalise_rows(k.v());
      test::fill_uniform(beta.v(), rng, 0.05, 0.95);
      std::normal_distribution<double> nd;
      test::for_each_index<3>(g.view.extents(), [&](const auto& i) {
        test::at(g.view, i) = A(-std::log1p(std::exp(-nd(rng))));
      });
      for (index_t t = 5; t < s.T; t += 37) g.view(s.B - 1, t, s.HV - 1) = A(-1000);
    }
    test::for_each_index<3>(g_zero.view.extents(),
                            [&](const auto& i) { test::at(g_zero.view, i) = A(0); });
    test::for_each_index<4>(g_chan.view.extents(), [&](const auto& i) {
      test::at(g_chan.view, i) = g.view(i[0], i[1], i[2]);
    });
    std::uniform_real_distribution<double> ud(0.0, 2.0);
    for (index_t j = 0; j < s.HV; ++j) {
      a_log.push_back(A(ud(rng) - 1.0));
      dt_bias.push_back(A(ud(rng) - 1.5));
      for (index_t c = 0; c < s.K; ++c) dt_bias_chan.push_back(dt_bias.back());
    }
    h0 = make_state();
    test::fill_normal(h0.v(), rng, 0.5);
  }
  owned_tensor<A, 4> make_state() const {
    return sh.v_first ? owned_tensor<A, 4>({sh.B, sh.HV, sh.V, sh.K})
                      : owned_tensor<A, 4>({sh.B, sh.HV, sh.K, sh.V});
  }
  owned_tensor<E, 4> make_o() const { return owned_tensor<E, 4>({sh.B, sh.T, sh.HV, sh.V}); }
  /// gated_delta_rule's gate parameters ([HV] dt_bias) or kda's ([HV*K], the same per channel).
  delta_gate_params<A> gate_params(bool channel) const {
    delta_gate_params<A> gp;
    gp.A_log = cview<A, 1>(a_log.data(), {sh.HV});
    gp.dt_bias = channel ? cview<A, 1>(dt_bias_chan.data(), {sh.HV * sh.K})
                         : cview<A, 1>(dt_bias.data(), {sh.HV});
    return gp;
  }
};

delta_params params_of(path pth, bool v_first) {
  delta_params p;
  p.algo = pth == path::chunk ? algorithm::chunk : algorithm::recurrent;
  p.state_v_first = v_first;
  return p;
}

std::string describe(precision pr, path pth, const shape& s) {
  std::ostringstream os;
  os << name_of(pr) << " " << name_of(pth) << " B=" << s.B << " T=" << s.T << " H=" << s.H
     << " HV=" << s.HV << " K=" << s.K << " V=" << s.V << " v_first=" << s.v_first;
  return os.str();
}

// ------------------------------------------------------------------------------------------------

template <class E>
void gated_with_zero_gate_is_delta_rule(path pth, const shape& s) {
  const inputs<E> in(s, 1000 + std::uint64_t(s.T * 7 + s.HV), false);
  const delta_params p = params_of(pth, s.v_first);
  const bool ref = pth == path::reference;
  const auto q = in.q.cv(), k = in.k.cv(), v = in.v.cv();
  const auto beta = in.beta.cv();
  auto gated = [&](const cview<accum_t<E>, 3>& g) {
    return run_with_state(in, [&](auto o, const auto& st) {
      ATTNKIT_CALL(ref, gated_delta_rule, p, q, k, v, g, beta, o, st);
    });
  };
  const auto plain = run_with_state(
      in, [&](auto o, const auto& st) { ATTNKIT_CALL(ref, delta_rule, p, q, k, v, beta, o, st); });
  const auto zero = gated(in.g_zero.cv());
  constexpr double tol = identity_tol<E>();
  check_identity<E>("o", zero.o.cv(), plain.o.cv(), tol);
  check_identity<E>("ht", zero.ht.cv(), plain.ht.cv(), tol);
  // a real gate changes both (so the comparison above can fail)
  const auto decayed = gated(in.g.cv());
  check_differs<E>("o", decayed.o.cv(), plain.o.cv(), tol);
  check_differs<E>("ht", decayed.ht.cv(), plain.ht.cv(), tol);
}

/// kda (recurrent only) with g broadcast over K against gated_delta_rule with g, computed by
/// `pth` (the reference of both, or kda's recurrent kernel against gated_delta_rule's recurrent
/// or chunk kernel). gate_fn != none: g holds the raw projection, transformed in the kernel
/// (with A_log and dt_bias, broadcast for kda), together with q/k L2 norm and beta sigmoid.
template <class E>
void kda_with_equal_channels_is_gated(path pth, const shape& s, delta_gate_fn gate_fn) {
  using A = accum_t<E>;
  const bool raw = gate_fn != delta_gate_fn::none;
  const inputs<E> in(s, 2000 + std::uint64_t(s.T * 7 + s.HV), raw);
  delta_params p = params_of(pth, s.v_first);
  p.gate_fn = gate_fn;
  p.qk_l2norm = p.beta_sigmoid = raw;
  const bool ref = pth == path::reference;
  const auto q = in.q.cv(), k = in.k.cv(), v = in.v.cv();
  const auto beta = in.beta.cv();
  const auto gp_scalar = raw ? in.gate_params(false) : delta_gate_params<A>{};
  const auto gp_chan = raw ? in.gate_params(true) : delta_gate_params<A>{};
  auto kda_of = [&](const cview<A, 4>& g) {
    return run_with_state(in, [&](auto o, const auto& st) {
      ATTNKIT_CALL(ref, kda, p, q, k, v, g, beta, o, st, gp_chan);
    });
  };
  const auto gated = run_with_state(in, [&](auto o, const auto& st) {
    ATTNKIT_CALL(ref, gated_delta_rule, p, q, k, v, in.g.cv(), beta, o, st, gp_scalar);
  });
  const auto chan = kda_of(in.g_chan.cv());
  const double tol = identity_tol<E>();
  check_identity<E>("o", chan.o.cv(), gated.o.cv(), tol);
  check_identity<E>("ht", chan.ht.cv(), gated.ht.cv(), tol);
  // negative control: one key channel of every gate changed
  owned_tensor<A, 4> g2({s.B, s.T, s.HV, s.K});
  test::copy(in.g_chan.cv(), g2.v());
  for (index_t b = 0; b < s.B; ++b)
    for (index_t t = 0; t < s.T; ++t)
      for (index_t j = 0; j < s.HV; ++j) g2.view(b, t, j, s.K / 2) -= A(raw ? 2 : 1);
  const auto other = kda_of(g2.cv());
  check_differs<E>("o", other.o.cv(), gated.o.cv(), tol);
  check_differs<E>("ht", other.ht.cv(), gated.ht.cv(), tol);
}

}  // namespace

TEST_CASE("delta identity: gated_delta_rule with g = 0 equals delta_rule", "[delta][identity]") {
  const precision pr = GENERATE(precision::f64, precision::f32);
  const path pth = GENERATE(path::reference, path::recurrent, path::chunk);
  const index_t T = GENERATE(1, 65, 130);
  const auto heads = GENERATE(std::make_pair(1, 1), std::make_pair(2, 4), std::make_pair(2, 6));
  const auto dims = GENERATE(std::make_pair(20, 12), std::make_pair(7, 33));
  const shape s = shape_of(T, heads, dims, GENERATE(false, true));
  INFO(describe(pr, pth, s));
  if (pr == precision::f64)
    gated_with_zero_gate_is_delta_rule<double>(pth, s);
  else
    gated_with_zero_gate_is_delta_rule<float>(pth, s);
}

TEST_CASE("delta identity: kda with equal key-channel gates equals gated_delta_rule",
          "[delta][identity]") {
  const precision pr = GENERATE(precision::f64, precision::f32);
  const path pth = GENERATE(path::reference, path::recurrent, path::chunk);
  if (kSanitized && pth == path::reference) return;  // see kSanitized
  const delta_gate_fn gate_fn =
      GENERATE(delta_gate_fn::none, delta_gate_fn::softplus, delta_gate_fn::lower_bound);
  const index_t T = GENERATE(1, 65, 130);
  const auto heads = GENERATE(std::make_pair(1, 1), std::make_pair(2, 4), std::make_pair(2, 6));
  const auto dims = GENERATE(std::make_pair(20, 12), std::make_pair(7, 33));
  const shape s = shape_of(T, heads, dims, GENERATE(false, true));
  INFO(describe(pr, pth, s) << " gate_fn=" << int(gate_fn));
  if (pr == precision::f64)
    kda_with_equal_channels_is_gated<double>(pth, s, gate_fn);
  else
    kda_with_equal_channels_is_gated<float>(pth, s, gate_fn);
}

TEST_CASE("delta identity: the references' naive chunk form equals their recurrence",
          "[delta][identity][reference]") {
  if (kSanitized) return;  // reference code only: see kSanitized
  using A = double;
  const index_t T = GENERATE(1, 65, 130);
  const auto heads = GENERATE(std::make_pair(1, 1), std::make_pair(2, 6));
  const auto dims = GENERATE(std::make_pair(20, 12), std::make_pair(7, 33));
  const index_t chunk = GENERATE(7, 64);
  const bool raw = GENERATE(false, true);  // in-kernel q/k norm, beta sigmoid, softplus gate
  const shape s = shape_of(T, heads, dims, GENERATE(false, true));
  INFO(describe(precision::f64, path::reference, s) << " chunk=" << chunk << " raw=" << raw);
  const inputs<double> in(s, 3000 + std::uint64_t(s.T * 7 + s.HV), raw);
  delta_params p = params_of(path::reference, s.v_first);
  p.chunk_size = chunk;
  p.qk_l2norm = p.beta_sigmoid = raw;
  p.gate_fn = raw ? delta_gate_fn::softplus : delta_gate_fn::none;
  delta_params pc = p;  // the references' naive chunk form
  pc.algo = algorithm::chunk;
  const auto q = in.q.cv(), k = in.k.cv(), v = in.v.cv();
  const auto beta = in.beta.cv();
  // kda with gates that differ per key channel
  owned_tensor<A, 4> gc({s.B, s.T, s.HV, s.K});
  test::copy(in.g_chan.cv(), gc.v());
  for (index_t b = 0; b < s.B; ++b)
    for (index_t t = 0; t < s.T; ++t)
      for (index_t j = 0; j < s.HV; ++j)
        for (index_t c = 0; c < s.K; ++c) gc.view(b, t, j, c) *= 0.5 + double(c % 3) * 0.5;
  const auto gp_s = raw ? in.gate_params(false) : delta_gate_params<A>{};
  const auto gp_c = raw ? in.gate_params(true) : delta_gate_params<A>{};
  constexpr double tol = identity_tol<double>();
  const auto both = [&](const char* what, auto recurrent, auto chunked) {
    INFO(what);
    const auto a = run_with_state(in, recurrent), b = run_with_state(in, chunked);
    check_identity<double>("o", b.o.cv(), a.o.cv(), tol);
    check_identity<double>("ht", b.ht.cv(), a.ht.cv(), tol);
  };
  if (!raw)
    both(
        "delta_rule",
        [&](auto o, const auto& st) { reference::delta_rule(p, q, k, v, beta, o, st); },
        [&](auto o, const auto& st) { reference::delta_rule(pc, q, k, v, beta, o, st); });
  both(
      "gated_delta_rule",
      [&](auto o, const auto& st) {
        reference::gated_delta_rule(p, q, k, v, in.g.cv(), beta, o, st, gp_s);
      },
      [&](auto o, const auto& st) {
        reference::gated_delta_rule(pc, q, k, v, in.g.cv(), beta, o, st, gp_s);
      });
  both(
      "kda",
      [&](auto o, const auto& st) { reference::kda(p, q, k, v, gc.cv(), beta, o, st, gp_c); },
      [&](auto o, const auto& st) { reference::kda(pc, q, k, v, gc.cv(), beta, o, st, gp_c); });
}
