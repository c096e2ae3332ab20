// SPDX-License-Identifier: Apache-2.0
// Linear-attention family (linear_attn, simple_gla, gla): golden replay of fla's float64 naive
// references, fast kernels (chunk and recurrent) against the double reference on awkward shapes and
// layouts, metamorphic checks (chunk == recurrent, chaining, in-place decode, varlen == separate
// runs, thread count), strong gates, 16-bit storage, and every input error.
#include <attnkit/io/npy.hpp>
#include <attnkit/linear.hpp>
#include <cstring>
#include <string>
#include <support/golden.hpp>
#include <support/test_util.hpp>

using namespace attnkit;
using namespace attnkit::test;
using Catch::Matchers::Contains;

namespace {

enum class variant { linear, simple, gamma, gla };

const char* name_of(variant v) {
  static const char* const names[] = {"linear_attn", "simple_gla", "simple_gla(g_gamma)", "gla"};
  return names[int(v)];
}

using arr4 = std::array<std::size_t, 4>;

/// Every state view of one call in one struct; call() splits it into the public
/// recurrent_state and linear_extras.
template <class A>
using state_views = attnkit::detail::linear_states<A>;
template <class A>
recurrent_state<A> rs_of(const state_views<A>& s) {
  return {s.h0, s.ht, s.cu_seqlens};
}
template <class A>
linear_extras<A> lx_of(const state_views<A>& s) {
  return {s.z0, s.zt};
}
/// h0 -> ht, and z0 -> zt when `normalize`.
template <class A>
state_views<A> states(const cview<A, 4>& h0, const tensor_view<A, 4>& ht, bool normalize,
                      const cview<A, 4>& z0, const tensor_view<A, 4>& zt) {
  state_views<A> s{h0, ht, {}, {}, {}};
  if (normalize) {
    s.z0 = z0;
    s.zt = zt;
  }
  return s;
}
constexpr arr4 kSeqFirst{0, 1, 2, 3}, kHeadFirst{0, 2, 1, 3};

/// Inputs of one call: q, k [B,T,H,K], v [B,T,H,V], gates, states; E is the storage type.
template <class E>
struct problem {
  using A = accum_t<E>;
  variant var = variant::linear;
  index_t B = 1, T = 1, H = 1, K = 8, V = 8, N = 1;
  bool v_first = false;
  owned_tensor<E, 4> q, k, v;
  owned_tensor<A, 3> gs;     // [B,T,H]
  owned_tensor<A, 1> gamma;  // [H]
  owned_tensor<A, 4> gc;     // [B,T,H,K]
  owned_tensor<A, 4> h0, z0;
  std::vector<std::int32_t> cu;

