// SPDX-License-Identifier: Apache-2.0
// ISA unit, delta-rule family (delta_rule, gated_delta_rule, kda).
#include <attnkit/delta/kernel.hpp>

#include "unit.hpp"

namespace attnkit::dispatch::detail::ATTNKIT_DISPATCH_ISA {
#define ATTNKIT_DISPATCH_SOFTMAX ATTNKIT_DISPATCH_SKIP
#define ATTNKIT_DISPATCH_LINEAR ATTNKIT_DISPATCH_SKIP
#define ATTNKIT_DISPATCH_DELTA ATTNKIT_DISPATCH_DEFINE
#include "kernels.inc"
}  // namespace attnkit::dispatch::detail::ATTNKIT_DISPATCH_ISA
