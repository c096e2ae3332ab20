// SPDX-License-Identifier: Apache-2.0
// Linear-attention family benchmarks (issue 3, "Benchmarks"), next to ceilings measured in the same
// binary (bench_common.hpp).
//
//   BM_ceiling_fma|gemm|read/threads:N   FMA-only peak, Eigen 1024^3 float GEMM, 512 MiB read
//   BM_<variant>_<algo>/seq:T/threads:N  variant in {linear_attn, simple_gla, gla}, algo in
//                                {chunk, recurrent}; B=1, H=16, K=V=128, float q/k/v/o/g, float
//                                state, h0 given and ht written, chunk size 64, T in {1024, 4096,
//                                16384}
//       tokens_per_s        = B*T per call / wall seconds
//       GFLOPS_nominal_4KV  = 4*K*V per token per head (k v^T update 2KV + S^T q read-out 2KV;
//                             gates and the chunk algorithm's extra work NOT counted): the same
//                             work unit for every variant and algorithm, so it compares them
//       GFLOPS              = FLOP the algorithm executes per token per head:
//                             recurrent 4*K*V (+ K*V decay multiplies for simple_gla/gla);
//                             chunk     4*K*V + (C+1)*(K+V) with C = 64 (Q S and the state update
//                             K^T V: 2KV each; the causal triangles of Q K^T and A V: C(C+1)/2
//                             dot products of length K and V per chunk); gate exponentials and
//                             element-wise decays not counted
//       pct_fma_peak        = 100 * GFLOPS / in-binary FMA peak at the same thread count
//       pct_fma_paired      = 100 * GFLOPS / the FMA loop run after every call for as long as
//                             the call (bench_common.hpp, "Paired ceilings")
//   BM_<variant>_decode/batch:B/threads:N   one token (T=1) per sequence for B sequences,
//                                recurrent algorithm, state [B,16,128,128] float updated in place
//                                (ht == h0)
//       GBps        = 2 * B*H*K*V*4 bytes per call (one read + one write of the state) / seconds
//       pct_read_bw = 100 * GBps / in-binary streaming read bandwidth (DRAM, 512 MiB buffer)
//       pct_read_paired = 100 * GBps / the streaming read run after every call for as long as the
//                     call (DRAM; it also displaces cached data between calls)
//       tokens_per_s, GFLOPS as above (recurrent formula)
// All times are wall-clock: the kernel calls only (UseManualTime; the paired ceiling runs are
// excluded); kernels run on an attnkit::thread_pool of `threads`.
//
// Running:
//   bench_linear --benchmark_repetitions=3 --benchmark_report_aggregates_only=true  (quote medians)
//   bench_linear --benchmark_min_time=0.01                                          (smoke pass)
#include <attnkit/linear.hpp>
#include <cstdint>

#include "bench_common.hpp"

