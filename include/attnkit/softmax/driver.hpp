// SPDX-License-Identifier: Apache-2.0
// The softmax-family driver: one validated problem (softmax_shape) through five stages,
//   plan      work items = (sequence, kv heads, block of query positions, key split)
//   schedule  the order items run in (the order never changes a result)
//   pack      K^T and V of each (sequence, kv head) that several query blocks share, packed once
//   run       every item (prefill_item or decode_item), written out or kept as a partial state
//   merge     the split partial states of each row, in split order
// The split depends only on the problem shape, never on the thread count, so results are
// reproducible for any executor.
#pragma once

#include "../core/warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "../core/executor.hpp"
#include "../core/online_softmax.hpp"
#include "../core/simd.hpp"
#include "../core/workspace.hpp"
#include "item.hpp"
#include "params.hpp"
#include "tiles.hpp"

namespace attnkit {
namespace detail {

/// The items of a problem: `items[first .. first + count)` are the key splits of base item b
/// (split_of_base[b]); items with slot >= 0 keep partial states of M_max rows for the merge.
struct softmax_plan {
  std::vector<softmax_item> items;
  std::vector<std::pair<std::size_t, std::size_t>> split_of_base;  // [first item, count)
  index_t slots = 0, M_max = 0, nq_per_item = 1;
};

/// Plan: query blocks of about kRowsPerItem rows per (sequence, kv head) (kWideRowsPerItem for
/// groups of kRowsPerItem heads or more), or one item over every kv head for decode shapes (fewer
/// than kSmallRows rows); then split-KV of long key ranges into at most num_splits (automatic:
/// enough items for kTargetItems, >= kMinSplitKeys keys each).
inline softmax_plan plan_items(const softmax_params& p, const softmax_shape& sh) {
  const index_t G = sh.group;
  softmax_plan plan;
  plan.nq_per_item = G >= softmax_tiling::kRowsPerItem
                         ? std::max<index_t>(1, softmax_tiling::kWideRowsPerItem / G)
                         : softmax_tiling::kRowsPerItem / G;
  const index_t nq_per_item = plan.nq_per_item;
  struct base_item {  // before splitting, with its visible key range [klo, khi]
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
        sh.mask.range(i0 + t, sq.tq, sq.tk, lo, hi);  // (sinks: the first split's own pass)
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
    plan.split_of_base.push_back({plan.items.size(), std::size_t(ns)});
    const index_t per = per_blocks * softmax_tiling::kBlockN;
    for (index_t s = 0; s < ns; ++s) {
      const index_t kb = b.klo + s * per, ke = std::min(b.khi + 1, kb + per);
      plan.items.push_back({b.seq, b.hk, b.nh, b.i0, b.nq, ns == 1 ? 0 : kb,
                            ns == 1 ? sh.seqs[b.seq].tk : ke, ns == 1 ? -1 : plan.slots++, s == 0});
    }
    plan.M_max = std::max(plan.M_max, b.nh * b.nq * G);
  }
  return plan;
}

/// Schedule: the items of one (sequence, kv head) run together, so the threads share that head's
/// packed K/V while it is in cache (items across all heads in turn would cycle through Hkv packed
/// copies: 32 MB for 8 heads at T = 4096, D = 128, more than L3). Groups with the largest item go
/// first and each group runs its largest items first, so the schedule ends with small items.
inline std::vector<std::size_t> schedule_items(const softmax_shape& sh, const softmax_plan& plan) {
  const auto& items = plan.items;
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
  return order;
}

/// Pack: K^T and V of every (sequence, kv head) whose sequence has more than one query block,
/// packed once per call (other items pack per key block, decode-shaped items read in place). V
/// is packed even when it could be read in place: rows Hkv*Dv apart alias the same L1 sets. The
/// store is kept per calling thread for the next call when it is at most kRetainPackBytes: a
/// fresh buffer costs a page fault per 4 KiB on every call. Larger stores, and calls nested in
/// another call's tasks on the same thread (a caller's work-stealing executor), get their own
/// buffer, freed with this object.
template <class A, class Arch>
class pack_store {
 public:
  /// Adds the store's size to ws (checked) before allocating it.
  template <class RowsOf>
  pack_store(const softmax_shape& sh, const softmax_plan& plan, executor& ex, RowsOf rows_of,
             workspace_plan& ws)
      : sh_(sh), Dvp_(round_up(sh.Dv, 2 * index_t(xsimd::batch<A, Arch>::size))) {
    constexpr index_t W = index_t(xsimd::batch<A, Arch>::size), NB = softmax_tiling::kBlockN;
    kt_block_ = sh.Dk * NB;
    v_block_ = NB * Dvp_;
    off_.assign(sh.seqs.size() * std::size_t(sh.Hkv), std::size_t(-1));
    std::vector<std::pair<std::size_t, index_t>> units;  // (seq * Hkv + hk, first block)
    std::size_t total = 0;
    if (plan.nq_per_item * sh.group >= softmax_tiling::kSmallRows) {
      for (std::size_t n = 0; n < sh.seqs.size(); ++n) {
        const auto& sq = sh.seqs[n];
        if (sq.tq <= plan.nq_per_item) continue;
        const index_t nblocks = (sq.tk + NB - 1) / NB;
        ws.add("packed K^T and V", {nblocks, kt_block_ + v_block_}, sizeof(A), sh.Hkv);
        for (index_t hk = 0; hk < sh.Hkv; ++hk) {
          off_[n * std::size_t(sh.Hkv) + std::size_t(hk)] = total;
          total += std::size_t(nblocks * (kt_block_ + v_block_));
          for (index_t b0 = 0; b0 < nblocks; b0 += 16)
            units.push_back({n * std::size_t(sh.Hkv) + std::size_t(hk), b0});
        }
      }
    }
    static thread_local simd::aligned_buffer<A> retained;
    static thread_local bool retained_in_use = false;
    const bool retain = total * sizeof(A) <= softmax_tiling::kRetainPackBytes && !retained_in_use;
    if (!retain)
      own_ = simd::aligned_buffer<A>(total);
    else if (retained.size() < total)
      retained = simd::aligned_buffer<A>(total);
    if (retain) {
      retained_in_use = true;
      in_use_ = &retained_in_use;
    }
    store_ = retain ? retained.data() : own_.data();
    ex.parallel_for(index_t(units.size()), [&](index_t u) {
      const auto [key, b0] = units[std::size_t(u)];
      const std::size_t n = key / std::size_t(sh.Hkv);
      const index_t hk = index_t(key % std::size_t(sh.Hkv));
      const auto& sq = sh.seqs[n];
      const auto rows = rows_of(sq, hk);
      const index_t nblocks = (sq.tk + NB - 1) / NB;
      A* kt = store_ + off_[key];
      A* v = kt + nblocks * kt_block_;
      for (index_t b = b0; b < std::min(nblocks, b0 + 16); ++b) {
        const index_t nb = std::min(NB, sq.tk - b * NB);
        pack_kt<A, Arch, 2 * W>(rows, b * NB, nb, NB, sh.Dk, kt + b * kt_block_);
        pack_v<A, Arch, 2 * W>(rows, b * NB, nb, sh.Dv, Dvp_, v + b * v_block_);
      }
    });
  }
  ~pack_store() {
    if (in_use_) *in_use_ = false;
  }
  pack_store(const pack_store&) = delete;
  pack_store& operator=(const pack_store&) = delete;