  problem() = default;
  problem(variant vr, index_t b, index_t t, index_t h, index_t kk, index_t vv, std::uint64_t seed,
          index_t pad = 0, bool head_first = false, double gate_mult = 1.0, double reset_p = 0.0,
          bool positive_qk = false)
      : var(vr), B(b), T(t), H(h), K(kk), V(vv), N(b) {
    const arr4 order = head_first ? kHeadFirst : kSeqFirst;
    q = owned_tensor<E, 4>({B, T, H, K}, pad, order);
    k = owned_tensor<E, 4>({B, T, H, K}, pad, order);
    v = owned_tensor<E, 4>({B, T, H, V}, pad, order);
    std::mt19937_64 rng(seed);
    if (positive_qk) {  // elu(x) + 1 style features for the normaliser
      test::fill_uniform(q.v(), rng, 0.05, 2.0);
      test::fill_uniform(k.v(), rng, 0.05, 2.0);
    } else {
      test::fill_normal(q.v(), rng);
      test::fill_normal(k.v(), rng);
    }
    test::fill_normal(v.v(), rng);
    // gates: gate_mult * logsigmoid(N(0,1)), and with probability reset_p a full reset (-1000)
    std::normal_distribution<double> nd;
    std::uniform_real_distribution<double> ud;
    auto gate = [&] {
      if (ud(rng) < reset_p) return A(-1000);
      const double x = nd(rng);
      return A(gate_mult * -std::log1p(std::exp(-x)));
    };
    gs = owned_tensor<A, 3>({B, T, H}, pad);
    gc = owned_tensor<A, 4>({B, T, H, K}, pad, order);
    gamma = owned_tensor<A, 1>({H});
    test::for_each_index<3>(gs.view.extents(),
                            [&](const auto& i) { test::at(gs.view, i) = gate(); });
    test::for_each_index<4>(gc.view.extents(),
                            [&](const auto& i) { test::at(gc.view, i) = gate(); });
    for (index_t i = 0; i < H; ++i) gamma.view(i) = A(-std::log1p(std::exp(-nd(rng))) * gate_mult);
  }
  std::array<index_t, 4> state_ext() const {
    return v_first ? std::array<index_t, 4>{N, H, V, K} : std::array<index_t, 4>{N, H, K, V};
  }
  void make_h0(std::uint64_t seed, index_t pad = 0) {
    h0 = owned_tensor<A, 4>(state_ext(), pad);
    z0 = owned_tensor<A, 4>({N, 1, H, K});
    std::mt19937_64 rng(seed);
    test::fill_normal(h0.v(), rng);
    test::fill_uniform(z0.v(), rng, 0.0, 3.0);
  }
  owned_tensor<E, 4> make_o(index_t pad = 0, bool head_first = false) const {
    return owned_tensor<E, 4>({B, T, H, V}, pad, head_first ? kHeadFirst : kSeqFirst);
  }
  owned_tensor<A, 4> make_state(index_t pad = 0) const {
    return owned_tensor<A, 4>(state_ext(), pad);
  }
  owned_tensor<A, 4> make_z() const { return owned_tensor<A, 4>({N, 1, H, K}); }
};

/// Runs one variant (fast kernel or reference) on views.
template <bool Ref, class T, class Q, class O>
void call(const problem<T>& pr, const linear_params& p, tensor_view<Q, 4> q, tensor_view<Q, 4> k,
          tensor_view<Q, 4> v, tensor_view<O, 4> o, const state_views<accum_t<T>>& s) {
  using A = accum_t<T>;
  const recurrent_state<A> rs{s.h0, s.ht, s.cu_seqlens};
  const linear_extras<A> lx{s.z0, s.zt};
  const cview<A, 3> gs = pr.gs.cv();
  const cview<A, 1> gm = pr.gamma.cv();
  const cview<A, 4> gc = pr.gc.cv();
  switch (pr.var) {
    case variant::linear:
      ATTNKIT_CALL(Ref, linear_attn, p, q, k, v, o, rs, lx);
      break;
    case variant::simple:
      ATTNKIT_CALL(Ref, simple_gla, p, q, k, v, gs, o, rs);
      break;
    case variant::gamma:
      ATTNKIT_CALL(Ref, simple_gla, p, q, k, v, gm, o, rs);
      break;
    case variant::gla:
      ATTNKIT_CALL(Ref, gla, p, q, k, v, gc, o, rs);
      break;
  }
}

template <bool Ref, class T>
void run(const problem<T>& pr, const linear_params& p, const tensor_view<T, 4>& o,
         const state_views<accum_t<T>>& s) {
  call<Ref, T>(pr, p, pr.q.cv(), pr.k.cv(), pr.v.cv(), o, s);
}

/// Runs the fast kernel on tokens [b, e) of every batch row (q, k, v, gates and o sliced on T).
/// One run of the fast kernel over every token from pr.h0 (and pr.z0 with normalize).
template <class T>
struct full_result {
  owned_tensor<T, 4> o;
  owned_tensor<accum_t<T>, 4> ht, zt;
};
template <class T>
full_result<T> run_full(const problem<T>& pr, const linear_params& p) {
  full_result<T> r{pr.make_o(), pr.make_state(), pr.make_z()};
  run<false>(pr, p, r.o.v(),
             states<accum_t<T>>(pr.h0.cv(), r.ht.v(), p.normalize, pr.z0.cv(), r.zt.v()));
  return r;
}

template <class T>
void run_range(const problem<T>& pr, const linear_params& p, index_t b, index_t e,
               const tensor_view<T, 4>& o, const state_views<accum_t<T>>& s) {
  const auto q = slice(pr.q.cv(), 1, b, e), k = slice(pr.k.cv(), 1, b, e),
             v = slice(pr.v.cv(), 1, b, e);
  const auto ov = slice(o, 1, b, e);
  switch (pr.var) {
    case variant::linear:
      linear_attn(p, q, k, v, ov, rs_of(s), lx_of(s));
      break;
    case variant::simple:
      simple_gla(p, q, k, v, slice(pr.gs.cv(), 1, b, e), ov, rs_of(s));
      break;
    case variant::gamma:
      simple_gla(p, q, k, v, pr.gamma.cv(), ov, rs_of(s));
      break;
    case variant::gla:
      gla(p, q, k, v, slice(pr.gc.cv(), 1, b, e), ov, rs_of(s));
      break;
  }
}

/// Fast kernel vs reference on the same inputs: o, ht (and zt with normalize).
template <class T>
void check_against_reference(problem<T>& pr, linear_params p, bool with_h0, index_t pad = 0,
                             bool head_first = false) {
  using A = accum_t<T>;
  if (with_h0) pr.make_h0(99, pad);
  auto o = pr.make_o(pad, head_first), o_ref = pr.make_o();
  auto ht = pr.make_state(pad), ht_ref = pr.make_state();
  auto zt = pr.make_z(), zt_ref = pr.make_z();
  state_views<A> s, s_ref;
  if (with_h0) {
    s.h0 = s_ref.h0 = pr.h0.cv();
    if (p.normalize) s.z0 = s_ref.z0 = pr.z0.cv();
  }
  s.ht = ht.v();
  s_ref.ht = ht_ref.v();
  if (p.normalize) {
    s.zt = zt.v();
    s_ref.zt = zt_ref.v();
  }
  run<false>(pr, p, o.v(), s);
  run<true>(pr, p, o_ref.v(), s_ref);
  INFO(name_of(pr.var) << " algo=" << (p.algo == algorithm::chunk ? "chunk" : "recurrent")
                       << " B=" << pr.B << " T=" << pr.T << " H=" << pr.H << " K=" << pr.K
                       << " V=" << pr.V << " h0=" << with_h0 << " pad=" << pad
                       << " head_first=" << head_first << " v_first=" << p.state_v_first
                       << " C=" << p.chunk_size << " normalize=" << p.normalize);
  ATTNKIT_CHECK_CLOSE(o.cv(), o_ref.cv(), test::tolerance<T>());
  ATTNKIT_CHECK_CLOSE(ht.cv(), ht_ref.cv(), test::tolerance<A>());
  if (p.normalize) ATTNKIT_CHECK_CLOSE(zt.cv(), zt_ref.cv(), test::tolerance<A>());
  CHECK(test::padding_untouched(o));
  CHECK(test::padding_untouched(ht));
}

// ------------------------------------------------------------------------------------------------
// Golden data (fla naive references in float64, tests/data/linear)

/// Replays one golden case in precision T with the fast kernel (algo) or the reference; returns
/// error stats of o and ht (and zt).
template <class T>
void replay(const std::string& c, variant var, bool normalize, algorithm algo, bool use_ref,
            bool v_first, double tol_rel, bool rel_rms) {
  using A = accum_t<T>;
  const test::golden_case gcase{"linear", c};
  problem<T> pr;
  pr.var = var;
  pr.q = gcase.load<T, 4>("q");
  pr.k = gcase.load<T, 4>("k");
  pr.v = gcase.load<T, 4>("v");
  if (var == variant::simple) pr.gs = gcase.load<A, 3>("g");
  if (var == variant::gla) pr.gc = gcase.load<A, 4>("g");
  auto h0 = gcase.load<A, 4>("h0");
  const auto ht_ref = gcase.load<double, 4>("ht");
  const auto o_ref = gcase.load<double, 4>("o");
  test::dims_from_tensors(pr, h0);
  pr.v_first = v_first;
  linear_params p;
  p.algo = algo;
  p.normalize = normalize;
  p.state_v_first = v_first;
  state_views<A> s;
  // state_v_first: the same state stored as [N,H,V,K] (a transposed copy)
  auto h0_in = pr.make_state();
  test::copy(v_first ? cview<A, 4>(transpose(h0.cv(), 2, 3)) : h0.cv(), h0_in.v());
  s.h0 = h0_in.cv();
  auto ht = pr.make_state();
  s.ht = ht.v();
  owned_tensor<A, 4> z0, zt;
  owned_tensor<double, 4> zt_ref;
  if (normalize) {
    z0 = gcase.load<A, 4>("z0");
    zt_ref = gcase.load<double, 4>("zt");
    zt = pr.make_z();
    s.z0 = z0.cv();
    s.zt = zt.v();
  }
  std::vector<std::int32_t> cu;
  if (var == variant::simple && c.find("varlen") != std::string::npos) {
    cu = gcase.load_offsets("cu_seqlens");
    s.cu_seqlens = cview<std::int32_t, 1>(cu.data(), {index_t(cu.size())});
  }
  auto o = pr.make_o();
  if (use_ref)
    run<true>(pr, p, o.v(), s);
  else
    run<false>(pr, p, o.v(), s);
  const cview<A, 4> ht_k = v_first ? cview<A, 4>(transpose(ht.cv(), 2, 3)) : ht.cv();
  INFO("case " << c << " "
               << (use_ref                    ? "reference"
                   : algo == algorithm::chunk ? "chunk"
                                              : "recurrent")
               << " v_first=" << v_first);
  auto check = [&](const auto& out, const auto& ref, const char* what) {
    test::check_golden(what, out, ref, tol_rel, rel_rms);
  };
  check(o.cv(), o_ref.cv(), "o");
  check(ht_k, ht_ref.cv(), "ht");
  if (normalize) check(zt.cv(), zt_ref.cv(), "zt");
}

struct golden_case {
  const char* dir;
  variant var;
  bool normalize;
};
const golden_case kGolden[] = {
    {"linear_attn/T37_h0", variant::linear, false},
    {"linear_attn/T130_normalize_h0", variant::linear, true},
    {"simple_gla/T37_h0", variant::simple, false},
    {"simple_gla/varlen", variant::simple, false},
    {"gla/T37_h0", variant::gla, false},
};

}  // namespace

