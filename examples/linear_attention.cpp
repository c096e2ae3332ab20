// SPDX-License-Identifier: Apache-2.0
// attnkit demo: gated linear attention (GLA, fla's chunk_gla / fused_recurrent_gla) serving a
// varlen batch: two sequences of different lengths packed into one row (B = 1, cu_seqlens), one
// state row per sequence.
//   1. prefill: both prompts (70 and 37 tokens) in one call with the chunk algorithm; the final
//      states ht [N = 2, H, K, V] are kept, and outputs and states are checked against the naive
//      reference (attnkit::reference::gla, same inputs, double math);
//   2. decode: 3 more tokens per sequence, one packed call per step (one token of each sequence),
//      recurrent algorithm, updating the states in place (h0 == ht);
//   3. check: the decoded outputs equal the matching rows of one prefill over all 73 + 40 tokens.
// Exit status 1 on a mismatch beyond float round-off.
//
// Per sequence and head, with state S in R^{K x V} and per-key-channel log gates g_t <= 0:
//   S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t scale   (scale = K^-0.5)
#include <algorithm>
#include <attnkit/linear.hpp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <utility>
#include <vector>

using attnkit::index_t;

namespace {

// The four inputs of gla for some tokens, packed along T: q, k [1,T,H,K], v [1,T,H,V],
// g [1,T,H,K] (row-major).
struct packed {
  index_t T = 0, H = 0, K = 0, V = 0;
  std::vector<float> q, k, v, g;
  auto view(const std::vector<float>& x, index_t d) const {
    return attnkit::make_view(x.data(), index_t(1), T, H, d);
  }
};

// Copies the token ranges [begin, end) of `all`, in order, into a new packed batch.
packed gather(const packed& all, const std::vector<std::pair<index_t, index_t>>& ranges) {
  packed out{0, all.H, all.K, all.V, {}, {}, {}, {}};
  auto copy = [](const std::vector<float>& src, std::vector<float>& dst, index_t row, index_t b,
                 index_t e) {
    dst.insert(dst.end(), src.begin() + b * row, src.begin() + e * row);
  };
  for (const auto& [b, e] : ranges) {
    copy(all.q, out.q, all.H * all.K, b, e);
    copy(all.k, out.k, all.H * all.K, b, e);
    copy(all.v, out.v, all.H * all.V, b, e);
    copy(all.g, out.g, all.H * all.K, b, e);
    out.T += e - b;
  }
  return out;
}

double max_abs_diff(const std::vector<float>& x, const std::vector<float>& y) {
  double m = 0;
  for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, double(std::abs(x[i] - y[i])));
  return m;
}
double max_abs(const std::vector<float>& x) {
  double m = 0;
  for (float e : x) m = std::max(m, double(std::abs(e)));
  return m;
}

}  // namespace

