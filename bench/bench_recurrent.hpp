// SPDX-License-Identifier: Apache-2.0
// What the recurrent-family benchmarks (bench_linear, bench_delta) share: the inputs of one shape,
// the prefill and decode benchmark bodies with their counters, and the registration of
//   BM_<variant>_<chunk|recurrent|auto>/seq:T/threads:N   prefill, B = 1, float, h0 given, ht
//                                                         written, the family's main shape
//   BM_<variant>_<algo>/H:h/HV:hv/seq:T/threads:N         the same for further shapes
//   BM_<variant>_decode/batch:B/threads:N                 T = 1 per sequence, state updated in
//                                                         place (from a pool if asked)
// for every algorithm a variant has (attnkit's variant table; auto = algorithm::automatic), and for
// a model shape given by the user (recurrent_shape_keys: H, HV, K, V, T, batch)
//   BM_<variant>_<algo>/H:h/HV:hv/K:k/V:v/T:t/threads:N     prefill, when T is given
//   BM_<variant>_decode/H:h/HV:hv/K:k/V:v/batch:B/threads:N
// A family (recurrent_family) supplies one callable, call(variant_name, params, views), that runs
// the kernel, its FLOP count and its extra counters.
//   tokens_per_s    = B*T per call / seconds
//   GFLOPS          = FLOP per token and (value) head * B*T*heads / seconds / 1e9; the family
//                     passes the count (nominal, or what its algorithm executes)
//   GBps            = 2 * B*heads*K*V*4 bytes per decode call (one read + one write of the state)
//   working_set_MiB, pct_read_same_size = the B*heads*K*V*4 bytes of the states, and GBps against
//                     reading a buffer of that size again and again (bench_common.hpp)
#pragma once

#include <attnkit/core/recurrent_state.hpp>
#include <attnkit/core/variants.hpp>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace attnkit_bench {

/// Inputs of the last shape asked for (one shape alive at a time): q, k [b,t,H,K], v, o
/// [b,t,HV,V], beta [b,t,HV] in (0.05, 0.95), log gates gs [b,t,HV] and gc [b,t,HV,K] in
/// (-0.2, -0.001), states h0, ht [b,HV,K,V].
struct recurrent_inputs {
  index_t b = -1, t = -1, H = -1, HV = -1, K = -1, V = -1, pool = 0;
  buffer<float> q, k, v, o, beta, gs, gc, h0, ht;
  std::vector<std::int32_t> slots;  // state pool rows of the b sequences (pool > 0)
};

/// Rows of x [n, d] scaled to unit norm (the delta rule's stability condition on k).
inline void normalise_rows(float* x, index_t n, index_t d) {
  for (index_t r = 0; r < n; ++r) {
    double ss = 0;
    for (index_t c = 0; c < d; ++c) ss += double(x[r * d + c]) * x[r * d + c];
    const float f = float(1 / std::sqrt(ss));
    for (index_t c = 0; c < d; ++c) x[r * d + c] *= f;
  }
}

/// The family's shape: H query/key heads, HV value heads, head dims K and V; unit_qk: q and k
/// rows of unit norm (delta rule), else uniform in (-0.5, 0.5).
struct recurrent_shape {
  index_t H, HV, K, V;
  bool unit_qk;
};

