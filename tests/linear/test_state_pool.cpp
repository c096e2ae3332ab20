// SPDX-License-Identifier: Apache-2.0
// State pools (continuous batching) of the linear family: h0 / ht are pools [P,H,K,V] (or
// [P,H,V,K]), z0 / zt pools [P,1,H,K] (linear_attn with normalize), and sequence n uses row
// state_indices[n] (-1: skipped, zero outputs, no state). For every variant and algorithm, the
// fast kernel and the reference: a pooled call (rows out of order, a skipped sequence, in place
// and into separate pools, prefill, varlen with an empty sequence, the one-token decode step after
// a pooled prefill) equals separate calls per sequence; rows no sequence names are untouched;
// errors name the bad slot.
#include <attnkit/linear.hpp>
#include <support/test_util.hpp>

using namespace attnkit;
using namespace attnkit::test;
using Catch::Matchers::Contains;

namespace {

enum class variant { linear, normalized, simple, gamma, gla };

const char* name_of(variant v) {
  static const char* const names[] = {"linear_attn", "linear_attn(normalize)", "simple_gla",
                                      "simple_gla(g_gamma)", "gla"};
  return names[int(v)];
}

constexpr variant kVariants[] = {variant::linear, variant::normalized, variant::simple,
                                 variant::gamma, variant::gla};

template <class E>
struct inputs {
  using A = accum_t<E>;
  owned_tensor<E, 4> q, k, v;
  owned_tensor<A, 3> g;      // [B,T,H]
  owned_tensor<A, 1> gamma;  // [H]
  owned_tensor<A, 4> gc;     // [B,T,H,K]
  inputs(index_t B, index_t T, index_t H, index_t K, index_t V, bool positive_qk = false)
      : q({B, T, H, K}),
        k({B, T, H, K}),
        v({B, T, H, V}),
        g({B, T, H}),
        gamma({H}),
        gc({B, T, H, K}) {
    std::mt19937_64 rng(std::uint64_t(T * 17 + K + (positive_qk ? 1 : 0)));
    if (positive_qk) {  // elu(x) + 1 style features: the normaliser's denominators stay positive
      fill_uniform(q.v(), rng, 0.05, 2.0);
      fill_uniform(k.v(), rng, 0.05, 2.0);
    } else {
      fill_normal(q.v(), rng);
      fill_normal(k.v(), rng);
    }
    fill_normal(v.v(), rng);
    fill_uniform(g.v(), rng, -0.5, -0.01);
    fill_uniform(gamma.v(), rng, -0.5, -0.01);
    fill_uniform(gc.v(), rng, -0.5, -0.01);
  }
};

linear_params params_of(variant var, algorithm algo, bool v_first) {
  linear_params p;
  p.algo = algo;
  p.chunk_size = 16;
  p.normalize = var == variant::normalized;
  p.state_v_first = v_first;
  return p;
}

/// One call over batch rows [b0, b1) and tokens [t0, t1) of `in`.
template <class E>
void call(bool ref, variant var, const linear_params& p, const inputs<E>& in, index_t b0,
          index_t b1, index_t t0, index_t t1, const tensor_view<E, 4>& o,
          const recurrent_state<accum_t<E>>& s, const linear_extras<accum_t<E>>& x = {}) {
  const auto sl = [&](const auto& t) { return slice(slice(t, 0, b0, b1), 1, t0, t1); };
  const auto q = sl(in.q.cv()), k = sl(in.k.cv()), v = sl(in.v.cv());
  switch (var) {
    case variant::linear:
    case variant::normalized:
      ATTNKIT_CALL(ref, linear_attn, p, q, k, v, o, s, x);
      break;
    case variant::simple:
      ATTNKIT_CALL(ref, simple_gla, p, q, k, v, sl(in.g.cv()), o, s);
      break;
    case variant::gamma:
      ATTNKIT_CALL(ref, simple_gla, p, q, k, v, in.gamma.cv(), o, s);
      break;
    case variant::gla:
      ATTNKIT_CALL(ref, gla, p, q, k, v, sl(in.gc.cv()), o, s);
      break;
  }
}

/// A pool of P states [P,H,K,V] (or [P,H,V,K]) and of P key sums [P,1,H,K], random.
template <class A>
struct pools {
  owned_tensor<A, 4> h, z;
  pools(index_t P, index_t H, index_t K, index_t V, bool v_first, std::uint64_t seed)
      : h(v_first ? std::array<index_t, 4>{P, H, V, K} : std::array<index_t, 4>{P, H, K, V}),
        z({P, 1, H, K}) {
    std::mt19937_64 rng(seed);
    fill_normal(h.v(), rng, 0.3);
    fill_uniform(z.v(), rng, 0.5, 2.0);
  }
  /// Pools of the same shapes, every element NaN (what a call must not touch stays NaN).
  pools(const pools& like, std::nullptr_t) : h(like.h.view.extents()), z(like.z.view.extents()) {}
  /// Row r of each pool alone, as its own one-row state (h, z) for a separate call.
  pools row(index_t r) const {
    pools one(*this, nullptr);
    auto ext = h.view.extents();
    ext[0] = 1;
    one.h = owned_tensor<A, 4>(ext);
    one.z = owned_tensor<A, 4>({1, 1, z.view.extent(2), z.view.extent(3)});
    copy(slice(h.cv(), 0, r, r + 1), one.h.v());
    copy(slice(z.cv(), 0, r, r + 1), one.z.v());
    return one;
  }
  pools deep_copy() const {
    pools c(*this, nullptr);
    c.h = clone(h);
    c.z = clone(z);
    return c;
  }
};

/// The states of a call reading `in` and writing `out` (the same pools: in place).
template <class A>
recurrent_state<A> state_of(const pools<A>& in, const pools<A>& out,
                            const cview<std::int32_t, 1>& idx,
                            const cview<std::int32_t, 1>& cu = {}) {
  return {in.h.cv(), out.h.v(), cu, idx};
}
template <class A>
linear_extras<A> extras_of(variant var, const pools<A>& in, const pools<A>& out) {
  if (var != variant::normalized) return {};
  return {in.z.cv(), out.z.v()};
}

/// Every element of o's batch row b over tokens [t0, t1) is exactly zero.
template <class E>
bool zero_rows(const owned_tensor<E, 4>& o, index_t b, index_t t0, index_t t1) {
  bool zeros = true;
  const auto ext = o.view.extents();
  for_each_index<4>({1, t1 - t0, ext[2], ext[3]}, [&](std::array<index_t, 4> i) {
    i[0] = b;
    i[1] += t0;
    zeros &= to_compute<double>(at(o.view, i)) == 0.0;
  });
  return zeros;
}

/// Row r of `now` is exactly row r of `before` (in place), or still all NaN (a separate pool).
template <class A>
bool row_untouched(const owned_tensor<A, 4>& now, const owned_tensor<A, 4>& before, index_t r,
                   bool in_place) {
  bool same = true;
  auto ext = now.view.extents();
  ext[0] = 1;
  for_each_index<4>(ext, [&](std::array<index_t, 4> i) {
    i[0] = r;
    const A x = at(now.view, i);
    same &= in_place ? x == at(before.view, i) : std::isnan(double(x));
  });
  return same;
}

/// Row r of pool `a` against the one-row state `b` (identity tolerance).
template <class E, class A>
void check_row(const char* what, const owned_tensor<A, 4>& a, index_t r,
               const owned_tensor<A, 4>& b) {
  check_identity<E>(what, slice(a.cv(), 0, r, r + 1), b.cv());
}

}  // namespace

