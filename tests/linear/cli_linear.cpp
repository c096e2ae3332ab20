// SPDX-License-Identifier: Apache-2.0
// attnkit-run linear_attn / simple_gla / gla end to end: replays the golden
// linear cases (tests/data/linear) through the built program in float64 (<= 1e-10 relative) and
// float32 (relative RMS <= 1e-5), chunk and recurrent, --reference and --threads 2; and the error
// contract (exit 2, one line naming the file or option, no outputs written).
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

const std::string kData = golden_dir("linear");

/// Inputs of a golden case copied to dst (float inputs as float32 when f32; cu_seqlens as int32
/// when i32, else int64 as shipped). Outputs (o, ht, zt) are not copied.
void copy_inputs(const std::string& src, const std::string& dst, bool f32, bool i32) {
  test::copy_golden_inputs(src, dst, f32, !i32, {"o", "ht", "zt"});
}

void replay(const std::string& variant, const std::string& name,
            const std::vector<std::string>& case_opts, bool has_zt) {
  const std::string golden = kData + name;
  test::replay_golden(
      {variant, golden, case_opts, recurrent_modes(),
       [&](const std::string& in, bool f32) { copy_inputs(golden, in, f32, /*i32=*/f32); },
       [&](const std::string& out, bool f32) {
         test::check_npy_output(out, golden, "o", f32);
         test::check_npy_output(out, golden, "ht", f32);
         if (has_zt) test::check_npy_output(out, golden, "zt", f32);
         CHECK(fs::exists(out + "/zt.npy") == has_zt);
       }});
}

}  // namespace

TEST_CASE("linear cli: golden linear_attn cases", "[linear][cli]") {
  replay("linear_attn", "linear_attn/T37_h0", {}, false);
  replay("linear_attn", "linear_attn/T130_normalize_h0", {"--normalize"}, true);
}

TEST_CASE("linear cli: golden simple_gla cases (dense and varlen)", "[linear][cli]") {
  replay("simple_gla", "simple_gla/T37_h0", {}, false);
  replay("simple_gla", "simple_gla/varlen", {}, false);
}

TEST_CASE("linear cli: golden gla case", "[linear][cli]") {
  replay("gla", "gla/T37_h0", {}, false);
}

TEST_CASE("linear cli: bad inputs exit 2 naming the file or option", "[linear][cli]") {
  temp_dir tmp;
  const std::string gla = kData + "gla/T37_h0", sgla = kData + "simple_gla/T37_h0",
                    varlen = kData + "simple_gla/varlen", out = tmp / "out";
  expect_error({"gla", sgla, out}, "g.npy': expected rank 4 [B,T,HV,K], got rank 3", tmp);
  expect_error({"simple_gla", gla, out}, "g.npy': expected rank 3 [B,T,HV], got rank 4", tmp);
  expect_error({"linear_attn", gla, out, "--mode", "fast"},
               "option '--mode': expected chunk|recurrent|auto, got 'fast'", tmp);
  expect_error({"simple_gla", sgla, out, "--normalize"},
               "option '--normalize' is not an option of variant 'simple_gla'", tmp);
  expect_error({"linear_attn", gla, out, "--chunk-size", "0"}, "option '--chunk-size'", tmp);
  // varlen with a state per batch row instead of one per sequence
  const std::string in = tmp / "in";
  fs::create_directories(in);
  copy_inputs(varlen, in, false, false);
  fs::copy_file(sgla + "/h0.npy", in + "/h0.npy", fs::copy_options::overwrite_existing);
  expect_error({"simple_gla", in, out},
               "h0.npy': dim 0 (N) is 2, expected 3 (one state per sequence of cu_seqlens.npy)",
               tmp);
}