TEST_CASE("linear: golden replay in float64 (<= 1e-10 relative)", "[linear][golden]") {
  for (const auto& gc : kGolden)
    for (bool v_first : {false, true}) {
      replay<double>(gc.dir, gc.var, gc.normalize, algorithm::chunk, false, v_first, 1e-10, false);
      replay<double>(gc.dir, gc.var, gc.normalize, algorithm::recurrent, false, v_first, 1e-10,
                     false);
      replay<double>(gc.dir, gc.var, gc.normalize, algorithm::chunk, true, v_first, 1e-12, false);
    }
}

TEST_CASE("linear: golden replay in float32 (relative RMS <= 1e-5)", "[linear][golden]") {
  for (const auto& gc : kGolden)
    for (bool v_first : {false, true}) {
      replay<float>(gc.dir, gc.var, gc.normalize, algorithm::chunk, false, v_first, 1e-5, true);
      replay<float>(gc.dir, gc.var, gc.normalize, algorithm::recurrent, false, v_first, 1e-5, true);
    }
}

TEMPLATE_TEST_CASE("linear: fast kernels match the reference on awkward shapes", "[linear]", double,
                   float) {
  const variant var = GENERATE(variant::linear, variant::simple, variant::gamma, variant::gla);
  const index_t T = GENERATE(1, 63, 64, 65, 130);
  const auto dims = GENERATE(std::make_pair(20, 37), std::make_pair(33, 17), std::make_pair(8, 8));
  const algorithm algo = GENERATE(algorithm::chunk, algorithm::recurrent);
  const bool with_h0 = GENERATE(false, true);
  problem<TestType> pr(var, 2, T, 3, dims.first, dims.second, 7 + std::uint64_t(T));
  check_against_reference(pr, with_algo<linear_params>(algo), with_h0);
}

