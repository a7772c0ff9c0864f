// The master process's state, private to master/: master.cpp runs the start-up sequence and the loop
// (signals, the readiness pipe, the once-per-poll checks), children.cpp owns the worker processes'
// lifecycle (fork, respawn and its throttle, the one-at-a-time reload, stops, --cheaper steps, the
// harakiri/evil-RSS/kill-deadline watchdogs). The caches and their jobs are caches.hpp's.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "cache/cache.hpp"
#include "config/config.hpp"
#include "master/caches.hpp"
#include "master/cheaper.hpp"
#include "master/extras.hpp"
#include "master/listeners.hpp"
#include "master/stats_server.hpp"
#include "server/application.hpp"
#include "server/udp_sync.hpp"
#include "workers/scoreboard.hpp"

namespace master {

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

  void create_scoreboard();
  void renew_handoff();  // a new shared queue for the workers forked from now on
  void close_handoff();
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
  void signal_children(int signum, std::int64_t kill_after_ms);
  Child* find_child(pid_t pid);
  Child* active_child(int id);  // the non-retiring worker serving id (the newest)
  void cleanup();
  void choose_memcached_loop();  // sets memcached_io_uring_, says so once

  config::Config config_;
  cache::CacheSet caches_;
  cache::Cache* memcached_cache_ = nullptr;  // what --memcached-socket serves
  bool memcached_io_uring_ = false;          // their connections on io_uring (workers/memcached_ring.hpp)
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
  int handoff_[2] = {-1, -1};  // this generation's queue of ready application requests (workers/handoff.hpp)
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

}  // namespace master
