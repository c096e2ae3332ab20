// SPDX-License-Identifier: Apache-2.0
// Opens the region in which the SIMD headers silence GCC 12's AVX-512 false positives (GCC bug
// 105593: the intrinsic headers' `__m512 __Y = __Y;` trips -W(maybe-)uninitialized wherever it is
// inlined). Include it after `#pragma once` and close with warnings_pop.hpp at the end of the file.
// No include guard: every including header needs its own push.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
