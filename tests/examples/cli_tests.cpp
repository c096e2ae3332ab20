// SPDX-License-Identifier: Apache-2.0
// attnkit-run end to end: replays the golden softmax cases through the built
// program (dense, contiguous and paged caches, --reference, float64 and float32 copies) and checks
// the error contract: exit 2, one line on stderr naming the file or option, no outputs written.
// Built by tests/CMakeLists.txt (every tests/*/cli_*.cpp), which passes the program's path as
// ATTNKIT_RUN_EXE.
#include <sys/stat.h>

#include <attnkit/io/npy.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <support/cli_util.hpp>

namespace {

const std::string kData = golden_dir("softmax");

std::vector<double> load_values(const std::string& path, std::vector<index_t>& shape,
                                std::string& dtype) {
  const auto a = io::load_npy(path);
  shape = a.shape;
  dtype = a.dtype;
  return a.as<double>();
}

/// Output `name` of a run in `out` against the golden file: same shape, dtype `dtype`, max error
/// <= tol * max|golden|, and -inf exactly where the golden has -inf.
void check_output(const std::string& out, const std::string& golden, const std::string& name,
                  const std::string& dtype, double tol) {
  std::vector<index_t> s_out, s_gold;
  std::string d_out, d_gold;
  const auto got = load_values(out + "/" + name + ".npy", s_out, d_out);
  const auto want = load_values(golden + "/" + name + ".npy", s_gold, d_gold);
  INFO("output " << name);
  CHECK(d_out == dtype);
  REQUIRE(s_out == s_gold);
  double max_err = 0, max_ref = 0;
  bool inf_match = true, finite = true;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (std::isinf(want[i])) {
      inf_match &= got[i] == want[i];
      continue;
    }
    finite &= std::isfinite(got[i]);
    max_err = std::max(max_err, std::abs(got[i] - want[i]));
    max_ref = std::max(max_ref, std::abs(want[i]));
  }
  INFO("max_err=" << max_err << " max_ref=" << max_ref << " tol=" << tol);
  CHECK(inf_match);
  CHECK(finite);
  CHECK(max_ref > 0);
  CHECK(max_err <= tol * max_ref);
}

/// Copies the inputs of a golden case into `dst`, float inputs converted to float32 if `f32`, and
/// the cu_seqlens to int64 if `i64`.
void copy_inputs(const std::string& src, const std::string& dst, bool f32, bool i64) {
  test::copy_golden_inputs(src, dst, f32, i64, {"o", "lse"});
}

/// Replays one golden case through every mode in float64 and float32.
void replay(const std::string& variant, const std::string& name,
            const std::vector<std::string>& case_opts) {
  const std::string golden = kData + name;
  std::vector<std::vector<std::string>> modes = {
      {},
      {"--cache", "contiguous"},
      {"--cache", "paged", "--page-size", "3"},
      {"--reference"},
      {"--reference", "--cache", "paged", "--page-size", "2"},
      {"--threads", "2", "--cache", "paged"},
  };
  if (variant == "sliding_window") {  // the ring cache, fed token by token
    modes.push_back({"--cache", "ring"});
    modes.push_back({"--reference", "--cache", "ring", "--threads", "2"});
  }
  test::replay_golden({variant, golden, case_opts, modes,
                       [&](const std::string& in, bool f32) {
                         // the float32 copy also uses int64 offsets
                         copy_inputs(golden, in, f32, /*i64=*/f32);
                       },
                       [&](const std::string& out, bool f32) {
                         const double tol =
                             f32 ? test::tolerance<float>() : test::tolerance<double>();
                         check_output(out, golden, "o", f32 ? "<f4" : "<f8", tol);
                         check_output(out, golden, "lse", f32 ? "<f4" : "<f8", tol);
                       }});
}

/// Expects exit status 2, exactly one line on stderr containing every string of `needles`, and
/// no output folder.
void expect_error(const std::vector<std::string>& args, const temp_dir& tmp,
                  const std::vector<std::string>& needles) {
  test::expect_cli_error(args, tmp, needles, tmp / "out");
}

/// A golden case's inputs copied to tmp/in, for a test to break.
std::string bad_case(const temp_dir& tmp, const std::string& name) {
  const std::string in = tmp / "in";
  fs::create_directories(in);
  copy_inputs(kData + name, in, false, false);
  return in;
}

}  // namespace

