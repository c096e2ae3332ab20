// SPDX-License-Identifier: Apache-2.0
// Closes the region opened by warnings_push.hpp. No include guard (one pop per push).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
