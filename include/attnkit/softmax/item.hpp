// SPDX-License-Identifier: Apache-2.0
// One work item of the softmax-family kernels, in two shapes that share the row softmax and the
// finalisation:
//   prefill_item  >= kSmallRows rows of one kv head: S = Q K^T and O = alpha O + P V as packed
//                 register tiles over K^T / V blocks (pre-packed per (sequence, kv head), or
//                 packed per block into the workspace)
//   decode_item   fewer rows, every kv head: row dot products against the cache rows read in
//                 place, keys walked in token order (each cached token row [Hkv, D] read once)
// For each block of kBlockN keys: scores, online softmax per row (masked columns excluded), then
// the P V update. The final o = acc / l (with the sink) and lse come from finalize_rows.
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "../core/online_softmax.hpp"
#include "../core/simd.hpp"
#include "params.hpp"
#include "tiles.hpp"

namespace attnkit {
namespace detail {

/// One work item: kv heads [hk, hk + nh), query positions [i0, i0 + nq), keys [kbeg, kend).
/// Its rows are r = (hh * nq + t) * G + g for kv head hk + hh, position i0 + t and query head
/// (hk + hh) * G + g. Prefill items have nh = 1 (packed micro-kernels); decode-shaped items
/// (fewer than kSmallRows rows per kv head) take every kv head, so each cached token row
/// [Hkv, D] is read once, sequentially, for all heads.
struct softmax_item {
  std::size_t seq;
  index_t hk, nh, i0, nq, kbeg, kend;
  index_t slot;  // partial-state slot (split-KV), -1 = write output directly
  bool sinks;    // visits the rows' token sinks too (the first split of a row block)

