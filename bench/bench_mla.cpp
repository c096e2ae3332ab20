// SPDX-License-Identifier: Apache-2.0
// MLA (DeepSeek multi-head latent attention) benchmarks, next to ceilings measured in the same
// binary (bench_common.hpp). DeepSeek-V3 dimensions: B=1, H=128, Dn=128, Dr=64, Dc=512, Dv=128;
// float queries and outputs, mla_params dn = 128, causal (bottom-right), default split-KV.
//
//   BM_ceiling_fma|gemm|read/threads:N   FMA-only peak, Eigen 1024^3 float GEMM, 512 MiB read
//   BM_mla_decode_f32|bf16/form:absorbed/cache:N/threads      Tq=1, N in {4096, 32768}:
//                                mla_attention_absorbed(q_abs [1,1,H,Dc+Dr] (random),
//                                latent_cache<float|bf16>{kv [1,32768,Dc+Dr], seqlens = N, Dc},
//                                o_lat [1,1,H,Dc]). Only the attention over the latent cache is
//                                timed: the absorption GEMMs mla_absorb_q / mla_absorb_o (per
//                                token 2*H*Dn*Dc each) are not part of the timed kernel.
//   BM_mla_decode_f32|bf16/form:absorbed/tq:2/cache:N/threads  the same with Tq=2 (multi-token
//                                prediction: the last 2 of the N cached positions, causal)
//   BM_mla_decode_f32|bf16/form:naive/cache:N/threads         Tq=1, mla_attention_naive(q_nope
//                                [1,1,H,Dn], q_pe [1,1,H,Dr], c_kv [1,N,Dc] and k_pe [1,N,Dr]
//                                (strided views of the same latent cache rows, float or bf16:
//                                the kernel widens them itself), w_uk [H,Dn,Dc], w_uv [H,Dv,Dc],
//                                o [1,1,H,Dv]): the whole cache is decompressed on every call
//                                (cache 32768: ~1.1 TFLOP and ~5.5 GB of workspace per call,
//                                seconds per call: one iteration per run)
//   BM_mla_prefill_f32/form:absorbed|naive/T/threads          Tq = Tk = T in {1024, 4096},
//                                causal; absorbed: q_abs [1,T,H,Dc+Dr] over a float latent cache
//                                holding the T tokens; naive: as for decode with Tq = Tk = T
//                                (T=4096: seconds per call, one iteration per run)
//   A call longer than the min time (0.5 s by default) is run once per repetition (Google
//   Benchmark stops after the first iteration); shapes that take seconds skip the warm-up call.
//   Visible pairs per head: rows of Tq queries at the last Tq of Tk positions see
//   Tq*Tk - Tq*(Tq-1)/2 keys in all (decode Tq=1: Tk; causal prefill Tq = Tk = T: T*(T+1)/2).
//       GFLOPS       absorbed: H * pairs * (2*(Dc+Dr) + 2*Dc) per call (q~.[c;k_pe] and p*c)
//                    naive: H * pairs * (2*(Dn+Dr) + 2*Dv) + 2*Tk*H*(Dn+Dv)*Dc per call (the
//                    attention plus the decompression GEMMs K = c w_uk^T, V = c w_uv^T)
//                    / wall seconds / 1e9; exp, max, rescaling and copies are not counted
//       pct_fma_peak = 100 * GFLOPS / in-binary FMA peak at the same thread count (naive: of the
//                      FLOP it executes, decompression included, not of a common nominal count)
//       pct_fma_paired = 100 * GFLOPS / the FMA loop run after every call for as long as the call
//                      (bench_common.hpp, "Paired ceilings"; same drift, same seconds)
//       us_per_token (decode) = wall microseconds per call / Tq
//       cache_bytes_per_token (decode) = latent_bytes_per_token<KV>(Dc, Dr) = (Dc+Dr)*sizeof(KV)
//       mha_bytes_per_token (decode) = mha_bytes_per_token<KV>(H, Dn, Dr, Dv) =
//                      H*(Dn+Dr+Dv)*sizeof(KV), the equivalent multi-head cache, for comparison
//       speedup_vs_naive (absorbed rows, Tq=1 decode and prefill) = naive seconds per call /
//                      absorbed seconds per call, same dtype, shape and threads; only when the
//                      naive row ran earlier in the same process (it is registered first)
// All times are wall-clock: the kernel calls only (UseManualTime; the paired ceiling runs are
// excluded); the kernels run on an attnkit::thread_pool of `threads`.
//
// Running:
//   bench_mla                                        everything (several minutes: the naive
//                                                    32K decode and the T=4096 prefills take
//                                                    seconds to tens of seconds per call)
//   bench_mla --benchmark_min_time=0.01 --benchmark_filter='cache:4096|T:1024'   smoke pass
//   bench_mla --benchmark_filter='BM_ceiling_fma|form:absorbed/(tq:2/)?cache:32768/threads:2'
//   bench_mla --attnkit_shape=H:16,cache:8192,T:1024      a model's shape (also
//                                                          ATTNKIT_BENCH_SHAPE; --help: the keys)
//   figures: --benchmark_repetitions=3 --benchmark_report_aggregates_only=true, quote medians.
#include <attnkit/mla.hpp>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "bench_common.hpp"

