// What the workers publish for the master, the stats server and /metrics to read: one MAP_SHARED
// area the master maps before forking. Plain integers and atomics only (no pointers), since its
// readers and writers are different processes; its layout is fixed (static_asserts below) and
// described by the header at its start.
//
//   ScoreboardHeader | WorkerTotals[id_count] (index = worker id, 0 unused) | WorkerSlot[slot_count]
//   | StoreSyncRecord[cache_count] (index = the cache's position in the CacheSet)
//
// Two kinds of record, as uWSGI has them: WorkerTotals belongs to a worker *id* and survives its
// respawns (uWSGI keeps `requests`, `exceptions`, `tx`, `respawn_count` across them); WorkerSlot
// belongs to one process (during a reload an old and a new process of one id run side by side, each
// with its own slot, both adding to the id's totals).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>

namespace workers {

// WorkerSlot::app_backlog of a worker that takes no part in application scheduling (no application
// threads, stopping, gone): never the least loaded, never a free thread.
inline constexpr std::int32_t kNoAppBacklog = std::numeric_limits<std::int32_t>::max();

inline constexpr std::uint32_t kScoreboardMagic = 0x55534231;  // "USB1"
inline constexpr std::uint32_t kScoreboardVersion = 3;

// Request-duration histogram: the upper bounds of its buckets in microseconds (Prometheus `le`,
// in seconds), from a cache hit (~10 us) to a slow page; the last count is +Inf.
inline constexpr std::array<std::uint64_t, 15> kDurationBoundsUs = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 10000000};

struct DurationHistogram {
  std::atomic<std::uint64_t> buckets[kDurationBoundsUs.size() + 1];  // not cumulative; last = +Inf
  std::atomic<std::uint64_t> sum_us;

  void observe(std::uint64_t us) {
    std::size_t i = 0;
    while (i < kDurationBoundsUs.size() && us > kDurationBoundsUs[i]) ++i;
    buckets[i].fetch_add(1, std::memory_order_relaxed);
    sum_us.fetch_add(us, std::memory_order_relaxed);
  }
};

// What a histogram is kept for: the application (uWSGI's app 0) and each cache command.
enum class RequestKind : std::uint8_t { app, get, set, del, dict_get, stream_get, dump, magic, other, count };
inline constexpr std::array<std::string_view, static_cast<std::size_t>(RequestKind::count)>
    kRequestKindNames = {"app", "get", "set", "del", "dict_get", "stream_get", "dump", "magic", "other"};

// The kind of a modifier1 111 request, by its modifier2 (server/protocol.hpp's CacheCommand values).
constexpr RequestKind cache_request_kind(std::uint8_t modifier2) {
  switch (modifier2) {
    case 0:
      return RequestKind::get;
    case 1:
      return RequestKind::set;
    case 2:
      return RequestKind::del;
    case 3:
    case 4:
      return RequestKind::dict_get;
    case 5:
      return RequestKind::stream_get;
    case 6:
      return RequestKind::dump;
    case 17:
      return RequestKind::magic;
    default:
      return RequestKind::other;
  }
}

// One worker id, across its respawns. The workers add to the counters; the master writes the rest.
struct WorkerTotals {
  std::atomic<std::uint64_t> requests;         // application requests (uWSGI's `requests`)
  std::atomic<std::uint64_t> cache_requests;   // modifier1 111 requests (counted, not logged by default)
  std::atomic<std::uint64_t> exceptions;       // application errors answered with a 500
  std::atomic<std::uint64_t> tx;               // bytes of responses handed to the socket
  std::atomic<std::uint64_t> running_time_us;  // time spent in application requests (uWSGI's running_time)
  std::atomic<std::uint64_t> status_4xx;
  std::atomic<std::uint64_t> status_5xx;
  std::atomic<std::uint64_t> logged_lines;  // request log lines written
  // Written by the master:
  std::atomic<std::uint64_t> respawn_count;   // processes started for this id
  std::atomic<std::int64_t> last_spawn;       // time(2) of the latest start
  std::atomic<std::uint64_t> harakiri_count;  // harakiri kills of this id
  std::atomic<std::int32_t> active_slot;      // the slot of the id's current process; -1 = none
  std::atomic<std::int32_t> pad;
  DurationHistogram durations[static_cast<std::size_t>(RequestKind::count)];
};

