// SPDX-License-Identifier: Apache-2.0
// attnkit-run shared helpers: the variant registry, option parsing, loading .npy inputs into
// owned buffers with tensor views, and staged outputs (written only when the whole run succeeded).
// Contract: README.md beside this file. Every bad input throws attnkit_run::bad_input (or
// attnkit::error from a kernel); main turns either into exit status 2 and one line on stderr.
#pragma once

#include <algorithm>
#include <array>
#include <attnkit/attnkit.hpp>
#include <attnkit/io/npy.hpp>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace attnkit_run {

using attnkit::index_t;

/// Any bad input: missing or unsupported file, wrong rank, mismatched dims, bad option.
class bad_input : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw bad_input(os.str());
}

class context;
using run_fn = void (*)(context&);

/// One registered variant: its runner and a one-line usage text (inputs and options).
struct runner_entry {
  run_fn run;
  std::string usage;
};

/// The registry, filled before main() by the static variant_registrar objects of run_*.cpp.
inline std::map<std::string, runner_entry>& registry() {
  static std::map<std::string, runner_entry> r;
  return r;
}

/// Registers a variant: `static const attnkit_run::variant_registrar reg("gla", &run_gla, "...");`
struct variant_registrar {
  variant_registrar(const char* name, run_fn fn, const char* usage) {
    registry()[name] = runner_entry{fn, usage};
  }
};

/// Command-line options after VARIANT IN_DIR OUT_DIR: `--name value`, `--name=value` or `--flag`.
/// A token after `--name` that does not start with "--" is its value. Variants read options through
/// the getters, which mark them used; main rejects any option no getter asked for.
class options {
 public:
  void add(const std::string& name, std::optional<std::string> value) {
    if (name.empty()) fail("option '--': empty option name");
    for (const auto& o : opts_)
      if (o.name == name) fail("option '--", name, "' is given twice");
    opts_.push_back({name, std::move(value), false});
  }

  /// A flag (no value). `--flag=1`-style values are rejected.
  bool flag(const std::string& name) {
    auto* o = find(name);
    if (!o) return false;
    if (o->value) fail("option '--", name, "' takes no value (got '", *o->value, "')");
    return true;
  }
  bool has(const std::string& name) { return find(name) != nullptr; }

  std::optional<std::string> raw(const std::string& name) {
    auto* o = find(name);
    if (!o) return std::nullopt;
    if (!o->value) fail("option '--", name, "' needs a value");
    return o->value;
  }

  /// An integer in [lo, hi]; `def` if absent.
  long long get_int(const std::string& name, long long def, long long lo, long long hi) {
    const auto s = raw(name);
    if (!s) return def;
    long long v = 0;
    const char* b = s->data();
    const char* e = b + s->size();
    if (!s->empty() && *b == '+') ++b;
    const auto r = std::from_chars(b, e, v);
    if (s->empty() || r.ec != std::errc() || r.ptr != e)
      fail("option '--", name, "': expected an integer, got '", *s, "'");
    if (v > hi) fail("option '--", name, "': ", v, " exceeds the largest supported value ", hi);
    if (v < lo) {
      if (hi == std::numeric_limits<long long>::max())
        fail("option '--", name, "': must be >= ", lo, ", got ", v);
      fail("option '--", name, "': ", v, " is out of range [", lo, ", ", hi, "]");
    }
    return v;
  }

  /// A finite number; `def` if absent.
  double get_double(const std::string& name, double def) {
    const auto s = raw(name);
    if (!s) return def;
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(s->c_str(), &end);
    if (s->empty() || end != s->c_str() + s->size() ||
        std::isspace(static_cast<unsigned char>((*s)[0])))
      fail("option '--", name, "': expected a number, got '", *s, "'");
    if (!std::isfinite(v) || errno == ERANGE)
      fail("option '--", name, "': expected a finite number, got '", *s, "'");
    return v;
  }

