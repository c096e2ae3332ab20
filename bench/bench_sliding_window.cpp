// SPDX-License-Identifier: Apache-2.0
// Sliding-window attention benchmarks, next to ceilings measured in the same binary
// (bench_common.hpp) and standard causal attention of the same shape.
//
//   BM_window_prefill/W/T/threads   B=1, Hq=8, Hkv=2, D=128, float, causal, the model window W
//                                   (sliding_window_of_model(W): W keys per query, window_left
//                                   W - 1), W in {128, 1024, 4096}, T in {4096, 8192, 16384, 65536}
//       GFLOPS       = 2*(Dk+Dv)*Hq * visited pairs / wall seconds / 1e9, visited pairs =
//                      sum over queries of min(pos + 1, W) (what the window lets a query see)
//       pct_fma_peak = 100 * GFLOPS / in-binary FMA peak at the same thread count
//       pct_fma_paired = 100 * GFLOPS / the FMA loop run after every call for as long as the call
//       us_per_token = wall microseconds per query token (flat in T when work is bounded by W)
//       x_vs_causal  = BM_causal_prefill seconds / this (same T and threads; T <= 16384)
//   BM_causal_prefill/T/threads     standard causal attention, same shape, T <= 16384
//   BM_window_decode/W:1024/pos/threads   Tq=1, Hq=8, Hkv=2, D=128, float, one decode step at
//                                   position pos in {8192, 65536, 1048576} from a ring cache of
//                                   W + 4 sinks + 1 slots (4 token sinks)
//       GBps, pct_read_bw = bytes of the window and sink rows read (W + 4 tokens of K and V) per
//                      call / wall seconds, and against the in-binary streaming read
//       working_set_MiB, pct_read_same_size = those bytes, and GBps against reading a buffer of
//                      that size again and again (the ring stays in cache: bench_common.hpp)
//       us_per_token = wall microseconds per decode step; cache_bytes = the ring's bytes (constant
//                      in pos)
// All times are wall-clock (UseManualTime; the paired ceiling runs are excluded).
//
// Running:
//   bench_sliding_window                                      everything (a few minutes)
//   bench_sliding_window
//   --benchmark_filter='W:1024/T:(8192|65536)/threads:2|causal.*16384/threads:2' figures:
//   --benchmark_repetitions=3 --benchmark_report_aggregates_only=true, quote medians.
#include <attnkit/softmax/kernel.hpp>
#include <cstdint>
#include <map>

#include "bench_common.hpp"

