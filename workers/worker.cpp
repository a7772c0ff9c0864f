// The worker loop.
//
// Accepting without a thundering herd: every worker adds the shared listening sockets to an epoll set
// of its own with EPOLLEXCLUSIVE and sleeps in epoll_wait on that set directly, so the kernel wakes one
// sleeping worker per new connection instead of all of them (uWSGI serialises accept with a
// process-wide lock, which wedges when its holder is OOM-killed). libuv's own epoll fd sits in the same
// set: when it is readable (a slow connection, a signal, a timer) the worker runs one non-blocking libuv
// pass. EPOLLEXCLUSIVE only works when the process sleeps on that very epoll fd, which is why the
// listening sockets cannot simply be handed to libuv (nested epoll loses the exclusivity).
//
// The fast path needs no libuv at all: the listening sockets use TCP_DEFER_ACCEPT, so an accepted
// connection usually already holds its whole request; the worker reads it, dispatches it, writes the
// reply with one writev, half-closes and closes. Only a connection whose request is incomplete (or
// whose reply does not fit the socket buffer) is added to the worker's epoll set, next to the listening
// sockets, so one epoll_wait serves accepts and kept connections alike (a uv_poll_t per connection
// would cost a second epoll_wait inside libuv for every wake-up). libuv keeps the rest: signals, the
// timeout tick and the application threads' completions.
#include "workers/worker.hpp"

#include "workers/worker_loop.hpp"

namespace workers {

namespace loop {

namespace {

server::FrameLimits uwsgi_limits(const WorkerSettings& settings) {
  server::FrameLimits limits;
  limits.buffer_size = settings.buffer_size;
  limits.max_body = settings.max_body;
  return limits;
}

server::HttpLimits http_limits(const WorkerSettings& settings) {
  server::HttpLimits limits;
  limits.max_header_bytes = settings.buffer_size;  // one knob bounds both protocols' heads
  limits.max_body = settings.max_body;
  return limits;
}

Worker* worker_of(uv_handle_t* handle) { return static_cast<Worker*>(handle->data); }

void signal_trampoline(uv_signal_t* handle, int signum) {
  worker_of(reinterpret_cast<uv_handle_t*>(handle))->on_signal(signum);
}

void application_finished_trampoline(uv_async_t* handle) {
  worker_of(reinterpret_cast<uv_handle_t*>(handle))->on_application_finished();
}

void tick_trampoline(uv_timer_t* handle) { worker_of(reinterpret_cast<uv_handle_t*>(handle))->on_tick(); }

}  // namespace

Worker::Worker(const WorkerSettings& settings)
    : settings_(settings),
      dispatcher_(*settings.caches, settings.application),
      accounting_(settings.id, settings.slot, settings.totals, settings.board, settings.request_log),
      uwsgi_(uwsgi_limits(settings), /*persistent=*/false),
      persistent_(uwsgi_limits(settings), /*persistent=*/true),
      http_(http_limits(settings), settings.http_fds),
      memcached_({settings.memcached_cache, settings.memcached_keysize, nullptr}) {}

bool Worker::setup() {
  if (int rc = uv_loop_init(&loop_); rc != 0) {
    common::log("worker {}: cannot create its event loop: {}", settings_.id, uv_strerror(rc));
    return false;
  }
  const int handled[4] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP};
  for (int i = 0; i < 4; ++i) {
    uv_signal_init(&loop_, &signals_[i]);
    signals_[i].data = this;
    uv_signal_start(&signals_[i], signal_trampoline, handled[i]);
  }
  uv_timer_init(&loop_, &tick_);
  tick_.data = this;
  uv_timer_start(&tick_, tick_trampoline, kTickMs, kTickMs);

