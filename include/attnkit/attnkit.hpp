// SPDX-License-Identifier: Apache-2.0
// attnkit umbrella header: every public header of the library (core, the three families, .npy I/O).
#pragma once

#include "core/config.hpp"
#include "core/convert.hpp"
#include "core/error.hpp"
#include "core/executor.hpp"
#include "core/gating.hpp"
#include "core/kv_cache.hpp"
#include "core/mask.hpp"
#include "core/online_softmax.hpp"
#include "core/recurrent_state.hpp"
#include "core/rope.hpp"
#include "core/simd.hpp"
#include "core/tensor_view.hpp"
#include "core/types.hpp"
#include "core/variants.hpp"
#include "core/varlen.hpp"
#include "delta.hpp"
#include "io/npy.hpp"
#include "linear.hpp"
#include "mla.hpp"
#include "softmax.hpp"