int main() {
  // Shapes: 4 heads, K = V = 64; prompts of 70 and 37 tokens (the first spans two 64-token
  // chunks), then 3 decode steps each.
  const index_t H = 4, K = 64, V = 64, L0 = 70, L1 = 37, steps = 3, T0 = L0 + steps,
                T1 = L1 + steps, N = 2;

  // All tokens of both sequences, packed: sequence 0 is tokens [0, T0), sequence 1 [T0, T0+T1).
  // Gates as fla's GLA layer makes them: g = logsigmoid(x) / 16, so exp(g) in (0, 1).
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.f, 1.f);
  packed all{T0 + T1, H, K, V, {}, {}, {}, {}};
  for (auto* buf : {&all.q, &all.k, &all.v, &all.g}) {
    buf->resize(std::size_t(all.T * H * (buf == &all.v ? V : K)));
    for (auto& x : *buf) x = nd(rng);
  }
  for (auto& x : all.g) x = -std::log1p(std::exp(-x)) / 16;  // logsigmoid(x) / 16 <= 0

  // The state of both sequences: [N, H, K, V], row n = sequence n.
  std::vector<float> state(std::size_t(N * H * K * V));
  const auto sv = attnkit::make_view(state.data(), N, H, K, V);

  // 1. Prefill both prompts in one packed call: cu_seqlens {0, 70, 107}.
  const packed pr = gather(all, {{0, L0}, {T0, T0 + L1}});
  const std::vector<std::int32_t> cu_prompt = {0, std::int32_t(L0), std::int32_t(L0 + L1)};
  const auto cu_pv = attnkit::make_view(cu_prompt.data(), N + 1);
  attnkit::linear_params p;  // scale defaults to K^-0.5, chunk_size to 64
  p.algo = attnkit::algorithm::chunk;
  std::vector<float> o_prompt(std::size_t(pr.T * H * V));
  attnkit::gla(p, pr.view(pr.q, K), pr.view(pr.k, K), pr.view(pr.v, V), pr.view(pr.g, K),
               attnkit::make_view(o_prompt.data(), index_t(1), pr.T, H, V),
               attnkit::recurrent_state<float>{{}, sv, cu_pv});

  // The naive reference on the same inputs: per-token recurrence in double.
  std::vector<float> o_ref(o_prompt.size()), state_ref(state.size());
  attnkit::reference::gla(
      p, pr.view(pr.q, K), pr.view(pr.k, K), pr.view(pr.v, V), pr.view(pr.g, K),
      attnkit::make_view(o_ref.data(), index_t(1), pr.T, H, V),
      attnkit::recurrent_state<float>{{}, attnkit::make_view(state_ref.data(), N, H, K, V), cu_pv});
  const double d_prefill = max_abs_diff(o_prompt, o_ref) / max_abs(o_ref);
  const double d_state = max_abs_diff(state, state_ref) / max_abs(state_ref);

  // Reference for the decode: one chunked prefill over all tokens, cu_seqlens {0, 73, 113}.
  const std::vector<std::int32_t> cu_all = {0, std::int32_t(T0), std::int32_t(T0 + T1)};
  std::vector<float> o_full(std::size_t(all.T * H * V));
  attnkit::gla(p, all.view(all.q, K), all.view(all.k, K), all.view(all.v, V), all.view(all.g, K),
               attnkit::make_view(o_full.data(), index_t(1), all.T, H, V),
               attnkit::recurrent_state<float>{{}, {}, attnkit::make_view(cu_all.data(), N + 1)});

  // 2. Decode: each step packs token L_n + step of both sequences (cu_seqlens {0, 1, 2}) and
  //    updates the states in place (h0 and ht: the same view).
  attnkit::linear_params pd = p;
  pd.algo = attnkit::algorithm::recurrent;
  const std::vector<std::int32_t> cu_step = {0, 1, 2};
  const attnkit::recurrent_state<float> in_place{sv, sv, attnkit::make_view(cu_step.data(), N + 1)};
  std::vector<float> o_step(std::size_t(N * H * V)), o_expected(o_step.size());
  double d_decode = 0;
  for (index_t step = 0; step < steps; ++step) {
    const index_t t0 = L0 + step, t1 = T0 + L1 + step;  // the tokens' rows in `all`
    const packed st = gather(all, {{t0, t0 + 1}, {t1, t1 + 1}});
    attnkit::gla(pd, st.view(st.q, K), st.view(st.k, K), st.view(st.v, V), st.view(st.g, K),
                 attnkit::make_view(o_step.data(), index_t(1), N, H, V), in_place);
    // 3. Compare with rows t0 and t1 of the full prefill.
    std::copy_n(o_full.begin() + t0 * H * V, H * V, o_expected.begin());
    std::copy_n(o_full.begin() + t1 * H * V, H * V, o_expected.begin() + H * V);
    d_decode = std::max(d_decode, max_abs_diff(o_step, o_expected) / max_abs(o_full));
  }

  std::printf("attnkit gated linear attention (GLA) demo\n");
  std::printf(
      "  H=%td K=%td V=%td, varlen B=1: prompts %td + %td tokens (chunk), decode %td steps "
      "(recurrent, in place)\n",
      H, K, V, L0, L1, steps);
  std::printf("  relative max diff, chunk prefill vs reference::gla: o %.3g, ht %.3g\n", d_prefill,
              d_state);
  std::printf("  relative max diff, prefill+decode vs one prefill:   o %.3g\n", d_decode);
  const bool ok = d_prefill <= 1e-4 && d_state <= 1e-4 && d_decode <= 1e-4;
  std::printf("  %s\n", ok ? "OK" : "MISMATCH");
  return ok ? 0 : 1;
}
