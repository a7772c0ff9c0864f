#include "master/master.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cache/cache.hpp"
#include "common/clock.hpp"
#include "common/log.hpp"
#include "master/application_settings.hpp"
#include "master/cheaper.hpp"
#include "master/extras.hpp"
#include "master/listeners.hpp"
#include "master/observability.hpp"
#include "master/privileges.hpp"
#include "master/signals.hpp"
#include "server/cache_sync.hpp"
#include "server/dispatcher.hpp"
#include "server/udp_sync.hpp"
#include "workers/scoreboard.hpp"
#include "workers/worker.hpp"

namespace master {

namespace {

using common::monotonic_ms;

constexpr int kCycleMs = 1000;                // the cycle of the cache jobs (reordering, store sync)
constexpr int kPollMs = 100;                  // how often the master loop looks at deadlines
constexpr std::int64_t kQuickDeathMs = 1000;  // a worker dying sooner than this "died at start"
constexpr int kQuickDeathsBeforeThrottle = 3;
constexpr std::int64_t kThrottleFirstMs = 500;
constexpr std::int64_t kThrottleMaxMs = 30000;
constexpr std::int64_t kReplacementReadyMs = 5000;  // a reload waits this long for a new worker to be ready
constexpr std::int64_t kImmediateStopMs = 3000;     // SIGINT: workers get this long before SIGKILL
constexpr std::int64_t kHarakiriGraceMs = 2000;     // harakiri: SIGTERM first, SIGKILL after this

// The cache --memcached-socket serves: --memcached-cache's, else the default one. Its keysize must hold
// every key the protocol accepts.
cache::Cache* memcached_cache(cache::CacheSet& caches, const config::Config& config) {
  if (caches.empty())
    throw std::runtime_error(
        "--memcached-socket: there is no cache to serve (add --cache ITEMS or a --cache2)");
  cache::Cache* cache = caches.find(config.memcached_cache);
  if (cache == nullptr)
    throw std::runtime_error(fmt::format(
        "--memcached-cache {}: no cache has this name (see --cache2 name=...)", config.memcached_cache));
  if (cache->geometry().keysize < config.memcached_keysize)
    throw std::runtime_error(fmt::format(
        "--memcached-keysize {}: cache \"{}\" has keysize {}; raise its keysize or lower --memcached-keysize",
        config.memcached_keysize, cache->geometry().name, cache->geometry().keysize));
  return cache;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* abbrev = sigabbrev_np(WTERMSIG(status));
    return fmt::format("killed by signal {} (SIG{}){}", WTERMSIG(status), abbrev != nullptr ? abbrev : "?",
                       WCOREDUMP(status) ? ", core dumped" : "");
  }
  return fmt::format("ended with wait status {}", status);
}

sigset_t master_signal_set() {
  sigset_t set;
  sigemptyset(&set);
  for (const SignalSpec& spec : kSignalTable) sigaddset(&set, spec.signum);
  return set;
}

cache::Geometry geometry_from(const config::CacheSpec& spec) {
  cache::Geometry geometry;
  geometry.name = spec.name;
  geometry.items = spec.items;
  geometry.blocksize = spec.blocksize;
  geometry.keysize = spec.keysize;
  geometry.hashsize = spec.hashsize;
  geometry.purge_lru = spec.purge_lru;
  geometry.ignore_full = spec.ignore_full;
  geometry.no_expire = spec.no_expire;
  geometry.lastmod = spec.lastmod;
  geometry.math_initial = spec.math_initial;
  geometry.bitmap = spec.bitmap;
  geometry.blocks = spec.blocks;
  geometry.store = spec.store;
  geometry.store_delete = spec.store_delete;
  geometry.store_sync = spec.store_sync;
  return geometry;
}

// Syncs a cache's store, timed, and records it for the metrics (record may be null: no scoreboard yet).
bool timed_store_sync(cache::Cache& cache, workers::StoreSyncRecord* record, std::int64_t& took_ms) {
  const std::int64_t started = common::monotonic_ns();
  const bool ok = cache.sync_store();
  const std::int64_t took_ns = common::monotonic_ns() - started;
  took_ms = took_ns / 1000000;
  if (record != nullptr) {
    const auto us = static_cast<std::uint64_t>(took_ns / 1000);
    record->syncs.fetch_add(1);
    if (!ok) record->failures.fetch_add(1);
    record->duration_us.fetch_add(us);
    record->last_duration_us.store(us);
  }
  return ok;
}

// The cache's background jobs, in one thread of the master so that neither a worker nor the master's
// signal loop (respawns, stops, reloads) ever waits on them:
//  - the expiry sweeper, every --cache-expire-freq seconds (unless --cache-no-expire);
//  - every cycle (kCycleMs): hot-item reordering, and the store sync of each cache whose store_sync
//    is N > 0, every N cycles (msync(MS_SYNC) of a large store can take seconds).
// The engine bounds the work per lock hold; none of these holds a lock across a whole table.
class CacheJobs {
 public:
  CacheJobs(cache::CacheSet& caches, const workers::Scoreboard& board, bool sweep, int sweep_interval_s,
            bool report_freed)
      : caches_(caches),
        board_(board),
        sweep_(sweep),
        sweep_interval_ms_(sweep_interval_s * 1000LL),
        report_freed_(report_freed) {}
  ~CacheJobs() { stop(); }

