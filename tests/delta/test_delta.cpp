// SPDX-License-Identifier: Apache-2.0
// Delta-rule family (delta_rule, gated_delta_rule, kda): golden replay of fla's float64 naive
// references (plain and with the in-kernel transforms: q/k L2 norm, beta sigmoid, softplus gate),
// the fast recurrent kernel against the double reference on awkward shapes and layouts (GVA,
// V-first states, padded and permuted views), metamorphic checks (chaining, in-place decode,
// varlen == separate runs, thread count), 16-bit storage, and every input error.
#include <algorithm>
#include <attnkit/delta.hpp>
#include <attnkit/io/npy.hpp>
#include <cmath>
#include <cstring>
#include <string>
#include <support/golden.hpp>
#include <support/test_util.hpp>

using namespace attnkit;
using namespace attnkit::test;
using Catch::Matchers::Contains;

namespace {

enum class variant { delta, gated, kda };

const char* name_of(variant v) {
  return v == variant::delta ? "delta_rule" : v == variant::gated ? "gated_delta_rule" : "kda";
}

using arr4 = std::array<std::size_t, 4>;
constexpr arr4 kSeqFirst{0, 1, 2, 3}, kHeadFirst{0, 2, 1, 3};

/// Inputs of one call; E is the storage type of q, k, v, o (gates, beta and states in A).
template <class E>
struct problem {
  using A = accum_t<E>;
  variant var = variant::delta;
  index_t B = 1, T = 1, H = 1, HV = 1, K = 8, V = 8, N = 1;
  bool v_first = false;
  owned_tensor<E, 4> q, k, v;
  owned_tensor<A, 3> beta, gs;  // [B,T,HV]
  owned_tensor<A, 4> gc;        // [B,T,HV,K]
  owned_tensor<A, 4> h0;
  std::vector<A> a_log, dt_bias;
  delta_gate_params<A> gp;

