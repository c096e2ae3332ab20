// SPDX-License-Identifier: Apache-2.0
// attnkit softmax-attention family: standard attention (MHA/GQA/MQA, causal, windows, sinks,
// softcap, varlen, KV-cache decode) - fast kernels and references. The KV caches live in
// core/kv_cache.hpp.
#pragma once

#include "core/kv_cache.hpp"
#include "core/rope.hpp"
#include "softmax/kernel.hpp"
#include "softmax/params.hpp"
#include "softmax/reference.hpp"
