// SPDX-License-Identifier: Apache-2.0
// What the recurrent families (linear, delta rule) share: the algorithm choice, the state
// bundle (h0 / ht, varlen offsets) with its validation, and the list of sequences of a call.
//
// A state row holds one sequence's [heads, K, V] state ("K-first"), or [heads, V, K] with the
// family's state_v_first option. N = B, or the number of sequences with varlen (cu_seqlens [N+1],
// B = 1, one state row per sequence). With state_indices the state tensors are pools of P rows
// and sequence n reads and writes row state_indices[n] (-1: the sequence is skipped). With
// snapshots (delta-rule family) intermediate states are written too, [N,S,...] per sequence.
#pragma once

#include "warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "config.hpp"
#include "error.hpp"
#include "tensor_view.hpp"
#include "types.hpp"
#include "varlen.hpp"

namespace attnkit {

/// Which algorithm computes a recurrent-family result (same math, same signature).
enum class algorithm {
  automatic,  ///< the family picks by shape (documented at each family's entry points)
  chunk,      ///< chunkwise parallel: intra-chunk products + inter-chunk state passing (prefill)
  recurrent,  ///< token by token (decode; T = 1 updates a caller-owned state, in place if wanted)
};

inline const char* algorithm_name(algorithm a) {
  static const char* const names[] = {"automatic", "chunk", "recurrent"};
  const auto i = static_cast<unsigned>(a);
  return i < 3 ? names[i] : "?";
}

/// Intermediate states of a delta-rule call (recurrent_state::snapshots), for serving engines:
/// prefix caching (`every`: the state at every block boundary, so a request sharing the prefix
/// resumes there) and speculative decoding (`last`: the state after each of the last tokens, so
/// the engine can roll back to the state after the last accepted draft token). Exactly one of
/// `every` and `last` is > 0 when `states` is given; both are 0 without it. N is the number of
/// sequences of the call (not pool rows: with state_indices, snapshot row n still belongs to
/// sequence n), T_n the length of sequence n. Entries the rules below do not name, and the rows
/// of skipped sequences (state_indices -1), are never written.
template <class A>
struct state_snapshots {
  /// [N,S,HV,K,V] (or [N,S,HV,V,K] with state_v_first) snapshots (output)
  tensor_view<A, 5> states;
  /// > 0: states[n, s] = the state after the first (s+1) * every tokens of sequence n, for
  /// s < min(S, T_n / every)
  index_t every = 0;
  /// > 0 (S >= last): states[n, j] = the state after the first T_n - last + 1 + j tokens, for
  /// j < last whose token count is >= 1 (j = last - 1: the final state)
  index_t last = 0;
};

/// The state tensors of a recurrent-family call. A is the state type: float, or double when
/// computing in double (also float for bf16/fp16 inputs). Absent views mean: initial state zero,
/// final state not written. ht may be the very same view as h0 (in-place update of a
/// caller-owned state, e.g. the decode step); any other overlap between them is an error.
template <class A>
struct recurrent_state {
  cview<A, 4> h0;                     ///< [N,H,K,V] (or [N,H,V,K]) initial state
  tensor_view<A, 4> ht;               ///< [N,H,K,V] (or [N,H,V,K]) final state (output)
  cview<std::int32_t, 1> cu_seqlens;  ///< [N+1] varlen token offsets (then B = 1)
  /// [N] state pool rows (continuous batching, as serving engines index their states): h0 and
  /// ht are pools [P,H,K,V] and sequence n reads and writes row state_indices[n] (-1: skip the
  /// sequence: its o rows are zeros and no state row is touched). Absent: row n is sequence n.
  /// Rows no sequence names are never read or written; a row named twice, or outside [0, P), is
  /// an error. Both recurrent families (the linear family's key sums z0 / zt are pools too).
  cview<std::int32_t, 1> state_indices = {};
  /// Intermediate states (delta-rule family only; the linear family refuses them).
  state_snapshots<A> snapshots = {};
};

namespace detail {

/// One sequence after validation: tokens [t0, t0 + len) of batch row b; its state row is its
/// index in the call's sequence list.
struct token_seq {
  index_t b, t0, len;
};

/// Lowest and one-past-highest element address a view can touch (strides are positive here).
template <class T, std::size_t R>
std::pair<const void*, const void*> address_range(const tensor_view<T, R>& v) {
  const T* lo = v.data();
  index_t span = 0;
  for (std::size_t r = 0; r < R; ++r) span += (v.extent(r) - 1) * v.stride(r);
  return {static_cast<const void*>(lo), static_cast<const void*>(lo + span + 1)};
}

/// An output that shares memory with an input must be the very same view (in-place update).
template <class T, std::size_t R>
void check_in_place(const char* fn, const char* in_name, const tensor_view<const T, R>& in,
                    const char* out_name, const tensor_view<T, R>& out) {
  if (!in.present() || !out.present() || in.size() == 0 || out.size() == 0) return;
  const auto a = address_range(in), b = address_range(out);
  const bool disjoint = std::less_equal<const void*>()(a.second, b.first) ||
                        std::less_equal<const void*>()(b.second, a.first);
  if (disjoint) return;
  if (in.data() == out.data() && in.strides() == out.strides()) return;
  fail(fn, ": tensor '", out_name, "' overlaps '", in_name,
       "' without being the same view (an in-place update needs ", out_name, " == ", in_name,
       ": same data and strides)");
}

/// The sequences of a call: one per batch row, or (varlen, B must be 1) one per cu_seqlens range.
inline std::vector<token_seq> sequences_of(const char* fn, const cview<std::int32_t, 1>& cu_seqlens,
                                           index_t B, index_t T) {
  std::vector<token_seq> seqs;
  if (cu_seqlens.present()) {
    if (B != 1)
      fail(fn, ": tensor 'q' [B,T,H,K] dim 0 (B): varlen (cu_seqlens) needs B = 1, got ", B);
    const auto cu = read_cu_seqlens(fn, "cu_seqlens", cu_seqlens, T);
    for (std::size_t n = 0; n + 1 < cu.size(); ++n) seqs.push_back({0, cu[n], cu[n + 1] - cu[n]});
  } else {
    for (index_t b = 0; b < B; ++b) seqs.push_back({b, 0, T});
  }
  return seqs;
}

/// A state tensor (h0 / ht): [N, heads, d2, d3] in `axes`, one row per sequence.
template <class T>
void check_state_rows(const char* fn, const char* name, const tensor_view<T, 4>& t,
                      const char* axes, bool varlen, dim N, dim heads, dim d2, dim d3) {
  if (!t.present()) return;
  if (t.extent(0) != N.value && varlen)
    fail(fn, ": tensor '", name, "' [", axes, "] dim 0 (N): expected ", N.value,
         " (one state per sequence of cu_seqlens), got ", t.extent(0));
  check_tensor({fn, name, axes}, t, {N, heads, d2, d3});
}

/// The pool size P of a call with state_indices: the first extent of the first present view
/// (h0, then ht, ...), -1 when none is present.
template <class... Views>
index_t pool_extent(const Views&... views) {
  index_t P = -1;
  for (const index_t e : {(views.present() ? views.extent(0) : index_t(-1))...})
    if (P < 0) P = e;
  return P;
}

/// The state row of each of N sequences: n, or the pool row state_indices[n] (-1: skipped).
/// Pool rows must be in [0, P) and distinct; P < 0 means no pool tensor was given (an error with
/// state_indices; `none_given` says which tensors could have been).
inline std::vector<index_t> state_rows(const char* fn, const cview<std::int32_t, 1>& state_indices,
                                       index_t N, index_t P, const char* none_given) {
  std::vector<index_t> rows;
  if (!state_indices.present()) {
    for (index_t n = 0; n < N; ++n) rows.push_back(n);
    return rows;
  }
  check_tensor({fn, "state_indices", "N"}, state_indices, {N});
  if (P < 0) fail(fn, ": 'state_indices' names rows of a state pool, but ", none_given);
  std::vector<char> used(std::size_t(P), 0);
  for (index_t n = 0; n < N; ++n) {
    const index_t r = state_indices(n);
    if (r == -1) {
      rows.push_back(-1);
      continue;
    }
    if (r < 0 || r >= P)
      fail(fn, ": state_indices[", n, "] = ", r, " is not a pool row in [0, ", P,
           ") (or -1 to skip the sequence)");
    if (used[std::size_t(r)])
      fail(fn, ": state_indices[", n, "] = ", r, " names a pool row another sequence uses");
    used[std::size_t(r)] = 1;
    rows.push_back(r);
  }
  return rows;
}

/// state_rows of a call whose only pools are h0 and ht (P: h0's, or ht's, first extent).
template <class A>
std::vector<index_t> state_rows(const char* fn, const recurrent_state<A>& s, index_t N) {
  return state_rows(fn, s.state_indices, N, pool_extent(s.h0, s.ht), "neither h0 nor ht is given");
}

/// Checks h0 / ht of a call with N sequences (state layout `axes`, dims d2 x d3 per head); with
/// state_indices they are pools of P rows (P = h0's, or ht's, first extent; both must agree).
template <class A>
void check_recurrent_state(const char* fn, const recurrent_state<A>& s, const char* axes,
                           index_t sequences, dim heads, dim d2, dim d3) {
  const bool varlen = s.cu_seqlens.present();
  dim N(sequences, varlen ? "sequences of cu_seqlens" : "B of q");
  if (s.state_indices.present()) {
    if (s.h0.present() || s.ht.present())
      N = dim(pool_extent(s.h0, s.ht), s.h0.present() ? "pool rows of h0" : "pool rows of ht");
    if (s.h0.present()) check_tensor({fn, "h0", axes}, s.h0, {N, heads, d2, d3});
    if (s.ht.present()) check_tensor({fn, "ht", axes}, s.ht, {N, heads, d2, d3});
  }
  check_state_rows(fn, "h0", s.h0, axes, varlen, N, heads, d2, d3);
  check_state_rows(fn, "ht", s.ht, axes, varlen, N, heads, d2, d3);
  if (s.ht.present()) check_no_self_overlap({fn, "ht", axes}, s.ht);
  check_in_place(fn, "h0", s.h0, "ht", s.ht);
}

/// Where one sequence of `len` tokens saves state snapshots (state_snapshots): the token counts
/// m after which its state is saved, and the slot (index on the S axis) of each. Default: none.
struct snapshot_schedule {
  index_t every = 0, last = 0, slots = 0, len = 0;

