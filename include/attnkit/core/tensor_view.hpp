// SPDX-License-Identifier: Apache-2.0
// tensor_view<T, Rank>: a non-owning strided view over caller memory (the std::mdspan
// layout_stride model), with slicing helpers, checks and Eigen interop.
#pragma once

#include "warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <Eigen/Core>
#include <array>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>

#include "config.hpp"
#include "error.hpp"

namespace attnkit {

/// A rank-`Rank` view: element (i0, ..., i{R-1}) lives at data()[sum_r i_r * stride(r)].
/// Strides are in elements and may be any value (padded rows, head-first, slices of a bigger
/// buffer). `T` may be const. A default-constructed view is "absent" (data() == nullptr), which is
/// how optional tensors are passed.
template <class T, std::size_t Rank>
class tensor_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using index_type = index_t;
  using extents_type = std::array<index_t, Rank>;

  tensor_view() : data_(nullptr), extents_{}, strides_{} {}
  tensor_view(T* data, const extents_type& extents, const extents_type& strides)
      : data_(data), extents_(extents), strides_(strides) {}
  /// Dense row-major (C order) view.
  tensor_view(T* data, const extents_type& extents) : data_(data), extents_(extents) {
    index_t s = 1;
    for (std::size_t r = Rank; r-- > 0;) {
      strides_[r] = s;
      s *= extents_[r];
    }
  }
  /// A view of non-const elements converts to a view of const elements.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  tensor_view(const tensor_view<U, Rank>& other)
      : data_(other.data()), extents_(other.extents()), strides_(other.strides()) {}

  static constexpr std::size_t rank() { return Rank; }
  index_t extent(std::size_t r) const { return extents_[r]; }
  index_t stride(std::size_t r) const { return strides_[r]; }
  const extents_type& extents() const { return extents_; }
  const extents_type& strides() const { return strides_; }
  T* data() const { return data_; }
  /// True when the view refers to memory (optional tensors are passed as absent views).
  bool present() const { return data_ != nullptr; }

  /// Number of elements.
  index_t size() const {
    index_t n = 1;
    for (auto e : extents_) n *= e;
    return n;
  }
  bool empty() const { return size() == 0; }

  /// Last dimension has stride 1 (or extent <= 1): the condition for SIMD fast paths.
  bool is_inner_contiguous() const {
    if constexpr (Rank == 0)
      return true;
    else
      return extents_[Rank - 1] <= 1 || strides_[Rank - 1] == 1;
  }
  /// Dense row-major with no padding.
  bool is_contiguous() const { return *this == tensor_view(data_, extents_) || size() <= 1; }

  template <class... I>
  T& operator()(I... idx) const {
    static_assert(sizeof...(I) == Rank, "attnkit::tensor_view: wrong number of indices");
    return data_[offset(std::array<index_t, Rank>{index_t(idx)...})];
  }
  index_t offset(const std::array<index_t, Rank>& idx) const {
    index_t o = 0;
    for (std::size_t r = 0; r < Rank; ++r) o += idx[r] * strides_[r];
    return o;
  }

  friend bool operator==(const tensor_view& a, const tensor_view& b) {
    return a.data_ == b.data_ && a.extents_ == b.extents_ && a.strides_ == b.strides_;
  }

 private:
  T* data_;
  extents_type extents_;
  extents_type strides_;
};

template <class T, std::size_t R>
using cview = tensor_view<const T, R>;

/// Dense row-major view over `data` with the given extents.
template <class T, class... E>
tensor_view<T, sizeof...(E)> make_view(T* data, E... extents) {
  return tensor_view<T, sizeof...(E)>(data, {index_t(extents)...});
}

/// Same rank, indices [begin, end) on `axis`.
template <class T, std::size_t R>
tensor_view<T, R> slice(const tensor_view<T, R>& v, std::size_t axis, index_t begin, index_t end) {
  detail::require(axis < R && 0 <= begin && begin <= end && end <= v.extent(axis), "slice: range [",
                  begin, ", ", end, ") out of bounds for axis ", axis, " of extent ",
                  (axis < R ? v.extent(axis) : 0));
  auto ext = v.extents();
  ext[axis] = end - begin;
  return tensor_view<T, R>(v.data() ? v.data() + begin * v.stride(axis) : nullptr, ext,
                           v.strides());
}

