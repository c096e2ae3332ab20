// SPDX-License-Identifier: Apache-2.0
// Test helpers shared by every test file: owned tensors with padded/permuted layouts, random
// fills, and error metrics.
#pragma once

#include <algorithm>
#include <array>
#include <attnkit/attnkit.hpp>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace attnkit::test {

/// True in AddressSanitizer builds: the slowest identity sweeps skip their reference-path cases
/// there (plain loops, no kernel memory access to check); the Release trees run every case.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

/// An owned tensor whose view may be padded (extra elements after each row of the last dim, and
/// `pad_outer` after each outer row) or permuted (memory order given by `order`, e.g. {0,2,1,3}
/// stores [B,T,H,D] head-first). Padding is filled with NaN so reads of it show up in results.
template <class T, std::size_t R>
struct owned_tensor {
  using value_type = T;
  std::vector<T> buf;
  tensor_view<T, R> view;

  owned_tensor() = default;
  explicit owned_tensor(const std::array<index_t, R>& ext, index_t pad_inner = 0,
                        std::array<std::size_t, R> order = identity_order()) {
    // memory order: order[0] outermost ... order[R-1] innermost
    std::array<index_t, R> str{};
    index_t s = 1;
    for (std::size_t i = R; i-- > 0;) {
      const std::size_t r = order[i];
      str[r] = s;
      s *= ext[r] + (i == R - 1 ? pad_inner : 0);
    }
    const index_t total = std::max<index_t>(s, 1);
    buf.assign(std::size_t(total), nan_value());
    view = tensor_view<T, R>(buf.data(), ext, str);
  }
  static std::array<std::size_t, R> identity_order() {
    std::array<std::size_t, R> o{};
    for (std::size_t i = 0; i < R; ++i) o[i] = i;
    return o;
  }
  static T nan_value() {
    if constexpr (std::is_floating_point_v<T>)
      return std::numeric_limits<T>::quiet_NaN();
    else if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, fp16>)
      return T(std::numeric_limits<float>::quiet_NaN());
    else
      return T(0);
  }
  cview<T, R> cv() const { return view; }
  tensor_view<T, R> v() const { return view; }
  index_t size() const { return view.size(); }
};

/// A copy with its own buffer (same layout).
template <class T, std::size_t R>
owned_tensor<T, R> clone(const owned_tensor<T, R>& x) {
  owned_tensor<T, R> c = x;
  c.view = tensor_view<T, R>(c.buf.data(), x.view.extents(), x.view.strides());
  return c;
}

/// Calls f(idx) for every multi-index of the extents.
template <std::size_t R, class F>
void for_each_index(const std::array<index_t, R>& ext, F f) {
  for (auto e : ext)
    if (e == 0) return;
  std::array<index_t, R> idx{};
  for (;;) {
    f(idx);
    std::size_t r = R;
    while (r-- > 0) {
      if (++idx[r] < ext[r]) break;
      idx[r] = 0;
      if (r == 0) return;
    }
    if (R == 0) return;
  }
}

template <class T, std::size_t R>
T& at(const tensor_view<T, R>& v, const std::array<index_t, R>& idx) {
  return v.data()[v.offset(idx)];
}

/// Fills the logical elements with N(mean, sd) (rounded to T).
template <class T, std::size_t R>
void fill_normal(const tensor_view<T, R>& v, std::mt19937_64& rng, double sd = 1.0,
                 double mean = 0.0) {
  std::normal_distribution<double> nd(mean, sd);
  for_each_index<R>(v.extents(), [&](const auto& i) { at(v, i) = from_compute<T>(nd(rng)); });
}
template <class T, std::size_t R>
void fill_uniform(const tensor_view<T, R>& v, std::mt19937_64& rng, double lo, double hi) {
  std::uniform_real_distribution<double> ud(lo, hi);
  for_each_index<R>(v.extents(), [&](const auto& i) { at(v, i) = from_compute<T>(ud(rng)); });
}

