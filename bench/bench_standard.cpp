// SPDX-License-Identifier: Apache-2.0
// Standard softmax attention benchmarks, next to ceilings measured in the
// same binary (bench_common.hpp).
//
//   BM_ceiling_fma|gemm|read/threads:N   FMA-only peak, Eigen 1024^3 float GEMM, 512 MiB read
//   BM_prefill/Hkv/T/threads     B=1, Hq=8, Hkv in {8,2}, D=128, causal, float q/k/v/o,
//                                T in {256, 1024, 4096} (+16384 with ATTNKIT_BENCH_FULL=1)
//       GFLOPS       = 2*Tq*Tk*(Dk+Dv)/2 * B*Hq per call / wall seconds / 1e9 (causal: half area)
//       pct_fma_peak = 100 * GFLOPS / in-binary FMA peak at the same thread count
//       pct_gemm     = 100 * GFLOPS / in-binary Eigen GEMM at the same thread count
//       pct_fma_paired = 100 * GFLOPS / the FMA loop run after every call for as long as the call
//                      (bench_common.hpp, "Paired ceilings"; same drift, same seconds)
//       x_vs_ref     = reference seconds / kernel seconds (T = 256 only)
//   BM_decode_f32|bf16/Hkv/cache/threads   Tq=1, Hq=32, Hkv in {32,8}, D=128, float q/o,
//                                contiguous attnkit::kv_cache of float or bf16 with
//                                cache_seqlens = cache, cache in {4096, 32768} (+131072 with FULL)
//       GBps         = B*Tk*Hkv*(Dk+Dv)*sizeof(elem) per call / wall seconds / 1e9 (K and V read)
//       pct_read_bw  = 100 * GBps / in-binary streaming read at the same thread count
//       pct_read_paired = 100 * GBps / the streaming read run after every call for as long as
//                      the call (DRAM; it also displaces cached data between calls)
//       GFLOPS       = 2*Tk*(Dk+Dv) * Hq per call / wall seconds / 1e9
//       x_vs_ref     = reference seconds / kernel seconds (cache = 4096 only)
//   BM_prefill_ref/Hkv/T:256, BM_decode_ref_f32|bf16/Hkv/cache:4096   attnkit::reference (plain
//                                loops, double accumulation, single-threaded), same counters.
// All times are wall-clock: BM_prefill and BM_decode time the kernel calls only (UseManualTime,
// the paired ceiling runs are excluded), the rest UseRealTime; the kernel runs on an
// attnkit::thread_pool of `threads`.
//
// Running:
//   bench_standard                                   default set (about 2-4 minutes)
//   ATTNKIT_BENCH_FULL=1 bench_standard              adds prefill T=16384 (seconds per call;
//                                                    forced to 1 iteration per run) and the
//                                                    131072-token decode (up to 6 GiB of caches)
//   bench_standard --benchmark_min_time=0.01         smoke pass (CI), well under a minute
//   figures: --benchmark_repetitions=3 --benchmark_report_aggregates_only=true, quote medians;
//   select with --benchmark_filter='BM_decode_bf16/Hkv:8/cache:32768'.
#include <attnkit/softmax/kernel.hpp>
#include <attnkit/softmax/reference.hpp>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "bench_common.hpp"

