// SPDX-License-Identifier: Apache-2.0
// Delta-rule family benchmarks (delta_rule, gated_delta_rule, kda), next to ceilings measured in
// the same binary (bench_common.hpp).
//
//   BM_ceiling_fma|gemm|read/threads:N   FMA-only peak, Eigen 1024^3 float GEMM, 512 MiB read
//   BM_<variant>_<algo>/seq:T/threads:N   algo in {chunk (chunk size 64), recurrent, auto
//                                (algorithm::automatic: chunk of 32 here)}; B=1, H=HV=16,
//                                K=V=128, float q/k/v/o/beta/g, float state, h0 given and ht
//                                written, q/k unit-norm, T in {1024, 4096, 16384}
//   BM_<variant>_<algo>/H:h/HV:hv/seq:T/threads:N   the same for H=16, HV=32 (GVA) and for one
//                                sequence of 4 heads (H=HV=4: parallelism inside a sequence),
//                                T in {1024, 4096, 16384}
//       tokens_per_s   = B*T per call / wall seconds
//       GFLOPS         = FLOP per token per value head * B*T*HV / seconds / 1e9, with
//                        FLOP = 6*K*V (w = S^T k: K*V FMAs; S += k u^T and o = S^T q~: 2*K*V FMAs;
//                        an FMA = 2 FLOP) + K*V for the decay multiply (gated_delta_rule, kda);
//                        normalisation, beta and gate exponentials not counted
//                        (the same count for both algorithms: it compares them)
//       GFLOPS_chunk_executed = FLOP the chunk algorithm executes per token and value head:
//                        6*K*V (Z = [k;q] S0: 4KV, state update: 2KV) + 2*C*K (k k^T, q k^T
//                        lower halves) + 2*C*V (the two causal products u = T y, O += A u) +
//                        C^2/3 (T = (I + A)^-1), C = 64 (chunk rows) or 32 (auto rows)
//       pct_fma_peak   = 100 * GFLOPS / in-binary FMA peak at the same thread count
//       pct_fma_paired = 100 * GFLOPS / the FMA loop run after every call for as long as the call
//   BM_<variant>_decode/batch:B/threads:N   one token (T=1) per sequence for B sequences, states
//                                in a pool [2B,16,128,128] float (state_indices: every other
//                                row, last sequence first), updated in place (ht == h0)
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
//   bench_delta --attnkit_shape=H:16,HV:32,K:128,V:128,T:8192,batch:8   a model's shape (also
//                                                 ATTNKIT_BENCH_SHAPE; --help lists the keys)
#include <attnkit/delta.hpp>

#include "bench_recurrent.hpp"

namespace {

using namespace attnkit_bench;
using attnkit::algorithm;

constexpr index_t kH = 16, kK = 128, kV = 128, kC = 64;
static_assert(attnkit::detail::kAutoChunkSize == 32, "the auto rows' executed FLOP use C = 32");
const recurrent_shape kShape{kH, kH, kK, kV, /*unit_qk=*/true};

/// One call of the variant on the harness's views (state h0 -> ht, in place for decode).
void call(const std::string& name, const attnkit::delta_params& p, const recurrent_views& w) {
  if (name == "delta_rule")
    attnkit::delta_rule(p, w.q, w.k, w.v, w.beta, w.o, w.state);
  else if (name == "gated_delta_rule")
    attnkit::gated_delta_rule(p, w.q, w.k, w.v, w.gs, w.beta, w.o, w.state);
  else
    attnkit::kda(p, w.q, w.k, w.v, w.gc, w.beta, w.o, w.state);
}

/// FLOP the chunk algorithm executes per token and value head for chunks of C (see the top).
double chunk_flop_per_token_head(const recurrent_shape& s, double C) {
  const double K = double(s.K), V = double(s.V);
  return 6.0 * K * V + 2 * C * K + 2 * C * V + C * C / 3;
}

const recurrent_family<attnkit::delta_params>& family() {
  static const recurrent_family<attnkit::delta_params> f = [] {
    recurrent_family<attnkit::delta_params> r;
    r.variants = {"delta_rule", "gated_delta_rule", "kda"};
    r.call_views = call;
    // nominal FLOP for both algorithms (the same count compares them)
    r.flop = [](const std::string& name, algorithm, const recurrent_shape& s) {
      return attnkit::variant_by_name(name).nominal_flop(s.K, s.V);
    };
    r.extra = [](benchmark::State& st, const std::string&, algorithm algo, const recurrent_shape& s,
                 double tokens) {
      // auto runs chunk, with chunks of kAutoChunkSize, from kAutoChunkMinTokens tokens on
      if (algo == algorithm::recurrent ||
          (algo == algorithm::automatic && tokens < double(attnkit::detail::kAutoChunkMinTokens)))
        return;
      const double C = algo == algorithm::chunk ? kC : attnkit::detail::kAutoChunkSize;
      st.counters["GFLOPS_chunk_executed"] =
          rate(tokens * double(s.HV) * chunk_flop_per_token_head(s, C) / 1e9);
    };
    r.opt.with_auto = true;
    r.opt.shapes = {{kH, 2 * kH, kK, kV, true}, {4, 4, kK, kV, true}};
    r.opt.shape_seqs = {1024, 4096, 16384};
    r.opt.decode_pool = true;
    r.opt.grouped_v = true;
    return r;
  }();
  return f;
}

const bool registered = [] {
  register_recurrent_benchmarks(kShape, {1024, 4096, 16384}, family());
  return true;
}();

void register_shape(const user_shape& u) { register_recurrent_shape(u, family(), true); }

}  // namespace

int main(int argc, char** argv) {
  return attnkit_bench::bench_main(argc, argv, recurrent_shape_keys(), register_shape);
}