  /// The packed K^T and V of (sequence n, kv head hk), or {nullptr, nullptr}.
  packed_kv<A> of(std::size_t n, index_t hk) const {
    packed_kv<A> pk;
    const std::size_t off = off_[n * std::size_t(sh_.Hkv) + std::size_t(hk)];
    if (off == std::size_t(-1)) return pk;
    const index_t nblocks =
        (sh_.seqs[n].tk + softmax_tiling::kBlockN - 1) / softmax_tiling::kBlockN;
    pk.kt = store_ + off;
    pk.v = pk.kt + nblocks * kt_block_;
    return pk;
  }

 private:
  const softmax_shape& sh_;
  index_t Dvp_, kt_block_ = 0, v_block_ = 0;
  std::vector<std::size_t> off_;
  simd::aligned_buffer<A> own_;
  A* store_ = nullptr;
  bool* in_use_ = nullptr;
};

/// Merge: the split partial states (m, l, acc) of each base item, in split order.
template <class A, class O>
void merge_splits(const softmax_shape& sh, const softmax_plan& plan, const A* partial,
                  index_t slot_size, index_t Dvp, executor& ex, const tensor_view<O, 4>& o,
                  const softmax_extras<A>& x) {
  const index_t G = sh.group;
  ex.parallel_for(index_t(plan.split_of_base.size()), [&](index_t bi) {
    const auto [first, count] = plan.split_of_base[std::size_t(bi)];
    if (count < 2) return;
    const softmax_item& it0 = plan.items[first];
    const index_t M = it0.nh * it0.nq * G;
    std::vector<softmax_state<A>> st(static_cast<std::size_t>(M));
    aligned_vector<A> acc(std::size_t(M * Dvp), A(0));
    for (std::size_t s = 0; s < count; ++s) {
      const A* src = partial + plan.items[first + s].slot * slot_size;
      for (index_t r = 0; r < M; ++r) {
        const softmax_state<A> other{src[2 * r], src[2 * r + 1]};
        A w_self, w_other;
        st[std::size_t(r)].merge(other, w_self, w_other);
        const A* a = src + 2 * plan.M_max + r * Dvp;
        A* d = acc.data() + r * Dvp;
        for (index_t c = 0; c < Dvp; ++c) d[c] = d[c] * w_self + a[c] * w_other;
      }
    }
    finalize_rows(sh, sh.seqs[it0.seq], it0, st.data(), acc.data(), Dvp, o, x);
  });
}

/// The items of a planned call, then the merge of split rows (run_softmax's work).
template <class A, class Arch, class Q, class O, class RowsOf>
void run_items(const softmax_params& p, const softmax_shape& sh, const softmax_plan& plan,
               const std::vector<std::size_t>& order, const tensor_view<Q, 4>& q,
               const tensor_view<O, 4>& o, const softmax_extras<A>& x, RowsOf rows_of,
               workspace_plan& wplan) {
  constexpr index_t W = index_t(xsimd::batch<A, Arch>::size);
  const index_t Dvp = round_up(sh.Dv, 2 * W);
  // softcap: x = cap * tanh(scale q.k / cap), so q is scaled by scale / cap
  const A softcap = A(p.softcap);
  const A qscale = A(p.softcap > 0 ? sh.scale / p.softcap : sh.scale);
  executor& ex = resolve(p.exec);
  const pack_store<A, Arch> packs(sh, plan, ex, rows_of, wplan);
  const index_t slot_size = plan.M_max * (Dvp + 2);
  aligned_vector<A> partial(std::size_t(plan.slots * slot_size));

  using Rows = decltype(rows_of(std::declval<const softmax_seq&>(), index_t(0)));
  ex.parallel_for(index_t(plan.items.size()), [&](index_t idx) {
    thread_local softmax_workspace<A> ws;
    thread_local std::vector<Rows> head_rows;
    const softmax_item& it = plan.items[order[std::size_t(idx)]];
    const softmax_seq& sq = sh.seqs[it.seq];
    head_rows.clear();
    for (index_t hh = 0; hh < it.nh; ++hh) head_rows.push_back(rows_of(sq, it.hk + hh));
    if (it.packed(sh.group))
      prefill_item<A, Arch>(sh, sq, it, q, head_rows[0], packs.of(it.seq, it.hk), qscale, softcap,
                            ws);
    else
      decode_item<A, Arch>(sh, sq, it, q, head_rows.data(), qscale, softcap, ws);
    if (it.slot < 0) {
      finalize_rows(sh, sq, it, ws.st.data(), ws.acc.data(), Dvp, o, x);
    } else {  // keep (m, l, acc) for the merge
      A* dst = partial.data() + it.slot * slot_size;
      const index_t M = it.nh * it.nq * sh.group;
      for (index_t r = 0; r < M; ++r) {
        dst[2 * r] = ws.st[std::size_t(r)].m;
        dst[2 * r + 1] = ws.st[std::size_t(r)].l;
      }
      std::copy(ws.acc.begin(), ws.acc.begin() + M * Dvp, dst + 2 * plan.M_max);
    }
  });
  if (plan.slots > 0) merge_splits(sh, plan, partial.data(), slot_size, Dvp, ex, o, x);
}

/// Runs a validated problem through plan, schedule, pack, run and merge. rows_of(seq, hk)
/// returns the key/value rows of one (sequence, kv head). Every workspace size is checked before
/// the work starts; running out of memory is reported as an attnkit::error naming fn.
template <class A, class Arch, class Q, class O, class RowsOf>
void run_softmax(const char* fn, const softmax_params& p, const softmax_shape& sh,
                 const tensor_view<Q, 4>& q, const tensor_view<O, 4>& o, const softmax_extras<A>& x,
                 RowsOf rows_of) {
  constexpr index_t W = index_t(xsimd::batch<A, Arch>::size);
  const index_t Dvp = round_up(sh.Dv, 2 * W);
  executor& ex = resolve(p.exec);

  constexpr index_t NB = softmax_tiling::kBlockN;
  const index_t threads = index_t(ex.num_threads());
  workspace_plan ws(fn);
  ws.run([&] {  // (planning allocates too)
    const softmax_plan plan = plan_items(p, sh);
    const std::vector<std::size_t> order = schedule_items(sh, plan);
    ws.add("query rows", {plan.M_max, round_up(sh.Dk, W)}, sizeof(A), threads)
        .add("accumulators", {plan.M_max, Dvp}, sizeof(A), threads)
        .add("scores", {plan.M_max, NB}, sizeof(A), threads)
        .add("K^T block", {sh.Dk, NB}, sizeof(A), threads)
        .add("V block", {NB, Dvp}, sizeof(A), threads)
        .add("split partial states", {plan.slots, plan.M_max, Dvp + 2}, sizeof(A));
    run_items<A, Arch>(p, sh, plan, order, q, o, x, rows_of, ws);
  });
}

}  // namespace detail
}  // namespace attnkit

#include "../core/warnings_pop.hpp"
