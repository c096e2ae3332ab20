// SPDX-License-Identifier: Apache-2.0
// Fast standard softmax attention (FlashAttention-style tiling on the CPU).
//
// Work item = (sequence, kv head, block of query positions, key split). Its rows are the G = Hq/Hkv
// query heads of that kv head times the query positions (GQA packing: each K/V row is read once
// for all G heads). For each block of kBlockN keys:
//   S = Q K^T            (packed micro-kernel when the item has >= kSmallRows rows, else row dots)
//   online softmax       (m, l, alpha per row; masked tiles skipped, partial tiles masked to -inf)
//   O = alpha O + P V
// Long key ranges are split (split-KV) and the partial states merged in a fixed order. The split
// depends only on the problem shape, never on the thread count, so results are reproducible.
#pragma once

#include "../core/warnings_push.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../core/executor.hpp"
#include "../core/online_softmax.hpp"
#include "../core/simd.hpp"
#include "params.hpp"

namespace attnkit {
namespace detail {

struct softmax_tiling {
  static constexpr index_t kBlockN = 64;          // keys per tile
  static constexpr index_t kRowsPerItem = 64;     // target query rows (heads x positions) per item
  static constexpr index_t kSmallRows = 8;        // below this, S is computed by row dot products
  static constexpr index_t kTargetItems = 32;     // automatic split-KV aims at this many items
  static constexpr index_t kMinSplitKeys = 1024;  // ... with at least this many keys per split
  static constexpr std::size_t kRetainPackBytes = std::size_t(64) << 20;  // see run_softmax
  // Rows per register tile of the packed Q K^T and P V micro-kernels (2W columns each), by vector
  // width W: 16 lanes (AVX-512, 32 registers) take taller tiles, fewer tile reloads of K^T and V.
  template <index_t W>
  static constexpr int qk_rows() {
    return W >= 16 ? 8 : 6;
  }
  template <index_t W>
  static constexpr int pv_rows() {
    return W >= 16 ? 8 : 4;
  }
};

template <class A>
struct softmax_workspace {
  aligned_vector<A> q, kt, vp, s, acc, alpha;
  std::vector<softmax_state<A>> st;
  std::vector<index_t> lo, hi;
};

// S[i, 0:2W] = sum_d Q[i, d] * Kt[d, 0:2W] for MR rows (one column tile; Kt rows 2W-aligned).
template <int MR, class A, class Arch>
inline void qk_tile(const A* ATTNKIT_RESTRICT Q, index_t ldq, const A* ATTNKIT_RESTRICT Kt,
                    index_t ldk, A* ATTNKIT_RESTRICT S, index_t lds, index_t dk) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  B acc0[MR], acc1[MR];
  ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = B(A(0));
  const A* kp = Kt;
  for (index_t d = 0; d < dk; ++d, kp += ldk) {
    B b0 = B::load_aligned(kp), b1 = B::load_aligned(kp + W);
    simd::keep_in_register(b0);
    simd::keep_in_register(b1);
    ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) {
      const B a(Q[i * ldq + d]);
      acc0[i] = xsimd::fma(a, b0, acc0[i]);
      acc1[i] = xsimd::fma(a, b1, acc1[i]);
    }
  }
  ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) {
    acc0[i].store_aligned(S + i * lds);
    acc1[i].store_aligned(S + i * lds + W);
  }
}

// O[i, 0:2W] = alpha[i] * O[i, 0:2W] + sum_j P[i, j] * V[j, 0:2W] for MR rows (one column tile).
template <int MR, class A, class Arch>
inline void pv_tile(const A* ATTNKIT_RESTRICT P, index_t ldp, const A* ATTNKIT_RESTRICT V,
                    index_t ldv, A* ATTNKIT_RESTRICT O, index_t ldo, const A* alpha, index_t nk) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  B o0[MR], o1[MR];
  ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) {
    const B al(alpha[i]);
    o0[i] = B::load_aligned(O + i * ldo) * al;
    o1[i] = B::load_aligned(O + i * ldo + W) * al;
  }
  const A* vp = V;
  for (index_t j = 0; j < nk; ++j, vp += ldv) {
    B b0 = B::load_aligned(vp), b1 = B::load_aligned(vp + W);
    simd::keep_in_register(b0);
    simd::keep_in_register(b1);
    ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) {
      const B a(P[i * ldp + j]);
      o0[i] = xsimd::fma(a, b0, o0[i]);
      o1[i] = xsimd::fma(a, b1, o1[i]);
    }
  }
  ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) {
    o0[i].store_aligned(O + i * ldo);
    o1[i].store_aligned(O + i * ldo + W);
  }
}

// s[i * lds] = Q[i, :] . kr[:] for MR rows; Q rows are zero-padded to a multiple of W.
template <int MR, class A, class Arch, class KV>
inline void dot_rows(const A* ATTNKIT_RESTRICT Q, index_t ldq, const KV* ATTNKIT_RESTRICT kr,
                     index_t dk, A* s, index_t lds) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  B acc0[MR], acc1[MR];
  ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = B(A(0));
  index_t d = 0;
  for (; d + 2 * W <= dk; d += 2 * W) {
    const B k0 = simd::load<A, Arch>(kr + d), k1 = simd::load<A, Arch>(kr + d + W);
    ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) {
      acc0[i] = xsimd::fma(B::load_aligned(Q + i * ldq + d), k0, acc0[i]);
      acc1[i] = xsimd::fma(B::load_aligned(Q + i * ldq + d + W), k1, acc1[i]);
    }
  }
  for (; d < dk; d += W) {
    const B k0 =
        d + W <= dk ? simd::load<A, Arch>(kr + d) : simd::load_partial<A, Arch>(kr + d, dk - d);
    ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) acc0[i] =
        xsimd::fma(B::load_aligned(Q + i * ldq + d), k0, acc0[i]);
  }
  ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) s[i * lds] = simd::reduce_add(acc0[i] + acc1[i]);
}

