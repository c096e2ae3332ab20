// SPDX-License-Identifier: Apache-2.0
// attnkit::error, the one exception type of the library, and the checks every entry point uses.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

#include "config.hpp"

namespace attnkit {

/// Thrown by every public entry point on bad input. The message names the tensor (or option),
/// the dimension and the expected versus actual value, e.g.
/// "attnkit: standard_attention: tensor 'k' dim 2 (heads): expected 4, got 3".
class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

template <class... Parts>
[[noreturn]] inline void fail(const Parts&... parts) {
  std::ostringstream os;
  os << "attnkit: ";
  (os << ... << parts);
  throw error(os.str());
}

/// Throws unless `cond`; the message is the concatenation of `parts`.
template <class... Parts>
inline void require(bool cond, const Parts&... parts) {
  if (!cond) fail(parts...);
}

}  // namespace detail
}  // namespace attnkit
