// SPDX-License-Identifier: Apache-2.0
// attnkit::io .npy reader/writer: round trips for every element type, files written by NumPy, and
// every rejected input (each error names the file and the problem).
#include <attnkit/io/npy.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <support/test_util.hpp>

using namespace attnkit;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

/// A scratch file path unique to this process, removed on destruction.
struct temp_file {
  std::string path;
  explicit temp_file(const std::string& name) {
    std::random_device rd;
    path = (fs::temp_directory_path() /
            ("attnkit_npy_" + std::to_string(rd()) + "_" + std::to_string(rd()) + "_" + name))
               .string();
  }
  ~temp_file() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

/// Writes a hand-made .npy file: magic, version, header dict (padded to 64 bytes) and raw data.
void write_raw(const std::string& path, int major, int minor, const std::string& dict,
               const std::string& data) {
  const std::size_t pre = major == 1 ? 10 : 12;
  std::string h = dict;
  while ((pre + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  std::string out("\x93NUMPY", 6);
  out += char(major);
  out += char(minor);
  for (std::size_t i = 0; i < (major == 1 ? 2u : 4u); ++i)
    out += char((h.size() >> (8 * i)) & 0xff);
  out += h;
  out += data;
  std::ofstream(path, std::ios::binary).write(out.data(), std::streamsize(out.size()));
}

std::string le_f4(std::initializer_list<float> xs) {
  std::string s;
  for (float x : xs) {
    std::uint32_t u;
    std::memcpy(&u, &x, 4);
    for (int i = 0; i < 4; ++i) s += char((u >> (8 * i)) & 0xff);
  }
  return s;
}

template <class T>
void round_trip(const std::vector<T>& vals, const std::vector<index_t>& shape, const char* dtype) {
  temp_file f("rt.npy");
  io::save_npy(f.path, vals.data(), shape);
  const auto a = io::load_npy(f.path);
  CHECK(a.dtype == dtype);
  CHECK(a.shape == shape);
  REQUIRE(a.size() == index_t(vals.size()));
  const auto back = a.as<T>();
  REQUIRE(back.size() == vals.size());
  for (std::size_t i = 0; i < vals.size(); ++i) {
    if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, fp16>)
      CHECK(back[i].bits == vals[i].bits);
    else
      CHECK(back[i] == vals[i]);
  }
  // The data starts at a multiple of 64 bytes, as NumPy writes it.
  CHECK((fs::file_size(f.path) - vals.size() * sizeof(T)) % 64 == 0);
}

void check_load_error(const std::string& path, const std::string& what) {
  CHECK_THROWS_AS(io::load_npy(path), attnkit::error);
  CHECK_THROWS_WITH(io::load_npy(path), Contains(path) && Contains(what));
}

}  // namespace

TEST_CASE("npy round trip of every element type and shape") {
  round_trip<float>({1.5f, -2.0f, 3.25f, 1e-30f, -0.0f, 7.0f}, {2, 3}, "<f4");
  round_trip<double>({1.0 / 3.0, -1e300, 0.0, std::numeric_limits<double>::infinity()}, {4}, "<f8");
  round_trip<double>({-std::numeric_limits<double>::infinity()}, {1, 1, 1}, "<f8");
  round_trip<std::int32_t>({0, 3, 7, -1, 2147483647}, {5}, "<i4");
  round_trip<std::int64_t>({0, 3, -(std::int64_t(1) << 40)}, {3, 1}, "<i8");
  round_trip<std::uint16_t>({0, 65535, 12345}, {3}, "<u2");
  round_trip<bf16>({bf16(1.5f), bf16(-3.0f), bf16(1e20f)}, {1, 3}, "<u2");
  round_trip<fp16>({fp16(0.5f), fp16(-65504.0f), fp16(1e-7f)}, {3}, "<f2");
  round_trip<float>({42.0f}, {}, "<f4");    // 0-d array
  round_trip<float>({}, {2, 0, 3}, "<f4");  // empty
  round_trip<double>(std::vector<double>(300, 1.25), {2, 3, 5, 10}, "<f8");
}

TEST_CASE("npy converts between dtypes with as<T>") {
  temp_file f("conv.npy");
  const std::vector<double> d = {0.1, -2.5, 1e10};
  io::save_npy(f.path, d.data(), {3});
  const auto a = io::load_npy(f.path);
  const auto fl = a.as<float>();
  CHECK(fl[0] == 0.1f);
  CHECK(fl[2] == 1e10f);
  CHECK_THROWS_WITH(a.as<std::int32_t>(), Contains("cannot convert float dtype '<f8'"));

  const std::vector<std::int64_t> big = {0, std::int64_t(1) << 33};
  io::save_npy(f.path, big.data(), {2});
  const auto b = io::load_npy(f.path);
  CHECK(b.as<double>()[1] == 8589934592.0);
  CHECK(b.as<std::int64_t>()[1] == std::int64_t(1) << 33);
  CHECK_THROWS_WITH(b.as<std::int32_t>(), Contains("does not fit in int32"));

  const std::vector<std::int32_t> neg = {-1};
  io::save_npy(f.path, neg.data(), {1});
  CHECK(io::load_npy(f.path).as<std::int64_t>()[0] == -1);
}

TEST_CASE("npy reads versions 2.0 and 3.0, native order, spacing variants") {
  temp_file f("ver.npy");
  const std::string data = le_f4({1.0f, 2.0f, 3.0f, 4.0f});
  write_raw(f.path, 2, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", data);
  auto a = io::load_npy(f.path);
  CHECK(a.shape == std::vector<index_t>{2, 2});
  CHECK(a.as<float>() == std::vector<float>{1, 2, 3, 4});

  write_raw(f.path, 3, 0, "{\"shape\":(4,),\"fortran_order\":False,\"descr\":\"=f4\"}", data);
  a = io::load_npy(f.path);
  CHECK(a.dtype == "<f4");
  CHECK(a.shape == std::vector<index_t>{4});
  CHECK(a.as<double>() == std::vector<double>{1, 2, 3, 4});

  write_raw(f.path, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (1L, 4L)}", data);
  CHECK(io::load_npy(f.path).shape == std::vector<index_t>{1, 4});
}

TEST_CASE("npy reads the files NumPy wrote for the golden data") {
  const std::string dir = std::string(ATTNKIT_TEST_DATA_DIR) + "/softmax/causal_gqa/";
  const auto q = io::load_npy(dir + "q.npy");
  CHECK(q.dtype == "<f8");
  CHECK(q.shape == std::vector<index_t>{2, 5, 4, 16});
  const auto lse = io::load_npy(dir + "lse.npy");
  CHECK(lse.shape == std::vector<index_t>{2, 4, 5});
  const auto cu =
      io::load_npy(std::string(ATTNKIT_TEST_DATA_DIR) + "/softmax/varlen/cu_seqlens_q.npy");
  CHECK(cu.dtype == "<i4");
  CHECK(cu.as<std::int64_t>() == std::vector<std::int64_t>{0, 3, 4, 10});
  // Saving what was loaded gives the same values back.
  temp_file f("golden.npy");
  const auto qv = q.as<double>();
  io::save_npy(f.path, qv.data(), q.shape);
  const auto q2 = io::load_npy(f.path);
  CHECK(q2.data == q.data);
}

TEST_CASE("npy rejects bad files with a message naming the file") {
  temp_file f("bad.npy");
  const std::string ok_data = le_f4({1.0f, 2.0f});

  SECTION("missing file") { check_load_error(f.path + ".does-not-exist", "cannot open file"); }
  SECTION("bad magic") {
    std::ofstream(f.path, std::ios::binary) << "PK\x03\x04 this is a zip, not an npy file";
    check_load_error(f.path, "bad magic");
  }
  SECTION("empty file") {
    std::ofstream(f.path, std::ios::binary).flush();
    check_load_error(f.path, "bad magic");
  }
  SECTION("unsupported version") {
    write_raw(f.path, 4, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", ok_data);
    check_load_error(f.path, "unsupported format version 4.0");
  }
  SECTION("fortran order") {
    write_raw(f.path, 1, 0, "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", ok_data);
    check_load_error(f.path, "fortran_order True");
  }
  SECTION("big-endian") {
    write_raw(f.path, 1, 0, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", ok_data);
    check_load_error(f.path, "big-endian dtype '>f4'");
  }
  SECTION("unknown dtypes") {
    for (const char* d : {"<c8", "|u1", "|b1", "<U3", "<f16", "O"}) {
      write_raw(f.path, 1, 0,
                std::string("{'descr': '") + d + "', 'fortran_order': False, 'shape': (2,), }",
                ok_data);
      check_load_error(f.path, std::string("unsupported dtype '") + d + "'");
    }
  }
  SECTION("structured dtype") {
    write_raw(f.path, 1, 0, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
              ok_data);
    check_load_error(f.path, "structured dtypes are not supported");
  }
  SECTION("truncated data") {
    write_raw(f.path, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", ok_data);
    check_load_error(f.path, "truncated data");
  }
  SECTION("truncated header") {
    std::string s("\x93NUMPY\x01\x00\x76\x00{'descr': '<f4'", 25);
    std::ofstream(f.path, std::ios::binary) << s;
    check_load_error(f.path, "truncated header");
  }
  SECTION("malformed headers") {
    write_raw(f.path, 1, 0, "{'descr': '<f4', 'shape': (2,), }", ok_data);
    check_load_error(f.path, "missing key 'fortran_order'");
    write_raw(f.path, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", ok_data);
    check_load_error(f.path, "malformed header");
    write_raw(f.path, 1, 0, "{'descr': '<f4', 'fortran_order': Nope, 'shape': (2,), }", ok_data);
    check_load_error(f.path, "expected True or False");
    write_raw(f.path, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
              ok_data);
    check_load_error(f.path, "unexpected key 'x'");
    write_raw(f.path, 1, 0, "not a dict", ok_data);
    check_load_error(f.path, "malformed header");
    // numpy rejects anything but padding after the dict
    write_raw(f.path, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk",
              ok_data);
    check_load_error(f.path, "unexpected text after the header dict");
  }
  SECTION("unwritable output") {
    const float x = 1;
    CHECK_THROWS_WITH(io::save_npy(f.path + ".missing-dir/o.npy", &x, {1}),
                      Contains(".missing-dir/o.npy") && Contains("cannot create file"));
  }
}
