// SPDX-License-Identifier: Apache-2.0
// attnkit-run linear_attn / simple_gla / gla end to end: replays the golden
// linear cases (tests/data/linear) through the built program in float64 (<= 1e-10 relative) and
// float32 (relative RMS <= 1e-5), chunk and recurrent, --reference and --threads 2; the golden
// cases through state pools (--state-indices); and the error contract (exit 2, one line naming
// the file or option, no outputs written).
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

// ---- state pools (--state-indices)

namespace {

/// attnkit-run VARIANT --state-indices on golden case `name` (float64): its N state rows (h0, and
/// z0 with --normalize) are moved into pools of P rows, sequence n at pool row idx[n] (-1: the
/// sequence is skipped), every other pool element 7.0. o matches the golden o (zeros for a
/// skipped sequence); ht (and zt) come back as the whole pools: the named rows equal the golden
/// final states, every other row unchanged. Chunk, recurrent and the reference.
void pool_case(const std::string& variant, const std::string& name,
               const std::vector<std::string>& opts, index_t P,
               const std::vector<std::int32_t>& idx) {
  temp_dir tmp;
  const std::string golden = kData + name, in = tmp / "in";
  fs::create_directories(in);
  copy_inputs(golden, in, false, true);
  const bool normalize = std::find(opts.begin(), opts.end(), "--normalize") != opts.end();
  const index_t N = index_t(idx.size());
  // the sequences' token ranges in [B*T): batch rows, or cu_seqlens (B = 1)
  const auto q = io::load_npy(golden + "/q.npy");
  const index_t T = q.shape[1];
  std::vector<std::pair<index_t, index_t>> tokens;
  if (fs::exists(golden + "/cu_seqlens.npy")) {
    const auto cu = io::load_npy(golden + "/cu_seqlens.npy").as<std::int64_t>();
    for (std::size_t n = 0; n + 1 < cu.size(); ++n) tokens.push_back({cu[n], cu[n + 1]});
  } else {
    for (index_t b = 0; b < q.shape[0]; ++b) tokens.push_back({b * T, (b + 1) * T});
  }
  REQUIRE(index_t(tokens.size()) == N);
  std::vector<std::string> states = {"h0"};
  if (normalize) states.push_back("z0");
  for (const auto& s : states) {  // golden row n -> pool row idx[n]
    const auto a = io::load_npy(golden + "/" + s + ".npy");
    REQUIRE(a.shape[0] == N);
    const auto x = a.as<double>();
    const std::size_t row = x.size() / std::size_t(N);
    std::vector<double> pool(std::size_t(P) * row, 7.0);
    for (index_t n = 0; n < N; ++n)
      if (idx[std::size_t(n)] >= 0)
        std::copy_n(x.begin() + std::ptrdiff_t(std::size_t(n) * row), row,
                    pool.begin() + std::ptrdiff_t(std::size_t(idx[std::size_t(n)]) * row));
    auto shape = a.shape;
    shape[0] = P;
    io::save_npy(in + "/" + s + ".npy", pool.data(), shape);
  }
  io::save_npy(in + "/state_indices.npy", idx.data(), {N});
  const std::vector<std::vector<std::string>> modes = {
      {}, {"--mode", "recurrent"}, {"--reference"}};
  for (const auto& mode : modes) {
    const std::string out = tmp / "out";
    fs::remove_all(out);
    std::vector<std::string> args = {variant, in, out, "--state-indices"};
    args.insert(args.end(), opts.begin(), opts.end());
    args.insert(args.end(), mode.begin(), mode.end());
    const auto run = require_cli_ok(args, tmp);
    // o: the golden rows of every named sequence, zeros for a skipped one
    const auto o = io::load_npy(out + "/o.npy").as<double>();
    const auto o_gold = io::load_npy(golden + "/o.npy").as<double>();
    REQUIRE(o.size() == o_gold.size());
    const std::size_t per_token = o.size() / std::size_t(tokens.back().second);
    double err = 0, ref = 0;
    bool zeros = true;
    for (index_t n = 0; n < N; ++n)
      for (std::size_t i = std::size_t(tokens[std::size_t(n)].first) * per_token;
           i < std::size_t(tokens[std::size_t(n)].second) * per_token; ++i) {
        if (idx[std::size_t(n)] < 0) {
          zeros &= o[i] == 0.0;
          continue;
        }
        err = std::max(err, std::abs(o[i] - o_gold[i]));
        ref = std::max(ref, std::abs(o_gold[i]));
      }
    CHECK(zeros);
    // ht (and zt): whole pools, the named rows final states, the other rows as they came
    bool kept = true;
    for (const char* s : {"ht", "zt"}) {
      CHECK(fs::exists(out + "/" + s + ".npy") == (normalize || s[0] == 'h'));
      if (!normalize && s[0] == 'z') continue;
      const auto t = io::load_npy(out + "/" + s + ".npy");
      const auto gold = io::load_npy(golden + "/" + s + ".npy");
      auto shape = gold.shape;
      shape[0] = P;
      REQUIRE(t.shape == shape);
      const auto tv = t.as<double>(), gv = gold.as<double>();
      const std::size_t row = gv.size() / std::size_t(N);
      std::vector<char> named(std::size_t(P), 0);
      for (index_t n = 0; n < N; ++n) {
        const index_t pr = idx[std::size_t(n)];
        if (pr < 0) continue;
        named[std::size_t(pr)] = 1;
        for (std::size_t i = 0; i < row; ++i) {
          err =
              std::max(err, std::abs(tv[std::size_t(pr) * row + i] - gv[std::size_t(n) * row + i]));
          ref = std::max(ref, std::abs(gv[std::size_t(n) * row + i]));
        }
      }
      for (index_t pr = 0; pr < P; ++pr)
        for (std::size_t i = 0; i < row && !named[std::size_t(pr)]; ++i)
          kept &= tv[std::size_t(pr) * row + i] == 7.0;
    }
    CHECK(kept);
    CHECK(ref > 0);
    CHECK(err <= 1e-10 * ref);
  }
}

}  // namespace

