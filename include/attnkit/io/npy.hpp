// SPDX-License-Identifier: Apache-2.0
// Minimal NumPy .npy reader and writer: format versions 1.0 to 3.0, little-endian, C order.
// Used by attnkit-run and the golden-data tests to exchange tensors with NumPy / PyTorch.
//
//   auto a = attnkit::io::load_npy("q.npy");          // a.shape, a.dtype ("<f4", ...), raw bytes
//   std::vector<float> q = a.as<float>();              // converted element values
//   attnkit::io::save_npy("o.npy", o.data(), {B, T, H, D});
//
// Supported dtypes: "<f2" (float16), "<f4", "<f8", "<i4", "<i8", "<u2" (uint16; also how bf16
// tensors are stored, as their raw bits). Every problem throws attnkit::error naming the file.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/types.hpp"

namespace attnkit::io {

/// A loaded .npy array: its shape, dtype string (normalised to little-endian '<' form) and the raw
/// little-endian element bytes in C order.
struct npy_array {
  std::vector<index_t> shape;
  std::string dtype;
  std::vector<char> data;

  /// Number of elements (product of the shape; 1 for a 0-d array; 0 when any extent is 0, however
  /// large the others). Throws attnkit::error if the product overflows.
  index_t size() const {
    for (auto e : shape)
      if (e == 0) return 0;
    index_t n = 1;
    for (auto e : shape)
      if (e < 0 || __builtin_mul_overflow(n, e, &n))
        attnkit::detail::fail("npy: an array of shape with ", shape.size(),
                              " dims has an element count that cannot be addressed");
    return n;
  }
  index_t rank() const { return index_t(shape.size()); }

  /// The elements converted to T. Float dtypes convert to any arithmetic T (or bf16/fp16); integer
  /// dtypes convert to any arithmetic T. "<u2" to bf16 and "<f2" to fp16 reinterpret the bits.
  template <class T>
  std::vector<T> as() const;
};

namespace detail {

/// Little-endian byte access, independent of the host byte order.
template <class U>
inline U read_le_uint(const char* p) {
  U u = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) u |= U(static_cast<unsigned char>(p[i])) << (8 * i);
  return u;
}
template <class U>
inline void write_le_uint(char* p, U u) {
  for (std::size_t i = 0; i < sizeof(U); ++i) p[i] = char(static_cast<unsigned char>(u >> (8 * i)));
}

/// Element size of a supported (normalised) dtype, 0 if unsupported.
inline std::size_t npy_itemsize(const std::string& d) {
  if (d == "<f2" || d == "<u2") return 2;
  if (d == "<f4" || d == "<i4") return 4;
  if (d == "<f8" || d == "<i8") return 8;
  return 0;
}

template <class T>
inline const char* npy_dtype_of() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>)
    return "<f4";
  else if constexpr (std::is_same_v<U, double>)
    return "<f8";
  else if constexpr (std::is_same_v<U, std::int32_t>)
    return "<i4";
  else if constexpr (std::is_same_v<U, std::int64_t>)
    return "<i8";
  else if constexpr (std::is_same_v<U, std::uint16_t> || std::is_same_v<U, bf16>)
    return "<u2";
  else if constexpr (std::is_same_v<U, fp16>)
    return "<f2";
  else
    static_assert(sizeof(U) == 0, "attnkit::io::save_npy: unsupported element type");
}