/// Rank R-1 view with `axis` fixed at `index` (mdspan submdspan with an integer, Eigen chip).
template <class T, std::size_t R>
tensor_view<T, R - 1> subview(const tensor_view<T, R>& v, std::size_t axis, index_t index) {
  static_assert(R >= 1, "subview of a rank-0 view");
  detail::require(axis < R && 0 <= index && index < v.extent(axis), "subview: index ", index,
                  " out of bounds for axis ", axis, " of extent ", (axis < R ? v.extent(axis) : 0));
  std::array<index_t, R - 1> ext{}, str{};
  for (std::size_t r = 0, o = 0; r < R; ++r) {
    if (r == axis) continue;
    ext[o] = v.extent(r);
    str[o] = v.stride(r);
    ++o;
  }
  return tensor_view<T, R - 1>(v.data() + index * v.stride(axis), ext, str);
}

/// Swaps two axes (a strided transpose, no copy); e.g. [B,T,H,D] <-> [B,H,T,D].
template <class T, std::size_t R>
tensor_view<T, R> transpose(const tensor_view<T, R>& v, std::size_t a, std::size_t b) {
  auto ext = v.extents();
  auto str = v.strides();
  std::swap(ext[a], ext[b]);
  std::swap(str[a], str[b]);
  return tensor_view<T, R>(v.data(), ext, str);
}

/// Eigen interop: a rank-2 view with inner stride 1 as a row-major Eigen::Map.
template <class T>
using eigen_row_map = Eigen::Map<
    std::conditional_t<std::is_const_v<T>,
                       const Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic,
                                           Eigen::RowMajor>,
                       Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>,
    Eigen::Unaligned, Eigen::OuterStride<>>;

template <class T>
eigen_row_map<T> as_eigen(const tensor_view<T, 2>& v) {
  detail::require(v.is_inner_contiguous(), "as_eigen: dim 1 stride must be 1, got ", v.stride(1));
  return eigen_row_map<T>(
      v.data(), v.extent(0), v.extent(1),
      Eigen::OuterStride<>(v.extent(1) <= 1 && v.extent(0) <= 1 ? std::max<index_t>(v.extent(1), 1)
                                                                : v.stride(0)));
}

/// A row-major Eigen matrix (or Map) as a rank-2 view.
template <class Derived>
auto view_of(Eigen::PlainObjectBase<Derived>& m) {
  static_assert(Derived::IsRowMajor || Derived::ColsAtCompileTime == 1,
                "view_of: use a RowMajor Eigen matrix");
  using S = typename Derived::Scalar;
  return tensor_view<S, 2>(m.data(), {m.rows(), m.cols()}, {m.cols(), 1});
}

