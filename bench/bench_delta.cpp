// SPDX-License-Identifier: Apache-2.0
// Delta-rule family benchmarks (delta_rule, gated_delta_rule, kda; recurrent kernel), next to
// ceilings measured in the same binary (bench_common.hpp).
//
//   BM_ceiling_fma|gemm|read/threads:N   FMA-only peak, Eigen 1024^3 float GEMM, 512 MiB read
//   BM_<variant>_<algo>/seq:T/threads:N   algo in {chunk (delta_rule, gated_delta_rule; chunk
//                                size 64), recurrent}; B=1, H=HV=16, K=V=128, float
//                                q/k/v/o/beta/g, float state, h0 given and ht written, q/k
//                                unit-norm, T in {1024, 4096}
//       tokens_per_s   = B*T per call / wall seconds
//       GFLOPS         = FLOP per token per value head * B*T*HV / seconds / 1e9, with
//                        FLOP = 6*K*V (w = S^T k: K*V FMAs; S += k u^T and o = S^T q~: 2*K*V FMAs;
//                        an FMA = 2 FLOP) + K*V for the decay multiply (gated_delta_rule, kda);
//                        normalisation, beta and gate exponentials not counted
//                        (the same count for both algorithms: it compares them)
//       GFLOPS_chunk_executed = FLOP the chunk algorithm executes: 4*C*K + C*(K+V) + 6*K*V +
//                        2*C*V per token and value head (C = 64); chunk rows only
//       pct_fma_peak   = 100 * GFLOPS / in-binary FMA peak at the same thread count
//       pct_fma_paired = 100 * GFLOPS / the FMA loop run after every call for as long as the call
//   BM_<variant>_decode/batch:B/threads:N   one token (T=1) per sequence for B sequences, state
//                                [B,16,128,128] float updated in place (ht == h0)
//       GBps            = 2 * B*HV*K*V*4 bytes per call (one read + one write of the state)
//       pct_read_bw     = 100 * GBps / in-binary streaming read bandwidth (DRAM, 512 MiB)
//       pct_read_paired = 100 * GBps / the streaming read run after every call for as long as the
//                         call
// All times are wall-clock: the kernel calls only (UseManualTime; the paired ceiling runs are
// excluded); kernels run on an attnkit::thread_pool of `threads`.
//
// Running:
//   bench_delta --benchmark_repetitions=3 --benchmark_report_aggregates_only=true  (quote medians)
//   bench_delta --benchmark_min_time=0.01                                          (smoke pass)
#include <attnkit/delta.hpp>
#include <cstdint>

#include "bench_common.hpp"