  /// One of `choices`; `def` if absent.
  std::string get_choice(const std::string& name, std::initializer_list<const char*> choices,
                         const std::string& def) {
    const auto s = raw(name);
    if (!s) return def;
    std::string list;
    for (const char* c : choices) {
      if (*s == c) return *s;
      list += (list.empty() ? "" : "|") + std::string(c);
    }
    fail("option '--", name, "': expected ", list, ", got '", *s, "'");
  }

  /// Throws for the first option that no getter asked about.
  void check_all_used(const std::string& variant) const {
    for (const auto& o : opts_)
      if (!o.used) fail("option '--", o.name, "' is not an option of variant '", variant, "'");
  }

 private:
  struct entry {
    std::string name;
    std::optional<std::string> value;
    bool used;
  };
  entry* find(const std::string& name) {
    for (auto& o : opts_)
      if (o.name == name) {
        o.used = true;
        return &o;
      }
    return nullptr;
  }
  std::vector<entry> opts_;
};

/// Notes for stderr, printed after a successful run (a failing run prints its one error line).
inline std::vector<std::string>& notes() {
  static std::vector<std::string> n;
  return n;
}

/// The options every recurrent-family variant has: --scale X (0 reproduced as zeroed queries),
/// --mode chunk|recurrent|auto (default chunk), --chunk-size C, and the executor. A mode the
/// variant lacks (attnkit's variant table says which) runs its recurrent algorithm and says so
/// on stderr (after the run). Params is the family's params struct.
template <class Params>
struct recurrent_options {
  Params p;
  bool zero_scale = false;  // an explicit --scale 0: the caller zeroes q and keeps scale 1

  explicit recurrent_options(context& ctx);
};

/// A variant's usage line: its inputs and outputs from attnkit's variant table, then `opts`.
inline std::string usage_of(const char* variant, const std::string& opts) {
  const auto& v = attnkit::variant_by_name(variant);
  return std::string(v.inputs) + " -> " + v.outputs + "; options " + opts;
}

/// An owned dense (C-order) input tensor with the file it came from.
template <class T>
struct tensor {
  std::string file;  // e.g. "in/q.npy", for messages
  std::vector<index_t> shape;
  std::vector<T> buf;

  bool present() const { return !file.empty(); }
  index_t dim(std::size_t r) const { return shape.at(r); }

  template <std::size_t R>
  attnkit::tensor_view<T, R> view() {
    std::array<index_t, R> ext{};
    for (std::size_t r = 0; r < R; ++r) ext[r] = shape.at(r);
    return attnkit::tensor_view<T, R>(buf.data(), ext);
  }
  template <std::size_t R>
  attnkit::cview<T, R> cview() const {
    std::array<index_t, R> ext{};
    for (std::size_t r = 0; r < R; ++r) ext[r] = shape.at(r);
    return attnkit::cview<T, R>(buf.data(), ext);
  }
};

inline std::string shape_str(const std::vector<index_t>& s) {
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + ")";
}

/// Names axis r of a comma-separated layout such as "B,Tq,Hq,Dk".
inline std::string axis_of(const std::string& axes, std::size_t r) {
  std::size_t start = 0;
  for (std::size_t i = 0; i < r && start != std::string::npos; ++i) {
    start = axes.find(',', start);
    if (start != std::string::npos) ++start;
  }
  if (start == std::string::npos) return "?";
  return axes.substr(start, axes.find(',', start) - start);
}

/// One run of one variant: the folders, the options, inputs and staged outputs.
class context {
 public:
  context(std::string variant, std::string in_dir, std::string out_dir, options opts)
      : variant_(std::move(variant)),
        in_dir_(std::move(in_dir)),
        out_dir_(std::move(out_dir)),
        opts_(std::move(opts)) {}

  const std::string& variant() const { return variant_; }
  options& opts() { return opts_; }
  /// --reference: run the naive reference implementation instead of the fast kernels.
  bool reference() const { return reference_; }
  /// The executor for params.exec (nullptr: the library default, all cores).
  attnkit::executor* exec() const { return pool_.get(); }

