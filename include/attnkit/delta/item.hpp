// SPDX-License-Identifier: Apache-2.0
// What the delta family's recurrent and chunk algorithms share: the per-call context (the
// validated views of one call) and the row loads with the in-kernel q/k L2 norm.
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <cmath>

#include "../core/config.hpp"
#include "../core/recurrent_state.hpp"
#include "../core/simd.hpp"
#include "params.hpp"

namespace attnkit {
namespace detail {
namespace delta_impl {

/// Everything an item needs: shape, options, views and the gate reader.
template <class A, class Q, class Kt, class Vt, class Bt, class O, class Gate>
struct item_ctx {
  const delta_shape& sh;
  const delta_params& p;
  const tensor_view<Q, 4>& q;
  const tensor_view<Kt, 4>& k;
  const tensor_view<Vt, 4>& v;
  const tensor_view<Bt, 3>& beta;
  const tensor_view<O, 4>& o;
  const recurrent_state<A>& s;
  const Gate& gate;  // gate(b, t, j, c): log decay (double)
};

/// Loads K elements of a [.,.,.,K] row as A, L2-normalised if asked, times `scale`.
template <class A, class Arch, class T>
void load_row(const T* src, index_t K, bool l2norm, A scale, A* dst) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  simd::convert<A, Arch>(src, dst, K);
  if (l2norm) {
    B ss(A(0));
    index_t c = 0;
    for (; c + W <= K; c += W) {
      const B x = B::load_unaligned(dst + c);
      ss = xsimd::fma(x, x, ss);
    }
    A tail = 0;
    for (; c < K; ++c) tail += dst[c] * dst[c];
    scale /= std::sqrt(simd::reduce_add(ss) + tail + A(1e-6));
  }
  if (scale != A(1))
    for (index_t c = 0; c < K; ++c) dst[c] *= scale;
}

}  // namespace delta_impl
}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