  problem() = default;
  problem(variant vr, index_t b, index_t t, index_t h, index_t hv, index_t kk, index_t vv,
          std::uint64_t seed, index_t pad = 0, bool head_first = false, bool raw = false)
      : var(vr), B(b), T(t), H(h), HV(hv), K(kk), V(vv), N(b) {
    const arr4 order = head_first ? kHeadFirst : kSeqFirst;
    q = owned_tensor<E, 4>({B, T, H, K}, pad, order);
    k = owned_tensor<E, 4>({B, T, H, K}, pad, order);
    v = owned_tensor<E, 4>({B, T, HV, V}, pad, order);
    beta = owned_tensor<A, 3>({B, T, HV}, pad);
    gs = owned_tensor<A, 3>({B, T, HV}, pad);
    gc = owned_tensor<A, 4>({B, T, HV, K}, pad, order);
    std::mt19937_64 rng(seed);
    test::fill_normal(q.v(), rng);
    test::fill_normal(k.v(), rng);
    test::fill_normal(v.v(), rng);
    if (raw) {  // raw inputs for the in-kernel transforms
      test::fill_normal(beta.v(), rng);
      test::fill_normal(gs.v(), rng);
      test::fill_normal(gc.v(), rng);
    } else {  // unit-norm q, k; beta in (0,1); gates logsigmoid(N(0,1))
      test::normalise_rows(q.v());
      test::normalise_rows(k.v());
      test::fill_uniform(beta.v(), rng, 0.05, 0.95);
      std::normal_distribution<double> nd;
      auto ls = [&] { return A(-std::log1p(std::exp(-nd(rng)))); };
      test::for_each_index<3>(gs.view.extents(),
                              [&](const auto& i) { test::at(gs.view, i) = ls(); });
      test::for_each_index<4>(gc.view.extents(),
                              [&](const auto& i) { test::at(gc.view, i) = ls(); });
    }
    std::uniform_real_distribution<double> ud(0.0, 2.0);
    for (index_t j = 0; j < HV; ++j) a_log.push_back(A(ud(rng) - 1.0));
    for (index_t j = 0; j < HV * K; ++j) dt_bias.push_back(A(ud(rng) - 1.5));
  }
  /// The same problem on tokens [t0, t1) of every batch row (views into this one's buffers).
  problem tokens(index_t t0, index_t t1) const {
    problem sub = *this;
    sub.T = t1 - t0;
    sub.q.view = slice(q.view, 1, t0, t1);
    sub.k.view = slice(k.view, 1, t0, t1);
    sub.v.view = slice(v.view, 1, t0, t1);
    sub.beta.view = slice(beta.view, 1, t0, t1);
    sub.gs.view = slice(gs.view, 1, t0, t1);
    sub.gc.view = slice(gc.view, 1, t0, t1);
    return sub;
  }
  /// In-kernel gate parameters: A_log [HV], dt_bias [HV] (gated) or [HV*K] (kda).
  void use_gate_params(bool with_a_log = true) {
    gp = {};
    if (with_a_log) gp.A_log = cview<A, 1>(a_log.data(), {HV});
    gp.dt_bias = cview<A, 1>(dt_bias.data(), {var == variant::kda ? HV * K : HV});
  }
  void make_h0(std::uint64_t seed, index_t pad = 0) {
    h0 = make_state(pad);
    std::mt19937_64 rng(seed);
    test::fill_normal(h0.v(), rng, 0.5);
  }
  owned_tensor<A, 4> make_state(index_t pad = 0) const {
    return v_first ? owned_tensor<A, 4>({N, HV, V, K}, pad)
                   : owned_tensor<A, 4>({N, HV, K, V}, pad);
  }
  owned_tensor<E, 4> make_o(index_t pad = 0, bool head_first = false) const {
    return owned_tensor<E, 4>({B, T, HV, V}, pad, head_first ? kHeadFirst : kSeqFirst);
  }
};

/// Runs the fast kernel (Ref = false) or the reference on a problem.
template <bool Ref, class E, class O>
void run(const problem<E>& pr, const delta_params& p, const tensor_view<O, 4>& o,
         const recurrent_state<accum_t<E>>& s) {
  const auto q = pr.q.cv(), k = pr.k.cv(), v = pr.v.cv();
  const auto beta = pr.beta.cv();
  switch (pr.var) {
    case variant::delta:
      ATTNKIT_CALL(Ref, delta_rule, p, q, k, v, beta, o, s);
      break;
    case variant::gated:
      ATTNKIT_CALL(Ref, gated_delta_rule, p, q, k, v, pr.gs.cv(), beta, o, s, pr.gp);
      break;
    case variant::kda:
      ATTNKIT_CALL(Ref, kda, p, q, k, v, pr.gc.cv(), beta, o, s, pr.gp);
      break;
  }
}

/// Fast kernel vs reference on the same inputs: o and ht.
template <class T>
void check_against_reference(problem<T>& pr, const delta_params& p, bool with_h0, index_t pad = 0,
                             bool head_first = false) {
  using A = accum_t<T>;
  if (with_h0) pr.make_h0(99, pad);
  auto o_ref = pr.make_o();
  auto ht_ref = pr.make_state();
  recurrent_state<A> s_ref;
  if (with_h0) s_ref.h0 = pr.h0.cv();
  s_ref.ht = ht_ref.v();
  run<true>(pr, p, o_ref.v(), s_ref);
  // every algorithm of the fast kernel against the reference (automatic: by shape)
  for (const algorithm algo : {algorithm::recurrent, algorithm::chunk, algorithm::automatic}) {
    delta_params pa = p;
    pa.algo = algo;
    auto o = pr.make_o(pad, head_first);
    auto ht = pr.make_state(pad);
    recurrent_state<A> s;
    if (with_h0) s.h0 = pr.h0.cv();
    s.ht = ht.v();
    run<false>(pr, pa, o.v(), s);
    INFO(name_of(pr.var) << " " << algorithm_name(algo) << " B=" << pr.B << " T=" << pr.T
                         << " H=" << pr.H << " HV=" << pr.HV << " K=" << pr.K << " V=" << pr.V
                         << " v_first=" << pr.v_first << " pad=" << pad
                         << " head_first=" << head_first);
    ATTNKIT_CHECK_CLOSE(o.cv(), o_ref.cv(), test::tolerance<T>());
    ATTNKIT_CHECK_CLOSE(ht.cv(), ht_ref.cv(), test::tolerance<T>());
    CHECK(test::padding_untouched(o));
    CHECK(test::padding_untouched(ht));
  }
}

/// The chunk algorithm (chunk size `chunk`) against the recurrent one on the same inputs, both from
/// pr.h0: o and ht within 5x the tolerance. Returns the chunk run's o.
template <class T>
owned_tensor<T, 4> check_chunk_against_recurrent(const problem<T>& pr, index_t chunk) {
  using A = accum_t<T>;
  delta_params pc, prec;
  pc.algo = algorithm::chunk;
  pc.chunk_size = chunk;
  prec.algo = algorithm::recurrent;
  auto o = pr.make_o(), o_ref = pr.make_o();
  auto ht = pr.make_state(), ht_ref = pr.make_state();
  recurrent_state<A> s{pr.h0.cv(), ht.v(), {}}, s_ref{pr.h0.cv(), ht_ref.v(), {}};
  run<false>(pr, pc, o.v(), s);
  run<false>(pr, prec, o_ref.v(), s_ref);
  ATTNKIT_CHECK_CLOSE(o.cv(), o_ref.cv(), 5 * test::tolerance<T>());
  ATTNKIT_CHECK_CLOSE(ht.cv(), ht_ref.cv(), 5 * test::tolerance<T>());
  return o;
}

// ------------------------------------------------------------------------------------------------
// Golden data (fla naive references in float64, tests/data/delta)

/// Replays one golden case in precision T with the fast kernel or the reference. Gate cases
/// ("_gate") feed the raw inputs through the in-kernel transforms.
template <class T>
void replay(const std::string& c, variant var, bool use_ref, bool v_first, double tol, bool rel_rms,
            algorithm algo = algorithm::recurrent, index_t chunk = 64) {
  using A = accum_t<T>;
  const test::golden_case gcase{"delta", c};
  const bool gate_case = c.find("_gate") != std::string::npos;
  problem<T> pr;
  pr.var = var;
  pr.q = gcase.load<T, 4>(gate_case ? "q_raw" : "q");
  pr.k = gcase.load<T, 4>(gate_case ? "k_raw" : "k");
  pr.v = gcase.load<T, 4>("v");
  pr.beta = gcase.load<A, 3>(gate_case ? "beta_raw" : "beta");
  if (var == variant::gated) pr.gs = gcase.load<A, 3>(gate_case ? "g_raw" : "g");
  if (var == variant::kda) pr.gc = gcase.load<A, 4>(gate_case ? "g_raw" : "g");
  delta_params p;
  p.state_v_first = v_first;
  p.algo = algo;
  p.chunk_size = chunk;
  if (gate_case) {
    p.qk_l2norm = true;
    p.beta_sigmoid = true;
    p.gate_fn = delta_gate_fn::softplus;
    pr.a_log = gcase.load_vector<A>("A_log");
    pr.dt_bias = gcase.load_vector<A>("dt_bias");
    pr.gp.A_log = cview<A, 1>(pr.a_log.data(), {index_t(pr.a_log.size())});
    pr.gp.dt_bias = cview<A, 1>(pr.dt_bias.data(), {index_t(pr.dt_bias.size())});
  }
  auto h0 = gcase.load<A, 4>("h0");
  const auto ht_ref = gcase.load<double, 4>("ht");
  const auto o_ref = gcase.load<double, 4>("o");
  test::dims_from_tensors(pr, h0);
  pr.v_first = v_first;
  recurrent_state<A> s;
  auto h0_in = pr.make_state();
  test::copy(v_first ? cview<A, 4>(transpose(h0.cv(), 2, 3)) : h0.cv(), h0_in.v());
  s.h0 = h0_in.cv();
  auto ht = pr.make_state();
  s.ht = ht.v();
  std::vector<std::int32_t> cu;
  if (c.find("varlen") != std::string::npos) {
    cu = gcase.load_offsets("cu_seqlens");
    s.cu_seqlens = cview<std::int32_t, 1>(cu.data(), {index_t(cu.size())});
  }
  auto o = pr.make_o();
  if (use_ref)
    run<true>(pr, p, o.v(), s);
  else
    run<false>(pr, p, o.v(), s);
  const cview<A, 4> ht_k = v_first ? cview<A, 4>(transpose(ht.cv(), 2, 3)) : ht.cv();
  INFO("case " << c
               << (use_ref                    ? " reference"
                   : algo == algorithm::chunk ? " chunk"
                                              : " recurrent")
               << " chunk_size=" << chunk << " v_first=" << v_first);
  auto check = [&](const auto& out, const auto& ref, const char* what) {
    test::check_golden(what, out, ref, tol, rel_rms);
  };
  check(o.cv(), o_ref.cv(), "o");
  check(ht_k, ht_ref.cv(), "ht");
}

struct golden_case {
  const char* dir;
  variant var;
};
const golden_case kGolden[] = {
    {"delta_rule/T37_h0", variant::delta},
    {"delta_rule/varlen", variant::delta},
    {"gated_delta_rule/T37_h0", variant::gated},
    {"gated_delta_rule/T130_gate", variant::gated},
    {"kda/T37_h0", variant::kda},
    {"kda/T130_gate", variant::kda},
};

}  // namespace

