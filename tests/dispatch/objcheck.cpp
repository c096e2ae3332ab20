// SPDX-License-Identifier: Apache-2.0
// Static checks of attnkit::dispatch's machine code (GNU objdump / nm output; tests.cmake):
//
//   objcheck isa <objdump> <unit.o> sse2|avx2|avx512
//     sse2: the unit holds no AVX / AVX-512 instruction (VEX or EVEX mnemonic, ymm, zmm, mask
//           registers) and none of the SSE3+ / BMI mnemonics below; it does use xmm (SSE).
//     avx2: no zmm, no mask register, no xmm16-31 / ymm16-31 (EVEX only); it does use ymm.
//     avx512: it does use zmm (so the checks above can tell the units apart).
//   objcheck private <objdump> <nm> <program> <link map>
//     In a program linked with the library (and its -Wl,-Map, GNU ld's or lld's; GNU or LLVM
//     objdump and nm): every direct call or jump made
//     by the code of a unit attnkit_dispatch_<isa>.o lands in that same unit's code or in the
//     PLT (shared libraries), and some functions exist once per unit (the shared inline code,
//     e.g. std::vector or attnkit::detail helpers, was not merged across units).
// Exit status 0 when the check passes; the findings are printed either way.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace {

using u64 = unsigned long long;

std::vector<std::string> run_lines(const std::string& cmd) {
  std::vector<std::string> out;
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  if (!p) {
    std::cerr << "objcheck: cannot run: " << cmd << "\n";
    std::exit(2);
  }
  std::string line;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p.get())) {
    line += buf;
    if (!line.empty() && line.back() == '\n') {
      line.pop_back();
      out.push_back(std::move(line));
      line.clear();
    }
  }
  if (!line.empty()) out.push_back(line);
  return out;
}

std::string quote(const std::string& s) { return "'" + s + "'"; }

int check_isa(const std::string& objdump, const std::string& obj, const std::string& isa) {
  const auto lines = run_lines(quote(objdump) + " -d --no-show-raw-insn " + quote(obj));
  // An instruction line: "  addr:<tab>[prefixes ]mnemonic operands".
  const std::regex insn(R"(^\s*[0-9a-f]+:\s+(.*)$)");
  const std::regex vex_evex(R"(^(\{[a-z0-9]+\}\s*)?v[a-z])");  // AVX mnemonics all start with v
  const std::regex wide_reg(R"(%(ymm|zmm)[0-9]+|%k[0-7]\b)");
  const std::regex evex_reg(R"(%zmm[0-9]+|%k[0-7]\b|%[xy]mm(1[6-9]|2[0-9]|3[01])\b)");
  // SSE3, SSSE3, SSE4.1/4.2, POPCNT, LZCNT and BMI1/2 mnemonics GCC can emit (tzcnt is left
  // out: GCC writes "rep bsf" for ctz, which objdump shows as tzcnt and pre-BMI CPUs run as bsf).
  const std::regex post_sse2(
      R"(^(haddp[sd]|hsubp[sd]|addsubp[sd]|movs[hl]dup|movddup|lddqu|pshufb|palignr|pabs[bwd]|)"
      R"(phadd[wd]|phaddsw|phsub[wd]|phsubsw|pmaddubsw|pmulhrsw|psign[bwd]|blendp[sd]|blendvp[sd]|)"
      R"(pblendvb|pblendw|dpp[sd]|insertps|extractps|pinsr[bdq]|pextr[bdq]|pmaxs[bd]|pmins[bd]|)"
      R"(pmaxu[wd]|pminu[wd]|pmulld|pmuldq|pcmpeqq|pcmpgtq|packusdw|pmov[sz]x[bwd][wdq]|ptest|)"
      R"(round[ps][sd]|mpsadbw|phminposuw|movntdqa|pcmp[ei]str[im]|crc32[bwlq]?|popcnt[wlq]?|)"
      R"(lzcnt[wlq]?|andn[lq]?|bextr[lq]?|blsi[lq]?|blsmsk[lq]?|blsr[lq]?|bzhi[lq]?|mulx[lq]?|)"
      R"(pdep[lq]?|pext[lq]?|rorx[lq]?|sarx[lq]?|shlx[lq]?|shrx[lq]?)\s)");
  std::size_t n = 0, bad = 0, xmm = 0, ymm = 0, zmm = 0;
  for (const auto& l : lines) {
    std::smatch m;
    if (!std::regex_match(l, m, insn)) continue;
    const std::string body = m[1];
    ++n;
    if (body.find("%xmm") != std::string::npos) ++xmm;
    if (body.find("%ymm") != std::string::npos) ++ymm;
    if (body.find("%zmm") != std::string::npos) ++zmm;
    bool wrong = false;
    if (isa == "sse2")
      wrong = std::regex_search(body, vex_evex) || std::regex_search(body, wide_reg) ||
              std::regex_search(body + " ", post_sse2);
    else if (isa == "avx2")
      wrong = std::regex_search(body, evex_reg);
    if (wrong && ++bad <= 20) std::cout << "  not " << isa << ": " << l << "\n";
  }
  std::cout << obj << ": " << n << " instructions (" << xmm << " with xmm, " << ymm << " ymm, "
            << zmm << " zmm), " << bad << " outside " << isa << "\n";
  if (n == 0) return std::cout << "FAIL: no instructions (wrong file?)\n", 1;
  if (bad) return std::cout << "FAIL\n", 1;
  if (isa == "sse2" && xmm == 0) return std::cout << "FAIL: no SSE code at all?\n", 1;
  if (isa == "avx2" && ymm == 0) return std::cout << "FAIL: no ymm: not an AVX2 build?\n", 1;
  if (isa == "avx512" && zmm == 0) return std::cout << "FAIL: no zmm: not an AVX-512 build?\n", 1;
  std::cout << "ok\n";
  return 0;
}