TEMPLATE_TEST_CASE("linear: strided and permuted views and V-first states and other chunk sizes",
                   "[linear]", double, float) {
  const variant var = GENERATE(variant::linear, variant::simple, variant::gamma, variant::gla);
  const algorithm algo = GENERATE(algorithm::chunk, algorithm::recurrent);
  const bool v_first = GENERATE(false, true);
  const index_t pad = GENERATE(0, 3);
  const bool head_first = GENERATE(false, true);
  problem<TestType> pr(var, 2, 75, 2, 19, 26, 11, pad, head_first);
  pr.v_first = v_first;
  linear_params p;
  p.algo = algo;
  p.state_v_first = v_first;
  check_against_reference(pr, p, true, pad, head_first);
  if (algo == algorithm::chunk)
    for (index_t cs : {1, 7, 16, 32, 100}) {
      p.chunk_size = cs;
      check_against_reference(pr, p, true, pad, head_first);
    }
}

TEMPLATE_TEST_CASE("linear: normalize with the key-sum state z and the additive 1e-10", "[linear]",
                   double, float) {
  const algorithm algo = GENERATE(algorithm::chunk, algorithm::recurrent);
  const bool with_h0 = GENERATE(false, true);
  const bool v_first = GENERATE(false, true);
  const index_t T = GENERATE(1, 64, 130);
  problem<TestType> pr(variant::linear, 2, T, 3, 24, 13, 5, 0, false, 1.0, 0.0, true);
  pr.v_first = v_first;
  linear_params p;
  p.algo = algo;
  p.normalize = true;
  p.state_v_first = v_first;
  check_against_reference(pr, p, with_h0);
}

TEMPLATE_TEST_CASE("linear: chunk equals recurrent", "[linear]", double, float) {
  using A = accum_t<TestType>;
  const variant var = GENERATE(variant::linear, variant::simple, variant::gamma, variant::gla);
  problem<TestType> pr(var, 1, 200, 2, 40, 24, 3);
  pr.make_h0(4);
  auto o1 = pr.make_o(), o2 = pr.make_o();
  auto h1 = pr.make_state(), h2 = pr.make_state();
  linear_params p;
  state_views<A> s1, s2;
  s1.h0 = s2.h0 = pr.h0.cv();
  s1.ht = h1.v();
  s2.ht = h2.v();
  run<false>(pr, p, o1.v(), s1);
  p.algo = algorithm::recurrent;
  run<false>(pr, p, o2.v(), s2);
  INFO(name_of(var));
  ATTNKIT_CHECK_CLOSE(o1.cv(), o2.cv(), test::tolerance<TestType>());
  ATTNKIT_CHECK_CLOSE(h1.cv(), h2.cv(), test::tolerance<TestType>());
}

TEMPLATE_TEST_CASE("linear: running 0..t then t..T from the first final state equals one run",
                   "[linear]", double, float) {
  using A = accum_t<TestType>;
  const variant var = GENERATE(variant::linear, variant::simple, variant::gamma, variant::gla);
  const algorithm algo = GENERATE(algorithm::chunk, algorithm::recurrent);
  const bool normalize = var == variant::linear && GENERATE(false, true);
  const index_t T = 130;
  problem<TestType> pr(var, 2, T, 2, 24, 20, 21, 0, false, 1.0, 0.0, normalize);
  pr.make_h0(22);
  linear_params p;
  p.algo = algo;
  p.normalize = normalize;
  const auto full = run_full(pr, p);
  for (index_t t : {1, 37, 64, 100}) {
    auto o = pr.make_o();
    auto h_mid = pr.make_state(), h_end = pr.make_state();
    auto z_mid = pr.make_z(), z_end = pr.make_z();
    auto run_part = [&](index_t b, index_t e, const cview<A, 4>& h0, const tensor_view<A, 4>& ht,
                        const cview<A, 4>& z0, const tensor_view<A, 4>& zt) {
      auto sp = states<A>(h0, ht, normalize, z0, zt);
      run_range(pr, p, b, e, o.v(), sp);
    };
    run_part(0, t, pr.h0.cv(), h_mid.v(), pr.z0.cv(), z_mid.v());
    run_part(t, T, h_mid.cv(), h_end.v(), z_mid.cv(), z_end.v());
    INFO(name_of(var) << " split at " << t << " normalize=" << normalize);
    ATTNKIT_CHECK_CLOSE(o.cv(), full.o.cv(), test::tolerance<TestType>());
    ATTNKIT_CHECK_CLOSE(h_end.cv(), full.ht.cv(), test::tolerance<TestType>());
    if (normalize) ATTNKIT_CHECK_CLOSE(z_end.cv(), full.zt.cv(), test::tolerance<TestType>());
  }
}