// s[i * lds + u] = Q[i, :] . k_u[:] for MR rows and KU keys (MR * KU <= 8 accumulators, 16 with
// AVX-512's 32 registers): several keys in flight hide the FMA latency, each K element is loaded
// (and converted) once, and the horizontal sums are done together (simd::reduce_add_n). With fewer
// than 8 (row, key) pairs, even and odd column steps use separate accumulators (8 independent FMA
// chains keep both FMA pipes busy).
template <int MR, int KU, class A, class Arch, class KV>
inline void dot_rows_keys(const A* ATTNKIT_RESTRICT Q, index_t ldq, const KV* const* k, index_t dk,
                          A* s, index_t lds) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  constexpr int N = MR * KU, NS = N < 8 ? 2 : 1;
  static_assert(N % 4 == 0, "dot_rows_keys reduces four accumulators at a time");
  B acc[NS][N];
  ATTNKIT_UNROLL for (int h = 0; h < NS; ++h) ATTNKIT_UNROLL for (int a = 0; a < N; ++a) acc[h][a] =
      B(A(0));
  auto step = [&](index_t d, const B(&kb)[KU], B(&ac)[N]) {
    ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) {
      B qb = B::load_aligned(Q + i * ldq + d);
      if constexpr (KU > 1) simd::keep_in_register(qb);  // one load for the KU keys
      ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) ac[i * KU + u] =
          xsimd::fma(qb, kb[u], ac[i * KU + u]);
    }
  };
  auto full_step = [&](index_t d, B(&ac)[N]) {
    B kb[KU];
    ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) kb[u] = simd::load<A, Arch>(k[u] + d);
    step(d, kb, ac);
  };
  index_t d = 0;
  for (; d + NS * W <= dk; d += NS * W)
    ATTNKIT_UNROLL for (int h = 0; h < NS; ++h) full_step(d + h * W, acc[h]);
  for (; d + W <= dk; d += W) full_step(d, acc[0]);
  if (d < dk) {
    B kb[KU];
    ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) kb[u] =
        simd::load_partial<A, Arch>(k[u] + d, dk - d);
    step(d, kb, acc[0]);
  }
  if constexpr (NS == 2) ATTNKIT_UNROLL for (int a = 0; a < N; ++a) acc[0][a] += acc[1][a];
  alignas(64) A sums[N];
  simd::reduce_add_n<N>(acc[0], sums);
  ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) ATTNKIT_UNROLL for (int u = 0; u < KU; ++u)
      s[i * lds + u] = sums[i * KU + u];
}

// One column step of pv_rows_keys: O[i, c:c+W] += sum_u p[i][u] * vb[u] for MR rows (p: scalars
// or batches already broadcast).
template <int MR, int KU, class A, class Arch, class PB>
ATTNKIT_ALWAYS_INLINE void pv_column_step(const PB (&p)[MR][KU],
                                          const xsimd::batch<A, Arch> (&vb)[KU],
                                          A* ATTNKIT_RESTRICT O, index_t ldo, index_t c) {
  using B = xsimd::batch<A, Arch>;
  ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) {
    B o = B::load_aligned(O + i * ldo + c);
    ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) o = xsimd::fma(B(p[i][u]), vb[u], o);
    o.store_aligned(O + i * ldo + c);
  }
}

// Whether MR x KU broadcast P values fit in registers beside the KU value rows and one O row:
// AVX-512's 32 registers take 4 x 4; AVX2's 16 do not (there P is broadcast at each use).
template <int MR, int KU, class A, class Arch>
constexpr bool pv_broadcast_in_registers() {
  return xsimd::batch<A, Arch>::size >= 16 && MR * KU + KU + 2 <= 32;
}

// O[i, 0:dv] += sum_u P[i, u] * v_u[0:dv] for MR rows and KU value rows read in place (converted
// on load): decode's P.V, streaming the cache in token order. O rows are padded to a multiple of W.
template <int MR, int KU, class A, class Arch, class KV>
inline void pv_rows_keys(const A* ATTNKIT_RESTRICT P, index_t ldp, const KV* const* v, index_t dv,
                         A* ATTNKIT_RESTRICT O, index_t ldo) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  // P broadcast once (wide register files) or at each use (scalars).
  using PB = std::conditional_t<pv_broadcast_in_registers<MR, KU, A, Arch>(), B, A>;
  PB p[MR][KU];
  ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) p[i][u] =
      PB(P[i * ldp + u]);
  const KV* vr[KU];  // row pointers in registers, not reloaded from the caller's array
  ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) vr[u] = v[u];
  index_t c = 0;
  for (; c + W <= dv; c += W) {
    B vb[KU];
    ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) vb[u] = simd::load<A, Arch>(vr[u] + c);
    pv_column_step<MR, KU, A, Arch>(p, vb, O, ldo, c);
  }
  if (c < dv) {
    B vb[KU];
    ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) vb[u] =
        simd::load_partial<A, Arch>(vr[u] + c, dv - c);
    pv_column_step<MR, KU, A, Arch>(p, vb, O, ldo, c);
  }
}

