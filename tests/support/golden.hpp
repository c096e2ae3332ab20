// SPDX-License-Identifier: Apache-2.0
// Loading golden .npy files (tests/data) into owned tensors.
#pragma once

#include <attnkit/io/npy.hpp>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "test_util.hpp"

namespace attnkit::test {

template <class P, class = void>
struct has_value_heads : std::false_type {};
template <class P>
struct has_value_heads<P, std::void_t<decltype(std::declval<P&>().HV)>> : std::true_type {};

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

/// Sets a recurrent-family test problem's dims from its loaded tensors: B, T, H, K of q, V (and
/// HV when the problem has value heads of its own) of v, N of h0 [N, ...].
template <class P, class H0>
void dims_from_tensors(P& pr, const H0& h0) {
  pr.B = pr.q.view.extent(0);
  pr.T = pr.q.view.extent(1);
  pr.H = pr.q.view.extent(2);
  pr.K = pr.q.view.extent(3);
  if constexpr (has_value_heads<P>::value) pr.HV = pr.v.view.extent(2);
  pr.V = pr.v.view.extent(3);
  pr.N = h0.view.extent(0);
}

/// A result against float64 golden data: finite, and relative RMS <= tol (rel_rms, the float32
/// check) or max-abs error <= tol * max|golden| (float64).
template <class X, class Y, std::size_t R>
void check_golden(const char* what, const tensor_view<X, R>& out, const tensor_view<Y, R>& ref,
                  double tol, bool rel_rms) {
  const auto e = compare(out, ref);
  INFO(what << ": max_abs=" << e.max_abs << " max_ref=" << e.max_ref << " rel_rms=" << e.rel_rms);
  CHECK(e.finite);
  if (rel_rms)
    CHECK(e.rel_rms <= tol);
  else
    CHECK(e.max_abs <= tol * e.max_ref);
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