/// Copies logical elements (any layouts, converting types).
template <class S, class D, std::size_t R>
void copy(const tensor_view<S, R>& src, const tensor_view<D, R>& dst) {
  for_each_index<R>(src.extents(), [&](const auto& i) {
    at(dst, i) = from_compute<std::remove_const_t<D>>(to_compute<double>(at(src, i)));
  });
}

/// Every element of the buffer outside the logical view is still NaN (nothing written outside).
template <class T, std::size_t R>
bool padding_untouched(const owned_tensor<T, R>& t) {
  std::vector<char> logical(t.buf.size(), 0);
  for_each_index<R>(t.view.extents(),
                    [&](const auto& i) { logical[std::size_t(t.view.offset(i))] = 1; });
  for (std::size_t i = 0; i < t.buf.size(); ++i)
    if (!logical[i] && !std::isnan(to_compute<double>(t.buf[i]))) return false;
  return true;
}

/// Error metrics over logical elements: max |a-b|, max |b|, relative RMS ||a-b|| / ||b||.
struct error_stats {
  double max_abs = 0, max_ref = 0, rel_rms = 0;
  bool finite = true;     // a has no NaN/inf where b is finite
  bool inf_match = true;  // infinities in b appear identically in a
};
template <class A, class B, std::size_t R>
error_stats compare(const tensor_view<A, R>& a, const tensor_view<B, R>& b) {
  error_stats e;
  double num = 0, den = 0;
  for_each_index<R>(a.extents(), [&](const auto& i) {
    const double x = to_compute<double>(at(a, i)), y = to_compute<double>(at(b, i));
    if (std::isinf(y)) {
      if (x != y) e.inf_match = false;
      return;
    }
    if (!std::isfinite(x)) {
      e.finite = false;
      return;
    }
    e.max_abs = std::max(e.max_abs, std::abs(x - y));
    e.max_ref = std::max(e.max_ref, std::abs(y));
    num += (x - y) * (x - y);
    den += y * y;
  });
  e.rel_rms = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return e;
}

/// Asserts a matches reference b: finite, same infinities, and max-abs error <= tol * max(1,
/// max|b|).
#define ATTNKIT_CHECK_CLOSE(a, b, tol)                                                      \
  do {                                                                                      \
    const auto _e = ::attnkit::test::compare((a), (b));                                     \
    INFO("max_abs=" << _e.max_abs << " max_ref=" << _e.max_ref << " rel_rms=" << _e.rel_rms \
                    << " tol=" << (tol));                                                   \
    CHECK(_e.finite);                                                                       \
    CHECK(_e.inf_match);                                                                    \
    CHECK(_e.max_abs <= (tol)*std::max(1.0, _e.max_ref));                                   \
  } while (0)

/// Tolerances: float64 kernels vs the double reference, float32, and 16-bit storage.
template <class T>
constexpr double tolerance() {
  if constexpr (std::is_same_v<T, double>)
    return 1e-10;
  else if constexpr (std::is_same_v<T, float>)
    return 2e-5;
  else
    return 2e-2;
}

/// A family's params (linear_params, delta_params) with the algorithm set.
template <class Params>
Params with_algo(algorithm a) {
  Params p;
  p.algo = a;
  return p;
}

/// The output and final state of one recurrent-family call.
template <class E>
struct recurrent_result {
  owned_tensor<E, 4> o;
  owned_tensor<accum_t<E>, 4> ht;
};
/// Runs f(o, state) with state = {in.h0, a fresh ht}; `in` has make_o(), make_state() and h0.
template <class In, class F>
auto run_with_state(const In& in, F f) {
  using E = typename decltype(in.make_o())::value_type;
  recurrent_result<E> r{in.make_o(), in.make_state()};
  recurrent_state<accum_t<E>> s{in.h0.cv(), r.ht.v(), {}};
  f(r.o.v(), s);
  return r;
}

