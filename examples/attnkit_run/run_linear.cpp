// SPDX-License-Identifier: Apache-2.0
// attnkit-run variants `linear_attn`, `simple_gla` and `gla` (the linear family):
//   q, k [B,T,H,K], v [B,T,H,V] (HV = H for these three), gate g ([B,T,H] simple_gla, [B,T,H,K]
//   gla; simple_gla alternatively g_gamma [H], a fixed per-head decay), optional h0 [N,H,K,V],
//   optional z0 [N,1,H,K] (linear_attn --normalize), optional cu_seqlens [N+1] (int32 or int64;
//   then B = 1) -> o [B,T,H,V], ht [N,H,K,V] (always), zt [N,1,H,K] (with --normalize), in the
//   input dtype. Options: --scale X (default K^-0.5), --mode chunk|recurrent|auto, --chunk-size
//   C, --normalize (linear_attn). Absent h0 / z0 are zeros (fla's initial_state=None).
#include <attnkit/linear.hpp>

#include "common.hpp"

namespace attnkit_run {
namespace {

enum class lin_variant { linear, simple, gla };

struct lin_options {
  attnkit::linear_params p;
  bool zero_scale = false;  // --scale 0: every output is 0
};

lin_options read_lin_options(context& ctx, lin_variant var) {
  auto& o = ctx.opts();
  lin_options s;
  s.zero_scale = read_recurrent_options(o, ctx.variant(), ctx.exec(), s.p);
  if (var == lin_variant::linear) s.p.normalize = o.flag("normalize");
  return s;
}

template <class T>
void run_typed(context& ctx, lin_variant var, const lin_options& so) {
  const std::string qa = "B,T,H,K", va = "B,T,HV,V", sa = "N,HV,K,V", za = "N,1,H,K";
  auto q = ctx.load<T>("q", qa);
  auto k = ctx.load<T>("k", qa);
  auto v = ctx.load<T>("v", va);
  const index_t B = q.dim(0), T_ = q.dim(1), H = q.dim(2), K = q.dim(3);
  for (std::size_t r = 0; r < 4; ++r) ctx.expect_dim(k, qa, r, q.dim(r), "shape of q.npy");
  ctx.expect_dim(v, va, 0, B, "B of q.npy");
  ctx.expect_dim(v, va, 1, T_, "T of q.npy");
  ctx.expect_dim(v, va, 2, H, std::string("H of q.npy; ") + ctx.variant() + " needs HV = H");
  const index_t V = v.dim(3);
  if (K < 1) fail("'", q.file, "': dim 3 (K) must be >= 1");
  if (V < 1) fail("'", v.file, "': dim 3 (V) must be >= 1");

  tensor<T> g, g_gamma;
  if (var == lin_variant::simple) {
    if (ctx.has_input("g") || !ctx.has_input("g_gamma")) {
      g = ctx.load<T>("g", "B,T,HV");
      for (std::size_t r = 0; r < 3; ++r) ctx.expect_dim(g, "B,T,HV", r, v.dim(r), "dims of v.npy");
    } else {
      g_gamma = ctx.load<T>("g_gamma", "HV");
      ctx.expect_dim(g_gamma, "HV", 0, H, "H of q.npy");
    }
  } else if (var == lin_variant::gla) {
    g = ctx.load<T>("g", "B,T,HV,K");
    for (std::size_t r = 0; r < 4; ++r)
      ctx.expect_dim(g, "B,T,HV,K", r, q.dim(r), "shape of q.npy");
  }

  auto cu = ctx.load_index_optional("cu_seqlens");
  const bool varlen = cu.present();
  if (varlen && B != 1)
    fail("'", q.file, "': dim 0 (B) is ", B, ", varlen (cu_seqlens) needs B = 1");
  if (varlen && cu.dim(0) < 1) fail("'", cu.file, "': needs at least one entry (N+1 >= 1)");
  const index_t N = varlen ? cu.dim(0) - 1 : B;
  const std::string n_why = varlen ? "one state per sequence of cu_seqlens.npy" : "B of q.npy";

  auto h0 = ctx.load_optional<T>("h0", sa);
  if (h0.present()) {
    ctx.expect_dim(h0, sa, 0, N, n_why);
    ctx.expect_dim(h0, sa, 1, H, "HV of v.npy");
    ctx.expect_dim(h0, sa, 2, K, "K of q.npy");
    ctx.expect_dim(h0, sa, 3, V, "V of v.npy");
  }
  const bool normalize = so.p.normalize;
  tensor<T> z0;
  if (normalize) {
    z0 = ctx.load_optional<T>("z0", za);
    if (z0.present()) {
      ctx.expect_dim(z0, za, 0, N, n_why);
      ctx.expect_dim(z0, za, 1, 1, "key-sum state");
      ctx.expect_dim(z0, za, 2, H, "H of q.npy");
      ctx.expect_dim(z0, za, 3, K, "K of q.npy");
    }
    // the library continues a normalised run only from (h0, z0) together; an absent one is zeros
    if (h0.present() != z0.present()) {
      auto& missing = h0.present() ? z0 : h0;
      missing.file = ctx.input_path(h0.present() ? "z0" : "h0") + " (absent: zeros)";
      missing.shape =
          h0.present() ? std::vector<index_t>{N, 1, H, K} : std::vector<index_t>{N, H, K, V};
      missing.buf.assign(std::size_t(h0.present() ? N * H * K : N * H * K * V), T(0));
    }
  }
  if (so.zero_scale) std::fill(q.buf.begin(), q.buf.end(), T(0));

  std::vector<T> o(std::size_t(B * T_ * H * V), T(0)), ht(std::size_t(N * H * K * V), T(0)),
      zt(std::size_t(N * H * K), T(0));
  const auto ov = attnkit::make_view(o.data(), B, T_, H, V);
  attnkit::recurrent_state<T> s;
  attnkit::linear_extras<T> x;
  if (h0.present()) s.h0 = h0.template cview<4>();
  s.ht = attnkit::make_view(ht.data(), N, H, K, V);
  if (normalize) {
    if (z0.present()) x.z0 = z0.template cview<4>();
    x.zt = attnkit::make_view(zt.data(), N, index_t(1), H, K);
  }
  if (varlen) s.cu_seqlens = cu.template cview<1>();
  const auto qv = q.template cview<4>(), kv = k.template cview<4>(), vv = v.template cview<4>();
  const bool ref = ctx.reference();
  switch (var) {
    case lin_variant::linear:
      if (ref)
        attnkit::reference::linear_attn(so.p, qv, kv, vv, ov, s, x);
      else
        attnkit::linear_attn(so.p, qv, kv, vv, ov, s, x);
      break;
    case lin_variant::simple:
      if (g.present()) {
        const auto gv = g.template cview<3>();
        if (ref)
          attnkit::reference::simple_gla(so.p, qv, kv, vv, gv, ov, s);
        else
          attnkit::simple_gla(so.p, qv, kv, vv, gv, ov, s);
      } else {
        const auto gv = g_gamma.template cview<1>();
        if (ref)
          attnkit::reference::simple_gla(so.p, qv, kv, vv, gv, ov, s);
        else
          attnkit::simple_gla(so.p, qv, kv, vv, gv, ov, s);
      }
      break;
    case lin_variant::gla: {
      const auto gv = g.template cview<4>();
      if (ref)
        attnkit::reference::gla(so.p, qv, kv, vv, gv, ov, s);
      else
        attnkit::gla(so.p, qv, kv, vv, gv, ov, s);
      break;
    }
  }
  ctx.save("o", std::move(o), {B, T_, H, V});
  ctx.save("ht", std::move(ht), {N, H, K, V});
  if (normalize) ctx.save("zt", std::move(zt), {N, 1, H, K});
}

void run_variant(context& ctx, lin_variant var) {
  const auto so = read_lin_options(ctx, var);
  const char* gate = var == lin_variant::linear                        ? "q"
                     : ctx.has_input("g") || !ctx.has_input("g_gamma") ? "g"
                                                                       : "g_gamma";
  const auto run = [&](auto tag) { run_typed<decltype(tag)>(ctx, var, so); };
  if (so.p.normalize)
    dispatch_float(ctx, {"q", "k", "v", gate, "h0", "z0"}, run);
  else
    dispatch_float(ctx, {"q", "k", "v", gate, "h0"}, run);
}

void run_linear_attn(context& ctx) { run_variant(ctx, lin_variant::linear); }
void run_simple_gla(context& ctx) { run_variant(ctx, lin_variant::simple); }
void run_gla(context& ctx) { run_variant(ctx, lin_variant::gla); }

const char* const kOptions = "--scale X, --mode chunk|recurrent|auto, --chunk-size C";
const variant_registrar reg_linear_attn("linear_attn", &run_linear_attn,
                                        usage_of("linear_attn", std::string(kOptions) +
                                                                    ", --normalize")
                                            .c_str());
const variant_registrar reg_simple_gla("simple_gla", &run_simple_gla,
                                       usage_of("simple_gla", kOptions).c_str());
const variant_registrar reg_gla("gla", &run_gla, usage_of("gla", kOptions).c_str());

}  // namespace
}  // namespace attnkit_run