/// Parser of the header dict, a Python literal such as
/// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class npy_header_parser {
 public:
  npy_header_parser(const std::string& path, const std::string& text) : path_(path), s_(text) {}

  void parse(std::string& descr, bool& fortran, std::vector<index_t>& shape) {
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    expect('{');
    for (;;) {
      skip_ws();
      if (peek() == '}') break;
      const std::string key = parse_string();
      expect(':');
      if (key == "descr") {
        skip_ws();
        if (peek() != '\'' && peek() != '"')
          fail_header("'descr' is not a simple dtype string (structured dtypes are not supported)");
        descr = parse_string();
        seen_descr = true;
      } else if (key == "fortran_order") {
        fortran = parse_bool();
        seen_fortran = true;
      } else if (key == "shape") {
        shape = parse_shape();
        seen_shape = true;
      } else {
        fail_header("unexpected key '" + key + "'");
      }
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() == '}') break;
      fail_header("expected ',' or '}'");
    }
    ++i_;
    skip_ws();  // numpy pads the header with spaces up to a '\n'; anything else is malformed
    if (i_ != s_.size()) fail_header("unexpected text after the header dict");
    if (!seen_descr || !seen_fortran || !seen_shape)
      fail_header(std::string("missing key '") +
                  (!seen_descr     ? "descr"
                   : !seen_fortran ? "fortran_order"
                                   : "shape") +
                  "'");
  }

 private:
  [[noreturn]] void fail_header(const std::string& what) const {
    attnkit::detail::fail("npy: '", path_, "': malformed header (", what, " at offset ", i_,
                          "): ", s_);
  }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void expect(char c) {
    skip_ws();
    if (peek() != c) fail_header(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string parse_string() {
    skip_ws();
    const char q = peek();
    if (q != '\'' && q != '"') fail_header("expected a string");
    const std::size_t start = ++i_;
    while (i_ < s_.size() && s_[i_] != q) ++i_;
    if (i_ >= s_.size()) fail_header("unterminated string");
    return s_.substr(start, i_++ - start);
  }
  bool parse_bool() {
    skip_ws();
    if (s_.compare(i_, 4, "True") == 0) {
      i_ += 4;
      return true;
    }
    if (s_.compare(i_, 5, "False") == 0) {
      i_ += 5;
      return false;
    }
    fail_header("expected True or False");
  }
  std::vector<index_t> parse_shape() {
    std::vector<index_t> shape;
    expect('(');
    for (;;) {
      skip_ws();
      if (peek() == ')') break;
      if (peek() < '0' || peek() > '9') fail_header("expected a non-negative integer dimension");
      index_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        const int dig = peek() - '0';
        if (v > (std::numeric_limits<index_t>::max() - dig) / 10)
          fail_header("dimension too large");
        v = v * 10 + dig;
        ++i_;
      }
      while (peek() == 'L') ++i_;  // Python 2 long suffix
      shape.push_back(v);
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() != ')') fail_header("expected ',' or ')' in shape");
    }
    ++i_;
    return shape;
  }

  const std::string& path_;
  const std::string& s_;
  std::size_t i_ = 0;
};

/// Converts one element; float to integer and out-of-range integer conversions throw.
template <class T, class S>
inline T npy_convert(S x, const std::string& dtype) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, fp16>) {
    return T(static_cast<float>(x));
  } else if constexpr (std::is_integral_v<T> && std::is_floating_point_v<S>) {
    attnkit::detail::fail("npy: cannot convert float dtype '", dtype, "' to ", type_name<T>());
  } else if constexpr (std::is_integral_v<T>) {
    bool fits = true;
    if constexpr (std::is_signed_v<S>) {
      if (x < 0)
        fits =
            std::is_signed_v<T> && std::intmax_t(x) >= std::intmax_t(std::numeric_limits<T>::min());
      else
        fits = std::uintmax_t(x) <= std::uintmax_t(std::numeric_limits<T>::max());
    } else {
      fits = std::uintmax_t(x) <= std::uintmax_t(std::numeric_limits<T>::max());
    }
    if (!fits)
      attnkit::detail::fail("npy: value ", x, " of dtype '", dtype, "' does not fit in ",
                            type_name<T>());
    return static_cast<T>(x);
  } else {
    return static_cast<T>(x);
  }
}

}  // namespace detail

