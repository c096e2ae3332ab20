// SPDX-License-Identifier: Apache-2.0
// Visibility rules of the softmax family, FlashAttention conventions: causal is bottom-right
// aligned (query row i of Tq sits at position i + Tk - Tq), the window (left, right) is inclusive
// around that position and -1 means unbounded. Causal and window intersect; chunked-local
// attention (FA3 attention_chunk) narrows the window to the query's chunk; StreamingLLM token
// sinks (the first n_sink keys) stay visible beside the window, still causal.
#pragma once

#include <algorithm>

#include "config.hpp"

namespace attnkit {

struct mask_rule {
  bool causal = false;
  index_t window_left = -1;   // keys j >= pos - left are visible (-1: no bound)
  index_t window_right = -1;  // keys j <= pos + right are visible (-1: no bound)
  index_t n_sink = 0;         // keys j < n_sink stay visible beside the window (still causal)
  index_t chunk = 0;          // chunked-local: only keys with j / chunk == pos / chunk (0: off)

  /// Per-element predicate (what the naive references use): causal, and either inside the
  /// window and the query's chunk, or one of the first n_sink keys.
  bool visible(index_t i, index_t j, index_t tq, index_t tk) const {
    const index_t pos = i + tk - tq;
    if (j < 0 || j >= tk) return false;
    if (causal && j > pos) return false;
    if (j < n_sink) return true;
    // Differences instead of pos -/+ window: a window up to the largest index_t cannot overflow.
    if (window_left >= 0 && pos - j > window_left) return false;
    if (window_right >= 0 && j - pos > window_right) return false;
    if (chunk > 0 && floor_div(j, chunk) != floor_div(pos, chunk)) return false;
    return true;
  }

  /// Visible keys of query row i as two inclusive ranges: the window [lo, hi] (empty when
  /// lo > hi) and the sinks [0, sink_hi] below it (sink_hi < lo - 1; -1: none). Sinks that touch
  /// or overlap the window are merged into it. The fast kernels use this to skip work; tests
  /// check it against visible().
  void ranges(index_t i, index_t tq, index_t tk, index_t& lo, index_t& hi, index_t& sink_hi) const {
    const index_t pos = i + tk - tq;
    lo = 0;
    hi = tk - 1;
    if (causal) hi = std::min(hi, pos);
    const index_t causal_hi = hi;
    if (window_left >= 0 && pos - lo > window_left) lo = pos - window_left;
    if (window_right >= 0 && hi - pos > window_right) hi = pos + window_right;
    if (chunk > 0) {
      const index_t c0 = floor_div(pos, chunk) * chunk;  // pos's chunk: [c0, c0 + chunk)
      lo = std::max(lo, c0);
      if (hi - c0 > chunk - 1) hi = c0 + chunk - 1;
    }
    sink_hi = -1;
    if (n_sink > 0) {
      const index_t s = std::min({n_sink - 1, tk - 1, causal_hi});
      if (s < 0) return;
      if (lo > hi) {
        lo = 0, hi = s;  // only sinks
      } else if (lo <= s + 1) {
        lo = 0, hi = std::max(hi, s);
      } else {
        sink_hi = s;
      }
    }
  }

  /// The window range [lo, hi] alone (no sinks: n_sink == 0).
  void range(index_t i, index_t tq, index_t tk, index_t& lo, index_t& hi) const {
    index_t sink_hi;
    ranges(i, tq, tk, lo, hi, sink_hi);
  }

  /// Whether keys can be out of reach of a query (a window, sinks or chunks bound them).
  bool bounded() const { return window_left >= 0 || chunk > 0; }

 private:
  static index_t floor_div(index_t a, index_t b) {
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
  }
};

}  // namespace attnkit
