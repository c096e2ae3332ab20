// SPDX-License-Identifier: Apache-2.0
// Fast MLA kernels (math: params.hpp):
//   mla_attention_absorbed  decode / multi-token prediction over a latent cache: one kv head of
//                           Dc + Dr keys whose first Dc values are the values (views of the same
//                           rows); the H query heads (times Tq) of a sequence form one tile of the
//                           softmax family's packed kernel, so each latent row is read once per
//                           call, not once per head; split-KV with merge, LSE, sinks
//   mla_attention_naive     prefill: keys and values decompressed per head (GEMMs), then the
//                           softmax family's kernel with Dk = Dn + Dr != Dv
//   mla_absorb_q / _o       the absorption GEMMs q~ = w_uk^T q_nope (with q_pe appended) and
//                           o = w_uv o~, batched over heads
//   mla_attention           one call from the model's tensors in either form, picked by shape
//                           (mla_params::form; params.hpp: kMlaNaiveMinQueries)
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <Eigen/Core>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../core/latent_cache.hpp"
#include "../core/workspace.hpp"
#include "../softmax/kernel.hpp"
#include "params.hpp"

namespace attnkit {
namespace detail {

template <class A>
using mla_matrix = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class A>
using mla_map = Eigen::Map<mla_matrix<A>, 0, Eigen::OuterStride<>>;
template <class A>
using mla_cmap = Eigen::Map<const mla_matrix<A>, 0, Eigen::OuterStride<>>;

/// Rows [0, n) x columns [0, m) of a view whose last dimension has stride 1, as an Eigen map with
/// row stride `ld`.
template <class T>
auto mla_rows(T* p, index_t n, index_t m, index_t ld) {
  using A = std::remove_const_t<T>;
  if constexpr (std::is_const_v<T>)
    return mla_cmap<A>(p, n, m, Eigen::OuterStride<>(ld));
  else
    return mla_map<A>(p, n, m, Eigen::OuterStride<>(ld));
}

/// Absorbed-form checks: the latent cache, q [B,Tq,H,Dc+Dr], o [B,Tq,H,Dc], kv_new [B,Tn,Dc+Dr].
template <class Q, class Cache, class O, class KN>
index_t check_absorbed(const char* fn, const tensor_view<Q, 4>& q, const Cache& cache,
                       const tensor_view<O, 4>& o, const tensor_view<KN, 3>& kv_new) {
  const index_t width = check_latent(fn, cache);
  check_tensor({fn, "q", "B,Tq,H,Dc+Dr"}, q, {-1, -1, -1, -1});
  if (q.extent(3) != width)
    fail(fn, ": tensor 'q' [B,Tq,H,Dc+Dr] dim 3 (Dc+Dr): expected ", width,
         " (Dc + Dr of the latent cache rows), got ", q.extent(3));
  check_tensor({fn, "o", "B,Tq,H,Dc"}, o, {q.extent(0), q.extent(1), q.extent(2), -1});
  if (o.extent(3) != cache.dc)
    fail(fn, ": tensor 'o' [B,Tq,H,Dc] dim 3 (Dc): expected ", cache.dc,
         " (Dc of the latent cache, option 'dc'), got ", o.extent(3));
  if (kv_new.present())
    check_tensor({fn, "kv_new", "B,Tnew,Dc+Dr"}, kv_new, {q.extent(0), -1, width});
  return width;
}

template <class T, std::size_t R>
void require_rows(const char* fn, const char* name, const char* axes, const tensor_view<T, R>& v) {
  require_inner_contiguous({fn, name, axes}, v);
}

}  // namespace detail

/// Absorbed MLA over a latent cache (latent_cache or paged_latent_cache): q [B,Tq,H,Dc+Dr]
/// (w_uk-absorbed nope part, then the rotated rope part; mla_absorb_q) attends over the cache's
/// seqlens[b] tokens (+ Tnew appended first from kv_new [B,Tnew,Dc+Dr]; the caller advances
/// seqlens) with keys [c ; k_pe] and values c -> o [B,Tq,H,Dc] (then mla_absorb_o). Optional
/// sinks [H], lse [B,H,Tq]. p.scale 0 needs p.dn (the default is (Dn + Dr)^-0.5, not the row
/// width's). Causal rows are bottom-right.
template <class Q, class Cache, class O, class KN = const typename Cache::value_type,
          class Arch = simd::default_arch>
void mla_attention_absorbed(const mla_params& p, tensor_view<Q, 4> q, const Cache& cache,
                            tensor_view<O, 4> o, const softmax_extras<accum_t<Q>>& x = {},
                            tensor_view<KN, 3> kv_new = {}) {
  const char* fn = "mla_attention_absorbed";
  const index_t width = detail::check_absorbed(fn, q, cache, o, kv_new);
  const double scale = detail::mla_scale(fn, p, p.dn, width - cache.dc);
  tensor_view<KN, 4> k_new, v_new;
  if (kv_new.present())
    k_new = detail::one_head(kv_new, width), v_new = detail::one_head(kv_new, cache.dc);
  detail::cache_entry<Arch>(fn, detail::mla_softmax_params(p, scale), q, detail::as_kv_cache(cache),
                            o, x, k_new, v_new);
}

/// q_abs [B,T,H,Dc+Dr] = [w_uk[h]^T q_nope[b,t,h] ; q_pe[b,t,h]] with q_nope [B,T,H,Dn], q_pe
/// [B,T,H,Dr], w_uk [H,Dn,Dc]: one [T, Dn] x [Dn, Dc] GEMM per (sequence, head). One element
/// type (float or double) for all; last dimensions with stride 1.
template <class Q, class W, class QA>
void mla_absorb_q(const mla_params& p, tensor_view<Q, 4> q_nope, tensor_view<Q, 4> q_pe,
                  tensor_view<W, 3> w_uk, tensor_view<QA, 4> q_abs) {
  using A = std::remove_const_t<QA>;
  static_assert(
      std::is_same_v<std::remove_const_t<Q>, A> && std::is_same_v<std::remove_const_t<W>, A> &&
          std::is_floating_point_v<A>,
      "attnkit::mla_absorb_q: q_nope, q_pe, w_uk and q_abs share one float or double type");
  const char* fn = "mla_absorb_q";
  detail::check_tensor({fn, "q_nope", "B,T,H,Dn"}, q_nope, {-1, -1, -1, -1});
  const index_t B = q_nope.extent(0), T = q_nope.extent(1), H = q_nope.extent(2),
                Dn = q_nope.extent(3);
  detail::check_tensor({fn, "q_pe", "B,T,H,Dr"}, q_pe, {B, T, H, -1});
  detail::check_tensor({fn, "w_uk", "H,Dn,Dc"}, w_uk, {H, Dn, -1});
  const index_t Dr = q_pe.extent(3), Dc = w_uk.extent(2);
  detail::check_tensor({fn, "q_abs", "B,T,H,Dc+Dr"}, q_abs, {B, T, H, Dc + Dr});
  detail::require_rows(fn, "q_nope", "B,T,H,Dn", q_nope);
  detail::require_rows(fn, "q_pe", "B,T,H,Dr", q_pe);
  detail::require_rows(fn, "w_uk", "H,Dn,Dc", w_uk);
  detail::require_rows(fn, "q_abs", "B,T,H,Dc+Dr", q_abs);
  detail::check_no_self_overlap({fn, "q_abs", "B,T,H,Dc+Dr"}, q_abs);
  detail::check_disjoint(fn, "q_abs", q_abs, "q_nope", q_nope);
  detail::check_disjoint(fn, "q_abs", q_abs, "q_pe", q_pe);
  detail::check_disjoint(fn, "q_abs", q_abs, "w_uk", w_uk);
  if (B * T * H == 0) return;
  detail::resolve(p.exec).parallel_for(B * H, [&](index_t item) {
    const index_t b = item / H, h = item % H;
    auto dst = detail::mla_rows(&q_abs(b, 0, h, 0), T, Dc, q_abs.stride(1));
    dst.noalias() = detail::mla_rows(&q_nope(b, 0, h, 0), T, Dn, q_nope.stride(1)) *
                    detail::mla_rows(&w_uk(h, 0, 0), Dn, Dc, w_uk.stride(1));
    for (index_t t = 0; t < T; ++t)
      for (index_t r = 0; r < Dr; ++r) q_abs(b, t, h, Dc + r) = q_pe(b, t, h, r);
  });
}

/// o [B,T,H,Dv] = w_uv[h] o_lat[b,t,h] with o_lat [B,T,H,Dc], w_uv [H,Dv,Dc]: one [T, Dc] x
/// [Dc, Dv] GEMM per (sequence, head). One element type; last dimensions with stride 1.
template <class OL, class W, class O>
void mla_absorb_o(const mla_params& p, tensor_view<OL, 4> o_lat, tensor_view<W, 3> w_uv,
                  tensor_view<O, 4> o) {
  using A = std::remove_const_t<O>;
  static_assert(std::is_same_v<std::remove_const_t<OL>, A> &&
                    std::is_same_v<std::remove_const_t<W>, A> && std::is_floating_point_v<A>,
                "attnkit::mla_absorb_o: o_lat, w_uv and o share one float or double type");
  const char* fn = "mla_absorb_o";
  detail::check_tensor({fn, "o_lat", "B,T,H,Dc"}, o_lat, {-1, -1, -1, -1});
  const index_t B = o_lat.extent(0), T = o_lat.extent(1), H = o_lat.extent(2), Dc = o_lat.extent(3);
  detail::check_tensor({fn, "w_uv", "H,Dv,Dc"}, w_uv, {H, -1, Dc});
  const index_t Dv = w_uv.extent(1);
  detail::check_tensor({fn, "o", "B,T,H,Dv"}, o, {B, T, H, Dv});
  detail::require_rows(fn, "o_lat", "B,T,H,Dc", o_lat);
  detail::require_rows(fn, "w_uv", "H,Dv,Dc", w_uv);
  detail::require_rows(fn, "o", "B,T,H,Dv", o);
  detail::check_no_self_overlap({fn, "o", "B,T,H,Dv"}, o);
  detail::check_disjoint(fn, "o", o, "o_lat", o_lat);
  detail::check_disjoint(fn, "o", o, "w_uv", w_uv);
  if (B * T * H == 0) return;
  detail::resolve(p.exec).parallel_for(B * H, [&](index_t item) {
    const index_t b = item / H, h = item % H;
    auto dst = detail::mla_rows(&o(b, 0, h, 0), T, Dv, o.stride(1));
    dst.noalias() = detail::mla_rows(&o_lat(b, 0, h, 0), T, Dc, o_lat.stride(1)) *
                    detail::mla_rows(&w_uv(h, 0, 0), Dv, Dc, w_uv.stride(1)).transpose();
  });
}

/// Naive (decompressed) MLA, the prefill form: keys [w_uk[h] c ; k_pe] and values w_uv[h] c per
/// head (decompressed into the workspace by GEMMs), queries [q_nope ; q_pe], then standard
/// attention with Dk = Dn + Dr and Dv. q_nope [B,Tq,H,Dn], q_pe [B,Tq,H,Dr], c_kv [B,Tk,Dc],
/// k_pe [B,Tk,Dr], w_uk [H,Dn,Dc], w_uv [H,Dv,Dc] -> o [B,Tq,H,Dv]; sinks [H], lse [B,H,Tq].
template <class Q, class C, class W, class O, class Arch = simd::default_arch>
void mla_attention_naive(const mla_params& p, tensor_view<Q, 4> q_nope, tensor_view<Q, 4> q_pe,
                         tensor_view<C, 3> c_kv, tensor_view<C, 3> k_pe, tensor_view<W, 3> w_uk,
                         tensor_view<W, 3> w_uv, tensor_view<O, 4> o,
                         const softmax_extras<accum_t<Q>>& x = {}) {
  using A = accum_t<Q>;
  const char* fn = "mla_attention_naive";
  const auto s = detail::check_naive(fn, q_nope, q_pe, c_kv, k_pe, w_uk, w_uv, o);
  const double scale = detail::mla_scale(fn, p, s.Dn, s.Dr);
  const index_t Dk = s.Dn + s.Dr;
  detail::workspace_plan plan(fn);
  plan.add("decompressed queries", {s.B, s.Tq, s.H, Dk}, sizeof(A), 1)
      .add("decompressed keys", {s.B, s.Tk, s.H, Dk}, sizeof(A), 1)
      .add("decompressed values", {s.B, s.Tk, s.H, s.Dv}, sizeof(A), 1)
      .add("latents and weights", {s.B * s.Tk + s.H * (s.Dn + s.Dv), s.Dc}, sizeof(A), 1);
  plan.run([&] {
    detail::aligned_vector<A> qd(std::size_t(s.B * s.Tq * s.H * Dk)),
        kd(std::size_t(s.B * s.Tk * s.H * Dk)), vd(std::size_t(s.B * s.Tk * s.H * s.Dv)),
        cw(std::size_t((s.B * s.Tk + s.H * (s.Dn + s.Dv)) * s.Dc));
    // c_kv and the weights as A, rows of Dc: [B*Tk] latents, then [H*Dn] w_uk, [H*Dv] w_uv rows
    A* const cm = cw.data();
    A* const wk = cm + s.B * s.Tk * s.Dc;
    A* const wv = wk + s.H * s.Dn * s.Dc;
    for (index_t b = 0; b < s.B; ++b)
      for (index_t t = 0; t < s.Tk; ++t)
        for (index_t c = 0; c < s.Dc; ++c)
          cm[(b * s.Tk + t) * s.Dc + c] = to_compute<A>(c_kv(b, t, c));
    for (index_t h = 0; h < s.H; ++h)
      for (index_t c = 0; c < s.Dc; ++c) {
        for (index_t d = 0; d < s.Dn; ++d)
          wk[(h * s.Dn + d) * s.Dc + c] = to_compute<A>(w_uk(h, d, c));
        for (index_t d = 0; d < s.Dv; ++d)
          wv[(h * s.Dv + d) * s.Dc + c] = to_compute<A>(w_uv(h, d, c));
      }
    // per (sequence, head): K[:, h, :Dn] = C w_uk[h]^T, V[:, h, :] = C w_uv[h]^T, K[:, h, Dn:] =
    // k_pe
    detail::resolve(p.exec).parallel_for(s.B * s.H, [&](index_t item) {
      const index_t b = item / s.H, h = item % s.H;
      const auto lat = detail::mla_rows<const A>(cm + b * s.Tk * s.Dc, s.Tk, s.Dc, s.Dc);
      A* kb = kd.data() + (b * s.Tk * s.H + h) * Dk;
      A* vb = vd.data() + (b * s.Tk * s.H + h) * s.Dv;
      detail::mla_rows(kb, s.Tk, s.Dn, s.H * Dk).noalias() =
          lat * detail::mla_rows<const A>(wk + h * s.Dn * s.Dc, s.Dn, s.Dc, s.Dc).transpose();
      detail::mla_rows(vb, s.Tk, s.Dv, s.H * s.Dv).noalias() =
          lat * detail::mla_rows<const A>(wv + h * s.Dv * s.Dc, s.Dv, s.Dc, s.Dc).transpose();
      for (index_t t = 0; t < s.Tk; ++t)
        for (index_t r = 0; r < s.Dr; ++r)
          kb[t * s.H * Dk + s.Dn + r] = to_compute<A>(k_pe(b, t, r));
      for (index_t t = 0; t < s.Tq; ++t) {
        A* qrow = qd.data() + ((b * s.Tq + t) * s.H + h) * Dk;
        for (index_t d = 0; d < s.Dn; ++d) qrow[d] = to_compute<A>(q_nope(b, t, h, d));
        for (index_t r = 0; r < s.Dr; ++r) qrow[s.Dn + r] = to_compute<A>(q_pe(b, t, h, r));
      }
    });
    standard_attention<const A, const A, const A, O, Arch>(
        detail::mla_softmax_params(p, scale), make_view<const A>(qd.data(), s.B, s.Tq, s.H, Dk),
        make_view<const A>(kd.data(), s.B, s.Tk, s.H, Dk),
        make_view<const A>(vd.data(), s.B, s.Tk, s.H, s.Dv), o, x);
  });
}

/// MLA from the model's tensors (the inputs of mla_attention_naive) in the form p.form picks
/// (automatic: by the query count, see kMlaNaiveMinQueries). The absorbed form packs the rows
/// [c_kv ; k_pe] into a contiguous latent cache in the workspace and runs mla_absorb_q,
/// mla_attention_absorbed and mla_absorb_o; both forms compute the same result. Compute-type
/// (float or double) q_nope, q_pe, w_uk, w_uv and o; c_kv, k_pe may be bf16 / fp16.
template <class Q, class C, class W, class O, class Arch = simd::default_arch>
void mla_attention(const mla_params& p, tensor_view<Q, 4> q_nope, tensor_view<Q, 4> q_pe,
                   tensor_view<C, 3> c_kv, tensor_view<C, 3> k_pe, tensor_view<W, 3> w_uk,
                   tensor_view<W, 3> w_uv, tensor_view<O, 4> o,
                   const softmax_extras<accum_t<Q>>& x = {}) {
  const char* fn = "mla_attention";
  const auto s = detail::check_naive(fn, q_nope, q_pe, c_kv, k_pe, w_uk, w_uv, o);
  if (detail::resolve_form(p, s.Tq) == mla_form::naive) {
    mla_attention_naive<Q, C, W, O, Arch>(p, q_nope, q_pe, c_kv, k_pe, w_uk, w_uv, o, x);
    return;
  }
  using A = std::remove_const_t<O>;
  static_assert(
      std::is_same_v<std::remove_const_t<Q>, A> && std::is_same_v<std::remove_const_t<W>, A>,
      "attnkit::mla_attention: q_nope, q_pe, w_uk, w_uv and o share one compute type");
  using KV = std::remove_const_t<C>;
  const index_t Wd = s.Dc + s.Dr;
  mla_params pa = p;
  if (pa.scale == 0) pa.scale = detail::mla_scale(fn, p, s.Dn, s.Dr);
  detail::workspace_plan plan(fn);
  plan.add("absorbed queries", {s.B, s.Tq, s.H, Wd}, sizeof(A), 1)
      .add("latent outputs", {s.B, s.Tq, s.H, s.Dc}, sizeof(A), 1)
      .add("latent rows", {s.B, s.Tk, Wd}, sizeof(KV), 1);
  plan.run([&] {
    std::vector<A> qa(std::size_t(s.B * s.Tq * s.H * Wd)), ol(std::size_t(s.B * s.Tq * s.H * s.Dc));
    std::vector<KV> rows(std::size_t(s.B * s.Tk * Wd));
    std::vector<std::int32_t> seqlens(std::size_t(s.B), std::int32_t(s.Tk));
    for (index_t b = 0; b < s.B; ++b)
      for (index_t t = 0; t < s.Tk; ++t) {
        KV* r = rows.data() + (b * s.Tk + t) * Wd;
        for (index_t c = 0; c < s.Dc; ++c) r[c] = c_kv(b, t, c);
        for (index_t d = 0; d < s.Dr; ++d) r[s.Dc + d] = k_pe(b, t, d);
      }
    const auto q_abs = make_view(qa.data(), s.B, s.Tq, s.H, Wd);
    const auto o_lat = make_view(ol.data(), s.B, s.Tq, s.H, s.Dc);
    mla_absorb_q(pa, q_nope, q_pe, w_uk, q_abs);
    const latent_cache<KV> cache{make_view(rows.data(), s.B, s.Tk, Wd),
                                 make_view<const std::int32_t>(seqlens.data(), s.B), s.Dc};
    mla_attention_absorbed<A, latent_cache<KV>, A, const KV, Arch>(pa, q_abs, cache, o_lat, x);
    mla_absorb_o(pa, cview<A, 4>(o_lat), w_uv, o);
  });
}

}  // namespace attnkit

#include "../core/warnings_pop.hpp"
