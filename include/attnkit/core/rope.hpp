// SPDX-License-Identifier: Apache-2.0
// Rotary position embedding (RoPE, Su et al. 2021) applied in place to q or k before attention or
// before appending to a cache, with YaRN context extension (Peng et al. 2023).
//
//   x [B,T,H,D], rotary dims d = rotary_dim (0 = D), pairs i < d/2, angle a_i = pos * inv_freq[i]:
//     (x1, x2) <- af * (x1 cos a_i - x2 sin a_i,  x2 cos a_i + x1 sin a_i)
//   interleaved: (x1, x2) = (x[2i], x[2i+1])       DeepSeek's reference (view_as_complex), GPT-J
//   half_split:  (x1, x2) = (x[i],  x[i + d/2])    GPT-NeoX, Llama, Hugging Face rotate_half
//   inv_freq[i] = theta^(-2i/d); dims [d, D) stay untouched (partial rotary: GPT-NeoX, Phi).
//   af = 1 without YaRN (rope_attention_factor).
//
// YaRN (Hugging Face `_compute_yarn_parameters`, DeepSeek-V3 `precompute_freqs_cis`), factor s,
// original context L, with f(r) = d ln(L / (2 pi r)) / (2 ln theta) the index i at which dim pair
// i turns r times over L:
//   low = max(floor(f(beta_fast)), 0), high = min(ceil(f(beta_slow)), d - 1)  (no floor/ceil
//   when yarn_truncate is off); ramp[i] = clamp((i - low) / (high - low), 0, 1)
//   inv_freq[i] = theta^(-2i/d) * ((1 - ramp[i]) + ramp[i] / s)
// so fast pairs (i <= low, many turns over L) keep their frequency and slow ones (i >= high) are
// divided by s. The attention factor af scales cos and sin (Hugging Face attention_scaling).
//
// MLA (DeepSeek-V2/V3): rotate only the rope part, e.g. q_pe = slice(q, 3, Dn, Dn + Dr) of
// q [B,T,H,Dn+Dr] and k_pe [B,T,1,Dr] before it is appended to the latent cache; DeepSeek's
// reference is interleaved (Hugging Face's port de-interleaves the weights and uses half_split).
// DeepSeek's mscale == mscale_all_dim gives af = 1; its softmax scale carries
// yarn_mscale(factor, mscale_all_dim)^2 instead (mla/params.hpp).
#pragma once

#include "warnings_push.hpp"
// (first: the SIMD warning settings must precede every header below)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "error.hpp"
#include "executor.hpp"
#include "tensor_view.hpp"
#include "types.hpp"

