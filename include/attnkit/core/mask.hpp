// SPDX-License-Identifier: Apache-2.0
// Visibility rules of the softmax family, FlashAttention conventions: causal is bottom-right
// aligned (query row i of Tq sits at position i + Tk - Tq), the window (left, right) is inclusive
// around that position and -1 means unbounded. Causal and window intersect.
#pragma once

#include <algorithm>

#include "config.hpp"

namespace attnkit {

struct mask_rule {
  bool causal = false;
  index_t window_left = -1;   // keys j >= pos - left are visible (-1: no bound)
  index_t window_right = -1;  // keys j <= pos + right are visible (-1: no bound)

  /// Per-element predicate (what the naive references use).
  bool visible(index_t i, index_t j, index_t tq, index_t tk) const {
    const index_t pos = i + tk - tq;
    if (causal && j > pos) return false;
    // Differences instead of pos -/+ window: a window up to the largest index_t cannot overflow.
    if (window_left >= 0 && pos - j > window_left) return false;
    if (window_right >= 0 && j - pos > window_right) return false;
    return j >= 0 && j < tk;
  }

  /// Inclusive visible key range [lo, hi] of query row i (empty when lo > hi). The fast kernels
  /// use this to skip work; tests check it against visible().
  void range(index_t i, index_t tq, index_t tk, index_t& lo, index_t& hi) const {
    const index_t pos = i + tk - tq;
    lo = 0;
    hi = tk - 1;
    if (causal) hi = std::min(hi, pos);
    if (window_left >= 0 && pos - lo > window_left) lo = pos - window_left;
    if (window_right >= 0 && hi - pos > window_right) hi = pos + window_right;
  }
};

}  // namespace attnkit
