// SPDX-License-Identifier: Apache-2.0
// Loading golden .npy files (tests/data) into owned tensors.
#pragma once

#include <attnkit/io/npy.hpp>
#include <string>

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

}  // namespace attnkit::test
