// SPDX-License-Identifier: Apache-2.0
// attnkit-run variants `linear_attn`, `simple_gla` and `gla` (the linear family):
//   q, k [B,T,H,K], v [B,T,H,V] (HV = H for these three), gate g ([B,T,H] simple_gla, [B,T,H,K]
//   gla; simple_gla alternatively g_gamma [H], a fixed per-head decay), optional h0 [N,H,K,V],
//   optional z0 [N,1,H,K] (linear_attn --normalize), optional cu_seqlens [N+1] (int32 or int64;
//   then B = 1) -> o [B,T,H,V], ht [N,H,K,V] (always), zt [N,1,H,K] (with --normalize), in the
//   input dtype. Options: --scale X (default K^-0.5), --mode chunk|recurrent|auto, --chunk-size
//   C, --normalize (linear_attn), --state-indices (h0 [P,H,K,V] and z0 [P,1,H,K] are pools and
//   state_indices [N] names each sequence's row, -1 = skip; ht and zt are the whole pools after
//   the call). Absent h0 / z0 are zeros (fla's initial_state=None).
#include <attnkit/linear.hpp>

#include "common.hpp"

namespace attnkit_run {
namespace {

enum class lin_variant { linear, simple, gla };

using lin_options = recurrent_options<attnkit::linear_params>;

/// The family's options beyond the common ones: --normalize (linear_attn).
lin_options read_lin_options(context& ctx, lin_variant var) {
  lin_options s(ctx);
  if (var == lin_variant::linear) s.p.normalize = ctx.opts().flag("normalize");
  return s;
}

template <class T>
void run_typed(context& ctx, lin_variant var, const lin_options& so) {
  const std::string za = "N,1,H,K";
  recurrent_io<T> io;
  io.load_qkv(ctx, /*grouped_v=*/false);
  const index_t H = io.H, K = io.K, V = io.V;
  tensor<T> g, g_gamma;
  if (var == lin_variant::simple) {
    if (ctx.has_input("g") || !ctx.has_input("g_gamma")) {
      g = ctx.load<T>("g", "B,T,HV");
      for (std::size_t r = 0; r < 3; ++r)
        ctx.expect_dim(g, "B,T,HV", r, io.v.dim(r), "dims of v.npy");
    } else {
      g_gamma = ctx.load<T>("g_gamma", "HV");
      ctx.expect_dim(g_gamma, "HV", 0, H, "H of q.npy");
    }
  } else if (var == lin_variant::gla) {
    g = ctx.load<T>("g", "B,T,HV,K");
    for (std::size_t r = 0; r < 4; ++r)
      ctx.expect_dim(g, "B,T,HV,K", r, io.q.dim(r), "shape of q.npy");
  }
  io.pool = ctx.opts().flag("state-indices");
  io.load_states(ctx);
  // rows of the state tensors: one per sequence, or the P rows of the pools
  const index_t N = io.pool ? io.P : io.N;
  const bool normalize = so.p.normalize;
  tensor<T> z0;
  if (normalize) {
    const std::string zaxes = io.pool ? "P,1,H,K" : za;
    z0 = ctx.load_optional<T>("z0", zaxes);
    if (z0.present()) {
      ctx.expect_dim(z0, zaxes, 0, N, io.pool ? "P of h0.npy, the state pool" : io.n_why);
      ctx.expect_dim(z0, zaxes, 1, 1, "key-sum state");
      ctx.expect_dim(z0, zaxes, 2, H, "H of q.npy");
      ctx.expect_dim(z0, zaxes, 3, K, "K of q.npy");
    }
    // the library continues a normalised run only from (h0, z0) together; an absent one is zeros
    if (io.h0.present() != z0.present()) {
      const bool h0_given = io.h0.present();
      auto& missing = h0_given ? z0 : io.h0;
      missing.file = ctx.input_path(h0_given ? "z0" : "h0") + " (absent: zeros)";
      missing.shape =
          h0_given ? std::vector<index_t>{N, 1, H, K} : std::vector<index_t>{N, H, K, V};
      missing.buf.assign(
          h0_given ? checked_elems("z0", {N, H, K}) : checked_elems("h0", {N, H, K, V}), T(0));
    }
  }
  const auto s = io.outputs(so.zero_scale);
  std::vector<T> zt(checked_elems("zt", {N, 1, H, K}), T(0));
  attnkit::linear_extras<T> x;
  if (normalize) {
    if (io.pool) zt = z0.buf;  // zt starts as the pool and is updated in place, as ht
    x.zt = attnkit::make_view(zt.data(), N, index_t(1), H, K);
    if (io.pool)
      x.z0 = attnkit::make_view(static_cast<const T*>(zt.data()), N, index_t(1), H, K);
    else if (z0.present())
      x.z0 = z0.template cview<4>();
  }
  const auto qv = io.q.template cview<4>(), kv = io.k.template cview<4>(),
             vv = io.v.template cview<4>();
  const auto ov = io.ov();
  const bool ref = ctx.reference();
  switch (var) {
    case lin_variant::linear:
      ATTNKIT_CALL(ref, linear_attn, so.p, qv, kv, vv, ov, s, x);
      break;
    case lin_variant::simple:
      if (g.present())
        ATTNKIT_CALL(ref, simple_gla, so.p, qv, kv, vv, g.template cview<3>(), ov, s);
      else
        ATTNKIT_CALL(ref, simple_gla, so.p, qv, kv, vv, g_gamma.template cview<1>(), ov, s);
      break;
    case lin_variant::gla:
      ATTNKIT_CALL(ref, gla, so.p, qv, kv, vv, g.template cview<4>(), ov, s);
      break;
  }
  io.save(ctx);
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

const char* const kOptions =
    "--scale X, --mode chunk|recurrent|auto, --chunk-size C, --state-indices";
const variant_registrar reg_linear_attn(
    "linear_attn", &run_linear_attn,
    usage_of("linear_attn", std::string(kOptions) + ", --normalize").c_str());
const variant_registrar reg_simple_gla("simple_gla", &run_simple_gla,
                                       usage_of("simple_gla", kOptions).c_str());
const variant_registrar reg_gla("gla", &run_gla, usage_of("gla", kOptions).c_str());

}  // namespace
}  // namespace attnkit_run
