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

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "server/protocol.hpp"
#include "workers/application_threads.hpp"
#include "workers/connection.hpp"
#include "workers/http_framing.hpp"
#include "workers/uwsgi_framing.hpp"

namespace workers {

namespace {

using common::monotonic_ms;

constexpr int kMaxEvents = 32;
constexpr int kTickMs = 250;  // timeout checks
// epoll data: a Connection*, or one of these tags (user-space pointers never have bit 62 or 63 set).
constexpr std::uint64_t kBackendTag = std::uint64_t{1} << 63;   // libuv's backend fd
constexpr std::uint64_t kListenerTag = std::uint64_t{1} << 62;  // | the listening fd
constexpr int kAcceptPauseMs = 100;                             // accept pause when out of descriptors

class Worker;
using ApplicationThreads = workers::ApplicationThreads<Worker, Connection>;

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

class Worker {
 public:
  explicit Worker(const WorkerSettings& settings)
      : settings_(settings),
        dispatcher_(*settings.caches, settings.application),
        uwsgi_(uwsgi_limits(settings), /*persistent=*/false),
        persistent_(uwsgi_limits(settings), /*persistent=*/true),
        http_(http_limits(settings), settings.http_fds) {}

  int run();

  // libuv callbacks (static trampolines call these)
  void on_ready(Connection* conn, std::uint32_t events);
  void on_signal(int signum);
  void on_tick();
  void on_application_finished();
  static void run_application(Worker* self, Connection* conn);  // on an application thread

 private:
  bool setup();
  void accept_ready(const int* fds, int count);
  void accept_from(int listen_fd);
  void serve(Connection* conn);           // read what is there, handle complete requests, write replies
  bool read_available(Connection* conn);  // false = connection failed and was closed
  void frame_state(Connection* conn, std::size_t* want);
  bool ready_for_next_request(Connection* conn);
  void dispatch(Connection* conn);      // runs conn->pending inline or on an application thread
  bool finish_reply(Connection* conn);  // true when the connection was closed
  bool reply_done(Connection* conn);
  bool write_reply(Connection* conn);                     // false = connection failed and was closed
  void wait_for(Connection* conn, std::uint32_t events);  // EPOLLIN or EPOLLOUT
  void release_closed();
  void close_connection(Connection* conn, bool orderly);
  void log_problem(Connection* conn, std::string_view what);
  void begin_graceful_stop();
  void update_accepting();
  std::int32_t app_backlog() const;
  bool takes_app_connections(std::int32_t backlog) const;
  void publish_busy(const server::Request& request);
  void hand_to_application(Connection* conn);
  bool start_reply(Connection* conn);  // true when the connection was closed

  Connection* acquire();
  void release(Connection* conn);