TEST_CASE("delta: golden replay in float64 (<= 1e-10 relative)", "[delta][golden]") {
  for (const auto& gc : kGolden)
    for (bool use_ref : {true, false})
      for (bool v_first : {false, true})
        replay<double>(gc.dir, gc.var, use_ref, v_first, 1e-10, false);
}

TEST_CASE("delta: golden replay in float32 (relative RMS <= 1e-5)", "[delta][golden]") {
  for (const auto& gc : kGolden) replay<float>(gc.dir, gc.var, false, false, 1e-5, true);
}

TEST_CASE("delta: golden replay with the chunk algorithm", "[delta][golden]") {
  for (const auto& gc : kGolden) {
    for (index_t chunk : {64, 16, 7})
      for (bool v_first : {false, true})
        replay<double>(gc.dir, gc.var, false, v_first, 1e-10, false, algorithm::chunk, chunk);
    replay<float>(gc.dir, gc.var, false, false, 1e-5, true, algorithm::chunk, 64);
  }
}

TEMPLATE_TEST_CASE("delta: chunk equals recurrent", "[delta]", double, float) {
  using A = accum_t<TestType>;
  for (variant var : {variant::delta, variant::gated, variant::kda})
    for (index_t T : {1, 63, 64, 65, 130})
      for (index_t chunk : {1, 16, 17, 64, 100}) {
        problem<TestType> pr(var, 2, T, 2, 4, 20, 37, 71 + std::uint64_t(T));
        if (T == 130)  // strong gates: a few full resets (-1000); kda also single channels
          for (index_t t = 5; t < T; t += 37) {
            pr.gs.view(1, t, 2) = A(-1000);
            for (index_t d = 0; d < 20; d += (t % 2 ? 1 : 3)) pr.gc.view(1, t, 2, d) = A(-1000);
            pr.gc.view(0, t + 1, 1, 7) = A(-1000);
          }
        pr.make_h0(4);
        INFO(name_of(var) << " T=" << T << " chunk=" << chunk);
        const auto o = check_chunk_against_recurrent(pr, chunk);
        CHECK(test::padding_untouched(o));
      }
}