template <class T>
std::vector<T> npy_array::as() const {
  using detail::read_le_uint;
  const index_t n = size();
  // the data must hold the shape's elements before anything is allocated for them
  const std::size_t itemsize = detail::npy_itemsize(dtype);
  attnkit::detail::require(itemsize == 0 || std::size_t(n) <= data.size() / itemsize,
                           "npy: array of dtype '", dtype, "' holds ", data.size(),
                           " bytes, fewer than its shape needs");
  std::vector<T> out(itemsize == 0 ? 0 : std::size_t(n));
  const char* p = data.data();
  if (dtype == "<f4") {
    for (index_t i = 0; i < n; ++i) {
      const std::uint32_t u = read_le_uint<std::uint32_t>(p + 4 * i);
      float f;
      std::memcpy(&f, &u, 4);
      out[std::size_t(i)] = detail::npy_convert<T>(f, dtype);
    }
  } else if (dtype == "<f8") {
    for (index_t i = 0; i < n; ++i) {
      const std::uint64_t u = read_le_uint<std::uint64_t>(p + 8 * i);
      double f;
      std::memcpy(&f, &u, 8);
      out[std::size_t(i)] = detail::npy_convert<T>(f, dtype);
    }
  } else if (dtype == "<i4") {
    for (index_t i = 0; i < n; ++i)
      out[std::size_t(i)] = detail::npy_convert<T>(
          static_cast<std::int32_t>(read_le_uint<std::uint32_t>(p + 4 * i)), dtype);
  } else if (dtype == "<i8") {
    for (index_t i = 0; i < n; ++i)
      out[std::size_t(i)] = detail::npy_convert<T>(
          static_cast<std::int64_t>(read_le_uint<std::uint64_t>(p + 8 * i)), dtype);
  } else if (dtype == "<u2") {
    for (index_t i = 0; i < n; ++i) {
      const std::uint16_t u = read_le_uint<std::uint16_t>(p + 2 * i);
      if constexpr (std::is_same_v<T, bf16>) {
        out[std::size_t(i)].bits = u;
      } else {
        out[std::size_t(i)] = detail::npy_convert<T>(u, dtype);
      }
    }
  } else if (dtype == "<f2") {
    for (index_t i = 0; i < n; ++i) {
      const std::uint16_t u = read_le_uint<std::uint16_t>(p + 2 * i);
      if constexpr (std::is_same_v<T, fp16>) {
        out[std::size_t(i)].bits = u;
      } else {
        out[std::size_t(i)] = detail::npy_convert<T>(fp16::to_float(u), dtype);
      }
    }
  } else {
    attnkit::detail::fail("npy: cannot convert dtype '", dtype, "' to ", type_name<T>());
  }
  return out;
}

/// Reads .npy bytes from a stream (`path` names it in messages). Throws attnkit::error naming it
/// for: bad magic, an unsupported version, a malformed header, fortran_order True, big-endian or
/// unsupported dtypes, and truncated data. Memory grows with the bytes actually read, never
/// with a length or shape the header claims.
inline npy_array read_npy(std::istream& f, const std::string& path) {
  using attnkit::detail::fail;
  char pre[8];
  if (!f.read(pre, 8) || std::memcmp(pre, "\x93NUMPY", 6) != 0)
    fail("npy: '", path, "': not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(pre[6]), minor = static_cast<unsigned char>(pre[7]);
  if (major < 1 || major > 3 || minor != 0)
    fail("npy: '", path, "': unsupported format version ", major, ".", minor,
         " (supported: 1.0, 2.0, 3.0)");
  std::size_t hlen = 0;
  if (major == 1) {
    char b[2];
    if (!f.read(b, 2)) fail("npy: '", path, "': truncated header");
    hlen = detail::read_le_uint<std::uint16_t>(b);
  } else {
    char b[4];
    if (!f.read(b, 4)) fail("npy: '", path, "': truncated header");
    hlen = detail::read_le_uint<std::uint32_t>(b);
  }
  // Read the header in bounded steps so a corrupt length cannot allocate gigabytes up front.
  std::string header;
  for (std::size_t got = 0; got < hlen;) {
    const std::size_t step = std::min<std::size_t>(hlen - got, 1 << 16);
    header.resize(got + step);
    if (!f.read(&header[got], std::streamsize(step)))
      fail("npy: '", path, "': truncated header (expected ", hlen, " bytes)");
    got += step;
  }

  npy_array a;
  bool fortran = false;
  std::string descr;
  detail::npy_header_parser(path, header).parse(descr, fortran, a.shape);
  if (fortran)
    fail("npy: '", path,
         "': fortran_order True is not supported (save a C-order array, e.g. "
         "numpy.ascontiguousarray)");
  if (!descr.empty() && descr[0] == '>')
    fail("npy: '", path, "': big-endian dtype '", descr, "' is not supported (use '<",
         descr.substr(1), "')");
  // '=' is native byte order (little-endian on every host attnkit targets)
  const std::string norm = !descr.empty() && descr[0] == '=' ? "<" + descr.substr(1) : descr;
  if (detail::npy_itemsize(norm) == 0)
    fail("npy: '", path, "': unsupported dtype '", descr,
         "' (supported: <f2, <f4, <f8, <i4, <i8, <u2)");
  a.dtype = norm;

  const std::size_t item = detail::npy_itemsize(norm);
  std::size_t bytes = item;
  for (auto e : a.shape) {
    if (e != 0 && bytes > std::numeric_limits<std::size_t>::max() / std::size_t(e))
      fail("npy: '", path, "': shape too large");
    bytes *= std::size_t(e);
  }
  // Same bounded reading for the data.
  a.data.reserve(std::min<std::size_t>(bytes, std::size_t(1) << 26));
  for (std::size_t got = 0; got < bytes;) {
    const std::size_t step = std::min<std::size_t>(bytes - got, std::size_t(1) << 26);
    a.data.resize(got + step);
    f.read(a.data.data() + got, std::streamsize(step));
    const std::size_t r = std::size_t(f.gcount());
    got += r;
    if (r < step)
      fail("npy: '", path, "': truncated data (shape needs ", bytes, " bytes, file has ", got, ")");
  }
  return a;
}

/// Reads a .npy file: read_npy on the file, or attnkit::error naming a missing or unreadable file.
inline npy_array load_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) attnkit::detail::fail("npy: '", path, "': cannot open file (", std::strerror(errno), ")");
  return read_npy(f, path);
}