  /// Whether the item runs as prefill_item (packed tiles) rather than decode_item.
  bool packed(index_t group) const { return nh == 1 && nq * group >= softmax_tiling::kSmallRows; }
};

/// The key range [kmin, kmax] any row of an item sees (kmax < kmin: none).
struct key_span {
  index_t kmin, kmax;
};

/// The key passes of an item: its window (every row's window range clipped to the item's split,
/// in ws.lo / ws.hi) and, for the first split, the rows' token sinks below their windows.
struct item_spans {
  key_span window, sinks;
};

/// Visits the item's keys: visit(span) runs the block loop over ws.lo / ws.hi, first for the
/// sinks (the rows' ranges [0, sink_hi]), then for the windows.
template <class A, class Visit>
void visit_passes(const item_spans& sp, softmax_workspace<A>& ws, Visit visit) {
  if (sp.sinks.kmin <= sp.sinks.kmax) {
    std::fill(ws.lo.begin(), ws.lo.end(), index_t(0));
    ws.hi = ws.sink_hi;
    visit(sp.sinks);
    ws.lo = ws.window_lo;
    ws.hi = ws.window_hi;
  }
  if (sp.window.kmin <= sp.window.kmax) visit(sp.window);
}

/// Sizes the workspace for M rows, loads the scaled queries and each row's visible key ranges
/// (the window clipped to the item's split; the sinks when the item visits them); returns the
/// unions of those ranges.
template <class A, class Arch, class Q>
item_spans begin_item(const softmax_shape& sh, const softmax_seq& sq, const softmax_item& it,
                      const tensor_view<Q, 4>& q, A qscale, softmax_workspace<A>& ws) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  const index_t G = sh.group, M = it.nh * it.nq * G;
  const index_t Dkp = round_up(sh.Dk, W), Dvp = round_up(sh.Dv, 2 * W);
  ws.q.assign(std::size_t(M * Dkp), A(0));
  ws.acc.assign(std::size_t(M * Dvp), A(0));
  ws.s.resize(std::size_t(M * softmax_tiling::kBlockN));
  ws.alpha.resize(std::size_t(M));
  ws.st.assign(std::size_t(M), softmax_state<A>{});
  ws.lo.resize(std::size_t(M));
  ws.hi.resize(std::size_t(M));
  ws.sink_hi.resize(std::size_t(M));
  item_spans sp{{std::numeric_limits<index_t>::max(), -1}, {0, -1}};
  for (index_t t = 0; t < it.nq; ++t) {
    index_t lo, hi, sink_hi;
    sh.mask.ranges(it.i0 + t, sq.tq, sq.tk, lo, hi, sink_hi);
    lo = std::max(lo, it.kbeg);
    hi = std::min(hi, it.kend - 1);
    if (!it.sinks) sink_hi = -1;
    for (index_t hh = 0; hh < it.nh; ++hh)
      for (index_t g = 0; g < G; ++g) {
        const index_t r = (hh * it.nq + t) * G + g;
        ws.lo[std::size_t(r)] = lo;
        ws.hi[std::size_t(r)] = hi;
        ws.sink_hi[std::size_t(r)] = sink_hi;
        const Q* src = &q(sq.qb, sq.q0 + it.i0 + t, (it.hk + hh) * G + g, 0);
        simd::convert<A, Arch>(src, ws.q.data() + r * Dkp, sh.Dk, qscale);
      }
    if (lo <= hi) {
      sp.window.kmin = std::min(sp.window.kmin, lo);
      sp.window.kmax = std::max(sp.window.kmax, hi);
    }
    sp.sinks.kmax = std::max(sp.sinks.kmax, sink_hi);
  }
  if (sp.sinks.kmax >= 0) {  // the window ranges are restored after the sink pass
    ws.window_lo = ws.lo;
    ws.window_hi = ws.hi;
  }
  return sp;
}

/// Online softmax over the M rows of the score tile S [M, kBlockN] of key block j0 (nb keys,
/// ncols computed columns): row r sees keys [lo_r, hi_r]. S becomes P, ws.alpha the rescale
/// factors. Returns the number of P columns that can be non-zero.
template <class A, class Arch>
index_t softmax_block_rows(index_t M, index_t j0, index_t nb, index_t ncols, A softcap,
                           softmax_workspace<A>& ws) {
  constexpr index_t NB = softmax_tiling::kBlockN;
  index_t pv_cols = 0;
  for (index_t r = 0; r < M; ++r) {
    const index_t lo = ws.lo[std::size_t(r)] - j0,
                  hi = std::min(ws.hi[std::size_t(r)] - j0, nb - 1);
    A* srow = ws.s.data() + r * NB;
    if (lo > hi || hi < 0 || lo >= nb) {
      std::fill(srow, srow + ncols, A(0));
      ws.alpha[std::size_t(r)] = A(1);
      continue;
    }
    pv_cols = std::max(pv_cols, hi + 1);
    ws.alpha[std::size_t(r)] =
        softmax_row<A, Arch>(srow, ncols, lo, hi, softcap, ws.st[std::size_t(r)]);
  }
  return pv_cols;
}

/// O = alpha O + P V for the MR rows [r0, r0 + MR) of a prefill tile over key block j0 (pv_cols
/// columns of P, V packed as in pack_v). A row accumulates only the keys it sees, selected by
/// range, never multiplied by a zero P: 0 * NaN (an invisible key's garbage) would reach it. The
/// keys all MR rows see go through the MR-row tile; at the edges of the visible region (the
/// causal diagonal, window borders, split ends) each row adds its remaining keys on its own.
template <int MR, class A, class Arch>
ATTNKIT_ALWAYS_INLINE void pv_tile_rows(const A* S, const A* vp, softmax_workspace<A>& ws,
                                        index_t r0, index_t j0, index_t pv_cols, index_t Dvp) {
  constexpr index_t NB = softmax_tiling::kBlockN, TW = 2 * index_t(simd::lanes<A, Arch>);
  index_t lo[std::size_t(MR)], hi[std::size_t(MR)], clo = 0, chi = pv_cols - 1;
  for (int i = 0; i < MR; ++i) {
    lo[i] = std::max<index_t>(ws.lo[std::size_t(r0 + i)] - j0, 0);
    hi[i] = std::min(ws.hi[std::size_t(r0 + i)] - j0, pv_cols - 1);
    clo = std::max(clo, lo[i]);
    chi = std::min(chi, hi[i]);
  }
  const index_t nk = std::max<index_t>(chi - clo + 1, 0), a = nk > 0 ? clo : 0;
  A* acc = ws.acc.data() + r0 * Dvp;
  for (index_t c = 0; c < Dvp; c += TW)
    pv_tile<MR, A, Arch>(S + r0 * NB + a, NB, vp + c * NB + a * TW, TW, acc + c, Dvp,
                         ws.alpha.data() + r0, nk);
  if (nk == pv_cols) return;  // interior tile: every row sees every column
  static constexpr A one(1);
  for (int i = 0; i < MR; ++i) {
    // the row's own keys outside the common range: [lo, a) and [a + nk, hi]
    const index_t seg[2][2] = {{lo[i], std::min(hi[i] + 1, a)},
                               {std::max(lo[i], a + nk), hi[i] + 1}};
    for (const auto& sg : seg) {
      if (sg[1] <= sg[0]) continue;
      for (index_t c = 0; c < Dvp; c += TW)
        pv_tile<1, A, Arch>(S + (r0 + i) * NB + sg[0], NB, vp + c * NB + sg[0] * TW, TW,
                            acc + i * Dvp + c, Dvp, &one, sg[1] - sg[0]);
    }
  }
}

/// A prefill-shaped item (one kv head, >= kSmallRows rows): packed Q K^T and P V tiles.
template <class A, class Arch, class Q, class Rows>
void prefill_item(const softmax_shape& sh, const softmax_seq& sq, const softmax_item& it,
                  const tensor_view<Q, 4>& q, const Rows& rows, const packed_kv<A>& pre, A qscale,
                  A softcap, softmax_workspace<A>& ws) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  constexpr index_t NB = softmax_tiling::kBlockN;
  const index_t M = it.nq * sh.group, Dk = sh.Dk, Dv = sh.Dv;
  const index_t Dkp = round_up(Dk, W), Dvp = round_up(Dv, 2 * W);
  const item_spans spans = begin_item<A, Arch>(sh, sq, it, q, qscale, ws);
  ws.kt.resize(std::size_t(Dk * NB));
  ws.vp.resize(std::size_t(NB * Dvp));
  visit_passes(spans, ws, [&](const key_span& span) {
    // Key blocks are aligned to multiples of NB (so pre-packed blocks can be shared by all items).
    for (index_t j0 = span.kmin / NB * NB; j0 <= span.kmax; j0 += NB) {
      const index_t nb = std::min(NB, sq.tk - j0);
      const index_t ncols = round_up(std::min(nb, span.kmax + 1 - j0), 2 * W);
      A* S = ws.s.data();
      const A* kt = pre.kt ? pre.kt + (j0 / NB) * Dk * NB : ws.kt.data();
      if (!pre.kt)
        pack_kt<A, Arch, 2 * W>(rows, j0, std::min(nb, span.kmax + 1 - j0), ncols, Dk,
                                ws.kt.data());
      // Row tiles outer: the tile's Q rows stay in L1 while K^T streams sequentially.
      // column tiles below the span (the lower edge of a window) are not computed
      const index_t c_first = std::max<index_t>(0, span.kmin - j0) / (2 * W) * (2 * W);
      simd::dispatch_rows<softmax_tiling::qk_rows<W>()>(M, [&](auto mr, index_t r0) {
        for (index_t c = c_first; c < ncols; c += 2 * W)
          qk_tile<decltype(mr)::value, A, Arch>(ws.q.data() + r0 * Dkp, Dkp, kt + c * Dk, 2 * W,
                                                S + r0 * NB + c, NB, Dk);
      });
      const index_t pv_cols = softmax_block_rows<A, Arch>(M, j0, nb, ncols, softcap, ws);
      const A* vp = pre.v ? pre.v + (j0 / NB) * NB * Dvp : ws.vp.data();
      if (!pre.v) pack_v<A, Arch, 2 * W>(rows, j0, pv_cols, Dv, Dvp, ws.vp.data());
      // Tile height: softmax_tiling::pv_rows (4 rows below 16 lanes: faster for this tile than
      // Q K^T's 6; 8 rows with AVX-512's 32 registers).
      simd::dispatch_rows<softmax_tiling::pv_rows<W>()>(M, [&](auto mr, index_t r0) {
        pv_tile_rows<decltype(mr)::value, A, Arch>(S, vp, ws, r0, j0, pv_cols, Dvp);
      });
    }
  });
}

