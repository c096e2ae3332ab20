// SPDX-License-Identifier: Apache-2.0
// attnkit demo: a Gated DeltaNet layer as Qwen3-Next runs it (fla's chunk_gated_delta_rule /
// fused_recurrent_gated_delta_rule with the in-kernel transforms).
//   1. prefill: a 48-token prompt, from a zero state; the final state ht is kept;
//   2. decode: 4 more tokens, one at a time, each updating that state in place (h0 == ht);
//   3. check: the decoded outputs equal the last 4 rows of one prefill over all 52 tokens.
// Exit status 1 if they differ by more than float round-off.
//
// Per sequence and value head j (q/k head h = j / (HV/H), GVA), with state S in R^{K x V}:
//   S_t = exp(g_t) S_{t-1} + k_t beta_t (v_t - exp(g_t) S_{t-1}^T k_t)^T
//   o_t = S_t^T q_t scale                                         (scale = K^-0.5)
// The projections are stored raw (bf16) and transformed in the kernel, as fla's layers do:
//   q, k  <- l2norm(q), l2norm(k)                     (qk_l2norm)
//   beta  <- sigmoid(b)                               (beta_sigmoid; b = the raw logits)
//   g     <- -exp(A_log[j]) softplus(a + dt_bias[j])  (gate_fn softplus; a = the raw projection)
#include <algorithm>
#include <attnkit/delta.hpp>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using attnkit::bf16;
using attnkit::index_t;