/// Writes data (C order, `shape`) as a version 1.0 .npy file (2.0 if the header is very long).
/// T: float, double, int32_t, int64_t, uint16_t, bf16 (stored as '<u2' raw bits), fp16 ('<f2').
template <class T>
void save_npy(const std::string& path, const T* data, const std::vector<index_t>& shape) {
  using attnkit::detail::fail;
  using U = std::remove_cv_t<T>;
  std::string dict = std::string("{'descr': '") + detail::npy_dtype_of<U>() +
                     "', 'fortran_order': False, 'shape': (";
  std::size_t n = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) fail("npy: '", path, "': negative dimension ", shape[i], " in shape");
    dict += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) dict += ",";
    if (i + 1 < shape.size()) dict += " ";
    n *= std::size_t(shape[i]);
  }
  dict += "), }";
  // Pad with spaces and a newline so that the data starts at a multiple of 64 bytes.
  const bool v2 = dict.size() + 1 + 10 > 65535;
  const std::size_t pre = v2 ? 12 : 10;
  const std::size_t total = (pre + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - pre - dict.size() - 1, ' ');
  dict += '\n';

  std::string out("\x93NUMPY", 6);
  out += char(v2 ? 2 : 1);
  out += char(0);
  char len[4];
  if (v2) {
    detail::write_le_uint<std::uint32_t>(len, std::uint32_t(dict.size()));
    out.append(len, 4);
  } else {
    detail::write_le_uint<std::uint16_t>(len, std::uint16_t(dict.size()));
    out.append(len, 2);
  }
  out += dict;

  std::vector<char> body(n * sizeof(U));
  for (std::size_t i = 0; i < n; ++i) {
    char* p = body.data() + i * sizeof(U);
    if constexpr (std::is_same_v<U, bf16> || std::is_same_v<U, fp16>) {
      detail::write_le_uint<std::uint16_t>(p, data[i].bits);
    } else if constexpr (std::is_floating_point_v<U>) {
      using Bits = std::conditional_t<sizeof(U) == 4, std::uint32_t, std::uint64_t>;
      Bits b;
      std::memcpy(&b, &data[i], sizeof(U));
      detail::write_le_uint<Bits>(p, b);
    } else {
      detail::write_le_uint<std::make_unsigned_t<U>>(p, std::make_unsigned_t<U>(data[i]));
    }
  }

  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail("npy: '", path, "': cannot create file (", std::strerror(errno), ")");
  f.write(out.data(), std::streamsize(out.size()));
  f.write(body.data(), std::streamsize(body.size()));
  f.close();
  if (!f) fail("npy: '", path, "': write failed (", std::strerror(errno), ")");
}

}  // namespace attnkit::io
