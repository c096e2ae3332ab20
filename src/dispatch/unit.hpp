// SPDX-License-Identifier: Apache-2.0
// Shared by the sources of an ISA unit (isa_*.cpp), which CMake compiles once per ISA with
// -DATTNKIT_DISPATCH_ISA=<sse2|avx2|avx512|generic> and that ISA's -m flags: the unit's namespace
// attnkit::dispatch::detail::<isa>, its xsimd architecture Arch and the declarations of its
// slot functions (kernels.inc).
#pragma once

#include <xsimd/xsimd.hpp>

#include "table.hpp"

#ifndef ATTNKIT_DISPATCH_ISA
#error \
    "an ISA unit needs -DATTNKIT_DISPATCH_ISA=sse2|avx2|avx512|generic (src/dispatch/CMakeLists.txt)"
#endif

#define ATTNKIT_DISPATCH_ARCH_sse2 xsimd::sse2
#define ATTNKIT_DISPATCH_ARCH_avx2 xsimd::fma3<xsimd::avx2>
#define ATTNKIT_DISPATCH_ARCH_avx512 xsimd::avx512bw
#define ATTNKIT_DISPATCH_ARCH_generic xsimd::default_arch

namespace attnkit::dispatch::detail::ATTNKIT_DISPATCH_ISA {

/// Named explicitly, not xsimd::default_arch: the unit's flags must enable exactly this arch.
using Arch = ATTNKIT_DISPATCH_CAT(ATTNKIT_DISPATCH_ARCH_, ATTNKIT_DISPATCH_ISA);
static_assert(Arch::supported(), "attnkit dispatch: the unit's -m flags do not enable its arch");

#define ATTNKIT_DISPATCH_KERNEL(name, slot, P, params, args, tmpl) \
  void slot(const P& p, ATTNKIT_DISPATCH_UNPAREN params);
#define ATTNKIT_DISPATCH_SOFTMAX ATTNKIT_DISPATCH_KERNEL
#define ATTNKIT_DISPATCH_LINEAR ATTNKIT_DISPATCH_KERNEL
#define ATTNKIT_DISPATCH_DELTA ATTNKIT_DISPATCH_KERNEL
#include "kernels.inc"
#undef ATTNKIT_DISPATCH_KERNEL

}  // namespace attnkit::dispatch::detail::ATTNKIT_DISPATCH_ISA

/// Defines the slot functions of one family: each calls its header-only template with Arch.
#define ATTNKIT_DISPATCH_DEFINE(name, slot, P, params, args, tmpl)   \
  void slot(const P& p, ATTNKIT_DISPATCH_UNPAREN params) {           \
    ATTNKIT_DISPATCH_UNPAREN tmpl(p, ATTNKIT_DISPATCH_UNPAREN args); \
  }
#define ATTNKIT_DISPATCH_SKIP(...)