TEMPLATE_TEST_CASE("kda: rows just inside and just outside the factorised intra-chunk products",
                   "[delta]", double, float) {
  // one channel per head (3: in a vector, 18: in the tail of the bound check) decays by 0.9, 1.02
  // and 0.5 times the bound of the factorised products over tokens [0, 16), [16, 32), [32, 48),
  // the others weakly: chunks of 16 cross the bound at their last row; chunks of 32 and 48
  // mid-sub-chunk (row 17 or 18)
  using A = accum_t<TestType>;
  const double bound = attnkit::detail::kMaxDecaySpan<A>;
  problem<TestType> pr(variant::kda, 1, 48, 1, 2, 20, 9, 5);
  for (index_t t = 0; t < 48; ++t)
    for (index_t j = 0; j < 2; ++j)
      for (index_t d = 0; d < 20; ++d) {
        const double span = t < 16 ? 0.9 : t < 32 ? 1.02 : 0.5;
        pr.gc.view(0, t, j, d) = A(d == (j == 0 ? 3 : 18) ? -span * bound / 16 : -0.01);
      }
  pr.make_h0(4);
  for (index_t chunk : {16, 32, 48}) {
    INFO("chunk " << chunk);
    check_chunk_against_recurrent(pr, chunk);
  }
}

TEMPLATE_TEST_CASE("delta: fast kernels match the reference on awkward shapes", "[delta]", double,
                   float) {
  for (variant var : {variant::delta, variant::gated, variant::kda})
    for (index_t T : {1, 31, 33, 63, 65, 130})
      for (auto [H, HV] : {std::pair<index_t, index_t>{1, 1}, {2, 4}, {3, 3}}) {
        problem<TestType> pr(var, 2, T, H, HV, 20, 37, 7 + std::uint64_t(T));
        check_against_reference(pr, delta_params{}, T % 2 == 1);
      }
}

TEMPLATE_TEST_CASE("delta: padded and permuted views, V-first states, head dims 1 and 128",
                   "[delta]", double, float) {
  for (variant var : {variant::delta, variant::gated, variant::kda}) {
    problem<TestType> pr(var, 2, 65, 2, 4, 24, 40, 3, 3, true);
    check_against_reference(pr, delta_params{}, true, 3, true);
    pr.v_first = true;
    delta_params p;
    p.state_v_first = true;
    check_against_reference(pr, p, true);
    problem<TestType> one(var, 1, 9, 1, 2, 1, 1, 5);
    check_against_reference(one, delta_params{}, true);
    problem<TestType> big(var, 1, 17, 1, 1, 128, 128, 6);
    check_against_reference(big, delta_params{}, true);
  }
}

