// SPDX-License-Identifier: Apache-2.0
// attnkit::dispatch: the float kernels as ordinary (non-template) functions of a compiled library
// that picks the instruction set at run time, for programs that ship one binary to every x86-64
// machine. Link the CMake target attnkit::dispatch (option ATTNKIT_DISPATCH=ON when building
// attnkit; not part of the header-only attnkit::attnkit).
//
// Each function takes the parameter list of the template of the same name in namespace attnkit
// (params struct, views, extras and state structs; see the family's kernel.hpp and params.hpp
// for the contract and the errors thrown) with float compute and float tensors; the KV and latent
// caches may also hold bf16. There is no Arch parameter: the library holds one copy of every
// kernel per instruction set and calls the one of active_isa().
//
//   isa::sse2    x86-64 baseline (any x86-64 CPU)
//   isa::avx2    AVX2 + FMA (Intel Haswell, AMD Zen and later)
//   isa::avx512  AVX-512 F, BW, DQ and VL (Intel Skylake-SP, AMD Zen 4 and later)
//   isa::generic other architectures: one table built for the target's baseline flags
//
// The ISA is picked at the first call of any function here: the environment variable
// ATTNKIT_ISA (sse2, avx2, avx512 or generic) if set and not empty, else the widest ISA the CPU
// and OS support (CPUID). force_isa() replaces it at any time (e.g. to compare ISAs in tests or
// to rule out AVX-512 frequency effects); calls already running finish on their ISA. An
// unknown name in ATTNKIT_ISA, or an ISA this machine cannot run, throws attnkit::error (from
// that first call, and again from every later one until fixed or overridden with force_isa).
//
// Results of different ISAs agree to float rounding, not bitwise (the SIMD width changes the
// order of the sums). With params.exec == nullptr the kernels run on attnkit::default_executor(),
// the same process-wide pool as header-only calls.
#pragma once

#include <cstdint>

#include "core/kv_cache.hpp"
#include "core/latent_cache.hpp"
#include "core/recurrent_state.hpp"
#include "core/tensor_view.hpp"
#include "core/types.hpp"
#include "delta/params.hpp"
#include "linear/params.hpp"
#include "mla/params.hpp"
#include "softmax/params.hpp"