TEMPLATE_TEST_CASE("linear state pool: pooled calls equal separate calls", "[linear][pool]", double,
                   float) {
  using E = TestType;
  using A = accum_t<E>;
  const index_t B = 3, H = 2, K = 16, V = 12, P = 6;
  const std::vector<std::int32_t> idx = {4, -1, 1};  // out of order, one skipped
  const auto idx_v = make_view(idx.data(), index_t(3));
  thread_pool two(2);
  for (const variant var : kVariants)
    for (const algorithm algo : {algorithm::chunk, algorithm::recurrent})
      for (const index_t T : {1, 37})  // the decode step and a prefill of several chunks
        for (const bool v_first : {false, true})
          for (const bool ref : {false, true})
            for (const bool in_place : {true, false}) {
              INFO(name_of(var) << " " << algorithm_name(algo) << " T=" << T
                                << (v_first ? " V-first" : "") << (ref ? " reference" : " kernel")
                                << (in_place ? " in place" : " separate ht/zt pools"));
              const bool nz = var == variant::normalized;
              const inputs<E> in(B, T, H, K, V, nz);
              pools<A> pool(P, H, K, V, v_first, 5);
              const auto pool0 = pool.deep_copy();
              pools<A> outp(pool, nullptr);  // NaN: rows not named stay NaN
              const pools<A>& out = in_place ? pool : outp;
              owned_tensor<E, 4> o({B, T, H, V});  // NaN: skipped rows must be written as zeros
              linear_params p = params_of(var, algo, v_first);
              p.exec = &two;
              call(ref, var, p, in, 0, B, 0, T, o.v(), state_of(pool, out, idx_v),
                   extras_of(var, pool, out));
              for (index_t b = 0; b < B; ++b) {
                const index_t r = idx[std::size_t(b)];
                if (r < 0) {
                  CHECK(zero_rows(o, b, 0, T));
                  continue;
                }
                // the same sequence alone, from its pool row, in place
                const auto one = pool0.row(r);
                owned_tensor<E, 4> ob({1, T, H, V});
                call(ref, var, params_of(var, algo, v_first), in, b, b + 1, 0, T, ob.v(),
                     recurrent_state<A>{one.h.cv(), one.h.v(), {}}, extras_of(var, one, one));
                check_identity<E>("o", slice(o.cv(), 0, b, b + 1), ob.cv());
                check_row<E>("state row", out.h, r, one.h);
                if (nz) check_row<E>("key-sum row", out.z, r, one.z);
              }
              // rows no sequence names: untouched
              for (const index_t r : {0, 2, 3, 5}) {
                CHECK(row_untouched(out.h, pool0.h, r, in_place));
                if (nz) CHECK(row_untouched(out.z, pool0.z, r, in_place));
              }
            }
}

