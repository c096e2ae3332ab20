// SPDX-License-Identifier: Apache-2.0
// State snapshots (recurrent_state::snapshots): for every delta-rule variant and algorithm (and
// the references), each saved state equals the final state of a separate, shorter run over the
// first m tokens of its sequence; entries the rules do not name stay untouched. Snapshots every
// `every` tokens (a multiple and not a multiple of the chunk size, every token) and after each of
// the last `last` tokens (1, 3, more than a sequence has); dense and varlen batches with an empty
// sequence, state pools with a skipped sequence, both state layouts, the in-place decode step.
// The kernel against the reference, automatic's choice, and every error.
#include <support/delta_inputs.hpp>

using namespace attnkit;
using namespace attnkit::test;
using Catch::Matchers::Contains;

namespace {

using variant = delta_variant;

constexpr index_t kH = 1, kHV = 2, kK = 16, kChunk = 16;

/// The snapshot tests' inputs: H, HV, K fixed, log decays in [-0.4, -0.01].
template <class E>
struct inputs : delta_inputs<E> {
  inputs(index_t B, index_t T, index_t V, std::uint64_t seed)
      : delta_inputs<E>(B, T, kH, kHV, kK, V, seed, -0.4) {}
};

/// One call on all batch rows (b < 0), or on batch row b, tokens [t0, t1).
template <class E>
void call(bool ref, variant var, const delta_params& p, const inputs<E>& in, index_t b, index_t t0,
          index_t t1, const tensor_view<E, 4>& o, const recurrent_state<accum_t<E>>& s) {
  const auto cut = [&](auto x) { return b < 0 ? x : slice(slice(x, 0, b, b + 1), 1, t0, t1); };
  call_delta(ref, var, p, in, cut, o, s);
}

/// A batch and its snapshot request.
struct scenario {
  const char* name;
  index_t B, T, V;                // dense shape (varlen: B = 1, T = all tokens)
  std::vector<std::int32_t> cu;   // varlen offsets (empty: dense)
  std::vector<std::int32_t> idx;  // state_indices (empty: state row n)
  index_t P;                      // pool rows (with idx)
  bool h0, in_place, v_first;     // initial state given; ht == h0; [.., V, K] states
  index_t every, last, S;         // the snapshot request
};

std::vector<scenario> scenarios() {
  const std::vector<std::int32_t> cu = {0, 29, 29, 33, 61};  // lengths 29, 0, 4, 28
  return {
      {"every 32 (a multiple of the chunk), S exactly full",
       2,
       70,
       12,
       {},
       {},
       0,
       true,
       false,
       false,
       32,
       0,
       2},
      {"every 11 (not a multiple), v-first, S runs out",
       2,
       45,
       12,
       {},
       {},
       0,
       true,
       false,
       true,
       11,
       0,
       3},
      {"every 8, varlen with an empty sequence, pool with a skipped sequence",
       1,
       61,
       12,
       cu,
       {4, 1, -1, 0},
       5,
       true,
       false,
       false,
       8,
       0,
       4},
      {"every token", 1, 20, 12, {}, {}, 0, true, false, false, 1, 0, 20},
      {"last 1, no h0", 2, 37, 12, {}, {}, 0, false, false, false, 0, 1, 1},
      {"last 3, S larger than last", 2, 37, 12, {}, {}, 0, true, false, false, 0, 3, 4},
      {"last 6 (more than a sequence's 4 tokens), varlen, v-first",
       1,
       61,
       12,
       cu,
       {},
       0,
       true,
       false,
       true,
       0,
       6,
       6},
      {"decode step in place (pool, skipped row), last 2",
       3,
       1,
       16,
       {},
       {2, -1, 0},
       3,
       true,
       true,
       false,
       0,
       2,
       2},
  };
}

/// The token count whose state snapshot slot s of a sequence of len tokens holds (-1: none).
index_t expected_tokens(const scenario& sc, index_t len, index_t s) {
  if (sc.every > 0) return s < std::min(sc.S, len / sc.every) ? (s + 1) * sc.every : -1;
  const index_t m = len - sc.last + 1 + s;
  return s < sc.last && m >= 1 ? m : -1;
}

std::array<index_t, 4> state_ext(const scenario& sc, index_t rows) {
  return sc.v_first ? std::array<index_t, 4>{rows, kHV, sc.V, kK}
                    : std::array<index_t, 4>{rows, kHV, kK, sc.V};
}
std::array<index_t, 5> snap_ext(const scenario& sc, index_t N) {
  return sc.v_first ? std::array<index_t, 5>{N, sc.S, kHV, sc.V, kK}
                    : std::array<index_t, 5>{N, sc.S, kHV, kK, sc.V};
}

struct seq {
  index_t b, t0, len;
};
std::vector<seq> sequences(const scenario& sc) {
  std::vector<seq> out;
  if (sc.cu.empty())
    for (index_t b = 0; b < sc.B; ++b) out.push_back({b, 0, sc.T});
  else
    for (std::size_t n = 0; n + 1 < sc.cu.size(); ++n)
      out.push_back({0, sc.cu[n], sc.cu[n + 1] - sc.cu[n]});
  return out;
}

template <class T, std::size_t R>
bool all_nan(const tensor_view<T, R>& x) {
  bool nan = true;
  for_each_index<R>(x.extents(), [&](const auto& i) { nan &= std::isnan(double(at(x, i))); });
  return nan;
}

/// Snapshot slot s of sequence n as a one-row state tensor [1,HV,.,.].
template <class T>
tensor_view<T, 4> snapshot(const tensor_view<T, 5>& st, index_t n, index_t s) {
  return subview(slice(st, 0, n, n + 1), 1, s);
}

delta_params params(algorithm algo, const scenario& sc) {
  delta_params p;
  p.algo = algo;
  p.chunk_size = kChunk;
  p.qk_l2norm = true;
  p.state_v_first = sc.v_first;
  return p;
}

/// The outputs of one call with snapshots (the states start NaN: untouched entries stay NaN).
template <class E>
struct snapshot_run {
  using A = accum_t<E>;
  owned_tensor<A, 4> h0, h0_orig, ht;
  owned_tensor<A, 5> st;
  owned_tensor<E, 4> o;
};

template <class E>
snapshot_run<E> run_snapshots(bool ref, variant var, algorithm algo, const scenario& sc,
                              const inputs<E>& in) {
  using A = accum_t<E>;
  const index_t N = index_t(sequences(sc).size()), rows = sc.idx.empty() ? N : sc.P;
  snapshot_run<E> r{owned_tensor<A, 4>(state_ext(sc, rows)),
                    {},
                    owned_tensor<A, 4>(state_ext(sc, rows)),
                    owned_tensor<A, 5>(snap_ext(sc, N)),
                    owned_tensor<E, 4>({sc.B, sc.T, kHV, sc.V})};
  std::mt19937_64 rng(7);
  fill_normal(r.h0.v(), rng, 0.3);
  r.h0_orig = clone(r.h0);
  recurrent_state<A> s;
  if (sc.h0) s.h0 = r.h0.cv();
  s.ht = sc.in_place ? r.h0.v() : r.ht.v();
  if (!sc.cu.empty()) s.cu_seqlens = make_view(sc.cu.data(), index_t(sc.cu.size()));
  if (!sc.idx.empty()) s.state_indices = make_view(sc.idx.data(), index_t(sc.idx.size()));
  s.snapshots = {r.st.v(), sc.every, sc.last};
  call(ref, var, params(algo, sc), in, -1, 0, 0, r.o.v(), s);
  return r;
}

/// Every snapshot of run r against the final state of the sequence's first m tokens alone (same
/// function and options); unnamed entries and skipped sequences' rows untouched; o and ht as
/// without snapshots.
template <class E>
void check_run(bool ref, variant var, algorithm algo, const scenario& sc, const inputs<E>& in,
               const snapshot_run<E>& r) {
  using A = accum_t<E>;
  const auto seqs = sequences(sc);
  const delta_params p = params(algo, sc);
  // sequence n alone over its first m tokens: its final state (and o rows)
  const auto alone = [&](index_t n, index_t row, index_t m, owned_tensor<A, 4>& h,
                         owned_tensor<E, 4>& o) {
    h = owned_tensor<A, 4>(state_ext(sc, 1));
    o = owned_tensor<E, 4>({1, m, kHV, sc.V});
    if (sc.h0) copy(slice(r.h0_orig.cv(), 0, row, row + 1), h.v());
    recurrent_state<A> s1;
    if (sc.h0) s1.h0 = h.cv();
    s1.ht = h.v();
    const seq& sq = seqs[std::size_t(n)];
    call(ref, var, p, in, sq.b, sq.t0, sq.t0 + m, o.v(), s1);
  };
  for (index_t n = 0; n < index_t(seqs.size()); ++n) {
    const seq& sq = seqs[std::size_t(n)];
    const index_t row = sc.idx.empty() ? n : sc.idx[std::size_t(n)];
    for (index_t s = 0; s < sc.S; ++s) {
      INFO("sequence " << n << " (" << sq.len << " tokens, state row " << row << ") slot " << s);
      const index_t m = row < 0 ? -1 : expected_tokens(sc, sq.len, s);
      const auto got = snapshot(r.st.cv(), n, s);
      if (m < 0) {
        CHECK(all_nan(got));  // untouched
        continue;
      }
      INFO("the state after " << m << " tokens");
      owned_tensor<A, 4> h;
      owned_tensor<E, 4> o;
      alone(n, row, m, h, o);
      check_identity<E>("snapshot", got, h.cv());
    }
    if (row < 0 || sq.len == 0) continue;
    INFO("sequence " << n << ": o and the final state as without snapshots");
    owned_tensor<A, 4> h;
    owned_tensor<E, 4> o;
    alone(n, row, sq.len, h, o);
    const auto& out = sc.in_place ? r.h0 : r.ht;
    check_identity<E>("ht", slice(out.cv(), 0, row, row + 1), h.cv());
    check_identity<E>("o", slice(slice(r.o.cv(), 0, sq.b, sq.b + 1), 1, sq.t0, sq.t0 + sq.len),
                      o.cv());
  }
}

const variant kVariants[] = {variant::delta_rule, variant::gated_delta_rule, variant::kda};
const algorithm kAlgos[] = {algorithm::chunk, algorithm::recurrent, algorithm::automatic};

}  // namespace