TEMPLATE_TEST_CASE("delta: in-kernel q/k L2 norm, beta sigmoid and gates match the reference",
                   "[delta]", double, float) {
  for (variant var : {variant::delta, variant::gated, variant::kda}) {
    problem<TestType> pr(var, 2, 40, 2, 4, 20, 24, 11, 0, false, true);
    // raw projections, but gates <= 0: without gate_fn they are taken as log decays
    test::for_each_index<3>(pr.gs.view.extents(), [&](const auto& i) {
      test::at(pr.gs.view, i) = -std::abs(test::at(pr.gs.view, i));
    });
    test::for_each_index<4>(pr.gc.view.extents(), [&](const auto& i) {
      test::at(pr.gc.view, i) = -std::abs(test::at(pr.gc.view, i));
    });
    delta_params p;
    p.qk_l2norm = true;
    p.beta_sigmoid = true;
    check_against_reference(pr, p, true);
    p.allow_neg_eigval = true;
    check_against_reference(pr, p, true);
    if (var == variant::delta) continue;
    p.gate_fn = delta_gate_fn::softplus;
    pr.use_gate_params();
    check_against_reference(pr, p, true);
    p.gate_fn = delta_gate_fn::lower_bound;
    p.lower_bound = -3;
    check_against_reference(pr, p, true);
    pr.use_gate_params(false);  // lower bound without A_log
    check_against_reference(pr, p, true);
  }
}

TEST_CASE("delta: the in-kernel gate and beta formulas", "[delta]") {
  delta_params p;
  p.gate_fn = delta_gate_fn::softplus;
  // -exp(A_log) * softplus(a + dt): softplus(0.5) = log(1 + e^0.5)
  CHECK(detail::delta_log_decay(p, 0.25, true, std::log(2.0), 0.25) ==
        Approx(-2.0 * std::log1p(std::exp(0.5))).epsilon(1e-15));
  CHECK(detail::delta_log_decay(p, 30.0, true, 0.0, 0.0) == -30.0);  // linear above 20
  p.gate_fn = delta_gate_fn::lower_bound;
  p.lower_bound = -5;
  CHECK(detail::delta_log_decay(p, 1.0, true, std::log(3.0), -0.5) ==
        Approx(-5.0 / (1.0 + std::exp(-1.5))).epsilon(1e-15));
  CHECK(detail::delta_log_decay(p, 1.0, false, 123.0, -0.5) ==
        Approx(-5.0 / (1.0 + std::exp(-0.5))).epsilon(1e-15));
  p.beta_sigmoid = true;
  CHECK(detail::delta_beta(p, 0.0) == 0.5);
  p.allow_neg_eigval = true;
  CHECK(detail::delta_beta(p, 0.0) == 1.0);
}

TEMPLATE_TEST_CASE("delta: running 0..t then t..T from the first final state equals one run",
                   "[delta]", double, float) {
  using A = accum_t<TestType>;
  for (variant var : {variant::delta, variant::gated, variant::kda}) {
    const index_t T = 70, split = 33;
    problem<TestType> pr(var, 2, T, 2, 4, 16, 24, 21);
    pr.make_h0(5);
    auto o_full = pr.make_o();
    auto ht_full = pr.make_state();
    recurrent_state<A> s{pr.h0.cv(), ht_full.v(), {}};
    run<false>(pr, delta_params{}, o_full.v(), s);
    // two calls on slices of the token axis, the second from the first's final state
    auto mid = pr.make_state();
    auto ht2 = pr.make_state();
    auto o2 = pr.make_o();
    for (int part = 0; part < 2; ++part) {
      const index_t t0 = part == 0 ? 0 : split, t1 = part == 0 ? split : T;
      problem<TestType> sub = pr.tokens(t0, t1);
      recurrent_state<A> sp{part == 0 ? pr.h0.cv() : mid.cv(), part == 0 ? mid.v() : ht2.v(), {}};
      run<false>(sub, delta_params{}, slice(o2.view, 1, t0, t1), sp);
    }
    INFO(name_of(var));
    ATTNKIT_CHECK_CLOSE(o2.cv(), o_full.cv(), test::tolerance<TestType>());
    ATTNKIT_CHECK_CLOSE(ht2.cv(), ht_full.cv(), test::tolerance<TestType>());
  }
}

TEMPLATE_TEST_CASE("delta: decode steps update a caller-owned state in place", "[delta]", double,
                   float) {
  using A = accum_t<TestType>;
  // V = 48 (a multiple of every batch width) takes the single-token path on the caller's rows;
  // V = 20 the strip buffer. Both in place (ht == h0) and into a separate ht.
  for (variant var : {variant::delta, variant::gated, variant::kda})
    for (index_t V : {20, 48})
      for (bool in_place : {true, false}) {
        const index_t T = 6;
        problem<TestType> pr(var, 2, T, 1, 2, 12, V, 31);
        pr.make_h0(8);
        auto o_full = pr.make_o();
        auto ht_full = pr.make_state();
        recurrent_state<A> s{pr.h0.cv(), ht_full.v(), {}};
        run<true>(pr, delta_params{}, o_full.v(), s);
        auto state = pr.make_state(), next = pr.make_state();
        test::copy(pr.h0.cv(), state.v());
        auto o = pr.make_o();
        for (index_t t = 0; t < T; ++t) {
          problem<TestType> step = pr.tokens(t, t + 1);
          recurrent_state<A> sp{state.cv(), in_place ? state.v() : next.v(), {}};
          run<false>(step, delta_params{}, slice(o.view, 1, t, t + 1), sp);
          if (!in_place) test::copy(next.cv(), state.v());
        }
        INFO(name_of(var) << " V=" << V << " in_place=" << in_place);
        ATTNKIT_CHECK_CLOSE(o.cv(), o_full.cv(), test::tolerance<TestType>());
        ATTNKIT_CHECK_CLOSE(state.cv(), ht_full.cv(), test::tolerance<TestType>());
      }
}