namespace {

using namespace attnkit_bench;
using attnkit::bf16;

constexpr index_t kH = 128, kDn = 128, kDr = 64, kDc = 512, kDv = 128;
constexpr index_t kW = kDc + kDr;       // latent row width (576)
constexpr index_t kCapacity = 32768;    // rows of the latent cache buffers
constexpr index_t kLongCache = 32768;   // naive decode from this cache on: no warm-up call
constexpr index_t kLongPrefill = 4096;  // prefill from this T on: no warm-up call

// ------------------------------------------------------------------------------------------------
// FLOP

/// Query-key pairs per head: Tq query rows at the last Tq of Tk positions, causal bottom-right.
double visible_pairs(index_t tq, index_t tk) {
  return double(tq) * double(tk) - double(tq) * double(tq - 1) / 2;
}

double absorbed_flops(index_t h, index_t tq, index_t tk) {
  return double(h) * visible_pairs(tq, tk) * double(2 * kW + 2 * kDc);
}

double naive_flops(index_t h, index_t tq, index_t tk) {
  return double(h) * visible_pairs(tq, tk) * double(2 * (kDn + kDr) + 2 * kDv) +
         2.0 * double(tk) * double(h) * double(kDn + kDv) * double(kDc);
}

// ------------------------------------------------------------------------------------------------
// Inputs

/// The latent cache rows [c ; k_pe] of one element type: kCapacity tokens (more if a user shape
/// needs more), filled (randomly) only as far as a benchmark needs; a shape of N tokens uses the
/// first N rows.
template <class KV>
struct latent_rows {
  buffer<KV> kv;
  index_t capacity = 0, filled = 0;
};

template <class KV>
latent_rows<KV>& latent_data(index_t tokens) {
  static latent_rows<KV> d;
  if (d.capacity < tokens || d.capacity == 0) {
    d = latent_rows<KV>{};
    d.capacity = std::max(kCapacity, tokens);
    d.kv = buffer<KV>(std::size_t(d.capacity * kW));
  }
  if (d.filled < tokens) {
    fill_random(d.kv.data() + d.filled * kW, std::size_t((tokens - d.filled) * kW),
                31 + std::uint64_t(d.filled));
    d.filled = tokens;
  }
  return d;
}

/// Queries and outputs of the last (Tq, H) asked for (one alive at a time), and the weights.
struct query_data {
  index_t tq = -1, h = -1;
  buffer<float> q_abs, o_lat, q_nope, q_pe, o;
};

query_data& queries(index_t tq, index_t h) {
  static query_data d;
  if (d.tq != tq || d.h != h) {
    d = query_data{};
    d.q_abs = random_tensor<float>(std::size_t(tq * h * kW), 41);
    d.o_lat = buffer<float>(std::size_t(tq * h * kDc));
    d.q_nope = random_tensor<float>(std::size_t(tq * h * kDn), 42);
    d.q_pe = random_tensor<float>(std::size_t(tq * h * kDr), 43);
    d.o = buffer<float>(std::size_t(tq * h * kDv));
    d.tq = tq;
    d.h = h;
  }
  return d;
}

/// The decompression weights of H heads (the last H asked for).
struct weights {
  index_t h = -1;
  buffer<float> w_uk, w_uv;
};

weights& weight_data(index_t h) {
  static weights w;
  if (w.h != h) {
    // small entries: the decompressed keys keep logits of a few units
    w.w_uk = random_tensor<float>(std::size_t(h * kDn * kDc), 51, -0.05f, 0.05f);
    w.w_uv = random_tensor<float>(std::size_t(h * kDv * kDc), 52, -0.05f, 0.05f);
    w.h = h;
  }
  return w;
}

attnkit::mla_params params(int threads) {
  attnkit::mla_params p;
  p.dn = kDn;
  p.causal = true;  // bottom-right: Tq > 1 rows are multi-token prediction / prefill
  p.exec = &pool(threads);
  return p;
}

/// One absorbed call: Tq query rows over the first tk tokens of the KV latent cache.
template <class KV>
void run_absorbed(const attnkit::mla_params& p, query_data& q, latent_rows<KV>& c, index_t tk) {
  static std::int32_t seqlen;
  seqlen = std::int32_t(tk);
  const attnkit::latent_cache<KV> cache{
      attnkit::make_view(c.kv.data(), 1, c.capacity, kW),
      attnkit::make_view(static_cast<const std::int32_t*>(&seqlen), 1), kDc};
  attnkit::mla_attention_absorbed(
      p, attnkit::make_view(static_cast<const float*>(q.q_abs.data()), 1, q.tq, q.h, kW), cache,
      attnkit::make_view(q.o_lat.data(), 1, q.tq, q.h, kDc));
}

/// One naive call: Tq queries over the first tk tokens, c_kv and k_pe read from the latent rows.
template <class KV>
void run_naive(const attnkit::mla_params& p, query_data& q, latent_rows<KV>& c, index_t tk) {
  auto& w = weight_data(q.h);
  const KV* rows = c.kv.data();
  const attnkit::cview<KV, 3> c_kv(rows, {1, tk, kDc}, {c.capacity * kW, kW, 1});
  const attnkit::cview<KV, 3> k_pe(rows + kDc, {1, tk, kDr}, {c.capacity * kW, kW, 1});
  attnkit::mla_attention_naive(
      p, attnkit::make_view(static_cast<const float*>(q.q_nope.data()), 1, q.tq, q.h, kDn),
      attnkit::make_view(static_cast<const float*>(q.q_pe.data()), 1, q.tq, q.h, kDr), c_kv, k_pe,
      attnkit::make_view(static_cast<const float*>(w.w_uk.data()), q.h, kDn, kDc),
      attnkit::make_view(static_cast<const float*>(w.w_uv.data()), q.h, kDv, kDc),
      attnkit::make_view(q.o.data(), 1, q.tq, q.h, kDv));
}

enum class form { absorbed, naive };

// Naive seconds per call by (element type, H, Tq, Tk, threads), for speedup_vs_naive.
std::map<std::tuple<std::string, index_t, index_t, index_t, int>, double>& naive_seconds() {
  static std::map<std::tuple<std::string, index_t, index_t, index_t, int>, double> m;
  return m;
}

/// The benchmark loop of one shape: times the kernel calls with the paired FMA ceiling, reports
/// GFLOPS, pct_fma_peak, pct_fma_paired; returns the mean seconds per call.
template <class KV>
double timed(benchmark::State& st, form f, index_t h, index_t tq, index_t tk, int threads,
             bool warm) {
  auto& c = latent_data<KV>(tk);
  auto& q = queries(tq, h);
  if (f == form::naive) weight_data(h);
  const attnkit::mla_params p = params(threads);
  const auto call = [&] {
    if (f == form::absorbed)
      run_absorbed(p, q, c, tk);
    else
      run_naive(p, q, c, tk);
  };
  if (warm) call();
  double seconds = 0;
  std::int64_t calls = 0;
  const paired_ceiling fma = paired_loop(
      st,
      [&] {
        const double t0 = now_seconds();
        call();
        seconds += now_seconds() - t0;
        ++calls;
        benchmark::DoNotOptimize(q.o_lat.data());
        benchmark::DoNotOptimize(q.o.data());
      },
      [&](double s) { return run_fma_for(threads, s); });
  const double flop = f == form::absorbed ? absorbed_flops(h, tq, tk) : naive_flops(h, tq, tk);
  report_flops(st, flop, threads, fma.kernel_seconds);
  report_fma_paired(st, flop, fma);
  const double per_call = seconds / double(std::max<std::int64_t>(calls, 1));
  const auto key =
      std::make_tuple(std::string(sizeof(KV) == 2 ? "bf16" : "f32"), h, tq, tk, threads);
  if (f == form::naive) {
    naive_seconds()[key] = per_call;
  } else {
    const auto it = naive_seconds().find(key);
    if (it != naive_seconds().end()) st.counters["speedup_vs_naive"] = it->second / per_call;
  }
  return per_call;
}

/// Decode of Tq tokens (the last Tq of `cache` positions) with H heads.
template <class KV>
void decode_body(benchmark::State& st, form f, index_t h, index_t tq, index_t cache, int threads) {
  const bool long_shape = f == form::naive && cache >= kLongCache;
  const double per_call = timed<KV>(st, f, h, tq, cache, threads, !long_shape);
  st.counters["us_per_token"] = per_call / double(tq) * 1e6;
  st.counters["cache_bytes_per_token"] = double(attnkit::latent_bytes_per_token<KV>(kDc, kDr));
  st.counters["mha_bytes_per_token"] = double(attnkit::mha_bytes_per_token<KV>(h, kDn, kDr, kDv));
}

template <class KV>
void BM_mla_decode(benchmark::State& st, form f, index_t tq) {
  decode_body<KV>(st, f, kH, tq, st.range(0), int(st.range(1)));
}

void BM_mla_prefill(benchmark::State& st, form f) {
  const index_t t = st.range(0);
  timed<float>(st, f, kH, t, t, int(st.range(1)), t < kLongPrefill);
}

bool register_all() {
  register_ceiling_benchmarks();
  // No Iterations(1) (it would add "/iterations:1" to the names): a call longer than the min time
  // (0.5 s by default) ends the run after its first iteration anyway.
  const auto configure = [](benchmark::internal::Benchmark* b, const char* arg0,
                            benchmark::TimeUnit unit, int64_t value) {
    b->ArgNames({arg0, "threads"})->UseManualTime()->Unit(unit);
    b->ArgsProduct({{value}, thread_counts()});
  };
  const std::vector<int64_t> caches{4096, 32768};

  // naive before absorbed: the absorbed rows report speedup_vs_naive against it
  const auto decode = [&](const std::string& name, auto fn) {
    for (const int64_t cache : caches) {
      configure(
          benchmark::RegisterBenchmark((name + "/form:naive").c_str(), fn, form::naive, index_t(1)),
          "cache", benchmark::kMillisecond, cache);
      configure(benchmark::RegisterBenchmark((name + "/form:absorbed").c_str(), fn, form::absorbed,
                                             index_t(1)),
                "cache", benchmark::kMicrosecond, cache);
    }
    for (const int64_t cache : caches)
      configure(benchmark::RegisterBenchmark((name + "/form:absorbed/tq:2").c_str(), fn,
                                             form::absorbed, index_t(2)),
                "cache", benchmark::kMicrosecond, cache);
  };
  decode("BM_mla_decode_f32", BM_mla_decode<float>);
  decode("BM_mla_decode_bf16", BM_mla_decode<bf16>);

  for (const int64_t t : {int64_t(1024), int64_t(kLongPrefill)})
    for (const form f : {form::naive, form::absorbed})
      configure(benchmark::RegisterBenchmark(f == form::naive ? "BM_mla_prefill_f32/form:naive"
                                                              : "BM_mla_prefill_f32/form:absorbed",
                                             BM_mla_prefill, f),
                "T", benchmark::kMillisecond, t);
  return true;
}

const bool registered = register_all();

// ------------------------------------------------------------------------------------------------
// Model shapes given by the user

const std::vector<shape_key> kShapeKeys{
    {"H", kH, "heads (Dn = 128, Dr = 64, Dc = 512, Dv = 128)"},
    {"cache", shape_key::kNoDefault, "decode cache length (absorbed form, f32 and bf16)"},
    {"tq", 1, "decode query tokens (the last tq of the cache; > 1: multi-token prediction)"},
    {"T", shape_key::kNoDefault, "prefill tokens (causal, float; naive and absorbed forms)"},
};

/// Registers BM_mla_decode_f32|bf16/form:absorbed/H/tq/cache/threads (when cache is given) and
/// BM_mla_prefill_f32/form:naive|absorbed/H/T/threads (when T is given).
void register_shape(const user_shape& u) {
  if (!u.has("cache") && !u.has("T"))
    throw shape_error("shape '" + u.text() +
                      "': needs key 'cache' (decode) and/or key 'T' (prefill)");
  const int64_t h = u.get("H"), tq = u.get("tq");
  if (u.has("cache")) {
    if (tq > u.get("cache"))
      throw u.error("tq", std::to_string(tq) + " query tokens do not fit in a cache of " +
                              std::to_string(u.get("cache")));
    const auto decode = [](auto kv) {
      using KV = decltype(kv);
      return skip_on_error([](benchmark::State& st) {
        decode_body<KV>(st, form::absorbed, st.range(0), st.range(1), st.range(2),
                        int(st.range(3)));
      });
    };
    for (auto* b :
         {benchmark::RegisterBenchmark("BM_mla_decode_f32/form:absorbed", decode(float{})),
          benchmark::RegisterBenchmark("BM_mla_decode_bf16/form:absorbed", decode(bf16{}))}) {
      b->ArgNames({"H", "tq", "cache", "threads"})->UseManualTime()->Unit(benchmark::kMicrosecond);
      b->ArgsProduct({{h}, {tq}, {u.get("cache")}, thread_counts()});
    }
  }
  if (u.has("T"))
    for (const form f : {form::naive, form::absorbed}) {  // naive first: speedup_vs_naive
      auto* b = benchmark::RegisterBenchmark(
          f == form::naive ? "BM_mla_prefill_f32/form:naive" : "BM_mla_prefill_f32/form:absorbed",
          skip_on_error([f](benchmark::State& st) {
            const index_t t = st.range(1);
            timed<float>(st, f, st.range(0), t, t, int(st.range(2)), t < kLongPrefill);
          }));
      b->ArgNames({"H", "T", "threads"})->UseManualTime()->Unit(benchmark::kMillisecond);
      b->ArgsProduct({{h}, {u.get("T")}, thread_counts()});
    }
}

}  // namespace

int main(int argc, char** argv) {
  return attnkit_bench::bench_main(argc, argv, kShapeKeys, register_shape);
}
