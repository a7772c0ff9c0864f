// Worker recycling (uWSGI's --max-requests, --max-requests-delta, --max-worker-lifetime,
// --reload-on-rss): a worker that is due stops accepting, finishes what it holds and exits with
// kExitRecycled; the master starts its successor at once, outside the fork-bomb throttle.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace workers {

// Exit status of a worker that recycled itself (sysexits' EX_TEMPFAIL).
inline constexpr int kExitRecycled = 75;

struct RecyclePolicy {
  std::uint64_t max_requests = 0;         // 0 = never; already includes this worker's delta
  std::int64_t max_lifetime_ms = 0;       // 0 = never
  std::uint64_t reload_on_rss_bytes = 0;  // 0 = off
};

// uWSGI's threshold for worker `id` (1-based): max_requests + (id - 1) * delta, so the workers of a
// server do not all recycle in the same second.
std::uint64_t max_requests_for(int id, std::uint64_t max_requests, std::uint64_t delta);

// Resident set size of a process in bytes (pid 0 = this one), from /proc/PID/statm; 0 when unreadable.
std::uint64_t resident_bytes(pid_t pid);
// The same from an open /proc/PID/statm (read from offset 0: one syscall per reading).
std::uint64_t resident_bytes_from(int statm_fd);

// Decides, once per pass of the worker loop, whether the worker is due.
class Recycler {
 public:
  Recycler(const RecyclePolicy& policy, std::int64_t started_ms) : policy_(policy), started_ms_(started_ms) {}
  ~Recycler();
  Recycler(const Recycler&) = delete;
  Recycler& operator=(const Recycler&) = delete;

  bool enabled() const {
    return policy_.max_requests != 0 || policy_.max_lifetime_ms != 0 || policy_.reload_on_rss_bytes != 0;
  }

  // "" = not due; else uWSGI's reason ("max requests reached (5 >= 5)"). The RSS is read only when
  // the request count moved (uWSGI checks it after each request).
  std::string due(std::uint64_t requests, std::int64_t now_ms);

 private:
  RecyclePolicy policy_;
  std::int64_t started_ms_;
  std::uint64_t last_requests_ = 0;
  int statm_fd_ = -1;  // /proc/self/statm, opened at the first --reload-on-rss check (after the fork)
};

}  // namespace workers
