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
#include <optional>
#include <string>
#include <vector>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "server/http.hpp"
#include "server/memcached.hpp"
#include "server/protocol.hpp"
#include "workers/application_threads.hpp"
#include "workers/byte_buffer.hpp"

namespace workers {

namespace {

using common::monotonic_ms;

constexpr int kMaxEvents = 32;
constexpr std::size_t kInitialBuffer = 4096;  // most cache requests are far smaller
constexpr int kTickMs = 250;                  // timeout checks
// epoll data: a Connection*, or one of these tags (user-space pointers never have bit 62 or 63 set).
constexpr std::uint64_t kBackendTag = std::uint64_t{1} << 63;   // libuv's backend fd
constexpr std::uint64_t kListenerTag = std::uint64_t{1} << 62;  // | the listening fd
constexpr int kAcceptPauseMs = 100;                             // accept pause when out of descriptors

class Worker;
struct Connection;
using ApplicationThreads = workers::ApplicationThreads<Worker, Connection>;

// Numeric host and port of a socket's peer (or of the socket itself), for CGI's REMOTE_ADDR and
// SERVER_PORT. A UNIX socket has neither: both stay empty.
void describe_address(const sockaddr_storage& addr, std::string& host, std::string& port) {
  char text[INET6_ADDRSTRLEN] = "";
  if (addr.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    host = text;
    port = std::to_string(ntohs(in->sin_port));
  } else if (addr.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    host = text;
    port = std::to_string(ntohs(in6->sin6_port));
  } else {
    host.clear();
    port.clear();
  }
}

void describe_peer(int fd, std::string& host, std::string& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) addr.ss_family = AF_UNSPEC;
  describe_address(addr, host, port);
}

void describe_local(int fd, std::string& host, std::string& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) addr.ss_family = AF_UNSPEC;
  describe_address(addr, host, port);
}

struct Connection {
  Worker* owner = nullptr;
  int fd = -1;
  bool registered = false;     // waited on by the loop: in Worker::active_ (timeouts, stop)
  bool in_epoll = false;       // in the worker's epoll set
  std::uint32_t watching = 0;  // the epoll events asked for: EPOLLIN or EPOLLOUT
  ByteBuffer in;
  server::Reply reply;
  std::size_t reply_written = 0;  // bytes of head+body already sent
  bool writing = false;
  bool persistent = false;         // the client asked to keep the connection (our opt-in mode)
  bool peer_closed = false;        // read returned EOF
  bool socket_drained = false;     // the last read returned less than asked: wait for readability
  bool persistent_socket = false;  // accepted on a --persistent-socket: framed replies, kept open
  server::Request pending;         // the request being handled (views into `in` or the http buffers)
  // --http-socket connections: the resumable HTTP frame, the request turned into a uwsgi packet, and
  // what the response must honour (keep-alive, HEAD).
  bool http = false;
  bool sent_continue = false;
  server::Frame frame;           // the uwsgi frame of what `in` holds (frame_state keeps it current)
  server::HttpFrame http_frame;  // the same for an --http-socket connection (resumable)
  server::HttpRequestInfo http_info;
  std::string http_packet;
  std::string http_body;
  std::string peer_host;
  std::string peer_port;
  std::string_view server_port;   // of the listening socket (the worker's table outlives connections)
  bool in_application = false;    // an application thread owns the request and the reply right now
  std::size_t request_bytes = 0;  // size of the request being handled (consumed once replied)
  std::int64_t deadline_ms = 0;   // socket timeout: when we give up waiting for the client
  std::size_t active_index = 0;   // position in Worker::active_
  // --memcached-socket connections: the protocol session (server/memcached.hpp); empty otherwise.
  std::optional<server::memcached::Session> memcached;
};

class Worker {
 public:
  explicit Worker(const WorkerSettings& settings)
      : settings_(settings), dispatcher_(*settings.caches, settings.application) {
    limits_.buffer_size = settings.buffer_size;
    limits_.max_body = settings.max_body;
    http_limits_.max_header_bytes = settings.buffer_size;  // one knob bounds both protocols' heads
    http_limits_.max_body = settings.max_body;
  }

  int run();

  // libuv callbacks (static trampolines call these)
  void on_ready(Connection* conn, std::uint32_t events);
  void on_signal(int signum);
  void on_tick();
  void on_application_finished();
  static void run_application(Worker* self, Connection* conn);  // on an application thread

