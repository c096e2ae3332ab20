// SPDX-License-Identifier: Apache-2.0
// attnkit: version macros and small portability helpers used by every header.
#pragma once

#define ATTNKIT_VERSION_MAJOR 0
#define ATTNKIT_VERSION_MINOR 1
#define ATTNKIT_VERSION_PATCH 0

#if defined(__GNUC__) || defined(__clang__)
#define ATTNKIT_RESTRICT __restrict__
#define ATTNKIT_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ATTNKIT_RESTRICT
#define ATTNKIT_ALWAYS_INLINE inline
#endif

// Fully unrolls a short loop over a register tile (GCC keeps arrays of SIMD registers in memory
// at -O2 unless their loops are unrolled).
#if defined(__clang__)
#define ATTNKIT_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define ATTNKIT_UNROLL _Pragma("GCC unroll 16")
#else
#define ATTNKIT_UNROLL
#endif

// Calls attnkit::reference::fn when `use_reference` (a bool), else the fast attnkit::fn, with the
// same arguments (every kernel has a reference of the same signature): for harnesses that run
// both, such as tests, attnkit-run's --reference and benchmarks against the naive baseline.
#define ATTNKIT_CALL(use_reference, fn, ...) \
  do {                                       \
    if (use_reference)                       \
      ::attnkit::reference::fn(__VA_ARGS__); \
    else                                     \
      ::attnkit::fn(__VA_ARGS__);            \
  } while (0)

#include <cstddef>
#include <cstdint>

namespace attnkit {
/// Signed index type for extents, strides and positions (matches Eigen::Index).
using index_t = std::ptrdiff_t;
}  // namespace attnkit
