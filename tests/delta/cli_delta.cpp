// SPDX-License-Identifier: Apache-2.0
// attnkit-run delta_rule / gated_delta_rule / kda end to end: replays the
// golden delta cases (tests/data/delta) through the built program in float64 (<= 1e-10 relative)
// and float32 (relative RMS <= 1e-5), both --mode values, --reference and --threads 2, the
// layer-style cases through --l2norm --beta-sigmoid --gate softplus; the conv1d golden cases
// (tests/data/conv1d) with --reference and --threads 2; and the error contract.
// Built by tests/CMakeLists.txt (every tests/*/cli_*.cpp), which passes the program's path as
// ATTNKIT_RUN_EXE.
#include <attnkit/io/npy.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <support/cli_util.hpp>

namespace {

const std::string kData = golden_dir("delta");

/// Inputs of a golden case copied to dst (float inputs as float32 when f32; cu_seqlens as int32
/// when i32, else int64 as shipped). Outputs (o, ht) are not copied; the layer-style raw inputs
/// (q_raw, ...) take the plain names (q, ...).
void copy_inputs(const std::string& src, const std::string& dst, bool f32, bool i32) {
  test::copy_golden_inputs(src, dst, f32, !i32, {"o", "ht"});
  for (const char* n : {"q", "k", "g", "beta"}) {
    const std::string raw = dst + "/" + n + "_raw.npy";
    if (fs::exists(raw)) fs::rename(raw, dst + "/" + n + ".npy");
  }
}

void replay(const std::string& variant, const std::string& name,
            const std::vector<std::string>& case_opts) {
  const std::string golden = kData + name;
  test::replay_golden(
      {variant, golden, case_opts, recurrent_modes(),
       [&](const std::string& in, bool f32) { copy_inputs(golden, in, f32, /*i32=*/f32); },
       [&](const std::string& out, bool f32) {
         test::check_npy_output(out, golden, "o", f32);
         test::check_npy_output(out, golden, "ht", f32);
       },
       // every variant has both algorithms: nothing is substituted, no note
       [&](const std::vector<std::string>&) { return std::string(); }});
}

}  // namespace

TEST_CASE("delta cli: golden delta_rule cases (dense and varlen)", "[delta][cli]") {
  replay("delta_rule", "delta_rule/T37_h0", {});
  replay("delta_rule", "delta_rule/varlen", {});
}

TEST_CASE("delta cli: golden gated_delta_rule cases (log gate and layer-style gate)",
          "[delta][cli]") {
  replay("gated_delta_rule", "gated_delta_rule/T37_h0", {});
  replay("gated_delta_rule", "gated_delta_rule/T130_gate",
         {"--l2norm", "--beta-sigmoid", "--gate", "softplus"});
}

TEST_CASE("delta cli: golden kda cases (log gate and layer-style gate)", "[delta][cli]") {
  replay("kda", "kda/T37_h0", {});
  replay("kda", "kda/T130_gate", {"--l2norm", "--beta-sigmoid", "--gate", "softplus"});
}

TEST_CASE("delta cli: bad inputs exit 2 naming the file or option", "[delta][cli]") {
  temp_dir tmp;
  const std::string dr = kData + "delta_rule/T37_h0", gdn = kData + "gated_delta_rule/T37_h0",
                    kd = kData + "kda/T37_h0", out = tmp / "out";
  expect_error({"kda", gdn, out}, "g.npy': expected rank 4 [B,T,HV,K], got rank 3", tmp);
  expect_error({"gated_delta_rule", kd, out}, "g.npy': expected rank 3 [B,T,HV], got rank 4", tmp);
  expect_error({"gated_delta_rule", dr, out}, "g.npy", tmp);  // no gate file
  expect_error({"delta_rule", dr, out, "--gate", "softplus"},
               "option '--gate' is not an option of variant 'delta_rule'", tmp);
  expect_error({"kda", kd, out, "--gate", "softplus"}, "A_log.npy", tmp);
  expect_error({"kda", kd, out, "--gate", "sigmoid"},
               "option '--gate': expected softplus|lowerbound, got 'sigmoid'", tmp);
  expect_error({"kda", kd, out, "--lower-bound", "-3"},
               "option --lower-bound needs --gate lowerbound", tmp);
  expect_error({"delta_rule", dr, out, "--mode", "fast"},
               "option '--mode': expected chunk|recurrent|auto, got 'fast'", tmp);
}

// ---- conv1d