  /// Reads the options every variant has (--threads, --reference) and checks the folders.
  void read_common_options() {
    const long long threads = opts_.get_int("threads", 0, 1, 4096);
    if (threads > 0) pool_ = std::make_unique<attnkit::thread_pool>(int(threads));
    reference_ = opts_.flag("reference");
    std::error_code ec;
    if (!std::filesystem::is_directory(in_dir_, ec))
      fail("IN_DIR '", in_dir_, "': not a directory");
    if (std::filesystem::exists(out_dir_, ec) && !std::filesystem::is_directory(out_dir_, ec))
      fail("OUT_DIR '", out_dir_, "': exists and is not a directory");
  }

  std::string input_path(const std::string& name) const {
    return (std::filesystem::path(in_dir_) / (name + ".npy")).string();
  }
  bool has_input(const std::string& name) const {
    std::error_code ec;
    return std::filesystem::exists(input_path(name), ec);
  }

  /// The float dtype ("<f2", "<f4" or "<f8") shared by the float inputs `names` that exist; the
  /// first name is required. Any other dtype, or a mix, is an error naming the file.
  std::string float_dtype(std::initializer_list<const char*> names) {
    std::string dtype, first;
    for (const char* n : names) {
      if (dtype.empty() || has_input(n)) {
        const auto& a = raw(n);
        if (!is_float_dtype(a.dtype))
          fail("'", input_path(n), "': dtype '", a.dtype,
               "' is not a float input type (expected <f2, <f4 or <f8)");
        if (dtype.empty()) {
          dtype = a.dtype;
          first = n;
        } else if (a.dtype != dtype) {
          fail("'", input_path(n), "': dtype '", a.dtype, "' differs from '", input_path(first),
               "' (", dtype, "); all float inputs must share one dtype");
        }
      }
    }
    return dtype;
  }

  /// Loads a required float input of rank `axes`-count (e.g. "B,T,H,D") converted to T (float16
  /// inputs widen exactly to float).
  template <class T>
  tensor<T> load(const std::string& name, const std::string& axes) {
    const auto& a = raw(name);
    check_rank(name, a, axes);
    if (!is_float_dtype(a.dtype))
      fail("'", input_path(name), "': dtype '", a.dtype,
           "' is not a float input type (expected <f2, <f4 or <f8)");
    tensor<T> t;
    t.file = input_path(name);
    t.shape = a.shape;
    t.buf = a.as<T>();
    return t;
  }
  /// An optional float input: absent (present() == false) if the file does not exist.
  template <class T>
  tensor<T> load_optional(const std::string& name, const std::string& axes) {
    return has_input(name) ? load<T>(name, axes) : tensor<T>{};
  }
  /// An optional rank-1 index array (int32 or int64) as int32.
  tensor<std::int32_t> load_index_optional(const std::string& name,
                                           const std::string& axes = "N+1") {
    if (!has_input(name)) return {};
    const auto& a = raw(name);
    check_rank(name, a, axes);
    if (a.dtype != "<i4" && a.dtype != "<i8")
      fail("'", input_path(name), "': dtype '", a.dtype,
           "' is not an index type (expected <i4 or <i8)");
    tensor<std::int32_t> t;
    t.file = input_path(name);
    t.shape = a.shape;
    try {
      t.buf = a.as<std::int32_t>();
    } catch (const attnkit::error& e) {
      fail("'", input_path(name), "': ", strip_prefix(e.what()));
    }
    return t;
  }

  /// Requires t.dim(r) == expected; `why` says where the expectation comes from.
  template <class T>
  void expect_dim(const tensor<T>& t, const std::string& axes, std::size_t r, index_t expected,
                  const std::string& why) const {
    if (t.dim(r) != expected)
      fail("'", t.file, "': dim ", r, " (", axis_of(axes, r), ") is ", t.dim(r), ", expected ",
           expected, " (", why, ")");
  }

