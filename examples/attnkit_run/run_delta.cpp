// SPDX-License-Identifier: Apache-2.0
// attnkit-run variants `delta_rule`, `gated_delta_rule` and `kda` (the delta-rule family):
// q, k [B,T,H,K], v [B,T,HV,V], beta [B,T,HV], gate g ([B,T,HV] gated_delta_rule, [B,T,HV,K] kda),
// optional h0 [N,HV,K,V], optional cu_seqlens [N+1] (int32 or int64; then B = 1)
// -> o [B,T,HV,V], ht [N,HV,K,V] (always), in the input dtype. Options: --scale X (default
// K^-0.5), --mode chunk|recurrent|auto, --chunk-size C, --l2norm (q, k normalised in the kernel),
// --beta-sigmoid (beta holds logits), --gate softplus|lowerbound (g holds the raw gate; A_log [HV]
// (required for softplus) and dt_bias ([HV] gated_delta_rule, [HV*K] kda; optional) are read),
// --lower-bound L (default -5; needs --gate lowerbound), --state-indices (h0 [P,HV,K,V] is a
// pool and state_indices [N] names each sequence's row, -1 = skip; ht is the whole pool after
// the call).
#include <attnkit/delta.hpp>

#include "common.hpp"

namespace attnkit_run {
namespace {

enum class delta_variant { delta, gated, kda };

using delta_options = recurrent_options<attnkit::delta_params>;

/// The family's options beyond the common ones: the in-kernel transforms and gate.
delta_options read_delta_options(context& ctx, delta_variant var) {
  auto& o = ctx.opts();
  delta_options s(ctx);
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
  const std::string ba = "B,T,HV";
  recurrent_io<T> io;
  io.load_qkv(ctx, /*grouped_v=*/true);
  auto beta = ctx.load<T>("beta", ba);
  for (std::size_t r = 0; r < 3; ++r) ctx.expect_dim(beta, ba, r, io.v.dim(r), "dims of v.npy");
  tensor<T> g, a_log, dt_bias;
  if (var == delta_variant::gated) {
    g = ctx.load<T>("g", ba);
    for (std::size_t r = 0; r < 3; ++r) ctx.expect_dim(g, ba, r, io.v.dim(r), "dims of v.npy");
  } else if (var == delta_variant::kda) {
    g = ctx.load<T>("g", "B,T,HV,K");
    for (std::size_t r = 0; r < 3; ++r)
      ctx.expect_dim(g, "B,T,HV,K", r, io.v.dim(r), "dims of v.npy");
    ctx.expect_dim(g, "B,T,HV,K", 3, io.K, "K of q.npy");
  }
  if (so.p.gate_fn != attnkit::delta_gate_fn::none) {
    a_log = so.p.gate_fn == attnkit::delta_gate_fn::softplus ? ctx.load<T>("A_log", "HV")
                                                             : ctx.load_optional<T>("A_log", "HV");
    if (a_log.present()) ctx.expect_dim(a_log, "HV", 0, io.HV, "HV of v.npy");
    const bool channel = var == delta_variant::kda;
    dt_bias = ctx.load_optional<T>("dt_bias", channel ? "HV*K" : "HV");
    if (dt_bias.present())
      ctx.expect_dim(dt_bias, channel ? "HV*K" : "HV", 0, channel ? io.HV * io.K : io.HV,
                     channel ? "HV*K of v.npy and q.npy" : "HV of v.npy");
  }
  io.pool = ctx.opts().flag("state-indices");
  io.load_states(ctx);
  const auto s = io.outputs(so.zero_scale);
  attnkit::delta_gate_params<T> gp;
  if (a_log.present()) gp.A_log = a_log.template cview<1>();
  if (dt_bias.present()) gp.dt_bias = dt_bias.template cview<1>();
  const auto qv = io.q.template cview<4>(), kv = io.k.template cview<4>(),
             vv = io.v.template cview<4>();
  const auto bv = beta.template cview<3>();
  const auto ov = io.ov();
  const bool ref = ctx.reference();
  switch (var) {
    case delta_variant::delta:
      ATTNKIT_CALL(ref, delta_rule, so.p, qv, kv, vv, bv, ov, s);
      break;
    case delta_variant::gated:
      ATTNKIT_CALL(ref, gated_delta_rule, so.p, qv, kv, vv, g.template cview<3>(), bv, ov, s, gp);
      break;
    case delta_variant::kda:
      ATTNKIT_CALL(ref, kda, so.p, qv, kv, vv, g.template cview<4>(), bv, ov, s, gp);
      break;
  }
  io.save(ctx);
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
    "--scale X, --mode chunk|recurrent|auto, --chunk-size C, --l2norm, --beta-sigmoid, "
    "--state-indices";
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
