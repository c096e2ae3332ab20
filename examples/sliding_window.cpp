// SPDX-License-Identifier: Apache-2.0
// attnkit demo: a sliding-window layer (Mistral / Gemma style, model window W = 16 keys, plus 4
// StreamingLLM token sinks) decoding 200 tokens from a ring-buffer KV cache whose memory is
// W + n_sink + 1 token slots, however long the generation runs.
//   - RoPE is the caller's job: q and k are rotated at their absolute positions (NeoX half-split
//     pairs here) before k is appended to the cache; the ring keeps the rotated keys.
//   - The model-config window W becomes FlashAttention's window (W - 1, 0) through
//     attnkit::sliding_window_of_model (W keys visible including the current token).
//   - check: every decode step equals the same position of one dense sliding-window prefill over
//     all 200 tokens. Exit status 1 if they differ by more than float round-off.
#include <algorithm>
#include <attnkit/attnkit.hpp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

using attnkit::index_t;

// Rotates x [T, H, D] (row-major, D even) in place at positions pos0 .. pos0 + T - 1: NeoX /
// Llama half-split pairs (i, i + D/2), theta_i = base^(-2i / D).
void apply_rope(float* x, index_t T, index_t H, index_t D, index_t pos0, double base = 10000.0) {
  for (index_t t = 0; t < T; ++t)
    for (index_t h = 0; h < H; ++h) {
      float* r = x + (t * H + h) * D;
      for (index_t i = 0; i < D / 2; ++i) {
        const double ang = double(pos0 + t) * std::pow(base, -2.0 * double(i) / double(D));
        const double c = std::cos(ang), s = std::sin(ang), a = r[i], b = r[i + D / 2];
        r[i] = float(a * c - b * s);
        r[i + D / 2] = float(a * s + b * c);
      }
    }
}

int main() {
  const index_t Hq = 8, Hkv = 2, D = 32, T = 200, W = 16, n_sink = 4;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> q(std::size_t(T * Hq * D)), k(std::size_t(T * Hkv * D)),
      v(std::size_t(T * Hkv * D));
  for (auto* buf : {&q, &k, &v})
    for (auto& x : *buf) x = nd(rng);
  // RoPE at absolute positions 0 .. T-1 (the projections of each token would be rotated as they
  // are produced; here all at once).
  apply_rope(q.data(), T, Hq, D, 0);
  apply_rope(k.data(), T, Hkv, D, 0);
  const auto qv = attnkit::make_view(static_cast<const float*>(q.data()), 1, T, Hq, D);
  const auto kv = attnkit::make_view(static_cast<const float*>(k.data()), 1, T, Hkv, D);
  const auto vv = attnkit::make_view(static_cast<const float*>(v.data()), 1, T, Hkv, D);

  attnkit::softmax_params p = attnkit::sliding_window_of_model(W);  // window (15, 0), causal
  p.n_sink = n_sink;

  // Reference answer: one dense sliding-window prefill over all T tokens.
  std::vector<float> o_full(std::size_t(T * Hq * D));
  attnkit::sliding_window_attention(p, qv, kv, vv, attnkit::make_view(o_full.data(), 1, T, Hq, D));

  // The ring: n_sink slots keep tokens 0..3; the other W slots hold the last W tokens (a decode
  // step sees window_left + 1 = W keys including its own, so window_left + Tq + n_sink slots).
  const index_t cap = p.window_left + 1 + n_sink;
  std::vector<float> k_ring(std::size_t(cap * Hkv * D)), v_ring(std::size_t(cap * Hkv * D));
  std::vector<std::int32_t> seqlen = {0};
  const attnkit::ring_kv_cache<float> ring{
      attnkit::make_view(k_ring.data(), 1, cap, Hkv, D),
      attnkit::make_view(v_ring.data(), 1, cap, Hkv, D),
      attnkit::make_view(static_cast<const std::int32_t*>(seqlen.data()), 1), n_sink};

  double max_diff = 0;
  std::vector<float> o_tok(std::size_t(Hq * D));
  for (index_t t = 0; t < T; ++t) {
    // append token t (already rotated) and attend with its query
    attnkit::sliding_window_attention_kvcache(p, slice(qv, 1, t, t + 1), ring,
                                              attnkit::make_view(o_tok.data(), 1, 1, Hq, D), {},
                                              slice(kv, 1, t, t + 1), slice(vv, 1, t, t + 1));
    seqlen[0] += 1;  // the caller advances the length (the position of the next token)
    for (index_t i = 0; i < Hq * D; ++i)
      max_diff = std::max(
          max_diff, double(std::abs(o_tok[std::size_t(i)] - o_full[std::size_t(t * Hq * D + i)])));
  }

  std::printf("attnkit sliding-window demo: W=%td keys + %td sinks, %td tokens decoded\n", W,
              n_sink, T);
  std::printf("  ring cache: %td slots (%zu bytes), constant in the generation length\n", cap,
              (k_ring.size() + v_ring.size()) * sizeof(float));
  std::printf("  max |ring decode - dense window prefill| = %.3g\n", max_diff);
  const bool ok = max_diff <= 1e-5;
  std::printf("  %s\n", ok ? "OK" : "MISMATCH");
  return ok ? 0 : 1;
}
