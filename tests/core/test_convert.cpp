// SPDX-License-Identifier: Apache-2.0
// Bulk float <-> bf16/fp16 conversion (core/convert.hpp): bulk == element-wise (types.hpp) bit
// for bit, for all 65536 16-bit patterns (from_*) and for floats covering rounding ties, fp16
// subnormals, overflow, inf, NaN and random bits (to_*); at lengths around the batch width, from
// unaligned pointers, for the uint16_t overloads and for each SIMD architecture compiled in.
#include <attnkit/core/convert.hpp>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <support/test_util.hpp>
#include <vector>

using namespace attnkit;

namespace {

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Floats probing every branch of the two roundings (both signs).
std::vector<float> probe_floats() {
  std::vector<std::uint32_t> u;
  const float specials[] = {0.0f,
                            1.0f,
                            65504.0f,
                            65519.99f,
                            65520.0f,
                            std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::min(),
                            std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::signaling_NaN(),
                            5.9604645e-8f,   // 2^-24: the smallest fp16 subnormal
                            2.9802322e-8f,   // 2^-25: the tie that rounds to 0
                            6.1035156e-5f};  // 2^-14: the smallest fp16 normal
  for (float f : specials) u.push_back(bits_of(f));
  for (std::uint32_t x : {0x7f800001u, 0x7fbfffffu, 0x7fc00000u, 0x7fffffffu, 0x477ff000u,
                          0x477fefffu, 0x38800000u, 0x387fffffu, 0x33000000u, 0x32ffffffu,
                          0x33000001u, 0x7f7fffffu, 0x7f7f8000u, 0x7f7f7fffu, 0x00000001u})
    u.push_back(x);
  // bf16 ties and neighbours, every 8th high half
  for (std::uint32_t hi = 0; hi < 0x8000u; hi += 8)
    for (std::uint32_t lo : {0x7fffu, 0x8000u, 0x8001u, 0x0000u, 0xffffu})
      u.push_back((hi << 16) | lo);
  // fp16 ties and neighbours at every exponent of the normal and subnormal range
  for (std::uint32_t e = 100; e <= 145; ++e)
    for (std::uint32_t m = 0; m < (1u << 23); m += 0x1000u * 37u)
      for (std::uint32_t d : {0u, 1u, 0x1000u - 1u, 0x1000u, 0x1000u + 1u, 0x2000u - 1u}) {
        u.push_back((e << 23) | ((m + d) & 0x7fffffu));
        // subnormal-range ties: half of the dropped bits at this exponent
        const int shift = 126 - int(e);
        if (shift >= 14 && shift <= 24) {
          const std::uint32_t half = 1u << (shift - 1);
          u.push_back((e << 23) | ((m & ~((half << 1) - 1u)) | half));
          u.push_back((e << 23) | (((m & ~((half << 1) - 1u)) | half) + (1u << shift)));
        }
      }
  // a stride through all floats, and random bits
  for (std::uint64_t x = 0; x < (1ull << 32); x += 65521u) u.push_back(std::uint32_t(x));
  std::mt19937 rng(7);
  for (int k = 0; k < 200000; ++k) u.push_back(std::uint32_t(rng()));
  std::vector<float> f;
  for (std::uint32_t x : u) {
    f.push_back(float_of(x & 0x7fffffffu));
    f.push_back(float_of(x | 0x80000000u));
  }
  return f;
}

template <class T>
std::vector<std::uint16_t> bits_of(const std::vector<T>& v) {
  std::vector<std::uint16_t> b(v.size());
  if (!v.empty()) std::memcpy(b.data(), v.data(), 2 * v.size());
  return b;
}

std::vector<std::uint32_t> bits_of(const float* p, std::size_t n) {
  std::vector<std::uint32_t> b(n);
  if (n) std::memcpy(b.data(), p, 4 * n);
  return b;
}

/// The first index where a and b differ, or -1 (a cheap failure message for long vectors).
template <class T>
long first_mismatch(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return -2;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return long(i);
  return -1;
}

/// Checks every conversion of one architecture on the inputs, starting at offset `off` of each
/// buffer (unaligned when odd), against element-wise conversion.
template <class Arch>
void check_all(const std::vector<float>& f, const std::vector<std::uint16_t>& h, std::size_t off) {
  const std::size_t nf = f.size(), nh = h.size();
  // to_*: typed and raw
  std::vector<float> fsrc(off + nf);
  std::copy(f.begin(), f.end(), fsrc.begin() + std::ptrdiff_t(off));
  std::vector<bf16> b(off + nf), b_ref(nf);
  std::vector<fp16> p(off + nf), p_ref(nf);
  std::vector<std::uint16_t> rb(off + nf), rp(off + nf);
  to_bf16<Arch>(fsrc.data() + off, b.data() + off, nf);
  to_fp16<Arch>(fsrc.data() + off, p.data() + off, nf);
  to_bf16<Arch>(fsrc.data() + off, rb.data() + off, nf);
  to_fp16<Arch>(fsrc.data() + off, rp.data() + off, nf);
  for (std::size_t i = 0; i < nf; ++i) {
    b_ref[i] = bf16(f[i]);
    p_ref[i] = fp16(f[i]);
  }
  const auto bb = bits_of(b), pb = bits_of(p);
  CHECK(first_mismatch(std::vector<std::uint16_t>(bb.begin() + std::ptrdiff_t(off), bb.end()),
                       bits_of(b_ref)) == -1);
  CHECK(first_mismatch(std::vector<std::uint16_t>(pb.begin() + std::ptrdiff_t(off), pb.end()),
                       bits_of(p_ref)) == -1);
  CHECK(first_mismatch(std::vector<std::uint16_t>(rb.begin() + std::ptrdiff_t(off), rb.end()),
                       bits_of(b_ref)) == -1);
  CHECK(first_mismatch(std::vector<std::uint16_t>(rp.begin() + std::ptrdiff_t(off), rp.end()),
                       bits_of(p_ref)) == -1);

  // from_*: typed and raw
  std::vector<std::uint16_t> hsrc(off + nh);
  std::copy(h.begin(), h.end(), hsrc.begin() + std::ptrdiff_t(off));
  std::vector<bf16> hb(off + nh);
  std::vector<fp16> hp(off + nh);
  if (off + nh) {
    std::memcpy(static_cast<void*>(hb.data()), hsrc.data(), 2 * (off + nh));
    std::memcpy(static_cast<void*>(hp.data()), hsrc.data(), 2 * (off + nh));
  }
  std::vector<float> fb(off + nh), fp(off + nh), frb(off + nh), frp(off + nh);
  from_bf16<Arch>(hb.data() + off, fb.data() + off, nh);
  from_fp16<Arch>(hp.data() + off, fp.data() + off, nh);
  from_bf16<Arch>(hsrc.data() + off, frb.data() + off, nh);
  from_fp16<Arch>(hsrc.data() + off, frp.data() + off, nh);
  std::vector<std::uint32_t> eb(nh), ep(nh);
  for (std::size_t i = 0; i < nh; ++i) {
    eb[i] = bits_of(bf16::to_float(h[i]));
    ep[i] = bits_of(fp16::to_float(h[i]));
  }
  CHECK(first_mismatch(bits_of(fb.data() + off, nh), eb) == -1);
  CHECK(first_mismatch(bits_of(fp.data() + off, nh), ep) == -1);
  CHECK(first_mismatch(bits_of(frb.data() + off, nh), eb) == -1);
  CHECK(first_mismatch(bits_of(frp.data() + off, nh), ep) == -1);
}

template <class Arch>
void check_arch() {
  std::vector<std::uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = std::uint16_t(i);
  const std::vector<float> probes = probe_floats();
  for (std::size_t off : {0u, 1u, 3u}) {
    INFO("offset " << off);
    check_all<Arch>(probes, all, off);
    for (std::size_t n : {0u, 1u, 15u, 16u, 17u, 31u, 33u, 1000u}) {
      INFO("n = " << n);
      // the lengths take their inputs from the interesting middle of the probes/patterns
      check_all<Arch>(std::vector<float>(probes.begin(), probes.begin() + std::ptrdiff_t(n)),
                      std::vector<std::uint16_t>(all.begin() + 0x7bf0,
                                                 all.begin() + 0x7bf0 + std::ptrdiff_t(n)),
                      off);
    }
  }
}

}  // namespace