// Decode: software prefetch kPrefetchKeys keys ahead: the hardware prefetchers do not follow rows
// Hkv*D apart. Used only when the bytes an item reads per token (its kv heads' K or V rows) are at
// most kPrefetchMaxTokenBytes: longer token rows span pages and the hardware streamers keep up on
// their own. Four keys (8 KB for a bf16 cache with 8 kv heads, D = 128) rather than more: a
// longer distance decoded slower.
constexpr index_t kPrefetchKeys = 4;
constexpr std::size_t kPrefetchMaxTokenBytes = 8192;

// Decode-shaped items walk keys [j0, j0 + nk) in token order, four tokens at a time (then one at
// a time), all kv heads per group, so the cache is streamed once. For each (group, head) it calls
// f(std::integral_constant<int, KU>, rows, j, hh) with the KU row pointers row_of(head_rows[hh],
// key) of keys j0 + j ...; rows kPrefetchKeys ahead are requested first while they stay below
// prefetch_end (pass 0 to disable software prefetch).
template <class Rows, class RowOf, class F>
inline void for_each_key_group(const Rows* head_rows, index_t nh, index_t j0, index_t nk,
                               index_t prefetch_end, index_t row_len, RowOf row_of, F&& f) {
  using Ptr = decltype(row_of(head_rows[0], index_t(0)));
  index_t j = 0;
  for (; j + 4 <= nk; j += 4)
    for (index_t hh = 0; hh < nh; ++hh) {
      const Rows& hr = head_rows[hh];
      const Ptr rows[4] = {row_of(hr, j0 + j), row_of(hr, j0 + j + 1), row_of(hr, j0 + j + 2),
                           row_of(hr, j0 + j + 3)};
      if (j0 + j + kPrefetchKeys + 3 < prefetch_end)
        for (index_t u = 0; u < 4; ++u)
          simd::prefetch(row_of(hr, j0 + j + kPrefetchKeys + u), row_len);
      f(std::integral_constant<int, 4>{}, rows, j, hh);
    }
  for (; j < nk; ++j)
    for (index_t hh = 0; hh < nh; ++hh) {
      const Ptr rows[1] = {row_of(head_rows[hh], j0 + j)};
      f(std::integral_constant<int, 1>{}, rows, j, hh);
    }
}

// Online-softmax update of one row of a tile. s[0, ncols) holds the scores (scaled); columns
// outside [vis_lo, vis_hi] are masked. On return s holds P = e^{x - m_new} and st is updated;
// returns alpha.
template <class A, class Arch>
inline A softmax_row(A* ATTNKIT_RESTRICT s, index_t ncols, index_t vis_lo, index_t vis_hi,
                     A softcap, softmax_state<A>& st) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  constexpr A ninf = -std::numeric_limits<A>::infinity();
  if (softcap > 0) {
    const B cap(softcap);
    for (index_t c = 0; c < ncols; c += W)
      (cap * xsimd::tanh(B::load_aligned(s + c))).store_aligned(s + c);
  }
  for (index_t c = 0; c < std::min(vis_lo, ncols); ++c) s[c] = ninf;
  for (index_t c = std::max<index_t>(vis_hi + 1, 0); c < ncols; ++c) s[c] = ninf;
  B mx(ninf);
  for (index_t c = 0; c < ncols; c += W) mx = xsimd::max(mx, B::load_aligned(s + c));
  const A m_blk = simd::reduce_max(mx);
  if (m_blk == ninf) {  // nothing visible in this tile for this row
    for (index_t c = 0; c < ncols; ++c) s[c] = A(0);
    return A(1);
  }
  const A m_new = std::max(st.m, m_blk);
  const A alpha = softmax_state<A>::rescale(st.m, m_new);
  const B mb(m_new);
  B sum(A(0));
  for (index_t c = 0; c < ncols; c += W) {
    const B p = simd::exp(B::load_aligned(s + c) - mb);
    p.store_aligned(s + c);
    sum += p;
  }
  st.l = st.l * alpha + simd::reduce_add(sum);
  st.m = m_new;
  return alpha;
}

/// K^T and V of one (sequence, kv head), packed per key block of kBlockN keys (aligned to multiples
/// of kBlockN): kt block b is [Dk, kBlockN] (zero columns past the end), v block b is
/// [kBlockN, Dvp] (zero padding). kt == v == nullptr: not pre-packed, the item packs each key
/// block into its workspace.
template <class A>
struct packed_kv {
  const A* kt = nullptr;
  const A* v = nullptr;
};

