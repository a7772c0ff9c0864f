// Who runs a worker's loop (docs/architecture.md, "Application requests on the loop's thread").
//
// The thread that runs the loop also runs an application request itself, with no hand-off: handing
// every request to an application thread and back cost two context switches, the largest part of a
// hello-world's server CPU. While it is inside the application it lends the loop: a standby thread
// that sees the same lend still going after the takeover delay takes the loop and serves everything
// else (cache requests, other connections, signals, ticks) until the lender comes back, which then
// hands its finished request to the loop and becomes the standby. A fast application request is lent
// and reclaimed with two atomic operations, nothing else; the standby wakes once per delay while the
// loop is busy and sleeps untimed while it is idle.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace workers {

class LoopBaton {
 public:
  // The holder is about to run an application request itself: the standby may take the loop. Returns
  // the lend for reclaim() (the count may move on in another holder's hands meanwhile).
  std::uint64_t lend() {
    const std::uint64_t lent = ++lends_ << 2 | kLent;  // lends_: only the holder touches it
    state_.store(lent, std::memory_order_seq_cst);
    // Pairs with the standby's store of idle_ then load of state_ (both seq_cst): one of the two sees
    // the other, so a standby going idle never misses this lend.
    if (idle_.load(std::memory_order_seq_cst)) {
      std::lock_guard<std::mutex> lock(mutex_);
      idle_.store(false, std::memory_order_relaxed);
      wake_.notify_one();
    }
    return lent;
  }

  // Back from the application: true when the loop is still ours (nobody took it).
  bool reclaim(std::uint64_t lent) {
    return state_.compare_exchange_strong(lent, lent & ~kLent, std::memory_order_acq_rel);
  }

  // The standby: waits until it takes the loop (true) or the loop is over (false). A lend seen at two
  // checks one delay apart has run at least that long.
  bool wait_to_take(std::chrono::microseconds delay) {
    std::unique_lock<std::mutex> lock(mutex_);
    std::uint64_t seen = state_.load(std::memory_order_acquire);
    while (!done_) {
      if (seen & kLent) {
        wake_.wait_for(lock, delay, [this] { return done_; });
        if (done_) break;
        std::uint64_t expected = seen;
        // Taken: a state no lender's reclaim() matches; the taker holds the loop from here (and
        // lends_, which the lender's writes reached through state_).
        if (state_.compare_exchange_strong(expected, (seen & ~kLent) | kTaken, std::memory_order_acq_rel))
          return true;
        seen = expected;
        continue;
      }
      // Held: poll once more in case a lend comes soon (the loop is busy), then sleep untimed.
      wake_.wait_for(lock, delay, [this] { return done_; });
      const std::uint64_t now = state_.load(std::memory_order_acquire);
      if (now != seen) {
        seen = now;
        continue;
      }
      idle_.store(true, std::memory_order_seq_cst);
      if (state_.load(std::memory_order_seq_cst) == seen)
        wake_.wait(lock, [this] { return done_ || !idle_.load(std::memory_order_relaxed); });
      idle_.store(false, std::memory_order_relaxed);
      seen = state_.load(std::memory_order_acquire);
    }
    return false;
  }

  // The loop is over: the standby stops waiting.
  void finish() {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    wake_.notify_all();
  }

 private:
  static constexpr std::uint64_t kLent = 1;
  static constexpr std::uint64_t kTaken = 2;
  std::atomic<std::uint64_t> state_{0};  // lends_ << 2: held; | kLent while lent; | kTaken once taken
  std::uint64_t lends_ = 0;              // the holder's (the holder changes only through state_)
  std::atomic<bool> idle_{false};        // the standby sleeps untimed: a lend must wake it
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;  // guarded by mutex_
};

}  // namespace workers