TEMPLATE_TEST_CASE("linear: decode steps of 1-3 tokens update a caller-owned state in place",
                   "[linear]", double, float) {
  using A = accum_t<TestType>;
  const variant var = GENERATE(variant::linear, variant::simple, variant::gamma, variant::gla);
  const bool v_first = GENERATE(false, true);
  const algorithm algo = GENERATE(algorithm::recurrent, algorithm::chunk);
  const bool normalize = var == variant::linear;
  const index_t T = 40, prefill = 30;
  problem<TestType> pr(var, 2, T, 3, 20, 28, 31, 0, false, 1.0, 0.0, normalize);
  pr.v_first = v_first;
  pr.make_h0(32);
  linear_params p;
  p.state_v_first = v_first;
  p.normalize = normalize;
  // one run over all T tokens
  const auto full = run_full(pr, p);
  // prefill [0, prefill) into a state buffer, then decode one token at a time, in place
  auto state = pr.make_state(2);  // padded rows: the state is a strided view
  auto z = pr.make_z();
  auto o = pr.make_o();
  auto sd = states<A>(pr.h0.cv(), state.v(), normalize, pr.z0.cv(), z.v());
  run_range(pr, p, 0, prefill, o.v(), sd);
  p.algo = algo;
  sd.h0 = state.cv();
  if (normalize) sd.z0 = z.cv();
  // tokens per decode call: 1, 2 (one two-token state pass, in place), 3 (a pair and a single)
  const index_t step = GENERATE(1, 2, 3);
  for (index_t t = prefill; t < T; t += step) run_range(pr, p, t, std::min(T, t + step), o.v(), sd);
  INFO(name_of(var) << " v_first=" << v_first << " tokens per call " << step);
  ATTNKIT_CHECK_CLOSE(o.cv(), full.o.cv(), test::tolerance<TestType>());
  ATTNKIT_CHECK_CLOSE(state.cv(), full.ht.cv(), test::tolerance<TestType>());
  if (normalize) ATTNKIT_CHECK_CLOSE(z.cv(), full.zt.cv(), test::tolerance<TestType>());
  CHECK(test::padding_untouched(state));
}

TEMPLATE_TEST_CASE("linear: varlen equals separate runs (with an empty sequence)", "[linear]",
                   double, float) {
  using A = accum_t<TestType>;
  const variant var = GENERATE(variant::linear, variant::simple, variant::gamma, variant::gla);
  const algorithm algo = GENERATE(algorithm::chunk, algorithm::recurrent);
  const bool v_first = GENERATE(false, true);
  const std::vector<std::int32_t> cu{0, 37, 37, 101, 102, 230};
  const index_t N = index_t(cu.size()) - 1, T = cu.back();
  problem<TestType> pr(var, 1, T, 2, 24, 20, 41);
  pr.N = N;
  pr.v_first = v_first;
  pr.make_h0(42);
  linear_params p;
  p.algo = algo;
  p.state_v_first = v_first;
  auto o = pr.make_o(), o_sep = pr.make_o();
  auto ht = pr.make_state(), ht_sep = pr.make_state();
  state_views<A> s{pr.h0.cv(), ht.v(), {}, {}, {}};
  s.cu_seqlens = cview<std::int32_t, 1>(cu.data(), {N + 1});
  run<false>(pr, p, o.v(), s);
  for (index_t n = 0; n < N; ++n) {
    state_views<A> sn{slice(pr.h0.cv(), 0, n, n + 1), slice(ht_sep.v(), 0, n, n + 1), {}, {}, {}};
    run_range(pr, p, cu[std::size_t(n)], cu[std::size_t(n) + 1], o_sep.v(), sn);
  }
  INFO(name_of(var));
  // identical work per sequence: bitwise equal
  CHECK(std::memcmp(o.buf.data(), o_sep.buf.data(), o.buf.size() * sizeof(TestType)) == 0);
  CHECK(std::memcmp(ht.buf.data(), ht_sep.buf.data(), ht.buf.size() * sizeof(A)) == 0);
  // the empty sequence keeps its initial state
  const auto h_empty = subview(ht.cv(), 0, 1), h0_empty = subview(pr.h0.cv(), 0, 1);
  ATTNKIT_CHECK_CLOSE(h_empty, h0_empty, 0.0);
  // and the reference agrees
  auto o_ref = pr.make_o();
  auto ht_ref = pr.make_state();
  state_views<A> sr = s;
  sr.ht = ht_ref.v();
  run<true>(pr, p, o_ref.v(), sr);
  ATTNKIT_CHECK_CLOSE(o.cv(), o_ref.cv(), test::tolerance<TestType>());
  ATTNKIT_CHECK_CLOSE(ht.cv(), ht_ref.cv(), test::tolerance<A>());
}

