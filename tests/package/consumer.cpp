// SPDX-License-Identifier: Apache-2.0
// The consumer program of the package tests (find_package/, add_subdirectory/ and
// pkg_config_consumer.cmake build it with ATTNKIT_CONSUMER_VIA set to their way in): runs the
// reference and the kernel on a tiny causal problem and checks both against the closed form.
// ATTNKIT_CONSUMER_POOL runs the kernel on a two-thread attnkit::thread_pool instead of the
// serial executor.
#include <attnkit/attnkit.hpp>
#include <cmath>
#include <cstdio>

int main() {
  // B=1, T=2, H=1, D=2: q = k = rows of the identity, v = [[1,2],[3,4]], scale 1, causal.
  // Row 0 sees key 0 only (o = v0); row 1 weighs the keys by e^0 and e^1.
  const double qk[4] = {1, 0, 0, 1}, v[4] = {1, 2, 3, 4};
  const double e = std::exp(1.0);
  const double want[4] = {1, 2, (1 + 3 * e) / (1 + e), (2 + 4 * e) / (1 + e)};

  attnkit::softmax_params p;
  p.scale = 1.0;
  p.causal = true;
  double ref[4] = {};
  attnkit::reference::standard_attention(
      p, attnkit::make_view(qk, 1, 2, 1, 2), attnkit::make_view(qk, 1, 2, 1, 2),
      attnkit::make_view(v, 1, 2, 1, 2), attnkit::make_view(ref, 1, 2, 1, 2));
  float qf[4], vf[4], out[4] = {};
  for (int i = 0; i < 4; ++i) qf[i] = float(qk[i]), vf[i] = float(v[i]);
#ifdef ATTNKIT_CONSUMER_POOL
  attnkit::thread_pool exec(2);
#else
  attnkit::serial_executor exec;
#endif
  p.exec = &exec;
  attnkit::standard_attention(
      p, attnkit::make_view(qf, 1, 2, 1, 2), attnkit::make_view(qf, 1, 2, 1, 2),
      attnkit::make_view(vf, 1, 2, 1, 2), attnkit::make_view(out, 1, 2, 1, 2));
  int bad = 0;
  for (int i = 0; i < 4; ++i) {
    if (std::abs(ref[i] - want[i]) > 1e-12 || std::abs(out[i] - want[i]) > 1e-5) ++bad;
    std::printf("o[%d] = %.9f (reference %.9f, expected %.9f)\n", i, double(out[i]), ref[i],
                want[i]);
  }
  std::printf("attnkit %d.%d.%d via %s: %s\n", ATTNKIT_VERSION_MAJOR, ATTNKIT_VERSION_MINOR,
              ATTNKIT_VERSION_PATCH, ATTNKIT_CONSUMER_VIA, bad ? "FAILED" : "ok");
  return bad ? 1 : 0;
}