namespace {

using namespace attnkit_bench;
using attnkit::bf16;

constexpr index_t kHqPrefill = 8, kHqDecode = 32, kD = 128;
constexpr index_t kRefT = 256, kRefCache = 4096;  // shapes of the reference baselines

// ------------------------------------------------------------------------------------------------
// Inputs

/// Prefill inputs of the last shape asked for (one shape alive at a time).
struct prefill_inputs {
  index_t hkv = -1, t = -1;
  buffer<float> q, k, v, o;
};

prefill_inputs& prefill_data(index_t hkv, index_t t) {
  static prefill_inputs d;
  if (d.hkv != hkv || d.t != t) {
    d = prefill_inputs{};
    d.q = random_tensor<float>(std::size_t(t * kHqPrefill * kD), 1);
    d.k = random_tensor<float>(std::size_t(t * hkv * kD), 2);
    d.v = random_tensor<float>(std::size_t(t * hkv * kD), 3);
    d.o = buffer<float>(std::size_t(t * kHqPrefill * kD));
    d.hkv = hkv;
    d.t = t;
  }
  return d;
}

template <class Fn>
void run_prefill(Fn&& fn, prefill_inputs& d, attnkit::executor* ex) {
  const index_t t = d.t, hkv = d.hkv;
  attnkit::softmax_params p;
  p.causal = true;
  p.exec = ex;
  fn(p, attnkit::make_view(static_cast<const float*>(d.q.data()), 1, t, kHqPrefill, kD),
     attnkit::make_view(static_cast<const float*>(d.k.data()), 1, t, hkv, kD),
     attnkit::make_view(static_cast<const float*>(d.v.data()), 1, t, hkv, kD),
     attnkit::make_view(d.o.data(), 1, t, kHqPrefill, kD));
}

/// Decode caches of one element type: K and V buffers sized for the largest registered shape,
/// filled (randomly) only as far as a benchmark needs. A shape [1, cache, Hkv, D] uses a prefix.
template <class KV>
struct decode_cache {
  buffer<KV> k, v;
  std::size_t filled = 0;
};

template <class KV>
decode_cache<KV>& decode_data(std::size_t elems) {
  static decode_cache<KV> c;
  if (c.k.size() < elems) {
    const std::size_t cap = std::size_t(full_mode() ? 131072 : 32768) * kHqDecode * kD;
    c = decode_cache<KV>{};
    c.k = buffer<KV>(std::max(cap, elems));
    c.v = buffer<KV>(std::max(cap, elems));
  }
  if (c.filled < elems) {
    fill_random(c.k.data() + c.filled, elems - c.filled, 21 + c.filled);
    fill_random(c.v.data() + c.filled, elems - c.filled, 22 + c.filled);
    c.filled = elems;
  }
  return c;
}

struct decode_query {
  buffer<float> q{std::size_t(kHqDecode * kD)}, o{std::size_t(kHqDecode * kD)};
  decode_query() { fill_random(q.data(), q.size(), 23); }
};

template <class KV, class Fn>
void run_decode(Fn&& fn, index_t hkv, index_t cache, attnkit::executor* ex) {
  static decode_query dq;
  auto& c = decode_data<KV>(std::size_t(cache * hkv * kD));
  static std::int32_t seqlen;
  seqlen = std::int32_t(cache);
  attnkit::kv_cache<KV> kv;
  kv.k = attnkit::make_view(c.k.data(), 1, cache, hkv, kD);
  kv.v = attnkit::make_view(c.v.data(), 1, cache, hkv, kD);
  kv.seqlens = attnkit::make_view(static_cast<const std::int32_t*>(&seqlen), 1);
  attnkit::softmax_params p;
  p.exec = ex;
  fn(p, attnkit::make_view(static_cast<const float*>(dq.q.data()), 1, 1, kHqDecode, kD), kv,
     attnkit::make_view(dq.o.data(), 1, 1, kHqDecode, kD));
}

struct fast_prefill {
  template <class... A>
  void operator()(A&&... a) const {
    attnkit::standard_attention(std::forward<A>(a)...);
  }
};
struct ref_prefill {
  template <class... A>
  void operator()(A&&... a) const {
    attnkit::reference::standard_attention(std::forward<A>(a)...);
  }
};
struct fast_decode {
  template <class... A>
  void operator()(A&&... a) const {
    attnkit::standard_attention_kvcache(std::forward<A>(a)...);
  }
};
struct ref_decode {
  template <class... A>
  void operator()(A&&... a) const {
    attnkit::reference::standard_attention_kvcache(std::forward<A>(a)...);
  }
};

// Reference timings, measured once per shape (median of 3 calls) for the x_vs_ref ratios.
double ref_prefill_seconds(index_t hkv) {
  static std::map<index_t, double> cache;
  auto it = cache.find(hkv);
  if (it != cache.end()) return it->second;
  auto& d = prefill_data(hkv, kRefT);
  const double s = median_seconds(3, [&] { run_prefill(ref_prefill{}, d, nullptr); });
  return cache[hkv] = s;
}

template <class KV>
double ref_decode_seconds(index_t hkv) {
  static std::map<index_t, double> cache;
  auto it = cache.find(hkv);
  if (it != cache.end()) return it->second;
  const double s =
      median_seconds(3, [&] { run_decode<KV>(ref_decode{}, hkv, kRefCache, nullptr); });
  return cache[hkv] = s;
}

// ------------------------------------------------------------------------------------------------
// Benchmarks

void BM_prefill(benchmark::State& st) {
  const index_t hkv = st.range(0), t = st.range(1);
  const int threads = int(st.range(2));
  const double ref_s = t == kRefT ? ref_prefill_seconds(hkv) : 0;
  auto& d = prefill_data(hkv, t);
  auto& ex = pool(threads);
  const paired_ceiling fma = paired_loop(
      st,
      [&] {
        run_prefill(fast_prefill{}, d, &ex);
        benchmark::DoNotOptimize(d.o.data());
      },
      [&](double seconds) { return run_fma_for(threads, seconds); });
  const double flop = attention_flops(1, kHqPrefill, t, t, kD, kD, true);
  report_flops(st, flop, threads, fma.kernel_seconds, true);
  report_fma_paired(st, flop, fma);
  if (ref_s > 0) report_speedup(st, ref_s, fma.kernel_seconds);
}

void BM_prefill_ref(benchmark::State& st) {
  const index_t hkv = st.range(0), t = st.range(1);
  auto& d = prefill_data(hkv, t);
  const double seconds = wall_loop(st, [&] {
    run_prefill(ref_prefill{}, d, nullptr);
    benchmark::DoNotOptimize(d.o.data());
    benchmark::ClobberMemory();
  });
  report_flops(st, attention_flops(1, kHqPrefill, t, t, kD, kD, true), 1, seconds);
}

template <class KV>
void BM_decode(benchmark::State& st) {
  const index_t hkv = st.range(0), cache = st.range(1);
  const int threads = int(st.range(2));
  const double ref_s = cache == kRefCache ? ref_decode_seconds<KV>(hkv) : 0;
  auto& ex = pool(threads);
  run_decode<KV>(fast_decode{}, hkv, cache, &ex);  // fill + warm
  const paired_ceiling read = paired_loop(
      st, [&] { run_decode<KV>(fast_decode{}, hkv, cache, &ex); },
      [&](double seconds) { return run_read_for(threads, seconds); });
  const double bytes = kv_bytes(1, cache, hkv, kD, kD, sizeof(KV));
  report_bytes(st, bytes, threads, read.kernel_seconds, bytes);
  report_read_paired(st, bytes, read);
  st.counters["GFLOPS"] = rate(attention_flops(1, kHqDecode, 1, cache, kD, kD, false) / 1e9);
  if (ref_s > 0) report_speedup(st, ref_s, read.kernel_seconds);
}

template <class KV>
void BM_decode_ref(benchmark::State& st) {
  const index_t hkv = st.range(0), cache = st.range(1);
  run_decode<KV>(ref_decode{}, hkv, cache, nullptr);
  const double seconds = wall_loop(st, [&] {
    run_decode<KV>(ref_decode{}, hkv, cache, nullptr);
    benchmark::ClobberMemory();
  });
  const double bytes = kv_bytes(1, cache, hkv, kD, kD, sizeof(KV));
  report_bytes(st, bytes, 1, seconds, bytes);
  st.counters["GFLOPS"] = rate(attention_flops(1, kHqDecode, 1, cache, kD, kD, false) / 1e9);
}

bool register_all() {
  register_ceiling_benchmarks();
  const bool full = full_mode();

  auto* pf = benchmark::RegisterBenchmark("BM_prefill", BM_prefill);
  pf->ArgNames({"Hkv", "T", "threads"})->UseManualTime()->Unit(benchmark::kMillisecond);
  pf->ArgsProduct({{8, 2}, {kRefT, 1024, 4096}, thread_counts()});
  if (full) {
    auto* big = benchmark::RegisterBenchmark("BM_prefill", BM_prefill);
    big->ArgNames({"Hkv", "T", "threads"})->UseManualTime()->Unit(benchmark::kMillisecond);
    big->ArgsProduct({{8, 2}, {16384}, thread_counts()})->Iterations(1);
  }

  const std::vector<int64_t> caches =
      full ? std::vector<int64_t>{4096, 32768, 131072} : std::vector<int64_t>{4096, 32768};
  for (auto* b : {benchmark::RegisterBenchmark("BM_decode_f32", BM_decode<float>),
                  benchmark::RegisterBenchmark("BM_decode_bf16", BM_decode<bf16>)}) {
    b->ArgNames({"Hkv", "cache", "threads"})->UseManualTime()->Unit(benchmark::kMicrosecond);
    b->ArgsProduct({{32, 8}, caches, thread_counts()});
  }

  auto* pr = benchmark::RegisterBenchmark("BM_prefill_ref", BM_prefill_ref);
  pr->ArgNames({"Hkv", "T"})->UseRealTime()->Unit(benchmark::kMillisecond);
  pr->ArgsProduct({{8, 2}, {kRefT}});
  for (auto* b : {benchmark::RegisterBenchmark("BM_decode_ref_f32", BM_decode_ref<float>),
                  benchmark::RegisterBenchmark("BM_decode_ref_bf16", BM_decode_ref<bf16>)}) {
    b->ArgNames({"Hkv", "cache"})->UseRealTime()->Unit(benchmark::kMillisecond);
    b->ArgsProduct({{32, 8}, {kRefCache}});
  }
  return true;
}

const bool registered = register_all();

}  // namespace

int main(int argc, char** argv) { return attnkit_bench::bench_main(argc, argv, {}, nullptr); }