namespace attnkit::dispatch {

/// The instruction sets the library is built for (see above).
enum class isa { sse2, avx2, avx512, generic };

/// The ISA whose kernels the functions below call (picked at the first call; see above).
isa active_isa();
/// "sse2", "avx2", "avx512" or "generic" (the values of ATTNKIT_ISA).
const char* isa_name(isa i);
/// True when this build holds kernels for i and this CPU (and OS) can run them.
bool isa_supported(isa i);
/// Calls i's kernels from now on; throws attnkit::error if !isa_supported(i).
void force_isa(isa i);

// ---- softmax family (softmax/kernel.hpp) ----

void standard_attention(const softmax_params& p, cview<float, 4> q, cview<float, 4> k,
                        cview<float, 4> v, tensor_view<float, 4> o,
                        const softmax_extras<float>& x = {});
void sliding_window_attention(const softmax_params& p, cview<float, 4> q, cview<float, 4> k,
                              cview<float, 4> v, tensor_view<float, 4> o,
                              const softmax_extras<float>& x = {});

/// KV-cache forms: contiguous, paged and ring caches of float or bf16 rows; k_new / v_new have
/// the cache's element type.
void standard_attention_kvcache(const softmax_params& p, cview<float, 4> q,
                                const kv_cache<float>& cache, tensor_view<float, 4> o,
                                const softmax_extras<float>& x = {}, cview<float, 4> k_new = {},
                                cview<float, 4> v_new = {});
void standard_attention_kvcache(const softmax_params& p, cview<float, 4> q,
                                const paged_kv_cache<float>& cache, tensor_view<float, 4> o,
                                const softmax_extras<float>& x = {}, cview<float, 4> k_new = {},
                                cview<float, 4> v_new = {});
void standard_attention_kvcache(const softmax_params& p, cview<float, 4> q,
                                const ring_kv_cache<float>& cache, tensor_view<float, 4> o,
                                const softmax_extras<float>& x = {}, cview<float, 4> k_new = {},
                                cview<float, 4> v_new = {});
void standard_attention_kvcache(const softmax_params& p, cview<float, 4> q,
                                const kv_cache<bf16>& cache, tensor_view<float, 4> o,
                                const softmax_extras<float>& x = {}, cview<bf16, 4> k_new = {},
                                cview<bf16, 4> v_new = {});
void standard_attention_kvcache(const softmax_params& p, cview<float, 4> q,
                                const paged_kv_cache<bf16>& cache, tensor_view<float, 4> o,
                                const softmax_extras<float>& x = {}, cview<bf16, 4> k_new = {},
                                cview<bf16, 4> v_new = {});
void standard_attention_kvcache(const softmax_params& p, cview<float, 4> q,
                                const ring_kv_cache<bf16>& cache, tensor_view<float, 4> o,
                                const softmax_extras<float>& x = {}, cview<bf16, 4> k_new = {},
                                cview<bf16, 4> v_new = {});

void sliding_window_attention_kvcache(const softmax_params& p, cview<float, 4> q,
                                      const kv_cache<float>& cache, tensor_view<float, 4> o,
                                      const softmax_extras<float>& x = {},
                                      cview<float, 4> k_new = {}, cview<float, 4> v_new = {});
void sliding_window_attention_kvcache(const softmax_params& p, cview<float, 4> q,
                                      const paged_kv_cache<float>& cache, tensor_view<float, 4> o,
                                      const softmax_extras<float>& x = {},
                                      cview<float, 4> k_new = {}, cview<float, 4> v_new = {});
void sliding_window_attention_kvcache(const softmax_params& p, cview<float, 4> q,
                                      const ring_kv_cache<float>& cache, tensor_view<float, 4> o,
                                      const softmax_extras<float>& x = {},
                                      cview<float, 4> k_new = {}, cview<float, 4> v_new = {});
void sliding_window_attention_kvcache(const softmax_params& p, cview<float, 4> q,
                                      const kv_cache<bf16>& cache, tensor_view<float, 4> o,
                                      const softmax_extras<float>& x = {},
                                      cview<bf16, 4> k_new = {}, cview<bf16, 4> v_new = {});
void sliding_window_attention_kvcache(const softmax_params& p, cview<float, 4> q,
                                      const paged_kv_cache<bf16>& cache, tensor_view<float, 4> o,
                                      const softmax_extras<float>& x = {},
                                      cview<bf16, 4> k_new = {}, cview<bf16, 4> v_new = {});
void sliding_window_attention_kvcache(const softmax_params& p, cview<float, 4> q,
                                      const ring_kv_cache<bf16>& cache, tensor_view<float, 4> o,
                                      const softmax_extras<float>& x = {},
                                      cview<bf16, 4> k_new = {}, cview<bf16, 4> v_new = {});

/// Absorbed MLA (mla/kernel.hpp) over a contiguous or paged latent cache of float or bf16 rows.
void mla_attention_absorbed(const mla_params& p, cview<float, 4> q,
                            const latent_cache<float>& cache, tensor_view<float, 4> o,
                            const softmax_extras<float>& x = {}, cview<float, 3> kv_new = {});
void mla_attention_absorbed(const mla_params& p, cview<float, 4> q,
                            const paged_latent_cache<float>& cache, tensor_view<float, 4> o,
                            const softmax_extras<float>& x = {}, cview<float, 3> kv_new = {});
void mla_attention_absorbed(const mla_params& p, cview<float, 4> q, const latent_cache<bf16>& cache,
                            tensor_view<float, 4> o, const softmax_extras<float>& x = {},
                            cview<bf16, 3> kv_new = {});
void mla_attention_absorbed(const mla_params& p, cview<float, 4> q,
                            const paged_latent_cache<bf16>& cache, tensor_view<float, 4> o,
                            const softmax_extras<float>& x = {}, cview<bf16, 3> kv_new = {});

// ---- linear-attention family (linear/kernel.hpp) ----

void linear_attn(const linear_params& p, cview<float, 4> q, cview<float, 4> k, cview<float, 4> v,
                 tensor_view<float, 4> o, const recurrent_state<float>& state = {},
                 const linear_extras<float>& x = {});
/// g [B,T,H] (a log decay per token and head) or g_gamma [H] (a fixed one per head).
void simple_gla(const linear_params& p, cview<float, 4> q, cview<float, 4> k, cview<float, 4> v,
                cview<float, 3> g, tensor_view<float, 4> o,
                const recurrent_state<float>& state = {});
void simple_gla(const linear_params& p, cview<float, 4> q, cview<float, 4> k, cview<float, 4> v,
                cview<float, 1> g_gamma, tensor_view<float, 4> o,
                const recurrent_state<float>& state = {});
void gla(const linear_params& p, cview<float, 4> q, cview<float, 4> k, cview<float, 4> v,
         cview<float, 4> g, tensor_view<float, 4> o, const recurrent_state<float>& state = {});

// ---- delta-rule family (delta/kernel.hpp) ----

void delta_rule(const delta_params& p, cview<float, 4> q, cview<float, 4> k, cview<float, 4> v,
                cview<float, 3> beta, tensor_view<float, 4> o,
                const recurrent_state<float>& s = {});
void gated_delta_rule(const delta_params& p, cview<float, 4> q, cview<float, 4> k,
                      cview<float, 4> v, cview<float, 3> g, cview<float, 3> beta,
                      tensor_view<float, 4> o, const recurrent_state<float>& s = {},
                      const delta_gate_params<float>& gp = {});
void kda(const delta_params& p, cview<float, 4> q, cview<float, 4> k, cview<float, 4> v,
         cview<float, 4> g, cview<float, 3> beta, tensor_view<float, 4> o,
         const recurrent_state<float>& s = {}, const delta_gate_params<float>& gp = {});

}  // namespace attnkit::dispatch
