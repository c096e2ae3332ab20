// SPDX-License-Identifier: Apache-2.0
// attnkit::dispatch against the header-only kernels built with this program's flags
// (-march=native unless ATTNKIT_NATIVE=OFF), on the same shapes (built with ATTNKIT_DISPATCH=ON).
//
//   BM_dispatch_standard_attention/impl:<dispatch|native>/Hkv:8/T:t/threads:N
//                                causal prefill, B=1, Hq=8, D=128, float, T in {1024, 4096}
//       GFLOPS = 2*Tq*Tk*(Dk+Dv)/2 * Hq per call / wall seconds / 1e9 (bench_standard's count)
//   BM_dispatch_gated_delta_rule/impl:<dispatch|native>/seq:t/threads:N
//                                chunk algorithm (chunks of 64), B=1, H=HV=16, K=V=128, float,
//                                h0 given, ht written, T in {1024, 4096}
//       GFLOPS = 7*K*V per token and head * T*HV / wall seconds / 1e9 (bench_delta's nominal)
//   impl:dispatch rows also
//       pct_of_native = 100 * (native seconds) / (dispatch seconds), both summed over the same
//                       iterations: every iteration times one dispatched and one native call,
//                       back to back (which first alternates), and reports the dispatched one.
//                       The speed of this project's shared machines drifts by tens of percent
//                       within seconds; the pairing cancels it. 100 = as fast as native.
// impl:dispatch calls attnkit::dispatch (the label names its active ISA: the widest the CPU
// runs, or ATTNKIT_ISA); impl:native calls the template. Wall-clock times of the kernel calls only
// (UseManualTime); the kernels run on an attnkit::thread_pool of `threads`.
//
// Running (quote medians):
//   bench_dispatch --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <attnkit/delta/kernel.hpp>
#include <attnkit/dispatch.hpp>
#include <attnkit/softmax/kernel.hpp>
#include <string>

#include "bench_recurrent.hpp"

namespace {

using namespace attnkit_bench;

constexpr index_t kHq = 8, kD = 128;
const recurrent_shape kDelta{16, 16, 128, 128, /*unit_qk=*/true};

struct prefill_inputs {
  index_t hkv = -1, t = -1;
  buffer<float> q, k, v, o;
};

prefill_inputs& prefill_data(index_t hkv, index_t t) {
  static prefill_inputs d;
  if (d.hkv != hkv || d.t != t) {
    d = prefill_inputs{};
    d.q = random_tensor<float>(std::size_t(t * kHq * kD), 1);
    d.k = random_tensor<float>(std::size_t(t * hkv * kD), 2);
    d.v = random_tensor<float>(std::size_t(t * hkv * kD), 3);
    d.o = buffer<float>(std::size_t(t * kHq * kD));
    d.hkv = hkv;
    d.t = t;
  }
  return d;
}

/// The loop of both rows (see the top): the row's calls are timed; impl:dispatch rows also time
/// a native call beside each one for pct_of_native.
template <bool Dispatched, class Dispatch, class Native>
void paired_calls(benchmark::State& st, Dispatch&& dispatched, Native&& native, float* out) {
  double own = 0, other = 0;
  bool native_first = false;
  const auto timed = [&](auto&& call) {
    const double t0 = now_seconds();
    call();
    benchmark::DoNotOptimize(out);
    benchmark::ClobberMemory();
    return now_seconds() - t0;
  };
  for (auto _ : st) {
    double t;
    if constexpr (Dispatched) {
      if (native_first) other += timed(native);
      t = timed(dispatched);
      if (!native_first) other += timed(native);
      native_first = !native_first;
    } else {
      t = timed(native);
    }
    own += t;
    st.SetIterationTime(t);
  }
  if (Dispatched && own > 0) st.counters["pct_of_native"] = 100.0 * other / own;
  st.SetLabel(Dispatched ? attnkit::dispatch::isa_name(attnkit::dispatch::active_isa())
                         : "header-only");
}

template <bool Dispatched>
void BM_standard(benchmark::State& st) {
  const index_t hkv = st.range(0), t = st.range(1);
  auto& d = prefill_data(hkv, t);
  attnkit::softmax_params p;
  p.causal = true;
  p.exec = &pool(int(st.range(2)));
  const auto q = attnkit::make_view<const float>(d.q.data(), 1, t, kHq, kD);
  const auto k = attnkit::make_view<const float>(d.k.data(), 1, t, hkv, kD);
  const auto v = attnkit::make_view<const float>(d.v.data(), 1, t, hkv, kD);
  const auto o = attnkit::make_view(d.o.data(), 1, t, kHq, kD);
  paired_calls<Dispatched>(
      st, [&] { attnkit::dispatch::standard_attention(p, q, k, v, o); },
      [&] { attnkit::standard_attention(p, q, k, v, o); }, d.o.data());
  st.counters["GFLOPS"] = rate(attention_flops(1, kHq, t, t, kD, kD, true) / 1e9);
}

template <bool Dispatched>
void BM_gated_delta(benchmark::State& st) {
  const index_t t = st.range(0);
  auto& d = recurrent_data(kDelta, 1, t);
  const recurrent_views w = views_of(kDelta, d, 1, t, d.ht.data());
  attnkit::delta_params p;
  p.algo = attnkit::algorithm::chunk;
  p.exec = &pool(int(st.range(1)));
  paired_calls<Dispatched>(
      st,
      [&] { attnkit::dispatch::gated_delta_rule(p, w.q, w.k, w.v, w.gs, w.beta, w.o, w.state); },
      [&] { attnkit::gated_delta_rule(p, w.q, w.k, w.v, w.gs, w.beta, w.o, w.state); }, d.o.data());
  const double flop = attnkit::variant_by_name("gated_delta_rule").nominal_flop(kDelta.K, kDelta.V);
  st.counters["GFLOPS"] = rate(flop * double(t * kDelta.HV) / 1e9);
}

const bool registered = [] {
  for (const bool dispatched : {true, false}) {
    const std::string impl = dispatched ? "/impl:dispatch" : "/impl:native";
    auto* s = benchmark::RegisterBenchmark(("BM_dispatch_standard_attention" + impl).c_str(),
                                           dispatched ? BM_standard<true> : BM_standard<false>);
    s->ArgNames({"Hkv", "T", "threads"})->UseManualTime()->Unit(benchmark::kMillisecond);
    s->ArgsProduct({{8}, {1024, 4096}, thread_counts()});
    auto* g =
        benchmark::RegisterBenchmark(("BM_dispatch_gated_delta_rule" + impl).c_str(),
                                     dispatched ? BM_gated_delta<true> : BM_gated_delta<false>);
    g->ArgNames({"seq", "threads"})->UseManualTime()->Unit(benchmark::kMillisecond);
    g->ArgsProduct({{1024, 4096}, thread_counts()});
  }
  return true;
}();

}  // namespace
