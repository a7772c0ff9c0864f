// The worker's application thread pool (--threads), apart from its event loop. A template over the
// worker and connection types, which stay private to worker.cpp.
#pragma once

#include <uv.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace workers {

// Application threads (--threads): a blocking application (the hosted Python app) runs here, off the
// event loop, so a slow request never delays the cache requests the loop keeps serving. The loop hands
// over a connection whose request is complete and does not touch it until the thread gives it back
// through `finished` and a uv_async wake-up.
template <typename Worker, typename Connection>
class ApplicationThreads {
 public:
  using Run = void (*)(Worker*, Connection*);

  void start(int count, uv_loop_t* loop, Worker* worker, Run run, uv_async_cb on_finished) {
    worker_ = worker;
    run_ = run;
    uv_async_init(loop, &wake_, on_finished);
    wake_.data = worker;
    limit_ = count;
    for (int i = 0; i < count; ++i) threads_.emplace_back([this] { serve_queue(); });
  }
  bool started() const { return !threads_.empty(); }

  void submit(Connection* conn) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(conn);
    }
    ready_.notify_one();
  }

  // A request the loop's thread runs itself (loop_baton.hpp) counts against the threads from the
  // moment another thread took the loop: the queue waits for it as for a busy thread (--threads N
  // means N at once). Its connection comes back through `finished` like the threads' own.
  void adopt_inline() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++running_;
  }
  void return_inline(Connection* conn) { done(conn); }

  std::vector<Connection*> take_finished() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<Connection*> out;
    out.swap(finished_);
    return out;
  }

  // wait = true joins the threads (graceful stop: none is busy any more); false leaves busy threads
  // behind for the process exit to end (immediate stop).
  void shutdown(bool wait) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (std::thread& thread : threads_) {
      if (wait) {
        thread.join();
      } else {
        thread.detach();
      }
    }
    threads_.clear();
  }

 private:
  void serve_queue() {
    for (;;) {
      Connection* conn;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || (!queue_.empty() && running_ < limit_); });
        if (queue_.empty() || running_ >= limit_) return;
        conn = queue_.front();
        queue_.pop_front();
        ++running_;
      }
      run_(worker_, conn);
      done(conn);
    }
  }

  void done(Connection* conn) {
    bool more;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --running_;
      finished_.push_back(conn);
      more = !queue_.empty();
    }
    if (more) ready_.notify_one();  // a thread that waited for a free slot rather than for work
    uv_async_send(&wake_);
  }

  Worker* worker_ = nullptr;
  Run run_ = nullptr;
  uv_async_t wake_{};
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Connection*> queue_;      // guarded by mutex_
  std::vector<Connection*> finished_;  // guarded by mutex_
  bool stopping_ = false;              // guarded by mutex_
  int running_ = 0;                    // guarded by mutex_: requests running (threads' and adopted)
  int limit_ = 0;
};

}  // namespace workers
