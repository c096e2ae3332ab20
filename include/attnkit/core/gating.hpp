// SPDX-License-Identifier: Apache-2.0
// Decay gates of the recurrent families, in log space (natural-log decays <= 0):
//   none        no decay
//   scalar      g [B,T,H]     one log decay per token and head (simple_gla, gated_delta_rule)
//   head_decay  g_gamma [H]   one fixed log decay per head (RetNet-style simple_gla)
//   channel     g [B,T,H,K]   one log decay per token, head and key channel (gla, kda)
// gate_reader<A, Arch, View> reads them: element-wise in double (references, transforms) or a
// whole row converted to A lanes (the kernels).
#pragma once

#include <array>
#include <cstddef>
#include <string>

#include "config.hpp"
#include "error.hpp"
#include "simd.hpp"
#include "tensor_view.hpp"
#include "types.hpp"

namespace attnkit {

/// The decay of a variant (chosen by its entry point, not by the caller).
enum class gate_kind { none, scalar, head_decay, channel };

namespace detail {

/// Log decays must be <= 0 (a positive one grows the state without bound: inf/NaN downstream).
/// Checked on the caller's gate tensor `name` (any rank) unless the gate goes through an in-kernel
/// transform; NaN is let through (it propagates like any other NaN input).
template <class G, std::size_t R>
void check_log_decays(const char* fn, const char* name, const char* axes,
                      const tensor_view<G, R>& g) {
  std::array<index_t, R> i{};
  const auto& ext = g.extents();
  for (std::size_t r = 0; r < R; ++r)
    if (ext[r] == 0) return;
  const index_t n = ext[R - 1], st = g.stride(R - 1);
  for (;;) {  // rows of the last dimension: a branch-free scan, then the index of a bad value
    const G* row = g.data() + g.offset(i);
    bool bad = false;
    if (st == 1)
      for (index_t c = 0; c < n; ++c) bad |= to_compute<double>(row[c]) > 0;
    else
      for (index_t c = 0; c < n; ++c) bad |= to_compute<double>(row[c * st]) > 0;
    for (index_t c = 0; bad && c < n; ++c) {
      const double x = to_compute<double>(row[c * st]);
      if (!(x > 0)) continue;
      i[R - 1] = c;
      std::string at;
      for (std::size_t r = 0; r < R; ++r) {
        if (r) at += ',';
        at += std::to_string(i[r]);
      }
      fail(fn, ": tensor '", name, "' [", axes, "] holds a positive log decay ", x, " at [", at,
           "]: gates are natural-log decays <= 0 (a raw gate needs an in-kernel transform)");
    }
    std::size_t r = R - 1;
    while (r > 0) {
      --r;
      if (++i[r] < ext[r]) break;
      i[r] = 0;
      if (r == 0) return;
    }
    if (R == 1) return;
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
