// SPDX-License-Identifier: Apache-2.0
// ISA unit, linear-attention family (linear_attn, simple_gla, gla).
#include <attnkit/linear/kernel.hpp>

#include "unit.hpp"

namespace attnkit::dispatch::detail::ATTNKIT_DISPATCH_ISA {
#define ATTNKIT_DISPATCH_SOFTMAX ATTNKIT_DISPATCH_SKIP
#define ATTNKIT_DISPATCH_LINEAR ATTNKIT_DISPATCH_DEFINE
#define ATTNKIT_DISPATCH_DELTA ATTNKIT_DISPATCH_SKIP
#include "kernels.inc"
}  // namespace attnkit::dispatch::detail::ATTNKIT_DISPATCH_ISA