namespace attnkit {

/// Which dims form a rotated pair.
enum class rope_style {
  interleaved,  ///< pairs (2i, 2i+1): DeepSeek's reference, GPT-J, Meta's original Llama
  half_split    ///< pairs (i, i + d/2): GPT-NeoX, Llama / Qwen / Mistral in Hugging Face
};

/// RoPE options (Hugging Face config names in brackets). YaRN is off at yarn_factor = 1.
struct rope_params {
  index_t rotary_dim = 0;  ///< d: rotated leading dims of each head; 0 = the whole head dim D;
                           ///< even and <= D (head_dim * partial_rotary_factor)
  double theta = 10000;    ///< base (rope_theta)
  rope_style style = rope_style::half_split;
  double yarn_factor = 1;                  ///< s (factor); 1 = plain RoPE
  index_t yarn_original_max_position = 0;  ///< L (original_max_position_embeddings); needed
                                           ///< when yarn_factor > 1
  double yarn_beta_fast = 32;              ///< beta_fast
  double yarn_beta_slow = 1;               ///< beta_slow
  double yarn_mscale = 0;                  ///< mscale; 0 = unset
  double yarn_mscale_all_dim = 0;          ///< mscale_all_dim; 0 = unset
  double yarn_attention_factor = 0;  ///< attention_factor; 0 = derived (rope_attention_factor)
  bool yarn_truncate = true;         ///< truncate: floor/ceil the correction range
  executor* exec = nullptr;          ///< where work runs; nullptr = default_executor()
};

namespace detail {

/// YaRN's get_mscale: 0.1 * m * ln(s) + 1 for s > 1, else 1.
inline double rope_get_mscale(double s, double m = 1) {
  return s <= 1 ? 1.0 : 0.1 * m * std::log(s) + 1.0;
}

/// Validates the options that do not depend on the head dim.
inline void rope_check_options(const char* fn, const rope_params& p) {
  if (p.rotary_dim < 0) fail(fn, ": option 'rotary_dim' must be >= 0 (0 = D), got ", p.rotary_dim);
  if (!(p.theta > 0 && std::isfinite(p.theta)))
    fail(fn, ": option 'theta' must be finite and > 0, got ", p.theta);
  if (!(p.yarn_factor >= 1 && std::isfinite(p.yarn_factor)))
    fail(fn, ": option 'yarn_factor' must be finite and >= 1 (1 = off), got ", p.yarn_factor);
  const auto check_opt = [fn](const char* name, double v) {
    if (!(v >= 0 && std::isfinite(v)))
      fail(fn, ": option '", name, "' must be finite and >= 0 (0 = unset), got ", v);
  };
  check_opt("yarn_mscale", p.yarn_mscale);
  check_opt("yarn_mscale_all_dim", p.yarn_mscale_all_dim);
  check_opt("yarn_attention_factor", p.yarn_attention_factor);
  if (p.yarn_factor > 1) {
    if (p.yarn_original_max_position < 1)
      fail(fn, ": option 'yarn_original_max_position' must be >= 1 when 'yarn_factor' > 1, got ",
           p.yarn_original_max_position);
    if (!(p.theta > 1))
      fail(fn, ": option 'theta' must be > 1 when 'yarn_factor' > 1, got ", p.theta);
    if (!(p.yarn_beta_slow > 0 && std::isfinite(p.yarn_beta_slow)))
      fail(fn, ": option 'yarn_beta_slow' must be finite and > 0, got ", p.yarn_beta_slow);
    if (!(p.yarn_beta_fast >= p.yarn_beta_slow && std::isfinite(p.yarn_beta_fast)))
      fail(fn, ": option 'yarn_beta_fast' must be finite and >= 'yarn_beta_slow' (",
           p.yarn_beta_slow, "), got ", p.yarn_beta_fast);
  }
}

/// Validates p against head dim D and returns d (rotary_dim resolved).
inline index_t rope_check(const char* fn, const rope_params& p, index_t D) {
  rope_check_options(fn, p);
  const index_t d = p.rotary_dim == 0 ? D : p.rotary_dim;
  if (d > D) fail(fn, ": option 'rotary_dim' = ", d, " exceeds the head dim D = ", D);
  if (d % 2 != 0)
    fail(fn, ": option 'rotary_dim' = ", p.rotary_dim,
         p.rotary_dim == 0 ? " (the whole head dim D = " : " (d = ", d,
         ") must be even (dims rotate in pairs)");
  return d;
}

/// The cos/sin factor of validated options.
inline double rope_af(const rope_params& p) {
  if (p.yarn_attention_factor > 0) return p.yarn_attention_factor;
  const double s = p.yarn_factor;
  if (p.yarn_mscale > 0 && p.yarn_mscale_all_dim > 0)
    return rope_get_mscale(s, p.yarn_mscale) / rope_get_mscale(s, p.yarn_mscale_all_dim);
  return rope_get_mscale(s);
}

/// inv_freq for a validated d.
inline std::vector<double> rope_inv_freq_d(const rope_params& p, index_t d) {
  const index_t half = d / 2;
  std::vector<double> f(std::size_t(half > 0 ? half : 0));
  for (index_t i = 0; i < half; ++i)
    f[std::size_t(i)] = std::pow(p.theta, -double(2 * i) / double(d));
  if (p.yarn_factor > 1 && half > 0) {
    constexpr double two_pi = 6.283185307179586476925286766559;
    const double L = double(p.yarn_original_max_position), lt = std::log(p.theta);
    const auto corr_dim = [&](double rot) {
      return double(d) * std::log(L / (rot * two_pi)) / (2 * lt);
    };
    double low = corr_dim(p.yarn_beta_fast), high = corr_dim(p.yarn_beta_slow);
    if (p.yarn_truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, double(d - 1));
    if (low == high) high += 0.001;  // as the references: no zero-width ramp
    for (index_t i = 0; i < half; ++i) {
      const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
      double& x = f[std::size_t(i)];
      x = x / p.yarn_factor * ramp + x * (1 - ramp);  // interpolation * ramp + extrapolation
    }
  }
  return f;
}

}  // namespace detail

/// The rotary_dim / 2 inverse frequencies for heads of `head_dim` dims (YaRN applied).
inline std::vector<double> rope_inv_freq(const rope_params& p, index_t head_dim) {
  return detail::rope_inv_freq_d(p, detail::rope_check("rope_inv_freq", p, head_dim));
}

/// The factor af applied to cos and sin (Hugging Face attention_scaling): yarn_attention_factor
/// if set; else get_mscale(s, mscale) / get_mscale(s, mscale_all_dim) if both are set (DeepSeek);
/// else get_mscale(s) = 0.1 ln(s) + 1; 1 for s = 1.
inline double rope_attention_factor(const rope_params& p) {
  detail::rope_check_options("rope_attention_factor", p);
  return detail::rope_af(p);
}

namespace detail {

/// Rotates x in place; pos(b, t) gives the position of token t of batch row b.
template <class T, class Pos>
void rope_apply(const char* fn, const rope_params& p, const tensor_view<T, 4>& x, Pos pos) {
  using A = accum_t<T>;
  const index_t B = x.extent(0), Tn = x.extent(1), H = x.extent(2);
  const index_t d = rope_check(fn, p, x.extent(3)), half = d / 2;
  if (x.size() == 0 || half == 0) return;
  const std::vector<double> inv = rope_inv_freq_d(p, d);
  const double af = rope_af(p);
  const index_t s0 = x.stride(0), s1 = x.stride(1), s2 = x.stride(2), s3 = x.stride(3);
  const index_t pair = p.style == rope_style::interleaved ? s3 : half * s3;  // x2 - x1
  const index_t step = p.style == rope_style::interleaved ? 2 * s3 : s3;     // pair i -> i + 1
  // Work items: blocks of tokens (fixed size, independent of the thread count).
  const index_t rows = B * Tn;
  const index_t per_item = std::max<index_t>(1, 16384 / std::max<index_t>(1, H * d));
  const index_t items = (rows + per_item - 1) / per_item;
  resolve(p.exec).parallel_for(items, [&](index_t it) {
    std::vector<A> cs(std::size_t(2 * half));
    const index_t r1 = std::min(rows, (it + 1) * per_item);
    for (index_t r = it * per_item; r < r1; ++r) {
      const index_t b = r / Tn, t = r % Tn;
      const double ps = double(pos(b, t));
      for (index_t i = 0; i < half; ++i) {  // angles in double: accurate at large positions
        const double a = ps * inv[std::size_t(i)];
        cs[std::size_t(2 * i)] = A(af * std::cos(a));
        cs[std::size_t(2 * i + 1)] = A(af * std::sin(a));
      }
      for (index_t h = 0; h < H; ++h) {
        T* base = x.data() + b * s0 + t * s1 + h * s2;
        for (index_t i = 0; i < half; ++i) {
          T* p1 = base + i * step;
          T* p2 = p1 + pair;
          const A x1 = to_compute<A>(*p1), x2 = to_compute<A>(*p2);
          const A c = cs[std::size_t(2 * i)], s = cs[std::size_t(2 * i + 1)];
          *p1 = from_compute<T>(x1 * c - x2 * s);
          *p2 = from_compute<T>(x2 * c + x1 * s);
        }
      }
    }
  });
}

template <class T>
constexpr void rope_check_type() {
  static_assert(!std::is_const_v<T>, "attnkit::apply_rope: x is rotated in place (non-const)");
  static_assert(is_storage_type_v<T>, "attnkit: element types must be float, double, bf16 or fp16");
}

}  // namespace detail

/// Rotates x [B,T,H,D] in place; token t of every batch row is at positions[t] ([T]).
template <class T>
void apply_rope(const rope_params& p, const tensor_view<T, 4>& x,
                cview<std::int32_t, 1> positions) {
  constexpr const char* fn = "apply_rope";
  detail::rope_check_type<T>();
  detail::check_tensor({fn, "x", "B,T,H,D"}, x, {-1, -1, -1, -1});
  detail::check_no_self_overlap({fn, "x", "B,T,H,D"}, x);
  detail::check_tensor({fn, "positions", "T"}, positions, {x.extent(1)});
  detail::check_disjoint(fn, "x", x, "positions", positions);
  detail::rope_apply(fn, p, x, [&](index_t, index_t t) { return positions(t); });
}

/// Rotates x [B,T,H,D] in place; token t of batch row b is at positions[b, t] ([B,T]).
template <class T>
void apply_rope(const rope_params& p, const tensor_view<T, 4>& x,
                cview<std::int32_t, 2> positions) {
  constexpr const char* fn = "apply_rope";
  detail::rope_check_type<T>();
  detail::check_tensor({fn, "x", "B,T,H,D"}, x, {-1, -1, -1, -1});
  detail::check_no_self_overlap({fn, "x", "B,T,H,D"}, x);
  detail::check_tensor({fn, "positions", "B,T"}, positions, {x.extent(0), x.extent(1)});
  detail::check_disjoint(fn, "x", x, "positions", positions);
  detail::rope_apply(fn, p, x, [&](index_t b, index_t t) { return positions(b, t); });
}

/// Rotates x [B,T,H,D] in place; token t of every batch row is at pos0 + t (decode: pos0 = the
/// number of tokens already cached).
template <class T>
void apply_rope(const rope_params& p, const tensor_view<T, 4>& x, index_t pos0) {
  constexpr const char* fn = "apply_rope";
  detail::rope_check_type<T>();
  detail::check_tensor({fn, "x", "B,T,H,D"}, x, {-1, -1, -1, -1});
  detail::check_no_self_overlap({fn, "x", "B,T,H,D"}, x);
  constexpr index_t exact = index_t(1) << 53;  // positions stay exact as doubles
  if (pos0 < -exact || pos0 > exact - x.extent(1))
    detail::fail(fn, ": argument 'pos0' = ", pos0,
                 " out of range [-2^53, 2^53 - T] (T = ", x.extent(1), ")");
  detail::rope_apply(fn, p, x, [pos0](index_t, index_t t) { return pos0 + t; });
}

}  // namespace attnkit

#include "warnings_pop.hpp"