  WorkerSettings settings_;
  server::Dispatcher dispatcher_;
  // What the listeners speak (see connection.hpp); listeners_ names each listening fd's framing.
  UwsgiFraming uwsgi_;
  UwsgiFraming persistent_;  // --persistent-socket
  HttpFraming http_;         // --http-socket
  struct Listener {
    int fd;
    Framing* framing;
    bool cache_path;       // --persistent-socket: still watched while saturated (cache clients' own path)
    bool watched = false;  // in the epoll set
  };
  std::vector<Listener> listeners_;
  uv_loop_t loop_{};
  int epoll_fd_ = -1;
  uv_signal_t signals_[4]{};
  uv_timer_t tick_{};
  std::vector<Connection*> active_;  // connections waiting on the loop
  std::vector<std::unique_ptr<Connection>> all_;
  std::vector<Connection*> free_;
  bool stopping_ = false;
  bool exit_now_ = false;
  Recycler recycler_{settings_.recycle, monotonic_ms()};
  bool recycling_ = false;  // stopping because the Recycler said so: exit with kExitRecycled
  std::int64_t stop_deadline_ms_ = 0;
  common::RateLimitedLog problem_log_{20, 1};
  common::RateLimitedLog resource_log_{1, 10};
  std::vector<Connection*> closed_;  // closed during the current batch, released after it
  std::int64_t accept_paused_until_ms_ = 0;
  std::string note_;
  ApplicationThreads app_threads_;
  std::size_t in_application_ = 0;  // connections an application thread holds (or that wait for one)
  std::size_t last_listener_ = 0;   // index in listeners_ of the one accepted from last
  std::int32_t published_backlog_ = kNoAppBacklog;  // what our scoreboard slot says
};

Worker* worker_of(uv_handle_t* handle) { return static_cast<Worker*>(handle->data); }

void signal_trampoline(uv_signal_t* handle, int signum) {
  worker_of(reinterpret_cast<uv_handle_t*>(handle))->on_signal(signum);
}

void application_finished_trampoline(uv_async_t* handle) {
  worker_of(reinterpret_cast<uv_handle_t*>(handle))->on_application_finished();
}

void tick_trampoline(uv_timer_t* handle) { worker_of(reinterpret_cast<uv_handle_t*>(handle))->on_tick(); }

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
  if (settings_.application != nullptr && settings_.application->blocking() &&
      settings_.application_threads > 0) {
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
  for (int fd : settings_.listen_fds) {
    Framing* framing = has(settings_.http_fds, fd)         ? static_cast<Framing*>(&http_)
                       : has(settings_.persistent_fds, fd) ? &persistent_
                                                           : &uwsgi_;
    listeners_.push_back({fd, framing, framing == &persistent_});
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

  struct epoll_event events[kMaxEvents];
  uv_update_time(&loop_);
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
    if (stopping_ && active_.empty() && in_application_ == 0) break;
    if (stopping_ && monotonic_ms() >= stop_deadline_ms_) {
      common::log("worker {}: {} request(s) still in flight after {} s; closing them", settings_.id,
                  active_.size(), settings_.stop_mercy_s);
      break;
    }
    if (accept_paused_until_ms_ != 0 && !stopping_ && monotonic_ms() >= accept_paused_until_ms_) {
      accept_paused_until_ms_ = 0;
      update_accepting();
    }
    int timeout = uv_backend_timeout(&loop_);
    if (timeout < 0 || timeout > kTickMs) timeout = kTickMs;
    if (accept_paused_until_ms_ != 0) timeout = std::min(timeout, kAcceptPauseMs);

    int n = epoll_wait(epoll_fd_, events, kMaxEvents, timeout);
    if (n < 0 && errno != EINTR) {
      common::log("worker {}: epoll_wait: {}", settings_.id, std::strerror(errno));
      return 1;
    }
    bool run_libuv = (n == 0);
    int ready_listeners[kMaxEvents];
    int ready_count = 0;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t tag = events[i].data.u64;
      if (tag == kBackendTag) {
        run_libuv = true;
      } else if (tag & kListenerTag) {
        ready_listeners[ready_count++] = static_cast<int>(tag & 0xffffffffu);
      } else {
        on_ready(static_cast<Connection*>(events[i].data.ptr), events[i].events);
      }
    }
    accept_ready(ready_listeners, ready_count);
    // libuv fires timers only inside uv_run: run a pass when one is due, not only when its fd is
    // readable, or a worker kept busy by its connections would never time them out.
    if (!run_libuv) {
      uv_update_time(&loop_);
      run_libuv = uv_backend_timeout(&loop_) == 0;
    }
    if (run_libuv) uv_run(&loop_, UV_RUN_NOWAIT);
    release_closed();
  }
  app_threads_.shutdown(/*wait=*/in_application_ == 0);
  return recycling_ && !exit_now_ ? kExitRecycled : 0;
}

// The listeners one epoll_wait found ready, in turn from the one after the last accepted from: a
// worker that saturates after one connection takes each listener's turn, so no listener's queue waits
// forever behind another's (it did: the first fd in the set always won). Stops once the worker
// saturates or stops (it stops watching the listener then).
void Worker::accept_ready(const int* fds, int count) {
  if (count == 0) return;
  const std::size_t total = listeners_.size();
  for (std::size_t step = 1; step <= total; ++step) {
    const std::size_t index = (last_listener_ + step) % total;
    const Listener& listener = listeners_[index];
    if (!listener.watched || std::find(fds, fds + count, listener.fd) == fds + count) continue;
    last_listener_ = index;
    accept_from(listener.fd);
  }
}

// One connection per wake-up: a second accept4 would mostly fail with EAGAIN (a syscall per request
// for nothing), while a listener with more waiting stays readable and the next epoll_wait, which the
// loop makes anyway, returns at once. Measured against batches of 16: 0.93-0.97 of the server CPU per
// request, equal or better ops/s (docs/benchmarks.md).
void Worker::accept_from(int listen_fd) {
  WorkerSlot* slot = settings_.slot;
  slot->wakeups.fetch_add(1, std::memory_order_relaxed);
  int fd;
  do {
    fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      slot->wasted_wakeups.fetch_add(1, std::memory_order_relaxed);
    } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      // Out of descriptors: the listening socket stays readable, so stop watching it for a moment
      // (connections keep waiting in the kernel's queue) while timeouts free descriptors.
      const int error = errno;
      accept_paused_until_ms_ = monotonic_ms() + kAcceptPauseMs;
      update_accepting();
      resource_log_.log(
          fmt::format("worker {}: accept: {}: pausing accepts for {} ms with {} connection(s) open (raise "
                      "the file limit: "
                      "ulimit -n)",
                      settings_.id, std::strerror(error), kAcceptPauseMs, active_.size()));
    }
    return;
  }
  slot->accepted.fetch_add(1, std::memory_order_relaxed);
  Connection* conn = acquire();
  conn->fd = fd;
  for (const Listener& listener : listeners_) {
    if (listener.fd == listen_fd) conn->framing = listener.framing;
  }
  conn->framing->attach(*conn, listen_fd);
  conn->deadline_ms = monotonic_ms() + settings_.socket_timeout_s * 1000LL;
  serve(conn);
}