TEMPLATE_TEST_CASE("linear state pool: varlen with an empty and a skipped sequence",
                   "[linear][pool][varlen]", double, float) {
  using E = TestType;
  using A = accum_t<E>;
  const index_t H = 2, K = 16, V = 12, P = 6, T = 41;
  // sequence 1 is empty (its state row passes through), sequence 2 is skipped
  const std::vector<std::int32_t> cu = {0, 9, 9, 30, 41}, idx = {3, 0, -1, 5};
  const auto cu_v = make_view(cu.data(), index_t(5));
  const auto idx_v = make_view(idx.data(), index_t(4));
  for (const variant var : kVariants)
    for (const algorithm algo : {algorithm::chunk, algorithm::recurrent})
      for (const bool ref : {false, true})
        for (const bool in_place : {true, false}) {
          INFO(name_of(var) << " " << algorithm_name(algo) << (ref ? " reference" : " kernel")
                            << (in_place ? " in place" : " separate ht/zt pools"));
          const bool nz = var == variant::normalized;
          const inputs<E> in(1, T, H, K, V, nz);
          pools<A> pool(P, H, K, V, false, 9);
          const auto pool0 = pool.deep_copy();
          pools<A> outp(pool, nullptr);
          const pools<A>& out = in_place ? pool : outp;
          owned_tensor<E, 4> o({1, T, H, V});
          const linear_params p = params_of(var, algo, false);
          call(ref, var, p, in, 0, 1, 0, T, o.v(), state_of(pool, out, idx_v, cu_v),
               extras_of(var, pool, out));
          for (std::size_t n = 0; n < idx.size(); ++n) {
            const index_t r = idx[n], t0 = cu[n], t1 = cu[n + 1];
            if (r < 0) {
              CHECK(zero_rows(o, 0, t0, t1));
              continue;
            }
            const auto one = pool0.row(r);
            if (t1 > t0) {
              owned_tensor<E, 4> ob({1, t1 - t0, H, V});
              call(ref, var, p, in, 0, 1, t0, t1, ob.v(),
                   recurrent_state<A>{one.h.cv(), one.h.v(), {}}, extras_of(var, one, one));
              check_identity<E>("o", slice(o.cv(), 1, t0, t1), ob.cv());
            }
            // the empty sequence: final state = initial state, exactly
            check_row<E>("state row", out.h, r, one.h);
            if (nz) check_row<E>("key-sum row", out.z, r, one.z);
            if (t1 == t0) CHECK(compare(slice(out.h.cv(), 0, r, r + 1), one.h.cv()).max_abs == 0);
          }
          for (const index_t r : {1, 2, 4}) {
            CHECK(row_untouched(out.h, pool0.h, r, in_place));
            if (nz) CHECK(row_untouched(out.z, pool0.z, r, in_place));
          }
        }
}