/// pool > 0: the states are a pool of `pool` rows and sequence n uses row slots[n] (every other
/// row, last sequence first: out of order, as a serving engine's slots).
inline recurrent_inputs& recurrent_data(const recurrent_shape& s, index_t b, index_t t,
                                        index_t pool = 0) {
  static recurrent_inputs d;
  if (d.b != b || d.t != t || d.H != s.H || d.HV != s.HV || d.K != s.K || d.V != s.V ||
      d.pool != pool) {
    d = recurrent_inputs{};
    const auto n = std::size_t(b * t * s.H), nv = std::size_t(b * t * s.HV);
    const float lo = s.unit_qk ? -1.f : -0.5f, hi = s.unit_qk ? 1.f : 0.5f;
    d.q = random_tensor<float>(n * std::size_t(s.K), 1, lo, hi);
    d.k = random_tensor<float>(n * std::size_t(s.K), 2, lo, hi);
    if (s.unit_qk) {
      normalise_rows(d.q.data(), index_t(n), s.K);
      normalise_rows(d.k.data(), index_t(n), s.K);
    }
    d.v = random_tensor<float>(nv * std::size_t(s.V), 3);
    d.o = random_tensor<float>(nv * std::size_t(s.V), 4);
    d.beta = random_tensor<float>(nv, 5, 0.05f, 0.95f);
    d.gs = random_tensor<float>(nv, 6, -0.2f, -0.001f);
    d.gc = random_tensor<float>(nv * std::size_t(s.K), 7, -0.2f, -0.001f);
    const auto ns = std::size_t((pool > 0 ? pool : b) * s.HV * s.K * s.V);
    d.h0 = random_tensor<float>(ns, 8, -0.1f, 0.1f);
    d.ht = random_tensor<float>(ns, 9);
    for (index_t n = 0; n < b && pool > 0; ++n) d.slots.push_back(std::int32_t(2 * (b - 1 - n)));
    d.b = b;
    d.t = t;
    d.H = s.H;
    d.HV = s.HV;
    d.K = s.K;
    d.V = s.V;
    d.pool = pool;
  }
  return d;
}

/// Views of the inputs for b sequences of t tokens; the state is read from h0 and written to ht
/// (ht == d.h0: in place, as the decode step).
struct recurrent_views {
  attnkit::cview<float, 4> q, k, v, gc;
  attnkit::cview<float, 3> beta, gs;
  attnkit::tensor_view<float, 4> o;
  attnkit::recurrent_state<float> state;
};
inline recurrent_views views_of(const recurrent_shape& s, recurrent_inputs& d, index_t b, index_t t,
                                float* ht) {
  using attnkit::make_view;
  recurrent_views w;
  w.q = make_view<const float>(d.q.data(), b, t, s.H, s.K);
  w.k = make_view<const float>(d.k.data(), b, t, s.H, s.K);
  w.v = make_view<const float>(d.v.data(), b, t, s.HV, s.V);
  w.gc = make_view<const float>(d.gc.data(), b, t, s.HV, s.K);
  w.beta = make_view<const float>(d.beta.data(), b, t, s.HV);
  w.gs = make_view<const float>(d.gs.data(), b, t, s.HV);
  w.o = make_view(d.o.data(), b, t, s.HV, s.V);
  const index_t rows = d.pool > 0 ? d.pool : b;
  w.state.h0 = make_view<const float>(ht == d.ht.data() ? d.h0.data() : ht, rows, s.HV, s.K, s.V);
  w.state.ht = make_view(ht, rows, s.HV, s.K, s.V);
  if (d.pool > 0) w.state.state_indices = make_view<const std::int32_t>(d.slots.data(), b);
  return w;
}

/// Runs one kernel call of the variant: (variant, params, views).
template <class Params>
using recurrent_call =
    std::function<void(const std::string&, const Params&, const recurrent_views&)>;
/// FLOP per token and value head that GFLOPS counts for (variant, algo, shape).
using recurrent_flop =
    std::function<double(const std::string&, attnkit::algorithm, const recurrent_shape&)>;
/// Family-specific prefill counters: (state, variant, algo, shape, tokens per call).
using recurrent_counters = std::function<void(benchmark::State&, const std::string&,
                                              attnkit::algorithm, const recurrent_shape&, double)>;

/// What a family registers beyond the prefill rows of its main shape.
struct recurrent_options {
  bool with_auto = false;               ///< BM_<variant>_auto rows (algorithm::automatic)
  std::vector<recurrent_shape> shapes;  ///< further shapes: BM_<variant>_<algo>/H:h/HV:hv
  std::vector<int64_t> shape_seqs;      ///< T of those rows
  bool decode_pool = false;             ///< decode reads and writes rows of a state pool
  bool grouped_v = false;               ///< the family takes HV a multiple of H (else HV = H)
};

