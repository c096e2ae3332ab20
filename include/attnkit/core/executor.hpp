// SPDX-License-Identifier: Apache-2.0
// Threads: kernels hand independent work items to an executor the caller controls. The work split
// never depends on the thread count, so results are bitwise identical for any number of threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "config.hpp"
#include "error.hpp"

namespace attnkit {

/// Runs body(i) for every i in [0, n), in any order and on any threads, and returns when all are
/// done. Implement this interface to run attnkit on your own pool (TBB, OpenMP, an engine's
/// scheduler). Exceptions thrown by body are rethrown to the caller.
class executor {
 public:
  virtual ~executor() = default;
  virtual int num_threads() const = 0;
  virtual void parallel_for(index_t n, const std::function<void(index_t)>& body) = 0;
};

/// Runs everything on the calling thread.
class serial_executor final : public executor {
 public:
  int num_threads() const override { return 1; }
  void parallel_for(index_t n, const std::function<void(index_t)>& body) override {
    for (index_t i = 0; i < n; ++i) body(i);
  }
};

/// A fixed-size pool: the calling thread plus `threads - 1` workers pull work items from a shared
/// counter. A parallel_for issued from inside a work item runs inline (no nested parallelism; this
/// holds for any pool, the flag is per thread). Calls from several threads run one at a time, so a
/// work item must not wait for another thread that calls the same pool.
class thread_pool final : public executor {
 public:
  explicit thread_pool(int threads = 0) {
    if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
    n_threads_ = threads;
    try {
      for (int t = 1; t < threads; ++t) workers_.emplace_back([this] { worker_loop(); });
    } catch (...) {  // a thread could not be started: stop and join the ones that were
      shutdown();
      throw;
    }
  }
  ~thread_pool() override { shutdown(); }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int num_threads() const override { return n_threads_; }

  void parallel_for(index_t n, const std::function<void(index_t)>& body) override {
    if (n <= 0) return;
    if (n == 1 || workers_.empty() || in_worker()) {
      for (index_t i = 0; i < n; ++i) body(i);
      return;
    }
    std::lock_guard<std::mutex> call_lock(call_mu_);  // one parallel_for at a time
    {
      std::lock_guard<std::mutex> lk(mu_);
      body_ = &body;
      n_ = n;
      next_.store(0);
      done_ = 0;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    in_worker() = true;
    index_t mine = run_items(body, n);
    in_worker() = false;
    std::unique_lock<std::mutex> lk(mu_);
    done_ += mine;
    // Every item is done and no worker is still inside run_items: only then may the next call
    // reset next_ (a worker that straddled two calls ran items twice, or with a null body).
    done_cv_.wait(lk, [&] { return done_ == n_ && active_ == 0; });
    body_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void shutdown() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  static bool& in_worker() {
    thread_local bool flag = false;
    return flag;
  }
  /// Claims and runs items of the current call until none is left; returns how many it ran.
  index_t run_items(const std::function<void(index_t)>& body, index_t n) {
    index_t count = 0;
    for (index_t i; (i = next_.fetch_add(1)) < n; ++count) {
      try {
        body(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = std::current_exception();
      }
    }
    return count;
  }
  void worker_loop() {
    in_worker() = true;
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<void(index_t)>* body;
      index_t n;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || (generation_ != seen && body_ != nullptr); });
        if (stop_) return;
        seen = generation_;
        body = body_;  // this call's body and size, read under the lock
        n = n_;
        ++active_;
      }
      index_t mine = run_items(*body, n);
      std::lock_guard<std::mutex> lk(mu_);
      done_ += mine;
      --active_;
      if (done_ == n_ && active_ == 0) done_cv_.notify_all();
    }
  }

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex call_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(index_t)>* body_ = nullptr;
  index_t n_ = 0, done_ = 0;
  int active_ = 0;  // workers inside run_items of the current call
  std::atomic<index_t> next_{0};
  std::uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

/// The process-wide pool used when params.exec is null: one thread per hardware thread, or
/// ATTNKIT_NUM_THREADS if set in the environment (1 to 1024; any other value is an error naming the
/// variable).
inline executor& default_executor() {
  static thread_pool pool([] {
    const char* s = std::getenv("ATTNKIT_NUM_THREADS");
    if (!s || !*s) return 0;
    char* end = nullptr;
    const long n = std::strtol(s, &end, 10);
    if (*end != '\0' || n < 1 || n > 1024)
      detail::fail("environment variable ATTNKIT_NUM_THREADS='", s,
                   "': expected a thread count in [1, 1024]");
    return int(n);
  }());
  return pool;
}

namespace detail {
inline executor& resolve(executor* e) { return e ? *e : default_executor(); }
}  // namespace detail

}  // namespace attnkit
