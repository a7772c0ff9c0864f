// The worker processes' lifecycle, the Master's half that changes children_: fork (a free scoreboard slot,
// the settings a worker runs with), reaping (respawn now, or throttled after quick deaths; a fatal start
// stops the server), the graceful reload one worker at a time, graceful and immediate stops, --cheaper
// steps, and the watchdogs run every poll (kill deadlines, harakiri, --evil-reload-on-rss).
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "master/master_state.hpp"
#include "master/observability.hpp"
#include "workers/handoff.hpp"
#include "workers/worker.hpp"

namespace master {

namespace {

using common::monotonic_ms;

constexpr std::int64_t kQuickDeathMs = 1000;  // a worker dying sooner than this "died at start"
constexpr int kQuickDeathsBeforeThrottle = 3;
constexpr std::int64_t kThrottleFirstMs = 500;
constexpr std::int64_t kThrottleMaxMs = 30000;
constexpr std::int64_t kReplacementReadyMs = 5000;  // a reload waits this long for a new worker to be ready
constexpr std::int64_t kImmediateStopMs = 3000;     // SIGINT: workers get this long before SIGKILL
constexpr std::int64_t kHarakiriGraceMs = 2000;     // harakiri: SIGTERM first, SIGKILL after this

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* abbrev = sigabbrev_np(WTERMSIG(status));
    return fmt::format("killed by signal {} (SIG{}){}", WTERMSIG(status), abbrev != nullptr ? abbrev : "?",
                       WCOREDUMP(status) ? ", core dumped" : "");
  }
  return fmt::format("ended with wait status {}", status);
}

}  // namespace

void Master::create_scoreboard() {
  // Room for every worker twice over: during a reload a worker and its replacement overlap.
  slot_count_ = static_cast<std::size_t>(config_.processes) * 2;
  board_ = workers::Scoreboard::create(config_.processes, slot_count_, caches_.all().size());
  for (std::size_t i = 0; i < slot_count_; ++i)
    board_.slot(i).app_backlog.store(workers::kNoAppBacklog);  // no worker
  slot_used_.assign(slot_count_, false);
}

// The workers' shared queue of ready application requests (workers/handoff.hpp), one per generation:
// the workers forked from now on get a new one, so across a reload (which loads the application anew
// with --lazy-apps) old and new workers never run each other's requests; an old queue lives as long
// as its workers, the last of which runs what is left in it. The master keeps only the current one,
// for respawns. None with one worker (nowhere to hand to) or without application threads.
void Master::renew_handoff() {
  close_handoff();
  if (config_.processes < 2 || !workers::uses_application_threads(application_.get(), config_.threads))
    return;
  if (!workers::make_handoff_pair(handoff_)) {
    common::log(
        "cannot create the workers' hand-off queue ({}): a saturated worker's application "
        "requests wait for its own threads",
        std::strerror(errno));
    handoff_[0] = handoff_[1] = -1;
  }
}

void Master::close_handoff() {
  for (int& fd : handoff_) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
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
  s.handed_off.store(0);
  s.handed_in.store(0);
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
  settings.memcached_io_uring = memcached_io_uring_;
  settings.ready_fd = ready_pipe_[1];
  settings.buffer_size = config_.buffer_size;
  if (config_.limit_post > 0) settings.max_body = config_.limit_post;
  if (config_.post_buffering > 0) settings.post_buffering = config_.post_buffering;
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
  settings.handoff_send_fd = handoff_[0];
  settings.handoff_receive_fd = handoff_[1];
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
    // uWSGI's line first (what its users grep for; "try" is always 1: SIGKILL follows), then ours.
    common::log("*** HARAKIRI ON WORKER {} (pid: {}, try: 1) ***", child.id, child.pid);
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

}  // namespace master
