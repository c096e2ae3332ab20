// SPDX-License-Identifier: Apache-2.0
// attnkit::dispatch against the header-only kernels built with this program's flags
// (-march=native unless ATTNKIT_NATIVE=OFF), on the same shapes (built with ATTNKIT_DISPATCH=ON).
//
//   BM_dispatch_standard_attention/impl:<dispatch|native>/B:1/Hq:8/Hkv:8/D:128/T:t/threads:N
//                                causal prefill, float, T in {1024, 4096}
//       GFLOPS = 2*Tq*Tk*(Dk+Dv)/2 * B*Hq per call / wall seconds / 1e9 (bench_standard's count)
//   BM_dispatch_gated_delta_rule/impl:<dispatch|native>/H:16/HV:16/K:128/V:128/T:t/threads:N
//                                chunk algorithm (chunks of 64), one sequence, float, h0 given,
//                                ht written, T in {1024, 4096}
//       GFLOPS = 7*K*V per token and value head * T*HV / wall seconds / 1e9 (bench_delta's
//                nominal count)
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
//   bench_dispatch --attnkit_shape=Hq:32,Hkv:8,H:16,HV:32,T:2048   both kernels at a model's shape
//       (also ATTNKIT_BENCH_SHAPE; keys B, Hq, Hkv, D for the softmax rows, H, HV, K, V for the
//       gated_delta_rule rows, T for both; see --help)
#include <attnkit/delta/kernel.hpp>
#include <attnkit/dispatch.hpp>
#include <attnkit/softmax/kernel.hpp>
#include <string>
#include <vector>

#include "bench_recurrent.hpp"

