// SPDX-License-Identifier: Apache-2.0
// attnkit-run variant `mla`, multi-head latent attention (DeepSeek-V2/V3, Kimi K2):
//   q_nope [B,Tq,H,Dn], q_pe [B,Tq,H,Dr], c_kv [B,Tk,Dc], k_pe [B,Tk,Dr], w_uk [H,Dn,Dc],
//   w_uv [H,Dv,Dc] -> o [B,Tq,H,Dv], lse [B,H,Tq] in the input dtype.
// Per head h: k = [w_uk[h] c ; k_pe], v = w_uv[h] c, q = [q_nope ; q_pe]; the scale defaults to
// (Dn + Dr)^-0.5 and causal masks are bottom-right. --form absorbed (default) absorbs w_uk into the
// queries (mla_absorb_q), attends over a latent cache of rows [c_kv ; k_pe] (--cache contiguous,
// the default, or paged with --page-size P) and applies w_uv afterwards (mla_absorb_o); --form
// naive decompresses keys and values per head and reads c_kv, k_pe directly (--cache does not
// apply).
#include <attnkit/mla.hpp>
#include <limits>

#include "common.hpp"

namespace attnkit_run {
namespace {

struct mla_options {
  attnkit::mla_params p;
  bool zero_scale = false;  // --scale 0: every logit is 0
  bool naive = false;       // --form naive
  bool paged = false;       // --cache paged
  index_t page_size = 16;
};

mla_options read_options(context& ctx) {
  auto& o = ctx.opts();
  mla_options m;
  m.p.causal = o.flag("causal");
  const double scale = o.get_double("scale", 0.0);
  // attnkit reads scale 0 as "default"; an explicit 0 makes every logit 0, which zeroed queries
  // with scale 1 reproduce exactly.
  m.zero_scale = o.has("scale") && scale == 0.0;
  m.p.scale = m.zero_scale ? 1.0 : scale;
  m.naive = o.get_choice("form", {"absorbed", "naive"}, "absorbed") == "naive";
  m.paged = o.get_choice("cache", {"contiguous", "paged"}, "contiguous") == "paged";
  m.page_size = index_t(o.get_int("page-size", 16, 1, 1 << 20));
  if (o.has("page-size") && !m.paged) fail("option '--page-size' needs '--cache paged'");
  m.p.exec = ctx.exec();
  return m;
}

/// The latent rows [c_kv ; k_pe] of every token in a contiguous or a paged latent cache. Pages are
/// handed out interleaved across sequences and in reverse order (plus one spare page that is never
/// referenced), so the block table is exercised.
template <class T>
struct latent_store {
  std::vector<T> buf;
  std::vector<std::int32_t> seqlens, table;
  attnkit::latent_cache<T> contiguous;
  attnkit::paged_latent_cache<T> paged;