TEST_CASE("attnkit-run replays golden causal_gqa", "[cli]") {
  replay("softmax", "causal_gqa", {"--causal"});
}
TEST_CASE("attnkit-run replays golden sinks_softcap", "[cli]") {
  replay("softmax", "sinks_softcap", {"--causal", "--softcap", "5"});
}
TEST_CASE("attnkit-run replays golden varlen (dense and per-sequence caches)", "[cli]") {
  replay("softmax", "varlen", {"--causal"});
}
TEST_CASE("attnkit-run replays golden window with softmax and sliding_window", "[cli]") {
  replay("softmax", "window", {"--causal", "--window-left", "4", "--window-right", "0"});
  replay("sliding_window", "window", {"--causal", "--window-left=4", "--window-right", "0"});
}
TEST_CASE("attnkit-run replays golden window_nsink and chunked_local with sliding_window",
          "[cli]") {
  replay("sliding_window", "window_nsink",
         {"--causal", "--window-left", "5", "--window-right", "0", "--n-sink", "2"});
  // chunks of 8 under a window wider than the context
  replay("sliding_window", "chunked_local", {"--causal", "--window-left", "1000", "--chunk", "8"});
  // varlen through per-sequence rings (a window wider than every sequence is plain causal)
  replay("sliding_window", "varlen", {"--causal", "--window-left", "50"});
}

TEST_CASE("attnkit-run: an explicit --scale equal to the default gives the same result", "[cli]") {
  temp_dir tmp;
  const auto r =
      run_cli({"softmax", kData + "causal_gqa", tmp / "out", "--causal", "--scale", "0.25"}, tmp);
  REQUIRE(r.status == 0);
  check_output(tmp / "out", kData + "causal_gqa", "o", "<f8", test::tolerance<double>());
  // A different scale changes the output.
  const auto r2 =
      run_cli({"softmax", kData + "causal_gqa", tmp / "out2", "--causal", "--scale", "0.5"}, tmp);
  REQUIRE(r2.status == 0);
  std::vector<index_t> s;
  std::string d;
  const auto a = load_values(tmp / "out2/o.npy", s, d);
  const auto b = load_values(kData + "causal_gqa/o.npy", s, d);
  double diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::abs(a[i] - b[i]));
  CHECK(diff > 1e-3);
}

TEST_CASE("attnkit-run: usage errors exit 2 with one line", "[cli][errors]") {
  temp_dir tmp;
  const std::string good = kData + "causal_gqa", out = tmp / "out";
  SECTION("no arguments") { expect_error({}, tmp, {"VARIANT IN_DIR OUT_DIR"}); }
  SECTION("unknown variant") {
    expect_error({"softmaxx", good, out}, tmp, {"unknown variant 'softmaxx'", "softmax"});
  }
  SECTION("missing IN_DIR") {
    expect_error({"softmax", tmp / "nope", out}, tmp, {"nope", "not a directory"});
  }
  SECTION("unknown option") {
    expect_error({"softmax", good, out, "--causal", "--frobnicate", "3"}, tmp,
                 {"'--frobnicate'", "not an option"});
  }
  SECTION("bad option values") {
    expect_error({"softmax", good, out, "--scale", "abc"}, tmp, {"--scale", "'abc'"});
    expect_error({"softmax", good, out, "--window-left", "-3"}, tmp, {"--window-left", "-3"});
    expect_error({"softmax", good, out, "--window-left"}, tmp, {"--window-left", "needs a value"});
    expect_error({"softmax", good, out, "--cache", "ring"}, tmp, {"--cache", "'ring'"});
    expect_error({"softmax", good, out, "--cache", "paged", "--page-size", "0"}, tmp,
                 {"--page-size"});
    expect_error({"softmax", good, out, "--threads", "two"}, tmp, {"--threads", "'two'"});
    expect_error({"softmax", good, out, "--softcap", "-1"}, tmp, {"--softcap"});
    expect_error({"softmax", good, out, "--causal=yes"}, tmp, {"--causal", "takes no value"});
  }
  SECTION("sliding_window options out of range, and the ring's conditions") {
    expect_error({"sliding_window", good, out, "--causal", "--window-left", "2", "--n-sink", "-1"},
                 tmp, {"--n-sink", ">= 0"});
    expect_error({"sliding_window", good, out, "--causal", "--window-left", "2", "--chunk", "-3"},
                 tmp, {"--chunk", ">= 0"});
    expect_error({"sliding_window", good, out, "--window-left", "2", "--cache", "ring"}, tmp,
                 {"--cache ring", "--causal"});
    expect_error({"sliding_window", good, out, "--causal", "--window-left", "2", "--window-right",
                  "1", "--cache", "ring"},
                 tmp, {"--cache ring", "--window-right"});
    expect_error({"softmax", good, out, "--causal", "--cache", "ring"}, tmp, {"--cache", "ring"});
  }
  SECTION("sliding_window needs --window-left") {
    expect_error({"sliding_window", good, out, "--causal"}, tmp, {"--window-left", "required"});
  }
}

