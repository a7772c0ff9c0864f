// Who runs a worker's loop (docs/architecture.md, "Application requests on the loop's thread").
//
// The thread that runs the loop also runs an application request itself, with no hand-off: handing
// every request to an application thread and back cost two context switches, the largest part of a
// hello-world's server CPU. While it is inside the application it lends the loop: a standby thread
// that finds a lend older than the takeover delay takes the loop and serves everything else (cache
// requests, other connections, signals, ticks) until the lender comes back, which then hands its
// finished request to the loop and becomes the standby. A fast application request is lent and
// reclaimed with two atomic operations, nothing else; the standby looks once per period while the
// loop is busy (each look is a wake-up, dear on this VM: the period is what it costs) and sleeps
// untimed while it is idle.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "common/clock.hpp"

namespace workers {

class LoopBaton {
 public:
  // The holder is about to run an application request itself, which began at `start_ns`
  // (common::monotonic_ns): the standby may take the loop. Returns the lend for reclaim() (the count
  // may move on in another holder's hands meanwhile).
  std::uint64_t lend(std::int64_t start_ns) {
    lent_at_ns_.store(start_ns, std::memory_order_relaxed);  // published by the store of state_
    const std::uint64_t lent = ++lends_ << 2 | kLent;        // lends_: only the holder touches it
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

  // The standby: waits until it takes the loop (true) or the loop is over (false). It looks once per
  // `period` and takes a lend that has run `delay` by then: a lend is taken between `delay` and
  // `delay + period` after it began (when still running). A lend's start, not two sightings of it,
  // tells its age: the standby need not look twice per delay.
  bool wait_to_take(std::chrono::nanoseconds delay, std::chrono::nanoseconds period) {
    std::unique_lock<std::mutex> lock(mutex_);
    std::uint64_t seen = state_.load(std::memory_order_acquire);
    while (!done_) {
      if (seen & kLent) {
        // This lend's start or a later lend's (too young then, never too old): the acquire above
        // orders it after the store lend() made before publishing `seen`.
        const std::int64_t age = common::monotonic_ns() - lent_at_ns_.load(std::memory_order_relaxed);
        std::uint64_t expected = seen;
        // Taken: a state no lender's reclaim() matches; the taker holds the loop from here (and
        // lends_, which the lender's writes reached through state_).
        if (age >= delay.count() &&
            state_.compare_exchange_strong(expected, (seen & ~kLent) | kTaken, std::memory_order_acq_rel))
          return true;
      }
      wake_.wait_for(lock, period, [this] { return done_; });
      if (done_) break;
      const std::uint64_t now = state_.load(std::memory_order_acquire);
      if (now != seen || (now & kLent)) {  // the loop is busy, or the same lend runs on
        seen = now;
        continue;
      }
      // Held and unchanged for a whole period: the loop is idle; sleep untimed until the next lend.
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
  std::atomic<std::uint64_t> state_{0};      // lends_ << 2: held; | kLent while lent; | kTaken once taken
  std::uint64_t lends_ = 0;                  // the holder's (the holder changes only through state_)
  std::atomic<std::int64_t> lent_at_ns_{0};  // when the latest lend's request began
  std::atomic<bool> idle_{false};            // the standby sleeps untimed: a lend must wake it
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;  // guarded by mutex_
};

}  // namespace workers