/// Packs key block [j0, j0 + nb) transposed into kt as column tiles of TW = 2W keys: tile c is
/// [Dk, TW] contiguous (element (d, j) at kt[(j / TW) * Dk * TW + d * TW + j % TW]); columns past
/// nb up to ncols are zero.
template <class A, class Arch, index_t TW, class Rows>
inline void pack_kt(const Rows& rows, index_t j0, index_t nb, index_t ncols, index_t Dk, A* kt) {
  using KV = std::remove_cv_t<std::remove_pointer_t<decltype(rows.k_row(0))>>;
  index_t j = 0;
  if constexpr (std::is_same_v<KV, A> && TW % 8 == 0) {  // eight keys at a time (8x8 transposes)
    for (; j + 8 <= nb; j += 8) {
      const A* r[8];
      for (index_t u = 0; u < 8; ++u) r[u] = rows.k_row(j0 + j + u);
      simd::transpose_rows8<A, Arch>(r, kt + (j / TW) * Dk * TW + j % TW, TW, Dk);
    }
  }
  for (; j < nb; ++j) {
    const auto* kr = rows.k_row(j0 + j);
    A* dst = kt + (j / TW) * Dk * TW + j % TW;
    for (index_t d = 0; d < Dk; ++d) dst[d * TW] = to_compute<A>(kr[d]);
  }
  for (index_t j = nb; j < ncols; ++j) {
    A* dst = kt + (j / TW) * Dk * TW + j % TW;
    for (index_t d = 0; d < Dk; ++d) dst[d * TW] = A(0);
  }
}

/// Writes value row j (vr, Dv elements; nullptr = zeros) into a block packed as column tiles of
/// TW values: tile c is [NB, TW] contiguous, element (j, c) at vp[(c / TW) * NB * TW + j * TW + c %
/// TW].
template <class A, class Arch, index_t TW, class KV>
inline void pack_v_row(const KV* vr, index_t j, index_t Dv, index_t Dvp, A* vp) {
  constexpr index_t NB = softmax_tiling::kBlockN;
  for (index_t c = 0; c < Dvp; c += TW) {
    A* dst = vp + (c / TW) * NB * TW + j * TW;
    if (vr && c + TW <= Dv) {
      simd::convert_fixed<A, Arch, TW>(vr + c, dst);
    } else {
      for (index_t i = 0; i < TW; ++i) dst[i] = vr && c + i < Dv ? to_compute<A>(vr[c + i]) : A(0);
    }
  }
}

/// Packs value block [j0, j0 + nb) (converted to A, zero rows past nb) in the layout above.
template <class A, class Arch, index_t TW, class Rows>
inline void pack_v(const Rows& rows, index_t j0, index_t nb, index_t Dv, index_t Dvp, A* vp) {
  using KV = std::remove_pointer_t<decltype(rows.v_row(0))>;
  for (index_t j = 0; j < softmax_tiling::kBlockN; ++j)
    pack_v_row<A, Arch, TW>(j < nb ? rows.v_row(j0 + j) : static_cast<KV*>(nullptr), j, Dv, Dvp,
                            vp);
}

/// One work item: kv heads [hk, hk + nh), query positions [i0, i0 + nq), keys [kbeg, kend).
/// Its rows are r = (hh * nq + t) * G + g for kv head hk + hh, position i0 + t and query head
/// (hk + hh) * G + g. Prefill items have nh = 1 (packed micro-kernels); decode-shaped items
/// (fewer than kSmallRows rows per kv head) take every kv head, so each cached token row
/// [Hkv, D] is read once, sequentially, for all heads.
struct softmax_item {
  std::size_t seq;
  index_t hk, nh, i0, nq, kbeg, kend;
  index_t slot;  // partial-state slot (split-KV), -1 = write output directly
};