  void start() {
    if (sweep_) common::log("cache sweeper thread enabled");
    thread_ = std::thread([this] { loop(); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void loop() {
    const std::int64_t start = monotonic_ms();
    std::int64_t next_sweep = sweep_ ? start : INT64_MAX;
    std::int64_t next_cycle = start + kCycleMs;
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      lock.unlock();
      const std::int64_t now = monotonic_ms();
      if (now >= next_sweep) {
        sweep();
        next_sweep = monotonic_ms() + sweep_interval_ms_;
      }
      if (now >= next_cycle) {
        cycle();
        next_cycle = monotonic_ms() + kCycleMs;
      }
      lock.lock();
      const std::int64_t wait_ms =
          std::max<std::int64_t>(0, std::min(next_sweep, next_cycle) - monotonic_ms());
      wake_.wait_for(lock, std::chrono::milliseconds(wait_ms), [this] { return stopping_; });
    }
  }

  void sweep() {
    for (const auto& cache : caches_.all()) {
      if (cache->geometry().no_expire) continue;
      const std::int64_t started = monotonic_ms();
      const std::uint64_t freed = cache->sweep_expired();
      if (report_freed_ && freed > 0)
        common::log("freed {} items for cache \"{}\"", freed, cache->geometry().name);
      common::log_debug("sweeper: cache \"{}\": freed {} item(s) in {} ms", cache->geometry().name, freed,
                        monotonic_ms() - started);
    }
  }

  void cycle() {
    ++cycles_;
    for (std::size_t index = 0; index < caches_.all().size(); ++index) {
      cache::Cache* cache = caches_.all()[index].get();
      std::int64_t started = monotonic_ms();
      const std::uint64_t moved = cache->reorder_hot_items();
      common::log_debug("reorder: cache \"{}\": moved {} item(s) in {} ms", cache->geometry().name, moved,
                        monotonic_ms() - started);
      const int every = cache->geometry().store_sync;
      if (cache->has_store() && every > 0 && cycles_ % static_cast<std::uint64_t>(every) == 0) {
        common::log_debug("store sync: cache \"{}\": started", cache->geometry().name);
        std::int64_t took_ms = 0;
        const bool ok = timed_store_sync(*cache, &board_.store_sync(index), took_ms);
        common::log_debug("store sync: cache \"{}\": {} in {} ms", cache->geometry().name,
                          ok ? "done" : "FAILED", took_ms);
      }
    }
  }

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

class Master {
 public:
  explicit Master(const config::Config& config) : config_(config) {}
  ~Master();
  int run();

 private:
  enum class Phase { running, stopping, stopped };

  struct Child {
    int id = 0;  // 1..processes
    pid_t pid = -1;
    int slot = -1;
    std::int64_t started_ms = 0;
    bool ready = false;
    bool retiring = false;        // told to stop (reload or server stop); no respawn when it exits
    std::int64_t kill_at_ms = 0;  // SIGKILL deadline once told to stop (0 = none)
    bool harakiri = false;
  };

  struct IdState {
    int quick_deaths = 0;
    std::int64_t respawn_at_ms = 0;
  };

  void create_caches();
  void create_scoreboard();
  std::optional<pid_t> spawn(int id);
  [[noreturn]] void become_worker(int id, int slot);
  void handle_signals();
  void read_ready_pipe();
  void reap_children();
  void on_child_exit(pid_t pid, int status);
  void ensure_workers();
  int worker_count() const { return cheaper_.enabled() ? cheaper_.target() : config_.processes; }
  void run_cheaper();
  void advance_reload();
  void check_deadlines();
  void check_harakiri();
  void check_evil_rss();
  void log_stats();
  void begin_stop(bool graceful, int exit_status);
  void flush_stores();  // sync every store file, logging each
  void signal_children(int signum, std::int64_t kill_after_ms);
  Child* find_child(pid_t pid);
  Child* active_child(int id);  // the non-retiring worker serving id (the newest)
  void cleanup();

  config::Config config_;
  cache::CacheSet caches_;
  cache::Cache* memcached_cache_ = nullptr;  // what --memcached-socket serves
  std::unique_ptr<server::Application> application_;
  std::unique_ptr<Extras> extras_;  // static files, hooks, daemons, touch-reload, titles (extras.hpp)
  Cheaper cheaper_{config_};        // --cheaper: how many of the --processes workers run now
  std::int64_t next_cheaper_ms_ = 0;
  std::vector<Listener> listeners_;
  workers::Scoreboard board_;
  std::size_t slot_count_ = 0;
  std::vector<bool> slot_used_;
  std::unique_ptr<StatsServer> stats_server_;
  std::vector<Child> children_;
  std::vector<IdState> ids_;  // index = id
  int signal_fd_ = -1;
  int ready_pipe_[2] = {-1, -1};
  std::unique_ptr<CacheJobs> cache_jobs_;
  std::vector<std::unique_ptr<server::UdpReceiver>> udp_receivers_;  // threads, started with cache_jobs_
  Phase phase_ = Phase::running;
  bool served_ = false;  // the workers were started
  int exit_status_ = 0;
  std::int64_t stop_deadline_ms_ = 0;
  // Graceful reload: ids still to replace, and the replacement under way.
  std::deque<int> reload_queue_;
  int reload_id_ = 0;
  pid_t reload_old_pid_ = -1;
  pid_t reload_new_pid_ = -1;
  std::int64_t reload_step_started_ms_ = 0;
};

Master::~Master() { cleanup(); }

void Master::cleanup() {
  if (extras_) extras_->stop();
  if (cache_jobs_) cache_jobs_->stop();
  for (auto& receiver : udp_receivers_) receiver->stop();
  // A start that failed leaves nothing behind; a server that ran leaves its files unless --vacuum (uWSGI).
  close_listeners(listeners_, config_.vacuum || !served_);
  if (config_.vacuum) {
    for (const std::string& pidfile : {config_.pidfile, config_.pidfile2}) {
      if (!pidfile.empty()) unlink(pidfile.c_str());
    }
  }
  if (signal_fd_ >= 0) close(signal_fd_);
  signal_fd_ = -1;
  for (int& fd : ready_pipe_) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  stats_server_.reset();  // its process reads the scoreboard: stopped before the area goes
  board_ = workers::Scoreboard{};
}

// uWSGI cache features that are parsed (so uWSGI configurations start) but not implemented: each one a
// user asked for gets a line at start saying what it means for them, instead of silence.
void warn_unsupported(const config::CacheSpec& spec) {
  const auto warn = [&](const std::string& what) {
    common::log("WARNING: cache \"{}\": {} (docs/differences.md)", spec.name, what);
  };
  if (!spec.bitmap && spec.blocks > spec.items)
    warn(fmt::format("blocks={} is ignored: without bitmap mode every item has exactly one block",
                     spec.blocks));
}

void Master::create_caches() {
  for (const config::CacheSpec& spec : config_.caches) {
    std::unique_ptr<cache::Cache> made = cache::Cache::create(geometry_from(spec));
    // What the UDP receiver and the start-up sync write to: the cache itself, never sent on to nodes
    // (two nodes sending to each other would bounce every update forever).
    cache::Cache& local = *made;
    if (!spec.nodes.empty()) made = server::replicate_to_nodes(std::move(made), spec.nodes);
    cache::Cache& created = caches_.add(std::move(made));
    const cache::Geometry& g = created.geometry();
    common::log(
        "cache \"{}\" ready: items={} blocksize={} keysize={} hashsize={} purge_lru={} store={}{} largest "
        "value={}",
        g.name, g.items, g.blocksize, g.keysize, g.hashsize, g.purge_lru ? "yes" : "no",
        g.store.empty() ? "none" : g.store,
        g.bitmap ? fmt::format(" bitmap blocks={}", g.blocks != 0 ? g.blocks : g.items) : "",
        cache::largest_value(g));
    warn_unsupported(spec);
    if (!spec.sync.empty()) {  // uWSGI's cache-sync: copy another node's cache now; none usable = exit 1
      const server::SyncResult synced =
          server::sync_cache_from_nodes(local, spec.sync, config_.socket_timeout * 1000);
      if (!synced.ok) throw std::runtime_error(synced.error);
    }
    if (!spec.udp_servers.empty())
      udp_receivers_.push_back(std::make_unique<server::UdpReceiver>(local, spec.udp_servers));
    if (!spec.nodes.empty())
      common::log("UDP cache sync: cache \"{}\" sends its updates to {}", spec.name,
                  fmt::join(spec.nodes, ", "));
  }
}

void Master::create_scoreboard() {
  // Room for every worker twice over: during a reload a worker and its replacement overlap.
  slot_count_ = static_cast<std::size_t>(config_.processes) * 2;
  board_ = workers::Scoreboard::create(config_.processes, slot_count_, caches_.all().size());
  for (std::size_t i = 0; i < slot_count_; ++i)
    board_.slot(i).app_backlog.store(workers::kNoAppBacklog);  // no worker
  slot_used_.assign(slot_count_, false);
}

std::optional<pid_t> Master::spawn(int id) {
  auto free_slot = std::find(slot_used_.begin(), slot_used_.end(), false);
  if (free_slot == slot_used_.end()) {
    common::log("cannot start worker {}: every scoreboard slot is in use", id);
    return std::nullopt;
  }
  int slot = static_cast<int>(free_slot - slot_used_.begin());
  workers::WorkerSlot& s = board_.slot(static_cast<std::size_t>(slot));
  s.pid.store(0);
  s.in_request.store(0);
  s.busy_since_ms.store(0);
  s.wakeups.store(0);
  s.accepted.store(0);
  s.wasted_wakeups.store(0);
  s.requests.store(0);
  s.bad_requests.store(0);
  s.request_len.store(0);
  s.app_backlog.store(workers::starting_app_backlog(application_.get(), config_.threads));

  const pid_t master_pid = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    common::log("cannot start worker {}: fork: {}", id, std::strerror(errno));
    return std::nullopt;
  }
  if (pid == 0) {
    // Outlive no master (no orphan keeps the socket or the cache busy). A master that died before
    // this child ran never sends the death signal: the child finds another parent and leaves.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != master_pid) _exit(0);
    become_worker(id, slot);
  }
  slot_used_[static_cast<std::size_t>(slot)] = true;
  s.pid.store(pid);  // before the worker's own store: the stats see the process at once
  workers::WorkerTotals& totals = board_.totals(id);
  totals.respawn_count.fetch_add(1);
  totals.last_spawn.store(static_cast<std::int64_t>(time(nullptr)));
  totals.active_slot.store(slot);
  Child child;
  child.id = id;
  child.pid = pid;
  child.slot = slot;
  child.started_ms = monotonic_ms();
  children_.push_back(child);
  common::log("worker {} (pid {}) started", id, pid);
  return pid;
}

void Master::become_worker(int id, int slot) {
  // The child keeps the listening fds, the caches and its scoreboard slot; the master's signal
  // plumbing is not its business. Signals stay blocked until the worker's loop can take them.
  close(signal_fd_);
  close(ready_pipe_[0]);
  if (stats_server_) stats_server_->close_inherited();
  workers::WorkerSettings settings;
  settings.id = id;
  for (const Listener& listener : listeners_) {
    settings.listen_fds.push_back(listener.fd);
    if (listener.kind == Listener::Kind::persistent) settings.persistent_fds.push_back(listener.fd);
    if (listener.kind == Listener::Kind::http) settings.http_fds.push_back(listener.fd);
    if (listener.kind == Listener::Kind::memcached) settings.memcached_fds.push_back(listener.fd);
  }
  settings.memcached_cache = memcached_cache_;
  settings.memcached_keysize = config_.memcached_keysize;
  settings.ready_fd = ready_pipe_[1];
  settings.buffer_size = config_.buffer_size;
  settings.socket_timeout_s = config_.socket_timeout;
  settings.stop_mercy_s = config_.reload_mercy;
  settings.recycle.max_requests =
      workers::max_requests_for(id, config_.max_requests, config_.max_requests_delta);
  settings.recycle.max_lifetime_ms = config_.max_worker_lifetime * 1000LL;
  settings.recycle.reload_on_rss_bytes = config_.reload_on_rss << 20;
  settings.slot = &board_.slot(static_cast<std::size_t>(slot));
  settings.totals = &board_.totals(id);
  settings.board = &board_.header();
  settings.request_log = request_log_options(config_);
  settings.scoreboard = &board_.slot(0);
  settings.scoreboard_size = static_cast<int>(slot_count_);
  settings.publish_busy = config_.harakiri > 0 || cheaper_.enabled();
  settings.caches = &caches_;
  settings.application = application_.get();
  settings.application_threads = config_.threads;
  settings.exclusive_accept = config_.accept_mode != "shared";
  settings.static_files = extras_->static_files();
  extras_->in_worker(id);
  int status = workers::run_worker(settings);
  _exit(status);
}

Master::Child* Master::find_child(pid_t pid) {
  for (Child& child : children_) {
    if (child.pid == pid) return &child;
  }
  return nullptr;
}

Master::Child* Master::active_child(int id) {
  Child* newest = nullptr;
  for (Child& child : children_) {
    if (child.id == id && !child.retiring && (newest == nullptr || child.started_ms >= newest->started_ms))
      newest = &child;
  }
  return newest;
}

void Master::read_ready_pipe() {
  std::int32_t pids[64];
  for (;;) {
    ssize_t n = read(ready_pipe_[0], pids, sizeof pids);
    if (n <= 0) return;
    for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(std::int32_t)); ++i) {
      if (Child* child = find_child(pids[i])) child->ready = true;
    }
  }
}

void Master::reap_children() {
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    on_child_exit(pid, status);
  }
}