TEMPLATE_TEST_CASE("delta: varlen equals separate runs (with an empty sequence)", "[delta]", double,
                   float) {
  using A = accum_t<TestType>;
  const std::vector<std::int32_t> cu{0, 5, 5, 40, 71};
  const index_t N = index_t(cu.size()) - 1, T = cu.back();
  for (variant var : {variant::delta, variant::gated, variant::kda}) {
    problem<TestType> pr(var, 1, T, 2, 2, 16, 12, 41);
    pr.N = N;
    pr.make_h0(3);
    auto o = pr.make_o();
    auto ht = pr.make_state();
    recurrent_state<A> s{pr.h0.cv(), ht.v(), {}};
    s.cu_seqlens = cview<std::int32_t, 1>(cu.data(), {index_t(cu.size())});
    run<false>(pr, delta_params{}, o.v(), s);
    for (index_t n = 0; n < N; ++n) {
      const index_t t0 = cu[std::size_t(n)], t1 = cu[std::size_t(n) + 1];
      problem<TestType> sub = pr.tokens(t0, t1);
      sub.N = 1;
      auto o1 = sub.make_o();
      auto ht1 = sub.make_state();
      recurrent_state<A> s1{slice(pr.h0.cv(), 0, n, n + 1), ht1.v(), {}};
      run<true>(sub, delta_params{}, o1.v(), s1);
      INFO(name_of(var) << " sequence " << n);
      if (t1 > t0)
        ATTNKIT_CHECK_CLOSE(slice(o.cv(), 1, t0, t1), o1.cv(), test::tolerance<TestType>());
      ATTNKIT_CHECK_CLOSE(slice(ht.cv(), 0, n, n + 1), ht1.cv(), test::tolerance<TestType>());
    }
  }
}

TEST_CASE("delta: bf16 and fp16 storage (float compute and state) within tolerance", "[delta]") {
  for (variant var : {variant::delta, variant::gated, variant::kda}) {
    problem<bf16> pb(var, 1, 33, 2, 2, 16, 24, 51);
    check_against_reference(pb, delta_params{}, true);
    problem<fp16> ph(var, 1, 33, 2, 2, 16, 24, 52);
    check_against_reference(ph, delta_params{}, true);
  }
}

TEST_CASE("delta: results do not depend on the thread count", "[delta]") {
  problem<float> pr(variant::kda, 2, 50, 2, 4, 24, 20, 61);
  pr.make_h0(2);
  std::vector<std::vector<float>> outs;
  for (int threads : {1, 2, 3}) {
    thread_pool pool(threads);
    delta_params p;
    p.exec = &pool;
    auto o = pr.make_o();
    auto ht = pr.make_state();
    recurrent_state<float> s{pr.h0.cv(), ht.v(), {}};
    run<false>(pr, p, o.v(), s);
    outs.push_back(o.buf);
    outs.back().insert(outs.back().end(), ht.buf.begin(), ht.buf.end());
  }
  CHECK(std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * sizeof(float)) == 0);
  CHECK(std::memcmp(outs[0].data(), outs[2].data(), outs[0].size() * sizeof(float)) == 0);
}

TEST_CASE("delta: a positive log decay anywhere in a large gate is named, the first in index order",
          "[delta][errors]") {
  // 1*300*2 rows of 64 decays: scanned in blocks of 512 rows, so the two bad values below lie in
  // different blocks (and on different threads of a pool of two)
  const index_t B = 1, T = 300, H = 2, K = 64, V = 8;
  std::vector<float> qk(std::size_t(B * T * H * K), 0.1f), vb(std::size_t(B * T * H * V), 0.1f);
  std::vector<float> bb(std::size_t(B * T * H), 0.5f), out(vb.size());
  std::vector<float> g(std::size_t(B * T * H * K), -0.5f);
  auto q = make_view<const float>(qk.data(), B, T, H, K);
  auto v = make_view<const float>(vb.data(), B, T, H, V);
  auto beta = make_view<const float>(bb.data(), B, T, H);
  auto gc = make_view<const float>(g.data(), B, T, H, K);
  auto o = make_view(out.data(), B, T, H, V);
  for (int threads : {1, 2}) {
    attnkit::thread_pool pool(threads);
    delta_params p;
    p.exec = &pool;
    INFO("threads " << threads);
    std::fill(g.begin(), g.end(), -0.5f);
    g[std::size_t(((299 * H) + 1) * K + 63)] = 2.f;  // g[0, 299, 1, 63]: the second block
    REQUIRE_THROWS_WITH(kda(p, q, q, v, gc, beta, o),
                        Contains("holds a positive log decay 2 at [0,299,1,63]"));
    g[std::size_t(((150 * H) + 0) * K + 1)] = 0.5f;  // g[0, 150, 0, 1]: the first block
    REQUIRE_THROWS_WITH(kda(p, q, q, v, gc, beta, o),
                        Contains("holds a positive log decay 0.5 at [0,150,0,1]"));
    std::fill(g.begin(), g.end(), -0.5f);
    g[g.size() - 1] = std::nanf("");  // NaN passes (it propagates like any NaN input)
    REQUIRE_NOTHROW(kda(p, q, q, v, gc, beta, o));
  }
}