  latent_store(const mla_options& m, const attnkit::cview<T, 3>& c_kv,
               const attnkit::cview<T, 3>& k_pe) {
    const index_t B = c_kv.extent(0), Tk = c_kv.extent(1), Dc = c_kv.extent(2), Dr = k_pe.extent(2),
                  W = Dc + Dr, cap = std::max<index_t>(Tk, 1);
    seqlens.assign(std::size_t(B), std::int32_t(Tk));
    const auto lens = attnkit::make_view(static_cast<const std::int32_t*>(seqlens.data()), B);
    std::function<T*(index_t, index_t)> row;  // (b, t) -> the cache row of token t of sequence b
    if (!m.paged) {
      buf.assign(checked_elems("kv_cache", {B, cap, W}), T(0));
      contiguous = {attnkit::make_view(buf.data(), B, cap, W), lens, Dc};
      row = [this](index_t b, index_t t) { return &contiguous.kv(b, t, 0); };
    } else {
      const index_t P = m.page_size, per_seq = (cap + P - 1) / P, np = B * per_seq + 1;
      buf.assign(checked_elems("kv_pages", {np, P, W}), T(0));
      table.resize(checked_elems("block_table", {B, per_seq}));
      for (index_t b = 0; b < B; ++b)
        for (index_t j = 0; j < per_seq; ++j)
          table[std::size_t(b * per_seq + j)] = std::int32_t(np - 2 - (j * B + b));
      paged = {attnkit::make_view(buf.data(), np, P, W),
               attnkit::make_view(static_cast<const std::int32_t*>(table.data()), B, per_seq), lens,
               Dc};
      row = [this, P](index_t b, index_t t) {
        return &paged.kv_pages(paged.block_table(b, t / P), t % P, 0);
      };
    }
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < Tk; ++t) {
        T* r = row(b, t);
        for (index_t c = 0; c < Dc; ++c) r[c] = c_kv(b, t, c);
        for (index_t d = 0; d < Dr; ++d) r[Dc + d] = k_pe(b, t, d);
      }
  }
};

template <class T>
void run_typed(context& ctx, mla_options m) {
  const std::string qa = "B,Tq,H,Dn", pa = "B,Tq,H,Dr", ca = "B,Tk,Dc", ka = "B,Tk,Dr",
                    uka = "H,Dn,Dc", uva = "H,Dv,Dc";
  auto q_nope = ctx.load<T>("q_nope", qa);
  auto q_pe = ctx.load<T>("q_pe", pa);
  auto c_kv = ctx.load<T>("c_kv", ca);
  auto k_pe = ctx.load<T>("k_pe", ka);
  auto w_uk = ctx.load<T>("w_uk", uka);
  auto w_uv = ctx.load<T>("w_uv", uva);

  const index_t B = q_nope.dim(0), Tq = q_nope.dim(1), H = q_nope.dim(2), Dn = q_nope.dim(3);
  for (std::size_t r = 0; r < 3; ++r)
    ctx.expect_dim(q_pe, pa, r, q_nope.dim(r), "shape of q_nope.npy");
  const index_t Dr = q_pe.dim(3);
  ctx.expect_dim(c_kv, ca, 0, B, "B of q_nope.npy");
  const index_t Tk = c_kv.dim(1), Dc = c_kv.dim(2);
  ctx.expect_dim(k_pe, ka, 0, B, "B of q_nope.npy");
  ctx.expect_dim(k_pe, ka, 1, Tk, "Tk of c_kv.npy");
  ctx.expect_dim(k_pe, ka, 2, Dr, "Dr of q_pe.npy");
  ctx.expect_dim(w_uk, uka, 0, H, "H of q_nope.npy");
  ctx.expect_dim(w_uk, uka, 1, Dn, "Dn of q_nope.npy");
  ctx.expect_dim(w_uk, uka, 2, Dc, "Dc of c_kv.npy");
  ctx.expect_dim(w_uv, uva, 0, H, "H of q_nope.npy");
  ctx.expect_dim(w_uv, uva, 2, Dc, "Dc of c_kv.npy");
  const index_t Dv = w_uv.dim(1);
  if (H < 1) fail("'", q_nope.file, "': dim 2 (H) must be >= 1");
  if (Dn < 1) fail("'", q_nope.file, "': dim 3 (Dn) must be >= 1");
  if (Dc < 1) fail("'", c_kv.file, "': dim 2 (Dc) must be >= 1");
  if (Dv < 1) fail("'", w_uv.file, "': dim 1 (Dv) must be >= 1");
  if (Tk > std::numeric_limits<std::int32_t>::max())
    fail("'", c_kv.file, "': dim 1 (Tk) is ", Tk, ", more tokens than a cache holds");

  if (m.zero_scale) {
    std::fill(q_nope.buf.begin(), q_nope.buf.end(), T(0));
    std::fill(q_pe.buf.begin(), q_pe.buf.end(), T(0));
  }
  m.p.dn = Dn;  // the absorbed form's default scale (Dn + Dr)^-0.5
  std::vector<T> o(checked_elems("o", {B, Tq, H, Dv}), T(0)),
      lse(checked_elems("lse", {B, H, Tq}), T(0));
  const auto ov = attnkit::make_view(o.data(), B, Tq, H, Dv);
  attnkit::softmax_extras<T> x;
  x.lse = attnkit::make_view(lse.data(), B, H, Tq);
  const auto qn = q_nope.template cview<4>(), qp = q_pe.template cview<4>();
  const auto cv = c_kv.template cview<3>(), kp = k_pe.template cview<3>();
  const auto uk = w_uk.template cview<3>(), uv = w_uv.template cview<3>();
  const bool ref = ctx.reference();

  if (m.naive) {
    if (ref)
      attnkit::reference::mla_attention_naive(m.p, qn, qp, cv, kp, uk, uv, ov, x);
    else
      attnkit::mla_attention_naive(m.p, qn, qp, cv, kp, uk, uv, ov, x);
  } else {
    std::vector<T> q_abs(checked_elems("q_abs", {B, Tq, H, Dc + Dr}), T(0)),
        o_lat(checked_elems("o_lat", {B, Tq, H, Dc}), T(0));
    const auto qa_v = attnkit::make_view(q_abs.data(), B, Tq, H, Dc + Dr);
    const auto ol_v = attnkit::make_view(o_lat.data(), B, Tq, H, Dc);
    const auto qa_c = attnkit::make_view<const T>(q_abs.data(), B, Tq, H, Dc + Dr);
    const auto ol_c = attnkit::make_view<const T>(o_lat.data(), B, Tq, H, Dc);
    const latent_store<T> store(m, cv, kp);
    const auto attend = [&](const auto& cache) {
      if (ref) {
        attnkit::reference::mla_absorb_q(m.p, qn, qp, uk, qa_v);
        attnkit::reference::mla_attention_absorbed(m.p, qa_c, cache, ol_v, x);
        attnkit::reference::mla_absorb_o(m.p, ol_c, uv, ov);
      } else {
        attnkit::mla_absorb_q(m.p, qn, qp, uk, qa_v);
        attnkit::mla_attention_absorbed(m.p, qa_c, cache, ol_v, x);
        attnkit::mla_absorb_o(m.p, ol_c, uv, ov);
      }
    };
    if (m.paged)
      attend(store.paged);
    else
      attend(store.contiguous);
  }
  ctx.save("o", std::move(o), {B, Tq, H, Dv});
  ctx.save("lse", std::move(lse), {B, H, Tq});
}

void run_mla(context& ctx) {
  const auto m = read_options(ctx);
  dispatch_float(ctx, {"q_nope", "q_pe", "c_kv", "k_pe", "w_uk", "w_uv"},
                 [&](auto tag) { run_typed<decltype(tag)>(ctx, m); });
}

const variant_registrar reg_mla(
    "mla", &run_mla,
    "q_nope [B,Tq,H,Dn], q_pe [B,Tq,H,Dr], c_kv [B,Tk,Dc], k_pe [B,Tk,Dr], w_uk [H,Dn,Dc], "
    "w_uv [H,Dv,Dc] -> o [B,Tq,H,Dv], lse [B,H,Tq]; options --causal, --scale X (default "
    "(Dn+Dr)^-0.5), --form absorbed|naive (default absorbed), --cache contiguous|paged (absorbed "
    "form; default contiguous), --page-size P (16; needs --cache paged)");

}  // namespace
}  // namespace attnkit_run
