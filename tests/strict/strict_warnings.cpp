// SPDX-License-Identifier: Apache-2.0
// Strict-warnings check of the public headers: compiled (never run) with -Wall -Wextra -Wpedantic
// -Wshadow -Wconversion -Wsign-conversion -Werror and a plain -I (tests/strict/tests.cmake), as
// C++17 and C++20. Warnings inside templates fire only where they are instantiated, so this TU
// instantiates every public entry point for the usual element types: float and double compute,
// bf16 / fp16 storage where a kernel takes it (KV and latent caches, conversion helpers, low
// precision inputs of the recurrent families). The views are absent: nothing here is meant to run.
// A new entry point, overload or element type gets its calls here too.
#include <attnkit/attnkit.hpp>
#include <attnkit/io/npy.hpp>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace strict {

using namespace attnkit;

template <class T, std::size_t R>
using view = tensor_view<T, R>;

/// Dense softmax attention and its sliding-window form, kernel and reference.
template <class Q, class KV, class O>
void softmax_dense() {
  using A = accum_t<Q>;
  softmax_params p;
  softmax_extras<A> x;
  const cview<Q, 4> q;
  const cview<KV, 4> k, v;
  const view<O, 4> o;
  standard_attention(p, q, k, v, o, x);
  sliding_window_attention(p, q, k, v, o, x);
  ATTNKIT_CALL(true, standard_attention, p, q, k, v, o, x);
  ATTNKIT_CALL(true, sliding_window_attention, p, q, k, v, o, x);
  standard_attention(p, view<Q, 4>{}, view<KV, 4>{}, view<KV, 4>{}, o);  // non-const inputs
}

/// Attention over one kind of KV cache, with and without appended tokens, and cache_append.
template <class Q, class O, class Cache>
void softmax_cache(const Cache& c) {
  using A = accum_t<Q>;
  using KV = typename Cache::value_type;
  softmax_params p;
  softmax_extras<A> x;
  const cview<Q, 4> q;
  const view<O, 4> o;
  const cview<KV, 4> kn, vn;
  standard_attention_kvcache(p, q, c, o);
  standard_attention_kvcache(p, q, c, o, x, kn, vn);
  sliding_window_attention_kvcache(p, q, c, o, x, kn, vn);
  reference::standard_attention_kvcache(p, q, c, o, x, kn, vn);
  reference::sliding_window_attention_kvcache(p, q, c, o, x, kn, vn);
  standard_attention_kvcache(p, q, c, o, x, kn, view<KV, 4>{});  // mixed constness
  reference::standard_attention_kvcache(p, q, c, o, x, view<KV, 4>{}, vn);
  cache_append(c, kn, vn);
  cache_append(c, view<KV, 4>{}, vn);
  cache_append(c, kn, vn, cview<std::int32_t, 1>{});  // varlen batch
}

template <class Q, class KV, class O>
void softmax_caches() {
  softmax_cache<Q, O>(kv_cache<KV>{});
  softmax_cache<Q, O>(paged_kv_cache<KV>{});
  softmax_cache<Q, O>(ring_kv_cache<KV>{});
}

/// The LSE merge helpers and the online-softmax state.
template <class O, class A>
void merges() {
  merge_state_inplace(view<O, 4>{}, view<A, 3>{}, cview<O, 4>{}, cview<A, 3>{});
  merge_states(cview<O, 5>{}, cview<A, 4>{}, view<O, 4>{}, view<A, 3>{});
  merge_states(cview<O, 5>{}, cview<A, 4>{}, view<O, 4>{});
  softmax_state<A> s, t;
  A ws = 0, wo = 0;
  s.merge(t, ws, wo);
  (void)s.lse();
  (void)s.output_factor();
  (void)s.output_factor(A(1));
  (void)softmax_state<A>::rescale(A(0), A(1));
}