TEST_CASE("attnkit-run: input errors exit 2 naming the file", "[cli][errors]") {
  temp_dir tmp;
  const std::string in = bad_case(tmp, "causal_gqa"), out = tmp / "out";
  SECTION("missing file") {
    fs::remove(in + "/v.npy");
    expect_error({"softmax", in, out, "--causal"}, tmp, {"v.npy", "cannot open"});
  }
  SECTION("wrong rank") {
    const std::vector<double> z(2 * 9 * 2, 0.0);
    io::save_npy(in + "/k.npy", z.data(), {2, 9, 2});
    expect_error({"softmax", in, out}, tmp, {"k.npy", "rank 4", "rank 3"});
  }
  SECTION("mismatched head dim") {
    const std::vector<double> z(2 * 9 * 2 * 8, 0.0);
    io::save_npy(in + "/k.npy", z.data(), {2, 9, 2, 8});
    expect_error({"softmax", in, out}, tmp, {"k.npy", "Dk", "16"});
  }
  SECTION("mismatched key count") {
    const std::vector<double> z(2 * 8 * 2 * 16, 0.0);
    io::save_npy(in + "/v.npy", z.data(), {2, 8, 2, 16});
    expect_error({"softmax", in, out, "--cache", "paged"}, tmp, {"v.npy", "Tk"});
  }
  SECTION("heads not a multiple") {
    const std::vector<double> z(2 * 9 * 3 * 16, 0.0);
    io::save_npy(in + "/k.npy", z.data(), {2, 9, 3, 16});
    io::save_npy(in + "/v.npy", z.data(), {2, 9, 3, 16});
    expect_error({"softmax", in, out}, tmp, {"q.npy", "Hq"});
  }
  SECTION("mixed float dtypes") {
    const std::vector<float> z(2 * 9 * 2 * 16, 0.f);
    io::save_npy(in + "/v.npy", z.data(), {2, 9, 2, 16});
    expect_error({"softmax", in, out}, tmp, {"v.npy", "<f4", "one dtype"});
  }
  SECTION("unsupported file") {
    std::ofstream(in + "/q.npy") << "not numpy";
    expect_error({"softmax", in, out}, tmp, {"q.npy", "bad magic"});
  }
  SECTION("integer float input") {
    const std::vector<std::int32_t> z(4, 0);
    io::save_npy(in + "/sinks.npy", z.data(), {4});
    expect_error({"softmax", in, out}, tmp, {"sinks.npy", "<i4"});
  }
  SECTION("OUT_DIR is a file") {
    std::ofstream(out) << "x";
    const auto r = run_cli({"softmax", in, out}, tmp);
    CHECK(r.status == 2);
    CHECK_THAT(r.err, Contains("OUT_DIR"));
    CHECK(fs::is_regular_file(out));
  }
}

TEST_CASE("attnkit-run: varlen input errors", "[cli][errors]") {
  temp_dir tmp;
  const std::string in = bad_case(tmp, "varlen"), out = tmp / "out";
  SECTION("only one of the offsets") {
    fs::remove(in + "/cu_seqlens_k.npy");
    expect_error({"softmax", in, out, "--causal"}, tmp, {"cu_seqlens", "both"});
  }
  SECTION("offsets not ending at the token count") {
    const std::vector<std::int32_t> cu = {0, 3, 7, 12};
    io::save_npy(in + "/cu_seqlens_k.npy", cu.data(), {4});
    expect_error({"softmax", in, out, "--causal", "--cache", "contiguous"}, tmp,
                 {"cu_seqlens_k.npy", "12", "13"});
  }
  SECTION("float offsets") {
    const std::vector<double> cu = {0, 3, 7, 13};
    io::save_npy(in + "/cu_seqlens_k.npy", cu.data(), {4});
    expect_error({"softmax", in, out}, tmp, {"cu_seqlens_k.npy", "<f8"});
  }
}