Connection* Worker::acquire() {
  Connection* conn;
  if (!free_.empty()) {
    conn = free_.back();
    free_.pop_back();
  } else {
    all_.push_back(std::make_unique<Connection>());
    conn = all_.back().get();
    conn->in.reserve(kInitialBuffer);
  }
  return conn;
}

void Worker::release(Connection* conn) {
  conn->fd = -1;
  conn->registered = false;
  conn->in_epoll = false;
  conn->watching = 0;
  conn->in.reset_for_reuse();
  conn->reply.clear();
  conn->reply_written = 0;
  conn->writing = false;
  conn->persistent = false;
  conn->peer_closed = false;
  conn->socket_drained = false;
  conn->frame_status = server::FrameStatus::incomplete;
  conn->framing = nullptr;  // the session stays: the next attach() reuses or replaces it
  conn->pending = server::Request{};
  conn->in_application = false;
  conn->request_bytes = 0;
  if (conn->reply.body.capacity() > ByteBuffer::kRetainedBuffer) conn->reply.body.shrink_to_fit();
  free_.push_back(conn);
}

// Frames what arrived so far and says how many bytes to make room for.
void Worker::frame_state(Connection* conn, std::size_t* want) {
  conn->frame_status = conn->framing->frame(*conn, want);
}

bool Worker::read_available(Connection* conn) {
  for (;;) {
    std::size_t want = 0;
    frame_state(conn, &want);
    if (conn->frame_status != server::FrameStatus::incomplete) return true;
    // A short read means the socket had nothing more: reading again would only return EAGAIN (one
    // wasted syscall per request on a kept connection). Level-triggered polling reports what comes next.
    if (conn->socket_drained) return true;
    conn->in.reserve(want);
    const std::size_t asked = conn->in.spare_size();
    ssize_t n = ::read(conn->fd, conn->in.spare(), asked);
    if (n > 0) {
      conn->in.commit(static_cast<std::size_t>(n));
      conn->socket_drained = static_cast<std::size_t>(n) < asked;
      continue;
    }
    if (n == 0) {
      conn->peer_closed = true;
      return true;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      conn->socket_drained = true;
      return true;
    }
    log_problem(conn, fmt::format("read failed: {}", std::strerror(errno)));
    close_connection(conn, false);
    return false;
  }
}

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

