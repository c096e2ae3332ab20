// SPDX-License-Identifier: Apache-2.0
// Helpers of the invisible-value tests: garbage (NaN, inf) planted where a row cannot see, and the
// row-by-row comparison with a clean run of the same kernel.
#pragma once

#include <cstring>
#include <limits>
#include <support/test_util.hpp>

namespace attnkit::test {

/// Garbage to plant: NaN keys and values, or +inf keys with -inf values.
struct garbage {
  double k, v;
};
inline constexpr garbage kGarbage[] = {
    {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()},
    {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}};

/// Sets every element of token t (batch row b) of x [B,T,...] to value.
template <class T, std::size_t R>
void plant(const tensor_view<T, R>& x, index_t b, index_t t, double value) {
  std::array<index_t, R> ext = x.extents();
  ext[0] = ext[1] = 1;
  for_each_index<R>(ext, [&](std::array<index_t, R> i) {
    i[0] = b;
    i[1] = t;
    at(x, i) = from_compute<T>(value);
  });
}

/// Compares two outputs [B,T,H,D] row by row: every row (b, t, h) with sees(b, t) false must be
/// bitwise equal to the clean run and finite; with `control`, at least one row that sees a
/// planted value must be non-finite (the garbage did reach where it is visible).
template <class T, class Sees>
void check_rows(const owned_tensor<T, 4>& clean, const owned_tensor<T, 4>& dirty, Sees sees,
                bool control = true) {
  const auto ext = clean.view.extents();
  index_t changed = 0, poisoned = 0, blind = 0;
  for (index_t b = 0; b < ext[0]; ++b)
    for (index_t t = 0; t < ext[1]; ++t)
      for (index_t h = 0; h < ext[2]; ++h) {
        bool same = true, finite = true;
        for (index_t d = 0; d < ext[3]; ++d) {
          const T x = clean.view(b, t, h, d), y = dirty.view(b, t, h, d);
          same &= std::memcmp(&x, &y, sizeof(T)) == 0;
          finite &= std::isfinite(to_compute<double>(y));
        }
        if (sees(b, t)) {
          poisoned += !finite;
        } else {
          ++blind;
          if (!same || !finite) {
            if (changed == 0)
              UNSCOPED_INFO("first changed row: b=" << b << " t=" << t << " h=" << h);
            ++changed;
          }
        }
      }
  CHECK(blind > 0);
  CHECK(changed == 0);
  if (control) CHECK(poisoned > 0);
}

}  // namespace attnkit::test
