// SPDX-License-Identifier: Apache-2.0
// Building blocks of the softmax-family kernels: tiling constants, the register-tiled Q K^T and
// P V micro-kernels (packed prefill tiles; row-dot decode walks over cache rows read in place),
// the online-softmax update of one tile row, and the packing of K^T and V blocks.
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../core/online_softmax.hpp"
#include "../core/simd.hpp"
#include "params.hpp"

namespace attnkit {
namespace detail {

struct softmax_tiling {
  static constexpr index_t kBlockN = 64;       // keys per tile
  static constexpr index_t kRowsPerItem = 64;  // target query rows (heads x positions) per item
  // groups this wide (MLA: 128 query heads on one latent head) take several positions per item,
  // so a multi-token decode reads each key block once
  static constexpr index_t kWideRowsPerItem = 256;
  static constexpr index_t kSmallRows = 8;       // below this, S is computed by row dot products
  static constexpr index_t kTargetItems = 32;    // automatic split-KV aims at this many items
  static constexpr index_t kMinSplitKeys = 512;  // ... of at least this many keys
  static constexpr std::size_t kRetainPackBytes = std::size_t(64) << 20;  // see pack_store
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
  std::vector<index_t> lo, hi;                         // each row's keys in the current pass
  std::vector<index_t> window_lo, window_hi, sink_hi;  // the window pass and the sinks [0, sink_hi]
};

// S[i, 0:2W] = sum_d Q[i, d] * Kt[d, 0:2W] for MR rows (one column tile; Kt rows 2W-aligned).
template <int MR, class A, class Arch>
inline void qk_tile(const A* ATTNKIT_RESTRICT Q, index_t ldq, const A* ATTNKIT_RESTRICT Kt,
                    index_t ldk, A* ATTNKIT_RESTRICT S, index_t lds, index_t dk) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  B acc0[std::size_t(MR)], acc1[std::size_t(MR)];
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
  B o0[std::size_t(MR)], o1[std::size_t(MR)];
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
  B acc0[std::size_t(MR)], acc1[std::size_t(MR)];
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
  B acc[std::size_t(NS)][std::size_t(N)];
  ATTNKIT_UNROLL for (int h = 0; h < NS; ++h) ATTNKIT_UNROLL for (int a = 0; a < N; ++a) acc[h][a] =
      B(A(0));
  auto step = [&](index_t d, const B(&kb)[std::size_t(KU)], B(&ac)[std::size_t(N)]) {
    ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) {
      B qb = B::load_aligned(Q + i * ldq + d);
      if constexpr (KU > 1) simd::keep_in_register(qb);  // one load for the KU keys
      ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) ac[i * KU + u] =
          xsimd::fma(qb, kb[u], ac[i * KU + u]);
    }
  };
  auto full_step = [&](index_t d, B(&ac)[std::size_t(N)]) {
    B kb[std::size_t(KU)];
    ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) kb[u] = simd::load<A, Arch>(k[u] + d);
    step(d, kb, ac);
  };
  index_t d = 0;
  for (; d + NS * W <= dk; d += NS * W)
    ATTNKIT_UNROLL for (int h = 0; h < NS; ++h) full_step(d + h * W, acc[h]);
  for (; d + W <= dk; d += W) full_step(d, acc[0]);
  if (d < dk) {
    B kb[std::size_t(KU)];
    ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) kb[u] =
        simd::load_partial<A, Arch>(k[u] + d, dk - d);
    step(d, kb, acc[0]);
  }
  if constexpr (NS == 2) ATTNKIT_UNROLL for (int a = 0; a < N; ++a) acc[0][a] += acc[1][a];
  alignas(64) A sums[std::size_t(N)];
  simd::reduce_add_n<N>(acc[0], sums);
  ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) ATTNKIT_UNROLL for (int u = 0; u < KU; ++u)
      s[i * lds + u] = sums[i * KU + u];
}