// Finishes a pending reply and reads what arrived. False when the connection is closed or waits for
// the socket; true when conn->frame_status describes what the buffer holds now: every
// way out of read_available frames after the last byte it added, so nobody frames the bytes twice.
bool Worker::ready_for_next_request(Connection* conn) {
  while (conn->writing) {
    if (!write_reply(conn)) return false;
    if (conn->writing) {
      wait_for(conn, EPOLLOUT);
      return false;
    }
    if (reply_done(conn)) return false;
  }
  if (!conn->peer_closed) return read_available(conn);
  std::size_t want = 0;  // nothing more will arrive: frame what is there
  frame_state(conn, &want);
  return true;
}

// The one connection loop, whatever the connection speaks (its Framing): answer every complete request
// the buffer holds, in order, then wait for the socket.
void Worker::serve(Connection* conn) {
  Framing& framing = *conn->framing;
  for (;;) {
    if (!ready_for_next_request(conn)) return;
    if (conn->frame_status == server::FrameStatus::incomplete) {
      if (conn->peer_closed) {
        if (conn->in.size() > 0) {
          note_.clear();
          if (framing.truncated(*conn, note_))
            settings_.slot->bad_requests.fetch_add(1, std::memory_order_relaxed);
          log_problem(conn, note_);
        }
        return close_connection(conn, true);
      }
      framing.waiting(*conn);
      return wait_for(conn, EPOLLIN);
    }
    conn->reply.clear();
    note_.clear();
    switch (framing.take_request(*conn, note_)) {
      case Take::dispatch:
        dispatch(conn);
        if (conn->in_application) return;
        if (finish_reply(conn)) return;
        continue;
      case Take::rejected:
        settings_.slot->bad_requests.fetch_add(1, std::memory_order_relaxed);
        log_problem(conn, note_);
        if (conn->reply.body.empty() && conn->reply.head.empty()) return close_connection(conn, true);
        break;
      case Take::replied:
        if (!note_.empty()) log_problem(conn, note_);
        break;
    }
    if (start_reply(conn)) return;
  }
}

// Handles conn->pending: inline, or on an application thread for a blocking application (the loop
// then leaves the connection alone until on_application_finished).
void Worker::dispatch(Connection* conn) {
  if (conn->pending.header.modifier1 == server::kModifierApp && app_threads_.started()) {
    return hand_to_application(conn);
  }
  publish_busy(conn->pending);
  dispatcher_.handle(conn->pending, conn->reply, &note_);  // clears the reply and the note first
  if (settings_.publish_busy) settings_.slot->busy_since_ms.store(0, std::memory_order_relaxed);
  settings_.slot->requests.fetch_add(1, std::memory_order_relaxed);
  if (!note_.empty()) log_problem(conn, note_);
}

// A dispatched request was handled: let the framing shape the reply, then start writing.
bool Worker::finish_reply(Connection* conn) {
  note_.clear();
  conn->framing->finish(*conn, note_);
  if (!note_.empty()) log_problem(conn, note_);
  return start_reply(conn);
}

// The request was handled and conn->reply holds the answer: drop the request's bytes, start writing.
// Returns true when the connection was closed (or waits for writability), false to go on reading.
bool Worker::start_reply(Connection* conn) {
  conn->in.consume(conn->request_bytes);  // the request views are dead from here on
  conn->request_bytes = 0;
  if (!conn->reply.close_after && !conn->persistent) {
    conn->persistent = true;
    int one = 1;
    setsockopt(conn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails harmlessly on UNIX
  }
  conn->reply_written = 0;
  conn->writing = !conn->reply.head.empty() || !conn->reply.body.empty();
  if (conn->writing) {
    if (!write_reply(conn)) return true;
    if (conn->writing) {
      wait_for(conn, EPOLLOUT);
      return true;
    }
  }
  return reply_done(conn);
}

void Worker::hand_to_application(Connection* conn) {
  conn->in_application = true;
  ++in_application_;
  update_accepting();
  if (conn->in_epoll) {
    // The loop leaves the socket alone until the reply is ready (out of the set: epoll would report
    // a hang-up over and over even with no events asked for).
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, conn->fd, nullptr);
    conn->in_epoll = false;
  }
  conn->reply.clear();
  app_threads_.submit(conn);
}