 private:
  bool setup();
  void accept_from(int listen_fd);
  void serve(Connection* conn);           // read what is there, handle complete requests, write replies
  bool read_available(Connection* conn);  // false = connection failed and was closed
  server::FrameStatus frame_state(Connection* conn, std::size_t* want);
  void serve_http(Connection* conn);
  void serve_memcached(Connection* conn);
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
  void watch_listeners(bool on);
  void publish_busy(const server::Request& request);
  server::Request request_view(const Connection* conn, const server::Frame& frame) const;
  void hand_to_application(Connection* conn);
  bool start_reply(Connection* conn);  // true when the connection was closed

  Connection* acquire();
  void release(Connection* conn);

  WorkerSettings settings_;
  server::Dispatcher dispatcher_;
  server::FrameLimits limits_;
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
  server::HttpLimits http_limits_;
  std::vector<std::pair<int, std::string>> http_ports_;  // --http-socket fd → its port, for SERVER_PORT
  std::size_t in_application_ = 0;                       // connections an application thread holds
  server::memcached::Counters memcached_counters_;       // this worker's `stats` figures
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
  watch_listeners(true);
  memcached_counters_.started_at = static_cast<std::int64_t>(time(nullptr));
  for (int fd : settings_.http_fds) {
    std::string host, port;
    describe_local(fd, host, port);
    http_ports_.emplace_back(fd, port);
  }
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
      watch_listeners(true);
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
    for (int i = 0; i < n; ++i) {
      const std::uint64_t tag = events[i].data.u64;
      if (tag == kBackendTag) {
        run_libuv = true;
      } else if (tag & kListenerTag) {
        if (!stopping_) accept_from(static_cast<int>(tag & 0xffffffffu));
      } else {
        on_ready(static_cast<Connection*>(events[i].data.ptr), events[i].events);
      }
    }
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
      watch_listeners(false);
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
  conn->persistent_socket = std::find(settings_.persistent_fds.begin(), settings_.persistent_fds.end(),
                                      listen_fd) != settings_.persistent_fds.end();
  for (const auto& [fd_of_listener, port] : http_ports_) {
    if (fd_of_listener != listen_fd) continue;
    conn->http = true;
    conn->server_port = port;
    describe_peer(fd, conn->peer_host, conn->peer_port);
  }
  if (std::find(settings_.memcached_fds.begin(), settings_.memcached_fds.end(), listen_fd) !=
      settings_.memcached_fds.end()) {
    conn->memcached.emplace(server::memcached::Settings{settings_.memcached_cache,
                                                        settings_.memcached_keysize, &memcached_counters_});
    ++memcached_counters_.curr_connections;
    ++memcached_counters_.total_connections;
  }
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
    conn->owner = this;
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
  conn->persistent_socket = false;
  conn->http = false;
  conn->sent_continue = false;
  conn->frame = server::Frame{};
  conn->http_frame = server::HttpFrame{};
  conn->pending = server::Request{};
  conn->server_port = {};
  conn->in_application = false;
  conn->request_bytes = 0;
  conn->memcached.reset();
  if (conn->reply.body.capacity() > ByteBuffer::kRetainedBuffer) conn->reply.body.shrink_to_fit();
  free_.push_back(conn);
}

// Frames what arrived so far (uwsgi packet or HTTP request) and says how many bytes to make room for.
server::FrameStatus Worker::frame_state(Connection* conn, std::size_t* want) {
  if (conn->http) {
    conn->http_frame = server::frame_http_request(conn->in.view(), http_limits_, std::move(conn->http_frame));
    *want = conn->in.size() + kInitialBuffer;
    if (conn->http_frame.head_end != 0 && !conn->http_frame.chunked) {
      *want = std::max<std::size_t>(*want, conn->http_frame.head_end + conn->http_frame.body_length);
    }
    return conn->http_frame.status;
  }
  conn->frame = server::frame_request(conn->in.view(), limits_);
  // Grow to what the request announced (known once the header is in), else by a page.
  *want = std::max<std::size_t>(conn->frame.total, conn->frame.payload_end);
  if (*want <= conn->in.size()) *want = conn->in.size() + kInitialBuffer;
  return conn->frame.status;
}

