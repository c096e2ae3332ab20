// SPDX-License-Identifier: Apache-2.0
// attnkit delta-rule family: delta_rule (DeltaNet), gated_delta_rule (Gated DeltaNet), kda (Kimi
// Delta Attention) and the short causal convolution of their layers - fast kernels and
// references.
#pragma once

#include "delta/conv.hpp"
#include "delta/kernel.hpp"
#include "delta/params.hpp"
#include "delta/reference.hpp"