TEST_CASE("attnkit-run: hostile inputs and failed writes leave no partial output",
          "[cli][errors]") {
  temp_dir tmp;
  const std::string in = bad_case(tmp, "causal_gqa"), out = tmp / "out";
  SECTION("an input that is not a regular file (a FIFO would block)") {
    fs::remove(in + "/v.npy");
    REQUIRE(mkfifo((in + "/v.npy").c_str(), 0600) == 0);
    expect_error({"softmax", in, out, "--causal"}, tmp, {"v.npy", "not a regular file"});
  }
  SECTION("a failed write of the second output removes the first") {
    fs::create_directories(out + "/lse.npy");  // a folder where an output file must go
    const auto r = run_cli({"softmax", in, out, "--causal"}, tmp);
    INFO("stderr: " << r.err);
    CHECK(r.status == 2);
    CHECK_THAT(r.err, Contains("lse.npy"));
    CHECK(!fs::exists(out + "/o.npy"));
    for (const auto& e : fs::directory_iterator(out))  // no temporaries left either
      CHECK(e.path().filename() == "lse.npy");
  }
  SECTION("options outside the float32 compute type; windows of any width") {
    const std::string in32 = tmp / "in32";
    fs::create_directories(in32);
    copy_inputs(kData + "causal_gqa", in32, /*f32=*/true, false);
    expect_error({"softmax", in32, out, "--causal", "--scale", "1e300"}, tmp,
                 {"scale", "outside the range of the float32"});
    expect_error({"softmax", in32, out, "--causal", "--softcap", "1e-40"}, tmp, {"softcap"});
    const auto r = run_cli({"softmax", in, out, "--causal", "--window-left", "1099511627777"}, tmp);
    INFO("stderr: " << r.err);
    CHECK(r.status == 0);  // wider than the context: the same as no window
    check_output(out, kData + "causal_gqa", "o", "<f8", test::tolerance<double>());
  }
  SECTION("a zero extent beside a huge one: a clear error, no crash") {
    const std::string inz = tmp / "inz";
    fs::create_directories(inz);
    const double none = 0;
    const index_t huge = index_t(1) << 62;
    for (const char* n : {"q", "k", "v"})
      io::save_npy(inz + "/" + n + ".npy", &none, {1, 0, 4, huge});
    io::save_npy(inz + "/beta.npy", &none, {1, 0, 4});
    expect_error({"delta_rule", inz, out}, tmp, {"too large"});
  }
  SECTION("ATTNKIT_NUM_THREADS out of range is named") {
    REQUIRE(setenv("ATTNKIT_NUM_THREADS", "100000", 1) == 0);
    const auto r = run_cli({"softmax", in, out, "--causal"}, tmp);
    unsetenv("ATTNKIT_NUM_THREADS");
    INFO("stderr: " << r.err);
    CHECK(r.status == 2);
    CHECK_THAT(r.err, Contains("ATTNKIT_NUM_THREADS"));
    CHECK(!fs::exists(out));
  }
}

TEST_CASE("attnkit-run replays golden mla_small (absorbed over both caches, naive, reference)",
          "[cli][mla]") {
  const std::string golden = kData + "mla_small";  // causal, the default scale (Dn+Dr)^-0.5
  const std::vector<std::vector<std::string>> modes = {
      {},
      {"--form", "absorbed", "--cache", "contiguous"},
      {"--form", "absorbed", "--cache", "paged", "--page-size", "4"},
      {"--cache", "paged", "--page-size", "3", "--threads", "2"},
      {"--form", "naive"},
      {"--form", "naive", "--cache", "paged", "--page-size", "4"},  // accepted, does not apply
      {"--reference"},
      {"--reference", "--cache", "paged", "--page-size", "3"},
      {"--reference", "--form", "naive"},
      {"--scale", "0.28867513459481287"},  // the default, given explicitly
  };
  test::replay_golden(
      {"mla",
       golden,
       {"--causal"},
       modes,
       [&](const std::string& in, bool f32) { copy_inputs(golden, in, f32, false); },
       [&](const std::string& out, bool f32) {
         // float64: max error <= 1e-10 of the largest value; float32: rel RMS
         // <= 1e-5
         test::check_npy_output(out, golden, "o", f32);
         test::check_npy_output(out, golden, "lse", f32);
       }});
}

