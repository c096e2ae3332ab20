// SPDX-License-Identifier: Apache-2.0
// Helpers of the attnkit-run end-to-end tests (tests/examples/cli_tests.cpp for the softmax family,
// tests/linear/cli_linear.cpp for the linear family): a scratch folder, running the program,
// copying a golden case's inputs, and the error contract of attnkit-run
// (examples/attnkit_run/README.md). The including test defines ATTNKIT_RUN_EXE (the program's path)
// on its command line.
#pragma once

#include <sys/wait.h>

#include <algorithm>
#include <attnkit/io/npy.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <support/test_util.hpp>
#include <vector>

#ifndef ATTNKIT_RUN_EXE
#error "define ATTNKIT_RUN_EXE (the path of attnkit-run) before including support/cli_util.hpp"
#endif

namespace attnkit::test {

/// A scratch folder under the system temp dir, removed on destruction.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(const std::string& prefix = "attnkit_cli_") {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           (prefix + std::to_string(rd()) + "_" + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

struct run_result {
  int status;       // exit status, -1 if the program did not exit normally
  std::string err;  // everything it wrote to stderr
};

/// Runs attnkit-run with `args` (each single-quoted), stdout discarded, stderr captured.
inline run_result run_cli(const std::vector<std::string>& args, const temp_dir& scratch) {
  std::string cmd = std::string("'") + ATTNKIT_RUN_EXE + "'";
  for (const auto& a : args) cmd += " '" + a + "'";
  const std::string err_file = scratch / "stderr.txt";
  cmd += " > /dev/null 2> '" + err_file + "'";
  const int raw = std::system(cmd.c_str());
  std::ifstream f(err_file);
  std::string err((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, err};
}

/// A successful run: its result and the two INFO messages (the command line, stderr).
/// The messages are held here, not scoped in require_cli_ok, so the caller's checks of the outputs
/// report them too, for as long as this value lives.
struct cli_ok {
  run_result result;
  std::vector<Catch::ScopedMessage> info;
};

/// Runs attnkit-run with `args` and requires exit status 0 and an empty stderr (or, if `note` is
/// given, a stderr containing it).
[[nodiscard]] inline cli_ok require_cli_ok(const std::vector<std::string>& args,
                                           const temp_dir& tmp, const std::string& note = {}) {
  const auto message = [] {
    return Catch::MessageBuilder("INFO", CATCH_INTERNAL_LINEINFO, Catch::ResultWas::Info);
  };
  cli_ok ok;
  std::string desc;
  for (const auto& a : args) desc += a + " ";
  ok.info.emplace_back(message() << "attnkit-run " << desc);
  ok.result = run_cli(args, tmp);
  ok.info.emplace_back(message() << "stderr: " << ok.result.err);
  REQUIRE(ok.result.status == 0);
  if (note.empty())
    CHECK(ok.result.err.empty());
  else
    CHECK_THAT(ok.result.err, Catch::Matchers::Contains(note));
  return ok;
}

/// Copies the .npy inputs of a golden case from `src` to `dst`, skipping the files named in
/// `outputs`: float64 tensors as float32 if `f32`, integer tensors (cu_seqlens) as int64 if `i64`
/// else int32.
inline void copy_golden_inputs(const std::string& src, const std::string& dst, bool f32, bool i64,
                               const std::set<std::string>& outputs) {
  for (const auto& e : std::filesystem::directory_iterator(src)) {
    const std::string stem = e.path().stem().string();
    if (e.path().extension() != ".npy" || outputs.count(stem)) continue;
    const auto a = io::load_npy(e.path().string());
    const std::string out = dst + "/" + stem + ".npy";
    if (a.dtype == "<f8" && f32)
      io::save_npy(out, a.as<float>().data(), a.shape);
    else if (a.dtype == "<f8")
      io::save_npy(out, a.as<double>().data(), a.shape);
    else if (i64)
      io::save_npy(out, a.as<std::int64_t>().data(), a.shape);
    else
      io::save_npy(out, a.as<std::int32_t>().data(), a.shape);
  }
}

/// Copies the .npy inputs of a golden case from `src` to `dst` with every float64 tensor rounded
/// to float16 ("<f2"), skipping the files named in `outputs`; integer tensors as int32.
inline void copy_golden_inputs_f16(const std::string& src, const std::string& dst,
                                   const std::set<std::string>& outputs) {
  for (const auto& e : std::filesystem::directory_iterator(src)) {
    const std::string stem = e.path().stem().string();
    if (e.path().extension() != ".npy" || outputs.count(stem)) continue;
    const auto a = io::load_npy(e.path().string());
    const std::string out = dst + "/" + stem + ".npy";
    if (a.dtype == "<f8") {
      const auto d = a.as<double>();
      std::vector<fp16> h(d.size());
      for (std::size_t i = 0; i < d.size(); ++i) h[i] = fp16(float(d[i]));
      io::save_npy(out, h.data(), a.shape);
    } else {
      io::save_npy(out, a.as<std::int32_t>().data(), a.shape);
    }
  }
}

/// Compares OUT/<name>.npy of a float16 run with GOLDEN/<name>.npy (float64): dtype <f2, same
/// shape, -inf exactly where the golden has -inf, the rest finite with relative RMS <= rel_rms and
/// max error <= max_rel * max|golden|.
inline void check_npy_output_f16(const std::string& out, const std::string& golden,
                                 const std::string& name, double rel_rms, double max_rel) {
  const auto got = io::load_npy(out + "/" + name + ".npy");
  const auto want = io::load_npy(golden + "/" + name + ".npy");
  INFO("output " << name << " (float16)");
  CHECK(got.dtype == "<f2");
  REQUIRE(got.shape == want.shape);
  const auto g = got.as<double>(), w = want.as<double>();
  double max_err = 0, max_ref = 0, num = 0, den = 0;
  bool finite = true, inf_match = true;
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (std::isinf(w[i])) {
      inf_match &= g[i] == w[i];
      continue;
    }
    finite &= std::isfinite(g[i]);
    max_err = std::max(max_err, std::abs(g[i] - w[i]));
    max_ref = std::max(max_ref, std::abs(w[i]));
    num += (g[i] - w[i]) * (g[i] - w[i]);
    den += w[i] * w[i];
  }
  const double rr = std::sqrt(num / den);
  INFO("max_err=" << max_err << " max_ref=" << max_ref << " rel_rms=" << rr);
  CHECK(inf_match);
  CHECK(finite);
  CHECK(max_ref > 0);
  CHECK(rr <= rel_rms);
  CHECK(max_err <= max_rel * max_ref);
}

/// Compares OUT/<name>.npy with GOLDEN/<name>.npy: dtype <f4 (f32) or <f8, same shape, finite,
/// relative RMS <= 1e-5 (f32) or max error <= 1e-10 of the largest reference value (f64).
inline void check_npy_output(const std::string& out, const std::string& golden,
                             const std::string& name, bool f32) {
  const auto got = io::load_npy(out + "/" + name + ".npy");
  const auto want = io::load_npy(golden + "/" + name + ".npy");
  INFO("output " << name);
  CHECK(got.dtype == (f32 ? "<f4" : "<f8"));
  REQUIRE(got.shape == want.shape);
  const auto g = got.as<double>(), w = want.as<double>();
  double max_err = 0, max_ref = 0, num = 0, den = 0;
  bool finite = true;
  for (std::size_t i = 0; i < w.size(); ++i) {
    finite &= std::isfinite(g[i]);
    max_err = std::max(max_err, std::abs(g[i] - w[i]));
    max_ref = std::max(max_ref, std::abs(w[i]));
    num += (g[i] - w[i]) * (g[i] - w[i]);
    den += w[i] * w[i];
  }
  const double rel_rms = std::sqrt(num / den);
  INFO("max_err=" << max_err << " max_ref=" << max_ref << " rel_rms=" << rel_rms);
  CHECK(finite);
  CHECK(max_ref > 0);
  if (f32)
    CHECK(rel_rms <= 1e-5);
  else
    CHECK(max_err <= 1e-10 * max_ref);
}

/// One golden case replayed through attnkit-run in float64 and float32 (inputs copied by
/// copy_inputs(in_dir, f32)), once per entry of `modes` (extra options after case_opts); each
/// run must exit 0 with an empty stderr, or with a stderr containing note(args) where that is
/// not empty, and pass check_outputs(out_dir, f32).
struct golden_replay {
  std::string variant, golden;
  std::vector<std::string> case_opts;
  std::vector<std::vector<std::string>> modes;
  std::function<void(const std::string&, bool)> copy_inputs;
  std::function<void(const std::string&, bool)> check_outputs;
  std::function<std::string(const std::vector<std::string>&)> note = {};
};

/// The option sets a recurrent-family golden case is replayed with: the default (chunk), each
/// --mode, another chunk size, the reference and two threads.
inline std::vector<std::vector<std::string>> recurrent_modes() {
  return {{},
          {"--mode", "recurrent"},
          {"--mode", "auto"},
          {"--chunk-size", "16"},
          {"--reference"},
          {"--threads", "2"}};
}

inline void replay_golden(const golden_replay& c) {
  for (const bool f32 : {false, true}) {
    temp_dir tmp("attnkit_replay_");
    const std::string in = tmp / "in";
    std::filesystem::create_directories(in);
    c.copy_inputs(in, f32);
    for (const auto& mode : c.modes) {
      const std::string out = tmp / "out";
      std::filesystem::remove_all(out);
      std::vector<std::string> args = {c.variant, in, out};
      args.insert(args.end(), c.case_opts.begin(), c.case_opts.end());
      args.insert(args.end(), mode.begin(), mode.end());
      const auto run = require_cli_ok(args, tmp, c.note ? c.note(args) : std::string());
      c.check_outputs(out, f32);
    }
  }
}

/// The error contract: exit status 2, exactly one line on stderr containing every string of
/// `needles`, and no output folder `out_dir` left behind.
inline void expect_cli_error(const std::vector<std::string>& args, const temp_dir& tmp,
                             const std::vector<std::string>& needles, const std::string& out_dir) {
  const auto r = run_cli(args, tmp);
  INFO("stderr: " << r.err);
  CHECK(r.status == 2);
  REQUIRE(!r.err.empty());
  CHECK(r.err.back() == '\n');
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  for (const auto& n : needles) CHECK_THAT(r.err, Catch::Matchers::Contains(n));
  CHECK(!std::filesystem::exists(out_dir));
}

/// expect_cli_error with one needle, the output folder being args[2] (VARIANT IN_DIR OUT_DIR).
inline void expect_error(const std::vector<std::string>& args, const std::string& what,
                         const temp_dir& tmp) {
  expect_cli_error(args, tmp, {what}, args.at(2));
}

/// The golden cases of a family: tests/data/<family>/.
inline std::string golden_dir(const std::string& family) {
  return std::string(ATTNKIT_TEST_DATA_DIR) + "/" + family + "/";
}

}  // namespace attnkit::test

// The names every CLI test file uses (this header is included by those files alone).
using namespace attnkit;
using namespace attnkit::test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
