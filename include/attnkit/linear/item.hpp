// SPDX-License-Identifier: Apache-2.0
// What the linear family's recurrent and chunk algorithms share: the worker's buffers, the
// per-call context (the validated views of one call) and the row I/O of one (sequence, head).
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <type_traits>

#include "../core/chunk_kernels.hpp"
#include "../core/config.hpp"
#include "../core/gating.hpp"
#include "../core/simd.hpp"
#include "params.hpp"

namespace attnkit {
namespace detail {
namespace linear_impl {

// ---------------------------------------------------------------------------------------------
// Per-item context: pointers to the (validated) tensors of one (sequence, head).

template <class A>
struct workspace {
  aligned_vector<A> S, q, k, kt, kh, qg, v, am, ob, g, e, pre, suf, tmp, cs, z, a;
  prefetch_queue pf;  // chunk algorithm: the next unit's rows
};

template <class A, class Q, class Kt, class Vt, class O, class Gr>
struct item_ctx {
  const linear_shape& sh;
  const linear_params& p;
  const tensor_view<Q, 4>& q;
  const tensor_view<Kt, 4>& k;
  const tensor_view<Vt, 4>& v;
  const tensor_view<O, 4>& o;
  const linear_states<A>& s;
  const Gr& gate;
};

/// Prefetches the q, k, v, o (and gate) rows of token t of batch row b, head h into L2 (tokens of
/// one head are H*K elements apart in memory, too far apart for the hardware prefetchers).
template <class Ctx>
ATTNKIT_ALWAYS_INLINE void prefetch_token(const Ctx& c, index_t b, index_t t, index_t h) {
  simd::prefetch<2>(&c.q(b, t, h, 0), c.sh.K);
  simd::prefetch<2>(&c.k(b, t, h, 0), c.sh.K);
  simd::prefetch<2>(&c.v(b, t, h, 0), c.sh.V);
  simd::prefetch<2>(&c.o(b, t, h, 0), c.sh.V, true);
  if constexpr (std::decay_t<decltype(c.gate)>::kind == gate_kind::channel)
    simd::prefetch<2>(&c.gate.g(b, t, h, 0), c.sh.K);
}

/// Writes o row t (V values of out, divided by q~ . z + 1e-10 with normalize; z updated with k).
template <class A, class Arch, class Ctx>
ATTNKIT_ALWAYS_INLINE void write_out(const Ctx& c, index_t b, index_t t, index_t h, const A* out,
                                     const A* qrow, const A* krow, A* z, index_t Kp) {
  A f = A(1);
  if (c.p.normalize) {
    using B = xsimd::batch<A, Arch>;
    constexpr index_t W = index_t(B::size);
    for (index_t i = 0; i < Kp; i += W)
      (B::load_unaligned(z + i) + B::load_unaligned(krow + i)).store_unaligned(z + i);
    f = A(1) / (dot<A, Arch>(qrow, z, Kp) + A(1e-10));
  }
  store_row<A, Arch>(out, &c.o(b, t, h, 0), c.sh.V, f);
}

/// The key sum of head h from / to state row `row` of z0 / zt (the sequence's row, or its pool
/// row with state_indices); an absent z0 reads as zeros.
template <class A, class Ctx>
void load_z(const Ctx& c, index_t row, index_t h, A* z, index_t Kp) {
  for (index_t d = 0; d < Kp; ++d)
    z[d] = (c.s.z0.present() && d < c.sh.K) ? c.s.z0(row, 0, h, d) : A(0);
}
template <class A, class Ctx>
void store_z(const Ctx& c, index_t row, index_t h, const A* z) {
  if (c.s.zt.present())
    for (index_t d = 0; d < c.sh.K; ++d) c.s.zt(row, 0, h, d) = z[d];
}

}  // namespace linear_impl
}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