  /// float16 runs (inputs "<f2"): computed in float, every float output written as "<f2".
  void set_half_outputs(bool on) { half_outputs_ = on; }

  /// Stages an output; nothing is written until commit(). In a float16 run a float output is
  /// rounded to float16 (round to nearest even, as attnkit::fp16) when staged.
  template <class T>
  void save(const std::string& name, std::vector<T> data, std::vector<index_t> shape) {
    if constexpr (std::is_same_v<T, float>) {
      if (half_outputs_) {
        std::vector<attnkit::fp16> h(data.size());
        attnkit::to_fp16(data.data(), h.data(), data.size());
        save(name, std::move(h), std::move(shape));
        return;
      }
    }
    outputs_.push_back(
        {name, [data = std::move(data), shape = std::move(shape)](const std::string& path) {
           attnkit::io::save_npy(path, data.data(), shape);
         }});
  }

  /// Creates OUT_DIR if needed and writes every staged output under a temporary name, then renames
  /// them into place. On failure the temporaries are removed and nothing is renamed.
  void commit() {
    namespace fs = std::filesystem;
    const fs::path dir(out_dir_);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec || !fs::is_directory(dir))
      fail("OUT_DIR '", out_dir_, "': cannot create the folder (", ec.message(), ")");
    // A per-run suffix keeps concurrent runs into one folder from sharing temporaries.
    const std::string suffix = ".attnkit-run-" + std::to_string(std::random_device{}()) + ".tmp";
    std::vector<std::pair<fs::path, fs::path>> done;
    const auto cleanup = [&] {
      for (const auto& d : done) fs::remove(d.first, ec);
    };
    try {
      for (const auto& o : outputs_) {
        const fs::path final_path = dir / (o.name + ".npy");
        const fs::path tmp = dir / ("." + o.name + ".npy" + suffix);
        done.push_back({tmp, final_path});
        o.write(tmp.string());
      }
    } catch (const std::exception& e) {
      cleanup();
      fail("OUT_DIR '", out_dir_, "': ", e.what());
    }
    // All outputs or none: a failed rename removes the outputs this run already put in place.
    for (std::size_t i = 0; i < done.size(); ++i) {
      fs::rename(done[i].first, done[i].second, ec);
      if (ec) {
        const std::string why = ec.message();
        for (std::size_t j = 0; j < i; ++j) fs::remove(done[j].second, ec);
        for (std::size_t j = i; j < done.size(); ++j) fs::remove(done[j].first, ec);
        fail("'", done[i].second.string(), "': cannot write (", why, ")");
      }
    }
  }

 private:
  struct staged {
    std::string name;
    std::function<void(const std::string&)> write;
  };

  const attnkit::io::npy_array& raw(const std::string& name) {
    auto it = cache_.find(name);
    if (it != cache_.end()) return it->second;
    // Only regular files: a FIFO or device would block or stream forever.
    std::error_code ec;
    if (std::filesystem::exists(input_path(name), ec) &&
        !std::filesystem::is_regular_file(input_path(name), ec))
      fail("'", input_path(name), "': not a regular file");
    try {
      return cache_.emplace(name, attnkit::io::load_npy(input_path(name))).first->second;
    } catch (const attnkit::error& e) {
      fail(strip_prefix(e.what()));  // the message names the file
    }
  }
  static std::string strip_prefix(const std::string& msg) {
    return msg.rfind("attnkit: npy: ", 0) == 0 ? msg.substr(14) : msg;
  }
  void check_rank(const std::string& name, const attnkit::io::npy_array& a,
                  const std::string& axes) const {
    const index_t rank = index_t(std::count(axes.begin(), axes.end(), ',')) + 1;
    if (a.rank() != rank)
      fail("'", input_path(name), "': expected rank ", rank, " [", axes, "], got rank ", a.rank(),
           " with shape ", shape_str(a.shape));
  }

  static bool is_float_dtype(const std::string& d) {
    return d == "<f2" || d == "<f4" || d == "<f8";
  }

  std::string variant_, in_dir_, out_dir_;
  options opts_;
  bool reference_ = false;
  bool half_outputs_ = false;
  std::unique_ptr<attnkit::thread_pool> pool_;
  std::map<std::string, attnkit::io::npy_array> cache_;
  std::vector<staged> outputs_;
};

