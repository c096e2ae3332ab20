// SPDX-License-Identifier: Apache-2.0
// attnkit linear-attention family: linear_attn, simple_gla, gla (fast kernels and references).
#pragma once

#include "linear/kernel.hpp"
#include "linear/params.hpp"
#include "linear/reference.hpp"
