// SPDX-License-Identifier: Apache-2.0
// The short causal convolution that Gated DeltaNet and KDA layers run on q, k and v before the
// delta rule (fla ShortConvolution, causal-conv1d conventions): depthwise over the channels,
// kernel width W (4 in those models), optional bias, SiLU or no activation, with a conv state
// of the W-1 previous inputs for decode.
//
//   x [B,T,D], w [D,W], bias [D] (optional) -> y [B,T,D]
//   xp = the sequence's state [D, W-1] (oldest first; zeros if absent) followed by its inputs
//   y[t,d] = act(bias[d] + sum_{i<W} w[d,i] * xp[t+i, d])
//   state_out [D, W-1] = the last W-1 rows of xp (with T < W-1 part of the old state remains)
// States are [N, D, W-1], one row per sequence (N = B, or cu_seqlens' N with B = 1), or rows of a
// pool [P, D, W-1] named by state_indices [N] (-1: skip the sequence; its y rows are zeros and
// no state row is touched). state_out may be state_in (the decode step updates it in place).
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../core/executor.hpp"
#include "../core/recurrent_state.hpp"
#include "../core/simd.hpp"
#include "../core/tensor_view.hpp"
#include "../core/types.hpp"
#include "../core/varlen.hpp"

namespace attnkit {

enum class conv_activation { none, silu };

struct conv1d_params {
  conv_activation activation = conv_activation::silu;  ///< applied after the bias
  executor* exec = nullptr;  ///< where work runs; nullptr = attnkit::default_executor()
};

/// The conv state of a call. A is the compute type (float, or double).
template <class A>
struct conv1d_state {
  cview<A, 3> state_in;                  ///< [N or P, D, W-1] previous inputs; absent = zeros
  tensor_view<A, 3> state_out;           ///< [N or P, D, W-1] written; may be state_in
  cview<std::int32_t, 1> cu_seqlens;     ///< [N+1] varlen token offsets (then B = 1)
  cview<std::int32_t, 1> state_indices;  ///< [N] pool rows of the states (-1: skip); absent:
                                         ///< row n is sequence n
};

namespace detail {

/// A validated conv call: sequences, dims, and the state row of each sequence (-1: skipped).
struct conv_shape {
  index_t B = 0, T = 0, D = 0, W = 0;
  std::vector<token_seq> seqs;
  std::vector<index_t> rows;
};

template <class X, class Wt, class Y, class A>
conv_shape check_conv1d(const char* fn, const tensor_view<X, 3>& x, const tensor_view<Wt, 2>& w,
                        const tensor_view<Wt, 1>& bias, const tensor_view<Y, 3>& y,
                        const conv1d_state<A>& s) {
  conv_shape c;
  check_tensor({fn, "x", "B,T,D"}, x, {-1, -1, -1});
  c.B = x.extent(0), c.T = x.extent(1), c.D = x.extent(2);
  check_tensor({fn, "w", "D,W"}, w, {c.D, -1});
  c.W = w.extent(1);
  if (c.W < 1) fail(fn, ": tensor 'w' [D,W] dim 1 (W): the kernel width must be >= 1, got ", c.W);
  if (bias.present()) check_tensor({fn, "bias", "D"}, bias, {c.D});
  check_tensor({fn, "y", "B,T,D"}, y, {c.B, c.T, c.D});
  check_no_self_overlap({fn, "y", "B,T,D"}, y);
  if (s.cu_seqlens.present()) {
    if (c.B != 1)
      fail(fn, ": tensor 'x' [B,T,D] dim 0 (B): varlen (cu_seqlens) needs B = 1, got ", c.B);
    const auto cu = read_cu_seqlens(fn, "cu_seqlens", s.cu_seqlens, c.T);
    for (std::size_t n = 0; n + 1 < cu.size(); ++n) c.seqs.push_back({0, cu[n], cu[n + 1] - cu[n]});
  } else {
    for (index_t b = 0; b < c.B; ++b) c.seqs.push_back({b, 0, c.T});
  }
  const index_t N = index_t(c.seqs.size());
  // state rows: sequence n, or the pool row state_indices[n]
  index_t rows = N;
  if (s.state_indices.present()) {
    check_tensor({fn, "state_indices", "N"}, s.state_indices, {N});
    if (!s.state_in.present() && !s.state_out.present())
      fail(fn, ": 'state_indices' needs a state pool (state_in or state_out)");
    rows = s.state_in.present() ? s.state_in.extent(0) : s.state_out.extent(0);
    std::vector<char> used(std::size_t(std::max<index_t>(rows, 0)), 0);
    for (index_t n = 0; n < N; ++n) {
      const index_t r = s.state_indices(n);
      if (r == -1) {
        c.rows.push_back(-1);
        continue;
      }
      if (r < 0 || r >= rows)
        fail(fn, ": state_indices[", n, "] = ", r, " is not a pool row in [0, ", rows,
             ") (or -1 to skip)");
      if (used[std::size_t(r)])
        fail(fn, ": state_indices[", n, "] = ", r, " names a pool row another sequence uses");
      used[std::size_t(r)] = 1;
      c.rows.push_back(r);
    }
  } else {
    for (index_t n = 0; n < N; ++n) c.rows.push_back(n);
  }
  if (s.state_in.present())
    check_tensor({fn, "state_in", "N,D,W-1"}, s.state_in, {rows, c.D, c.W - 1});
  if (s.state_out.present()) {
    check_tensor({fn, "state_out", "N,D,W-1"}, s.state_out, {rows, c.D, c.W - 1});
    check_no_self_overlap({fn, "state_out", "N,D,W-1"}, s.state_out);
    check_in_place(fn, "state_in", s.state_in, "state_out", s.state_out);
    check_disjoint(fn, "state_out", s.state_out, "x", x);
    check_disjoint(fn, "state_out", s.state_out, "w", w);
    check_disjoint(fn, "state_out", s.state_out, "y", y);
  }
  check_disjoint(fn, "y", y, "x", x);
  check_disjoint(fn, "y", y, "w", w);
  check_disjoint(fn, "y", y, "bias", bias);
  check_disjoint(fn, "y", y, "state_in", s.state_in);
  return c;
}

/// The fast kernel of a validated call: work items of up to 256 tokens of one sequence, each
/// keeping the last W rows of xp as a ring of padded rows ([W, Dp], SIMD over the channels).
template <class Arch, class X, class Wt, class Y, class A>
void run_conv1d(const conv1d_params& p, const conv_shape& c, const tensor_view<X, 3>& x,
                const tensor_view<Wt, 2>& w, const tensor_view<Wt, 1>& bias,
                const tensor_view<Y, 3>& y, const conv1d_state<A>& s) {
  using B = xsimd::batch<A, Arch>;
  constexpr index_t L = index_t(B::size);
  const index_t D = c.D, W = c.W, Dp = round_up(D, L), H = W - 1;
  // w^T [W, Dp] and bias [Dp] in the compute type, zero-padded
  aligned_vector<A> wt(std::size_t(W * Dp), A(0)), bv(std::size_t(Dp), A(0));
  for (index_t i = 0; i < W; ++i)
    for (index_t d = 0; d < D; ++d) wt[std::size_t(i * Dp + d)] = to_compute<A>(w(d, i));
  if (bias.present())
    for (index_t d = 0; d < D; ++d) bv[std::size_t(d)] = to_compute<A>(bias(d));
  const bool silu = p.activation == conv_activation::silu;
  constexpr index_t kBlock = 256;  // tokens per work item
  // items: (sequence, block of tokens); the block reads its W-1 previous inputs from x or state
  std::vector<std::pair<std::size_t, index_t>> items;
  for (std::size_t n = 0; n < c.seqs.size(); ++n)
    for (index_t t0 = 0; t0 < std::max<index_t>(c.seqs[n].len, 1); t0 += kBlock)
      items.push_back({n, t0});
  // old states of the sequences whose state is updated in place: read before any write
  const bool in_place =
      s.state_in.present() && s.state_out.present() && s.state_in.data() == s.state_out.data();
  std::vector<A> old;
  if (in_place && H > 0) {
    old.resize(c.seqs.size() * std::size_t(D * H));
    for (std::size_t n = 0; n < c.seqs.size(); ++n)
      if (c.rows[n] >= 0)
        for (index_t d = 0; d < D; ++d)
          for (index_t j = 0; j < H; ++j)
            old[(n * std::size_t(D) + std::size_t(d)) * std::size_t(H) + std::size_t(j)] =
                s.state_in(c.rows[n], d, j);
  }
  // xp row r of sequence n (r < H: the state; else input token r - H), element d
  const auto state_at = [&](std::size_t n, index_t d, index_t j) -> A {
    if (c.rows[n] < 0 || !s.state_in.present()) return A(0);
    return in_place ? old[(n * std::size_t(D) + std::size_t(d)) * std::size_t(H) + std::size_t(j)]
                    : s.state_in(c.rows[n], d, j);
  };
  resolve(p.exec).parallel_for(index_t(items.size()), [&](index_t it) {
    const std::size_t n = items[std::size_t(it)].first;
    const index_t t0 = items[std::size_t(it)].second;
    const token_seq& sq = c.seqs[n];
    const index_t t1 = std::min(sq.len, t0 + kBlock);
    if (c.rows[n] < 0) {  // skipped: zeros
      for (index_t t = t0; t < t1; ++t)
        for (index_t d = 0; d < D; ++d) y(sq.b, sq.t0 + t, d) = from_compute<Y>(A(0));
      return;
    }
    // window of the last W rows of xp, as [W, Dp] rows (ring over the rows)
    thread_local aligned_vector<A> win;
    win.assign(std::size_t(W * Dp), A(0));
    const auto load_xp = [&](index_t r, A* dst) {  // xp row r (0 <= r < H + len)
      if (r < H) {
        for (index_t d = 0; d < D; ++d) dst[d] = state_at(n, d, r);
      } else {
        simd::convert<A, Arch>(&x(sq.b, sq.t0 + r - H, 0), dst, D);
      }
    };
    for (index_t i = 0; i < H; ++i) load_xp(t0 + i, win.data() + ((t0 + i) % W) * Dp);
    thread_local std::vector<const A*> rows;
    rows.resize(std::size_t(W));
    for (index_t t = t0; t < t1; ++t) {
      // xp rows t .. t + H live in window slots (t + i) % W
      load_xp(t + H, win.data() + ((t + H) % W) * Dp);
      for (index_t i = 0; i < W; ++i) rows[std::size_t(i)] = win.data() + ((t + i) % W) * Dp;
      Y* out = &y(sq.b, sq.t0 + t, 0);
      alignas(64) A tmp[B::size];
      for (index_t d = 0; d < Dp; d += L) {
        B acc = B::load_aligned(bv.data() + d);
        for (index_t i = 0; i < W; ++i)
          acc = xsimd::fma(B::load_aligned(wt.data() + i * Dp + d),
                           B::load_aligned(rows[std::size_t(i)] + d), acc);
        if (silu) acc = acc / (B(A(1)) + simd::exp(-acc));  // x sigmoid(x)
        const index_t m = std::min(L, D - d);
        if constexpr (std::is_same_v<Y, A>) {
          if (m == L) {
            acc.store_unaligned(out + d);
            continue;
          }
        }
        acc.store_aligned(tmp);
        for (index_t e = 0; e < m; ++e) out[d + e] = from_compute<Y>(tmp[e]);
      }
    }
    // the item with the last token writes the new state: the last H rows of xp
    if (s.state_out.present() && t1 == sq.len && H > 0) {
      for (index_t j = 0; j < H; ++j) {
        const index_t r = sq.len + j;  // xp row
        for (index_t d = 0; d < D; ++d)
          s.state_out(c.rows[n], d, j) =
              r < H ? state_at(n, d, r) : to_compute<A>(x(sq.b, sq.t0 + r - H, d));
      }
    }
  });
}

}  // namespace detail

/// Short causal convolution (see the top of this file). x and y need stride 1 on their last
/// dimension; w, bias and the states may have any strides.
template <class X, class Wt, class Y, class Arch = simd::default_arch>
void short_conv1d(const conv1d_params& p, tensor_view<X, 3> x, tensor_view<Wt, 2> w,
                  tensor_view<Wt, 1> bias, tensor_view<Y, 3> y,
                  const conv1d_state<accum_t<X>>& s = {}) {
  detail::check_element_types<X, Wt, Y>();
  const char* fn = "short_conv1d";
  const auto c = detail::check_conv1d(fn, x, w, bias, y, s);
  detail::require_inner_contiguous({fn, "x", "B,T,D"}, x);
  detail::require_inner_contiguous({fn, "y", "B,T,D"}, y);
  detail::run_conv1d<Arch>(p, c, x, w, bias, y, s);
}

}  // namespace attnkit

#include "../core/warnings_pop.hpp"