/// The linear family (both algorithms are instantiated by every call: the choice is at run time).
template <class T>
void linear_family() {
  using A = accum_t<T>;
  linear_params p;
  recurrent_state<A> s;
  linear_extras<A> x;
  const cview<T, 4> q, k, v, g4;
  const cview<T, 3> g3;
  const cview<T, 1> g1;
  const view<T, 4> o;
  linear_attn(p, q, k, v, o, s, x);
  simple_gla(p, q, k, v, g3, o, s);
  simple_gla(p, q, k, v, g1, o, s);
  gla(p, q, k, v, g4, o, s);
  reference::linear_attn(p, q, k, v, o, s, x);
  reference::simple_gla(p, q, k, v, g3, o, s);
  reference::simple_gla(p, q, k, v, g1, o, s);
  reference::gla(p, q, k, v, g4, o, s);
}

/// The delta-rule family (chunk and recurrent by p.algo at run time) and the short convolution.
template <class T, class P>
void delta_family() {
  using A = accum_t<T>;
  delta_params p;
  recurrent_state<A> s;
  delta_gate_params<P> gp;
  const cview<T, 4> q, k, v, g4;
  const cview<T, 3> g3, beta;
  const view<T, 4> o;
  delta_rule(p, q, k, v, beta, o, s);
  gated_delta_rule(p, q, k, v, g3, beta, o, s, gp);
  kda(p, q, k, v, g4, beta, o, s, gp);
  reference::delta_rule(p, q, k, v, beta, o, s);
  reference::gated_delta_rule(p, q, k, v, g3, beta, o, s, gp);
  reference::kda(p, q, k, v, g4, beta, o, s, gp);

  conv1d_params cp;
  conv1d_state<A> cs;
  const cview<T, 3> cx;
  const cview<T, 2> w;
  const cview<T, 1> bias;
  const view<T, 3> y;
  short_conv1d(cp, cx, w, bias, y, cs);
  reference::short_conv1d(cp, cx, w, bias, y, cs);
}

/// MLA over one kind of latent cache (absorbed form), kernel and reference.
template <class A, class Cache>
void mla_cache(const Cache& c) {
  using KV = typename Cache::value_type;
  mla_params p;
  softmax_extras<A> x;
  const cview<A, 4> q;
  const view<A, 4> o;
  const cview<KV, 3> kv_new;
  mla_attention_absorbed(p, q, c, o);
  mla_attention_absorbed(p, q, c, o, x, kv_new);
  reference::mla_attention_absorbed(p, q, c, o, x, kv_new);
}

/// MLA from the model's tensors: the absorption helpers and both forms. A: compute type of the
/// queries, weights and outputs; C: latent storage.
template <class A, class C>
void mla_family() {
  mla_params p;
  softmax_extras<A> x;
  const cview<A, 4> q_nope, q_pe;
  const cview<C, 3> c_kv, k_pe;
  const cview<A, 3> w_uk, w_uv;
  const view<A, 4> o;
  mla_attention_naive(p, q_nope, q_pe, c_kv, k_pe, w_uk, w_uv, o, x);
  mla_attention(p, q_nope, q_pe, c_kv, k_pe, w_uk, w_uv, o, x);
  reference::mla_attention_naive(p, q_nope, q_pe, c_kv, k_pe, w_uk, w_uv, o, x);
  reference::mla_attention(p, q_nope, q_pe, c_kv, k_pe, w_uk, w_uv, o, x);
  mla_cache<A>(latent_cache<C>{});
  mla_cache<A>(paged_latent_cache<C>{});
  (void)latent_bytes_per_token<C>(512, 64);
  (void)mha_bytes_per_token<C>(128, 128, 64, 128);
}

template <class A>
void mla_absorb() {
  mla_params p;
  const cview<A, 4> q_nope, q_pe, o_lat;
  const cview<A, 3> w;
  const view<A, 4> out;
  mla_absorb_q(p, q_nope, q_pe, w, out);
  mla_absorb_o(p, o_lat, w, out);
  reference::mla_absorb_q(p, q_nope, q_pe, w, out);
  reference::mla_absorb_o(p, o_lat, w, out);
}

/// RoPE on every storage type, by the three forms of positions.
template <class T>
void rope() {
  rope_params p;
  const view<T, 4> x;
  apply_rope(p, x, cview<std::int32_t, 1>{});
  apply_rope(p, x, cview<std::int32_t, 2>{});
  apply_rope(p, x, index_t(0));
}

