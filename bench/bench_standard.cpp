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
//       working_set_MiB, pct_read_same_size = the K and V bytes, and GBps against reading a buffer
//                      of that size again and again (bench_common.hpp, "Same-size read ceiling")
//   BM_decode_paged_f32|bf16/Hkv/cache/page:16/threads   the same step over an
//                                attnkit::paged_kv_cache of 16-token pages, every page of the
//                                cache once in a shuffled block_table order (same bytes, same
//                                counters)
//       x_vs_contiguous = contiguous seconds / paged seconds, same dtype, shape and threads (when
//                      the contiguous row ran earlier in the process: it is registered first)
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
//   bench_standard --attnkit_shape=Hq:32,Hkv:8,D:128,T:8192   adds a model's shape (also
//       ATTNKIT_BENCH_SHAPE; keys B, Hq, Hkv, D, T, cache, page, see --help):
//       BM_prefill/B/Hq/Hkv/D/T/threads, BM_decode[_paged]_f32|bf16/B/Hq/Hkv/D/cache[/page]/threads
#include <attnkit/softmax/kernel.hpp>
#include <attnkit/softmax/reference.hpp>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "bench_common.hpp"

namespace {

using namespace attnkit_bench;
using attnkit::bf16;

constexpr index_t kHqPrefill = 8, kHqDecode = 32, kD = 128;
constexpr index_t kRefT = 256, kRefCache = 4096;  // shapes of the reference baselines
constexpr index_t kPage = 16;                     // tokens per page of the paged decode rows

/// B sequences, Hq query heads, Hkv kv heads, head dim D (= Dk = Dv); T: prefill tokens
/// (Tq = Tk) or decode cache length.
struct attn_shape {
  index_t B, Hq, Hkv, D, T;
  bool operator<(const attn_shape& o) const {
    return std::tie(B, Hq, Hkv, D, T) < std::tie(o.B, o.Hq, o.Hkv, o.D, o.T);
  }
};

// ------------------------------------------------------------------------------------------------
// Inputs

/// Prefill inputs of the last shape asked for (one shape alive at a time).
struct prefill_inputs {
  attn_shape s{-1, -1, -1, -1, -1};
  buffer<float> q, k, v, o;
};

prefill_inputs& prefill_data(const attn_shape& s) {
  static prefill_inputs d;
  if (d.s < s || s < d.s) {
    d = prefill_inputs{};
    const auto nq = std::size_t(s.B * s.T * s.Hq * s.D), nk = std::size_t(s.B * s.T * s.Hkv * s.D);
    d.q = random_tensor<float>(nq, 1);
    d.k = random_tensor<float>(nk, 2);
    d.v = random_tensor<float>(nk, 3);
    d.o = buffer<float>(nq);
    d.s = s;
  }
  return d;
}

template <class Fn>
void run_prefill(Fn&& fn, prefill_inputs& d, attnkit::executor* ex) {
  const attn_shape& s = d.s;
  attnkit::softmax_params p;
  p.causal = true;
  p.exec = ex;
  fn(p, attnkit::make_view(static_cast<const float*>(d.q.data()), s.B, s.T, s.Hq, s.D),
     attnkit::make_view(static_cast<const float*>(d.k.data()), s.B, s.T, s.Hkv, s.D),
     attnkit::make_view(static_cast<const float*>(d.v.data()), s.B, s.T, s.Hkv, s.D),
     attnkit::make_view(d.o.data(), s.B, s.T, s.Hq, s.D));
}

/// Decode caches of one element type: K and V buffers sized for the largest registered shape,
/// filled (randomly) only as far as a benchmark needs. A shape [B, cache, Hkv, D] uses a prefix,
/// and so do the pages of a paged cache ([pages, P, Hkv, D]: the same bytes, in page order).
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

/// Decode queries and outputs [B, 1, Hq, D] (the largest asked for; a shape uses a prefix) and
/// the cache lengths of the B sequences.
struct decode_query {
  buffer<float> q, o;
  std::vector<std::int32_t> seqlens;
};

decode_query& decode_queries(const attn_shape& s) {
  static decode_query d;
  const auto n = std::size_t(s.B * s.Hq * s.D);
  if (d.q.size() < n) {
    d.q = random_tensor<float>(n, 23);
    d.o = buffer<float>(n);
  }
  d.seqlens.assign(std::size_t(s.B), std::int32_t(s.T));
  return d;
}

/// Pages per sequence of a paged cache of T tokens in pages of P.
index_t pages_per_seq(index_t T, index_t P) { return (T + P - 1) / P; }

/// The block table [B, pages per sequence] of a paged cache: every page of the prefix once, in
/// a shuffled order (a serving engine's pages after some churn), the same for a given shape.
const std::vector<std::int32_t>& block_table(index_t B, index_t pps) {
  static std::map<std::pair<index_t, index_t>, std::vector<std::int32_t>> tables;
  auto& t = tables[{B, pps}];
  if (t.empty()) {
    t.resize(std::size_t(B * pps));
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = std::int32_t(i);
    for (std::size_t i = t.size(); i > 1; --i)  // Fisher-Yates with a fixed seed
      std::swap(t[i - 1], t[mix64(0x5eed + i) % i]);
  }
  return t;
}

/// One decode step (Tq = 1) of B sequences over a contiguous cache of s.T tokens each.
template <class KV, class Fn>
void run_decode(Fn&& fn, const attn_shape& s, attnkit::executor* ex) {
  auto& dq = decode_queries(s);
  auto& c = decode_data<KV>(std::size_t(s.B * s.T * s.Hkv * s.D));
  attnkit::kv_cache<KV> kv;
  kv.k = attnkit::make_view(c.k.data(), s.B, s.T, s.Hkv, s.D);
  kv.v = attnkit::make_view(c.v.data(), s.B, s.T, s.Hkv, s.D);
  kv.seqlens = attnkit::make_view(static_cast<const std::int32_t*>(dq.seqlens.data()), s.B);
  attnkit::softmax_params p;
  p.exec = ex;
  fn(p, attnkit::make_view(static_cast<const float*>(dq.q.data()), s.B, 1, s.Hq, s.D), kv,
     attnkit::make_view(dq.o.data(), s.B, 1, s.Hq, s.D));
}

/// The same step over a paged cache: pages of P tokens in the order of block_table.
template <class KV>
void run_decode_paged(const attn_shape& s, index_t P, attnkit::executor* ex) {
  auto& dq = decode_queries(s);
  const index_t pps = pages_per_seq(s.T, P), pages = s.B * pps;
  auto& c = decode_data<KV>(std::size_t(pages * P * s.Hkv * s.D));
  attnkit::paged_kv_cache<KV> kv;
  kv.k_pages = attnkit::make_view(c.k.data(), pages, P, s.Hkv, s.D);
  kv.v_pages = attnkit::make_view(c.v.data(), pages, P, s.Hkv, s.D);
  kv.block_table = attnkit::make_view(block_table(s.B, pps).data(), s.B, pps);
  kv.seqlens = attnkit::make_view(static_cast<const std::int32_t*>(dq.seqlens.data()), s.B);
  attnkit::softmax_params p;
  p.exec = ex;
  attnkit::standard_attention_kvcache(
      p, attnkit::make_view(static_cast<const float*>(dq.q.data()), s.B, 1, s.Hq, s.D), kv,
      attnkit::make_view(dq.o.data(), s.B, 1, s.Hq, s.D));
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

attn_shape default_prefill(index_t hkv, index_t t) { return {1, kHqPrefill, hkv, kD, t}; }
attn_shape default_decode(index_t hkv, index_t cache) { return {1, kHqDecode, hkv, kD, cache}; }

// Reference timings, measured once per shape (median of 3 calls) for the x_vs_ref ratios.
double ref_prefill_seconds(index_t hkv) {
  static std::map<index_t, double> cache;
  auto it = cache.find(hkv);
  if (it != cache.end()) return it->second;
  auto& d = prefill_data(default_prefill(hkv, kRefT));
  const double s = median_seconds(3, [&] { run_prefill(ref_prefill{}, d, nullptr); });
  return cache[hkv] = s;
}

template <class KV>
double ref_decode_seconds(index_t hkv) {
  static std::map<index_t, double> cache;
  auto it = cache.find(hkv);
  if (it != cache.end()) return it->second;
  const double s = median_seconds(
      3, [&] { run_decode<KV>(ref_decode{}, default_decode(hkv, kRefCache), nullptr); });
  return cache[hkv] = s;
}

// Contiguous decode seconds per call by (element type, shape, threads), for x_vs_contiguous.
std::map<std::tuple<std::size_t, attn_shape, int>, double>& contiguous_seconds() {
  static std::map<std::tuple<std::size_t, attn_shape, int>, double> m;
  return m;
}

// ------------------------------------------------------------------------------------------------
// Benchmark bodies

/// Causal prefill of shape s (Tq = Tk = s.T); x_vs_ref when ref_s > 0.
void prefill_body(benchmark::State& st, const attn_shape& s, int threads, double ref_s) {
  auto& d = prefill_data(s);
  auto& ex = pool(threads);
  const paired_ceiling fma = paired_loop(
      st,
      [&] {
        run_prefill(fast_prefill{}, d, &ex);
        benchmark::DoNotOptimize(d.o.data());
      },
      [&](double seconds) { return run_fma_for(threads, seconds); });
  const double flop = attention_flops(s.B, s.Hq, s.T, s.T, s.D, s.D, true);
  report_flops(st, flop, threads, fma.kernel_seconds, true);
  report_fma_paired(st, flop, fma);
  if (ref_s > 0) report_speedup(st, ref_s, fma.kernel_seconds);
}

/// Decode step of shape s from a contiguous cache (page = 0) or a paged one (pages of `page`
/// tokens); x_vs_ref when ref_s > 0; paged rows: x_vs_contiguous when the contiguous row of the
/// same shape and threads ran earlier.
template <class KV>
void decode_body(benchmark::State& st, const attn_shape& s, index_t page, int threads,
                 double ref_s) {
  auto& ex = pool(threads);
  const auto call = [&] {
    if (page > 0)
      run_decode_paged<KV>(s, page, &ex);
    else
      run_decode<KV>(fast_decode{}, s, &ex);
  };
  call();  // fill + warm
  const paired_ceiling read =
      paired_loop(st, call, [&](double seconds) { return run_read_for(threads, seconds); });
  const double bytes = kv_bytes(s.B, s.T, s.Hkv, s.D, s.D, sizeof(KV));
  report_bytes(st, bytes, threads, read.kernel_seconds, bytes);
  report_read_paired(st, bytes, read);
  st.counters["GFLOPS"] = rate(attention_flops(s.B, s.Hq, 1, s.T, s.D, s.D, false) / 1e9);
  if (ref_s > 0) report_speedup(st, ref_s, read.kernel_seconds);
  const auto key = std::make_tuple(sizeof(KV), s, threads);
  const double per_call = read.kernel_seconds / double(std::max<int64_t>(st.iterations(), 1));
  if (page == 0) {
    contiguous_seconds()[key] = per_call;
  } else {
    const auto it = contiguous_seconds().find(key);
    if (it != contiguous_seconds().end()) st.counters["x_vs_contiguous"] = it->second / per_call;
  }
}

void BM_prefill(benchmark::State& st) {
  const index_t hkv = st.range(0), t = st.range(1);
  prefill_body(st, default_prefill(hkv, t), int(st.range(2)),
               t == kRefT ? ref_prefill_seconds(hkv) : 0);
}

void BM_prefill_ref(benchmark::State& st) {
  auto& d = prefill_data(default_prefill(st.range(0), st.range(1)));
  const double seconds = wall_loop(st, [&] {
    run_prefill(ref_prefill{}, d, nullptr);
    benchmark::DoNotOptimize(d.o.data());
    benchmark::ClobberMemory();
  });
  report_flops(st, attention_flops(1, kHqPrefill, d.s.T, d.s.T, kD, kD, true), 1, seconds);
}

template <class KV>
void BM_decode(benchmark::State& st) {
  const index_t hkv = st.range(0), cache = st.range(1);
  decode_body<KV>(st, default_decode(hkv, cache), 0, int(st.range(2)),
                  cache == kRefCache ? ref_decode_seconds<KV>(hkv) : 0);
}

template <class KV>
void BM_decode_paged(benchmark::State& st) {
  decode_body<KV>(st, default_decode(st.range(0), st.range(1)), st.range(2), int(st.range(3)), 0);
}

template <class KV>
void BM_decode_ref(benchmark::State& st) {
  const attn_shape s = default_decode(st.range(0), st.range(1));
  run_decode<KV>(ref_decode{}, s, nullptr);
  const double seconds = wall_loop(st, [&] {
    run_decode<KV>(ref_decode{}, s, nullptr);
    benchmark::ClobberMemory();
  });
  const double bytes = kv_bytes(1, s.T, s.Hkv, kD, kD, sizeof(KV));
  report_bytes(st, bytes, 1, seconds, bytes);
  st.counters["GFLOPS"] = rate(attention_flops(1, kHqDecode, 1, s.T, kD, kD, false) / 1e9);
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
  // after the contiguous rows: they report x_vs_contiguous against them
  for (auto* b : {benchmark::RegisterBenchmark("BM_decode_paged_f32", BM_decode_paged<float>),
                  benchmark::RegisterBenchmark("BM_decode_paged_bf16", BM_decode_paged<bf16>)}) {
    b->ArgNames({"Hkv", "cache", "page", "threads"})
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    b->ArgsProduct({{32, 8}, caches, {kPage}, thread_counts()});
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

// ------------------------------------------------------------------------------------------------
// Model shapes given by the user

const std::vector<shape_key> kShapeKeys{
    {"B", 1, "sequences (batch)"},
    {"Hq", 32, "query heads"},
    {"Hkv", shape_key::kNoDefault, "kv heads, a divisor of Hq (default: Hq)"},
    {"D", 128, "head dim (Dk = Dv)"},
    {"T", shape_key::kNoDefault, "prefill tokens (causal, Tq = Tk); also the decode cache length"},
    {"cache", shape_key::kNoDefault, "decode cache length (default: T)"},
    {"page", kPage, "tokens per page of the paged decode rows"},
};

attn_shape shape_of(const benchmark::State& st) {
  return {st.range(0), st.range(1), st.range(2), st.range(3), st.range(4)};
}

/// Registers BM_prefill/B/Hq/Hkv/D/T/threads (when T is given) and the four decode rows
/// BM_decode[_paged]_f32|bf16/B/Hq/Hkv/D/cache[/page]/threads.
void register_shape(const user_shape& u) {
  const int64_t B = u.get("B"), Hq = u.get("Hq"), D = u.get("D"), page = u.get("page");
  const int64_t Hkv = u.has("Hkv") ? u.get("Hkv") : Hq;
  if (Hkv > Hq || Hq % Hkv != 0)
    throw u.error(
        "Hkv", "Hq = " + std::to_string(Hq) + " is not a multiple of Hkv = " + std::to_string(Hkv));
  if (!u.has("T") && !u.has("cache"))
    throw shape_error("shape '" + u.text() +
                      "': needs key 'T' (prefill and decode) or key 'cache' (decode only)");
  if (u.has("T")) {
    auto* b = benchmark::RegisterBenchmark("BM_prefill", skip_on_error([](benchmark::State& st) {
                                             prefill_body(st, shape_of(st), int(st.range(5)), 0);
                                           }));
    b->ArgNames({"B", "Hq", "Hkv", "D", "T", "threads"})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    b->ArgsProduct({{B}, {Hq}, {Hkv}, {D}, {u.get("T")}, thread_counts()});
  }
  const int64_t cache = u.has("cache") ? u.get("cache") : u.get("T");
  const auto decode = [](auto kv, bool paged) {
    using KV = decltype(kv);
    return skip_on_error([paged](benchmark::State& st) {
      decode_body<KV>(st, shape_of(st), paged ? st.range(5) : 0, int(st.range(paged ? 6 : 5)), 0);
    });
  };
  for (auto* b : {benchmark::RegisterBenchmark("BM_decode_f32", decode(float{}, false)),
                  benchmark::RegisterBenchmark("BM_decode_bf16", decode(bf16{}, false))}) {
    b->ArgNames({"B", "Hq", "Hkv", "D", "cache", "threads"})
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    b->ArgsProduct({{B}, {Hq}, {Hkv}, {D}, {cache}, thread_counts()});
  }
  for (auto* b : {benchmark::RegisterBenchmark("BM_decode_paged_f32", decode(float{}, true)),
                  benchmark::RegisterBenchmark("BM_decode_paged_bf16", decode(bf16{}, true))}) {
    b->ArgNames({"B", "Hq", "Hkv", "D", "cache", "page", "threads"})
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    b->ArgsProduct({{B}, {Hq}, {Hkv}, {D}, {cache}, {page}, thread_counts()});
  }
}

}  // namespace

int main(int argc, char** argv) {
  return attnkit_bench::bench_main(argc, argv, kShapeKeys, register_shape);
}