struct range {
  u64 lo, hi;
  std::string unit;
};

int check_private(const std::string& objdump, const std::string& nm, const std::string& exe,
                  const std::string& map) {
  // Code ranges of each unit from the link map: input sections .text* of attnkit_dispatch_X.o.
  // GNU ld: " .text.name  0xADDR  0xSIZE  dir/lib.a(attnkit_dispatch_X.o)", a long section name
  // putting address, size and file on the next line. lld: "VMA LMA SIZE ALIGN  file(obj):(sec)".
  std::vector<range> code;
  {
    const auto lines = run_lines("cat " + quote(map));
    const std::regex sec(R"(^ (\.[^\s]+)(\s|$))");
    const std::regex where(R"(^\s+(?:\.[^\s]+\s+)?0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(.*)$)");
    const std::regex unit_re(R"(attnkit_dispatch_([a-z0-9]+)\.o\)?$)");
    const std::regex lld(
        R"(^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+\S*attnkit_dispatch_([a-z0-9]+)\.o\)?:\((\.text[^)]*)\)$)");
    bool in_map = false;
    std::string section;
    for (const auto& l : lines) {
      std::smatch m;
      if (std::regex_match(l, m, lld)) {
        const u64 lo = std::stoull(m[1], nullptr, 16), size = std::stoull(m[2], nullptr, 16);
        if (lo != 0 && size != 0) code.push_back({lo, lo + size, m[3]});
        continue;
      }
      if (l.rfind("Linker script and memory map", 0) == 0) in_map = true;
      if (!in_map) continue;
      if (std::regex_search(l, m, sec)) section = m[1];
      if (!std::regex_match(l, m, where)) continue;
      std::smatch u;
      const std::string file = m[3];
      if (section.rfind(".text", 0) != 0 || !std::regex_search(file, u, unit_re)) continue;
      const u64 lo = std::stoull(m[1], nullptr, 16), size = std::stoull(m[2], nullptr, 16);
      if (lo != 0 && size != 0) code.push_back({lo, lo + size, u[1]});
    }
  }
  std::set<std::string> units;
  for (const auto& r : code) units.insert(r.unit);
  std::cout << "link map: " << code.size() << " code sections of " << units.size() << " units:";
  for (const auto& u : units) std::cout << " " << u;
  std::cout << "\n";
  if (units.size() < 2) return std::cout << "FAIL: expected the code of two or more units\n", 1;
  std::map<u64, range> by_lo;
  for (const auto& r : code) by_lo[r.lo] = r;
  const auto unit_of = [&](u64 a) -> std::string {
    auto it = by_lo.upper_bound(a);
    if (it == by_lo.begin()) return "";
    --it;
    return a < it->second.hi ? it->second.unit : "";
  };
  // PLT sections (calls into shared libraries).
  std::vector<std::pair<u64, u64>> plt;
  {
    const std::regex hdr(R"(^\s*\d+\s+(\.plt[^\s]*)\s+([0-9a-f]+)\s+([0-9a-f]+)\s)");
    for (const auto& l : run_lines(quote(objdump) + " -h " + quote(exe))) {
      std::smatch m;
      if (!std::regex_search(l, m, hdr)) continue;
      const u64 size = std::stoull(m[2], nullptr, 16), lo = std::stoull(m[3], nullptr, 16);
      plt.push_back({lo, lo + size});
    }
  }
  const auto in_plt = [&](u64 a) {
    for (const auto& [lo, hi] : plt)
      if (a >= lo && a < hi) return true;
    return false;
  };
  // Every direct call / jump of a unit's code stays in the unit (or goes to the PLT).
  std::map<std::string, std::size_t> calls, strays;
  {
    const std::regex br(
        R"(^\s*([0-9a-f]+):\s+(?:[a-z]+\s+)?(call|jmp|j[a-z]+)[a-z]*\s+(?:0x)?([0-9a-f]+)\s+<([^>]*)>)");
    for (const auto& l :
         run_lines(quote(objdump) + " -d --no-show-raw-insn -j .text " + quote(exe))) {
      std::smatch m;
      if (!std::regex_search(l, m, br)) continue;
      const std::string from = unit_of(std::stoull(m[1], nullptr, 16));
      if (from.empty()) continue;
      const u64 target = std::stoull(m[3], nullptr, 16);
      const std::string to = unit_of(target);
      ++calls[from];
      if (to == from || in_plt(target)) continue;
      if (++strays[from] <= 20)
        std::cout << "  " << from << " code leaves its unit (to "
                  << (to.empty() ? std::string("outside the library's units") : to) << "): " << l
                  << "\n";
    }
  }
  int rc = 0;
  for (const auto& u : units) {
    std::cout << u << ": " << calls[u] << " direct calls and jumps, " << strays[u]
              << " leave the unit\n";
    if (calls[u] == 0 || strays[u] != 0) rc = 1;
  }
  // Functions defined once per unit: the copies that a plain link would have merged.
  std::map<std::string, std::set<std::string>> copies;
  {
    const std::regex sym(R"(^([0-9a-f]+)\s+[tTwW]\s+(\S+)$)");
    for (const auto& l : run_lines(quote(nm) + " " + quote(exe))) {
      std::smatch m;
      if (!std::regex_match(l, m, sym)) continue;
      const std::string u = unit_of(std::stoull(m[1], nullptr, 16));
      if (!u.empty()) copies[m[2]].insert(u);
    }
  }
  std::size_t shared = 0;
  std::vector<std::string> examples[3];  // attnkit::detail, Eigen, std::vector code
  const char* const kinds[3] = {"N7attnkit6detail", "5Eigen", "St6vector"};
  for (const auto& [name, in] : copies) {
    if (in.size() != units.size()) continue;
    ++shared;
    for (int k = 0; k < 3; ++k)  // not templated on the xsimd arch: merged by a plain link
      if (name.find(kinds[k]) != std::string::npos && name.find("5xsimd") == std::string::npos &&
          examples[k].size() < 2)
        examples[k].push_back(name);
  }
  std::cout << shared << " functions have one copy in each of the " << units.size()
            << " units, e.g.\n";
  for (const auto& ex : examples)
    for (const auto& e : ex) std::cout << "  " << e << "\n";
  if (shared == 0) rc = 1;
  std::cout << (rc ? "FAIL\n" : "ok\n");
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() == 4 && a[0] == "isa") return check_isa(a[1], a[2], a[3]);
  if (a.size() == 5 && a[0] == "private") return check_private(a[1], a[2], a[3], a[4]);
  std::cerr << "usage: objcheck isa <objdump> <unit.o> sse2|avx2|avx512\n"
               "       objcheck private <objdump> <nm> <program> <link map>\n";
  return 2;
}
