// SPDX-License-Identifier: Apache-2.0
// attnkit-run variant `conv1d`, the short causal convolution of Gated DeltaNet and KDA layers:
// x [B,T,D], w [D,W], optional bias [D], optional conv_state [N,D,W-1] (the W-1 previous inputs,
// oldest first; zeros if absent), optional cu_seqlens [N+1] (int32 or int64; then B = 1)
// -> y [B,T,D], conv_state_out [N,D,W-1], in the input dtype. Option --activation silu|none
// (default silu).
#include <attnkit/delta.hpp>

#include "common.hpp"

namespace attnkit_run {
namespace {

template <class T>
void run_typed(context& ctx, attnkit::conv_activation act) {
  const std::string xa = "B,T,D", wa = "D,W", sa = "N,D,W-1";
  auto x = ctx.load<T>("x", xa);
  auto w = ctx.load<T>("w", wa);
  auto bias = ctx.load_optional<T>("bias", "D");
  auto cu = ctx.load_index_optional("cu_seqlens");
  const index_t B = x.dim(0), Tn = x.dim(1), D = x.dim(2);
  ctx.expect_dim(w, wa, 0, D, "D of x.npy");
  const index_t W = w.dim(1);
  if (W < 1) fail("'", w.file, "': dim 1 (W) must be >= 1 (the kernel width)");
  if (bias.present()) ctx.expect_dim(bias, "D", 0, D, "D of x.npy");
  if (cu.present() && B != 1)
    fail("'", x.file, "': dim 0 (B) is ", B, ", varlen (cu_seqlens) needs B = 1");
  if (cu.present() && cu.dim(0) < 1) fail("'", cu.file, "': needs at least one entry (N+1 >= 1)");
  const index_t N = cu.present() ? cu.dim(0) - 1 : B;
  const std::string n_why =
      cu.present() ? "one state per sequence of cu_seqlens.npy" : "B of x.npy";
  auto st = ctx.load_optional<T>("conv_state", sa);
  if (st.present()) {
    ctx.expect_dim(st, sa, 0, N, n_why);
    ctx.expect_dim(st, sa, 1, D, "D of x.npy");
    ctx.expect_dim(st, sa, 2, W - 1, "W-1 of w.npy");
  }
  std::vector<T> y(checked_elems("y", {B, Tn, D}), T(0)),
      st_out(checked_elems("conv_state_out", {N, D, W - 1}), T(0));
  attnkit::conv1d_params p;
  p.activation = act;
  p.exec = ctx.exec();
  attnkit::conv1d_state<T> s;
  if (st.present()) s.state_in = st.template cview<3>();
  s.state_out = attnkit::make_view(st_out.data(), N, D, W - 1);
  if (cu.present()) s.cu_seqlens = cu.template cview<1>();
  const auto bv = bias.present() ? bias.template cview<1>() : attnkit::cview<T, 1>();
  const auto yv = attnkit::make_view(y.data(), B, Tn, D);
  if (ctx.reference())
    attnkit::reference::short_conv1d(p, x.template cview<3>(), w.template cview<2>(), bv, yv, s);
  else
    attnkit::short_conv1d(p, x.template cview<3>(), w.template cview<2>(), bv, yv, s);
  ctx.save("y", std::move(y), {B, Tn, D});
  ctx.save("conv_state_out", std::move(st_out), {N, D, W - 1});
}

void run_conv1d(context& ctx) {
  const auto act = ctx.opts().get_choice("activation", {"silu", "none"}, "silu") == "silu"
                       ? attnkit::conv_activation::silu
                       : attnkit::conv_activation::none;
  dispatch_float(ctx, {"x", "w", "bias", "conv_state"},
                 [&](auto tag) { run_typed<decltype(tag)>(ctx, act); });
}

const variant_registrar reg_conv1d(
    "conv1d", &run_conv1d,
    "x [B,T,D], w [D,W], optional bias [D], conv_state [N,D,W-1], cu_seqlens [N+1] -> y [B,T,D], "
    "conv_state_out [N,D,W-1]; option --activation silu|none (default silu)");

}  // namespace
}  // namespace attnkit_run
