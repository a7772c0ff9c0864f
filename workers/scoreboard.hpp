// What a worker publishes about itself for the master to read: one slot per worker in a small
// MAP_SHARED array the master maps before forking. Plain integers and atomics only (no pointers),
// since the master and the worker are different processes.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace workers {

// WorkerSlot::app_backlog of a worker that takes no part in application scheduling (no application
// threads, stopping, gone): never the least loaded, never a free thread.
inline constexpr std::int32_t kNoAppBacklog = std::numeric_limits<std::int32_t>::max();

struct WorkerSlot {
  std::atomic<std::int32_t> pid;
  // common::monotonic_ms() at which the current request started; 0 = idle. Harakiri reads it.
  std::atomic<std::int64_t> busy_since_ms;
  // Accept accounting, for the thundering-herd figures in docs/architecture.md.
  std::atomic<std::uint64_t> wakeups;         // times the accept sockets woke this worker
  std::atomic<std::uint64_t> accepted;        // connections accepted
  std::atomic<std::uint64_t> wasted_wakeups;  // wake-ups whose first accept found nothing
  std::atomic<std::uint64_t> requests;        // requests handled
  std::atomic<std::uint64_t> bad_requests;    // closed for bad input or timeout
  std::atomic<std::uint32_t> request_len;     // bytes of `request` in use
  // Application requests held minus application threads: < 0 = that many threads free, >= 0 = every
  // thread busy and that many requests queued. The workers read each other's to decide who accepts
  // (docs/architecture.md, "Scheduling application requests"); kNoAppBacklog = takes no part.
  std::atomic<std::int32_t> app_backlog;
  char request[128];  // what the busy request is, for the harakiri log line
};

static_assert(std::is_standard_layout_v<WorkerSlot>);
static_assert(sizeof(WorkerSlot) == 192, "WorkerSlot is shared between processes: keep its layout fixed");
static_assert(std::atomic<std::int64_t>::is_always_lock_free &&
              std::atomic<std::uint64_t>::is_always_lock_free);

}  // namespace workers
