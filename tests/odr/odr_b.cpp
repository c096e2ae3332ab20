// SPDX-License-Identifier: Apache-2.0
// ODR test, translation unit B: the same dense instantiation as A, plus decode over a paged bf16
// cache checked against the reference.
#include <algorithm>
#include <attnkit/attnkit.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "odr.hpp"
#include "odr_problem.hpp"

namespace odr {

result run_b() {
  problem pb;
  result r;
  r.out = pb.run_kernel();
  r.pool = &attnkit::default_executor();
  r.cplusplus = __cplusplus;

  // Decode: the last query row of the problem over a paged bf16 cache holding all T keys
  // (page size 3, pages stored in reverse order).
  constexpr attnkit::index_t P = 3, pages = (problem::T + P - 1) / P;
  std::vector<attnkit::bf16> kp(std::size_t(pages * P * problem::Hkv * problem::D)), vp(kp.size());
  for (std::size_t i = 0; i < pb.k.size(); ++i) {
    const std::size_t t = i / (problem::Hkv * problem::D), rest = i % (problem::Hkv * problem::D);
    const std::size_t slot = std::size_t(pages - 1 - attnkit::index_t(t) / P) * P + t % P;
    kp[slot * problem::Hkv * problem::D + rest] = attnkit::bf16(pb.k[i]);
    vp[slot * problem::Hkv * problem::D + rest] = attnkit::bf16(pb.v[i]);
  }
  std::vector<std::int32_t> table(pages), lens{problem::T};
  for (attnkit::index_t i = 0; i < pages; ++i) table[std::size_t(i)] = std::int32_t(pages - 1 - i);
  attnkit::paged_kv_cache<attnkit::bf16> cache;
  cache.k_pages = attnkit::make_view(kp.data(), pages, P, problem::Hkv, problem::D);
  cache.v_pages = attnkit::make_view(vp.data(), pages, P, problem::Hkv, problem::D);
  cache.block_table = attnkit::make_view(static_cast<const std::int32_t*>(table.data()), 1, pages);
  cache.seqlens = attnkit::make_view(static_cast<const std::int32_t*>(lens.data()), 1);
  const float* q_last = pb.q.data() + (problem::T - 1) * problem::Hq * problem::D;
  std::vector<float> o(problem::Hq * problem::D), ref(o.size());
  auto params = pb.params();
  const auto q1 = attnkit::make_view(q_last, 1, 1, problem::Hq, problem::D);
  attnkit::standard_attention_kvcache(params, q1, cache,
                                      attnkit::make_view(o.data(), 1, 1, problem::Hq, problem::D));
  attnkit::reference::standard_attention_kvcache(
      params, q1, cache, attnkit::make_view(ref.data(), 1, 1, problem::Hq, problem::D));
  for (std::size_t i = 0; i < o.size(); ++i)
    r.max_err = std::max(r.max_err, double(std::abs(o[i] - ref[i])));
  try {  // Hq not a multiple of Hkv
    attnkit::standard_attention_kvcache(
        params, attnkit::make_view(q_last, 1, 1, problem::Hkv + 1, problem::D), cache,
        attnkit::make_view(o.data(), 1, 1, problem::Hkv + 1, problem::D));
  } catch (const attnkit::error& e) {
    r.threw = std::strstr(e.what(), "Hq") != nullptr;
  }
  return r;
}

}  // namespace odr