template <class A, class Arch, class Q, class Rows>
void attend_item(const softmax_shape& sh, const softmax_seq& sq, const softmax_item& it,
                 const tensor_view<Q, 4>& q, const Rows* head_rows, const packed_kv<A>& pre,
                 A qscale, A softcap, softmax_workspace<A>& ws) {
  const Rows& rows = head_rows[0];
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  constexpr index_t NB = softmax_tiling::kBlockN;
  const index_t G = sh.group, Mh = it.nq * G, M = it.nh * Mh, Dk = sh.Dk, Dv = sh.Dv;
  const index_t Dkp = round_up(Dk, W), Dvp = round_up(Dv, 2 * W);
  const bool packed = it.nh == 1 && Mh >= softmax_tiling::kSmallRows;

  ws.q.assign(std::size_t(M * Dkp), A(0));
  ws.acc.assign(std::size_t(M * Dvp), A(0));
  ws.s.resize(std::size_t(M * NB));
  ws.alpha.resize(std::size_t(M));
  ws.st.assign(std::size_t(M), softmax_state<A>{});
  ws.lo.resize(std::size_t(M));
  ws.hi.resize(std::size_t(M));

  // Pack Q (scaled) and the visible key range of every row, clipped to this split.
  index_t kmin = std::numeric_limits<index_t>::max(), kmax = -1;  // union of the row ranges
  for (index_t t = 0; t < it.nq; ++t) {
    index_t lo, hi;
    sh.mask.range(it.i0 + t, sq.tq, sq.tk, lo, hi);
    lo = std::max(lo, it.kbeg);
    hi = std::min(hi, it.kend - 1);
    for (index_t hh = 0; hh < it.nh; ++hh)
      for (index_t g = 0; g < G; ++g) {
        const index_t r = (hh * it.nq + t) * G + g;
        ws.lo[std::size_t(r)] = lo;
        ws.hi[std::size_t(r)] = hi;
        const Q* src = &q(sq.qb, sq.q0 + it.i0 + t, (it.hk + hh) * G + g, 0);
        simd::convert<A, Arch>(src, ws.q.data() + r * Dkp, Dk, qscale);
      }
    if (lo <= hi) {
      kmin = std::min(kmin, lo);
      kmax = std::max(kmax, hi);
    }
  }
  if (packed) {
    ws.kt.resize(std::size_t(Dk * NB));
    ws.vp.resize(std::size_t(NB * Dvp));
  } else {
    ws.vp.clear();
  }

  using KV = std::remove_cv_t<std::remove_pointer_t<decltype(rows.k_row(0))>>;
  const bool sw_prefetch =
      std::size_t(it.nh * std::max(Dk, Dv)) * sizeof(KV) <= kPrefetchMaxTokenBytes;

  // Key blocks are aligned to multiples of NB (so pre-packed blocks can be shared by all items).
  for (index_t j0 = kmin / NB * NB; j0 <= kmax; j0 += NB) {
    const index_t nb = std::min(NB, sq.tk - j0);
    const index_t ncols = round_up(std::min(nb, kmax + 1 - j0), 2 * W);
    A* S = ws.s.data();
    if (packed) {
      const A* kt = pre.kt ? pre.kt + (j0 / NB) * Dk * NB : ws.kt.data();
      if (!pre.kt)
        pack_kt<A, Arch, 2 * W>(rows, j0, std::min(nb, kmax + 1 - j0), ncols, Dk, ws.kt.data());
      // Row tiles outer: the tile's Q rows stay in L1 while K^T streams sequentially.
      simd::dispatch_rows<softmax_tiling::qk_rows<W>()>(M, [&](auto mr, index_t r0) {
        for (index_t c = 0; c < ncols; c += 2 * W)
          qk_tile<decltype(mr)::value, A, Arch>(ws.q.data() + r0 * Dkp, Dkp, kt + c * Dk, 2 * W,
                                                S + r0 * NB + c, NB, Dk);
      });
    } else {
      // Decode shape: row dot products against the K rows read in place (K is prefetched here,
      // V by the P.V walk below).
      const auto k_of = [](const Rows& hr, index_t key) { return hr.k_row(key); };
      for_each_key_group(head_rows, it.nh, j0, std::min(nb, kmax + 1 - j0), sw_prefetch ? sq.tk : 0,
                         Dk, k_of, [&](auto ku, const auto* k, index_t j, index_t hh) {
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
                               dot_rows_keys<1, 4, A, Arch>(Qr + 2 * Dkp, Dkp, k, Dk, Sr + 2 * NB,
                                                            NB);
                             }
                           });
                         });
    }
    // Online softmax per row; the visible columns of row r are [lo, hi] (tile-relative).
    index_t pv_cols = 0;  // P columns that can be non-zero
    for (index_t r = 0; r < M; ++r) {
      const index_t lo = ws.lo[std::size_t(r)] - j0,
                    hi = std::min(ws.hi[std::size_t(r)] - j0, nb - 1);
      A* srow = S + r * NB;
      if (lo > hi || hi < 0 || lo >= nb) {
        std::fill(srow, srow + ncols, A(0));
        ws.alpha[std::size_t(r)] = A(1);
        continue;
      }
      pv_cols = std::max(pv_cols, hi + 1);
      ws.alpha[std::size_t(r)] =
          softmax_row<A, Arch>(srow, ncols, lo, hi, softcap, ws.st[std::size_t(r)]);
    }
    if (packed) {
      const A* vp = pre.v ? pre.v + (j0 / NB) * NB * Dvp : ws.vp.data();
      if (!pre.v) pack_v<A, Arch, 2 * W>(rows, j0, pv_cols, Dv, Dvp, ws.vp.data());
      // Tile height: softmax_tiling::pv_rows (4 rows below 16 lanes: faster for this tile than
      // Q K^T's 6; 8 rows with AVX-512's 32 registers).
      simd::dispatch_rows<softmax_tiling::pv_rows<W>()>(M, [&](auto mr, index_t r0) {
        for (index_t c = 0; c < Dvp; c += 2 * W)
          pv_tile<decltype(mr)::value, A, Arch>(S + r0 * NB, NB, vp + c * NB, 2 * W,
                                                ws.acc.data() + r0 * Dvp + c, Dvp,
                                                ws.alpha.data() + r0, pv_cols);
      });
    } else {
      // Decode shape: rescale the accumulators, then add P.V reading the V rows in place, four
      // tokens at a time, all kv heads per token (the cache is streamed in token order, once).
      for (index_t r = 0; r < M; ++r) {
        const A al = ws.alpha[std::size_t(r)];
        if (al == A(1)) continue;
        A* o = ws.acc.data() + r * Dvp;
        for (index_t c = 0; c < Dvp; c += W) (B::load_aligned(o + c) * B(al)).store_aligned(o + c);
      }
      const auto v_of = [](const Rows& hr, index_t key) { return hr.v_row(key); };
      for_each_key_group(head_rows, it.nh, j0, pv_cols, sw_prefetch ? j0 + pv_cols : 0, Dv, v_of,
                         [&](auto ku, const auto* v, index_t j, index_t hh) {
                           simd::dispatch_rows<4>(Mh, [&](auto mr, index_t r0) {
                             r0 += hh * Mh;
                             pv_rows_keys<decltype(mr)::value, decltype(ku)::value, A, Arch>(
                                 S + r0 * NB + j, NB, v, Dv, ws.acc.data() + r0 * Dvp, Dvp);
                           });
                         });
    }
  }
}

/// Writes the final o (and lse) rows of an item from its state.
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