// One column step of pv_rows_keys: O[i, c:c+W] += sum_u p[i][u] * vb[u] for MR rows (p: scalars
// or batches already broadcast).
template <int MR, int KU, class A, class Arch, class PB>
ATTNKIT_ALWAYS_INLINE void pv_column_step(const PB (&p)[std::size_t(MR)][std::size_t(KU)],
                                          const xsimd::batch<A, Arch> (&vb)[std::size_t(KU)],
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
  PB p[std::size_t(MR)][std::size_t(KU)];
  ATTNKIT_UNROLL for (int i = 0; i < MR; ++i) ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) p[i][u] =
      PB(P[i * ldp + u]);
  const KV* vr[std::size_t(KU)];  // row pointers in registers, not reloaded from the caller's array
  ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) vr[u] = v[u];
  index_t c = 0;
  for (; c + W <= dv; c += W) {
    B vb[std::size_t(KU)];
    ATTNKIT_UNROLL for (int u = 0; u < KU; ++u) vb[u] = simd::load<A, Arch>(vr[u] + c);
    pv_column_step<MR, KU, A, Arch>(p, vb, O, ldo, c);
  }
  if (c < dv) {
    B vb[std::size_t(KU)];
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

// Online-softmax update of one row of a tile. s[0, ncols) holds the scores (scaled); the row sees
// columns [vis_lo, vis_hi]. Only the W-aligned columns around that range are touched: on return
// they hold P = e^{x - m_new} (0 outside the range) and st is updated; returns alpha. Columns
// further out keep whatever they held: the P V products read only the columns a row sees.
template <class A, class Arch>
inline A softmax_row(A* ATTNKIT_RESTRICT s, index_t ncols, index_t vis_lo, index_t vis_hi,
                     A softcap, softmax_state<A>& st) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t W = index_t(B::size);
  constexpr A ninf = -std::numeric_limits<A>::infinity();
  const index_t cb = std::max<index_t>(vis_lo, 0) / W * W,
                ce = std::min(ncols, round_up(std::max<index_t>(vis_hi + 1, 0), W));
  if (cb >= ce) return A(1);
  if (softcap > 0) {
    const B cap(softcap);
    for (index_t c = cb; c < ce; c += W)
      (cap * xsimd::tanh(B::load_aligned(s + c))).store_aligned(s + c);
  }
  for (index_t c = cb; c < std::min(vis_lo, ce); ++c) s[c] = ninf;
  for (index_t c = std::max<index_t>(vis_hi + 1, cb); c < ce; ++c) s[c] = ninf;
  B mx(ninf);
  for (index_t c = cb; c < ce; c += W) mx = xsimd::max(mx, B::load_aligned(s + c));
  const A m_blk = simd::reduce_max(mx);
  if (m_blk == ninf) {  // nothing visible in this tile for this row
    for (index_t c = cb; c < ce; ++c) s[c] = A(0);
    return A(1);
  }
  const A m_new = std::max(st.m, m_blk);
  const A alpha = softmax_state<A>::rescale(st.m, m_new);
  const B mb(m_new);
  B sum(A(0));
  for (index_t c = cb; c < ce; c += W) {
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
  } else if constexpr (TW % 8 == 0) {  // bf16/fp16: eight rows converted a piece at a time
    constexpr index_t P = 64;
    alignas(64) A buf[8][P];
    const A* r[8];
    for (index_t u = 0; u < 8; ++u) r[u] = buf[u];
    for (; j + 8 <= nb; j += 8) {
      A* dst = kt + (j / TW) * Dk * TW + j % TW;
      for (index_t d0 = 0; d0 < Dk; d0 += P) {
        const index_t n = std::min(P, Dk - d0);
        for (index_t u = 0; u < 8; ++u)
          simd::convert<A, Arch>(rows.k_row(j0 + j + u) + d0, buf[u], n);
        simd::transpose_rows8<A, Arch>(r, dst + d0 * TW, TW, n);
      }
    }
  }
  for (; j < nb; ++j) {
    const auto* kr = rows.k_row(j0 + j);
    A* dst = kt + (j / TW) * Dk * TW + j % TW;
    for (index_t d = 0; d < Dk; ++d) dst[d * TW] = to_compute<A>(kr[d]);
  }
  for (j = nb; j < ncols; ++j) {
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

}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
