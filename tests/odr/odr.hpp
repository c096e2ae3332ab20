// SPDX-License-Identifier: Apache-2.0
// ODR test: odr_a.cpp and odr_b.cpp both include the umbrella header and instantiate the same
// kernels; linking them into one binary fails if a header defines a non-inline function or
// variable, and odr_main.cpp checks that both translation units agree at run time.
#pragma once

#include <vector>

namespace odr {

struct result {
  std::vector<float> out;      // standard_attention output on the shared problem
  double max_err = 0;          // |kernel - reference| on that problem (or an extra check)
  const void* pool = nullptr;  // &attnkit::default_executor() as seen from this TU
  long cplusplus = 0;          // __cplusplus of this TU
  bool threw = false;          // a bad shape raised attnkit::error with a useful message
};

result run_a();
result run_b();

}  // namespace odr