/// Scales every row of x [B,T,H,K] to unit L2 norm (the delta rule's stability condition).
template <class E>
void normalise_rows(const tensor_view<E, 4>& x) {
  const auto ext = x.extents();
  for (index_t b = 0; b < ext[0]; ++b)
    for (index_t t = 0; t < ext[1]; ++t)
      for (index_t h = 0; h < ext[2]; ++h) {
        double ss = 0;
        for (index_t c = 0; c < ext[3]; ++c) ss += std::pow(to_compute<double>(x(b, t, h, c)), 2);
        for (index_t c = 0; c < ext[3]; ++c)
          x(b, t, h, c) = from_compute<E>(to_compute<double>(x(b, t, h, c)) / std::sqrt(ss));
      }
}

/// The two precisions an identity or sweep runs in.
enum class precision { f64, f32 };
inline const char* name_of(precision p) { return p == precision::f64 ? "float64" : "float32"; }

/// Identities between variants: float64 1e-12 relative to max|b|; float32 the usual tolerance,
/// relative to max(1, max|b|) as ATTNKIT_CHECK_CLOSE.
template <class E>
constexpr double identity_tol() {
  return std::is_same_v<E, double> ? 1e-12 : tolerance<float>();
}
template <class E>
double tol_scale(double max_ref) {
  return std::is_same_v<E, double> ? max_ref : std::max(1.0, max_ref);
}

/// a == b within tol (scaled as tol_scale), same infinities, and b is not trivially zero.
template <class E, class X, class Y, std::size_t R>
void check_identity(const char* what, const tensor_view<X, R>& a, const tensor_view<Y, R>& b,
                    double tol = identity_tol<E>()) {
  const auto e = compare(a, b);
  INFO(what << ": max_abs=" << e.max_abs << " max_ref=" << e.max_ref << " rel_rms=" << e.rel_rms
            << " tol=" << tol);
  CHECK(e.finite);
  CHECK(e.inf_match);
  CHECK(e.max_ref > 1e-4);  // not a trivially zero result
  CHECK(e.max_abs <= tol * tol_scale<E>(e.max_ref));
}

/// Negative control: a and b differ by more than 10x the tolerance (so the identity can fail).
template <class E, class X, class Y, std::size_t R>
void check_differs(const char* what, const tensor_view<X, R>& a, const tensor_view<Y, R>& b,
                   double tol = identity_tol<E>()) {
  const auto e = compare(a, b);
  INFO(what << " (negative control): max_abs=" << e.max_abs << " max_ref=" << e.max_ref);
  CHECK(e.max_abs > 10 * tol * tol_scale<E>(e.max_ref));
}

/// A paged KV cache store with its pages handed out in a scrambled order (3 spare pages).
template <class T>
struct paged_store {
  owned_tensor<T, 4> kp, vp;
  std::vector<std::int32_t> table;
  index_t max_pages;
  paged_store(index_t B, index_t capacity, index_t P, index_t Hkv, index_t Dk, index_t Dv)
      : max_pages((capacity + P - 1) / P) {
    const index_t np = B * max_pages + 3;
    kp = owned_tensor<T, 4>({np, P, Hkv, Dk});
    vp = owned_tensor<T, 4>({np, P, Hkv, Dv});
    std::vector<std::int32_t> ids(static_cast<std::size_t>(np));
    std::iota(ids.begin(), ids.end(), 0);
    std::mt19937 rng(17);
    std::shuffle(ids.begin(), ids.end(), rng);
    table.assign(ids.begin(), ids.begin() + B * max_pages);
  }
  cview<std::int32_t, 2> block_table() const {
    return make_view(table.data(), index_t(table.size()) / max_pages, max_pages);
  }
  paged_kv_cache<T> cache(const std::vector<std::int32_t>& seqlens) const {
    return {kp.v(), vp.v(), block_table(), make_view(seqlens.data(), index_t(seqlens.size()))};
  }
};

}  // namespace attnkit::test