/// A family: its variants, the call of a variant's kernel, its FLOP count and extra counters,
/// and its options. Params is the family's params struct (algo, chunk_size = 64, exec set per
/// call).
template <class Params>
struct recurrent_family {
  std::vector<std::string> variants;
  recurrent_call<Params> call_views;
  recurrent_flop flop;
  recurrent_counters extra;
  recurrent_options opt;

  /// One call: (variant, algo, executor, shape, inputs, b sequences, t tokens, ht; ht == d.h0:
  /// in place).
  void call(const std::string& name, attnkit::algorithm algo, attnkit::executor* exec,
            const recurrent_shape& sh, recurrent_inputs& d, index_t b, index_t t, float* ht) const {
    Params p;
    p.algo = algo;
    p.chunk_size = 64;
    p.exec = exec;
    call_views(name, p, views_of(sh, d, b, t, ht));
  }

  /// Prefill of one sequence of t tokens (h0 given, ht written) with the paired FMA ceiling.
  void prefill(benchmark::State& st, const std::string& name, attnkit::algorithm algo,
               const recurrent_shape& sh, index_t t, int threads) const {
    recurrent_inputs& d = recurrent_data(sh, 1, t);
    const paired_ceiling fma = paired_loop(
        st, [&] { call(name, algo, &pool(threads), sh, d, 1, t, d.ht.data()); },
        [&](double seconds) { return run_fma_for(threads, seconds); });
    const double tokens = double(t), f = tokens * double(sh.HV) * flop(name, algo, sh);
    st.counters["tokens_per_s"] = rate(tokens);
    report_flops(st, f, threads, fma.kernel_seconds);
    report_fma_paired(st, f, fma);
    if (extra) extra(st, name, algo, sh, tokens);
  }

  /// One decode step (T = 1) of b sequences, states updated in place (from a pool of 2b rows
  /// with opt.decode_pool), with the paired read ceiling.
  void decode(benchmark::State& st, const std::string& name, const recurrent_shape& sh, index_t b,
              int threads) const {
    using attnkit::algorithm;
    recurrent_inputs& d = recurrent_data(sh, b, 1, opt.decode_pool ? 2 * b : 0);
    const paired_ceiling read = paired_loop(
        st,
        [&] {
          call(name, algorithm::recurrent, &pool(threads), sh, d, b, 1, d.h0.data());
        },  // in place
        [&](double seconds) { return run_read_for(threads, seconds); });
    const double tokens = double(b),
                 bytes = double(b * sh.HV) *
                         attnkit::variant_by_name(name).decode_bytes(sh.K, sh.V, sizeof(float));
    st.counters["tokens_per_s"] = rate(tokens);
    report_flops(st, tokens * double(sh.HV) * flop(name, algorithm::recurrent, sh), threads,
                 read.kernel_seconds);
    // working set: the b state rows, read and written in place
    report_bytes(st, bytes, threads, read.kernel_seconds,
                 double(b * sh.HV * sh.K * sh.V) * sizeof(float));
    report_read_paired(st, bytes, read);
  }

  /// The algorithms of a variant this family registers, with their name suffixes.
  std::vector<std::pair<attnkit::algorithm, const char*>> algorithms(
      const std::string& name) const {
    using attnkit::algorithm;
    std::vector<std::pair<algorithm, const char*>> r;
    const auto& info = attnkit::variant_by_name(name);
    for (const auto algo : {algorithm::chunk, algorithm::recurrent, algorithm::automatic}) {
      if (!attnkit::supports(info, algo) || (algo == algorithm::automatic && !opt.with_auto))
        continue;
      r.push_back({algo, algo == algorithm::chunk       ? "_chunk"
                         : algo == algorithm::recurrent ? "_recurrent"
                                                        : "_auto"});
    }
    return r;
  }
};

