// SPDX-License-Identifier: Apache-2.0
// The consumer of the installed attnkit::dispatch (find_package_dispatch/): the tiny causal
// problem of consumer.cpp through the dispatched standard_attention, on every ISA this machine
// runs, against the closed form.
#include <attnkit/dispatch.hpp>
#include <cmath>
#include <cstdio>

int main() {
  namespace dispatch = attnkit::dispatch;
  // B=1, T=2, H=1, D=2: q = k = rows of the identity, v = [[1,2],[3,4]], scale 1, causal.
  const float qk[4] = {1, 0, 0, 1}, v[4] = {1, 2, 3, 4};
  const double e = std::exp(1.0);
  const double want[4] = {1, 2, (1 + 3 * e) / (1 + e), (2 + 4 * e) / (1 + e)};
  attnkit::softmax_params p;
  p.scale = 1.0;
  p.causal = true;
  std::printf("active ISA: %s\n", dispatch::isa_name(dispatch::active_isa()));
  int bad = 0, runs = 0;
  for (const auto i :
       {dispatch::isa::sse2, dispatch::isa::avx2, dispatch::isa::avx512, dispatch::isa::generic}) {
    if (!dispatch::isa_supported(i)) continue;
    dispatch::force_isa(i);
    float out[4] = {};
    dispatch::standard_attention(
        p, attnkit::make_view(qk, 1, 2, 1, 2), attnkit::make_view(qk, 1, 2, 1, 2),
        attnkit::make_view(v, 1, 2, 1, 2), attnkit::make_view(out, 1, 2, 1, 2));
    ++runs;
    for (int j = 0; j < 4; ++j)
      if (std::abs(out[j] - want[j]) > 1e-5) ++bad;
    std::printf("%s: o = %.6f %.6f %.6f %.6f\n", dispatch::isa_name(i), double(out[0]),
                double(out[1]), double(out[2]), double(out[3]));
  }
  std::printf("attnkit::dispatch via find_package: %s\n", bad || !runs ? "FAILED" : "ok");
  return bad || !runs ? 1 : 0;
}
