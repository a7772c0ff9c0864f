// The master's start-up sequence and its loop: logging, the caches (caches.hpp), the listeners, the
// pidfiles and the privileges drop, the application, the signalfd of the signal table, the
// scoreboard and the stats server; then the loop that reads signals and the readiness pipe and runs
// the checks of children.cpp every kPollMs. The signals are blocked here before main() runs.
#include "master/master.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "common/log.hpp"
#include "master/application_settings.hpp"
#include "master/master_state.hpp"
#include "master/observability.hpp"
#include "master/privileges.hpp"
#include "master/signals.hpp"
#include "server/dispatcher.hpp"
#include "workers/memcached_ring.hpp"
#include "workers/worker.hpp"

namespace master {

namespace {

constexpr int kPollMs = 100;  // how often the master loop looks at deadlines

sigset_t master_signal_set() {
  sigset_t set;
  sigemptyset(&set);
  for (const SignalSpec& spec : kSignalTable) sigaddset(&set, spec.signum);
  return set;
}

}  // namespace

Master::~Master() { cleanup(); }

// Asked once here rather than in every worker: one log line, whatever the number of workers.
void Master::choose_memcached_loop() {
  if (config_.memcached_no_io_uring) {
    common::log("memcached connections on the workers' epoll loops (--memcached-no-io-uring)");
    return;
  }
  std::string why;
  memcached_io_uring_ = workers::memcached_ring_usable(why);
  if (memcached_io_uring_)
    common::log("memcached connections on io_uring (one thread per worker)");
  else
    common::log("io_uring unavailable ({}): memcached connections on the workers' epoll loops", why);
}

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
  close_handoff();
  for (int& fd : ready_pipe_) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  stats_server_.reset();  // its process reads the scoreboard: stopped before the area goes
  board_ = workers::Scoreboard{};
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
        renew_handoff();
        break;
      case SignalAction::log_stats:
        log_stats();
        break;
    }
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

int Master::run() {
  common::set_log_level(config_.debug_log ? common::LogLevel::debug : common::LogLevel::info);
  start_logging(config_);      // --daemonize, --logto: before the first line worth keeping
  apply_umask(config_.umask);  // before the first file (store, socket, pidfile) is created
  extras_ = std::make_unique<Extras>(config_);
  const Identity identity = resolve_identity(config_.uid, config_.gid);  // a typo fails before any bind
  create_caches(config_, caches_, udp_receivers_);  // geometry errors surface before any socket is bound
  server::ApplicationHost* host = server::application_host();  // the Python host, when built
  if (!config_.pyrun.empty()) {  // uWSGI's --pyrun: a script with the caches, no server
    if (host == nullptr)
      throw std::runtime_error(
          "--pyrun: this server was built without the Python host (install libpython3.11-dev)");
    const int status = host->run_script(application_settings(config_), caches_, config_.pyrun);
    flush_stores(caches_, board_);
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
    choose_memcached_loop();
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
  renew_handoff();  // after the stats server's fork: only workers hold the queue
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
  flush_stores(caches_, board_);
  common::log("server stopped (exit status {})", exit_status_);
  cleanup();
  return exit_status_;
}

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