  // --threads 0 keeps even a blocking application on the loop (no hand-off: uWSGI's model).
  if (uses_application_threads(settings_.application, settings_.application_threads)) {
    app_threads_.start(settings_.application_threads, &loop_, this, &Worker::run_application,
                       application_finished_trampoline);
  }

  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    common::log("worker {}: epoll_create1: {}", settings_.id, std::strerror(errno));
    return false;
  }
  struct epoll_event backend {};
  backend.events = EPOLLIN;
  backend.data.u64 = kBackendTag;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, uv_backend_fd(&loop_), &backend) != 0) {
    common::log("worker {}: cannot watch the libuv backend: {}", settings_.id, std::strerror(errno));
    return false;
  }
  auto has = [](const std::vector<int>& fds, int fd) {
    return std::find(fds.begin(), fds.end(), fd) != fds.end();
  };
  const bool ring = start_memcached_ring();  // before signals are let in: its thread keeps them blocked
  for (int fd : settings_.listen_fds) {
    if (ring && has(settings_.memcached_fds, fd)) continue;  // the ring accepts on these
    Framing* framing = has(settings_.http_fds, fd)         ? static_cast<Framing*>(&http_)
                       : has(settings_.persistent_fds, fd) ? &persistent_
                       : has(settings_.memcached_fds, fd)  ? static_cast<Framing*>(&memcached_)
                                                           : &uwsgi_;
    listeners_.push_back({fd, framing, framing == &persistent_ || framing == &memcached_});
  }
  update_accepting();
  // Signals were blocked by the master across fork so none sent during start-up is lost: now that
  // libuv handles them, let them in.
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_UNBLOCK, &all, nullptr);
  return true;
}

int Worker::run() {
  if (!setup()) return 1;
  settings_.slot->pid.store(getpid(), std::memory_order_relaxed);
  settings_.slot->busy_since_ms.store(0, std::memory_order_relaxed);
  if (settings_.ready_fd >= 0) {
    std::int32_t me = getpid();
    // A pipe write of 4 bytes is atomic; the master reads whole pids.
    [[maybe_unused]] ssize_t n = write(settings_.ready_fd, &me, sizeof me);
    close(settings_.ready_fd);
  }

  uv_update_time(&loop_);
  main_thread_ = std::this_thread::get_id();
  if (app_threads_.started()) standby_ = std::thread([this] { take_turns(false); });
  take_turns(true);
  if (standby_.joinable()) {
    if (adopted_ != nullptr) {
      standby_.detach();  // an immediate stop while it runs the application: the exit ends it
    } else {
      standby_.join();
    }
  }
  return finish_run();
}

// The loop's thread and the standby swap roles whenever the standby takes the loop from a lender
// (loop_baton.hpp); whichever holds it when it ends wakes the other.
void Worker::take_turns(bool holding) {
  for (;;) {
    if (!holding) {
      if (!baton_.wait_to_take(kTakeoverDelay, kStandbyPeriod)) return;
      take_over();
    }
    holding = false;
    t_loop_lost = false;
    if (drive()) {
      baton_.finish();
      // Ended (an immediate stop) while the main thread is inside the application: end the process
      // from here, as the main thread would (it only waits for the master's _exit).
      if (adopted_ != nullptr && std::this_thread::get_id() != main_thread_) _exit(finish_run());
      return;
    }
  }
}

// The lender's request now counts as an application thread's: out of the epoll set, and the worker
// stops taking application connections if that saturates it (update_accepting).
void Worker::take_over() {
  Connection* conn = lent_for_;
  adopted_ = conn;
  app_threads_.adopt_inline();
  if (conn->in_epoll) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, conn->fd, nullptr);
    conn->in_epoll = false;
  }
  update_accepting();
}

int Worker::finish_run() {
  memcached_ring_.stop_now();  // what it still serves closes (a stop's mercy ran out, or an immediate stop)
  accounting_.flush();
  app_threads_.shutdown(/*wait=*/in_application_ == 0);
  if (failed_) return 1;
  return recycling_ && !exit_now_ ? kExitRecycled : 0;
}