template <class Params>
recurrent_options<Params>::recurrent_options(context& ctx) {
  auto& o = ctx.opts();
  const double scale = o.get_double("scale", 0.0);
  // attnkit reads scale 0 as "default"; an explicit 0 is reproduced by zeroed q with scale 1.
  zero_scale = o.has("scale") && scale == 0.0;
  p.scale = zero_scale ? 1.0 : scale;
  const std::string mode = o.get_choice("mode", {"chunk", "recurrent", "auto"}, "chunk");
  p.algo = mode == "chunk"       ? attnkit::algorithm::chunk
           : mode == "recurrent" ? attnkit::algorithm::recurrent
                                 : attnkit::algorithm::automatic;
  if (!attnkit::supports(attnkit::variant_by_name(ctx.variant()), p.algo)) {
    notes().push_back(ctx.variant() + " has no " + mode +
                      " algorithm; ran its recurrent algorithm");
    p.algo = attnkit::algorithm::recurrent;
  }
  p.chunk_size = index_t(o.get_int("chunk-size", 64, 1, 4096));
  p.exec = ctx.exec();
}

/// The element count of an output or work buffer `what` of shape `dims`, refused when it cannot
/// be allocated (an input with a zero extent may carry any other extents).
inline std::size_t checked_elems(const std::string& what, std::initializer_list<index_t> dims) {
  index_t n = 1;
  std::string shape;
  bool overflow = false;
  for (index_t d : dims) {
    overflow |= __builtin_mul_overflow(n, d, &n);
    if (!shape.empty()) shape += ',';
    shape += std::to_string(d);
  }
  if (overflow || n > (index_t(1) << 40))
    fail("output '", what, "' of shape (", shape, ") is too large to allocate");
  return std::size_t(n);
}

/// The tensors every recurrent-family runner reads and writes: q, k [B,T,H,K], v [B,T,HV,V]
/// (HV = H unless the family groups value heads), optional cu_seqlens [N+1] (then B = 1) and
/// h0 [N,HV,K,V]; outputs o [B,T,HV,V] and ht [N,HV,K,V]. A runner calls load_qkv, loads its
/// gates, calls load_states, runs the kernel on the views and calls save.
template <class T>
struct recurrent_io {
  tensor<T> q, k, v, h0;
  tensor<std::int32_t> cu;
  index_t B = 0, T_ = 0, H = 0, HV = 0, K = 0, V = 0, N = 0;
  std::string n_why;  // where N comes from, for messages
  std::vector<T> o, ht;
  bool pool = false;         // --state-indices: h0 and ht are pools of P rows
  tensor<std::int32_t> idx;  // state_indices [N]
  index_t P = 0;

  void load_qkv(context& ctx, bool grouped_v) {
    const std::string qa = "B,T,H,K", va = "B,T,HV,V";
    q = ctx.load<T>("q", qa);
    k = ctx.load<T>("k", qa);
    v = ctx.load<T>("v", va);
    B = q.dim(0), T_ = q.dim(1), H = q.dim(2), K = q.dim(3);
    for (std::size_t r = 0; r < 4; ++r) ctx.expect_dim(k, qa, r, q.dim(r), "shape of q.npy");
    ctx.expect_dim(v, va, 0, B, "B of q.npy");
    ctx.expect_dim(v, va, 1, T_, "T of q.npy");
    if (!grouped_v)
      ctx.expect_dim(v, va, 2, H, std::string("H of q.npy; ") + ctx.variant() + " needs HV = H");
    HV = v.dim(2), V = v.dim(3);
    if (K < 1) fail("'", q.file, "': dim 3 (K) must be >= 1");
    if (V < 1) fail("'", v.file, "': dim 3 (V) must be >= 1");
    if (grouped_v && (H < 1 || HV % H != 0))
      fail("'", v.file, "': dim 2 (HV) is ", HV, ", must be a multiple of H = ", H, " of q.npy");
  }