TEMPLATE_TEST_CASE("snapshots: each saved state is the final state of a shorter run",
                   "[delta][snapshots]", double, float) {
  using E = TestType;
  for (const scenario& sc : scenarios()) {
    const inputs<E> in(sc.B, sc.T, sc.V, std::uint64_t(sc.T * 31 + sc.S));
    for (const variant var : kVariants)
      for (const algorithm algo : kAlgos) {
        if (!supports(variant_by_name(name_of(var)), algo)) continue;
        for (const bool ref : {false, true}) {
          INFO(sc.name << ": " << name_of(var) << " " << algorithm_name(algo)
                       << (ref ? " reference" : " kernel"));
          const auto r = run_snapshots(ref, var, algo, sc, in);
          check_run(ref, var, algo, sc, in, r);
        }
      }
  }
}

TEMPLATE_TEST_CASE("snapshots: the kernel matches the reference", "[delta][snapshots]", double,
                   float) {
  using E = TestType;
  const auto all = scenarios();
  for (const std::size_t i : {std::size_t(2), std::size_t(6)}) {  // varlen, pool, both layouts
    const scenario& sc = all[i];
    const inputs<E> in(sc.B, sc.T, sc.V, 11);
    for (const variant var : kVariants)
      for (const algorithm algo : kAlgos) {
        if (!supports(variant_by_name(name_of(var)), algo)) continue;
        INFO(sc.name << ": " << name_of(var) << " " << algorithm_name(algo));
        const auto fast = run_snapshots(false, var, algo, sc, in);
        // the reference in the same form (automatic: the recurrence)
        const auto ref = run_snapshots(true, var, algo, sc, in);
        for (index_t n = 0; n < fast.st.view.extent(0); ++n)
          for (index_t s = 0; s < sc.S; ++s) {
            INFO("sequence " << n << " slot " << s);
            const auto a = snapshot(fast.st.cv(), n, s), b = snapshot(ref.st.cv(), n, s);
            REQUIRE(all_nan(a) == all_nan(b));
            if (!all_nan(b)) ATTNKIT_CHECK_CLOSE(a, b, tolerance<E>());
          }
      }
  }
}

