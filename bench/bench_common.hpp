// SPDX-License-Identifier: Apache-2.0
// Shared helpers for every attnkit benchmark (bench/bench_*.cpp): machine ceilings measured in the
// same binary, cached thread pools, random tensors, FLOP/byte formulas, and counter helpers.
//
// Ceilings (each measured ONCE per process per thread count, on first use: 9 runs, fastest):
//   fma_peak_gflops(n)  FMA-only loop on n threads: kFmaAcc independent accumulators of
//                       batch<float> (8 lanes on AVX2) per thread, acc = fma(acc, m, a).
//                       FLOP = 2 (mul+add) * lanes * kFmaAcc * steps per thread.
//                       GFLOP/s = sum over threads of FLOP / wall seconds / 1e9.
//   gemm_gflops(n)      Eigen float GEMM C(N,N) = A(N,N) * B(N,N), N = kGemmN, .noalias().
//                       Eigen is single-threaded here (no OpenMP); for n threads the columns of
//                       C are split into n blocks run on the pool (each block an independent
//                       single-threaded Eigen GEMM). FLOP = 2 * N^3. GFLOP/s = FLOP / wall / 1e9.
//   read_bw_gbps(n)     Streaming read: vectorised sum over a kReadBytes (512 MiB, >> 32 MiB L3)
//                       float buffer, split in kReadChunks chunks handed to n threads (each
//                       thread reads about 1/n of it). GB/s = bytes / wall seconds / 1e9.
// Benchmarks report their rate next to these as percentages (counter names are project-wide):
//   pct_fma_peak = 100 * (FLOP / s) / fma_peak(threads)
//   pct_gemm     = 100 * (FLOP / s) / gemm(threads)
//   pct_read_bw  = 100 * (bytes / s) / read_bw(threads)
// All rates are per wall-clock second: register benchmarks with ->UseRealTime() and time the loop
// with wall_loop, or ->UseManualTime() with paired_loop below (CPU time of the calling thread would
// overstate multi-threaded rates). GFLOPS, GBps and the like are Google Benchmark rate counters
// (printed with "/s"); percentages and ratios are plain counters computed here from the same
// seconds Google Benchmark divides its rates by (the loops above return them), so they print
// without a unit and keep the value a rate counter would have.
//
// Same-size read ceiling (pct_read_same_size). A working set smaller than the caches (a
// recurrent state, a sliding-window ring, a short KV cache) is read faster than DRAM allows, so
// pct_read_bw can exceed 100. read_bw_same_size_gbps(bytes, n) reads a buffer of the working
// set's size again and again (from wherever it stays), measured once per size and thread count:
//   pct_read_same_size = 100 * (bytes / s) / read_bw_same_size(working set, threads)
// with working_set_MiB beside it.
//
// Paired ceilings (pct_fma_paired, pct_read_paired). The machines this project is measured on are
// shared VMs whose FMA throughput and memory bandwidth drift within seconds (one of them: the same
// 2-thread streaming read gave 37 to 55 GB/s over 8 consecutive runs), so a kernel's median
// against a once-measured best is off by that drift. paired_loop times the kernel (manual time)
// and, after every call, runs the ceiling for about as long as the call took, timed apart and
// excluded from the reported time:
//   pct_fma_paired  = 100 * (kernel FLOP / kernel s) / (FMA-loop FLOP / FMA-loop s)
//   pct_read_paired = 100 * (kernel bytes / kernel s) / (read bytes / read s)
// both summed over the same iterations. The paired read streams 2 MiB chunks of the read buffer
// (at least two per thread) from a position that rotates through all 512 MiB, so it always reads
// from DRAM; it also displaces cached data between kernel calls (as other layers would).
//
// The ceilings are also benchmarks of their own: call register_ceiling_benchmarks() once (e.g.
// from a static initializer) to get BM_ceiling_fma/threads:N, BM_ceiling_gemm/threads:N and
// BM_ceiling_read/threads:N.
//
// Model shapes (bench_main, the main() of every program): ATTNKIT_BENCH_SHAPE="Hq:32,Hkv:8,D:128"
// and/or --attnkit_shape=... (removed from argv before benchmark::Initialize; several shapes:
// ';' between them or the flag repeated) add benchmarks of that shape beside the default ones,
// named BM_<what>/key:value/.../threads:N with every key the benchmark uses. Each program lists
// the keys it accepts (shape_key); unknown keys and bad values stop the program with a message
// naming the key.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <attnkit/core/executor.hpp>
#include <attnkit/core/simd.hpp>
#include <attnkit/core/types.hpp>
#include <attnkit/core/variants.hpp>