void Master::on_child_exit(pid_t pid, int status) {
  if (stats_server_ && stats_server_->on_exit(pid, phase_ == Phase::running)) return;
  if (extras_->child_exited(pid, status)) return;
  Child* child = find_child(pid);
  if (child == nullptr) return;
  Child gone = *child;
  slot_used_[static_cast<std::size_t>(gone.slot)] = false;
  board_.slot(gone.slot).app_backlog.store(workers::kNoAppBacklog);  // no longer a candidate for connections
  if (board_.totals(gone.id).active_slot.load() == gone.slot) board_.totals(gone.id).active_slot.store(-1);
  children_.erase(children_.begin() + (child - children_.data()));
  const std::int64_t lived_ms = monotonic_ms() - gone.started_ms;

  if (WIFEXITED(status) && WEXITSTATUS(status) == workers::kExitFatalConfig) {
    common::log("worker {} (pid {}) exited with status {} (fatal configuration error): stopping the server",
                gone.id, pid, workers::kExitFatalConfig);
    begin_stop(true, 1);
    return;
  }
  if (gone.retiring || phase_ != Phase::running) {
    common::log("worker {} (pid {}) stopped: {}", gone.id, pid, describe_exit(status));
    return;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == workers::kExitRecycled) {
    // Planned (max-requests and friends): its successor starts now, whatever its age.
    common::log("worker {} (pid {}) recycled: starting a fresh one", gone.id, pid);
    if (reload_new_pid_ == pid) reload_new_pid_ = -1;
    ids_[static_cast<std::size_t>(gone.id)] = IdState{};
    return;
  }
  common::log("worker {} (pid {}) died: {}{}", gone.id, pid, describe_exit(status),
              gone.harakiri ? " (harakiri)" : "");
  if (reload_new_pid_ == pid) reload_new_pid_ = -1;  // the replacement failed: the reload step gives up
  IdState& state = ids_[static_cast<std::size_t>(gone.id)];
  if (lived_ms < kQuickDeathMs && !gone.harakiri) {
    ++state.quick_deaths;
  } else {
    state.quick_deaths = 0;
  }
  state.respawn_at_ms = 0;
  if (state.quick_deaths >= kQuickDeathsBeforeThrottle) {
    // Fork-bomb guard: a worker that cannot even start is retried ever more slowly, not in a tight loop.
    std::int64_t delay = kThrottleFirstMs << std::min(state.quick_deaths - kQuickDeathsBeforeThrottle, 10);
    delay = std::min(delay, kThrottleMaxMs);
    state.respawn_at_ms = monotonic_ms() + delay;
    common::log("worker {} died within {} ms of starting {} times in a row: respawning in {} ms", gone.id,
                kQuickDeathMs, state.quick_deaths, delay);
  }
}

