// Accepting: which listeners a worker watches (docs/architecture.md, "Scheduling application
// requests"), taking connections from them, and the pool of Connection objects.
#include "workers/peer_name.hpp"
#include "workers/worker_loop.hpp"

namespace workers::loop {

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
    accept_from(listener);
    if (t_loop_lost) return;  // lent and taken: the other listeners are the new holder's
  }
}

// One connection per wake-up: a second accept4 would mostly fail with EAGAIN (a syscall per request
// for nothing), while a listener with more waiting stays readable and the next epoll_wait, which the
// loop makes anyway, returns at once. Measured against batches of 16: 0.93-0.97 of the server CPU per
// request, equal or better ops/s (docs/benchmarks.md).
void Worker::accept_from(const Listener& listener) {
  const int listen_fd = listener.fd;
  WorkerSlot* slot = settings_.slot;
  slot->wakeups.fetch_add(1, std::memory_order_relaxed);
  int fd;
  do {
    fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      slot->wasted_wakeups.fetch_add(1, std::memory_order_relaxed);
    } else if (accept_should_pause(errno)) {
      // Out of descriptors: the listening socket stays readable, so stop watching it for a moment
      // (connections keep waiting in the kernel's queue) while timeouts free descriptors.
      const int error = errno;
      accept_paused_until_ms_ = monotonic_ms() + kAcceptPauseMs;
      update_accepting();
      resource_log_.log(
          accept_pause_note(static_cast<int>(settings_.id), error, kAcceptPauseMs, active_.size()));
    }
    return;
  }
  slot->accepted.fetch_add(1, std::memory_order_relaxed);
  Connection* conn = acquire();
  conn->fd = fd;
  conn->framing = listener.framing;
  conn->cache_client = listener.cache_path;
  conn->listener = static_cast<std::uint16_t>(&listener - listeners_.data());
  if (conn->cache_client) ++cache_clients_;
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
  conn->cache_client = false;
  conn->framing = nullptr;  // the session stays: the next attach() reuses or replaces it
  conn->pending = server::Request{};
  conn->in_application = false;
  conn->request_bytes = 0;
  if (conn->reply.body.capacity() > ByteBuffer::kRetainedBuffer) conn->reply.body.shrink_to_fit();
  free_.push_back(conn);
}

// Which listeners are watched (docs/architecture.md, "Scheduling application requests"): none while
// stopping or paused for descriptors; the --persistent-socket ones (the cache clients' own path)
// otherwise; the others only while takes_app_connections(). Publishes this worker's backlog for the
// others' decisions. Connections already open are served all along.
void Worker::update_accepting() {
  const std::int32_t backlog = app_backlog();
  if (backlog != published_backlog_) {
    // seq_cst with the loads in takes_app_connections: of two workers saturating at once, at least one
    // sees the other saturated, so not both stop accepting.
    settings_.slot->app_backlog.store(backlog, std::memory_order_seq_cst);
    published_backlog_ = backlog;
  }
  const bool open = !stopping_ && accept_paused_until_ms_ == 0;
  const bool app = open && takes_app_connections(backlog);
  watch_handoffs(has_free_thread() && !exit_now_);
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

// With a thread free: yes. Saturated while another worker has a thread free: no, the connection waits
// in the kernel's queue for that worker. Every worker saturated: yes, so a cache request on a new
// connection is answered at once; an application request read meanwhile goes to the shared queue
// (hand_off), where the first thread freed anywhere takes it. Without that queue (a worker's own queue
// would tie the request to its thread; measured in docs/architecture.md), only the only worker takes
// them (as with --processes 1: its connections have nowhere else to go).
bool Worker::takes_app_connections(std::int32_t backlog) const {
  if (backlog < 0 || backlog == kNoAppBacklog) return true;
  bool alone = true;
  for (int i = 0; i < settings_.scoreboard_size; ++i) {
    const WorkerSlot& other = settings_.scoreboard[i];
    if (&other == settings_.slot) continue;
    const std::int32_t theirs = other.app_backlog.load(std::memory_order_seq_cst);
    if (theirs == kNoAppBacklog) continue;
    if (theirs < 0) return false;
    alone = false;
  }
  return alone || handoff_.enabled();
}

}  // namespace workers::loop