/// Registers the prefill and decode benchmarks of the family's variants for its main shape and
/// opt.shapes (see the top of this file).
template <class Params>
void register_recurrent_benchmarks(const recurrent_shape& shape, std::vector<int64_t> seqs,
                                   const recurrent_family<Params>& fam) {
  register_ceiling_benchmarks();
  const auto& opt = fam.opt;
  std::vector<std::pair<recurrent_shape, std::string>> prefill_shapes{{shape, ""}};
  for (const auto& s : opt.shapes)
    prefill_shapes.push_back({s, "/H:" + std::to_string(s.H) + "/HV:" + std::to_string(s.HV)});
  for (const auto& name : fam.variants) {
    for (const auto& ps : prefill_shapes)
      for (const auto& an : fam.algorithms(name)) {
        const recurrent_shape sh = ps.first;
        const attnkit::algorithm algo = an.first;
        const std::string bm = "BM_" + name + an.second + ps.second;
        benchmark::RegisterBenchmark(bm.c_str(),
                                     [=](benchmark::State& st) {
                                       fam.prefill(st, name, algo, sh, st.range(0),
                                                   int(st.range(1)));
                                     })
            ->ArgNames({"seq", "threads"})
            ->ArgsProduct({ps.second.empty() ? seqs : opt.shape_seqs, thread_counts()})
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
    benchmark::RegisterBenchmark(
        ("BM_" + name + "_decode").c_str(),
        [=](benchmark::State& st) { fam.decode(st, name, shape, st.range(0), int(st.range(1))); })
        ->ArgNames({"batch", "threads"})
        ->ArgsProduct({{1, 64}, thread_counts()})
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
}

/// The shape keys of the recurrent families.
inline const std::vector<shape_key>& recurrent_shape_keys() {
  static const std::vector<shape_key> keys{
      {"H", 16, "query/key heads"},
      {"HV", shape_key::kNoDefault, "value heads (default: H; delta: a multiple of H)"},
      {"K", 128, "key head dim"},
      {"V", 128, "value head dim"},
      {"T", shape_key::kNoDefault, "prefill tokens (one sequence; no prefill rows without it)"},
      {"batch", 1, "sequences of the decode rows"},
  };
  return keys;
}

/// Registers, for a user shape (recurrent_shape_keys), BM_<variant>_<algo>/H/HV/K/V/T/threads for
/// every algorithm (when T is given) and BM_<variant>_decode/H/HV/K/V/batch/threads.
template <class Params>
void register_recurrent_shape(const user_shape& u, const recurrent_family<Params>& fam,
                              bool unit_qk) {
  const int64_t H = u.get("H"), HV = u.has("HV") ? u.get("HV") : H, K = u.get("K"), V = u.get("V"),
                batch = u.get("batch");
  if (fam.opt.grouped_v ? (HV < H || HV % H != 0) : HV != H)
    throw u.error("HV",
                  "HV = " + std::to_string(HV) +
                      (fam.opt.grouped_v ? " is not a multiple of H = " : " must equal H = ") +
                      std::to_string(H));
  const auto shape_of = [unit_qk](const benchmark::State& st) {
    return recurrent_shape{st.range(0), st.range(1), st.range(2), st.range(3), unit_qk};
  };
  for (const auto& name : fam.variants) {
    if (u.has("T"))
      for (const auto& an : fam.algorithms(name)) {
        const attnkit::algorithm algo = an.first;
        benchmark::RegisterBenchmark(
            ("BM_" + name + an.second).c_str(), skip_on_error([=](benchmark::State& st) {
              fam.prefill(st, name, algo, shape_of(st), st.range(4), int(st.range(5)));
            }))
            ->ArgNames({"H", "HV", "K", "V", "T", "threads"})
            ->ArgsProduct({{H}, {HV}, {K}, {V}, {u.get("T")}, thread_counts()})
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
    benchmark::RegisterBenchmark(
        ("BM_" + name + "_decode").c_str(), skip_on_error([=](benchmark::State& st) {
          fam.decode(st, name, shape_of(st), st.range(4), int(st.range(5)));
        }))
        ->ArgNames({"H", "HV", "K", "V", "batch", "threads"})
        ->ArgsProduct({{H}, {HV}, {K}, {V}, {batch}, thread_counts()})
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace attnkit_bench