  /// The slot of the state after m tokens, or -1 when that state is not saved.
  index_t slot(index_t m) const {
    if (m < 1 || m > len) return -1;
    if (every > 0) return m % every == 0 && m / every <= slots ? m / every - 1 : -1;
    if (last > 0) return m >= len - last + 1 ? m - (len - last + 1) : -1;
    return -1;
  }
  /// The first saved position after m < len tokens, or len: where a chunk starting after token
  /// m ends at the latest, so that every saved state is a chunk boundary.
  index_t next_cut(index_t m) const {
    if (every > 0 && m / every < slots && every - m % every <= len - m)
      return m + every - m % every;
    if (last > 0) return std::max(m + 1, len - last + 1);
    return len;
  }
  /// The most tokens between two consecutive cuts (start, saved positions, end): the longest
  /// chunk the chunk algorithm can form in this sequence.
  index_t longest_run() const {
    index_t best = 0;
    for (index_t m = 0; m < len;) {
      const index_t c = next_cut(m);
      best = std::max(best, c - m);
      m = c;
    }
    return best;
  }
};

/// Checks the snapshots of a call with N sequences (`axes`: the snapshots' layout, e.g.
/// "N,S,HV,K,V"; heads, d2, d3 the extents of one state) and returns their schedule (len 0).
template <class A>
snapshot_schedule check_snapshots(const char* fn, const state_snapshots<A>& sn, const char* axes,
                                  index_t N, dim heads, dim d2, dim d3) {
  if (sn.every < 0) fail(fn, ": option 'snapshots.every' must be >= 0, got ", sn.every);
  if (sn.last < 0) fail(fn, ": option 'snapshots.last' must be >= 0, got ", sn.last);
  const tensor_view<A, 5>& st = sn.states;
  if (!st.present()) {
    if (sn.every > 0 || sn.last > 0)
      fail(fn, ": option 'snapshots.", sn.every > 0 ? "every" : "last",
           "' needs tensor 'snapshots.states' (where the snapshots are written)");
    return {};
  }
  if (sn.every > 0 && sn.last > 0)
    fail(fn, ": options 'snapshots.every' (", sn.every, ") and 'snapshots.last' (", sn.last,
         ") exclude each other: set one of them");
  if (sn.every == 0 && sn.last == 0)
    fail(fn, ": tensor 'snapshots.states' is given, but neither option 'snapshots.every' nor ",
         "'snapshots.last' is set (> 0)");
  const tensor_desc d{fn, "snapshots.states", axes};
  check_tensor(d, st, {dim(N, "sequences of the call"), -1, heads, d2, d3});
  if (st.extent(1) < sn.last)
    fail(fn, ": tensor 'snapshots.states' [", axes, "] dim 1 (S): expected at least ", sn.last,
         " (option 'snapshots.last'), got ", st.extent(1));
  check_no_self_overlap(d, st);
  return {sn.every, sn.last, st.extent(1), 0};
}

/// The options every recurrent-family call has: scale (0 = default), algorithm, chunk size.
inline void check_scale_algo_chunk(const char* fn, double scale, algorithm algo,
                                   index_t chunk_size) {
  if (!(scale == 0 || std::isfinite(scale)))
    fail(fn, ": option 'scale' must be finite, got ", scale);
  if (algo != algorithm::automatic && algo != algorithm::chunk && algo != algorithm::recurrent)
    fail(fn, ": option 'algo' must be algorithm::automatic, chunk or recurrent, got ", int(algo));
  if (chunk_size < 1 || chunk_size > 4096)
    fail(fn, ": option 'chunk_size' must be in [1, 4096], got ", chunk_size);
}

/// The dims every recurrent-family call has: q, k [B,T,H,K], v, o [B,T,HV,V] (HV = H, or a
/// multiple of it with grouped value heads), its sequences and the scale.
struct recurrent_shape {
  index_t B = 0, T = 0, H = 0, HV = 0, K = 0, V = 0, N = 0;
  double scale = 1;
  std::vector<token_seq> seqs;
  std::vector<index_t> rows;  // state row of each sequence (-1: skipped; see state_indices)
  snapshot_schedule snap;     // the call's snapshots (len 0; schedule(n) is sequence n's)