// One process's slot. The master clears it before the fork; the worker fills it.
struct WorkerSlot {
  std::atomic<std::int32_t> pid;
  // Application requests being handled right now (uWSGI's `status` busy/idle; `in_request`).
  std::atomic<std::int32_t> in_request;
  // common::monotonic_ms() at which the current request started; 0 = idle. Harakiri reads it.
  std::atomic<std::int64_t> busy_since_ms;
  // Accept accounting, for the thundering-herd figures in docs/architecture.md.
  std::atomic<std::uint64_t> wakeups;         // times the accept sockets woke this worker
  std::atomic<std::uint64_t> accepted;        // connections accepted
  std::atomic<std::uint64_t> wasted_wakeups;  // wake-ups whose first accept found nothing
  std::atomic<std::uint64_t> requests;        // requests handled by this process (uWSGI's delta_requests)
  std::atomic<std::uint64_t> bad_requests;    // closed for bad input or timeout
  std::atomic<std::uint32_t> request_len;     // bytes of `request` in use
  // Application requests held minus application threads: < 0 = that many threads free, >= 0 = every
  // thread busy and that many requests queued. The workers read each other's to decide who accepts
  // (docs/architecture.md, "Scheduling application requests"); kNoAppBacklog = takes no part.
  std::atomic<std::int32_t> app_backlog;
  char request[128];  // what the busy request is, for the harakiri log line
  // The workers' shared queue of ready application requests (handoff.hpp): sent there, taken from it.
  std::atomic<std::uint64_t> handed_off;
  std::atomic<std::uint64_t> handed_in;
};

// The master's store syncs of one cache (its 1-second cycle; the flush at stop too).
struct StoreSyncRecord {
  std::atomic<std::uint64_t> syncs;
  std::atomic<std::uint64_t> failures;
  std::atomic<std::uint64_t> duration_us;       // all syncs together
  std::atomic<std::uint64_t> last_duration_us;  // the latest one
};

struct ScoreboardHeader {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint32_t header_size;
  std::uint32_t totals_size;  // sizeof(WorkerTotals)
  std::uint32_t slot_size;    // sizeof(WorkerSlot)
  std::uint32_t id_count;     // WorkerTotals records (worker ids 0..id_count-1; 0 unused)
  std::uint32_t slot_count;
  std::uint32_t cache_count;                  // StoreSyncRecord records
  std::atomic<std::uint64_t> total_requests;  // every worker's application requests (the log's req: R/T)
  std::uint64_t reserved[7];
};

static_assert(std::is_standard_layout_v<WorkerSlot> && std::is_standard_layout_v<WorkerTotals> &&
              std::is_standard_layout_v<ScoreboardHeader>);
static_assert(sizeof(WorkerSlot) == 208, "WorkerSlot is shared between processes: keep its layout fixed");
static_assert(sizeof(DurationHistogram) == 136);
static_assert(sizeof(WorkerTotals) == 96 + 9 * 136, "WorkerTotals is shared: keep its layout fixed");
static_assert(sizeof(ScoreboardHeader) == 96);
static_assert(sizeof(StoreSyncRecord) == 32);
static_assert(std::atomic<std::int64_t>::is_always_lock_free &&
              std::atomic<std::uint64_t>::is_always_lock_free);

// The mapped area (created by the master before any fork, inherited by every worker). Offsets from
// the header only, so it would read the same at any address.
class Scoreboard {
 public:
  // Maps a zeroed area for worker ids 1..processes and `slots` process slots. Throws std::runtime_error.
  static Scoreboard create(int processes, std::size_t slots, std::size_t caches);
  Scoreboard() = default;
  Scoreboard(Scoreboard&& other) noexcept : base_(other.base_), bytes_(other.bytes_) {
    other.base_ = nullptr;
  }
  Scoreboard& operator=(Scoreboard&& other) noexcept;
  ~Scoreboard();

  bool valid() const { return base_ != nullptr; }
  ScoreboardHeader& header() const { return *reinterpret_cast<ScoreboardHeader*>(base_); }
  std::size_t id_count() const { return header().id_count; }
  std::size_t slot_count() const { return header().slot_count; }
  WorkerTotals& totals(int id) const {
    return reinterpret_cast<WorkerTotals*>(base_ + header().header_size)[id];
  }
  WorkerSlot& slot(std::size_t index) const {
    return reinterpret_cast<WorkerSlot*>(base_ + header().header_size +
                                         header().id_count * header().totals_size)[index];
  }
  std::size_t cache_count() const { return header().cache_count; }
  StoreSyncRecord& store_sync(std::size_t cache_index) const {
    const ScoreboardHeader& h = header();
    return reinterpret_cast<StoreSyncRecord*>(base_ + h.header_size + h.id_count * h.totals_size +
                                              h.slot_count * h.slot_size)[cache_index];
  }

 private:
  char* base_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace workers