/// Runs every work item of a validated problem. rows_of(seq, hk) returns the key/value rows.
template <class A, class Arch, class Q, class O, class RowsOf>
void run_softmax(const softmax_params& p, const softmax_shape& sh, const tensor_view<Q, 4>& q,
                 const tensor_view<O, 4>& o, const softmax_extras<A>& x, RowsOf rows_of) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  const index_t G = sh.group;
  const index_t nq_per_item = std::max<index_t>(1, softmax_tiling::kRowsPerItem / G);
  const index_t Dvp = round_up(sh.Dv, 2 * W);
  const A softcap = A(p.softcap);
  const A qscale = A(p.softcap > 0 ? sh.scale / p.softcap : sh.scale);

  // Items before splitting: (sequence, kv heads, query block) and their visible key ranges.
  struct base_item {
    std::size_t seq;
    index_t hk, nh, i0, nq, klo, khi;
  };
  std::vector<base_item> base;
  for (std::size_t n = 0; n < sh.seqs.size(); ++n) {
    const auto& sq = sh.seqs[n];
    for (index_t i0 = 0; i0 < sq.tq; i0 += nq_per_item) {
      const index_t nq = std::min(nq_per_item, sq.tq - i0);
      index_t klo = sq.tk, khi = -1;
      for (index_t t = 0; t < nq; ++t) {
        index_t lo, hi;
        sh.mask.range(i0 + t, sq.tq, sq.tk, lo, hi);
        if (lo <= hi) {
          klo = std::min(klo, lo);
          khi = std::max(khi, hi);
        }
      }
      if (nq * G < softmax_tiling::kSmallRows) {
        base.push_back({n, 0, sh.Hkv, i0, nq, klo, khi});  // decode shape: all kv heads at once
      } else {
        for (index_t hk = 0; hk < sh.Hkv; ++hk) base.push_back({n, hk, 1, i0, nq, klo, khi});
      }
    }
  }
  // Split-KV: the number of splits depends on the shape only (never on the thread count).
  std::vector<softmax_item> items;
  std::vector<std::pair<std::size_t, std::size_t>> split_of_base;  // [first item, count)
  index_t slots = 0;
  const index_t nbase = index_t(base.size());
  for (const auto& b : base) {
    const index_t keys = std::max<index_t>(0, b.khi - b.klo + 1);
    const index_t blocks = (keys + softmax_tiling::kBlockN - 1) / softmax_tiling::kBlockN;
    index_t ns =
        p.num_splits > 0
            ? index_t(p.num_splits)
            : std::min((softmax_tiling::kTargetItems + nbase - 1) / std::max<index_t>(nbase, 1),
                       keys / softmax_tiling::kMinSplitKeys);
    ns = std::max<index_t>(1, std::min(ns, blocks));
    const index_t per_blocks = (blocks + ns - 1) / std::max<index_t>(ns, 1);
    ns = std::max<index_t>(
        1, (blocks + per_blocks - 1) / std::max<index_t>(per_blocks, 1));  // no empty split
    split_of_base.push_back({items.size(), std::size_t(ns)});
    const index_t per = per_blocks * softmax_tiling::kBlockN;
    for (index_t s = 0; s < ns; ++s) {
      const index_t kb = b.klo + s * per, ke = std::min(b.khi + 1, kb + per);
      items.push_back({b.seq, b.hk, b.nh, b.i0, b.nq, ns == 1 ? 0 : kb,
                       ns == 1 ? sh.seqs[b.seq].tk : ke, ns == 1 ? -1 : slots++});
    }
  }
  // Schedule (the order does not change any result): the items of one (sequence, kv head) run
  // together, so the threads share that head's packed K/V while it is in cache (items across all
  // heads in turn cycle through Hkv packed copies: 32 MB for 8 heads at T = 4096, D = 128, more
  // than L3).
  // Groups with the largest item go first and each group runs its largest items first, so the
  // schedule ends with small items (load balance).
  const auto cost = [&](std::size_t i) {
    return (items[i].kend - items[i].kbeg) * items[i].nq * items[i].nh;
  };
  const auto group = [&](std::size_t i) {
    return items[i].seq * std::size_t(sh.Hkv) + std::size_t(items[i].hk);
  };
  std::vector<index_t> group_cost(sh.seqs.size() * std::size_t(sh.Hkv), 0);
  for (std::size_t i = 0; i < items.size(); ++i)
    group_cost[group(i)] = std::max(group_cost[group(i)], cost(i));
  std::vector<std::size_t> order(items.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const std::size_t ga = group(a), gb = group(b);
    if (ga != gb)
      return group_cost[ga] != group_cost[gb] ? group_cost[ga] > group_cost[gb] : ga < gb;
    return cost(a) > cost(b);
  });

  index_t M_max = 0;
  for (const auto& b : base) M_max = std::max(M_max, b.nh * b.nq * G);
  const index_t slot_size = M_max * (Dvp + 2);
  aligned_vector<A> partial(std::size_t(slots * slot_size));
  executor& ex = resolve(p.exec);

  // Pre-pack K^T and V once per (sequence, kv head) when several query blocks share them; other
  // items pack per key block themselves (decode-shaped items read K and V in place). V is packed
  // even when it could be read in place: rows Hkv*Dv apart alias the same L1 sets. Extra memory:
  // one float copy of K and V for the sequences pre-packed.
  constexpr index_t NB = softmax_tiling::kBlockN;
  using Rows = decltype(rows_of(std::declval<const softmax_seq&>(), index_t(0)));
  std::vector<std::size_t> pack_off(sh.seqs.size() * std::size_t(sh.Hkv), std::size_t(-1));
  std::vector<std::pair<std::size_t, index_t>> pack_units;  // (seq * Hkv + hk, first block)
  std::size_t pack_total = 0;
  const index_t kt_block = sh.Dk * NB, v_block = NB * Dvp;
  if (nq_per_item * G >= softmax_tiling::kSmallRows) {
    for (std::size_t n = 0; n < sh.seqs.size(); ++n) {
      const auto& sq = sh.seqs[n];
      if (sq.tq <= nq_per_item) continue;
      const index_t nblocks = (sq.tk + NB - 1) / NB;
      for (index_t hk = 0; hk < sh.Hkv; ++hk) {
        pack_off[n * std::size_t(sh.Hkv) + std::size_t(hk)] = pack_total;
        pack_total += std::size_t(nblocks * (kt_block + v_block));
        for (index_t b0 = 0; b0 < nblocks; b0 += 16)
          pack_units.push_back({n * std::size_t(sh.Hkv) + std::size_t(hk), b0});
      }
    }
  }
  // The packing store is kept per calling thread for the next call when it is at most
  // kRetainPackBytes: a fresh buffer costs a page fault per 4 KiB on every call (8192 for
  // T = 4096, Hkv = 8, D = 128). Larger stores, and calls nested in another call's tasks on the
  // same thread (a caller's work-stealing executor), get their own buffer, freed on return.
  static thread_local simd::aligned_buffer<A> retained_store;
  static thread_local bool retained_in_use = false;
  simd::aligned_buffer<A> call_store;
  const bool retain =
      pack_total * sizeof(A) <= softmax_tiling::kRetainPackBytes && !retained_in_use;
  if (!retain)
    call_store = simd::aligned_buffer<A>(pack_total);
  else if (retained_store.size() < pack_total)
    retained_store = simd::aligned_buffer<A>(pack_total);
  struct in_use_guard {  // released on return or exception
    bool* flag;
    ~in_use_guard() {
      if (flag) *flag = false;
    }
  } guard{retain ? &retained_in_use : nullptr};
  if (retain) retained_in_use = true;
  A* const store = retain ? retained_store.data() : call_store.data();
  auto packed_of = [&](std::size_t n, index_t hk) {
    packed_kv<A> pk;
    const std::size_t off = pack_off[n * std::size_t(sh.Hkv) + std::size_t(hk)];
    if (off == std::size_t(-1)) return pk;
    const index_t nblocks = (sh.seqs[n].tk + NB - 1) / NB;
    pk.kt = store + off;
    pk.v = pk.kt + nblocks * kt_block;
    return pk;
  };
  ex.parallel_for(index_t(pack_units.size()), [&](index_t u) {
    const auto [key, b0] = pack_units[std::size_t(u)];
    const std::size_t n = key / std::size_t(sh.Hkv);
    const index_t hk = index_t(key % std::size_t(sh.Hkv));
    const auto& sq = sh.seqs[n];
    const auto rows = rows_of(sq, hk);
    const index_t nblocks = (sq.tk + NB - 1) / NB;
    A* kt = store + pack_off[key];
    A* v = kt + nblocks * kt_block;
    for (index_t b = b0; b < std::min(nblocks, b0 + 16); ++b) {
      const index_t nb = std::min(NB, sq.tk - b * NB);
      pack_kt<A, Arch, 2 * W>(rows, b * NB, nb, NB, sh.Dk, kt + b * kt_block);
      pack_v<A, Arch, 2 * W>(rows, b * NB, nb, sh.Dv, Dvp, v + b * v_block);
    }
  });

  ex.parallel_for(index_t(items.size()), [&](index_t idx) {
    thread_local softmax_workspace<A> ws;
    thread_local std::vector<Rows> head_rows;
    const softmax_item& it = items[order[std::size_t(idx)]];
    const softmax_seq& sq = sh.seqs[it.seq];
    head_rows.clear();
    for (index_t hh = 0; hh < it.nh; ++hh) head_rows.push_back(rows_of(sq, it.hk + hh));
    attend_item<A, Arch>(sh, sq, it, q, head_rows.data(), packed_of(it.seq, it.hk), qscale, softcap,
                         ws);
    if (it.slot < 0) {
      finalize_rows(sh, sq, it, ws.st.data(), ws.acc.data(), Dvp, o, x);
    } else {  // keep (m, l, acc) for the merge
      A* dst = partial.data() + it.slot * slot_size;
      const index_t M = it.nh * it.nq * G;
      for (index_t r = 0; r < M; ++r) {
        dst[2 * r] = ws.st[std::size_t(r)].m;
        dst[2 * r + 1] = ws.st[std::size_t(r)].l;
      }
      std::copy(ws.acc.begin(), ws.acc.begin() + M * Dvp, dst + 2 * M_max);
    }
  });
  if (slots == 0) return;
  // Merge the splits of each base item in split order (deterministic).
  ex.parallel_for(nbase, [&](index_t bi) {
    const auto [first, count] = split_of_base[std::size_t(bi)];
    if (count < 2) return;
    const softmax_item& it0 = items[first];
    const index_t M = it0.nh * it0.nq * G;
    std::vector<softmax_state<A>> st(static_cast<std::size_t>(M));
    aligned_vector<A> acc(std::size_t(M * Dvp), A(0));
    for (std::size_t s = 0; s < count; ++s) {
      const A* src = partial.data() + items[first + s].slot * slot_size;
      for (index_t r = 0; r < M; ++r) {
        const softmax_state<A> other{src[2 * r], src[2 * r + 1]};
        A w_self, w_other;
        st[std::size_t(r)].merge(other, w_self, w_other);
        const A* a = src + 2 * M_max + r * Dvp;
        A* d = acc.data() + r * Dvp;
        for (index_t c = 0; c < Dvp; ++c) d[c] = d[c] * w_self + a[c] * w_other;
      }
    }
    finalize_rows(sh, sh.seqs[it0.seq], it0, st.data(), acc.data(), Dvp, o, x);
  });
}