void Master::ensure_workers() {
  if (phase_ != Phase::running) return;
  const std::int64_t now = monotonic_ms();
  for (int id = 1; id <= worker_count(); ++id) {
    if (active_child(id) != nullptr) continue;
    if (now < ids_[static_cast<std::size_t>(id)].respawn_at_ms) continue;
    spawn(id);
  }
}

// --cheaper, once a second: count the busy workers, let the algorithm decide (cheaper.hpp), start
// (ensure_workers does) or stop the newest worker gracefully. Not while a reload replaces workers.
void Master::run_cheaper() {
  const std::int64_t now = monotonic_ms();
  if (!cheaper_.enabled() || phase_ != Phase::running || now < next_cheaper_ms_) return;
  if (!reload_queue_.empty() || reload_id_ != 0) return;
  next_cheaper_ms_ = now + 1000;
  int running = 0, busy = 0;
  std::uint64_t requests = 0;
  for (const Child& child : children_) {
    requests += board_.slot(child.slot).requests.load(std::memory_order_relaxed);
    if (child.retiring) continue;
    ++running;
    if (board_.slot(child.slot).busy_since_ms.load(std::memory_order_relaxed) != 0) ++busy;
  }
  const int change = cheaper_.tick(running, busy, requests, now);
  if (change > 0) common::log("cheaper: {} of {} worker(s) busy: starting {} more", busy, running, change);
  for (int id = running; change < 0 && id > cheaper_.target(); --id) {
    Child* child = active_child(id);
    if (child == nullptr) continue;
    common::log("cheaper: worker {} (pid {}) is not needed ({} of {} busy): stopping it", id, child->pid,
                busy, running);
    kill(child->pid, SIGTERM);
    child->retiring = true;
    child->kill_at_ms = now + config_.reload_mercy * 1000LL;
  }
}

