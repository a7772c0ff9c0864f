// The worker's side of the shared queue of ready application requests (handoff.hpp;
// docs/architecture.md, "Scheduling application requests"): a saturated worker sends an application
// request it cannot start into the queue instead of its own threads' queue, and a worker with a free
// thread takes the oldest one, connection included, as if it had accepted it itself.
#include "workers/worker_loop.hpp"

namespace workers::loop {

bool Worker::has_free_thread() const {
  return app_threads_.started() && in_application_ < static_cast<std::size_t>(settings_.application_threads);
}

// Only a request that would otherwise wait for this worker's busy threads, and only what one message
// carries: not a cache client's connection (--persistent-socket: its client keeps it with this
// worker), not a body already spooled to a file, not more than kHandoffMaxBytes read. Those wait here.
bool Worker::hand_off(Connection* conn) {
  if (!handoff_.enabled() || has_free_thread() || conn->cache_client || conn->spool.active() ||
      conn->in.size() > kHandoffMaxBytes) {
    return false;
  }
  const HandoffChannel::Sent sent = handoff_.send(conn->fd, conn->listener, conn->in.view());
  if (sent != HandoffChannel::Sent::sent) {
    if (sent == HandoffChannel::Sent::failed)
      resource_log_.log(fmt::format("worker {}: hand-off queue: {}: the request waits for this worker",
                                    settings_.id, std::strerror(errno)));
    return false;  // full: the queue holds plenty already, this one waits for our threads
  }
  accounting_.handed_off(conn->pending);
  settings_.slot->handed_off.fetch_add(1, std::memory_order_relaxed);
  // The socket lives on in the message: our descriptor goes without a shutdown, and out of the epoll
  // set first (closing it would not remove it there while the message holds the file).
  if (conn->in_epoll) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, conn->fd, nullptr);
    conn->in_epoll = false;
  }
  if (conn->framing != nullptr) conn->framing->closed(*conn);
  let_go(conn);
  update_accepting();  // a thread may have freed elsewhere meanwhile: then stop taking connections
  return true;
}

// Oldest first, one per free thread; each arrives as a connection just accepted whose bytes were
// already read, and goes through the one connection loop (framed again, then run here).
void Worker::take_handoffs() {
  check_handoffs_ = false;
  if (!handoff_.enabled()) return;
  if (!handoff_buffer_) handoff_buffer_ = std::make_unique_for_overwrite<char[]>(kHandoffMaxBytes);
  while (has_free_thread() && !exit_now_) {
    // Received straight into a pooled connection's buffer (a pooled one is clean: released or new);
    // only what exceeds it goes through the scratch buffer.
    Connection* conn = acquire();
    conn->in.reserve(kInitialBuffer);
    HandoffChannel::Received got;
    const char* error = nullptr;
    const std::size_t room = conn->in.spare_size();
    const HandoffChannel::Taken taken =
        handoff_.receive(conn->in.spare(), room, handoff_buffer_.get(), got, &error);
    if (taken != HandoffChannel::Taken::request) {
      free_.push_back(conn);
      if (error != nullptr)
        resource_log_.log(fmt::format("worker {}: hand-off queue: {}", settings_.id, error));
      if (taken == HandoffChannel::Taken::empty) break;
      continue;
    }
    if (got.listener >= listeners_.size() || listeners_[got.listener].cache_path) {
      free_.push_back(conn);
      resource_log_.log(fmt::format("worker {}: hand-off queue: a request from unknown listener {} dropped",
                                    settings_.id, got.listener));
      ::close(got.fd);
      continue;
    }
    settings_.slot->handed_in.fetch_add(1, std::memory_order_relaxed);
    const Listener& listener = listeners_[got.listener];
    conn->fd = got.fd;
    conn->listener = got.listener;
    conn->framing = listener.framing;
    conn->cache_client = false;
    conn->framing->attach(*conn, listener.fd);
    conn->in.commit(std::min(got.bytes, room));
    if (got.bytes > room) {
      conn->in.reserve(got.bytes + kInitialBuffer);
      std::memcpy(conn->in.spare(), handoff_buffer_.get(), got.bytes - room);
      conn->in.commit(got.bytes - room);
    }
    conn->deadline_ms = monotonic_ms() + settings_.socket_timeout_s * 1000LL;
    serve(conn);
    if (t_loop_lost) return;  // lent and taken: the new holder looks at the queue when a thread frees
  }
}

// Its receiving end is watched while a thread is free, also while stopping (a stopping worker still
// runs what its generation queued); EPOLLEXCLUSIVE as the listeners: one waiting worker per request.
void Worker::watch_handoffs(bool want) {
  if (!handoff_.enabled() || want == handoff_watched_) return;
  handoff_watched_ = want;
  if (!want) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, handoff_.receive_fd(), nullptr);
    return;
  }
  struct epoll_event ev {};
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;
  ev.data.u64 = kHandoffTag;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, handoff_.receive_fd(), &ev) != 0 && errno != EEXIST)
    common::log("worker {}: cannot watch the hand-off queue: {}", settings_.id, std::strerror(errno));
}

}  // namespace workers::loop
