// SPDX-License-Identifier: Apache-2.0
// attnkit-run VARIANT IN_DIR OUT_DIR [--option value | --flag]...
// Loads IN_DIR/<name>.npy inputs, runs one attnkit kernel and writes OUT_DIR/<name>.npy outputs.
// The contract (inputs, options, outputs per variant) is described in README.md beside this file.
//
// Adding variants: this file never changes. Each examples/attnkit_run/run_*.cpp (CMake globs the
// folder) defines runners `void run_x(attnkit_run::context& ctx)` and registers them with
//     static const attnkit_run::variant_registrar reg_x("x", &run_x, "inputs ...; options ...");
// A runner reads its options with ctx.opts() getters (unknown options are rejected after it
// returns), loads inputs with ctx.load<T>() / load_optional / load_index_optional, validates shapes
// with ctx.expect_dim() and stages outputs with ctx.save(). Outputs are written only after the
// runner returns and every option was recognised, so a failed run leaves no outputs behind.
//
// Exit status: 0 on success; 2 with one line on stderr for any bad input (bad_input from the
// helpers, attnkit::error from a kernel's validation, or any other failure).
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include "common.hpp"

namespace {

void print_help(std::ostream& os) {
  os << "usage: attnkit-run VARIANT IN_DIR OUT_DIR [--option value | --flag]...\n"
        "Reads IN_DIR/<name>.npy, runs the variant, writes OUT_DIR/<name>.npy.\n"
        "Options of every variant: --threads N (default: all cores), --reference (naive "
        "reference implementation)\n\nVariants:\n";
  for (const auto& [name, info] : attnkit_run::registry())
    os << "  " << name << ": " << info.usage << "\n";
}

std::string known_variants() {
  std::string s;
  for (const auto& kv : attnkit_run::registry()) s += (s.empty() ? "" : ", ") + kv.first;
  return s;
}

/// One line: newlines and tabs in library messages (e.g. a quoted .npy header) become spaces.
std::string one_line(std::string s) {
  for (auto& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

int run(int argc, char** argv) {
  using attnkit_run::fail;
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    print_help(std::cout);
    return 0;
  }
  if (argc < 4)
    fail("expected VARIANT IN_DIR OUT_DIR [options] (attnkit-run --help lists the variants)");
  for (int i = 1; i < 4; ++i)
    if (std::strncmp(argv[i], "--", 2) == 0)
      fail("expected VARIANT IN_DIR OUT_DIR before any option, got '", argv[i], "'");

  const std::string variant = argv[1];
  const auto it = attnkit_run::registry().find(variant);
  if (it == attnkit_run::registry().end())
    fail("unknown variant '", variant, "' (known: ", known_variants(), ")");

  attnkit_run::options opts;
  for (int i = 4; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.size() < 3 || a.compare(0, 2, "--") != 0)
      fail("unexpected argument '", a, "' (options are --name value or --flag)");
    const auto eq = a.find('=');
    if (eq != std::string::npos) {
      opts.add(a.substr(2, eq - 2), a.substr(eq + 1));
    } else if (i + 1 < argc && std::strncmp(argv[i + 1], "--", 2) != 0) {
      opts.add(a.substr(2), std::string(argv[++i]));
    } else {
      opts.add(a.substr(2), std::nullopt);
    }
  }

  attnkit_run::context ctx(variant, argv[2], argv[3], std::move(opts));
  ctx.read_common_options();
  it->second.run(ctx);
  ctx.opts().check_all_used(variant);
  ctx.commit();
  for (const auto& n : attnkit_run::notes()) std::fprintf(stderr, "attnkit-run: %s\n", n.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const attnkit_run::bad_input& e) {
    std::cerr << "attnkit-run: " << one_line(e.what()) << std::endl;
  } catch (const attnkit::error& e) {
    std::cerr << "attnkit-run: " << one_line(e.what()) << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "attnkit-run: " << one_line(e.what()) << std::endl;
  } catch (...) {
    std::cerr << "attnkit-run: unknown error" << std::endl;
  }
  return 2;
}