  void load_states(context& ctx) {
    const std::string sa = "N,HV,K,V";
    cu = ctx.load_index_optional("cu_seqlens");
    if (cu.present() && B != 1)
      fail("'", q.file, "': dim 0 (B) is ", B, ", varlen (cu_seqlens) needs B = 1");
    if (cu.present() && cu.dim(0) < 1) fail("'", cu.file, "': needs at least one entry (N+1 >= 1)");
    N = cu.present() ? cu.dim(0) - 1 : B;
    n_why = cu.present() ? "one state per sequence of cu_seqlens.npy" : "B of q.npy";
    if (pool) {  // h0 [P,HV,K,V] is the pool, state_indices [N] names each sequence's row
      idx = ctx.load_index_optional("state_indices", "N");
      if (!idx.present()) fail("option '--state-indices' needs state_indices.npy in IN_DIR");
      ctx.expect_dim(idx, "N", 0, N, n_why);
      h0 = ctx.load<T>("h0", "P,HV,K,V");
      P = h0.dim(0);
      ctx.expect_dim(h0, "P,HV,K,V", 1, HV, "HV of v.npy");
      ctx.expect_dim(h0, "P,HV,K,V", 2, K, "K of q.npy");
      ctx.expect_dim(h0, "P,HV,K,V", 3, V, "V of v.npy");
      return;
    }
    h0 = ctx.load_optional<T>("h0", sa);
    if (h0.present()) {
      ctx.expect_dim(h0, sa, 0, N, n_why);
      ctx.expect_dim(h0, sa, 1, HV, "HV of v.npy");
      ctx.expect_dim(h0, sa, 2, K, "K of q.npy");
      ctx.expect_dim(h0, sa, 3, V, "V of v.npy");
    }
  }

  /// Zeroes q (an explicit --scale 0), sizes the outputs and returns the state views.
  attnkit::recurrent_state<T> outputs(bool zero_scale) {
    if (zero_scale) std::fill(q.buf.begin(), q.buf.end(), T(0));
    o.assign(checked_elems("o", {B, T_, HV, V}), T(0));
    attnkit::recurrent_state<T> s;
    if (pool) {  // ht starts as the pool and is updated in place: rows not named stay as they came
      ht = h0.buf;
      s.h0 = attnkit::make_view(static_cast<const T*>(ht.data()), P, HV, K, V);
      s.ht = attnkit::make_view(ht.data(), P, HV, K, V);
      if (cu.present()) s.cu_seqlens = cu.template cview<1>();
      s.state_indices = idx.template cview<1>();
      return s;
    }
    ht.assign(checked_elems("ht", {N, HV, K, V}), T(0));
    if (h0.present()) s.h0 = h0.template cview<4>();
    s.ht = attnkit::make_view(ht.data(), N, HV, K, V);
    if (cu.present()) s.cu_seqlens = cu.template cview<1>();
    return s;
  }
  attnkit::tensor_view<T, 4> ov() { return attnkit::make_view(o.data(), B, T_, HV, V); }

  void save(context& ctx) {
    ctx.save("o", std::move(o), {B, T_, HV, V});
    ctx.save("ht", std::move(ht), {pool ? P : N, HV, K, V});
  }
};

/// Calls f(T{}) with T = float or double, the dtype shared by the float inputs `names`: "<f8" runs
/// in double, "<f4" in float, and "<f2" in float with its outputs written as float16.
template <class F>
void dispatch_float(context& ctx, std::initializer_list<const char*> names, F&& f) {
  const std::string dtype = ctx.float_dtype(names);
  if (dtype == "<f8") {
    f(double{});
  } else {
    ctx.set_half_outputs(dtype == "<f2");
    f(float{});
  }
}

}  // namespace attnkit_run