namespace {

using namespace attnkit_bench;

constexpr index_t kHq = 8, kHkv = 2, kD = 128, kSinks = 4;

struct prefill_inputs {
  index_t t = -1;
  buffer<float> q, k, v, o;
};

prefill_inputs& prefill_data(index_t t) {
  static prefill_inputs d;
  if (d.t != t) {
    d = prefill_inputs{};
    d.q = random_tensor<float>(std::size_t(t * kHq * kD), 1);
    d.k = random_tensor<float>(std::size_t(t * kHkv * kD), 2);
    d.v = random_tensor<float>(std::size_t(t * kHkv * kD), 3);
    d.o = buffer<float>(std::size_t(t * kHq * kD));
    d.t = t;
  }
  return d;
}

/// One prefill call: the model window W (0: standard causal attention).
void run_prefill(prefill_inputs& d, index_t W, attnkit::executor* ex) {
  const index_t t = d.t;
  attnkit::softmax_params p;
  if (W > 0) {
    p = attnkit::sliding_window_of_model(W);
  } else {
    p.causal = true;
  }
  p.exec = ex;
  const auto q = attnkit::make_view(static_cast<const float*>(d.q.data()), 1, t, kHq, kD);
  const auto k = attnkit::make_view(static_cast<const float*>(d.k.data()), 1, t, kHkv, kD);
  const auto v = attnkit::make_view(static_cast<const float*>(d.v.data()), 1, t, kHkv, kD);
  const auto o = attnkit::make_view(d.o.data(), 1, t, kHq, kD);
  if (W > 0)
    attnkit::sliding_window_attention(p, q, k, v, o);
  else
    attnkit::standard_attention(p, q, k, v, o);
}

/// Query-key pairs a causal window of W keys visits over T queries.
double window_pairs(index_t T, index_t W) {
  const double w = double(std::min(W, T));
  return w * (w + 1) / 2 + double(T - std::min(W, T)) * w;
}

// Causal seconds per (T, threads), measured by BM_causal_prefill, for x_vs_causal.
std::map<std::pair<index_t, int>, double>& causal_seconds() {
  static std::map<std::pair<index_t, int>, double> m;
  return m;
}

/// The benchmark loop of one prefill shape (model window W, 0 = causal): records the paired
/// FMA ceiling and returns the mean seconds per call.
double timed_prefill(benchmark::State& st, index_t W, index_t t, int threads, double flop) {
  auto& d = prefill_data(t);
  auto& ex = pool(threads);
  double seconds = 0;
  std::int64_t calls = 0;
  const paired_ceiling fma = paired_loop(
      st,
      [&] {
        const double t0 = now_seconds();
        run_prefill(d, W, &ex);
        seconds += now_seconds() - t0;
        ++calls;
        benchmark::DoNotOptimize(d.o.data());
      },
      [&](double s) { return run_fma_for(threads, s); });
  report_flops(st, flop, threads, fma.kernel_seconds);
  report_fma_paired(st, flop, fma);
  const double per_call = seconds / double(std::max<std::int64_t>(calls, 1));
  st.counters["us_per_token"] = per_call / double(t) * 1e6;
  return per_call;
}

void BM_window_prefill(benchmark::State& st) {
  const index_t W = st.range(0), t = st.range(1);
  const int threads = int(st.range(2));
  const double per_call =
      timed_prefill(st, W, t, threads, 2.0 * double(2 * kD) * double(kHq) * window_pairs(t, W));
  const auto c = causal_seconds().find({t, threads});
  if (c != causal_seconds().end()) st.counters["x_vs_causal"] = c->second / per_call;
}

void BM_causal_prefill(benchmark::State& st) {
  const index_t t = st.range(0);
  const int threads = int(st.range(1));
  causal_seconds()[{t, threads}] =
      timed_prefill(st, 0, t, threads, attention_flops(1, kHq, t, t, kD, kD, true));
}

/// A ring cache of W + kSinks + 1 slots (random contents) and one query row.
struct decode_inputs {
  index_t W = -1;
  buffer<float> k, v, q, o;
};

decode_inputs& decode_data(index_t W) {
  static decode_inputs d;
  if (d.W != W) {
    const index_t cap = W + kSinks + 1;
    d = decode_inputs{};
    d.k = random_tensor<float>(std::size_t(cap * kHkv * kD), 11);
    d.v = random_tensor<float>(std::size_t(cap * kHkv * kD), 12);
    d.q = random_tensor<float>(std::size_t(kHq * kD), 13);
    d.o = buffer<float>(std::size_t(kHq * kD));
    d.W = W;
  }
  return d;
}

void BM_window_decode(benchmark::State& st) {
  const index_t W = st.range(0), pos = st.range(1);
  const int threads = int(st.range(2));
  auto& d = decode_data(W);
  auto& ex = pool(threads);
  const index_t cap = W + kSinks + 1;
  static std::int32_t seqlen;
  seqlen = std::int32_t(pos);  // the new token's position: pos tokens came before it
  attnkit::ring_kv_cache<float> ring;
  ring.k = attnkit::make_view(d.k.data(), 1, cap, kHkv, kD);
  ring.v = attnkit::make_view(d.v.data(), 1, cap, kHkv, kD);
  ring.seqlens = attnkit::make_view(static_cast<const std::int32_t*>(&seqlen), 1);
  ring.n_sink = kSinks;
  attnkit::softmax_params p = attnkit::sliding_window_of_model(W);
  p.n_sink = kSinks;
  p.exec = &ex;
  // the query at position pos - 1 (the last cached token): W window keys and the sinks
  const auto q = attnkit::make_view(static_cast<const float*>(d.q.data()), 1, 1, kHq, kD);
  const auto o = attnkit::make_view(d.o.data(), 1, 1, kHq, kD);
  double seconds = 0;
  std::int64_t calls = 0;
  const paired_ceiling read = paired_loop(
      st,
      [&] {
        const double t0 = now_seconds();
        attnkit::sliding_window_attention_kvcache(p, q, ring, o);
        seconds += now_seconds() - t0;
        ++calls;
      },
      [&](double s) { return run_read_for(threads, s); });
  const double bytes = kv_bytes(1, W + kSinks, kHkv, kD, kD, sizeof(float));
  report_bytes(st, bytes, threads, read.kernel_seconds, bytes);
  report_read_paired(st, bytes, read);
  st.counters["us_per_token"] = seconds / double(std::max<std::int64_t>(calls, 1)) * 1e6;
  st.counters["cache_bytes"] = double(2 * cap * kHkv * kD) * double(sizeof(float));
}

bool register_all() {
  register_ceiling_benchmarks();
  // causal first: the window benchmarks report x_vs_causal against it
  auto* c = benchmark::RegisterBenchmark("BM_causal_prefill", BM_causal_prefill);
  c->ArgNames({"T", "threads"})->UseManualTime()->Unit(benchmark::kMillisecond);
  c->ArgsProduct({{4096, 8192, 16384}, thread_counts()});
  auto* w = benchmark::RegisterBenchmark("BM_window_prefill", BM_window_prefill);
  w->ArgNames({"W", "T", "threads"})->UseManualTime()->Unit(benchmark::kMillisecond);
  w->ArgsProduct({{128, 1024, 4096}, {4096, 8192, 16384, 65536}, thread_counts()});
  auto* dec = benchmark::RegisterBenchmark("BM_window_decode", BM_window_decode);
  dec->ArgNames({"W", "pos", "threads"})->UseManualTime()->Unit(benchmark::kMicrosecond);
  dec->ArgsProduct({{1024}, {8192, 65536, 1048576}, thread_counts()});
  return true;
}

const bool registered = register_all();

}  // namespace

int main(int argc, char** argv) { return attnkit_bench::bench_main(argc, argv, {}, nullptr); }