TEST_CASE("attnkit-run: mla input and option errors exit 2", "[cli][errors][mla]") {
  temp_dir tmp;
  const std::string in = bad_case(tmp, "mla_small"), out = tmp / "out";
  SECTION("w_uk with the wrong head count") {
    const std::vector<double> z(3 * 8 * 16, 0.0);
    io::save_npy(in + "/w_uk.npy", z.data(), {3, 8, 16});
    for (const char* form : {"absorbed", "naive"}) {
      expect_error({"mla", in, out, "--causal", "--form", form}, tmp,
                   {"w_uk.npy", "dim 0 (H)", "expected 4"});
      expect_error({"mla", in, out, "--causal", "--form", form, "--reference"}, tmp,
                   {"w_uk.npy", "dim 0 (H)"});
    }
  }
  SECTION("k_pe with a rotary dim other than q_pe's") {
    const std::vector<double> z(11 * 5, 0.0);
    io::save_npy(in + "/k_pe.npy", z.data(), {1, 11, 5});
    expect_error({"mla", in, out, "--causal"}, tmp, {"k_pe.npy", "Dr", "expected 4"});
  }
  SECTION("mixed float dtypes") {
    const std::vector<float> z(4 * 8 * 16, 0.f);
    io::save_npy(in + "/w_uv.npy", z.data(), {4, 8, 16});
    expect_error({"mla", in, out}, tmp, {"w_uv.npy", "<f4", "one dtype"});
  }
  SECTION("bad options") {
    expect_error({"mla", in, out, "--form", "bogus"}, tmp, {"--form", "'bogus'"});
    expect_error({"mla", in, out, "--cache", "ring"}, tmp, {"--cache", "'ring'"});
    expect_error({"mla", in, out, "--page-size", "4"}, tmp, {"--page-size", "--cache paged"});
    expect_error({"mla", in, out, "--cache", "paged", "--page-size", "0"}, tmp, {"--page-size"});
    expect_error({"mla", in, out, "--window-left", "2"}, tmp, {"'--window-left'", "not an option"});
  }
}

TEST_CASE("attnkit-run: float16 inputs run in float32 and write float16 outputs", "[cli][f16]") {
  // softmax (causal_gqa, a dense and a paged cache, the reference) and a recurrent variant
  // (delta_rule with h0, both algorithms): inputs rounded to float16, outputs checked against the
  // float64 golden within float16 accuracy.
  struct f16_case {
    std::string variant, golden;
    std::vector<std::string> outputs;
    std::vector<std::vector<std::string>> runs;
  };
  const std::vector<f16_case> cases = {
      {"softmax",
       kData + "causal_gqa",
       {"o", "lse"},
       {{"--causal"},
        {"--causal", "--cache", "paged", "--page-size", "3"},
        {"--causal", "--reference"}}},
      {"delta_rule",
       golden_dir("delta") + "delta_rule/T37_h0",
       {"o", "ht"},
       {{}, {"--mode", "recurrent"}, {"--reference"}}},
  };
  for (const auto& c : cases) {
    temp_dir tmp("attnkit_f16_");
    const std::string in = tmp / "in";
    fs::create_directories(in);
    test::copy_golden_inputs_f16(c.golden, in, {c.outputs.begin(), c.outputs.end()});
    for (const auto& opts : c.runs) {
      const std::string out = tmp / "out";
      fs::remove_all(out);
      std::vector<std::string> args = {c.variant, in, out};
      args.insert(args.end(), opts.begin(), opts.end());
      const auto run = require_cli_ok(args, tmp);
      for (const auto& name : c.outputs)
        test::check_npy_output_f16(out, c.golden, name, 2e-3, 1e-2);
    }
  }
}