TEMPLATE_TEST_CASE("linear state pool: decode steps after a pooled prefill", "[linear][pool]",
                   double, float) {
  using E = TestType;
  using A = accum_t<E>;
  const index_t B = 3, H = 2, K = 16, V = 12, P = 6, T = 21;
  // prefill tokens [0, 20) of batch rows 0-2 into pool rows {4, -, 1}; then one decode step of
  // the rows in another order (2, 1, 0) with slots {1, -1, 4}, in place (algorithm::automatic:
  // recurrent for one token)
  const std::vector<std::int32_t> pre_idx = {4, -1, 1}, dec_idx = {1, -1, 4};
  const std::vector<index_t> dec_rows = {2, 1, 0};
  for (const variant var : kVariants)
    for (const algorithm algo : {algorithm::chunk, algorithm::recurrent})
      for (const bool ref : {false, true}) {
        INFO(name_of(var) << " prefill " << algorithm_name(algo)
                          << (ref ? " reference" : " kernel"));
        const bool nz = var == variant::normalized;
        const inputs<E> in(B, T, H, K, V, nz);
        // the decode step's inputs: token T-1 of batch rows dec_rows
        inputs<E> dec(B, 1, H, K, V, nz);
        for (index_t i = 0; i < B; ++i) {
          const index_t b = dec_rows[std::size_t(i)];
          const auto tok = [&](const auto& t) { return slice(slice(t, 0, b, b + 1), 1, T - 1, T); };
          const auto row = [&](const auto& t) { return slice(t, 0, i, i + 1); };
          copy(tok(in.q.cv()), row(dec.q.v()));
          copy(tok(in.k.cv()), row(dec.k.v()));
          copy(tok(in.v.cv()), row(dec.v.v()));
          copy(tok(in.g.cv()), row(dec.g.v()));
          copy(tok(in.gc.cv()), row(dec.gc.v()));
        }
        copy(in.gamma.cv(), dec.gamma.v());
        pools<A> pool(P, H, K, V, false, 13);
        const auto pool0 = pool.deep_copy();
        owned_tensor<E, 4> op({B, T - 1, H, V}), od({B, 1, H, V});
        call(ref, var, params_of(var, algo, false), in, 0, B, 0, T - 1, op.v(),
             state_of(pool, pool, make_view(pre_idx.data(), B)), extras_of(var, pool, pool));
        call(ref, var, params_of(var, algorithm::automatic, false), dec, 0, B, 0, 1, od.v(),
             state_of(pool, pool, make_view(dec_idx.data(), B)), extras_of(var, pool, pool));
        for (index_t i = 0; i < B; ++i) {
          const index_t b = dec_rows[std::size_t(i)], r = dec_idx[std::size_t(i)];
          if (r < 0) {
            CHECK(zero_rows(od, i, 0, 1));
            CHECK(zero_rows(op, b, 0, T - 1));
            continue;
          }
          // all T tokens of the sequence in one call from its initial pool row
          const auto one = pool0.row(r);
          owned_tensor<E, 4> ob({1, T, H, V});
          call(ref, var, params_of(var, algorithm::recurrent, false), in, b, b + 1, 0, T, ob.v(),
               recurrent_state<A>{one.h.cv(), one.h.v(), {}}, extras_of(var, one, one));
          check_identity<E>("prefill o", slice(op.cv(), 0, b, b + 1), slice(ob.cv(), 1, 0, T - 1));
          check_identity<E>("decode o", slice(od.cv(), 0, i, i + 1), slice(ob.cv(), 1, T - 1, T));
          check_row<E>("state row", pool.h, r, one.h);
          if (nz) check_row<E>("key-sum row", pool.z, r, one.z);
        }
        for (const index_t r : {0, 2, 3, 5}) {
          CHECK(row_untouched(pool.h, pool0.h, r, true));
          CHECK(row_untouched(pool.z, pool0.z, r, true));
        }
      }
}

TEST_CASE("linear state pool: the key sums alone may be the pool", "[linear][pool]") {
  // normalize without an initial state and without ht: zt [P,1,H,K] is the only pool
  const inputs<double> in(2, 5, 1, 4, 4, true);
  owned_tensor<double, 4> zt({3, 1, 1, 4}), o({2, 5, 1, 4});
  const std::vector<std::int32_t> idx = {2, -1};
  linear_params p;
  p.normalize = true;
  for (const bool ref : {false, true}) {
    ATTNKIT_CALL(ref, linear_attn, p, in.q.cv(), in.k.cv(), in.v.cv(), o.v(),
                 recurrent_state<double>{{}, {}, {}, make_view(idx.data(), index_t(2))},
                 linear_extras<double>{{}, zt.v()});
    for (index_t d = 0; d < 4; ++d) {  // the key sum of sequence 0's tokens
      double sum = 0;
      for (index_t t = 0; t < 5; ++t) sum += in.k.view(0, t, 0, d);
      CHECK(zt.view(2, 0, 0, d) == Approx(sum).epsilon(1e-14));
      CHECK(std::isnan(zt.view(0, 0, 0, d)));
      CHECK(std::isnan(zt.view(1, 0, 0, d)));
    }
    CHECK(zero_rows(o, 1, 0, 5));
  }
}