int main() {
  // Shapes: batch 2, 2 query/key heads shared by 4 value heads (GVA 2:1), head dims K = V = 64
  // (Qwen3-Next: 16 q/k heads, 32 value heads, 128 dims).
  const index_t B = 2, H = 2, HV = 4, K = 64, V = 64, prompt = 48, steps = 4, T = prompt + steps;

  // Raw projections for all 52 positions, bf16, row-major:
  //   q, k [B,T,H,K]; v [B,T,HV,V]; a (gate input) and b (beta logits) [B,T,HV].
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<bf16> q(std::size_t(B * T * H * K)), k(std::size_t(B * T * H * K)),
      v(std::size_t(B * T * HV * V)), a(std::size_t(B * T * HV)), b(std::size_t(B * T * HV));
  for (auto* buf : {&q, &k, &v, &a, &b})
    for (auto& x : *buf) x = bf16(nd(rng));
  const auto qv = attnkit::make_view(static_cast<const bf16*>(q.data()), B, T, H, K);
  const auto kv = attnkit::make_view(static_cast<const bf16*>(k.data()), B, T, H, K);
  const auto vv = attnkit::make_view(static_cast<const bf16*>(v.data()), B, T, HV, V);
  const auto av = attnkit::make_view(static_cast<const bf16*>(a.data()), B, T, HV);
  const auto bv = attnkit::make_view(static_cast<const bf16*>(b.data()), B, T, HV);

  // Gate parameters [HV] (float, as fla keeps them), initialised as Qwen3-Next does:
  // A = exp(A_log) in [1, 16], dt = softplus(dt_bias) in [1e-3, 1e-1] (log-uniform).
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  std::vector<float> A_log(static_cast<std::size_t>(HV)), dt_bias(A_log.size());
  for (index_t j = 0; j < HV; ++j) {
    A_log[std::size_t(j)] = std::log(1.f + 15.f * ud(rng));
    const float dt = std::exp(std::log(1e-3f) + ud(rng) * (std::log(1e-1f) - std::log(1e-3f)));
    dt_bias[std::size_t(j)] = dt + std::log(-std::expm1(-dt));  // softplus^-1(dt)
  }
  const attnkit::delta_gate_params<float> gp{
      attnkit::make_view(static_cast<const float*>(A_log.data()), HV),
      attnkit::make_view(static_cast<const float*>(dt_bias.data()), HV)};

  attnkit::delta_params p;  // scale defaults to K^-0.5, algo to the (faster) recurrent one
  p.qk_l2norm = true;
  p.beta_sigmoid = true;
  p.gate_fn = attnkit::delta_gate_fn::softplus;

  // Reference answer: one prefill over all T tokens (zero initial state, final state unused).
  std::vector<float> o_full(std::size_t(B * T * HV * V));
  attnkit::gated_delta_rule(p, qv, kv, vv, av, bv, attnkit::make_view(o_full.data(), B, T, HV, V),
                            attnkit::recurrent_state<float>{}, gp);

  // 1. Prefill the prompt; the final state goes to `state` [N = B, HV, K, V] (float).
  std::vector<float> state(std::size_t(B * HV * K * V));
  const auto sv = attnkit::make_view(state.data(), B, HV, K, V);
  std::vector<float> o_prompt(std::size_t(B * prompt * HV * V));
  attnkit::gated_delta_rule(p, slice(qv, 1, 0, prompt), slice(kv, 1, 0, prompt),
                            slice(vv, 1, 0, prompt), slice(av, 1, 0, prompt),
                            slice(bv, 1, 0, prompt),
                            attnkit::make_view(o_prompt.data(), B, prompt, HV, V),
                            attnkit::recurrent_state<float>{{}, sv, {}}, gp);

  // 2. Decode: h0 and ht are the same view (same data and strides), so each step reads the
  //    state and overwrites it with the updated one. The recurrent kernel does the same float
  //    operations per token however the tokens are split into calls, so the match is usually exact.
  const attnkit::recurrent_state<float> in_place{sv, sv, {}};
  std::vector<float> o_tok(std::size_t(B * HV * V));
  double max_diff = 0, max_ref = 0;
  for (index_t i = 0; i < B * T * HV * V; ++i)
    max_ref = std::max(max_ref, double(std::abs(o_full[std::size_t(i)])));
  for (index_t bb = 0; bb < B; ++bb)  // the prompt's outputs match the first 48 rows too
    for (index_t i = 0; i < prompt * HV * V; ++i)
      max_diff =
          std::max(max_diff, double(std::abs(o_prompt[std::size_t(bb * prompt * HV * V + i)] -
                                             o_full[std::size_t(bb * T * HV * V + i)])));
  for (index_t step = 0; step < steps; ++step) {
    const index_t t = prompt + step;
    attnkit::gated_delta_rule(p, slice(qv, 1, t, t + 1), slice(kv, 1, t, t + 1),
                              slice(vv, 1, t, t + 1), slice(av, 1, t, t + 1),
                              slice(bv, 1, t, t + 1), attnkit::make_view(o_tok.data(), B, 1, HV, V),
                              in_place, gp);
    // 3. Compare with row t of the full prefill.
    for (index_t bb = 0; bb < B; ++bb)
      for (index_t i = 0; i < HV * V; ++i)
        max_diff =
            std::max(max_diff, double(std::abs(o_tok[std::size_t(bb * HV * V + i)] -
                                               o_full[std::size_t((bb * T + t) * HV * V + i)])));
  }

  double state_norm = 0;
  for (float x : state) state_norm += double(x) * x;
  std::printf("attnkit Gated DeltaNet demo\n");
  std::printf(
      "  B=%td H=%td HV=%td K=%td V=%td (bf16 inputs, float state): prefill %td tokens, decode %td "
      "tokens in place\n",
      B, H, HV, K, V, prompt, steps);
  std::printf("  final state: [%td, %td, %td, %td], Frobenius norm %.4g\n", B, HV, K, V,
              std::sqrt(state_norm));
  std::printf("  max |prefill+decode - one prefill| = %.3g (max |o| = %.3g)\n", max_diff, max_ref);
  const bool ok = max_diff <= 1e-4 * max_ref;
  std::printf("  %s\n", ok ? "OK" : "MISMATCH");
  return ok ? 0 : 1;
}
