// SPDX-License-Identifier: Apache-2.0
// Varlen batches: validation of cu_seqlens offsets, shared by the softmax and linear families.
#pragma once

#include <cstdint>
#include <vector>

#include "config.hpp"
#include "error.hpp"
#include "tensor_view.hpp"

namespace attnkit::detail {

/// Reads cu_seqlens [N+1] (int32): cu[0] = 0, non-decreasing, cu[N] = total packed tokens.
inline std::vector<index_t> read_cu_seqlens(const char* fn, const char* name,
                                            const cview<std::int32_t, 1>& cu, index_t total) {
  check_tensor({fn, name, "N+1"}, cu, {-1});
  if (cu.extent(0) < 1) fail(fn, ": tensor '", name, "' dim 0 (N+1): must be >= 1, got 0");
  std::vector<index_t> out(std::size_t(cu.extent(0)));
  for (index_t i = 0; i < cu.extent(0); ++i) {
    out[std::size_t(i)] = cu(i);
    if (i == 0 && cu(0) != 0) fail(fn, ": tensor '", name, "'[0] must be 0, got ", cu(0));
    if (i > 0 && cu(i) < cu(i - 1))
      fail(fn, ": tensor '", name, "' must be non-decreasing, but [", i, "] = ", cu(i), " < [",
           i - 1, "] = ", cu(i - 1));
  }
  if (out.back() != total)
    fail(fn, ": tensor '", name, "'[N] = ", out.back(), " must equal the packed token count ",
         total);
  return out;
}

}  // namespace attnkit::detail