  snapshot_schedule schedule(index_t n) const {
    snapshot_schedule s = snap;
    s.len = seqs[std::size_t(n)].len;
    return s;
  }
};

/// Checks q, k, v and o (q defines B, T, H, K; k is checked against it, then v, then o against
/// all three), resolves the scale (0: K^-0.5) and lists the sequences. grouped_v: v may have HV
/// heads, a multiple of H (value head j reads q/k head j / (HV/H)); else HV = H.
template <class Q, class K, class V, class O>
void check_qkvo(const char* fn, double scale, bool grouped_v, const tensor_view<Q, 4>& q,
                const tensor_view<K, 4>& k, const tensor_view<V, 4>& v, const tensor_view<O, 4>& o,
                const cview<std::int32_t, 1>& cu_seqlens, recurrent_shape& sh) {
  const char* va = grouped_v ? "B,T,HV,V" : "B,T,H,V";
  check_tensor({fn, "q", "B,T,H,K"}, q, {-1, -1, -1, -1});
  sh.B = q.extent(0);
  sh.T = q.extent(1);
  sh.H = q.extent(2);
  sh.K = q.extent(3);
  check_tensor(
      {fn, "k", "B,T,H,K"}, k,
      {dim(sh.B, "B of q"), dim(sh.T, "T of q"), dim(sh.H, "H of q"), dim(sh.K, "K of q")});
  check_tensor(
      {fn, "v", va}, v,
      {dim(sh.B, "B of q"), dim(sh.T, "T of q"), grouped_v ? dim(-1) : dim(sh.H, "H of q"), -1});
  sh.HV = v.extent(2);
  sh.V = v.extent(3);
  if (sh.H < 1) fail(fn, ": tensor 'q' [B,T,H,K] dim 2 (H): must be >= 1, got ", sh.H);
  if (sh.K < 1) fail(fn, ": tensor 'q' [B,T,H,K] dim 3 (K): must be >= 1, got ", sh.K);
  if (sh.V < 1) fail(fn, ": tensor 'v' [", va, "] dim 3 (V): must be >= 1, got ", sh.V);
  if (sh.HV < sh.H || sh.HV % sh.H != 0)
    fail(fn, ": tensor 'v' [B,T,HV,V] dim 2 (HV): must be a multiple of H = ", sh.H,
         " (GVA: value head j reads q/k head j / (HV/H)), got ", sh.HV);
  check_tensor(
      {fn, "o", va}, o,
      {dim(sh.B, "B of q"), dim(sh.T, "T of q"), dim(sh.HV, "heads of v"), dim(sh.V, "V of v")});
  check_no_self_overlap({fn, "o", va}, o);
  sh.scale = scale != 0 ? scale : 1.0 / std::sqrt(double(sh.K));
  sh.seqs = sequences_of(fn, cu_seqlens, sh.B, sh.T);
  sh.N = index_t(sh.seqs.size());
}

/// The naive references' state I/O: row (n, head) of a [N, heads, K, V] state tensor (or
/// [N, heads, V, K] with v_first) to and from a dense [K, V] buffer S of doubles; an absent h0
/// reads as zeros, an absent ht is not written.
template <class T>
void read_state(const tensor_view<T, 4>& t, bool v_first, index_t n, index_t head, index_t K,
                index_t V, std::vector<double>& S) {
  for (index_t d = 0; d < K; ++d)
    for (index_t e = 0; e < V; ++e)
      S[std::size_t(d * V + e)] =
          !t.present() ? 0.0 : double(v_first ? t(n, head, e, d) : t(n, head, d, e));
}
template <class T>
void write_state(const tensor_view<T, 4>& t, bool v_first, index_t n, index_t head, index_t K,
                 index_t V, const std::vector<double>& S) {
  if (!t.present()) return;
  for (index_t d = 0; d < K; ++d)
    for (index_t e = 0; e < V; ++e)
      (v_first ? t(n, head, e, d) : t(n, head, d, e)) = T(S[std::size_t(d * V + e)]);
}

/// The o rows [B,T,heads,V] of one head over the tokens of a skipped sequence (state_indices
/// -1: no state row): zeros.
template <class O>
void zero_outputs(const tensor_view<O, 4>& o, const token_seq& sq, index_t head) {
  for (index_t t = 0; t < sq.len; ++t)
    for (index_t e = 0; e < o.extent(3); ++e) o(sq.b, sq.t0 + t, head, e) = from_compute<O>(0.0);
}

/// No output of a recurrent-family call aliases an input: o and ht against q, k, v (and ht
/// against o, o against h0); ht over h0 is the in-place form that check_in_place governs.
template <class Q, class K, class V, class O, class A>
void check_outputs_disjoint(const char* fn, const tensor_view<Q, 4>& q, const tensor_view<K, 4>& k,
                            const tensor_view<V, 4>& v, const tensor_view<O, 4>& o,
                            const cview<A, 4>& h0, const tensor_view<A, 4>& ht) {
  check_disjoint(fn, "o", o, "q", q);
  check_disjoint(fn, "o", o, "k", k);
  check_disjoint(fn, "o", o, "v", v);
  check_disjoint(fn, "o", o, "h0", h0);
  check_disjoint(fn, "ht", ht, "q", q);
  check_disjoint(fn, "ht", ht, "k", k);
  check_disjoint(fn, "ht", ht, "v", v);
  check_disjoint(fn, "ht", ht, "o", o);
}

/// The longest sequence of a call (what the automatic algorithm choice looks at).
inline index_t longest(const std::vector<token_seq>& seqs) {
  index_t m = 0;
  for (const auto& s : seqs) m = s.len > m ? s.len : m;
  return m;
}

}  // namespace detail
}  // namespace attnkit

#include "warnings_pop.hpp"
