// SPDX-License-Identifier: Apache-2.0
// Workspace sizes of a call, computed before any work starts: every buffer's element count and
// byte size is an overflow-checked product (a size that cannot be addressed is refused, naming the
// buffer), and running out of memory while the call allocates becomes an attnkit::error naming
// the call and the workspace it needed, never a bare std::bad_alloc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <new>
#include <stdexcept>
#include <string>

#include "error.hpp"
#include "types.hpp"

namespace attnkit {
namespace detail {

class workspace_plan {
 public:
  explicit workspace_plan(const char* fn) : fn_(fn) {}

  /// Adds `copies` buffers of prod(dims) elements of elem_size bytes (copies: one per thread, per
  /// split, ...). Refuses sizes past PTRDIFF_MAX bytes, naming the buffer and its dims.
  workspace_plan& add(const char* name, std::initializer_list<index_t> dims, std::size_t elem_size,
                      index_t copies = 1) {
    std::uint64_t n = std::uint64_t(elem_size);
    bool overflow = copies < 0;
    for (index_t d : dims) {
      overflow |= d < 0;
      overflow |= __builtin_mul_overflow(n, std::uint64_t(d < 0 ? 0 : d), &n);
    }
    overflow |= __builtin_mul_overflow(n, std::uint64_t(copies < 0 ? 0 : copies), &n);
    overflow |= n > std::uint64_t(PTRDIFF_MAX);
    if (overflow) {
      std::string shape;
      for (index_t d : dims) {
        if (!shape.empty()) shape += " x ";
        shape += std::to_string(d);
      }
      fail(fn_, ": workspace buffer '", name, "' of ", shape, " elements (", elem_size,
           " bytes each, ", copies, " copies) cannot be addressed (its size overflows)");
    }
    if (n > largest_bytes_) largest_bytes_ = n, largest_ = name;
    if (__builtin_add_overflow(bytes_, n, &bytes_) || bytes_ > std::uint64_t(PTRDIFF_MAX))
      fail(fn_, ": the workspace (", name, " and the buffers before it) cannot be addressed");
    return *this;
  }

  /// Total bytes of the buffers added.
  std::uint64_t bytes() const { return bytes_; }

  /// Runs f (the call's work); an allocation failure inside it is reported as an attnkit::error.
  template <class F>
  void run(F&& f) const {
    try {
      f();
    } catch (const std::bad_alloc&) {
      out_of_memory();
    } catch (const std::length_error&) {
      out_of_memory();
    }
  }

 private:
  [[noreturn]] void out_of_memory() const {
    fail(fn_, ": out of memory allocating the workspace (", bytes_, " bytes; largest buffer '",
         largest_, "': ", largest_bytes_, " bytes)");
  }
  const char* fn_;
  const char* largest_ = "";
  std::uint64_t bytes_ = 0, largest_bytes_ = 0;
};

}  // namespace detail
}  // namespace attnkit