TEMPLATE_TEST_CASE("linear: strong gates (-1000 resets) and long sequences stay finite", "[linear]",
                   double, float) {
  const variant var = GENERATE(variant::simple, variant::gla);
  const algorithm algo = GENERATE(algorithm::chunk, algorithm::recurrent);
  SECTION("10 * logsigmoid with 10% of the gates at -1000") {
    problem<TestType> pr(var, 2, 200, 2, 32, 24, 51, 0, false, 10.0, 0.1);
    check_against_reference(pr, with_algo<linear_params>(algo), true);
  }
  SECTION("weak gates over 3000 tokens (|G| grows to thousands)") {
    problem<TestType> pr(var, 1, 3000, 1, 16, 16, 52, 0, false, 0.5, 0.0);
    check_against_reference(pr, with_algo<linear_params>(algo), true);
  }
  SECTION("every gate -1000: each output only sees its own token") {
    problem<TestType> pr(var, 1, 70, 1, 8, 8, 53, 0, false, 1.0, 1.0);
    check_against_reference(pr, with_algo<linear_params>(algo), true);
  }
}

TEST_CASE("linear: bf16 and fp16 storage (float compute and state) within tolerance", "[linear]") {
  const variant var = GENERATE(variant::linear, variant::simple, variant::gamma, variant::gla);
  const algorithm algo = GENERATE(algorithm::chunk, algorithm::recurrent);
  {
    problem<bf16> pr(var, 2, 130, 2, 24, 40, 61);
    check_against_reference(pr, with_algo<linear_params>(algo), true);
  }
  {
    problem<fp16> pr(var, 1, 65, 2, 16, 24, 62);
    check_against_reference(pr, with_algo<linear_params>(algo), true);
  }
}