void Worker::run_application(Worker* self, Connection* conn) {
  const server::Request& request = conn->pending;
  self->publish_busy(request);
  try {
    self->settings_.application->handle(request, conn->reply);
  } catch (const std::exception& error) {
    conn->reply.clear();
    common::log("worker {}: application failed: {}", self->settings_.id, error.what());
  }
  if (self->settings_.publish_busy) self->settings_.slot->busy_since_ms.store(0, std::memory_order_relaxed);
  self->settings_.slot->requests.fetch_add(1, std::memory_order_relaxed);
}

void Worker::on_application_finished() {
  for (Connection* conn : app_threads_.take_finished()) {
    conn->in_application = false;
    --in_application_;
    conn->deadline_ms = monotonic_ms() + settings_.socket_timeout_s * 1000LL;
    if (!finish_reply(conn)) serve(conn);
  }
  update_accepting();
}

// A reply was fully sent (or there was none): close unless the client chose the persistent mode.
// Returns true when the connection was closed.
bool Worker::reply_done(Connection* conn) {
  const bool drained = conn->in.size() == 0;
  if (conn->reply.close_after || (stopping_ && drained) || (conn->peer_closed && drained)) {
    close_connection(conn, true);
    return true;
  }
  conn->deadline_ms = monotonic_ms() + settings_.socket_timeout_s * 1000LL;
  return false;
}

bool Worker::write_reply(Connection* conn) {
  server::Reply& reply = conn->reply;
  const std::size_t total = reply.head.size() + reply.body.size();
  while (conn->reply_written < total) {
    struct iovec iov[2];
    int count = 0;
    std::size_t done = conn->reply_written;
    if (done < reply.head.size()) {
      iov[count++] = {reply.head.data() + done, reply.head.size() - done};
      done = 0;
    } else {
      done -= reply.head.size();
    }
    if (!reply.body.empty()) iov[count++] = {reply.body.data() + done, reply.body.size() - done};
    ssize_t n = ::writev(conn->fd, iov, count);
    if (n > 0) {
      conn->reply_written += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;  // still writing
    log_problem(conn, fmt::format("write failed after {} of {} byte(s): {}", conn->reply_written, total,
                                  n < 0 ? std::strerror(errno) : "no progress"));
    close_connection(conn, false);
    return false;
  }
  conn->writing = false;
  return true;
}

void Worker::wait_for(Connection* conn, std::uint32_t events) {
  if (conn->in_epoll && conn->watching == events) return;
  struct epoll_event ev {};
  ev.events = events;
  ev.data.ptr = conn;
  if (epoll_ctl(epoll_fd_, conn->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, conn->fd, &ev) != 0) {
    log_problem(conn, fmt::format("cannot watch the connection: {}", std::strerror(errno)));
    return close_connection(conn, false);
  }
  conn->in_epoll = true;
  conn->watching = events;
  if (!conn->registered) {
    conn->registered = true;
    conn->active_index = active_.size();
    active_.push_back(conn);
  }
}

void Worker::on_ready(Connection* conn, std::uint32_t events) {
  // Closed earlier in this batch (released only after it), or owned by an application thread.
  if (conn->fd < 0 || conn->in_application) return;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) conn->socket_drained = false;
  conn->deadline_ms = monotonic_ms() + settings_.socket_timeout_s * 1000LL;
  serve(conn);
}

// Orderly close: half-close first so the peer reads our whole reply and an EOF, never a reset.
// close() also takes the fd out of the epoll set (nothing else holds it). The Connection is released
// only after the current batch of events, one of which may still name it.
void Worker::close_connection(Connection* conn, bool orderly) {
  if (conn->fd < 0) return;
  if (orderly) ::shutdown(conn->fd, SHUT_WR);
  if (conn->registered) {
    Connection* last = active_.back();
    active_[conn->active_index] = last;
    last->active_index = conn->active_index;
    active_.pop_back();
  }
  ::close(conn->fd);
  conn->fd = -1;
  closed_.push_back(conn);
}

void Worker::release_closed() {
  for (Connection* conn : closed_) release(conn);
  closed_.clear();
}