bool Worker::read_available(Connection* conn) {
  for (;;) {
    std::size_t want = 0;
    if (frame_state(conn, &want) != server::FrameStatus::incomplete) return true;
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
// the socket; true when conn->frame (or conn->http_frame) describes what the buffer holds now: every
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

void Worker::serve(Connection* conn) {
  if (conn->http) return serve_http(conn);
  if (conn->memcached) return serve_memcached(conn);
  for (;;) {
    if (!ready_for_next_request(conn)) return;
    const server::Frame& frame = conn->frame;
    if (frame.status == server::FrameStatus::invalid) {
      settings_.slot->bad_requests.fetch_add(1, std::memory_order_relaxed);
      log_problem(conn, frame.error);
      return close_connection(conn, true);
    }
    if (frame.status == server::FrameStatus::incomplete) {
      if (conn->peer_closed) {
        if (conn->in.size() > 0) {
          settings_.slot->bad_requests.fetch_add(1, std::memory_order_relaxed);
          log_problem(conn,
                      fmt::format("client closed the connection after {} byte(s) of an incomplete request",
                                  conn->in.size()));
        }
        return close_connection(conn, true);
      }
      return wait_for(conn, EPOLLIN);
    }

    conn->pending = request_view(conn, frame);
    conn->request_bytes = frame.total;
    dispatch(conn);
    if (conn->in_application) return;
    if (finish_reply(conn)) return;
  }
}

// An --http-socket connection: HTTP/1.1 requests, kept alive, turned into modifier1 0 requests for
// the application; its raw response is made safe for a kept connection (server/http.hpp).
void Worker::serve_http(Connection* conn) {
  for (;;) {
    if (!ready_for_next_request(conn)) return;
    server::HttpFrame& frame = conn->http_frame;
    const server::FrameStatus status = frame.status;
    if (status == server::FrameStatus::incomplete) {
      if (conn->peer_closed) {
        if (conn->in.size() > 0) {
          log_problem(conn, fmt::format("client closed the connection after {} byte(s) of an incomplete HTTP "
                                        "request",
                                        conn->in.size()));
        }
        return close_connection(conn, true);
      }
      if (frame.head_end != 0 && frame.expect_continue && !conn->sent_continue) {
        conn->sent_continue = true;  // a short write is harmless: the client sends its body after 1 s anyway
        [[maybe_unused]] ssize_t n =
            ::write(conn->fd, server::kContinueResponse.data(), server::kContinueResponse.size());
      }
      return wait_for(conn, EPOLLIN);
    }
    conn->reply.clear();
    std::string error;
    if (status == server::FrameStatus::complete) {
      const server::HttpConnectionInfo info{.remote_addr = conn->peer_host,
                                            .remote_port = conn->peer_port,
                                            .server_name = {},
                                            .server_port = conn->server_port};
      if (server::http_to_uwsgi(conn->in.view(), frame, info, conn->http_packet, conn->http_body,
                                conn->http_info, error)) {
        conn->pending = server::Request{};
        conn->pending.header = server::decode_header(conn->http_packet.data());
        conn->pending.payload = std::string_view(conn->http_packet).substr(server::kHeaderSize);
        conn->pending.body = conn->http_body;
        conn->request_bytes = frame.total;
        dispatch(conn);
        if (conn->in_application) return;
        if (finish_reply(conn)) return;
        continue;
      }
      frame.error_status = 431;
      frame.error = error;
    }
    settings_.slot->bad_requests.fetch_add(1, std::memory_order_relaxed);
    log_problem(conn, fmt::format("HTTP {}: {}", frame.error_status, frame.error));
    server::http_error_response(conn->reply.body, frame.error_status, frame.error);
    conn->reply.close_after = true;
    conn->request_bytes = conn->in.size();
    conn->writing = true;
    conn->reply_written = 0;
  }
}

// A --memcached-socket connection: every complete command buffered runs at once (pipelining), their
// replies go out in one write; then whatever arrived next. The session frames; this only moves bytes.
void Worker::serve_memcached(Connection* conn) {
  for (;;) {
    while (conn->writing) {
      if (!write_reply(conn)) return;
      if (conn->writing) return wait_for(conn, EPOLLOUT);
      if (reply_done(conn)) return;
    }
    conn->reply.clear();
    const server::memcached::Progress progress = conn->memcached->execute(conn->in.view(), conn->reply.body);
    if (progress.consumed > 0 || progress.close) {
      settings_.slot->requests.fetch_add(1, std::memory_order_relaxed);
      conn->request_bytes = progress.consumed;
      conn->reply.close_after = progress.close;
      if (start_reply(conn)) return;
      continue;
    }
    if (conn->peer_closed) return close_connection(conn, true);
    if (conn->socket_drained) return wait_for(conn, EPOLLIN);
    conn->in.reserve(std::max(progress.want, conn->in.size() + kInitialBuffer));
    const std::size_t asked = conn->in.spare_size();
    const ssize_t n = ::read(conn->fd, conn->in.spare(), asked);
    if (n > 0) {
      conn->in.commit(static_cast<std::size_t>(n));
      conn->socket_drained = static_cast<std::size_t>(n) < asked;
    } else if (n == 0) {
      conn->peer_closed = true;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      conn->socket_drained = true;
    } else if (errno == ECONNRESET) {
      return close_connection(conn, false);  // a client leaving without quit: nothing was lost
    } else if (errno != EINTR) {
      log_problem(conn, fmt::format("read failed: {}", std::strerror(errno)));
      return close_connection(conn, false);
    }
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

// The request was handled: fix an HTTP response up for its connection, then start writing.
bool Worker::finish_reply(Connection* conn) {
  if (conn->http) {
    server::Reply& reply = conn->reply;
    if (!reply.head.empty()) {  // an application may hand back its status and headers apart
      reply.head.append(reply.body);
      reply.body.swap(reply.head);
      reply.head.clear();
    }
    note_.clear();
    const bool keep = server::finish_http_response(reply.body, conn->http_info, &note_);
    if (!note_.empty()) log_problem(conn, note_);
    conn->reply.close_after = !keep;
    conn->http_frame = server::HttpFrame{};
    conn->sent_continue = false;
  }
  return start_reply(conn);
}

server::Request Worker::request_view(const Connection* conn, const server::Frame& frame) const {
  std::string_view bytes = conn->in.view();
  server::Request request;
  request.header = frame.header;
  request.payload = bytes.substr(server::kHeaderSize, frame.payload_end - server::kHeaderSize);
  request.body = bytes.substr(frame.payload_end, frame.total - frame.payload_end);
  request.persistent = conn->persistent_socket;
  return request;
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
  if (conn->memcached) --memcached_counters_.curr_connections;
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
  std::int64_t now = monotonic_ms();
  // Walk backwards: closing swaps the last connection into the current index.
  for (std::size_t i = active_.size(); i-- > 0;) {
    if (i >= active_.size()) continue;
    Connection* conn = active_[i];
    if (now < conn->deadline_ms || conn->in_application) continue;
    // memcached clients keep idle connections for good (memcached has no idle timeout by default).
    if (conn->memcached && !stopping_ && conn->in.size() == 0 && !conn->writing) continue;
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

void Worker::watch_listeners(bool on) {
  for (int fd : settings_.listen_fds) {
    if (!on) {
      epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
      continue;
    }
    struct epoll_event ev {};
    ev.events = EPOLLIN | (settings_.exclusive_accept ? static_cast<std::uint32_t>(EPOLLEXCLUSIVE) : 0u);
    ev.data.u64 = kListenerTag | static_cast<std::uint32_t>(fd);
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0 && errno != EEXIST) {
      common::log("worker {}: cannot watch listening fd {}: {}", settings_.id, fd, std::strerror(errno));
    }
  }
}

void Worker::begin_graceful_stop() {
  if (stopping_) return;
  stopping_ = true;
  stop_deadline_ms_ = monotonic_ms() + settings_.stop_mercy_s * 1000LL;
  // Stop accepting: the connections still queued go to the other workers (or wait for the next one).
  watch_listeners(false);
  for (int fd : settings_.listen_fds) ::close(fd);
  // Idle kept-alive connections have nothing in flight.
  for (std::size_t i = active_.size(); i-- > 0;) {
    if (i >= active_.size()) continue;
    Connection* conn = active_[i];
    if ((conn->persistent || conn->memcached) && conn->in.size() == 0 && !conn->writing)
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