template <class Q, class KV, class O>
void check_fast_layout(const char* fn, const tensor_view<Q, 4>& q, const tensor_view<O, 4>& o) {
  require_inner_contiguous({fn, "q", "B,Tq,Hq,Dk"}, q);
  require_inner_contiguous({fn, "o", "B,Tq,Hq,Dv"}, o);
}

template <class Q, class KV>
constexpr void check_types() {
  using A = accum_t<Q>;
  using K = std::remove_const_t<KV>;
  static_assert(is_storage_type_v<Q> && is_storage_type_v<K>,
                "attnkit: element types must be float, double, bf16 or fp16");
  static_assert(!std::is_same_v<A, double> || std::is_same_v<K, double>,
                "attnkit: double queries need double keys/values");
}

}  // namespace detail

/// Standard softmax attention (prefill, dense or varlen). See params.hpp for the contract.
///   q [B,Tq,Hq,Dk], k [B,Tk,Hkv,Dk], v [B,Tk,Hkv,Dv] -> o [B,Tq,Hq,Dv]; optional sinks [Hq],
///   lse [B,Hq,Tq], cu_seqlens_q/k [N+1] (B = 1). The last dimension of q, k, v, o needs stride 1.
template <class Q, class K, class V, class O, class Arch = simd::default_arch>
void standard_attention(const softmax_params& p, tensor_view<Q, 4> q, tensor_view<K, 4> k,
                        tensor_view<V, 4> v, tensor_view<O, 4> o,
                        const softmax_extras<accum_t<Q>>& x = {}) {
  static_assert(std::is_same_v<std::remove_const_t<K>, std::remove_const_t<V>>,
                "attnkit: k and v must have the same element type");
  detail::check_types<std::remove_const_t<Q>, K>();
  using A = accum_t<Q>;
  const char* fn = "standard_attention";
  const auto sh = detail::check_dense(fn, p, q, k, v, o, x);
  detail::check_fast_layout<Q, K>(fn, q, o);
  detail::require_inner_contiguous({fn, "k", "B,Tk,Hkv,Dk"}, k);
  detail::require_inner_contiguous({fn, "v", "B,Tk,Hkv,Dv"}, v);
  using KV = std::remove_const_t<K>;
  const cview<KV, 4> kc(k), vc(v);
  detail::run_softmax<A, Arch>(p, sh, q, o, x, [&](const detail::softmax_seq& sq, index_t hk) {
    return detail::rows_of(kc, vc, sq, hk);
  });
}