namespace {

const std::string kConvData = golden_dir("conv1d");

void replay_conv(const std::string& name, const std::vector<std::string>& case_opts) {
  const std::string golden = kConvData + name;
  test::replay_golden(
      {"conv1d",
       golden,
       case_opts,
       {{}, {"--reference"}, {"--threads", "2"}},
       [&](const std::string& in, bool f32) {
         test::copy_golden_inputs(golden, in, f32, /*i64=*/f32, {"y", "conv_state_out"});
       },
       [&](const std::string& out, bool f32) {
         test::check_npy_output(out, golden, "y", f32);
         test::check_npy_output(out, golden, "conv_state_out", f32);
       }});
}

}  // namespace

TEST_CASE("conv1d cli: golden cases (SiLU with bias and state; varlen, no activation)",
          "[conv1d][cli]") {
  replay_conv("conv_small", {});
  replay_conv("conv_small", {"--activation", "silu"});
  replay_conv("conv_varlen_small", {"--activation", "none"});
}

TEST_CASE("conv1d cli: bad inputs exit 2 naming the file or option", "[conv1d][cli]") {
  temp_dir tmp;
  const std::string good = kConvData + "conv_small", out = tmp / "out";
  expect_error({"conv1d", good, out, "--activation", "relu"}, "--activation", tmp);
  expect_error({"conv1d", kConvData + "nothing_here", out}, "IN_DIR", tmp);
  // a conv state whose width does not match w
  const std::string in = tmp / "in";
  fs::create_directories(in);
  test::copy_golden_inputs(good, in, false, false, {"y", "conv_state_out"});
  const std::vector<double> w(4 * 5, 0.5);
  attnkit::io::save_npy(in + "/w.npy", w.data(), {4, 5});
  expect_error({"conv1d", in, out}, "conv_state.npy': dim 2 (W-1) is 3, expected 4", tmp);
}

TEST_CASE("delta cli: --state-indices runs a state pool", "[delta][cli][pool]") {
  // golden delta_rule/T37_h0 (B = 2): sequence 0 reads its h0 from pool row 3, sequence 1 is
  // skipped (-1); pool rows 0-2 hold other values and must come back unchanged
  temp_dir tmp;
  const std::string golden = kData + "delta_rule/T37_h0", in = tmp / "in", out = tmp / "out";
  fs::create_directories(in);
  copy_inputs(golden, in, false, true);
  const auto h0 = io::load_npy(golden + "/h0.npy");
  const std::size_t row = h0.data.size() / sizeof(double) / 2;  // elements of one state row
  const auto h0v = h0.as<double>();
  std::vector<double> pool(4 * row, 7.0);
  std::copy(h0v.begin(), h0v.begin() + std::ptrdiff_t(row), pool.begin() + std::ptrdiff_t(3 * row));
  io::save_npy(in + "/h0.npy", pool.data(), {4, h0.shape[1], h0.shape[2], h0.shape[3]});
  const std::vector<std::int32_t> idx = {3, -1};
  io::save_npy(in + "/state_indices.npy", idx.data(), {2});
  const auto r = run_cli({"delta_rule", in, out, "--state-indices"}, tmp);
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  const auto o = io::load_npy(out + "/o.npy").as<double>();
  const auto o_gold = io::load_npy(golden + "/o.npy").as<double>();
  const auto ht = io::load_npy(out + "/ht.npy");
  const auto ht_gold = io::load_npy(golden + "/ht.npy").as<double>();
  REQUIRE(ht.shape == std::vector<index_t>{4, h0.shape[1], h0.shape[2], h0.shape[3]});
  const auto htv = ht.as<double>();
  const std::size_t half = o.size() / 2;
  double err = 0, ref = 0;
  for (std::size_t i = 0; i < half; ++i) {
    err = std::max(err, std::abs(o[i] - o_gold[i]));
    ref = std::max(ref, std::abs(o_gold[i]));
  }
  for (std::size_t i = 0; i < row; ++i) {
    err = std::max(err, std::abs(htv[3 * row + i] - ht_gold[i]));
    ref = std::max(ref, std::abs(ht_gold[i]));
  }
  CHECK(err <= 1e-10 * ref);
  bool zeros = true, kept = true;
  for (std::size_t i = half; i < o.size(); ++i) zeros &= o[i] == 0.0;
  for (std::size_t i = 0; i < 3 * row; ++i) kept &= htv[i] == 7.0;
  CHECK(zeros);
  CHECK(kept);
  // a pool row out of range is an error naming it
  const std::vector<std::int32_t> bad = {4, 0};
  io::save_npy(in + "/state_indices.npy", bad.data(), {2});
  expect_error({"delta_rule", in, tmp / "out2", "--state-indices"}, "state_indices[0] = 4", tmp);
}
