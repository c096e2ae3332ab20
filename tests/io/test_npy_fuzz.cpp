// SPDX-License-Identifier: Apache-2.0
// Fuzzing the .npy reader: valid files of every dtype, then random mutations of them (truncation
// at any length, byte flips, random header lengths, header dicts assembled from random tokens
// with huge, zero and negative dimensions, junk after the dict). Every input must either load, or
// fail with attnkit::error; never crash, hang, read out of bounds (run under ASan in CI) or
// allocate for more bytes than it holds. Bounded: ATTNKIT_FUZZ_ITERATIONS inputs (default 200000)
// or ATTNKIT_FUZZ_SECONDS (default 20), whichever ends first; ATTNKIT_FUZZ_SEED picks the seed.
#include <attnkit/io/npy.hpp>
#include <chrono>
#include <cstdlib>
#include <sstream>
#include <support/test_util.hpp>

using namespace attnkit;

namespace {

long env_or(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtol(v, nullptr, 10) : fallback;
}

std::string header_bytes(const std::string& dict, int major) {
  std::string h = dict;
  const std::size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  std::string out = "\x93NUMPY";
  out += char(major);
  out += char(0);
  for (std::size_t i = 0; i < (major == 1 ? 2u : 4u); ++i) out += char((h.size() >> (8 * i)) & 255);
  return out + h;
}

/// A valid file: dtype, shape and matching (random) data.
std::string valid_file(std::mt19937_64& rng) {
  static const char* dtypes[] = {"<f4", "<f8", "<i4", "<i8", "<u2", "<f2"};
  static const int sizes[] = {4, 8, 4, 8, 2, 2};
  const int d = int(rng() % 6);
  const int rank = int(rng() % 4);
  std::string shape = "(";
  std::size_t n = 1;
  for (int r = 0; r < rank; ++r) {
    const std::size_t e = rng() % 5;
    n *= e;
    shape += std::to_string(e) + (rank == 1 ? "," : r + 1 < rank ? ", " : "");
  }
  shape += ")";
  const std::string dict = std::string("{'descr': '") + dtypes[d] +
                           "', 'fortran_order': False, 'shape': " + shape + ", }";
  std::string data(n * std::size_t(sizes[d]), '\0');
  for (char& c : data) c = char(rng());
  return header_bytes(dict, int(rng() % 3) + 1) + data;
}

/// A header dict assembled from random tokens (mostly plausible, sometimes garbage).
std::string random_dict(std::mt19937_64& rng) {
  static const char* tokens[] = {"{",
                                 "}",
                                 "'descr'",
                                 "'fortran_order'",
                                 "'shape'",
                                 ":",
                                 ",",
                                 "(",
                                 ")",
                                 "True",
                                 "False",
                                 "'<f4'",
                                 "'>f8'",
                                 "'|b1'",
                                 "'<f2'",
                                 "0",
                                 "1",
                                 "7",
                                 "4611686018427387904",
                                 "9223372036854775807",
                                 "99999999999999999999",
                                 "-3",
                                 "L",
                                 "'",
                                 "\"",
                                 " ",
                                 "\n",
                                 "[('a', '<f4')]",
                                 "'x'"};
  const std::size_t nt = sizeof(tokens) / sizeof(tokens[0]);
  std::string s;
  if (rng() % 2) {  // a plausible skeleton with random values
    const auto pick = [&] { return std::string(tokens[rng() % nt]); };
    s = "{'descr': " + (rng() % 2 ? std::string("'<f4'") : pick()) +
        ", 'fortran_order': " + (rng() % 2 ? std::string("False") : pick()) + ", 'shape': (";
    const int rank = int(rng() % 5);
    for (int r = 0; r < rank; ++r) s += (rng() % 3 ? std::to_string(rng() % 4) : pick()) + ",";
    s += ")" + (rng() % 4 ? std::string(", }") : pick());
  } else {
    const int len = int(rng() % 24);
    for (int i = 0; i < len; ++i) s += tokens[rng() % nt];
  }
  return s;
}

std::string mutate(std::string f, std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0:  // truncate anywhere
      f.resize(f.empty() ? 0 : rng() % f.size());
      break;
    case 1:  // flip a few bytes
      for (int i = 0, n = int(rng() % 4) + 1; i < n && !f.empty(); ++i)
        f[rng() % f.size()] = char(rng());
      break;
    case 2:  // a random header length field
      if (f.size() > 9) {
        f[8] = char(rng());
        f[9] = char(rng());
      }
      break;
    case 3:  // a random dict, with or without data after it
      f = header_bytes(random_dict(rng), int(rng() % 3) + 1) + std::string(rng() % 64, 'x');
      break;
    case 4:  // junk inside the header padding
      if (f.size() > 20) f[f.find('\n') == std::string::npos ? 20 : f.find('\n') - 1] = char(rng());
      break;
    default:  // unchanged
      break;
  }
  return f;
}

}  // namespace

TEST_CASE("npy reader survives random and corrupted files", "[io][fuzz]") {
  const long iterations = env_or("ATTNKIT_FUZZ_ITERATIONS", 200000);
  const long seconds = env_or("ATTNKIT_FUZZ_SECONDS", 20);
  const auto seed = std::uint64_t(env_or("ATTNKIT_FUZZ_SEED", 20261130));
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const auto t0 = std::chrono::steady_clock::now();
  long loaded = 0, refused = 0, run = 0, short_data = 0;
  for (; run < iterations; ++run) {
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(seconds)) break;
    const std::string bytes = mutate(valid_file(rng), rng);
    std::istringstream in(bytes);
    try {
      const io::npy_array a = io::read_npy(in, "fuzz");
      // everything an array can do once loaded
      const index_t n = a.size();
      short_data += std::size_t(n) * io::detail::npy_itemsize(a.dtype) > a.data.size();
      (void)a.as<float>();
      (void)a.as<double>();
      (void)a.as<std::int64_t>();
      ++loaded;
    } catch (const attnkit::error&) {
      ++refused;
    }
  }
  INFO(run << " inputs: " << loaded << " loaded, " << refused << " refused");
  CHECK(run > 0);
  CHECK(short_data == 0);  // a loaded array holds every byte its shape needs
  CHECK(loaded > 0);       // the generator reaches valid files ...
  CHECK(refused > 0);      // ... and broken ones
}