/// A decode-shaped item (every kv head, fewer than kSmallRows rows per head): row dot products
/// against the K rows read in place, then P V over the V rows read in place, four tokens at a
/// time, all kv heads per token (the cache is streamed in token order, once).
template <class A, class Arch, class Q, class Rows>
void decode_item(const softmax_shape& sh, const softmax_seq& sq, const softmax_item& it,
                 const tensor_view<Q, 4>& q, const Rows* head_rows, A qscale, A softcap,
                 softmax_workspace<A>& ws) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  constexpr index_t NB = softmax_tiling::kBlockN;
  const index_t Mh = it.nq * sh.group, M = it.nh * Mh, Dk = sh.Dk, Dv = sh.Dv;
  const index_t Dkp = round_up(Dk, W), Dvp = round_up(Dv, 2 * W);
  const item_spans spans = begin_item<A, Arch>(sh, sq, it, q, qscale, ws);
  ws.vp.clear();
  using KV = std::remove_cv_t<std::remove_pointer_t<decltype(head_rows[0].k_row(0))>>;
  const bool sw_prefetch =
      std::size_t(it.nh * std::max(Dk, Dv)) * sizeof(KV) <= kPrefetchMaxTokenBytes;
  const auto k_of = [](const Rows& hr, index_t key) { return hr.k_row(key); };
  const auto v_of = [](const Rows& hr, index_t key) { return hr.v_row(key); };
  visit_passes(spans, ws, [&](const key_span& span) {
    for (index_t j0 = span.kmin / NB * NB; j0 <= span.kmax; j0 += NB) {
      const index_t nb = std::min(NB, sq.tk - j0);
      const index_t ncols = round_up(std::min(nb, span.kmax + 1 - j0), 2 * W);
      A* S = ws.s.data();
      // Q K^T: K is prefetched here, V by the P V walk below.
      for_each_key_group(
          head_rows, it.nh, j0, std::min(nb, span.kmax + 1 - j0), sw_prefetch ? sq.tk : 0, Dk, k_of,
          [&](auto ku, const auto* k, index_t j, index_t hh) {
            simd::dispatch_rows<4>(Mh, [&](auto mr, index_t r0) {
              constexpr int MR = decltype(mr)::value;
              r0 += hh * Mh;
              const A* Qr = ws.q.data() + r0 * Dkp;
              A* Sr = S + r0 * NB + j;
              if constexpr (decltype(ku)::value == 1) {
                dot_rows<MR, A, Arch>(Qr, Dkp, k[0], Dk, Sr, NB);
              } else if constexpr (MR == 1 || MR == 2) {
                dot_rows_keys<MR, 4, A, Arch>(Qr, Dkp, k, Dk, Sr, NB);
              } else if constexpr (MR == 4 && W >= 16) {  // 16 accumulators
                dot_rows_keys<4, 4, A, Arch>(Qr, Dkp, k, Dk, Sr, NB);
              } else if constexpr (MR == 4) {
                dot_rows_keys<4, 2, A, Arch>(Qr, Dkp, k, Dk, Sr, NB);
                dot_rows_keys<4, 2, A, Arch>(Qr, Dkp, k + 2, Dk, Sr + 2, NB);
              } else {  // 3 rows: one pair, one single
                dot_rows_keys<2, 4, A, Arch>(Qr, Dkp, k, Dk, Sr, NB);
                dot_rows_keys<1, 4, A, Arch>(Qr + 2 * Dkp, Dkp, k, Dk, Sr + 2 * NB, NB);
              }
            });
          });
      const index_t pv_cols = softmax_block_rows<A, Arch>(M, j0, nb, ncols, softcap, ws);
      // Rescale the accumulators, then add P V.
      for (index_t r = 0; r < M; ++r) {
        const A al = ws.alpha[std::size_t(r)];
        if (al == A(1)) continue;
        A* o = ws.acc.data() + r * Dvp;
        for (index_t c = 0; c < Dvp; c += W) (B::load_aligned(o + c) * B(al)).store_aligned(o + c);
      }
      for_each_key_group(
          head_rows, it.nh, j0, pv_cols, sw_prefetch ? j0 + pv_cols : 0, Dv, v_of,
          [&](auto ku, const auto* v, index_t j, index_t hh) {
            simd::dispatch_rows<4>(Mh, [&](auto mr, index_t r0) {
              constexpr int MR = decltype(mr)::value, KU = decltype(ku)::value;
              r0 += hh * Mh;
              A* acc = ws.acc.data() + r0 * Dvp;
              const A* P = S + r0 * NB + j;
              const index_t key = j0 + j;
              bool all_see = true;
              for (int i = 0; i < MR; ++i)
                all_see &=
                    ws.lo[std::size_t(r0 + i)] <= key && ws.hi[std::size_t(r0 + i)] >= key + KU - 1;
              if (all_see) {
                pv_rows_keys<MR, KU, A, Arch>(P, NB, v, Dv, acc, Dvp);
                return;
              }
              // an edge of the visible region: each row adds only the keys it
              // sees (selected, not multiplied by a zero P)
              for (int i = 0; i < MR; ++i)
                for (int u = 0; u < KU; ++u)
                  if (ws.lo[std::size_t(r0 + i)] <= key + u &&
                      key + u <= ws.hi[std::size_t(r0 + i)])
                    pv_rows_keys<1, 1, A, Arch>(P + i * NB + u, NB, v + u, Dv, acc + i * Dvp, Dvp);
            });
          });
    }
  });
}

/// Writes the final o (and lse) rows of an item from its state: o = acc / (l + e^{sink - m}).
template <class A, class O>
void finalize_rows(const softmax_shape& sh, const softmax_seq& sq, const softmax_item& it,
                   const softmax_state<A>* st, const A* acc, index_t Dvp,
                   const tensor_view<O, 4>& o, const softmax_extras<A>& x) {
  const index_t G = sh.group;
  for (index_t hh = 0; hh < it.nh; ++hh)
    for (index_t t = 0; t < it.nq; ++t)
      for (index_t g = 0; g < G; ++g) {
        const index_t r = (hh * it.nq + t) * G + g, h = (it.hk + hh) * G + g, i = sq.q0 + it.i0 + t;
        const softmax_state<A>& s = st[r];
        const A f = x.sinks.present() ? s.output_factor(A(x.sinks(h))) : s.output_factor();
        O* dst = &o(sq.qb, i, h, 0);
        const A* a = acc + r * Dvp;
        for (index_t c = 0; c < sh.Dv; ++c) dst[c] = from_compute<std::remove_const_t<O>>(a[c] * f);
        if (x.lse.present()) x.lse(sq.qb, h, i) = s.lse();
      }
}

}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