TEST_CASE("snapshots: automatic picks chunk only for runs of 8 tokens between saved states",
          "[delta][snapshots]") {
  detail::delta_shape sh;
  delta_params p;
  sh.seqs = {{0, 0, 40}, {0, 40, 3}};
  CHECK(detail::resolve_algorithm(p, sh) == algorithm::chunk);
  sh.snap = {7, 0, 100, 0};  // every 7 tokens: runs of 7
  CHECK(detail::resolve_algorithm(p, sh) == algorithm::recurrent);
  sh.snap = {8, 0, 100, 0};
  CHECK(detail::resolve_algorithm(p, sh) == algorithm::chunk);
  sh.snap = {3, 0, 2, 0};  // two snapshots (3, 6), then a run of 34
  CHECK(detail::resolve_algorithm(p, sh) == algorithm::chunk);
  sh.snap = {0, 34, 34, 0};  // the last 34 of 40 tokens: a run of 7, then single tokens
  CHECK(detail::resolve_algorithm(p, sh) == algorithm::recurrent);
  sh.snap = {0, 33, 33, 0};  // a run of 8
  CHECK(detail::resolve_algorithm(p, sh) == algorithm::chunk);
  p.algo = algorithm::chunk;  // an explicit choice is kept
  sh.snap = {1, 0, 100, 0};
  CHECK(detail::resolve_algorithm(p, sh) == algorithm::chunk);
}

