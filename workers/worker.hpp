// One worker process: its own libuv loop over the listening sockets it inherited from the master.
// workers/ knows server/ (the protocol) and cache/ (through the dispatcher), never master/.
#pragma once

#include <cstdint>
#include <vector>

#include "cache/cache.hpp"
#include "server/dispatcher.hpp"
#include "server/memcached.hpp"
#include "server/static_files.hpp"
#include "workers/body_spool.hpp"
#include "workers/recycle.hpp"
#include "workers/request_log.hpp"
#include "workers/scoreboard.hpp"

namespace workers {

// Exit status meaning "this configuration can never work" (e.g. the application's
// worker_started() failed): the master stops the whole server instead of respawning (sysexits'
// EX_CONFIG). Its one home: run_worker returns it, the master reads it.
inline constexpr int kExitFatalConfig = 78;

struct WorkerSettings {
  int id = 1;                               // 1..processes
  std::vector<int> listen_fds;              // inherited, non-blocking
  std::vector<int> persistent_fds;          // those of listen_fds that are --persistent-socket
  std::vector<int> http_fds;                // those of listen_fds that are --http-socket
  std::vector<int> memcached_fds;           // those of listen_fds that are --memcached-socket
  cache::Cache* memcached_cache = nullptr;  // what they serve
  std::uint32_t memcached_keysize = server::memcached::kDefaultKeyLimit;
  bool memcached_io_uring = false;  // serve their connections on an io_uring thread (memcached_ring.hpp)
  int ready_fd = -1;                // write end of the master's readiness pipe
  std::uint32_t buffer_size = 65535;
  std::uint64_t max_body = UINT64_MAX;  // --limit-post: larger application bodies are refused (413)
  // --post-buffering: application bodies of this many bytes or more go to a file, not memory.
  std::uint64_t post_buffering = kDefaultPostBuffering;
  int socket_timeout_s = 4;
  int stop_mercy_s = 60;              // how long a graceful stop waits for in-flight requests
  RecyclePolicy recycle;              // when this worker recycles itself (all zero = never)
  WorkerSlot* slot = nullptr;         // this worker's scoreboard slot (shared with the master)
  WorkerTotals* totals = nullptr;     // this worker id's records (shared; survive respawns)
  ScoreboardHeader* board = nullptr;  // the scoreboard's header (server-wide totals)
  RequestLogOptions request_log;      // what finished requests write to the log
  // The whole scoreboard (every worker's slot, this one's included): read for app_backlog only.
  const WorkerSlot* scoreboard = nullptr;
  int scoreboard_size = 0;
  bool publish_busy = false;  // --harakiri is on: publish when each request starts, and what it is
  cache::CacheSet* caches = nullptr;
  server::Application* application = nullptr;
  int application_threads = 1;   // --threads: threads running a blocking application
  bool exclusive_accept = true;  // EPOLLEXCLUSIVE on the listening sockets (false: every worker wakes)
  const server::StaticFiles* static_files = nullptr;  // --static-map & co: served before the application
  // The workers' shared queue of ready application requests (handoff.hpp): this generation's socket
  // pair from the master, -1 when there is none (one worker, or no application threads).
  int handoff_send_fd = -1;
  int handoff_receive_fd = -1;
};

// Whether a worker runs `app` on application threads (a blocking application, --threads > 0): then
// it takes part in the scheduling of application connections (docs/architecture.md).
inline bool uses_application_threads(const server::Application* app, int threads) {
  return app != nullptr && app->blocking() && threads > 0;
}

// What the master writes in a slot before forking its worker, until the worker publishes its own: one
// that will take part counts as taking part from the fork on, every thread free. With "takes no part"
// there, a saturated worker believed itself the only one while the others were still starting, and
// took queued connections that a starting worker's free thread would have run sooner.
inline std::int32_t starting_app_backlog(const server::Application* app, int threads) {
  return uses_application_threads(app, threads) ? -threads : kNoAppBacklog;
}

// Runs the worker until it is told to stop; returns the process exit status.
int run_worker(const WorkerSettings& settings);

}  // namespace workers