namespace attnkit_bench {

using attnkit::index_t;
using fbatch = attnkit::simd::batch<float>;
constexpr index_t kLanes = attnkit::simd::lanes<float>;

// ------------------------------------------------------------------------------------------------
// Environment

/// ATTNKIT_BENCH_FULL=1 registers the largest shapes (seconds per iteration, GiB of memory).
inline bool full_mode() {
  const char* s = std::getenv("ATTNKIT_BENCH_FULL");
  return s && *s && std::strcmp(s, "0") != 0;
}

/// ATTNKIT_BENCH_HUGEPAGES=1 backs large bench buffers with transparent huge pages
/// (madvise(MADV_HUGEPAGE), when the kernel's THP mode is "madvise" or "always"). Off by default:
/// the figures are for ordinary 4 KiB pages, as most callers' memory is.
inline bool hugepages() {
  const char* s = std::getenv("ATTNKIT_BENCH_HUGEPAGES");
  return s && *s && std::strcmp(s, "0") != 0;
}

/// Thread counts benchmarked: 1 and 2 (this project's reference machine has 2 cores).
inline std::vector<int64_t> thread_counts() { return {1, 2}; }

/// One cached pool per thread count (threads = 1 runs inline on the calling thread).
inline attnkit::thread_pool& pool(int threads) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<attnkit::thread_pool>> pools;
  std::lock_guard<std::mutex> lk(mu);
  auto& p = pools[threads];
  if (!p) p = std::make_unique<attnkit::thread_pool>(threads);
  return *p;
}

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// Median of `reps` timings (seconds) of f().
template <class F>
double median_seconds(int reps, F&& f) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_seconds();
    f();
    t.push_back(now_seconds() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// ------------------------------------------------------------------------------------------------
// Formulas

/// Attention FLOP: 2 * Tq * Tk * (Dk + Dv) per (batch, query head) -- one multiply
/// and one add per element of S = QK^T (Dk) and of O = PV (Dv) -- halved when causal (the score
/// area of a square causal mask; exact for Tq = Tk up to the diagonal's T/2 term). Exp, max and
/// rescaling are not counted.
inline double attention_flops(index_t B, index_t Hq, index_t Tq, index_t Tk, index_t Dk, index_t Dv,
                              bool causal) {
  const double f = double(B) * double(Hq) * double(Tq) * double(Tk) *
                   attnkit::variant_by_name("softmax").nominal_flop(Dk, Dv);
  return causal ? f / 2 : f;
}

/// Bytes of K and V a decode step must read from the cache: B * Tk * Hkv * (Dk + Dv) *
/// sizeof(elem).
inline double kv_bytes(index_t B, index_t Tk, index_t Hkv, index_t Dk, index_t Dv,
                       std::size_t elem_bytes) {
  return double(B) * double(Tk) * double(Hkv) *
         attnkit::variant_by_name("softmax").decode_bytes(Dk, Dv, elem_bytes);
}

// ------------------------------------------------------------------------------------------------
// Random tensors (deterministic: value i depends only on (seed, i), filled in parallel)

inline std::uint64_t mix64(std::uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// Fills p[0, n) with uniform values in [lo, hi) converted to T (float, double, bf16, fp16).
template <class T>
void fill_random(T* p, std::size_t n, std::uint64_t seed, float lo = -1.f, float hi = 1.f,
                 int threads = 2) {
  constexpr std::size_t chunk = std::size_t(1) << 20;
  const std::size_t nchunks = (n + chunk - 1) / chunk;
  const std::uint64_t s = mix64(seed);
  pool(threads).parallel_for(index_t(nchunks), [&](index_t c) {
    const std::size_t b = std::size_t(c) * chunk, e = std::min(n, b + chunk);
    for (std::size_t i = b; i < e; ++i) {
      const std::uint64_t r = mix64(s ^ (i * 0x2545f4914f6cdd1dull));
      const float u = float(r >> 40) * (1.0f / 16777216.0f);  // [0, 1)
      p[i] = attnkit::from_compute<T>(lo + (hi - lo) * u);
    }
  });
}

/// A 64-byte aligned owning buffer of n elements of a trivially copyable T, left uninitialised
/// (pages are only touched when filled, so a large buffer costs nothing until used).
template <class T>
class buffer {
  static_assert(std::is_trivially_copyable_v<T>, "attnkit_bench::buffer: trivial types only");
  struct deleter {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, deleter> p_;
  std::size_t n_ = 0;

 public:
  buffer() = default;
  explicit buffer(std::size_t n) : n_(n) {
    const std::size_t bytes = std::max<std::size_t>(64, (n * sizeof(T) + 63) / 64 * 64);
    const bool huge = hugepages() && bytes >= (std::size_t(2) << 20);
    const std::size_t align = huge ? std::size_t(2) << 20 : 64;
    p_.reset(static_cast<T*>(std::aligned_alloc(align, (bytes + align - 1) / align * align)));
    if (!p_) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    if (huge) madvise(p_.get(), (bytes + align - 1) / align * align, MADV_HUGEPAGE);
#endif
  }
  T* data() { return p_.get(); }
  const T* data() const { return p_.get(); }
  std::size_t size() const { return n_; }
};

/// A random tensor of n elements (uniform in [lo, hi)).
template <class T>
buffer<T> random_tensor(std::size_t n, std::uint64_t seed, float lo = -1.f, float hi = 1.f) {
  buffer<T> b(n);
  fill_random(b.data(), n, seed, lo, hi);
  return b;
}

// ------------------------------------------------------------------------------------------------
// Ceiling kernels

/// Escape hatch: the optimiser must assume `p` is read.
template <class T>
inline void escape(T* p) {
  asm volatile("" : : "g"(p) : "memory");
}

constexpr int kFmaAcc = 12;  // 12 ymm accumulators (> 2 pipes x 4-cycle latency = 8 in flight),
                             // + multiplier + addend = 14 of the 16 ymm registers: no spills
constexpr index_t kFmaSteps = 1 << 20;  // steps per work item: 12*8*2*2^20 = 201 MFLOP
constexpr index_t kFmaItemsPerThread = 4;

/// One FMA work item: kFmaSteps dependent steps on each of kFmaAcc independent accumulators.
/// Returns the FLOP executed. The multiplier and addend come through volatiles and the result is
/// escaped, so nothing can be folded.
__attribute__((noinline)) inline double fma_item(index_t steps) {
  volatile float vm = 0.999999f, va = 1e-6f;
  const fbatch m = fbatch(static_cast<float>(vm)), a = fbatch(static_cast<float>(va));
  fbatch acc[kFmaAcc];
  ATTNKIT_UNROLL for (int i = 0; i < kFmaAcc; ++i) acc[i] = fbatch(float(i) * 0.01f);
  for (index_t s = 0; s < steps; ++s) {
    ATTNKIT_UNROLL for (int i = 0; i < kFmaAcc; ++i) acc[i] = xsimd::fma(acc[i], m, a);
  }
  fbatch sum = acc[0];
  ATTNKIT_UNROLL for (int i = 1; i < kFmaAcc; ++i) sum += acc[i];
  alignas(64) float out[kLanes];
  sum.store_aligned(out);
  escape(out);
  return 2.0 * double(kLanes) * kFmaAcc * double(steps);
}

/// Runs the FMA loop on `threads` threads; returns FLOP per call.
inline double run_fma(int threads) {
  const index_t items = kFmaItemsPerThread * threads;
  pool(threads).parallel_for(items, [&](index_t) { fma_item(kFmaSteps); });
  return 2.0 * double(kLanes) * kFmaAcc * double(kFmaSteps) * double(items);
}

constexpr index_t kGemmN = 1024;

struct gemm_data {
  Eigen::MatrixXf a, b, c;
  gemm_data() : a(kGemmN, kGemmN), b(kGemmN, kGemmN), c(kGemmN, kGemmN) {
    fill_random(a.data(), std::size_t(a.size()), 11);
    fill_random(b.data(), std::size_t(b.size()), 12);
    c.setZero();
  }
};
inline gemm_data& gemm_inputs() {
  static gemm_data d;
  return d;
}

/// C = A * B (Eigen, column blocks of C on the pool); returns FLOP per call.
inline double run_gemm(int threads) {
  auto& d = gemm_inputs();
  const index_t nb = threads;
  pool(threads).parallel_for(nb, [&](index_t i) {
    const index_t c0 = kGemmN * i / nb, c1 = kGemmN * (i + 1) / nb;
    d.c.middleCols(c0, c1 - c0).noalias() = d.a * d.b.middleCols(c0, c1 - c0);
  });
  escape(d.c.data());
  return 2.0 * double(kGemmN) * double(kGemmN) * double(kGemmN);
}

constexpr std::size_t kReadBytes = std::size_t(512) << 20;  // 512 MiB >> L3 (32 MiB)
constexpr index_t kReadChunks = 64;                         // 8 MiB each

inline buffer<float>& read_buffer() {
  static buffer<float> b = [] {
    buffer<float> x(kReadBytes / sizeof(float));
    fill_random(x.data(), x.size(), 13);
    return x;
  }();
  return b;
}

/// Sums n floats with 8 independent vector accumulators (loads only, no stores).
__attribute__((noinline)) inline float read_sum(const float* p, std::size_t n) {
  fbatch s[8];
  ATTNKIT_UNROLL for (int k = 0; k < 8; ++k) s[k] = fbatch(0.f);
  std::size_t i = 0;
  for (; i + 8 * kLanes <= n; i += 8 * kLanes) {
    ATTNKIT_UNROLL for (int k = 0; k < 8; ++k) s[k] += fbatch::load_aligned(p + i + k * kLanes);
  }
  ATTNKIT_UNROLL for (int k = 1; k < 8; ++k) s[0] += s[k];
  float r = attnkit::simd::reduce_add(s[0]);
  for (; i < n; ++i) r += p[i];
  return r;
}

/// Streams the whole read buffer on `threads` threads; returns bytes read per call.
inline double run_read(int threads) {
  auto& b = read_buffer();
  const std::size_t per = b.size() / std::size_t(kReadChunks);
  std::vector<float> sums(static_cast<std::size_t>(kReadChunks));
  pool(threads).parallel_for(kReadChunks, [&](index_t c) {
    sums[std::size_t(c)] = read_sum(b.data() + std::size_t(c) * per, per);
  });
  escape(sums.data());
  return double(per) * double(kReadChunks) * sizeof(float);
}

// ------------------------------------------------------------------------------------------------
// Cached ceilings (measured once per process and thread count: 1 warm-up + 9 runs, fastest)

// A ceiling is the best the machine does, and noise (other tenants, frequency dips) only lowers a
// run, so the cached value is the fastest of 9 runs (after a warm-up). Percentages against it are
// therefore conservative; the BM_ceiling_* rows report the usual per-repetition figures.
template <class Run>
double measure_rate(Run run, int threads) {
  run(threads);  // warm-up (first touch, pool start, frequency ramp)
  double amount = 0, best = 1e300;
  for (int r = 0; r < 9; ++r) {
    const double t0 = now_seconds();
    amount = run(threads);
    best = std::min(best, now_seconds() - t0);
  }
  return amount / best;
}

inline double cached(const char* what, int threads, double (*run)(int)) {
  static std::mutex mu;
  static std::map<std::pair<std::string, int>, double> cache;
  std::lock_guard<std::mutex> lk(mu);
  auto key = std::make_pair(std::string(what), threads);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const double v = measure_rate(run, threads) / 1e9;
  cache[key] = v;
  return v;
}

// ------------------------------------------------------------------------------------------------
// Paired ceilings (see the header comment)

/// Units and seconds of a ceiling run next to a kernel, and the kernel's seconds (the manual
/// time Google Benchmark divides its rate counters by).
struct paired_ceiling {
  double units = 0, seconds = 0;
  double kernel_seconds = 0;
  double rate() const { return seconds > 0 ? units / seconds : 0; }
};

/// The benchmark loop of a paired measurement (register with ->UseManualTime()): each iteration
/// times kernel() as the iteration time, then runs ceiling(seconds the call took) untimed.
template <class Kernel, class Ceiling>
paired_ceiling paired_loop(benchmark::State& st, Kernel&& kernel, Ceiling&& ceiling) {
  paired_ceiling c;
  ceiling(0.0);  // warm-up outside the sums: first use calibrates the cached ceiling it sizes by
  for (auto _ : st) {
    const double t0 = now_seconds();
    kernel();
    benchmark::ClobberMemory();
    const double t1 = now_seconds();
    st.SetIterationTime(t1 - t0);
    c.kernel_seconds += t1 - t0;  // summed in the order Google Benchmark sums its manual time
    c.units += ceiling(t1 - t0);
    c.seconds += now_seconds() - t1;
  }
  return c;
}

/// The benchmark loop of a ->UseRealTime() benchmark: runs f() every iteration; returns the wall
/// seconds from the start of the first iteration to the end of the last (Google Benchmark's real
/// time up to its own timer reads at either end: well under a microsecond).
template <class F>
double wall_loop(benchmark::State& st, F&& f) {
  double t0 = 0, t1 = 0;
  bool first = true;
  for (auto _ : st) {
    if (first) {
      t0 = now_seconds();
      first = false;
    }
    f();
    t1 = now_seconds();
  }
  return t1 - t0;
}

/// In-binary FMA peak, GFLOP/s on `threads` threads.
inline double fma_peak_gflops(int threads) { return cached("fma", threads, run_fma); }
/// In-binary Eigen GEMM (1024^3 float), GFLOP/s on `threads` threads.
inline double gemm_gflops(int threads) { return cached("gemm", threads, run_gemm); }
/// In-binary streaming read bandwidth, GB/s (1e9 bytes/s) on `threads` threads.
inline double read_bw_gbps(int threads) { return cached("read", threads, run_read); }

constexpr std::size_t kSameSizeMinBytes = std::size_t(32) << 20;  // read per timed run, at least

/// Read bandwidth, GB/s on `threads` threads, of a working set of `bytes`: the first `bytes` of
/// the read buffer (split in `threads` slices) summed again and again, so that it stays wherever
/// a working set of that size stays (L1, L2, L3 or DRAM). Each timed run reads at least 32 MiB;
/// fastest of 9 after a warm-up, measured once per (size, threads). From the 512 MiB of the read
/// buffer on: read_bw_gbps(threads).
inline double read_bw_same_size_gbps(double bytes, int threads) {
  constexpr std::size_t step = 8 * std::size_t(kLanes);  // floats per read_sum vector step
  const std::size_t floats = std::size_t(std::max(bytes, 1.0) / sizeof(float) + 0.5);
  const std::size_t per = (floats + std::size_t(threads) - 1) / std::size_t(threads);
  const std::size_t slice = std::max(step, (per + step - 1) / step * step);
  const std::size_t total = slice * std::size_t(threads) * sizeof(float);
  if (total >= kReadBytes) return read_bw_gbps(threads);
  static std::mutex mu;
  static std::map<std::pair<std::size_t, int>, double> cache;
  {
    std::lock_guard<std::mutex> lk(mu);
    const auto it = cache.find({total, threads});
    if (it != cache.end()) return it->second;
  }
  const std::size_t passes = std::max<std::size_t>(1, (kSameSizeMinBytes + total - 1) / total);
  const auto run = [&](int n) {
    const float* b = read_buffer().data();
    std::vector<float> sums(static_cast<std::size_t>(n));
    pool(n).parallel_for(n, [&](index_t c) {
      float acc = 0;
      for (std::size_t r = 0; r < passes; ++r) {
        escape(b);  // memory "changed": GCC may not merge the passes of a function it sees as pure
        acc += read_sum(b + std::size_t(c) * slice, slice);
      }
      sums[std::size_t(c)] = acc;
    });
    escape(sums.data());
    return double(total) * double(passes);
  };
  const double v = measure_rate(run, threads) / 1e9;
  std::lock_guard<std::mutex> lk(mu);
  cache[{total, threads}] = v;
  return v;
}

/// Runs the FMA loop on `threads` threads for about `seconds` (sized by the cached peak); returns
/// the FLOP executed.
inline double run_fma_for(int threads, double seconds) {
  const double per_step = 2.0 * double(kLanes) * kFmaAcc;  // FLOP per step and thread
  const double flop = seconds * fma_peak_gflops(threads) * 1e9;
  const index_t steps = std::max<index_t>(index_t(1) << 12, index_t(flop / per_step / threads));
  pool(threads).parallel_for(threads, [&](index_t) { fma_item(steps); });
  return per_step * double(steps) * threads;
}

constexpr std::size_t kPairedChunkBytes = std::size_t(2) << 20;

/// Streams about `seconds` worth of 2 MiB chunks of the read buffer on `threads` threads, from a
/// rotating position; returns the bytes read.
inline double run_read_for(int threads, double seconds) {
  static std::size_t next = 0;  // rotating chunk position: never reads what is still cached
  auto& b = read_buffer();
  const std::size_t nchunks = kReadBytes / kPairedChunkBytes,
                    per = kPairedChunkBytes / sizeof(float);
  const double want = seconds * read_bw_gbps(threads) * 1e9;
  const index_t n = std::max<index_t>(2 * threads, index_t(want / double(kPairedChunkBytes)));
  std::vector<float> sums(static_cast<std::size_t>(n));
  const std::size_t first = next;
  pool(threads).parallel_for(n, [&](index_t c) {
    const std::size_t chunk = (first + std::size_t(c)) % nchunks;
    sums[std::size_t(c)] = read_sum(b.data() + chunk * per, per);
  });
  next = (first + std::size_t(n)) % nchunks;
  escape(sums.data());
  return double(n) * double(kPairedChunkBytes);
}

// ------------------------------------------------------------------------------------------------
// Counters
//
// `seconds` below is the time the benchmark's timer counted over all its iterations
// (paired_ceiling::kernel_seconds, or what wall_loop returned).

/// A rate counter of `per_iter` units per iteration: Google Benchmark reports
/// per_iter * iterations / seconds (printed with "/s").
inline benchmark::Counter rate(double per_iter) {
  return benchmark::Counter(per_iter, benchmark::Counter::kIsIterationInvariantRate);
}

/// A plain counter (no unit in the console: percentages, ratios, sizes).
inline benchmark::Counter plain(double v) { return benchmark::Counter(v); }

/// What rate(per_iter) reports, computed the way Google Benchmark does (per_iter / seconds *
/// iterations), for a plain counter.
inline double per_second(const benchmark::State& st, double per_iter, double seconds) {
  return seconds > 0 ? per_iter / seconds * double(st.iterations()) : 0;
}

/// Sets GFLOPS and pct_fma_peak (and pct_gemm when `with_gemm`) for `flop` FLOP per iteration.
inline void report_flops(benchmark::State& st, double flop, int threads, double seconds,
                         bool with_gemm = false) {
  st.counters["GFLOPS"] = rate(flop / 1e9);
  st.counters["pct_fma_peak"] =
      plain(per_second(st, 100.0 * flop / 1e9 / fma_peak_gflops(threads), seconds));
  if (with_gemm)
    st.counters["pct_gemm"] =
        plain(per_second(st, 100.0 * flop / 1e9 / gemm_gflops(threads), seconds));
}

/// pct_fma_paired: `flop` per iteration against the FMA loop run beside it (paired_loop).
inline void report_fma_paired(benchmark::State& st, double flop, const paired_ceiling& c) {
  if (c.rate() > 0)
    st.counters["pct_fma_paired"] =
        plain(per_second(st, 100.0 * flop / c.rate(), c.kernel_seconds));
}
/// pct_read_paired: `bytes` per iteration against the streaming read run beside it (paired_loop).
inline void report_read_paired(benchmark::State& st, double bytes, const paired_ceiling& c) {
  if (c.rate() > 0)
    st.counters["pct_read_paired"] =
        plain(per_second(st, 100.0 * bytes / c.rate(), c.kernel_seconds));
}

/// Sets GBps and pct_read_bw for `bytes` bytes per iteration, and for a working set of
/// `working_set` bytes (the distinct bytes a call touches) working_set_MiB and
/// pct_read_same_size (against read_bw_same_size_gbps: a pct_read_bw above 100 means the working
/// set stays in cache, and this says how close the kernel comes to reading it from there).
inline void report_bytes(benchmark::State& st, double bytes, int threads, double seconds,
                         double working_set) {
  st.counters["GBps"] = rate(bytes / 1e9);
  st.counters["pct_read_bw"] =
      plain(per_second(st, 100.0 * bytes / 1e9 / read_bw_gbps(threads), seconds));
  st.counters["working_set_MiB"] = plain(working_set / double(1 << 20));
  st.counters["pct_read_same_size"] = plain(
      per_second(st, 100.0 * bytes / 1e9 / read_bw_same_size_gbps(working_set, threads), seconds));
}

/// Sets x_vs_ref = (reference seconds per call) / (this benchmark's seconds per call).
inline void report_speedup(benchmark::State& st, double ref_seconds, double seconds) {
  st.counters["x_vs_ref"] = plain(per_second(st, ref_seconds, seconds));
}

// ------------------------------------------------------------------------------------------------
// The ceilings as benchmarks

inline void BM_ceiling_fma(benchmark::State& st) {
  const int threads = int(st.range(0));
  double flop = 0;
  for (auto _ : st) flop = run_fma(threads);
  st.counters["GFLOPS"] = rate(flop / 1e9);
}

inline void BM_ceiling_gemm(benchmark::State& st) {
  const int threads = int(st.range(0));
  double flop = 0;
  run_gemm(threads);
  const double seconds = wall_loop(st, [&] { flop = run_gemm(threads); });
  report_flops(st, flop, threads, seconds);
}

inline void BM_ceiling_read(benchmark::State& st) {
  const int threads = int(st.range(0));
  double bytes = 0;
  run_read(threads);
  for (auto _ : st) bytes = run_read(threads);
  st.counters["GBps"] = rate(bytes / 1e9);
}

/// Registers BM_ceiling_{fma,gemm,read}/threads:{1,2}. Returns true (for static initialisers).
inline bool register_ceiling_benchmarks() {
  for (auto* b : {benchmark::RegisterBenchmark("BM_ceiling_fma", BM_ceiling_fma),
                  benchmark::RegisterBenchmark("BM_ceiling_gemm", BM_ceiling_gemm),
                  benchmark::RegisterBenchmark("BM_ceiling_read", BM_ceiling_read)}) {
    b->ArgName("threads")->UseRealTime()->Unit(benchmark::kMillisecond);
    for (auto t : thread_counts()) b->Arg(t);
  }
  return true;
}

// ------------------------------------------------------------------------------------------------
// Model shapes given by the user

/// A key a program accepts in a shape: its name, its default (kNoDefault: absent unless given)
/// and a few words for --help and the error messages.
struct shape_key {
  static constexpr int64_t kNoDefault = -1;
  const char* name;
  int64_t def;
  const char* help;
};

/// A bad shape: the message names the shape and the key.
struct shape_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// One shape: the keys given, and the program's defaults for the others.
class user_shape {
  std::string text_;
  std::map<std::string, int64_t> given_;
  const std::vector<shape_key>* keys_ = nullptr;

 public:
  user_shape(std::string text, std::map<std::string, int64_t> given,
             const std::vector<shape_key>& keys)
      : text_(std::move(text)), given_(std::move(given)), keys_(&keys) {}
  const std::string& text() const { return text_; }
  bool has(const std::string& key) const { return given_.count(key) != 0; }
  /// The value given, else the key's default (kNoDefault when it has none).
  int64_t get(const std::string& key) const {
    const auto it = given_.find(key);
    if (it != given_.end()) return it->second;
    for (const auto& k : *keys_)
      if (key == k.name) return k.def;
    throw std::logic_error("attnkit bench: shape key '" + key + "' is not in the program's list");
  }
  /// A shape_error about `key`: "shape 'TEXT': key 'KEY': WHAT".
  shape_error error(const std::string& key, const std::string& what) const {
    return shape_error("shape '" + text_ + "': key '" + key + "': " + what);
  }
};

inline std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

inline std::string key_list(const std::vector<shape_key>& keys) {
  std::string r;
  for (const auto& k : keys) r += (r.empty() ? "" : ", ") + std::string(k.name);
  return r;
}

/// Parses "key:value,key:value" (values: positive integers, k = x1024, e.g. 8192 or 8k).
inline user_shape parse_shape(const std::string& text, const std::vector<shape_key>& keys) {
  std::map<std::string, int64_t> given;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = trim(text.substr(pos, comma - pos));
    pos = comma + 1;
    if (item.empty()) continue;
    const std::size_t colon = item.find(':');
    if (colon == std::string::npos)
      throw shape_error("shape '" + text + "': '" + item + "' is not key:value");
    const std::string key = trim(item.substr(0, colon)), val = trim(item.substr(colon + 1));
    const bool known =
        std::any_of(keys.begin(), keys.end(), [&](const shape_key& k) { return key == k.name; });
    if (!known)
      throw shape_error("shape '" + text + "': unknown key '" + key + "' (keys: " + key_list(keys) +
                        "; names are case-sensitive)");
    if (given.count(key)) throw shape_error("shape '" + text + "': key '" + key + "' given twice");
    std::size_t digits = 0;
    while (digits < val.size() && val[digits] >= '0' && val[digits] <= '9') ++digits;
    const bool kilo = digits + 1 == val.size() && (val[digits] == 'k' || val[digits] == 'K');
    int64_t v = 0;
    bool ok = digits > 0 && digits <= 10 && (digits == val.size() || kilo);
    if (ok) v = std::stoll(val.substr(0, digits)) * (kilo ? 1024 : 1);
    ok = ok && v >= 1 && v <= INT32_MAX;
    if (!ok)
      throw shape_error("shape '" + text + "': key '" + key + "': bad value '" + val +
                        "' (an integer from 1 to 2^31-1, k = x1024: e.g. 8192 or 8k)");
    given[key] = v;
  }
  if (given.empty()) throw shape_error("shape '" + text + "': no key:value in it");
  return user_shape(text, std::move(given), keys);
}

/// Wraps a benchmark body: an exception (a shape the kernel rejects, memory) skips the benchmark
/// with its message instead of ending the program.
template <class F>
auto skip_on_error(F f) {
  return [f](benchmark::State& st) {
    try {
      f(st);
    } catch (const std::exception& e) {
      st.SkipWithError(e.what());
    }
  };
}

/// The main() of every bench program: registers the benchmarks of the shapes given in
/// ATTNKIT_BENCH_SHAPE and in --attnkit_shape=... arguments (removed from argv) with
/// register_shape (which throws shape_error for a shape it cannot run), then runs Google
/// Benchmark as BENCHMARK_MAIN does. Returns 2 after printing the message of a bad shape.
inline int bench_main(int argc, char** argv, const std::vector<shape_key>& keys,
                      void (*register_shape)(const user_shape&)) {
  const std::string prog = [&] {
    const std::string a = argc > 0 ? argv[0] : "bench";
    return a.substr(a.find_last_of('/') == std::string::npos ? 0 : a.find_last_of('/') + 1);
  }();
  std::vector<std::string> texts;
  const auto split = [&](const std::string& all) {
    std::size_t pos = 0;
    while (pos <= all.size()) {
      const std::size_t semi = std::min(all.find(';', pos), all.size());
      if (!trim(all.substr(pos, semi - pos)).empty())
        texts.push_back(trim(all.substr(pos, semi - pos)));
      pos = semi + 1;
    }
  };
  if (const char* env = std::getenv("ATTNKIT_BENCH_SHAPE")) split(env);
  const std::string flag = "--attnkit_shape";
  int kept = 1;
  bool help = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.compare(0, flag.size() + 1, flag + "=") == 0) {
      split(a.substr(flag.size() + 1));
    } else if (a == flag) {
      std::fprintf(stderr, "%s: use %s=KEY:VALUE,... (one argument, with '=')\n", prog.c_str(),
                   flag.c_str());
      return 2;
    } else {
      help = help || a == "--help" || a == "-h";
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  argv[argc] = nullptr;
  if (help) {
    std::printf("%s: model shapes (ATTNKIT_BENCH_SHAPE=\"...\" or %s=..., ';' between shapes):\n",
                prog.c_str(), flag.c_str());
    if (keys.empty()) std::printf("  (none: this program has only its default shapes)\n");
    for (const auto& k : keys) {
      std::printf("  %-6s %s", k.name, k.help);
      if (k.def != shape_key::kNoDefault) std::printf(" (default %lld)", (long long)k.def);
      std::printf("\n");
    }
    std::printf("\n");
  }
  try {
    if (!texts.empty() && keys.empty())
      throw shape_error("takes no model shapes (got '" + texts.front() + "')");
    for (const auto& t : texts) register_shape(parse_shape(t, keys));
  } catch (const shape_error& e) {
    std::fprintf(stderr, "%s: %s\n", prog.c_str(), e.what());
    return 2;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace attnkit_bench
