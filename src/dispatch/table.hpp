// SPDX-License-Identifier: Apache-2.0
// The table of the dispatch library: one function pointer per kernel of kernels.inc, filled by
// each ISA unit (isa_table.cpp) and read by the dispatcher (dispatch.cpp). Private to the build.
#pragma once

#include <attnkit/core/kv_cache.hpp>
#include <attnkit/core/latent_cache.hpp>
#include <attnkit/core/recurrent_state.hpp>
#include <attnkit/core/tensor_view.hpp>
#include <attnkit/core/types.hpp>
#include <attnkit/delta/params.hpp>
#include <attnkit/linear/params.hpp>
#include <attnkit/mla/params.hpp>
#include <attnkit/softmax/params.hpp>

#define ATTNKIT_DISPATCH_UNPAREN(...) __VA_ARGS__
#define ATTNKIT_DISPATCH_CAT2(a, b) a##b
#define ATTNKIT_DISPATCH_CAT(a, b) ATTNKIT_DISPATCH_CAT2(a, b)

namespace attnkit::dispatch::detail {

// The function type of each slot: void(const params_type& p, parameters...).
#define ATTNKIT_DISPATCH_KERNEL(name, slot, P, params, args, tmpl) \
  using slot##_fn = void(const P& p, ATTNKIT_DISPATCH_UNPAREN params);
#define ATTNKIT_DISPATCH_SOFTMAX ATTNKIT_DISPATCH_KERNEL
#define ATTNKIT_DISPATCH_LINEAR ATTNKIT_DISPATCH_KERNEL
#define ATTNKIT_DISPATCH_DELTA ATTNKIT_DISPATCH_KERNEL
#include "kernels.inc"
#undef ATTNKIT_DISPATCH_KERNEL

/// One ISA's kernels, constant-initialised (no start-up code, no initialisation order).
struct kernel_table {
#define ATTNKIT_DISPATCH_KERNEL(name, slot, P, params, args, tmpl) slot##_fn* slot;
#define ATTNKIT_DISPATCH_SOFTMAX ATTNKIT_DISPATCH_KERNEL
#define ATTNKIT_DISPATCH_LINEAR ATTNKIT_DISPATCH_KERNEL
#define ATTNKIT_DISPATCH_DELTA ATTNKIT_DISPATCH_KERNEL
#include "kernels.inc"
#undef ATTNKIT_DISPATCH_KERNEL
};

}  // namespace attnkit::dispatch::detail

// The table getters, the only global symbols of the ISA units: extern "C" (one plain name for
// objcopy --keep-global-symbol) and default visibility (the units build with hidden).
#define ATTNKIT_DISPATCH_GETTER_DECL(isa)                                               \
  __attribute__((visibility("default"))) const attnkit::dispatch::detail::kernel_table* \
  ATTNKIT_DISPATCH_CAT(attnkit_dispatch_table_, isa)() noexcept
extern "C" {
ATTNKIT_DISPATCH_GETTER_DECL(sse2);
ATTNKIT_DISPATCH_GETTER_DECL(avx2);
ATTNKIT_DISPATCH_GETTER_DECL(avx512);
ATTNKIT_DISPATCH_GETTER_DECL(generic);
}
