// SPDX-License-Identifier: Apache-2.0
// Linear-attention family benchmarks, next to ceilings measured in the same
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
//   bench_linear --attnkit_shape=H:16,K:128,V:128,T:8192,batch:8   a model's shape (also
//                                                 ATTNKIT_BENCH_SHAPE; --help lists the keys)
#include <attnkit/linear.hpp>

#include "bench_recurrent.hpp"

namespace {

using namespace attnkit_bench;
using attnkit::algorithm;

constexpr index_t kH = 16, kK = 128, kV = 128, kC = 64;
const recurrent_shape kShape{kH, kH, kK, kV, /*unit_qk=*/false};

/// One call of the variant on the harness's views (state h0 -> ht, in place for decode).
void call(const std::string& name, const attnkit::linear_params& p, const recurrent_views& w) {
  if (name == "linear_attn")
    attnkit::linear_attn(p, w.q, w.k, w.v, w.o, w.state);
  else if (name == "simple_gla")
    attnkit::simple_gla(p, w.q, w.k, w.v, w.gs, w.o, w.state);
  else
    attnkit::gla(p, w.q, w.k, w.v, w.gc, w.o, w.state);
}

/// FLOP the algorithm executes per token and head: recurrent the variant's nominal count; chunk
/// 4KV + (C+1)(K+V) (the causal triangles of Q K^T and A V).
double exec_flop_per_token_head(const std::string& name, algorithm algo, const recurrent_shape& s) {
  if (algo == algorithm::recurrent) return attnkit::variant_by_name(name).nominal_flop(s.K, s.V);
  return 4.0 * double(s.K) * double(s.V) + double(kC + 1) * double(s.K + s.V);
}

const recurrent_family<attnkit::linear_params>& family() {
  static const recurrent_family<attnkit::linear_params> f = [] {
    recurrent_family<attnkit::linear_params> r;
    r.variants = {"linear_attn", "simple_gla", "gla"};
    r.call_views = call;
    r.flop = exec_flop_per_token_head;
    r.extra = [](benchmark::State& st, const std::string&, algorithm, const recurrent_shape& s,
                 double tokens) {
      st.counters["GFLOPS_nominal_4KV"] =
          rate(tokens * double(s.HV) * 4.0 * double(s.K) * double(s.V) / 1e9);
    };
    return r;
  }();
  return f;
}

const bool registered = [] {
  register_recurrent_benchmarks(kShape, {1024, 4096, 16384}, family());
  return true;
}();

void register_shape(const user_shape& u) { register_recurrent_shape(u, family(), false); }

}  // namespace

int main(int argc, char** argv) {
  return attnkit_bench::bench_main(argc, argv, recurrent_shape_keys(), register_shape);
}