TEST_CASE("linear: results do not depend on the thread count", "[linear]") {
  const variant var = GENERATE(variant::linear, variant::simple, variant::gamma, variant::gla);
  const algorithm algo = GENERATE(algorithm::chunk, algorithm::recurrent);
  problem<float> pr(var, 2, 150, 5, 40, 24, 71);
  pr.make_h0(72);
  thread_pool one(1), two(2);
  auto o1 = pr.make_o(), o2 = pr.make_o();
  auto h1 = pr.make_state(), h2 = pr.make_state();
  linear_params p;
  p.algo = algo;
  state_views<float> s1, s2;
  s1.h0 = s2.h0 = pr.h0.cv();
  s1.ht = h1.v();
  s2.ht = h2.v();
  p.exec = &one;
  run<false>(pr, p, o1.v(), s1);
  p.exec = &two;
  run<false>(pr, p, o2.v(), s2);
  CHECK(std::memcmp(o1.buf.data(), o2.buf.data(), o1.buf.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(h1.buf.data(), h2.buf.data(), h1.buf.size() * sizeof(float)) == 0);
  // three threads: the chunk algorithm groups heads differently (5 vs 3 heads per work item)
  thread_pool three(3);
  p.exec = &three;
  run<false>(pr, p, o2.v(), s2);
  CHECK(std::memcmp(o1.buf.data(), o2.buf.data(), o1.buf.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(h1.buf.data(), h2.buf.data(), h1.buf.size() * sizeof(float)) == 0);
}

TEST_CASE("linear: empty inputs", "[linear]") {
  // T = 0: final state = initial state, nothing else written
  problem<float> pr(variant::gla, 2, 0, 2, 8, 8, 81);
  pr.make_h0(82);
  for (algorithm algo : {algorithm::chunk, algorithm::recurrent}) {
    auto o = pr.make_o();
    auto ht = pr.make_state();
    linear_params p;
    p.algo = algo;
    state_views<float> s{pr.h0.cv(), ht.v(), {}, {}, {}};
    run<false>(pr, p, o.v(), s);
    ATTNKIT_CHECK_CLOSE(ht.cv(), pr.h0.cv(), 0.0);
    s.h0 = {};
    run<false>(pr, p, o.v(), s);
    auto zeros = pr.make_state();
    std::fill(zeros.buf.begin(), zeros.buf.end(), 0.0f);
    ATTNKIT_CHECK_CLOSE(ht.cv(), zeros.cv(), 0.0);
    CHECK(test::padding_untouched(o));  // o has no elements: its buffer is untouched
  }
}

TEST_CASE("linear: bad inputs throw attnkit::error naming tensor and dimension and values",
          "[linear][errors]") {
  using V4 = cview<float, 4>;
  const index_t B = 2, T = 5, H = 3, K = 32, V = 16;
  std::vector<float> buf(std::size_t(B * T * H * 64 * 4), 0.5f), out(buf.size());
  std::vector<float> st(std::size_t(4 * H * K * V * 2), 0.0f);
  auto q = make_view<const float>(buf.data(), B, T, H, K);
  auto k = q;
  auto v = make_view<const float>(buf.data(), B, T, H, V);
  auto o = make_view(out.data(), B, T, H, V);
  std::vector<float> gbuf(buf.size(), -0.5f);  // log decays (<= 0)
  auto g = make_view<const float>(gbuf.data(), B, T, H, K);
  auto gs = make_view<const float>(gbuf.data(), B, T, H);
  auto h0 = make_view<const float>(st.data(), B, H, K, V);
  linear_params p;
  state_views<float> s;

  SECTION("outputs aliasing inputs, options outside the compute type") {
    s.ht = make_view(const_cast<float*>(q.data()), B, H, K, V);  // ht over q's buffer
    REQUIRE_THROWS_WITH(linear_attn(p, q, k, v, o, rs_of(s)),
                        Contains("output tensor 'ht' overlaps tensor 'q'"));
    s.ht = {};
    REQUIRE_THROWS_WITH(linear_attn(p, q, k, v, make_view(buf.data() + 8, B, T, H, V)),
                        Contains("output tensor 'o' overlaps tensor 'q'"));
    p.scale = 1e300;
    REQUIRE_THROWS_WITH(linear_attn(p, q, k, v, o), Contains("option 'scale' = 1e+300"));
  }
  SECTION("a positive log decay") {
    gbuf[std::size_t(7)] = 0.5f;  // gs[0, 2, 1], g[0, 0, 0, 7]
    REQUIRE_THROWS_WITH(simple_gla(p, q, k, v, gs, o),
                        Contains("tensor 'g' [B,T,H] holds a positive log decay 0.5 at [0,2,1]"));
    REQUIRE_THROWS_WITH(
        gla(p, q, k, v, g, o),
        Contains("tensor 'g' [B,T,H,K] holds a positive log decay 0.5 at [0,0,0,7]"));
    REQUIRE_THROWS_WITH(simple_gla(p, q, k, v, make_view<const float>(gbuf.data() + 6, H), o),
                        Contains("tensor 'g_gamma' [H] holds a positive log decay"));
    REQUIRE_THROWS_WITH(reference::gla(p, q, k, v, g, o), Contains("positive log decay"));
  }
  SECTION("gate with the wrong K") {
    auto g31 = make_view<const float>(buf.data(), B, T, H, K - 1);
    REQUIRE_THROWS_AS(gla(p, q, k, v, g31, o), attnkit::error);
    REQUIRE_THROWS_WITH(
        gla(p, q, k, v, g31, o),
        "attnkit: gla: tensor 'g' [B,T,H,K] dim 3 (K): expected 32 (K of q), got 31");
    REQUIRE_THROWS_WITH(reference::gla(p, q, k, v, g31, o),
                        Contains("tensor 'g' [B,T,H,K] dim 3 (K): expected 32 (K of q), got 31"));
  }
  SECTION("scalar gate and g_gamma shapes") {
    auto gs4 = make_view<const float>(buf.data(), B, T + 1, H);
    REQUIRE_THROWS_WITH(
        simple_gla(p, q, k, v, gs4, o),
        Contains("simple_gla: tensor 'g' [B,T,H] dim 1 (T): expected 5 (T of q), got 6"));
    auto gm = make_view<const float>(buf.data(), H + 1);
    REQUIRE_THROWS_WITH(simple_gla(p, q, k, v, gm, o),
                        Contains("tensor 'g_gamma' [H] dim 0 (H): expected 3 (H of q), got 4"));
  }
  SECTION("k, v, o against q") {
    auto k2 = make_view<const float>(buf.data(), B, T - 1, H, K);
    REQUIRE_THROWS_WITH(linear_attn(p, q, k2, v, o),
                        Contains("tensor 'k' [B,T,H,K] dim 1 (T): expected 5 (T of q), got 4"));
    auto v2 = make_view<const float>(buf.data(), B, T, H + 1, V);
    REQUIRE_THROWS_WITH(linear_attn(p, q, k, v2, o),
                        Contains("tensor 'v' [B,T,H,V] dim 2 (H): expected 3 (H of q), got 4"));
    auto o2 = make_view(out.data(), B, T, H, V + 1);
    REQUIRE_THROWS_WITH(linear_attn(p, q, k, v, o2),
                        Contains("tensor 'o' [B,T,H,V] dim 3 (V): expected 16 (V of v), got 17"));
    REQUIRE_THROWS_WITH(linear_attn(p, V4(nullptr, {B, T, H, K}), k, v, o),
                        Contains("linear_attn: tensor 'q' is missing (null data)"));
  }
  SECTION("state shapes and layouts") {
    s.h0 = make_view<const float>(st.data(), B, H, V, K);  // V-first data without the option
    REQUIRE_THROWS_WITH(simple_gla(p, q, k, v, gs, o, rs_of(s)),
                        Contains("tensor 'h0' [N,H,K,V] dim 2 (K): expected 32 (K of q), got 16"));
    p.state_v_first = true;
    s.h0 = h0;
    REQUIRE_THROWS_WITH(simple_gla(p, q, k, v, gs, o, rs_of(s)),
                        Contains("tensor 'h0' [N,H,V,K] dim 2 (V): expected 16 (V of v), got 32"));
    p.state_v_first = false;
    s.h0 = {};
    s.ht = make_view(st.data(), B + 1, H, K, V);
    REQUIRE_THROWS_WITH(gla(p, q, k, v, g, o, rs_of(s)),
                        Contains("tensor 'ht' [N,H,K,V] dim 0 (N): expected 2 (B of q), got 3"));
  }
  SECTION("ht overlapping h0 without being the same view") {
    s.h0 = h0;
    s.ht = tensor_view<float, 4>(st.data() + 1, {B, H, K, V}, h0.strides());
    REQUIRE_THROWS_WITH(gla(p, q, k, v, g, o, rs_of(s)), Contains("tensor 'ht' overlaps 'h0'"));
    s.ht = make_view(st.data(), B, H, K, V);  // the same view: in place, fine
    REQUIRE_NOTHROW(gla(p, q, k, v, g, o, rs_of(s)));
  }
  SECTION("varlen: B = 1, cu_seqlens consistent, one state per sequence") {
    std::vector<std::int32_t> cu{0, 2, 5};
    s.cu_seqlens = cview<std::int32_t, 1>(cu.data(), {3});
    REQUIRE_THROWS_WITH(linear_attn(p, q, k, v, o, rs_of(s), lx_of(s)),
                        Contains("varlen (cu_seqlens) needs B = 1, got 2"));
    auto q1 = make_view<const float>(buf.data(), 1, 2 * T, H, K);
    auto v1 = make_view<const float>(buf.data(), 1, 2 * T, H, V);
    auto o1 = make_view(out.data(), 1, 2 * T, H, V);
    REQUIRE_THROWS_WITH(linear_attn(p, q1, q1, v1, o1, rs_of(s), lx_of(s)),
                        Contains("'cu_seqlens'[N] = 5 must equal the packed token count 10"));
    cu = {0, 7, 6, 10};
    s.cu_seqlens = cview<std::int32_t, 1>(cu.data(), {4});
    REQUIRE_THROWS_WITH(linear_attn(p, q1, q1, v1, o1, rs_of(s), lx_of(s)),
                        Contains("must be non-decreasing"));
    cu = {0, 4, 10};
    s.cu_seqlens = cview<std::int32_t, 1>(cu.data(), {3});
    s.h0 = make_view<const float>(st.data(), 1, H, K, V);  // one state for two sequences
    REQUIRE_THROWS_WITH(linear_attn(p, q1, q1, v1, o1, rs_of(s), lx_of(s)),
                        Contains("tensor 'h0' [N,H,K,V] dim 0 (N): expected 2 (one state per "
                                 "sequence of cu_seqlens), got 1"));
    s.h0 = {};
    s.ht = make_view(st.data(), 1, H, K, V);
    REQUIRE_THROWS_WITH(linear_attn(p, q1, q1, v1, o1, rs_of(s), lx_of(s)),
                        Contains("tensor 'ht' [N,H,K,V] dim 0 (N): expected 2"));
  }
  SECTION("options") {
    p.chunk_size = 0;
    REQUIRE_THROWS_WITH(linear_attn(p, q, k, v, o),
                        Contains("option 'chunk_size' must be in [1, 4096], got 0"));
    p.chunk_size = 64;
    p.scale = std::nan("");
    REQUIRE_THROWS_WITH(linear_attn(p, q, k, v, o), Contains("option 'scale' must be finite"));
    p.scale = 0;
    p.normalize = true;
    REQUIRE_THROWS_WITH(gla(p, q, k, v, g, o),
                        Contains("option 'normalize' is only supported by linear_attn"));
    s.h0 = h0;
    REQUIRE_THROWS_WITH(linear_attn(p, q, k, v, o, rs_of(s), lx_of(s)),
                        Contains("needs both 'h0' and 'z0' (got only 'h0')"));
    p.normalize = false;
    s.h0 = {};
    s.z0 = make_view<const float>(st.data(), B, 1, H, K);
    REQUIRE_THROWS_WITH(
        linear_attn(p, q, k, v, o, rs_of(s), lx_of(s)),
        Contains("tensor 'z0' (key-sum state) is only used with option 'normalize'"));
    p.normalize = true;
    s.z0 = make_view<const float>(st.data(), B, 2, H, K);
    REQUIRE_THROWS_WITH(linear_attn(p, q, k, v, o, rs_of(s), lx_of(s)),
                        Contains("tensor 'z0' [N,1,H,K] dim 1 (1): expected 1, got 2"));
  }
  SECTION("strides: the fast kernels need a contiguous last dimension, the reference does not") {
    auto qt =
        transpose(make_view<const float>(buf.data(), B, T, K, H), 2, 3);  // [B,T,H,K], stride H
    REQUIRE_THROWS_WITH(
        linear_attn(p, qt, k, v, o),
        Contains("linear_attn: tensor 'q' dim 3 (K): the last dimension must have stride 1"));
    REQUIRE_NOTHROW(reference::linear_attn(p, qt, k, v, o));
    auto gt = transpose(make_view<const float>(gbuf.data(), B, T, K, H), 2, 3);
    REQUIRE_THROWS_WITH(gla(p, q, k, v, gt, o),
                        Contains("tensor 'g' dim 3 (K): the last dimension must have stride 1"));
    auto o_overlap = tensor_view<float, 4>(out.data(), {B, T, H, V}, {0, H * V, V, 1});
    REQUIRE_THROWS_WITH(linear_attn(p, q, k, v, o_overlap),
                        Contains("tensor 'o' dim 0 (B): stride must be positive, got 0"));
  }
}