// One thread's turn at the loop: true when the loop is over, false when this thread lent it and
// another took it.
bool Worker::drive() {
  struct epoll_event events[kMaxEvents];
  while (!exit_now_) {
    if (!stopping_ && recycler_.enabled()) {
      const std::string reason =
          recycler_.due(settings_.slot->requests.load(std::memory_order_relaxed), monotonic_ms());
      if (!reason.empty()) {
        common::log("worker {}: {}", settings_.id, reason);
        common::log("...The work of process {} is done. Seeya!", getpid());
        recycling_ = true;
        begin_graceful_stop();
      }
    }
    if (stopping_ && active_.empty() && in_application_ == 0 && !memcached_ring_busy()) {
      // Done, unless requests wait in this generation's shared queue: the last of its workers to
      // stop runs them (the others may be stopping too).
      if (!handoff_.enabled() || !handoff_.queued()) return true;
      check_handoffs_ = true;
    }
    if (stopping_ && monotonic_ms() >= stop_deadline_ms_) {
      common::log("worker {}: {} request(s) still in flight after {} s; closing them", settings_.id,
                  requests_in_flight(), settings_.stop_mercy_s);
      return true;
    }
    if (accept_paused_until_ms_ != 0 && !stopping_ && monotonic_ms() >= accept_paused_until_ms_) {
      accept_paused_until_ms_ = 0;
      update_accepting();
    }
    if (check_handoffs_) {
      take_handoffs();
      if (t_loop_lost) return false;
    }
    int timeout = uv_backend_timeout(&loop_);
    if (timeout < 0 || timeout > kTickMs) timeout = kTickMs;
    if (accept_paused_until_ms_ != 0) timeout = std::min(timeout, kAcceptPauseMs);

    int n = epoll_wait(epoll_fd_, events, kMaxEvents, timeout);
    if (n < 0 && errno != EINTR) {
      common::log("worker {}: epoll_wait: {}", settings_.id, std::strerror(errno));
      failed_ = true;
      return true;
    }
    bool run_libuv = (n == 0);
    int ready_listeners[kMaxEvents];
    int ready_count = 0;
    bool handoffs = false;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t tag = events[i].data.u64;
      if (tag == kBackendTag) {
        run_libuv = true;
      } else if (tag == kHandoffTag) {
        handoffs = true;
      } else if (tag & kListenerTag) {
        ready_listeners[ready_count++] = static_cast<int>(tag & 0xffffffffu);
      } else {
        on_ready(static_cast<Connection*>(events[i].data.ptr), events[i].events);
        // Lent and taken: the rest of the batch is the new holder's (level-triggered, it sees it again).
        if (t_loop_lost) return false;
      }
    }
    if (handoffs) take_handoffs();  // accepted before what the listeners hold now: first
    if (t_loop_lost) return false;
    accept_ready(ready_listeners, ready_count);
    if (t_loop_lost) return false;
    // libuv fires timers only inside uv_run: run a pass when one is due, not only when its fd is
    // readable, or a worker kept busy by its connections would never time them out.
    if (!run_libuv) {
      uv_update_time(&loop_);
      run_libuv = uv_backend_timeout(&loop_) == 0;
    }
    if (run_libuv) {
      in_libuv_ = true;
      uv_run(&loop_, UV_RUN_NOWAIT);
      in_libuv_ = false;
    }
    release_closed();
    accounting_.flush();  // this pass's request log lines, in one write
  }
  return true;
}

// The listeners one epoll_wait found ready, in turn from the one after the last accepted from: a
// worker that saturates after one connection takes each listener's turn, so no listener's queue waits
// forever behind another's (it did: the first fd in the set always won). Stops once the worker

// Only harakiri reads it: without --harakiri the request path skips the clock and the description.
void Worker::publish_busy(const server::Request& request) {
  if (!settings_.publish_busy) return;
  WorkerSlot* slot = settings_.slot;
  slot->busy_since_ms.store(monotonic_ms(), std::memory_order_relaxed);
  // Only application requests can run long; describe them for the harakiri line.
  if (request.header.modifier1 == server::kModifierApp) {
    std::string_view uri;
    server::parse_vars(request.payload, [&](std::string_view key, std::string_view value) {
      if (key == "REQUEST_URI" || (uri.empty() && key == "PATH_INFO")) uri = value;
    });
    std::size_t len = std::min(uri.size(), sizeof slot->request);
    std::memcpy(slot->request, uri.data(), len);
    slot->request_len.store(static_cast<std::uint32_t>(len), std::memory_order_release);
  } else {
    int len = std::snprintf(slot->request, sizeof slot->request, "modifier1 %u modifier2 %u",
                            request.header.modifier1, request.header.modifier2);
    slot->request_len.store(static_cast<std::uint32_t>(std::max(len, 0)), std::memory_order_release);
  }
}

