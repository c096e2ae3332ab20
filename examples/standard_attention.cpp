// SPDX-License-Identifier: Apache-2.0
// attnkit demo: grouped-query attention as an LLM runs it.
//   1. prefill: a 32-token prompt attends causally to itself (dense q, k, v views);
//   2. decode: 4 more tokens, one at a time, each appended to a paged KV cache and attending to
//      everything cached so far;
//   3. check: the decoded outputs equal the last 4 rows of one causal prefill over all 36 tokens.
// Exit status 1 if they differ by more than float round-off.
#include <algorithm>
#include <attnkit/attnkit.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

using attnkit::index_t;

int main() {
  const auto t_start = std::chrono::steady_clock::now();
  // Shapes: batch 2, 8 query heads sharing 2 key/value heads (GQA 4:1), head dim 64.
  const index_t B = 2, Hq = 8, Hkv = 2, D = 64, prompt = 32, steps = 4, T = prompt + steps;

  // Random activations for all 36 positions, [B, T, H, D] row-major (FlashAttention layout).
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> q(std::size_t(B * T * Hq * D)), k(std::size_t(B * T * Hkv * D)),
      v(std::size_t(B * T * Hkv * D));
  for (auto* buf : {&q, &k, &v})
    for (auto& x : *buf) x = nd(rng);
  const auto qv = attnkit::make_view(static_cast<const float*>(q.data()), B, T, Hq, D);
  const auto kv = attnkit::make_view(static_cast<const float*>(k.data()), B, T, Hkv, D);
  const auto vv = attnkit::make_view(static_cast<const float*>(v.data()), B, T, Hkv, D);

  attnkit::softmax_params p;  // scale defaults to D^-0.5
  p.causal = true;

  // Reference answer: one causal prefill over all T tokens.
  std::vector<float> o_full(std::size_t(B * T * Hq * D));
  attnkit::standard_attention(p, qv, kv, vv, attnkit::make_view(o_full.data(), B, T, Hq, D));

  // 1. Prefill the prompt only.
  std::vector<float> o_prompt(std::size_t(B * prompt * Hq * D));
  attnkit::standard_attention(p, slice(qv, 1, 0, prompt), slice(kv, 1, 0, prompt),
                              slice(vv, 1, 0, prompt),
                              attnkit::make_view(o_prompt.data(), B, prompt, Hq, D));

  // 2. A paged KV cache: pages of 16 tokens, 3 per sequence; sequence b uses pages {5-b, 3-b, 1-b}
  //    (any order works: the block table maps token t to page table[b][t / 16], row t % 16).
  const index_t P = 16, pages_per_seq = 3, num_pages = B * pages_per_seq;
  std::vector<float> k_pages(std::size_t(num_pages * P * Hkv * D)),
      v_pages(std::size_t(num_pages * P * Hkv * D));
  std::vector<std::int32_t> table = {5, 3, 1, 4, 2, 0};
  std::vector<std::int32_t> seqlens(std::size_t(B), 0);
  attnkit::paged_kv_cache<float> cache{
      attnkit::make_view(k_pages.data(), num_pages, P, Hkv, D),
      attnkit::make_view(v_pages.data(), num_pages, P, Hkv, D),
      attnkit::make_view(static_cast<const std::int32_t*>(table.data()), B, pages_per_seq),
      attnkit::make_view(static_cast<const std::int32_t*>(seqlens.data()), B)};

  // Store the prompt's keys and values: a call with k_new/v_new appends them at seqlens[b] (here
  // the prompt's own queries attend too; their output matches the prefill above).
  std::vector<float> o_step(std::size_t(B * prompt * Hq * D));
  attnkit::standard_attention_kvcache(p, slice(qv, 1, 0, prompt), cache,
                                      attnkit::make_view(o_step.data(), B, prompt, Hq, D), {},
                                      slice(kv, 1, 0, prompt), slice(vv, 1, 0, prompt));
  for (auto& s : seqlens) s += std::int32_t(prompt);  // the caller advances the lengths

  // Decode: each step appends one token's k/v and attends with that token's query.
  double max_diff = 0;
  for (index_t i = 0; i < prompt * Hq * D * B; ++i)
    max_diff =
        std::max(max_diff, double(std::abs(o_step[std::size_t(i)] - o_prompt[std::size_t(i)])));
  std::vector<float> o_tok(std::size_t(B * Hq * D));
  for (index_t step = 0; step < steps; ++step) {
    const index_t t = prompt + step;
    attnkit::standard_attention_kvcache(p, slice(qv, 1, t, t + 1), cache,
                                        attnkit::make_view(o_tok.data(), B, 1, Hq, D), {},
                                        slice(kv, 1, t, t + 1), slice(vv, 1, t, t + 1));
    for (auto& s : seqlens) s += 1;
    // 3. Compare with row t of the full prefill.
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < Hq; ++h)
        for (index_t d = 0; d < D; ++d)
          max_diff = std::max(
              max_diff, double(std::abs(o_tok[std::size_t((b * Hq + h) * D + d)] -
                                        o_full[std::size_t(((b * T + t) * Hq + h) * D + d)])));
  }

  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_start).count();
  std::printf("attnkit %d.%d.%d standard attention demo\n", ATTNKIT_VERSION_MAJOR,
              ATTNKIT_VERSION_MINOR, ATTNKIT_VERSION_PATCH);
  std::printf(
      "  B=%td Hq=%td Hkv=%td D=%td: prefill %td tokens, decode %td tokens (paged cache, "
      "page size %td)\n",
      B, Hq, Hkv, D, prompt, steps, P);
  std::printf("  cached tokens per sequence: %d\n", int(seqlens[0]));
  std::printf("  max |prefill+decode - one prefill| = %.3g  (%.1f ms)\n", max_diff, ms);
  const bool ok = max_diff <= 1e-5;
  std::printf("  %s\n", ok ? "OK" : "MISMATCH");
  return ok ? 0 : 1;
}