namespace {

using namespace attnkit_bench;
using attnkit::cview;
using attnkit::algorithm;
using attnkit::linear_params;
using attnkit::recurrent_state;
using attnkit::tensor_view;

constexpr index_t kH = 16, kK = 128, kV = 128, kC = 64;

enum class variant { linear, simple, gla };

/// Inputs of the last prefill shape asked for (one shape alive at a time).
struct inputs {
  index_t b = -1, t = -1;
  buffer<float> q, k, v, o, gs, gc, h0, ht;
};

inputs& data(index_t b, index_t t) {
  static inputs d;
  if (d.b != b || d.t != t) {
    d = inputs{};
    const auto n = std::size_t(b * t * kH);
    d.q = random_tensor<float>(n * kK, 1, -0.5f, 0.5f);
    d.k = random_tensor<float>(n * kK, 2, -0.5f, 0.5f);
    d.v = random_tensor<float>(n * kV, 3);
    d.o = random_tensor<float>(n * kV, 4);
    d.gs = random_tensor<float>(n, 5, -0.2f, -0.001f);
    d.gc = random_tensor<float>(n * kK, 6, -0.2f, -0.001f);
    d.h0 = random_tensor<float>(std::size_t(b * kH * kK * kV), 7, -0.1f, 0.1f);
    d.ht = random_tensor<float>(std::size_t(b * kH * kK * kV), 8);
    d.b = b;
    d.t = t;
  }
  return d;
}

/// One call of the variant; state in h0 (read) and ht (written; == h0 for in-place decode).
void call(variant var, const linear_params& p, inputs& d, index_t b, index_t t, float* ht) {
  using attnkit::make_view;
  const auto q = make_view<const float>(d.q.data(), b, t, kH, kK);
  const auto k = make_view<const float>(d.k.data(), b, t, kH, kK);
  const auto v = make_view<const float>(d.v.data(), b, t, kH, kV);
  const auto o = make_view(d.o.data(), b, t, kH, kV);
  recurrent_state<float> s;
  s.h0 = make_view<const float>(ht == d.ht.data() ? d.h0.data() : ht, b, kH, kK, kV);
  s.ht = make_view(ht, b, kH, kK, kV);
  switch (var) {
    case variant::linear:
      attnkit::linear_attn(p, q, k, v, o, s);
      break;
    case variant::simple:
      attnkit::simple_gla(p, q, k, v, make_view<const float>(d.gs.data(), b, t, kH), o, s);
      break;
    case variant::gla:
      attnkit::gla(p, q, k, v, make_view<const float>(d.gc.data(), b, t, kH, kK), o, s);
      break;
  }
}

double exec_flop_per_token_head(variant var, algorithm algo) {
  const double kv = double(kK) * double(kV);
  if (algo == algorithm::recurrent) return 4 * kv + (var == variant::linear ? 0 : kv);
  return 4 * kv + double(kC + 1) * double(kK + kV);
}

void BM_prefill(benchmark::State& st, variant var, algorithm algo) {
  const index_t t = st.range(0);
  const int threads = int(st.range(1));
  inputs& d = data(1, t);
  linear_params p;
  p.algo = algo;
  p.exec = &pool(threads);
  const paired_ceiling fma = paired_loop(
      st, [&] { call(var, p, d, 1, t, d.ht.data()); },
      [&](double seconds) { return run_fma_for(threads, seconds); });
  const double tokens = double(t), flop = tokens * kH * exec_flop_per_token_head(var, algo);
  st.counters["tokens_per_s"] = rate(tokens);
  st.counters["GFLOPS_nominal_4KV"] = rate(tokens * kH * 4.0 * kK * kV / 1e9);
  report_flops(st, flop, threads);
  report_fma_paired(st, flop, fma);
}

void BM_decode(benchmark::State& st, variant var) {
  const index_t b = st.range(0);
  const int threads = int(st.range(1));
  inputs& d = data(b, 1);
  linear_params p;
  p.algo = algorithm::recurrent;
  p.exec = &pool(threads);
  const paired_ceiling read = paired_loop(
      st, [&] { call(var, p, d, b, 1, d.h0.data()); },  // in place: ht == h0
      [&](double seconds) { return run_read_for(threads, seconds); });
  const double tokens = double(b), bytes = 2.0 * double(b) * kH * kK * kV * sizeof(float);
  st.counters["tokens_per_s"] = rate(tokens);
  report_flops(st, tokens * kH * exec_flop_per_token_head(var, algorithm::recurrent), threads);
  report_bytes(st, bytes, threads);
  report_read_paired(st, bytes, read);
}

const bool registered = [] {
  register_ceiling_benchmarks();
  const struct {
    const char* name;
    variant var;
  } vars[] = {
      {"linear_attn", variant::linear}, {"simple_gla", variant::simple}, {"gla", variant::gla}};
  for (const auto& v : vars) {
    for (const auto algo : {algorithm::chunk, algorithm::recurrent}) {
      const std::string name =
          std::string("BM_") + v.name + (algo == algorithm::chunk ? "_chunk" : "_recurrent");
      benchmark::RegisterBenchmark(name.c_str(), BM_prefill, v.var, algo)
          ->ArgNames({"seq", "threads"})
          ->ArgsProduct({{1024, 4096, 16384}, thread_counts()})
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
