// SPDX-License-Identifier: Apache-2.0
// ODR test driver: both translation units must compute the same thing with the same shared state.
#include <cstdio>
#include <cstring>

#include "odr.hpp"

int main() {
  const odr::result a = odr::run_a(), b = odr::run_b();
  int failures = 0;
  auto check = [&](bool ok, const char* what) {
    std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
    failures += ok ? 0 : 1;
  };
  std::printf("__cplusplus: A = %ld, B = %ld, main = %ld\n", a.cplusplus, b.cplusplus,
              long(__cplusplus));
  check(a.cplusplus == 201703L && __cplusplus == 201703L && b.cplusplus == 202002L,
        "odr_a.cpp and the driver are C++17, odr_b.cpp is C++20");
  check(!a.out.empty() && a.out.size() == b.out.size() &&
            std::memcmp(a.out.data(), b.out.data(), a.out.size() * sizeof(float)) == 0,
        "the same kernel instantiation gives bitwise equal results in both TUs");
  check(a.pool == b.pool, "one default_executor() instance across TUs");
  check(a.max_err < 1e-5, "TU A: kernel matches the reference");
  check(b.max_err < 1e-4, "TU B: paged bf16 decode matches the reference");
  check(a.threw && b.threw, "both TUs throw attnkit::error naming the bad tensor");
  std::printf("odr: %d failure(s)\n", failures);
  return failures ? 1 : 0;
}