void Worker::on_tick() {
  update_accepting();  // another worker started, went away or freed a thread: who accepts may have changed
  // The queue's EPOLLEXCLUSIVE wake-up may have gone to a worker that saturated before taking it all.
  if (has_free_thread()) check_handoffs_ = true;
  std::int64_t now = monotonic_ms();
  // Walk backwards: closing swaps the last connection into the current index.
  for (std::size_t i = active_.size(); i-- > 0;) {
    if (i >= active_.size()) continue;
    Connection* conn = active_[i];
    if (now < conn->deadline_ms || conn->in_application) continue;
    const bool idle = conn->in.size() == 0 && !conn->writing;
    if (idle && conn->framing->keeps_idle_connections() && !conn->draining) continue;
    if (conn->draining || (conn->persistent && idle)) {
      close_connection(conn, true);  // an idle kept-alive connection: nothing lost
      continue;
    }
    settings_.slot->bad_requests.fetch_add(1, std::memory_order_relaxed);
    log_problem(
        conn, fmt::format("socket timeout ({} s) {} with {} byte(s) received", settings_.socket_timeout_s,
                          conn->writing ? "writing the reply" : "waiting for the request", conn->in.size()));
    close_connection(conn, true);
  }
}

// The connections the loop waits on, plus the application requests on connections it never waited on
// (a request that came with its connection is dispatched at once, without joining active_).
std::size_t Worker::requests_in_flight() const {
  std::size_t registered_in_application = 0;
  for (const Connection* conn : active_) registered_in_application += conn->in_application ? 1 : 0;
  return active_.size() + (in_application_ - registered_in_application);
}

void Worker::begin_graceful_stop() {
  if (stopping_) return;
  stopping_ = true;
  stop_deadline_ms_ = monotonic_ms() + settings_.stop_mercy_s * 1000LL;
  // Stop accepting: the connections still queued go to the other workers (or wait for the next one).
  update_accepting();
  memcached_ring_.stop_gracefully();
  // The ring's listeners are the ring's to close, once it has cancelled their accepts: closed here,
  // their numbers could be reused by this loop's next socket while the ring could still arm an accept
  // on them.
  const std::vector<int>& ring_fds = settings_.memcached_fds;
  for (int fd : settings_.listen_fds) {
    if (!memcached_ring_.running() || std::find(ring_fds.begin(), ring_fds.end(), fd) == ring_fds.end())
      ::close(fd);
  }
  // Idle kept-alive connections have nothing in flight.
  for (std::size_t i = active_.size(); i-- > 0;) {
    if (i >= active_.size()) continue;
    Connection* conn = active_[i];
    const bool idle = conn->in.size() == 0 && !conn->writing;
    if (conn->draining || ((conn->persistent || conn->framing->keeps_idle_connections()) && idle))
      close_connection(conn, true);
  }
}

void Worker::on_signal(int signum) {
  switch (signum) {
    case SIGTERM:
    case SIGHUP:
      begin_graceful_stop();
      break;
    case SIGINT:
    case SIGQUIT:
      exit_now_ = true;
      break;
    default:
      break;
  }
}

}  // namespace loop

int run_worker(const WorkerSettings& settings) {
  // (The master's fork arms PR_SET_PDEATHSIG: a worker outlives no master.)
  // A client that closes before reading its reply must cost an EPIPE, not the worker (and after a
  // respawn, the next queued connection of the same client would kill the new worker too).
  signal(SIGPIPE, SIG_IGN);
  if (std::string error;
      settings.application != nullptr && !settings.application->worker_started(settings.id, error)) {
    common::log("worker {}: {}", settings.id, error);
    std::fflush(nullptr);  // the caller _exits
    return kExitFatalConfig;
  }
  loop::Worker worker(settings);
  return worker.run();
}

}  // namespace workers