namespace detail {

/// Describes a tensor for error messages: name plus the axis names of its documented layout.
struct tensor_desc {
  const char* fn;    // entry point, e.g. "standard_attention"
  const char* name;  // tensor name, e.g. "k"
  const char* axes;  // comma-separated axis names, e.g. "B,Tk,Hkv,Dk"
};

inline std::string axis_name(const char* axes, std::size_t r) {
  std::string s(axes);
  std::size_t start = 0;
  for (std::size_t i = 0; i < r; ++i) {
    start = s.find(',', start);
    if (start == std::string::npos) return "?";
    ++start;
  }
  return s.substr(start, s.find(',', start) - start);
}

/// An expected extent (< 0: any value) and, for the message, where it came from ("Hkv of k").
struct dim {
  index_t value = -1;
  const char* from = nullptr;
  constexpr dim(index_t v) : value(v) {}  // NOLINT(google-explicit-constructor): plain extents
  constexpr dim(index_t v, const char* f) : value(v), from(f) {}
};

/// Checks extent(r) == expected (expected < 0: any value).
template <class T, std::size_t R>
void check_extent(const tensor_desc& d, const tensor_view<T, R>& v, std::size_t r, dim expected) {
  if (expected.value >= 0 && v.extent(r) != expected.value) {
    const std::string from = expected.from ? std::string(" (") + expected.from + ")" : "";
    fail(d.fn, ": tensor '", d.name, "' [", d.axes, "] dim ", r, " (", axis_name(d.axes, r),
         "): expected ", expected.value, from, ", got ", v.extent(r));
  }
}

/// Checks presence, every extent (-1 = free), non-negative extents, and that no two distinct
/// elements alias through a zero or negative stride on a non-trivial dimension.
template <class T, std::size_t R>
void check_tensor(const tensor_desc& d, const tensor_view<T, R>& v,
                  const std::array<dim, R>& expected) {
  if (!v.present() && v.size() != 0) fail(d.fn, ": tensor '", d.name, "' is missing (null data)");
  for (std::size_t r = 0; r < R; ++r) {
    if (v.extent(r) < 0)
      fail(d.fn, ": tensor '", d.name, "' dim ", r, " (", axis_name(d.axes, r),
           "): negative extent ", v.extent(r));
    check_extent(d, v, r, expected[r]);
  }
  for (std::size_t r = 0; r < R; ++r)
    if (v.extent(r) == 0) return;  // empty: nothing is addressed, whatever the other extents
  // The element count and the addressed span (in bytes) must fit in index_t.
  index_t count = 1, span = 0;
  bool overflow = false;
  for (std::size_t r = 0; r < R; ++r) {
    index_t step = 0;
    overflow |= __builtin_mul_overflow(count, v.extent(r), &count);
    overflow |= __builtin_mul_overflow(v.extent(r) - 1,
                                       v.stride(r) < 0 ? -v.stride(r) : v.stride(r), &step);
    overflow |= __builtin_add_overflow(span, step, &span);
  }
  overflow |= __builtin_mul_overflow(span + 1, index_t(sizeof(T)), &span);
  if (overflow) {
    std::string ext;
    for (std::size_t r = 0; r < R; ++r) {
      if (r) ext += ',';
      ext += std::to_string(v.extent(r));
    }
    fail(d.fn, ": tensor '", d.name, "' [", d.axes, "] with extents (", ext,
         ") cannot be addressed (its size overflows)");
  }
  for (std::size_t r = 0; r < R; ++r)
    if (v.extent(r) > 1 && v.stride(r) <= 0)
      fail(d.fn, ": tensor '", d.name, "' dim ", r, " (", axis_name(d.axes, r),
           "): stride must be positive, got ", v.stride(r));
}

/// Output tensors must not write one element twice: strides must separate every element. Checked
/// by sorting dims by stride and requiring stride[next] >= stride[prev] * extent[prev].
template <class T, std::size_t R>
void check_no_self_overlap(const tensor_desc& d, const tensor_view<T, R>& v) {
  if (v.size() == 0) return;
  std::array<std::size_t, R> order{};
  for (std::size_t r = 0; r < R; ++r) order[r] = r;
  for (std::size_t i = 0; i < R; ++i)
    for (std::size_t j = i + 1; j < R; ++j)
      if (v.stride(order[j]) < v.stride(order[i])) std::swap(order[i], order[j]);
  index_t span = 1;
  for (std::size_t i = 0; i < R; ++i) {
    std::size_t r = order[i];
    if (v.extent(r) <= 1) continue;
    if (v.stride(r) < span)
      fail(d.fn, ": output tensor '", d.name, "' dim ", r, " (", axis_name(d.axes, r), "): stride ",
           v.stride(r), " makes elements overlap (needs >= ", span, ")");
    span = v.stride(r) * v.extent(r);
  }
}

/// An output must not share memory with an input (the documented in-place forms, such as
/// ht == h0, have their own check): the two views' byte ranges must be disjoint. Absent or empty
/// views pass.
template <class T, std::size_t R, class U, std::size_t S>
void check_disjoint(const char* fn, const char* out_name, const tensor_view<T, R>& out,
                    const char* in_name, const tensor_view<U, S>& in) {
  if (!out.present() || !in.present() || out.size() == 0 || in.size() == 0) return;
  const auto range = [](const auto& v) {
    using E = std::remove_pointer_t<decltype(v.data())>;
    index_t span = 0;
    for (std::size_t r = 0; r < v.extents().size(); ++r) span += (v.extent(r) - 1) * v.stride(r);
    const auto* lo = reinterpret_cast<const unsigned char*>(v.data());
    return std::make_pair(lo, lo + (span + 1) * index_t(sizeof(E)));
  };
  const auto a = range(out), b = range(in);
  if (std::less<const unsigned char*>()(a.first, b.second) &&
      std::less<const unsigned char*>()(b.first, a.second))
    fail(fn, ": output tensor '", out_name, "' overlaps tensor '", in_name,
         "' (an output must not share memory with another tensor of the call)");
}

template <class T, std::size_t R>
void require_inner_contiguous(const tensor_desc& d, const tensor_view<T, R>& v) {
  if (!v.is_inner_contiguous())
    fail(d.fn, ": tensor '", d.name, "' dim ", R - 1, " (", axis_name(d.axes, R - 1),
         "): the last dimension must have stride 1, got ", v.stride(R - 1),
         " (copy it to a contiguous buffer or transpose the layout)");
}

}  // namespace detail
}  // namespace attnkit

#include "warnings_pop.hpp"