/// Element conversion and the tensor_view helpers.
template <class T>
void elements() {
  using A = accum_t<T>;
  const T t{};
  const A a = to_compute<A>(t);
  (void)from_compute<T>(a);
  (void)type_name<T>();
  std::vector<T> buf(16);
  auto v = make_view(buf.data(), 2, 2, 4);
  (void)slice(v, 0, 0, 1);
  (void)subview(v, 1, 1);
  (void)transpose(v, 0, 2);
  (void)v.is_contiguous();
  (void)v(1, 1, 3);
  const cview<T, 3> cv = v;
  (void)cv.size();
}

template <class T>
void npy(const io::npy_array& a) {
  (void)a.as<T>();
  io::save_npy("strict.npy", static_cast<const T*>(nullptr), std::vector<index_t>{0});
}

/// The instantiations above (never called: this TU only has to compile).
void instantiate_all() {
  softmax_dense<float, float, float>();
  softmax_dense<double, double, double>();
  softmax_dense<float, bf16, float>();
  softmax_dense<float, fp16, float>();
  softmax_dense<bf16, bf16, bf16>();
  softmax_dense<fp16, fp16, fp16>();
  softmax_caches<float, float, float>();
  softmax_caches<double, double, double>();
  softmax_caches<float, bf16, float>();
  softmax_caches<float, fp16, float>();
  softmax_caches<bf16, bf16, bf16>();
  merges<float, float>();
  merges<double, double>();
  merges<bf16, float>();
  merges<fp16, float>();

  linear_family<float>();
  linear_family<double>();
  linear_family<bf16>();
  linear_family<fp16>();
  delta_family<float, float>();
  delta_family<double, double>();
  delta_family<float, double>();
  delta_family<bf16, float>();
  delta_family<fp16, float>();

  mla_family<float, float>();
  mla_family<double, double>();
  mla_family<float, bf16>();
  mla_family<float, fp16>();
  mla_absorb<float>();
  mla_absorb<double>();
  (void)yarn_mscale(40, 1);

  rope<float>();
  rope<double>();
  rope<bf16>();
  rope<fp16>();
  rope_params rp;
  (void)rope_inv_freq(rp, 128);
  (void)rope_attention_factor(rp);

  elements<float>();
  elements<double>();
  elements<bf16>();
  elements<fp16>();
  std::vector<float> f(8), fr(8);
  std::vector<bf16> b(8);
  std::vector<fp16> h(8);
  std::vector<std::uint16_t> u(8);
  to_bf16(f.data(), b.data(), f.size());
  to_bf16(f.data(), u.data(), f.size());
  to_fp16(f.data(), h.data(), f.size());
  to_fp16(f.data(), u.data(), f.size());
  from_bf16(b.data(), fr.data(), b.size());
  from_bf16(u.data(), fr.data(), u.size());
  from_fp16(h.data(), fr.data(), h.size());
  from_fp16(u.data(), fr.data(), u.size());
  (void)bf16::from_float(1.0f);
  (void)fp16::from_float(1.0f);
  (void)static_cast<float>(bf16(1.0f));
  (void)static_cast<float>(fp16(1.0f));

  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m(2, 3);
  const auto mv = view_of(m);
  (void)as_eigen(mv);
  (void)as_eigen(cview<double, 2>{});

  std::istringstream in;
  const io::npy_array a = io::read_npy(in, "in");
  (void)io::load_npy("strict.npy");
  (void)a.size();
  (void)a.rank();
  npy<float>(a);
  npy<double>(a);
  npy<bf16>(a);
  npy<fp16>(a);
  npy<std::int32_t>(a);
  npy<std::int64_t>(a);

  serial_executor serial;
  thread_pool pool(2);
  default_executor().parallel_for(1, [](index_t) {});
  serial.parallel_for(1, [](index_t) {});
  pool.parallel_for(1, [](index_t) {});
  (void)pool.num_threads();

  (void)sliding_window_of_model(4096);
  (void)reclaimable_pages(softmax_params{}, 100, 16);
  (void)ring_slot(10, 8, 2);
  const variant_info* vi = find_variant("gla");
  (void)variant_by_name("gla");
  (void)supports(*vi, algorithm::chunk);
  (void)algorithm_name(algorithm::chunk);
}

}  // namespace strict