namespace {

using namespace attnkit_bench;

const std::vector<shape_key> kShapeKeys{
    {"B", 1, "sequences of the softmax rows"},
    {"Hq", 8, "softmax query heads"},
    {"Hkv", shape_key::kNoDefault, "softmax kv heads, a divisor of Hq (default: Hq)"},
    {"D", 128, "softmax head dim (Dk = Dv)"},
    {"H", 16, "gated_delta_rule query/key heads"},
    {"HV", shape_key::kNoDefault, "gated_delta_rule value heads, a multiple of H (default: H)"},
    {"K", 128, "gated_delta_rule key head dim"},
    {"V", 128, "gated_delta_rule value head dim"},
    {"T", shape_key::kNoDefault, "tokens (causal prefill; one gated_delta_rule sequence)"},
};

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

/// Softmax prefill inputs of the last shape asked for (one shape alive at a time).
struct prefill_inputs {
  index_t b = -1, hq = -1, hkv = -1, d = -1, t = -1;
  buffer<float> q, k, v, o;
};

prefill_inputs& prefill_data(index_t b, index_t hq, index_t hkv, index_t d, index_t t) {
  static prefill_inputs in;
  if (in.b != b || in.hq != hq || in.hkv != hkv || in.d != d || in.t != t) {
    in = prefill_inputs{};
    in.q = random_tensor<float>(std::size_t(b * t * hq * d), 1);
    in.k = random_tensor<float>(std::size_t(b * t * hkv * d), 2);
    in.v = random_tensor<float>(std::size_t(b * t * hkv * d), 3);
    in.o = buffer<float>(std::size_t(b * t * hq * d));
    in.b = b, in.hq = hq, in.hkv = hkv, in.d = d, in.t = t;
  }
  return in;
}

/// Args B, Hq, Hkv, D, T, threads.
template <bool Dispatched>
void BM_standard(benchmark::State& st) {
  const index_t B = st.range(0), Hq = st.range(1), Hkv = st.range(2), D = st.range(3),
                T = st.range(4);
  auto& in = prefill_data(B, Hq, Hkv, D, T);
  attnkit::softmax_params p;
  p.causal = true;
  p.exec = &pool(int(st.range(5)));
  const auto q = attnkit::make_view<const float>(in.q.data(), B, T, Hq, D);
  const auto k = attnkit::make_view<const float>(in.k.data(), B, T, Hkv, D);
  const auto v = attnkit::make_view<const float>(in.v.data(), B, T, Hkv, D);
  const auto o = attnkit::make_view(in.o.data(), B, T, Hq, D);
  paired_calls<Dispatched>(
      st, [&] { attnkit::dispatch::standard_attention(p, q, k, v, o); },
      [&] { attnkit::standard_attention(p, q, k, v, o); }, in.o.data());
  st.counters["GFLOPS"] = rate(attention_flops(B, Hq, T, T, D, D, true) / 1e9);
}

/// Args H, HV, K, V, T, threads.
template <bool Dispatched>
void BM_gated_delta(benchmark::State& st) {
  const recurrent_shape sh{st.range(0), st.range(1), st.range(2), st.range(3), /*unit_qk=*/true};
  const index_t T = st.range(4);
  auto& d = recurrent_data(sh, 1, T);
  const recurrent_views w = views_of(sh, d, 1, T, d.ht.data());
  attnkit::delta_params p;
  p.algo = attnkit::algorithm::chunk;
  p.exec = &pool(int(st.range(5)));
  paired_calls<Dispatched>(
      st,
      [&] { attnkit::dispatch::gated_delta_rule(p, w.q, w.k, w.v, w.gs, w.beta, w.o, w.state); },
      [&] { attnkit::gated_delta_rule(p, w.q, w.k, w.v, w.gs, w.beta, w.o, w.state); }, d.o.data());
  const double flop = attnkit::variant_by_name("gated_delta_rule").nominal_flop(sh.K, sh.V);
  st.counters["GFLOPS"] = rate(flop * double(T * sh.HV) / 1e9);
}

void register_rows(int64_t B, int64_t Hq, int64_t Hkv, int64_t D, int64_t H, int64_t HV, int64_t K,
                   int64_t V, const std::vector<int64_t>& Ts) {
  for (const bool dispatched : {true, false}) {
    const std::string impl = dispatched ? "/impl:dispatch" : "/impl:native";
    auto* s = benchmark::RegisterBenchmark(
        ("BM_dispatch_standard_attention" + impl).c_str(),
        skip_on_error(dispatched ? BM_standard<true> : BM_standard<false>));
    s->ArgNames({"B", "Hq", "Hkv", "D", "T", "threads"})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    s->ArgsProduct({{B}, {Hq}, {Hkv}, {D}, Ts, thread_counts()});
    auto* g = benchmark::RegisterBenchmark(
        ("BM_dispatch_gated_delta_rule" + impl).c_str(),
        skip_on_error(dispatched ? BM_gated_delta<true> : BM_gated_delta<false>));
    g->ArgNames({"H", "HV", "K", "V", "T", "threads"})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    g->ArgsProduct({{H}, {HV}, {K}, {V}, Ts, thread_counts()});
  }
}

const bool registered = [] {
  register_rows(1, 8, 8, 128, 16, 16, 128, 128, {1024, 4096});
  return true;
}();

void register_shape(const user_shape& u) {
  const int64_t Hq = u.get("Hq"), Hkv = u.has("Hkv") ? u.get("Hkv") : Hq;
  const int64_t H = u.get("H"), HV = u.has("HV") ? u.get("HV") : H;
  if (Hkv > Hq || Hq % Hkv != 0)
    throw u.error("Hkv", "Hq = " + std::to_string(Hq) + " is not a multiple of it");
  if (HV < H || HV % H != 0)
    throw u.error("HV", "it is not a multiple of H = " + std::to_string(H));
  if (!u.has("T")) throw shape_error("shape '" + u.text() + "': needs key 'T'");
  register_rows(u.get("B"), Hq, Hkv, u.get("D"), H, HV, u.get("K"), u.get("V"), {u.get("T")});
}

}  // namespace

int main(int argc, char** argv) {
  return attnkit_bench::bench_main(argc, argv, kShapeKeys, register_shape);
}
