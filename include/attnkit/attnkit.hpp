// SPDX-License-Identifier: Apache-2.0
// attnkit umbrella header: every public header of the library.
#pragma once

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/executor.hpp"
#include "core/mask.hpp"
#include "core/online_softmax.hpp"
#include "core/simd.hpp"
#include "core/tensor_view.hpp"
#include "core/types.hpp"
#include "core/varlen.hpp"
#include "delta.hpp"
#include "linear.hpp"
#include "standard/kernel.hpp"
#include "standard/params.hpp"
#include "standard/reference.hpp"
