// SPDX-License-Identifier: Apache-2.0
// The small causal GQA problem shared by the ODR test's translation units.
#pragma once

#include <attnkit/attnkit.hpp>
#include <cmath>
#include <vector>

namespace odr {

struct problem {
  static constexpr attnkit::index_t B = 1, T = 37, Hq = 4, Hkv = 2, D = 24;
  std::vector<float> q, k, v;

  problem() : q(std::size_t(B * T * Hq * D)), k(std::size_t(B * T * Hkv * D)), v(k.size()) {
    for (std::size_t i = 0; i < q.size(); ++i) q[i] = float(std::sin(0.37 * double(i)));
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = float(std::cos(0.11 * double(i) + 1));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = float(std::sin(0.07 * double(i) - 2));
  }
  static attnkit::softmax_params params() {
    attnkit::softmax_params p;
    p.causal = true;
    p.softcap = 5.0;
    return p;
  }
  template <class E>
  static attnkit::tensor_view<E, 4> q_view(E* p) {
    return attnkit::make_view(p, B, T, Hq, D);
  }
  template <class E>
  static attnkit::tensor_view<E, 4> k_view(E* p) {
    return attnkit::make_view(p, B, T, Hkv, D);
  }
  template <class E>
  static attnkit::tensor_view<E, 4> v_view(E* p) {
    return attnkit::make_view(p, B, T, Hkv, D);
  }
  template <class E>
  static attnkit::tensor_view<E, 4> o_view(E* p) {
    return attnkit::make_view(p, B, T, Hq, D);
  }

  /// The fast kernel on the default executor (the same instantiation in every TU).
  std::vector<float> run_kernel() {
    std::vector<float> o(q.size());
    attnkit::standard_attention(params(), q_view(q.data()), k_view(k.data()), v_view(v.data()),
                                o_view(o.data()));
    return o;
  }
};

}  // namespace odr
