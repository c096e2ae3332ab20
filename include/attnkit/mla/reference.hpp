// SPDX-License-Identifier: Apache-2.0
// Naive references of the MLA kernels (same names and contracts as kernel.hpp, in
// attnkit::reference): plain loops for the decompression and the absorption products (sums in
// double), then the softmax family's reference.
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <vector>

#include "../core/latent_cache.hpp"
#include "../softmax/reference.hpp"
#include "kernel.hpp"
#include "params.hpp"

namespace attnkit {
namespace reference {

/// Reference of attnkit::mla_attention_absorbed: the softmax reference over the latent cache seen
/// as one kv head (keys [c ; k_pe], values c).
template <class Q, class Cache, class O, class KN = const typename Cache::value_type>
void mla_attention_absorbed(const mla_params& p, tensor_view<Q, 4> q, const Cache& cache,
                            tensor_view<O, 4> o, const softmax_extras<accum_t<Q>>& x = {},
                            tensor_view<KN, 3> kv_new = {}) {
  const char* fn = "reference::mla_attention_absorbed";
  const index_t width = attnkit::detail::check_absorbed(fn, q, cache, o, kv_new);
  const double scale = attnkit::detail::mla_scale(fn, p, p.dn, width - cache.dc);
  tensor_view<KN, 4> k_new, v_new;
  if (kv_new.present())
    k_new = attnkit::detail::one_head(kv_new, width),
    v_new = attnkit::detail::one_head(kv_new, cache.dc);
  reference::standard_attention_kvcache(attnkit::detail::mla_softmax_params(p, scale), q,
                                        attnkit::detail::as_kv_cache(cache), o, x, k_new, v_new);
}

/// Reference of attnkit::mla_absorb_q.
template <class Q, class W, class QA>
void mla_absorb_q(const mla_params&, tensor_view<Q, 4> q_nope, tensor_view<Q, 4> q_pe,
                  tensor_view<W, 3> w_uk, tensor_view<QA, 4> q_abs) {
  const index_t Dn = q_nope.extent(3), Dr = q_pe.extent(3), Dc = w_uk.extent(2);
  attnkit::detail::check_tensor({"reference::mla_absorb_q", "q_abs", "B,T,H,Dc+Dr"}, q_abs,
                                {q_nope.extent(0), q_nope.extent(1), q_nope.extent(2), Dc + Dr});
  for (index_t b = 0; b < q_nope.extent(0); ++b)
    for (index_t t = 0; t < q_nope.extent(1); ++t)
      for (index_t h = 0; h < q_nope.extent(2); ++h) {
        for (index_t c = 0; c < Dc; ++c) {
          double acc = 0;
          for (index_t d = 0; d < Dn; ++d)
            acc += double(q_nope(b, t, h, d)) * double(w_uk(h, d, c));
          q_abs(b, t, h, c) = static_cast<std::remove_const_t<QA>>(acc);
        }
        for (index_t r = 0; r < Dr; ++r) q_abs(b, t, h, Dc + r) = q_pe(b, t, h, r);
      }
}

/// Reference of attnkit::mla_absorb_o.
template <class OL, class W, class O>
void mla_absorb_o(const mla_params&, tensor_view<OL, 4> o_lat, tensor_view<W, 3> w_uv,
                  tensor_view<O, 4> o) {
  const index_t Dc = o_lat.extent(3), Dv = w_uv.extent(1);
  attnkit::detail::check_tensor({"reference::mla_absorb_o", "o", "B,T,H,Dv"}, o,
                                {o_lat.extent(0), o_lat.extent(1), o_lat.extent(2), Dv});
  for (index_t b = 0; b < o_lat.extent(0); ++b)
    for (index_t t = 0; t < o_lat.extent(1); ++t)
      for (index_t h = 0; h < o_lat.extent(2); ++h)
        for (index_t d = 0; d < Dv; ++d) {
          double acc = 0;
          for (index_t c = 0; c < Dc; ++c) acc += double(w_uv(h, d, c)) * double(o_lat(b, t, h, c));
          o(b, t, h, d) = static_cast<std::remove_const_t<O>>(acc);
        }
}

/// Reference of attnkit::mla_attention_naive: per head k = [w_uk[h] c ; k_pe], v = w_uv[h] c,
/// q = [q_nope ; q_pe], then the softmax reference (Dk = Dn + Dr, Dv).
template <class Q, class C, class W, class O>
void mla_attention_naive(const mla_params& p, tensor_view<Q, 4> q_nope, tensor_view<Q, 4> q_pe,
                         tensor_view<C, 3> c_kv, tensor_view<C, 3> k_pe, tensor_view<W, 3> w_uk,
                         tensor_view<W, 3> w_uv, tensor_view<O, 4> o,
                         const softmax_extras<accum_t<Q>>& x = {}) {
  using A = accum_t<Q>;
  const char* fn = "reference::mla_attention_naive";
  const auto s = attnkit::detail::check_naive(fn, q_nope, q_pe, c_kv, k_pe, w_uk, w_uv, o);
  const double scale = attnkit::detail::mla_scale(fn, p, s.Dn, s.Dr);
  const index_t Dk = s.Dn + s.Dr;
  std::vector<A> qd(std::size_t(s.B * s.Tq * s.H * Dk)), kd(std::size_t(s.B * s.Tk * s.H * Dk)),
      vd(std::size_t(s.B * s.Tk * s.H * s.Dv));
  for (index_t b = 0; b < s.B; ++b)
    for (index_t h = 0; h < s.H; ++h) {
      for (index_t t = 0; t < s.Tk; ++t) {
        A* k = kd.data() + ((b * s.Tk + t) * s.H + h) * Dk;
        A* v = vd.data() + ((b * s.Tk + t) * s.H + h) * s.Dv;
        for (index_t d = 0; d < s.Dn; ++d) {
          double acc = 0;
          for (index_t c = 0; c < s.Dc; ++c)
            acc += to_compute<double>(w_uk(h, d, c)) * to_compute<double>(c_kv(b, t, c));
          k[d] = A(acc);
        }
        for (index_t r = 0; r < s.Dr; ++r) k[s.Dn + r] = to_compute<A>(k_pe(b, t, r));
        for (index_t d = 0; d < s.Dv; ++d) {
          double acc = 0;
          for (index_t c = 0; c < s.Dc; ++c)
            acc += to_compute<double>(w_uv(h, d, c)) * to_compute<double>(c_kv(b, t, c));
          v[d] = A(acc);
        }
      }
      for (index_t t = 0; t < s.Tq; ++t) {
        A* q = qd.data() + ((b * s.Tq + t) * s.H + h) * Dk;
        for (index_t d = 0; d < s.Dn; ++d) q[d] = to_compute<A>(q_nope(b, t, h, d));
        for (index_t r = 0; r < s.Dr; ++r) q[s.Dn + r] = to_compute<A>(q_pe(b, t, h, r));
      }
    }
  reference::standard_attention(attnkit::detail::mla_softmax_params(p, scale),
                                make_view<const A>(qd.data(), s.B, s.Tq, s.H, Dk),
                                make_view<const A>(kd.data(), s.B, s.Tk, s.H, Dk),
                                make_view<const A>(vd.data(), s.B, s.Tk, s.H, s.Dv), o, x);
}

/// Reference of attnkit::mla_attention: the naive form (both forms compute the same result).
template <class Q, class C, class W, class O>
void mla_attention(const mla_params& p, tensor_view<Q, 4> q_nope, tensor_view<Q, 4> q_pe,
                   tensor_view<C, 3> c_kv, tensor_view<C, 3> k_pe, tensor_view<W, 3> w_uk,
                   tensor_view<W, 3> w_uv, tensor_view<O, 4> o,
                   const softmax_extras<accum_t<Q>>& x = {}) {
  reference::mla_attention_naive(p, q_nope, q_pe, c_kv, k_pe, w_uk, w_uv, o, x);
}

}  // namespace reference
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