/// Decode / chunked prefill over a KV cache (kv_cache or paged_kv_cache). If k_new/v_new
/// [B,Tnew,Hkv,D] are given they are written into the cache at positions cache_seqlens[b] ...
/// first; then q [B,Tq,Hq,Dk] (the last Tq positions, bottom-right causal) attends over
/// cache_seqlens[b] + Tnew keys. cache_seqlens itself is not modified (FlashAttention's
/// flash_attn_with_kvcache contract): advance it yourself after appending.
template <class Q, class Cache, class O, class KN = const typename Cache::value_type,
          class Arch = simd::default_arch>
void standard_attention_kvcache(const softmax_params& p, tensor_view<Q, 4> q, const Cache& cache,
                                tensor_view<O, 4> o, const softmax_extras<accum_t<Q>>& x = {},
                                tensor_view<KN, 4> k_new = {}, tensor_view<KN, 4> v_new = {}) {
  using KV = typename Cache::value_type;
  static_assert(std::is_same_v<std::remove_const_t<KN>, std::remove_const_t<KV>>,
                "attnkit: k_new/v_new must have the cache's element type");
  detail::check_types<std::remove_const_t<Q>, KV>();
  using A = accum_t<Q>;
  const char* fn = "standard_attention_kvcache";
  const auto sh = detail::check_cache(fn, p, q, cache, o, x, k_new, v_new);
  detail::check_fast_layout<Q, KV>(fn, q, o);
  if constexpr (std::is_same_v<Cache, kv_cache<KV>>) {
    detail::require_inner_contiguous({fn, "k_cache", "B,capacity,Hkv,Dk"}, cache.k);
    detail::require_inner_contiguous({fn, "v_cache", "B,capacity,Hkv,Dv"}, cache.v);
  } else {
    detail::require_inner_contiguous({fn, "k_pages", "num_pages,P,Hkv,Dk"}, cache.k_pages);
    detail::require_inner_contiguous({fn, "v_pages", "num_pages,P,Hkv,Dv"}, cache.v_pages);
  }
  detail::append_rows(cache, sh, k_new, v_new);
  detail::run_softmax<A, Arch>(p, sh, q, o, x, [&](const detail::softmax_seq& sq, index_t hk) {
    return detail::rows_of(cache, sq, hk);
  });
}

}  // namespace attnkit

#include "../core/warnings_pop.hpp"