TEST_CASE("snapshots: errors name the tensor or option", "[delta][snapshots][errors]") {
  const index_t B = 2, T = 3, V = 4;
  const inputs<float> in(B, T, V, 3);
  owned_tensor<float, 4> o({B, T, kHV, V});
  owned_tensor<float, 5> st({B, 3, kHV, kK, V});
  delta_params p;
  auto run = [&](const tensor_view<float, 5>& states, index_t every, index_t last,
                 const delta_params& pp, variant var = variant::delta_rule, bool ref = false) {
    recurrent_state<float> s;
    s.snapshots = {states, every, last};
    call(ref, var, pp, in, -1, 0, 0, o.v(), s);
  };
  const auto sv = st.v();
  CHECK_THROWS_WITH(run(sv, 1, 2, p),
                    Contains("delta_rule: options 'snapshots.every' (1) and 'snapshots.last' (2) "
                             "exclude each other"));
  CHECK_THROWS_WITH(run(sv, 0, 0, p),
                    Contains("tensor 'snapshots.states' is given, but neither option "
                             "'snapshots.every' nor 'snapshots.last' is set"));
  CHECK_THROWS_WITH(run({}, 2, 0, p),
                    Contains("option 'snapshots.every' needs tensor 'snapshots.states'"));
  CHECK_THROWS_WITH(run({}, 0, 1, p),
                    Contains("option 'snapshots.last' needs tensor 'snapshots.states'"));
  CHECK_THROWS_WITH(run(sv, -1, 0, p), Contains("option 'snapshots.every' must be >= 0, got -1"));
  CHECK_THROWS_WITH(run(sv, 0, 4, p),
                    Contains("tensor 'snapshots.states' [N,S,HV,K,V] dim 1 (S): expected at "
                             "least 4 (option 'snapshots.last'), got 3"));
  CHECK_THROWS_WITH(
      run(slice(sv, 0, 0, 1), 1, 0, p),
      Contains("tensor 'snapshots.states' [N,S,HV,K,V] dim 0 (N): expected 2 (sequences of the "
               "call), got 1"));
  CHECK_THROWS_WITH(run(slice(sv, 2, 0, 1), 1, 0, p),
                    Contains("[N,S,HV,K,V] dim 2 (HV): expected 2 (HV of v), got 1"));
  CHECK_THROWS_WITH(run(slice(sv, 3, 0, 8), 1, 0, p),
                    Contains("[N,S,HV,K,V] dim 3 (K): expected 16 (K of q), got 8"));
  delta_params pv;
  pv.state_v_first = true;
  CHECK_THROWS_WITH(run(sv, 0, 1, pv),
                    Contains("tensor 'snapshots.states' [N,S,HV,V,K] dim 3 (V): expected 4 (V of "
                             "v), got 16"));
  // a stride that writes one element twice
  auto strides = sv.strides();
  strides[1] = 1;
  CHECK_THROWS_WITH(
      run(tensor_view<float, 5>(sv.data(), sv.extents(), strides), 1, 0, p),
      Contains("output tensor 'snapshots.states' dim") && Contains("makes elements overlap"));
  // states over an input or another output: views into one buffer
  std::vector<float> big(1024, 0.25f);
  const tensor_view<float, 5> states(big.data(), {B, 1, kHV, kK, V});  // 256 elements
  float* inside = big.data() + 100;
  recurrent_state<float> s;
  s.snapshots = {states, 1, 0};
  const auto q = in.q.cv(), k = in.k.cv(), v = in.v.cv();
  const auto beta = in.beta.cv();
  CHECK_THROWS_WITH(delta_rule(p, q, k, cview<float, 4>(inside, {B, T, kHV, V}), beta, o.v(), s),
                    Contains("delta_rule: output tensor 'snapshots.states' overlaps tensor 'v'"));
  CHECK_THROWS_WITH(delta_rule(p, q, k, v, beta, tensor_view<float, 4>(inside, {B, T, kHV, V}), s),
                    Contains("output tensor 'snapshots.states' overlaps tensor 'o'"));
  CHECK_THROWS_WITH(
      gated_delta_rule(p, q, k, v, cview<float, 3>(inside, {B, T, kHV}), beta, o.v(), s),
      Contains("gated_delta_rule: output tensor 'snapshots.states' overlaps tensor 'g'"));
  s.ht = tensor_view<float, 4>(inside, {B, kHV, kK, V});
  CHECK_THROWS_WITH(delta_rule(p, q, k, v, beta, o.v(), s),
                    Contains("output tensor 'snapshots.states' overlaps tensor 'ht'"));
  s.ht = {};
  s.h0 = cview<float, 4>(inside, {B, kHV, kK, V});
  CHECK_THROWS_WITH(reference::delta_rule(p, q, k, v, beta, o.v(), s),
                    Contains("reference::delta_rule: output tensor 'snapshots.states' overlaps "
                             "tensor 'h0'"));
  // the references validate the same way
  CHECK_THROWS_WITH(run(sv, 0, 4, p, variant::kda, true),
                    Contains("reference::kda: tensor 'snapshots.states' [N,S,HV,K,V] dim 1 (S)"));
  CHECK_NOTHROW(run(sv, 0, 3, p));
  CHECK_NOTHROW(run(sv, 0, 3, p, variant::kda, true));
}

TEST_CASE("snapshots: the linear family refuses them", "[delta][snapshots][errors]") {
  owned_tensor<float, 4> q({1, 2, 1, 4}), k({1, 2, 1, 4}), v({1, 2, 1, 4}), o({1, 2, 1, 4});
  owned_tensor<float, 5> st({1, 1, 1, 4, 4});
  std::mt19937_64 rng(1);
  fill_normal(q.v(), rng);
  fill_normal(k.v(), rng);
  fill_normal(v.v(), rng);
  recurrent_state<float> s;
  s.snapshots = {st.v(), 1, 0};
  CHECK_THROWS_WITH(linear_attn(linear_params{}, q.cv(), k.cv(), v.cv(), o.v(), s),
                    Contains("linear_attn: state snapshots (recurrent_state::snapshots) are "
                             "supported by the delta-rule family only"));
  CHECK_THROWS_WITH(
      reference::linear_attn(linear_params{}, q.cv(), k.cv(), v.cv(), o.v(), s),
      Contains("reference::linear_attn: state snapshots (recurrent_state::snapshots)"));
}