TEST_CASE("linear state pool: errors name the bad slot", "[linear][pool][errors]") {
  const inputs<float> in(2, 3, 1, 4, 4, true);
  owned_tensor<float, 4> pool({3, 1, 4, 4}), pool4({4, 1, 4, 4}), z({3, 1, 1, 4}), z2({2, 1, 1, 4}),
      o({2, 3, 1, 4});
  const std::vector<std::int32_t> bad = {0, 3}, neg = {-2, 0}, dup = {2, 2}, ok = {2, 0},
                                  short_idx = {0};
  const auto iv = [](const std::vector<std::int32_t>& idx) {
    return make_view(idx.data(), index_t(idx.size()));
  };
  for (const variant var : {variant::linear, variant::simple, variant::gla})
    for (const bool ref : {false, true}) {
      INFO(name_of(var) << (ref ? " reference" : " kernel"));
      const linear_params p = params_of(var, algorithm::automatic, false);
      const auto run = [&](const std::vector<std::int32_t>& idx, bool with_pool) {
        const recurrent_state<float> s{with_pool ? pool.cv() : cview<float, 4>(),
                                       with_pool ? pool.v() : tensor_view<float, 4>(),
                                       {},
                                       iv(idx)};
        call(ref, var, p, in, 0, 2, 0, 3, o.v(), s);
      };
      const std::string fn =
          std::string(ref ? "reference::" : "") + (var == variant::linear   ? "linear_attn"
                                                   : var == variant::simple ? "simple_gla"
                                                                            : "gla");
      CHECK_THROWS_WITH(run(bad, true),
                        Contains(fn + ": state_indices[1] = 3 is not a pool row in [0, 3)"));
      CHECK_THROWS_WITH(run(neg, true), Contains("state_indices[0] = -2 is not a pool row"));
      CHECK_THROWS_WITH(run(dup, true),
                        Contains("state_indices[1] = 2 names a pool row another sequence uses"));
      CHECK_THROWS_WITH(run(ok, false), Contains("neither h0 nor ht is given"));
      CHECK_THROWS_WITH(run(short_idx, true), Contains("tensor 'state_indices' [N] dim 0 (N)"));
      CHECK_NOTHROW(run(ok, true));
      // h0 and ht pools of different sizes
      CHECK_THROWS_WITH(
          call(ref, var, p, in, 0, 2, 0, 3, o.v(),
               recurrent_state<float>{pool.cv(), pool4.v(), {}, iv(ok)}),
          Contains("tensor 'ht' [N,H,K,V] dim 0 (N): expected 3 (pool rows of h0), got 4"));
    }
  // the key-sum pools (linear_attn with normalize)
  const linear_params pn = params_of(variant::normalized, algorithm::automatic, false);
  for (const bool ref : {false, true}) {
    INFO((ref ? "reference" : "kernel"));
    const auto run = [&](const recurrent_state<float>& s, const linear_extras<float>& x) {
      call(ref, variant::normalized, pn, in, 0, 2, 0, 3, o.v(), s, x);
    };
    CHECK_THROWS_WITH(run({{}, {}, {}, iv(ok)}, {}), Contains("none of h0, ht, z0, zt is given"));
    CHECK_THROWS_WITH(run({pool.cv(), pool.v(), {}, iv(ok)}, {z2.cv(), z2.v()}),
                      Contains("tensor 'z0' [P,1,H,K] dim 0 (P): expected 3, got 2"));
    CHECK_THROWS_WITH(run({pool.cv(), pool.v(), {}, iv(ok)}, {z.cv(), z2.v()}),
                      Contains("tensor 'zt' [P,1,H,K] dim 0 (P): expected 3, got 2"));
    CHECK_THROWS_WITH(run({pool.cv(), pool.v(), {}, iv(bad)}, {z.cv(), z.v()}),
                      Contains("state_indices[1] = 3 is not a pool row in [0, 3)"));
    CHECK_NOTHROW(run({pool.cv(), pool.v(), {}, iv(ok)}, {z.cv(), z.v()}));
  }
}
