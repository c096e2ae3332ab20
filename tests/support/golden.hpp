// SPDX-License-Identifier: Apache-2.0
// Loading golden .npy files (tests/data) into owned tensors.
#pragma once

#include <attnkit/io/npy.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace attnkit::test {

/// Loads an .npy file of rank R into an owned dense tensor of T (values converted through double,
/// so bf16/fp16 round to nearest even).
template <class T, std::size_t R>
owned_tensor<T, R> load_npy_tensor(const std::string& path) {
  const auto a = io::load_npy(path);
  REQUIRE(a.rank() == index_t(R));
  std::array<index_t, R> ext{};
  for (std::size_t r = 0; r < R; ++r) ext[r] = a.shape[r];
  owned_tensor<T, R> t(ext);
  const auto vals = a.as<double>();
  index_t i = 0;
  for_each_index<R>(
      ext, [&](const auto& idx) { at(t.view, idx) = from_compute<T>(vals[std::size_t(i++)]); });
  return t;
}

/// A golden case's files: tests/data/<family>/<case>/<name>.npy.
struct golden_case {
  std::string family, name;
  std::string path(const std::string& file) const {
    return std::string(ATTNKIT_TEST_DATA_DIR) + "/" + family + "/" + name + "/" + file + ".npy";
  }
  /// Tensor `file` of rank R as T.
  template <class T, std::size_t R>
  owned_tensor<T, R> load(const std::string& file) const {
    return load_npy_tensor<T, R>(path(file));
  }
  /// A 1-d parameter (A_log, dt_bias) as a vector of A.
  template <class A>
  std::vector<A> load_vector(const std::string& file) const {
    const auto vals = io::load_npy(path(file)).as<double>();
    return std::vector<A>(vals.begin(), vals.end());
  }
  /// cu_seqlens as int32.
  std::vector<std::int32_t> load_offsets(const std::string& file) const {
    return io::load_npy(path(file)).as<std::int32_t>();
  }
};

}  // namespace attnkit::test
