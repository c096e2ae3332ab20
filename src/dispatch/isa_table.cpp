// SPDX-License-Identifier: Apache-2.0
// ISA unit, the table: the unit's one global symbol, attnkit_dispatch_table_<isa>().
#include "unit.hpp"

extern "C" ATTNKIT_DISPATCH_GETTER_DECL(ATTNKIT_DISPATCH_ISA) {
  namespace unit = attnkit::dispatch::detail::ATTNKIT_DISPATCH_ISA;
  static constexpr attnkit::dispatch::detail::kernel_table table = {
#define ATTNKIT_DISPATCH_KERNEL(name, slot, P, params, args, tmpl) &unit::slot,
#define ATTNKIT_DISPATCH_SOFTMAX ATTNKIT_DISPATCH_KERNEL
#define ATTNKIT_DISPATCH_LINEAR ATTNKIT_DISPATCH_KERNEL
#define ATTNKIT_DISPATCH_DELTA ATTNKIT_DISPATCH_KERNEL
#include "kernels.inc"
#undef ATTNKIT_DISPATCH_KERNEL
  };
  return &table;
}