TEST_CASE("linear cli: --state-indices runs a state pool", "[linear][cli][pool]") {
  // rows out of order, a skipped sequence, varlen; the key sums as a pool with --normalize
  pool_case("linear_attn", "linear_attn/T37_h0", {}, 3, {2, -1});
  pool_case("linear_attn", "linear_attn/T130_normalize_h0", {"--normalize"}, 4, {3, 1});
  pool_case("simple_gla", "simple_gla/varlen", {}, 5, {4, -1, 0});
  pool_case("gla", "gla/T37_h0", {}, 3, {-1, 0});
}

TEST_CASE("linear cli: --state-indices errors name the file or the slot", "[linear][cli][pool]") {
  temp_dir tmp;
  const std::string golden = kData + "linear_attn/T130_normalize_h0", in = tmp / "in",
                    out = tmp / "out";
  fs::create_directories(in);
  copy_inputs(golden, in, false, true);
  expect_error({"linear_attn", in, out, "--state-indices"},
               "option '--state-indices' needs state_indices.npy in IN_DIR", tmp);
  const std::vector<std::int32_t> bad = {2, 0};  // h0 has 2 rows: row 2 is outside the pool
  io::save_npy(in + "/state_indices.npy", bad.data(), {2});
  expect_error({"linear_attn", in, out, "--state-indices"},
               "state_indices[0] = 2 is not a pool row in [0, 2)", tmp);
  const std::vector<std::int32_t> dup = {1, 1};
  io::save_npy(in + "/state_indices.npy", dup.data(), {2});
  expect_error({"linear_attn", in, out, "--state-indices", "--normalize"},
               "state_indices[1] = 1 names a pool row another sequence uses", tmp);
  // a key-sum pool of another size than the state pool
  const std::vector<std::int32_t> ok = {1, 0};
  io::save_npy(in + "/state_indices.npy", ok.data(), {2});
  const auto z0 = io::load_npy(golden + "/z0.npy").as<double>();
  io::save_npy(in + "/z0.npy", z0.data(), {1, 1, 3, 32});
  expect_error({"linear_attn", in, out, "--state-indices", "--normalize"},
               "z0.npy': dim 0 (P) is 1, expected 2 (P of h0.npy, the state pool)", tmp);
}