void Worker::log_problem(Connection* conn, std::string_view what) {
  unsigned long long suppressed = 0;
  if (!problem_log_.allow(&suppressed)) return;
  std::string peer = "?";
  struct sockaddr_storage addr {};
  socklen_t len = sizeof addr;
  if (conn->fd >= 0 && getpeername(conn->fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    char host[64] = "";
    if (addr.ss_family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&addr);
      inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
      peer = fmt::format("{}:{}", host, ntohs(in->sin_port));
    } else if (addr.ss_family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
      inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
      peer = fmt::format("[{}]:{}", host, ntohs(in6->sin6_port));
    } else {
      peer = "unix";
    }
  }
  common::log("worker {}: client {}: {}{}", settings_.id, peer, what,
              common::RateLimitedLog::suppressed_note(suppressed));
}

void Worker::on_tick() {
  update_accepting();  // another worker started or went away: whether we are the only one may have changed
  std::int64_t now = monotonic_ms();
  // Walk backwards: closing swaps the last connection into the current index.
  for (std::size_t i = active_.size(); i-- > 0;) {
    if (i >= active_.size()) continue;
    Connection* conn = active_[i];
    if (now < conn->deadline_ms || conn->in_application) continue;
    if (conn->persistent && conn->in.size() == 0 && !conn->writing) {
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

// Which listeners are watched (docs/architecture.md, "Scheduling application requests"): none while
// stopping or paused for descriptors; the --persistent-socket ones (the cache clients' own path)
// otherwise; the others only while takes_app_connections(). Publishes this worker's backlog for the
// others' decisions. Connections already open are served all along.
void Worker::update_accepting() {
  const std::int32_t backlog = app_backlog();
  if (backlog != published_backlog_) {
    settings_.slot->app_backlog.store(backlog, std::memory_order_relaxed);
    published_backlog_ = backlog;
  }
  const bool open = !stopping_ && accept_paused_until_ms_ == 0;
  const bool app = open && takes_app_connections(backlog);
  for (Listener& listener : listeners_) {
    const bool want = listener.cache_path ? open : app;
    if (want == listener.watched) continue;
    listener.watched = want;
    if (!want) {
      epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listener.fd, nullptr);
      continue;
    }
    struct epoll_event ev {};
    ev.events = EPOLLIN | (settings_.exclusive_accept ? static_cast<std::uint32_t>(EPOLLEXCLUSIVE) : 0u);
    ev.data.u64 = kListenerTag | static_cast<std::uint32_t>(listener.fd);
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listener.fd, &ev) != 0 && errno != EEXIST) {
      common::log("worker {}: cannot watch listening fd {}: {}", settings_.id, listener.fd,
                  std::strerror(errno));
    }
  }
}

// Application requests held (running or queued) minus application threads; kNoAppBacklog without
// application threads (nothing to saturate) or once stopping.
std::int32_t Worker::app_backlog() const {
  if (!app_threads_.started() || stopping_) return kNoAppBacklog;
  return static_cast<std::int32_t>(in_application_) - settings_.application_threads;
}

// With a thread free: yes. Saturated: only when no other worker takes part (the only worker, as with
// --processes 1): its connections have nowhere else to go, and a cache request on one is answered at
// once. With others, the connection waits in the kernel's queue for the first thread freed anywhere
// (a worker's own queue would tie it to that worker's thread; measured in docs/architecture.md).
bool Worker::takes_app_connections(std::int32_t backlog) const {
  if (backlog < 0 || backlog == kNoAppBacklog) return true;
  for (int i = 0; i < settings_.scoreboard_size; ++i) {
    const WorkerSlot& other = settings_.scoreboard[i];
    if (&other != settings_.slot && other.app_backlog.load(std::memory_order_relaxed) != kNoAppBacklog)
      return false;
  }
  return true;
}

void Worker::begin_graceful_stop() {
  if (stopping_) return;
  stopping_ = true;
  stop_deadline_ms_ = monotonic_ms() + settings_.stop_mercy_s * 1000LL;
  // Stop accepting: the connections still queued go to the other workers (or wait for the next one).
  update_accepting();
  for (int fd : settings_.listen_fds) ::close(fd);
  // Idle kept-alive connections have nothing in flight.
  for (std::size_t i = active_.size(); i-- > 0;) {
    if (i >= active_.size()) continue;
    Connection* conn = active_[i];
    if (conn->persistent && conn->in.size() == 0 && !conn->writing) close_connection(conn, true);
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

}  // namespace

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
  Worker worker(settings);
  return worker.run();
}

}  // namespace workers
