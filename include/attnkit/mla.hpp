// SPDX-License-Identifier: Apache-2.0
// attnkit MLA (DeepSeek multi-head latent attention): latent caches (core/latent_cache.hpp), the
// absorbed decode kernel, the naive (decompressed) form, the absorption helpers - fast kernels and
// references.
#pragma once

#include "core/latent_cache.hpp"
#include "core/rope.hpp"
#include "mla/kernel.hpp"
#include "mla/params.hpp"
#include "mla/reference.hpp"
