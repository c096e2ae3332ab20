// SPDX-License-Identifier: Apache-2.0
// The dispatcher, compiled with the baseline flags: picks an ISA (ATTNKIT_ISA, else CPUID) and
// forwards each public function of attnkit/dispatch.hpp to that ISA's table.
#include <atomic>
#include <attnkit/core/error.hpp>
#include <attnkit/core/executor.hpp>
#include <attnkit/dispatch.hpp>
#include <cstdlib>
#include <cstring>

#include "table.hpp"

#ifndef ATTNKIT_DISPATCH_X86_64
#error "the dispatcher needs -DATTNKIT_DISPATCH_X86_64=0|1 (src/dispatch/CMakeLists.txt)"
#endif

namespace attnkit::dispatch {
namespace {

constexpr isa kWidestFirst[] = {isa::avx512, isa::avx2, isa::sse2, isa::generic};

const detail::kernel_table* table_of(isa i) {
#if ATTNKIT_DISPATCH_X86_64
  switch (i) {
    case isa::sse2:
      return attnkit_dispatch_table_sse2();
    case isa::avx2:
      return attnkit_dispatch_table_avx2();
    case isa::avx512:
      return attnkit_dispatch_table_avx512();
    default:
      return nullptr;
  }
#else
  return i == isa::generic ? attnkit_dispatch_table_generic() : nullptr;
#endif
}

bool cpu_runs(isa i) {
#if ATTNKIT_DISPATCH_X86_64
  // libgcc / compiler-rt report AVX and AVX-512 only when the OS saves their registers (XGETBV)
  __builtin_cpu_init();
  switch (i) {
    case isa::sse2:
      return true;  // part of x86-64
    case isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    default:
      return false;
  }
#else
  return i == isa::generic;
#endif
}

/// ATTNKIT_ISA if set and not empty, else the widest ISA this machine runs.
isa initial_isa() {
  const char* s = std::getenv("ATTNKIT_ISA");
  if (s && *s) {
    for (const isa i : kWidestFirst) {
      if (std::strcmp(s, isa_name(i)) != 0) continue;
      if (!isa_supported(i))
        attnkit::detail::fail("environment variable ATTNKIT_ISA='", s,
                              "': this machine (or this build) cannot run it");
      return i;
    }
    attnkit::detail::fail("environment variable ATTNKIT_ISA='", s,
                          "': expected sse2, avx2 or avx512 (x86-64), or generic");
  }
  for (const isa i : kWidestFirst)
    if (isa_supported(i)) return i;
  attnkit::detail::fail("attnkit::dispatch: no ISA of this build runs here");  // unreachable
}

std::atomic<int> g_active{-1};  // the active isa, -1 until the first call picks one

const detail::kernel_table& active_table() { return *table_of(active_isa()); }

/// params with exec set: calls with exec == nullptr run on the process-wide pool (an ISA unit's
/// own copy of default_executor() would start a second pool).
template <class P>
P with_exec(const P& p) {
  P e = p;
  if (!e.exec) e.exec = &default_executor();
  return e;
}

}  // namespace

const char* isa_name(isa i) {
  switch (i) {
    case isa::sse2:
      return "sse2";
    case isa::avx2:
      return "avx2";
    case isa::avx512:
      return "avx512";
    case isa::generic:
      return "generic";
  }
  return "unknown";
}

bool isa_supported(isa i) { return table_of(i) != nullptr && cpu_runs(i); }

isa active_isa() {
  int a = g_active.load(std::memory_order_acquire);
  if (a < 0) {
    int unset = -1;  // a force_isa() that ran meanwhile wins
    g_active.compare_exchange_strong(unset, int(initial_isa()), std::memory_order_acq_rel);
    a = g_active.load(std::memory_order_acquire);
  }
  return isa(a);
}

void force_isa(isa i) {
  if (!isa_supported(i))
    attnkit::detail::fail("attnkit::dispatch::force_isa(", isa_name(i),
                          "): this machine (or this build) cannot run it");
  g_active.store(int(i), std::memory_order_release);
}

#define ATTNKIT_DISPATCH_KERNEL(name, slot, P, params, args, tmpl)    \
  void name(const P& p, ATTNKIT_DISPATCH_UNPAREN params) {            \
    active_table().slot(with_exec(p), ATTNKIT_DISPATCH_UNPAREN args); \
  }
#define ATTNKIT_DISPATCH_SOFTMAX ATTNKIT_DISPATCH_KERNEL
#define ATTNKIT_DISPATCH_LINEAR ATTNKIT_DISPATCH_KERNEL
#define ATTNKIT_DISPATCH_DELTA ATTNKIT_DISPATCH_KERNEL
#include "kernels.inc"
#undef ATTNKIT_DISPATCH_KERNEL

}  // namespace attnkit::dispatch