TEST_CASE("convert: layout of the 16-bit storage types", "[core][convert]") {
  STATIC_REQUIRE(sizeof(bf16) == 2);
  STATIC_REQUIRE(sizeof(fp16) == 2);
  STATIC_REQUIRE(std::is_trivially_copyable_v<bf16>);
  STATIC_REQUIRE(std::is_standard_layout_v<fp16>);
  const std::uint16_t raw[2] = {0x3f80, 0x3c00};
  bf16 b;
  fp16 h;
  std::memcpy(static_cast<void*>(&b), &raw[0], 2);
  std::memcpy(static_cast<void*>(&h), &raw[1], 2);
  CHECK(float(b) == 1.0f);
  CHECK(float(h) == 1.0f);
}

TEST_CASE("convert: bulk equals element-wise bit for bit (default arch)", "[core][convert]") {
  check_arch<simd::default_arch>();
}

TEST_CASE("convert: bulk equals element-wise bit for bit (every compiled arch)",
          "[core][convert]") {
#if XSIMD_WITH_SSE2
  SECTION("sse2") { check_arch<xsimd::sse2>(); }
#endif
#if XSIMD_WITH_AVX2
  SECTION("avx2") { check_arch<xsimd::avx2>(); }
#endif
#if XSIMD_WITH_AVX512BW
  SECTION("avx512bw") { check_arch<xsimd::avx512bw>(); }
#endif
  SUCCEED();
}

TEST_CASE("convert: signalling NaN and fp16 subnormals keep their bits", "[core][convert]") {
  const std::uint16_t h[4] = {0x7c01, 0xfd55, 0x0001, 0x83ff};
  std::uint16_t rep[16];
  for (int k = 0; k < 16; ++k) rep[k] = h[k % 4];
  float f[16];
  from_fp16(rep, f, 16);
  CHECK(bits_of(f[0]) == 0x7f802000u);  // not quieted
  CHECK(bits_of(f[1]) == 0xffaaa000u);
  CHECK(f[2] == std::ldexp(1.0f, -24));
  CHECK(f[3] == -std::ldexp(1023.0f, -24));
  std::uint16_t back[16];
  to_fp16(f, back, 16);
  CHECK(back[0] == 0x7e00);  // NaN -> canonical quiet NaN, as fp16(float)
  CHECK(back[1] == 0xfe00);
  CHECK(back[2] == 0x0001);
  CHECK(back[3] == 0x83ff);
}
