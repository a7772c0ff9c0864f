// The master's side of the caches: creating them from the --cache/--cache2 specs (with --cache-sync,
// UDP sync and node replication), the cache --memcached-socket serves, the store flushes, and the
// cache-jobs thread (sweeper, hot-item reordering, periodic store syncs). The engine itself is cache/.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cache/cache.hpp"
#include "config/config.hpp"
#include "server/udp_sync.hpp"
#include "workers/scoreboard.hpp"

namespace master {

// Creates every configured cache into `caches` (logging its geometry), copies other nodes' caches
// (--cache-sync: none usable throws) and makes a UDP receiver per udp= cache into `udp_receivers` (not
// started). Throws std::runtime_error for a geometry the engine refuses.
void create_caches(const config::Config& config, cache::CacheSet& caches,
                   std::vector<std::unique_ptr<server::UdpReceiver>>& udp_receivers);

// The cache --memcached-socket serves: --memcached-cache's, else the default one. Throws
// std::runtime_error naming the option when there is none or its keysize is too small.
cache::Cache* memcached_cache(cache::CacheSet& caches, const config::Config& config);

// Syncs every store file, logging each (at the server's stop and after --pyrun). `board` may be
// invalid (no scoreboard yet): then nothing is recorded for the metrics.
void flush_stores(cache::CacheSet& caches, const workers::Scoreboard& board);

// The cache's background jobs, in one thread of the master so that neither a worker nor the master's
// signal loop (respawns, stops, reloads) ever waits on them:
//  - the expiry sweeper, every --cache-expire-freq seconds (unless --cache-no-expire);
//  - every cycle (kCycleMs): hot-item reordering, and the store sync of each cache whose store_sync
//    is N > 0, every N cycles (msync(MS_SYNC) of a large store can take seconds).
// The engine bounds the work per lock hold; none of these holds a lock across a whole table.
class CacheJobs {
 public:
  static constexpr int kCycleMs = 1000;  // the cycle of reordering and store syncs

  CacheJobs(cache::CacheSet& caches, const workers::Scoreboard& board, bool sweep, int sweep_interval_s,
            bool report_freed)
      : caches_(caches),
        board_(board),
        sweep_(sweep),
        sweep_interval_ms_(sweep_interval_s * 1000LL),
        report_freed_(report_freed) {}
  ~CacheJobs() { stop(); }
  CacheJobs(const CacheJobs&) = delete;
  CacheJobs& operator=(const CacheJobs&) = delete;

  void start();
  void stop();

 private:
  void loop();
  void sweep();
  void cycle();

  cache::CacheSet& caches_;
  const workers::Scoreboard& board_;
  const bool sweep_;
  const std::int64_t sweep_interval_ms_;
  const bool report_freed_;
  std::uint64_t cycles_ = 0;  // cycles run so far (store_sync counts them)
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
};

}  // namespace master
