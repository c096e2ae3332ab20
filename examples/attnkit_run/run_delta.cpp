// SPDX-License-Identifier: Apache-2.0
// attnkit-run variants `delta_rule`, `gated_delta_rule` and `kda` (the delta-rule family):
// q, k [B,T,H,K], v [B,T,HV,V], beta [B,T,HV], gate g ([B,T,HV] gated_delta_rule, [B,T,HV,K] kda), optional h0 [N,HV,K,V], optional cu_seqlens [N+1] (int32 or int64; then B = 1)
// -> o [B,T,HV,V], ht [N,HV,K,V] (always), in the input dtype. Options: --scale X (default
// K^-0.5), --mode chunk|recurrent|auto, --chunk-size C, --l2norm (q, k normalised in the kernel),
// --beta-sigmoid (beta holds logits), --gate softplus|lowerbound (g holds the raw gate; A_log [HV]
// (required for softplus) and dt_bias ([HV] gated_delta_rule, [HV*K] kda; optional) are read),
// --lower-bound L (default -5; needs --gate lowerbound). kda has no chunk algorithm: its
// --mode chunk runs the recurrent one and says so on stderr.
#include <attnkit/delta.hpp>

#include "common.hpp"

namespace attnkit_run {
namespace {

enum class delta_variant { delta, gated, kda };

struct delta_options {
  attnkit::delta_params p;
  bool zero_scale = false;  // --scale 0: every output is 0
};

delta_options read_delta_options(context& ctx, delta_variant var) {
  auto& o = ctx.opts();
  delta_options s;
  s.zero_scale = read_recurrent_options(o, ctx.variant(), ctx.exec(), s.p);
  s.p.qk_l2norm = o.flag("l2norm");
  s.p.beta_sigmoid = o.flag("beta-sigmoid");
  if (var != delta_variant::delta) {  // delta_rule has no gate: main rejects these options
    if (o.has("gate"))
      s.p.gate_fn = o.get_choice("gate", {"softplus", "lowerbound"}, "softplus") == "softplus"
                        ? attnkit::delta_gate_fn::softplus
                        : attnkit::delta_gate_fn::lower_bound;
    if (o.has("lower-bound") && s.p.gate_fn != attnkit::delta_gate_fn::lower_bound)
      fail("option --lower-bound needs --gate lowerbound");
    s.p.lower_bound = o.get_double("lower-bound", -5.0);
  }
  return s;
}

template <class T>
void run_typed(context& ctx, delta_variant var, const delta_options& so) {
  const std::string qa = "B,T,H,K", va = "B,T,HV,V", ba = "B,T,HV", sa = "N,HV,K,V";
  auto q = ctx.load<T>("q", qa);
  auto k = ctx.load<T>("k", qa);
  auto v = ctx.load<T>("v", va);
  auto beta = ctx.load<T>("beta", ba);
  const index_t B = q.dim(0), T_ = q.dim(1), H = q.dim(2), K = q.dim(3);
  for (std::size_t r = 0; r < 4; ++r) ctx.expect_dim(k, qa, r, q.dim(r), "shape of q.npy");
  ctx.expect_dim(v, va, 0, B, "B of q.npy");
  ctx.expect_dim(v, va, 1, T_, "T of q.npy");
  const index_t HV = v.dim(2), V = v.dim(3);
  if (K < 1) fail("'", q.file, "': dim 3 (K) must be >= 1");
  if (V < 1) fail("'", v.file, "': dim 3 (V) must be >= 1");
  if (H < 1 || HV % H != 0)
    fail("'", v.file, "': dim 2 (HV) is ", HV, ", must be a multiple of H = ", H, " of q.npy");
  for (std::size_t r = 0; r < 3; ++r) ctx.expect_dim(beta, ba, r, v.dim(r), "dims of v.npy");

  tensor<T> g, a_log, dt_bias;
  if (var == delta_variant::gated) {
    g = ctx.load<T>("g", ba);
    for (std::size_t r = 0; r < 3; ++r) ctx.expect_dim(g, ba, r, v.dim(r), "dims of v.npy");
  } else if (var == delta_variant::kda) {
    g = ctx.load<T>("g", "B,T,HV,K");
    for (std::size_t r = 0; r < 3; ++r) ctx.expect_dim(g, "B,T,HV,K", r, v.dim(r), "dims of v.npy");
    ctx.expect_dim(g, "B,T,HV,K", 3, K, "K of q.npy");
  }
  if (so.p.gate_fn != attnkit::delta_gate_fn::none) {
    a_log = so.p.gate_fn == attnkit::delta_gate_fn::softplus ? ctx.load<T>("A_log", "HV")
                                                             : ctx.load_optional<T>("A_log", "HV");
    if (a_log.present()) ctx.expect_dim(a_log, "HV", 0, HV, "HV of v.npy");
    const bool channel = var == delta_variant::kda;
    dt_bias = ctx.load_optional<T>("dt_bias", channel ? "HV*K" : "HV");
    if (dt_bias.present())
      ctx.expect_dim(dt_bias, channel ? "HV*K" : "HV", 0, channel ? HV * K : HV,
                     channel ? "HV*K of v.npy and q.npy" : "HV of v.npy");
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
    ctx.expect_dim(h0, sa, 1, HV, "HV of v.npy");
    ctx.expect_dim(h0, sa, 2, K, "K of q.npy");
    ctx.expect_dim(h0, sa, 3, V, "V of v.npy");
  }
  if (so.zero_scale) std::fill(q.buf.begin(), q.buf.end(), T(0));

  std::vector<T> o(std::size_t(B * T_ * HV * V), T(0)), ht(std::size_t(N * HV * K * V), T(0));
  const auto ov = attnkit::make_view(o.data(), B, T_, HV, V);
  attnkit::recurrent_state<T> s;
  if (h0.present()) s.h0 = h0.template cview<4>();
  s.ht = attnkit::make_view(ht.data(), N, HV, K, V);
  if (varlen) s.cu_seqlens = cu.template cview<1>();
  attnkit::delta_gate_params<T> gp;
  if (a_log.present()) gp.A_log = a_log.template cview<1>();
  if (dt_bias.present()) gp.dt_bias = dt_bias.template cview<1>();
  const auto qv = q.template cview<4>(), kv = k.template cview<4>(), vv = v.template cview<4>();
  const auto bv = beta.template cview<3>();
  const bool ref = ctx.reference();
  switch (var) {
    case delta_variant::delta:
      if (ref)
        attnkit::reference::delta_rule(so.p, qv, kv, vv, bv, ov, s);
      else
        attnkit::delta_rule(so.p, qv, kv, vv, bv, ov, s);
      break;
    case delta_variant::gated: {
      const auto gv = g.template cview<3>();
      if (ref)
        attnkit::reference::gated_delta_rule(so.p, qv, kv, vv, gv, bv, ov, s, gp);
      else
        attnkit::gated_delta_rule(so.p, qv, kv, vv, gv, bv, ov, s, gp);
      break;
    }
    case delta_variant::kda: {
      const auto gv = g.template cview<4>();
      if (ref)
        attnkit::reference::kda(so.p, qv, kv, vv, gv, bv, ov, s, gp);
      else
        attnkit::kda(so.p, qv, kv, vv, gv, bv, ov, s, gp);
      break;
    }
  }
  ctx.save("o", std::move(o), {B, T_, HV, V});
  ctx.save("ht", std::move(ht), {N, HV, K, V});
}

void run_variant(context& ctx, delta_variant var) {
  const auto so = read_delta_options(ctx, var);
  const auto run = [&](auto tag) { run_typed<decltype(tag)>(ctx, var, so); };
  if (var == delta_variant::delta)
    dispatch_float(ctx, {"q", "k", "v", "beta", "h0"}, run);
  else
    dispatch_float(ctx, {"q", "k", "v", "g", "beta", "h0", "A_log", "dt_bias"}, run);
}

void run_delta_rule(context& ctx) { run_variant(ctx, delta_variant::delta); }
void run_gated_delta_rule(context& ctx) { run_variant(ctx, delta_variant::gated); }
void run_kda(context& ctx) { run_variant(ctx, delta_variant::kda); }

const char* const kOptions =
    "--scale X, --mode chunk|recurrent|auto, --chunk-size C, --l2norm, --beta-sigmoid";
const char* const kGateOptions = ", --gate softplus|lowerbound, --lower-bound L";
const variant_registrar reg_delta_rule("delta_rule", &run_delta_rule,
                                       usage_of("delta_rule", kOptions).c_str());
const variant_registrar reg_gated_delta_rule(
    "gated_delta_rule", &run_gated_delta_rule,
    usage_of("gated_delta_rule", std::string(kOptions) + kGateOptions).c_str());
const variant_registrar reg_kda("kda", &run_kda,
                                usage_of("kda", std::string(kOptions) + kGateOptions).c_str());

}  // namespace
}  // namespace attnkit_run