TEST_CASE("delta: bad inputs throw attnkit::error naming tensor and dimension and values",
          "[delta][errors]") {
  const index_t B = 2, T = 5, H = 2, HV = 4, K = 8, V = 6;
  std::vector<float> buf(std::size_t(B * T * HV * K * 4), 0.5f), out(buf.size());
  std::vector<float> st(std::size_t(4 * HV * K * V * 2), 0.0f), par(64, 0.0f);
  std::vector<float> gbuf(buf.size(), -0.5f);  // log decays (<= 0)
  auto q = make_view<const float>(buf.data(), B, T, H, K);
  auto k = q;
  auto v = make_view<const float>(buf.data(), B, T, HV, V);
  auto beta = make_view<const float>(buf.data(), B, T, HV);
  auto gs = make_view<const float>(gbuf.data(), B, T, HV);
  auto gc = make_view<const float>(gbuf.data(), B, T, HV, K);
  auto o = make_view(out.data(), B, T, HV, V);
  delta_params p;
  recurrent_state<float> s;

  SECTION("outputs aliasing inputs, options outside the compute type") {
    s.ht = make_view(buf.data(), B, HV, K, V);  // ht over q's buffer
    REQUIRE_THROWS_WITH(delta_rule(p, q, k, v, beta, o, s),
                        Contains("output tensor 'ht' overlaps tensor 'q'"));
    s.ht = {};
    p.scale = 1e300;
    REQUIRE_THROWS_WITH(delta_rule(p, q, k, v, beta, o), Contains("option 'scale' = 1e+300"));
  }
  SECTION("a positive log decay without an in-kernel gate") {
    gbuf[std::size_t(1 * T * HV + 2 * HV + 1)] = 0.25f;  // g[1, 2, 1] (gc: [0, 0, 3, 5])
    REQUIRE_THROWS_WITH(gated_delta_rule(p, q, k, v, gs, beta, o),
                        Contains("tensor 'g' [B,T,HV] holds a positive log decay 0.25 at [1,2,1]"));
    REQUIRE_THROWS_WITH(kda(p, q, k, v, gc, beta, o), Contains("positive log decay"));
    REQUIRE_THROWS_WITH(reference::gated_delta_rule(p, q, k, v, gs, beta, o),
                        Contains("positive log decay"));
    p.gate_fn = delta_gate_fn::lower_bound;  // a raw gate goes through the transform: fine
    REQUIRE_NOTHROW(gated_delta_rule(p, q, k, v, gs, beta, o));
  }
  SECTION("value heads not a multiple of the q/k heads") {
    auto v3 = make_view<const float>(buf.data(), B, T, 3, V);
    auto o3 = make_view(out.data(), B, T, 3, V);
    auto b3 = make_view<const float>(buf.data(), B, T, 3);
    REQUIRE_THROWS_AS(delta_rule(p, q, k, v3, b3, o3), attnkit::error);
    REQUIRE_THROWS_WITH(delta_rule(p, q, k, v3, b3, o3),
                        Contains("delta_rule: tensor 'v' [B,T,HV,V] dim 2 (HV): must be a "
                                 "multiple of H = 2"));
  }
  SECTION("beta, gates and o shapes") {
    auto b2 = make_view<const float>(buf.data(), B, T, HV + 1);
    REQUIRE_THROWS_WITH(delta_rule(p, q, k, v, b2, o),
                        Contains("tensor 'beta' [B,T,HV] dim 2 (HV): expected 4 (HV of v), got 5"));
    auto g2 = make_view<const float>(buf.data(), B, T - 1, HV);
    REQUIRE_THROWS_WITH(
        gated_delta_rule(p, q, k, v, g2, beta, o),
        Contains("gated_delta_rule: tensor 'g' [B,T,HV] dim 1 (T): expected 5 (T of "
                 "q), got 4"));
    auto g3 = make_view<const float>(buf.data(), B, T, HV, K + 1);
    REQUIRE_THROWS_WITH(
        kda(p, q, k, v, g3, beta, o),
        Contains("kda: tensor 'g' [B,T,HV,K] dim 3 (K): expected 8 (K of q), got 9"));
    REQUIRE_THROWS_WITH(reference::kda(p, q, k, v, g3, beta, o),
                        Contains("tensor 'g' [B,T,HV,K] dim 3 (K): expected 8 (K of q), got 9"));
    auto o2 = make_view(out.data(), B, T, HV, V + 1);
    REQUIRE_THROWS_WITH(delta_rule(p, q, k, v, beta, o2),
                        Contains("tensor 'o' [B,T,HV,V] dim 3 (V): expected 6 (V of v), got 7"));
    auto k2 = make_view<const float>(buf.data(), B, T, H, K - 1);
    REQUIRE_THROWS_WITH(delta_rule(p, q, k2, v, beta, o),
                        Contains("tensor 'k' [B,T,H,K] dim 3 (K): expected 8 (K of q), got 7"));
  }
  SECTION("states") {
    s.h0 = make_view<const float>(st.data(), B, HV, V, K);  // V-first data without the option
    REQUIRE_THROWS_WITH(delta_rule(p, q, k, v, beta, o, s),
                        Contains("tensor 'h0' [N,HV,K,V] dim 2 (K): expected 8 (K of q), got 6"));
  }
  SECTION("options") {
    p.allow_neg_eigval = true;
    REQUIRE_THROWS_WITH(delta_rule(p, q, k, v, beta, o),
                        Contains("option 'allow_neg_eigval' needs 'beta_sigmoid'"));
    p = {};
    p.algo = algorithm::chunk;
    REQUIRE_NOTHROW(kda(p, q, k, v, gc, beta, o));
    REQUIRE_NOTHROW(delta_rule(p, q, k, v, beta, o));
    p = {};
    p.gate_fn = delta_gate_fn::softplus;
    REQUIRE_THROWS_WITH(delta_rule(p, q, k, v, beta, o),
                        Contains("option 'gate_fn' needs a gate (delta_rule has none)"));
    REQUIRE_THROWS_WITH(gated_delta_rule(p, q, k, v, gs, beta, o),
                        Contains("option 'gate_fn' softplus needs tensor 'A_log' [HV]"));
    delta_gate_params<float> gp;
    gp.A_log = make_view<const float>(par.data(), HV);
    gp.dt_bias = make_view<const float>(par.data(), HV);
    REQUIRE_THROWS_WITH(
        kda(p, q, k, v, gc, beta, o, {}, gp),
        Contains(
            "kda: tensor 'dt_bias' [HV*K] dim 0 (HV*K): expected 32 (HV of v x K of q), got 4"));
    p.gate_fn = delta_gate_fn::lower_bound;
    p.lower_bound = 0.5;
    REQUIRE_THROWS_WITH(gated_delta_rule(p, q, k, v, gs, beta, o, {}, gp),
                        Contains("option 'lower_bound' must be finite and < 0, got 0.5"));
    p = {};
    REQUIRE_THROWS_WITH(gated_delta_rule(p, q, k, v, gs, beta, o, {}, gp),
                        Contains("tensors 'A_log'/'dt_bias' are only used with an in-kernel gate"));
  }
  SECTION("varlen needs B = 1 and a state row per sequence") {
    const std::vector<std::int32_t> cu{0, 2, 5};
    s.cu_seqlens = cview<std::int32_t, 1>(cu.data(), {3});
    REQUIRE_THROWS_WITH(delta_rule(p, q, k, v, beta, o, s),
                        Contains("varlen (cu_seqlens) needs B = 1, got 2"));
  }
}

TEST_CASE("delta: algorithm::automatic picks recurrent for short sequences, chunk from 8 tokens",
          "[delta]") {
  detail::delta_shape sh;
  delta_params p;
  sh.seqs = {{0, 0, 1}, {0, 1, 7}};
  CHECK(detail::resolve_algorithm(p, sh) == algorithm::recurrent);
  sh.seqs.push_back({0, 8, detail::kAutoChunkMinTokens});
  CHECK(detail::resolve_algorithm(p, sh) == algorithm::chunk);
  p.algo = algorithm::recurrent;  // an explicit choice is kept
  CHECK(detail::resolve_algorithm(p, sh) == algorithm::recurrent);
  p.algo = algorithm::chunk;
  sh.seqs = {{0, 0, 1}};
  CHECK(detail::resolve_algorithm(p, sh) == algorithm::chunk);
}