namespace {

using namespace attnkit_bench;
using attnkit::delta_params;
using attnkit::recurrent_state;

constexpr index_t kH = 16, kK = 128, kV = 128;

enum class variant { delta, gated, kda };

/// Inputs of the last shape asked for (one shape alive at a time).
struct inputs {
  index_t b = -1, t = -1;
  buffer<float> q, k, v, o, beta, gs, gc, h0, ht;
};

/// Rows of x [n, d] scaled to unit norm (the delta rule's stability condition on k).
void normalise_rows(float* x, index_t n, index_t d) {
  for (index_t r = 0; r < n; ++r) {
    double ss = 0;
    for (index_t c = 0; c < d; ++c) ss += double(x[r * d + c]) * x[r * d + c];
    const float f = float(1 / std::sqrt(ss));
    for (index_t c = 0; c < d; ++c) x[r * d + c] *= f;
  }
}

inputs& data(index_t b, index_t t) {
  static inputs d;
  if (d.b != b || d.t != t) {
    d = inputs{};
    const auto n = std::size_t(b * t * kH);
    d.q = random_tensor<float>(n * kK, 1);
    d.k = random_tensor<float>(n * kK, 2);
    normalise_rows(d.q.data(), index_t(n), kK);
    normalise_rows(d.k.data(), index_t(n), kK);
    d.v = random_tensor<float>(n * kV, 3);
    d.o = random_tensor<float>(n * kV, 4);
    d.beta = random_tensor<float>(n, 5, 0.05f, 0.95f);
    d.gs = random_tensor<float>(n, 6, -0.2f, -0.001f);
    d.gc = random_tensor<float>(n * kK, 7, -0.2f, -0.001f);
    d.h0 = random_tensor<float>(std::size_t(b * kH * kK * kV), 8, -0.1f, 0.1f);
    d.ht = random_tensor<float>(std::size_t(b * kH * kK * kV), 9);
    d.b = b;
    d.t = t;
  }
  return d;
}

/// One call of the variant; state in h0 (read) and ht (written; == h0 for in-place decode).
void call(variant var, const delta_params& p, inputs& d, index_t b, index_t t, float* ht) {
  using attnkit::make_view;
  const auto q = make_view<const float>(d.q.data(), b, t, kH, kK);
  const auto k = make_view<const float>(d.k.data(), b, t, kH, kK);
  const auto v = make_view<const float>(d.v.data(), b, t, kH, kV);
  const auto beta = make_view<const float>(d.beta.data(), b, t, kH);
  const auto o = make_view(d.o.data(), b, t, kH, kV);
  recurrent_state<float> s;
  s.h0 = make_view<const float>(ht == d.ht.data() ? d.h0.data() : ht, b, kH, kK, kV);
  s.ht = make_view(ht, b, kH, kK, kV);
  switch (var) {
    case variant::delta:
      attnkit::delta_rule(p, q, k, v, beta, o, s);
      break;
    case variant::gated:
      attnkit::gated_delta_rule(p, q, k, v, make_view<const float>(d.gs.data(), b, t, kH), beta, o,
                                s);
      break;
    case variant::kda:
      attnkit::kda(p, q, k, v, make_view<const float>(d.gc.data(), b, t, kH, kK), beta, o, s);
      break;
  }
}

double flop_per_token_head(variant var) {
  const double kv = double(kK) * double(kV);
  return 6 * kv + (var == variant::delta ? 0 : kv);
}

/// FLOP the chunk algorithm executes per token and value head (C = 64, products as GEMMs):
/// K K^T and Q K^T 2*C*K each, the two triangular solves C*(V+K), W S0, Q S0 and the state
/// update 2*K*V each, P u 2*C*V.
double chunk_flop_per_token_head() {
  const double C = 64;
  return 4 * C * kK + C * (kK + kV) + 6.0 * kK * kV + 2 * C * kV;
}

void BM_prefill(benchmark::State& st, variant var, attnkit::algorithm algo) {
  const index_t t = st.range(0);
  const int threads = int(st.range(1));
  inputs& d = data(1, t);
  delta_params p;
  p.algo = algo;
  p.exec = &pool(threads);
  const paired_ceiling fma = paired_loop(
      st, [&] { call(var, p, d, 1, t, d.ht.data()); },
      [&](double seconds) { return run_fma_for(threads, seconds); });
  const double tokens = double(t), flop = tokens * kH * flop_per_token_head(var);
  st.counters["tokens_per_s"] = rate(tokens);
  report_flops(st, flop, threads);
  report_fma_paired(st, flop, fma);
  if (algo == attnkit::algorithm::chunk)
    st.counters["GFLOPS_chunk_executed"] = rate(tokens * kH * chunk_flop_per_token_head() / 1e9);
}

void BM_decode(benchmark::State& st, variant var) {
  const index_t b = st.range(0);
  const int threads = int(st.range(1));
  inputs& d = data(b, 1);
  delta_params p;
  p.exec = &pool(threads);
  const paired_ceiling read = paired_loop(
      st, [&] { call(var, p, d, b, 1, d.h0.data()); },  // in place: ht == h0
      [&](double seconds) { return run_read_for(threads, seconds); });
  const double tokens = double(b), bytes = 2.0 * double(b) * kH * kK * kV * sizeof(float);
  st.counters["tokens_per_s"] = rate(tokens);
  report_flops(st, tokens * kH * flop_per_token_head(var), threads);
  report_bytes(st, bytes, threads);
  report_read_paired(st, bytes, read);
}

const bool registered = [] {
  register_ceiling_benchmarks();
  const struct {
    const char* name;
    variant var;
  } vars[] = {
      {"delta_rule", variant::delta}, {"gated_delta_rule", variant::gated}, {"kda", variant::kda}};
  for (const auto& v : vars) {
    for (const auto algo : {attnkit::algorithm::chunk, attnkit::algorithm::recurrent}) {
      if (algo == attnkit::algorithm::chunk && v.var == variant::kda) continue;  // not yet
      const std::string name = std::string("BM_") + v.name +
                               (algo == attnkit::algorithm::chunk ? "_chunk" : "_recurrent");
      benchmark::RegisterBenchmark(name.c_str(), BM_prefill, v.var, algo)
          ->ArgNames({"seq", "threads"})
          ->ArgsProduct({{1024, 4096}, thread_counts()})
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
    benchmark::RegisterBenchmark((std::string("BM_") + v.name + "_decode").c_str(), BM_decode,
                                 v.var)
        ->ArgNames({"batch", "threads"})
        ->ArgsProduct({{1, 64}, thread_counts()})
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

}  // namespace