void Master::signal_children(int signum, std::int64_t kill_after_ms) {
  const std::int64_t deadline = monotonic_ms() + kill_after_ms;
  for (Child& child : children_) {
    kill(child.pid, signum);
    child.retiring = true;
    if (child.kill_at_ms == 0 || deadline < child.kill_at_ms) child.kill_at_ms = deadline;
  }
}

void Master::begin_stop(bool graceful, int exit_status) {
  if (phase_ == Phase::stopping && graceful)
    return;  // already stopping; an immediate stop may still hurry it
  phase_ = Phase::stopping;
  exit_status_ = std::max(exit_status_, exit_status);
  reload_queue_.clear();
  reload_id_ = 0;
  if (graceful) {
    const std::int64_t mercy = config_.reload_mercy * 1000LL;
    common::log("graceful stop: waiting up to {} s for workers to finish in-flight requests",
                config_.reload_mercy);
    signal_children(SIGTERM, mercy);
    stop_deadline_ms_ = monotonic_ms() + mercy + 2000;
  } else {
    common::log("immediate stop: cutting in-flight requests");
    signal_children(SIGINT, kImmediateStopMs);
    stop_deadline_ms_ = monotonic_ms() + kImmediateStopMs + 2000;
  }
}

void Master::handle_signals() {
  struct signalfd_siginfo info {};
  while (read(signal_fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    const int signum = static_cast<int>(info.ssi_signo);
    const SignalSpec* spec = nullptr;
    for (const SignalSpec& candidate : kSignalTable) {
      if (candidate.signum == signum) spec = &candidate;
    }
    if (spec == nullptr) continue;
    switch (spec->action) {
      case SignalAction::child_exited:
        reap_children();
        break;
      case SignalAction::graceful_stop:
        common::log("{} received", spec->name);
        begin_stop(true, 0);
        break;
      case SignalAction::immediate_stop:
        common::log("{} received", spec->name);
        begin_stop(false, 0);
        break;
      case SignalAction::graceful_reload:
        if (phase_ != Phase::running) break;
        if (config_.log_reopen) common::log_reopen();  // the new workers inherit the reopened file
        common::log("{} received: graceful reload of {} worker(s), one at a time", spec->name,
                    worker_count());
        reload_queue_.clear();
        for (int id = 1; id <= worker_count(); ++id) reload_queue_.push_back(id);
        break;
      case SignalAction::log_stats:
        log_stats();
        break;
    }
  }
}

// Graceful reload, one worker at a time: start the replacement, wait until its loop runs, then tell the
// old one to finish its requests and exit. The listening sockets never close, so nothing is refused.
void Master::advance_reload() {
  if (phase_ != Phase::running) return;
  const std::int64_t now = monotonic_ms();
  if (reload_id_ != 0) {
    Child* fresh = reload_new_pid_ > 0 ? find_child(reload_new_pid_) : nullptr;
    const bool waited_enough = now - reload_step_started_ms_ >= kReplacementReadyMs;
    if (fresh != nullptr && !fresh->ready && !waited_enough) return;
    if (Child* old = find_child(reload_old_pid_)) {
      if (fresh == nullptr) {
        common::log("reload: the replacement of worker {} did not start; keeping pid {}", reload_id_,
                    old->pid);
      } else {
        kill(old->pid, SIGTERM);
        old->retiring = true;
        old->kill_at_ms = now + config_.reload_mercy * 1000LL;
      }
    }
    reload_id_ = 0;
  }
  if (reload_queue_.empty()) return;
  // The replacement needs a scoreboard slot. Old workers finishing their requests keep theirs until
  // they exit (within reload-mercy), which a second SIGHUP during a reload can make all of them: wait
  // for one instead of giving this worker's step up (it would then never be replaced).
  if (std::find(slot_used_.begin(), slot_used_.end(), false) == slot_used_.end()) return;
  const int id = reload_queue_.front();
  reload_queue_.pop_front();
  Child* old = active_child(id);
  reload_old_pid_ = old != nullptr ? old->pid : -1;
  reload_id_ = id;
  reload_step_started_ms_ = now;
  std::optional<pid_t> fresh = spawn(id);
  reload_new_pid_ = fresh.value_or(-1);
  if (reload_queue_.empty()) common::log("reload: last worker replacement started");
}

void Master::check_deadlines() {
  const std::int64_t now = monotonic_ms();
  for (Child& child : children_) {
    if (child.kill_at_ms != 0 && now >= child.kill_at_ms) {
      common::log("worker {} (pid {}) did not stop in time: SIGKILL", child.id, child.pid);
      kill(child.pid, SIGKILL);
      child.kill_at_ms = now + 60000;  // logged once; the reap follows
    }
  }
  if (phase_ == Phase::stopping && now >= stop_deadline_ms_) {
    for (Child& child : children_) kill(child.pid, SIGKILL);
  }
}

void Master::check_harakiri() {
  if (config_.harakiri <= 0) return;
  const std::int64_t now = monotonic_ms();
  for (Child& child : children_) {
    if (child.harakiri) continue;
    workers::WorkerSlot& slot = board_.slot(static_cast<std::size_t>(child.slot));
    const std::int64_t busy_since = slot.busy_since_ms.load(std::memory_order_relaxed);
    if (busy_since == 0 || now - busy_since < config_.harakiri * 1000LL) continue;
    const std::uint32_t len =
        std::min<std::uint32_t>(slot.request_len.load(std::memory_order_acquire), sizeof slot.request);
    std::string request(slot.request, len);
    common::log("HARAKIRI: worker {} (pid {}) stuck for {} s on request \"{}\": SIGTERM, SIGKILL in {} ms",
                child.id, child.pid, (now - busy_since) / 1000, request, kHarakiriGraceMs);
    child.harakiri = true;
    board_.totals(child.id).harakiri_count.fetch_add(1);
    kill(child.pid, SIGTERM);
    child.kill_at_ms = now + kHarakiriGraceMs;
  }
}

// uWSGI's --evil-reload-on-rss: the master's own check, for a worker too busy (or too stuck) to
// notice its memory itself. The kill counts as a death: a worker above the limit from its start is
// throttled like any worker that cannot start.
void Master::check_evil_rss() {
  if (config_.evil_reload_on_rss == 0) return;
  const std::uint64_t limit = config_.evil_reload_on_rss << 20;
  for (Child& child : children_) {
    if (child.retiring || child.kill_at_ms != 0) continue;
    const std::uint64_t rss = workers::resident_bytes(child.pid);
    if (rss < limit) continue;
    common::log("worker {} (pid {}) uses {} bytes of memory (evil-reload-on-rss {} MB): SIGKILL", child.id,
                child.pid, rss, config_.evil_reload_on_rss);
    kill(child.pid, SIGKILL);
    child.kill_at_ms = monotonic_ms() + 60000;  // the reap follows; no second kill meanwhile
  }
}

void Master::log_stats() {
  for (const Child& child : children_) {
    const workers::WorkerSlot& slot = board_.slot(static_cast<std::size_t>(child.slot));
    common::log(
        "stats: worker {} (pid {}): requests {}, accepted {}, wake-ups {} ({} wasted), bad requests {}{}",
        child.id, child.pid, slot.requests.load(), slot.accepted.load(), slot.wakeups.load(),
        slot.wasted_wakeups.load(), slot.bad_requests.load(), child.retiring ? ", retiring" : "");
  }
  for (const auto& cache : caches_.all()) {
    cache::Stats s = cache->stats();
    common::log(
        "stats: cache \"{}\": items {}/{}, hits {}, misses {}, full {}, evictions {}, expirations {}, "
        "lock waits {}, probes/lookup {:.2f}, shard recoveries {}{}",
        cache->geometry().name, s.items, s.capacity, s.hits, s.misses, s.full, s.evictions, s.expirations,
        s.lock_waits, s.lookups == 0 ? 0.0 : static_cast<double>(s.probes) / static_cast<double>(s.lookups),
        s.shard_recoveries,
        cache->geometry().lastmod ? fmt::format(", last modified at {}", s.last_modified_at) : std::string());
  }
}

void Master::flush_stores() {
  for (std::size_t index = 0; index < caches_.all().size(); ++index) {
    cache::Cache* cache = caches_.all()[index].get();
    if (!cache->has_store()) continue;
    std::int64_t took_ms = 0;
    const bool ok = timed_store_sync(*cache, board_.valid() ? &board_.store_sync(index) : nullptr, took_ms);
    common::log("cache \"{}\": store {} {} in {} ms", cache->geometry().name, cache->geometry().store,
                ok ? "flushed" : "flush FAILED", took_ms);
  }
}

int Master::run() {
  common::set_log_level(config_.debug_log ? common::LogLevel::debug : common::LogLevel::info);
  start_logging(config_);      // --daemonize, --logto: before the first line worth keeping
  apply_umask(config_.umask);  // before the first file (store, socket, pidfile) is created
  extras_ = std::make_unique<Extras>(config_);
  const Identity identity = resolve_identity(config_.uid, config_.gid);  // a typo fails before any bind
  create_caches();  // geometry errors surface before any socket is bound
  server::ApplicationHost* host = server::application_host();  // the Python host, when built
  if (!config_.pyrun.empty()) {  // uWSGI's --pyrun: a script with the caches, no server
    if (host == nullptr)
      throw std::runtime_error(
          "--pyrun: this server was built without the Python host (install libpython3.11-dev)");
    const int status = host->run_script(application_settings(config_), caches_, config_.pyrun);
    flush_stores();
    return status;
  }
  ListenOptions listen_options;
  listen_options.backlog = config_.listen_backlog;
  listen_options.chmod_socket = config_.chmod_socket;
  if (!config_.chown_socket.empty()) listen_options.chown_socket = resolve_owner(config_.chown_socket);
  if (config_.sockets.empty() && config_.persistent_sockets.empty() && config_.http_sockets.empty() &&
      config_.http_router.empty() && config_.memcached_sockets.empty())
    throw std::runtime_error("no --socket given: nothing to listen on (try --socket 127.0.0.1:3031)");
  listeners_ = bind_listeners(config_.sockets, listen_options);
  if (config_.protocol == "http") {
    for (Listener& listener : listeners_) listener.kind = Listener::Kind::http;
  }
  for (Listener& listener : bind_listeners(config_.http_router, listen_options)) {
    listener.kind = Listener::Kind::http;
    common::log(
        "--http {}: no separate HTTP router process here: the workers serve HTTP on it directly "
        "(as --http-socket)",
        listener.spec);
    listeners_.push_back(listener);
  }
  for (Listener& listener : bind_listeners(config_.persistent_sockets, listen_options)) {
    listener.kind = Listener::Kind::persistent;
    listeners_.push_back(listener);
  }
  for (Listener& listener : bind_listeners(config_.http_sockets, listen_options)) {
    listener.kind = Listener::Kind::http;
    listeners_.push_back(listener);
  }
  if (!config_.memcached_sockets.empty()) {
    memcached_cache_ = memcached_cache(caches_, config_);
    for (Listener& listener : bind_listeners(config_.memcached_sockets, listen_options)) {
      listener.kind = Listener::Kind::memcached;
      common::log("memcached protocol on {} (cache \"{}\")", listener.spec,
                  memcached_cache_->geometry().name);
      listeners_.push_back(listener);
    }
  }
  write_pidfile(config_.pidfile, "pidfile", getpid());
  // uWSGI's order: sockets, caches and the pidfile exist; the application is loaded as the new user.
  drop_privileges(identity);
  start_logging_as_user(config_);
  write_pidfile(config_.pidfile2, "pidfile2", getpid());
  if (!config_.module.empty() || !config_.wsgi_file.empty() || !config_.mounts.empty()) {
    if (host == nullptr)
      throw std::runtime_error(
          "--module/--wsgi-file/--mount: this server was built without the Python host (install "
          "libpython3.11-dev)");
    application_ = host->create(application_settings(config_), caches_);
  } else {
    application_ = server::make_demo_application(caches_);
  }
  application_ = extras_->wrap(std::move(application_));

  sigset_t set = master_signal_set();
  signal_fd_ = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd_ < 0) throw std::runtime_error(fmt::format("signalfd: {}", std::strerror(errno)));
  if (pipe2(ready_pipe_, O_NONBLOCK | O_CLOEXEC) != 0)
    throw std::runtime_error(fmt::format("pipe2: {}", std::strerror(errno)));
  create_scoreboard();
  {
    auto context = stats_context(config_, board_, caches_, listeners_);
    if (config_.metrics) application_ = workers::with_metrics_endpoint(std::move(application_), context);
    stats_server_ = make_stats_server(config_, context);
  }
  ids_.assign(static_cast<std::size_t>(config_.processes) + 1, IdState{});

  common::log("master pid {}: {} worker(s), buffer-size {}, socket-timeout {} s{}", getpid(),
              config_.processes, config_.buffer_size, config_.socket_timeout,
              config_.harakiri > 0 ? fmt::format(", harakiri {} s", config_.harakiri) : std::string());
  for (const Listener& listener : listeners_) common::log("listening on {}", listener.describe());

  if (!caches_.empty()) {
    cache_jobs_ = std::make_unique<CacheJobs>(caches_, board_, !config_.cache_no_expire,
                                              config_.cache_expire_freq, config_.cache_report_freed_items);
  }
  served_ = true;
  extras_->serving();
  ensure_workers();
  // Started after the first fork so the workers never inherit a half-copied thread state.
  if (cache_jobs_) cache_jobs_->start();
  for (auto& receiver : udp_receivers_) receiver->start();
  if (stats_server_) stats_server_->start();

  while (phase_ != Phase::stopped) {
    struct pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {ready_pipe_[0], POLLIN, 0}};
    int n = poll(fds, 2, kPollMs);
    if (n < 0 && errno != EINTR) throw std::runtime_error(fmt::format("poll: {}", std::strerror(errno)));
    if (fds[1].revents & POLLIN) read_ready_pipe();
    if (fds[0].revents & POLLIN) handle_signals();
    reap_children();  // SIGCHLD may coalesce; reaping is cheap
    advance_reload();
    run_cheaper();
    ensure_workers();
    check_harakiri();
    check_evil_rss();
    check_deadlines();
    const bool ready =
        std::any_of(children_.begin(), children_.end(), [](const Child& c) { return c.ready; });
    if (extras_->tick(ready) && phase_ == Phase::running) kill(getpid(), SIGHUP);  // touch-reload
    if (phase_ == Phase::stopping && children_.empty()) phase_ = Phase::stopped;
  }
  if (cache_jobs_) cache_jobs_->stop();
  for (auto& receiver : udp_receivers_) receiver->stop();
  // Every worker is gone: flush each store so a graceful or immediate stop leaves it on the disk.
  flush_stores();
  common::log("server stopped (exit status {})", exit_status_);
  cleanup();
  return exit_status_;
}

}  // namespace

// Priority 101: before any other static initialiser of ours.
__attribute__((constructor(101))) void block_master_signals_before_main() {
  sigset_t set = master_signal_set();
  sigprocmask(SIG_BLOCK, &set, nullptr);
}

void unblock_master_signals() {
  sigset_t set = master_signal_set();
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

int run_master(const config::Config& config) {
  Master master(config);
  return master.run();
}

}  // namespace master
