// SPDX-License-Identifier: Apache-2.0
// Decay gates of the recurrent families, in log space (natural-log decays <= 0):
//   none        no decay
//   scalar      g [B,T,H]     one log decay per token and head (simple_gla, gated_delta_rule)
//   head_decay  g_gamma [H]   one fixed log decay per head (RetNet-style simple_gla)
//   channel     g [B,T,H,K]   one log decay per token, head and key channel (gla, kda)
// gate_reader<A, Arch, View> reads them: element-wise in double (references, transforms) or a
// whole row converted to A lanes (the kernels).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <string>
#include <type_traits>

#include "config.hpp"
#include "error.hpp"
#include "executor.hpp"
#include "simd.hpp"
#include "tensor_view.hpp"
#include "types.hpp"

namespace attnkit {

/// The decay of a variant (chosen by its entry point, not by the caller).
enum class gate_kind { none, scalar, head_decay, channel };

namespace detail {

/// Log decays must be <= 0 (a positive one grows the state without bound: inf/NaN downstream).
/// Checked on the caller's gate tensor `name` (any rank) unless the gate goes through an in-kernel
/// transform; NaN is let through (it propagates like any other NaN input). Rows of the last
/// dimension are scanned branch-free in blocks on `ex` (a [B,T,H,K] gate is as large as k: a
/// serial scan would cost a two-thread call a tenth of its time); the message names the first bad
/// value in index order, whatever the threads.
template <class G, std::size_t R>
void check_log_decays(const char* fn, const char* name, const char* axes,
                      const tensor_view<G, R>& g, executor* ex = nullptr) {
  const auto& ext = g.extents();
  index_t rows = 1;  // rows of the last dimension
  for (std::size_t r = 0; r < R; ++r) {
    if (ext[r] == 0) return;
    if (r + 1 < R) rows *= ext[r];
  }
  const index_t n = ext[R - 1], st = g.stride(R - 1);
  using C = std::conditional_t<std::is_same_v<G, double>, double, float>;  // exact for G
  const auto index_of = [&](index_t row) {  // the index of row's first element
    std::array<index_t, R> i{};
    for (std::size_t r = R - 1; r-- > 0;) {
      i[r] = row % ext[r];
      row /= ext[r];
    }
    return i;
  };
  const auto row_bad = [&](const G* x) {
    using B = xsimd::batch<C, simd::default_arch>;
    constexpr index_t W = index_t(B::size);
    index_t c = 0;
    bool bad = false;
    if (st == 1) {  // whole batches, then the tail
      auto any = B(C(0)) > B(C(0));
      for (; c + W <= n; c += W) any = any || (simd::load<C, simd::default_arch>(x + c) > B(C(0)));
      bad = xsimd::any(any);
    }
    for (; c < n; ++c) bad |= to_compute<C>(x[c * st]) > C(0);
    return bad;
  };
  // blocks of about 32K values; the lowest bad row wins (atomic minimum)
  const index_t per_block = std::max<index_t>(1, (index_t(1) << 15) / std::max<index_t>(n, 1));
  const index_t blocks = (rows + per_block - 1) / per_block;
  std::atomic<index_t> first{rows};
  const auto scan = [&](index_t b) {
    std::array<index_t, R> i = index_of(b * per_block);  // then stepped row by row
    for (index_t row = b * per_block; row < std::min(rows, (b + 1) * per_block); ++row) {
      if (row >= first.load(std::memory_order_relaxed)) return;
      if (row_bad(g.data() + g.offset(i))) {
        index_t f = first.load();
        while (row < f && !first.compare_exchange_weak(f, row)) continue;
        return;
      }
      for (std::size_t r = R - 1; r-- > 0;) {
        if (++i[r] < ext[r]) break;
        i[r] = 0;
      }
    }
  };
  if (ex && blocks > 1)
    ex->parallel_for(blocks, scan);
  else
    for (index_t b = 0; b < blocks; ++b) scan(b);
  const index_t row = first.load();
  if (row == rows) return;
  const G* x = g.data() + g.offset(index_of(row));
  for (index_t c = 0; c < n; ++c) {
    const double v = to_compute<double>(x[c * st]);
    if (!(v > 0)) continue;
    std::array<index_t, R> i = index_of(row);
    i[R - 1] = c;
    std::string at;
    for (std::size_t r = 0; r < R; ++r) {
      if (r) at += ',';
      at += std::to_string(i[r]);
    }
    fail(fn, ": tensor '", name, "' [", axes, "] holds a positive log decay ", v, " at [", at,
         "]: gates are natural-log decays <= 0 (a raw gate needs an in-kernel transform)");
  }
}

template <class A, class Arch, class GateView>
struct gate_reader;

template <class A, class Arch>
struct gate_reader<A, Arch, void> {  // no gate
  static constexpr gate_kind kind = gate_kind::none;
  double operator()(index_t, index_t, index_t, index_t) const { return 0; }
  void read(index_t, index_t, index_t, A*, index_t) const {}
};
template <class A, class Arch, class G>
struct gate_reader<A, Arch, tensor_view<G, 3>> {  // g [B,T,H]
  static constexpr gate_kind kind = gate_kind::scalar;
  tensor_view<G, 3> g;
  double operator()(index_t b, index_t t, index_t h, index_t) const {
    return to_compute<double>(g(b, t, h));
  }
  void read(index_t b, index_t t, index_t h, A* dst, index_t) const {
    dst[0] = to_compute<A>(g(b, t, h));
  }
};
template <class A, class Arch, class G>
struct gate_reader<A, Arch, tensor_view<G, 1>> {  // g_gamma [H]
  static constexpr gate_kind kind = gate_kind::head_decay;
  tensor_view<G, 1> g;
  double operator()(index_t, index_t, index_t h, index_t) const { return to_compute<double>(g(h)); }
  void read(index_t, index_t, index_t h, A* dst, index_t) const { dst[0] = to_compute<A>(g(h)); }
};
template <class A, class Arch, class G>
struct gate_reader<A, Arch, tensor_view<G, 4>> {  // g [B,T,H,K]
  static constexpr gate_kind kind = gate_kind::channel;
  tensor_view<G, 4> g;
  double operator()(index_t b, index_t t, index_t h, index_t c) const {
    return to_compute<double>(g(b, t, h, c));
  }
  void read(index_t b, index_t t, index_t h, A* dst, index_t K) const {
    simd::convert<A, Arch>(&g(b, t, h, 0), dst, K);
  }
};

}  // namespace detail
}  // namespace attnkit
