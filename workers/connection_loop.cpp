// The one connection loop (Worker::serve) and what it drives: reading and framing through the
// connection's Framing (connection.hpp), dispatching, the hand-off to the application threads, writing
// replies, closing. docs/architecture.md, "The connection loop and its framing seam".
#include "workers/peer_name.hpp"
#include "workers/worker_loop.hpp"

namespace workers::loop {

// Frames what arrived so far and says how many bytes to make room for. A large application body goes
// to a file as it arrives (--post-buffering, body_spool.hpp): the framing only sees the head.
void Worker::frame_state(Connection* conn, std::size_t* want) {
  if (!conn->spool.active()) {
    conn->frame_status = conn->framing->frame(*conn, want);
    if (conn->frame_status != server::FrameStatus::incomplete || !start_spool(conn)) return;
  }
  spool_body(conn, want);
}

bool Worker::start_spool(Connection* conn) {
  std::size_t start = 0;
  std::uint64_t length = 0;
  if (!conn->framing->fixed_body(*conn, &start, &length) || length < settings_.post_buffering) return false;
  if (conn->spool.start(length, start)) return true;
  conn->frame_status = server::FrameStatus::invalid;  // serve() refuses it (refuse_unspooled)
  return false;
}

void Worker::spool_body(Connection* conn, std::size_t* want) {
  BodySpool& spool = conn->spool;
  const std::size_t head = spool.head_bytes();
  if (!spool.complete() && conn->in.size() > head) {
    std::size_t taken = 0;
    if (!spool.take(conn->in.view().substr(head), &taken)) {
      conn->frame_status = server::FrameStatus::invalid;
      return;
    }
    conn->in.erase(head, taken);  // what follows the body (a pipelined request) stays
  }
  if (spool.complete()) {
    conn->framing->body_spooled(*conn);
    conn->frame_status = server::FrameStatus::complete;
    return;
  }
  conn->frame_status = server::FrameStatus::incomplete;
  *want = conn->in.size() + kSpoolReadBytes;
}

// The body could not go to its file: a 500, and the rest of the body is read and dropped.
Take Worker::refuse_unspooled(Connection* conn, std::string& note) {
  note = conn->spool.failure();
  server::http_error_response(conn->reply.body, 500,
                              "Internal Server Error: the request body could not be stored");
  conn->reply.close_after = true;
  conn->request_bytes = conn->in.size();
  return Take::rejected;
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
    // recv, not read: the socket call skips the file layer (position lock, access checks), a few
    // hundred ns on every request of a kept connection (docs/benchmarks.md, the memcached section).
    ssize_t n = ::recv(conn->fd, conn->in.spare(), asked, 0);
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
    const Take take =
        conn->spool.failure().empty() ? framing.take_request(*conn, note_) : refuse_unspooled(conn, note_);
    switch (take) {
      case Take::dispatch:
        conn->pending.body_fd = conn->spool.active() ? conn->spool.fd() : -1;
        if (!dispatch(conn)) return;
        if (finish_reply(conn)) return;
        continue;
      case Take::rejected:
        settings_.slot->bad_requests.fetch_add(1, std::memory_order_relaxed);
        log_problem(conn, note_);
        if (conn->reply.body.empty() && conn->reply.head.empty()) return close_connection(conn, true);
        conn->linger = true;  // the client may still be sending: let it, so it reads the refusal
        break;
      case Take::replied:
        if (!note_.empty()) log_problem(conn, note_);
        break;
    }
    if (start_reply(conn)) return;
  }
}

// Handles conn->pending: on this thread, or on an application thread for a blocking application
// when one already runs (the loop then leaves the connection alone until on_application_finished).
// False when the connection is no longer the loop's to touch (handed over, or this thread lost the loop).
bool Worker::dispatch(Connection* conn) {
  conn->started_ns = accounting_.begin(conn->pending);
  if (serve_static(conn)) return true;
  if (conn->pending.header.modifier1 == server::kModifierApp && app_threads_.started()) {
    // Not while a client of a cache listener (--persistent-socket) is connected: its cache requests
    // could come while the loop is lent and wait up to two takeover delays; the hand-off keeps them
    // at loop speed.
    if (in_application_ == 0 && !in_libuv_ && cache_clients_ == 0) return run_inline(conn);
    if (!hand_off(conn)) hand_to_application(conn);
    return false;
  }
  // Harakiri watches the application request when one runs: a cache request meanwhile must not
  // clear its start or its description.
  const bool publish = in_application_ == 0;
  if (publish) publish_busy(conn->pending);
  dispatcher_.handle(conn->pending, conn->reply, &note_);  // clears the reply and the note first
  if (settings_.publish_busy && publish) settings_.slot->busy_since_ms.store(0, std::memory_order_relaxed);
  settings_.slot->requests.fetch_add(1, std::memory_order_relaxed);
  if (!note_.empty()) log_problem(conn, note_);
  return true;
}

// The application request on the loop's own thread, the loop lent meanwhile (loop_baton.hpp). Back
// with the loop: the reply is the caller's to send, no thread woken. Back without it: the request
// goes to the new holder as an application thread's would, and this thread unwinds (t_loop_lost).
bool Worker::run_inline(Connection* conn) {
  conn->in_application = true;
  ++in_application_;
  lent_for_ = conn;
  conn->reply.clear();
  const std::uint64_t lent = baton_.lend(conn->started_ns);
  run_application(this, conn);
  if (baton_.reclaim(lent)) {
    conn->in_application = false;
    --in_application_;
    return true;
  }
  t_loop_lost = true;
  app_threads_.return_inline(conn);
  return false;
}

// --static-map & co (server/static_files.hpp): answered on the loop, the file sent with sendfile.
bool Worker::serve_static(Connection* conn) {
  if (settings_.static_files == nullptr || conn->pending.header.modifier1 != server::kModifierApp)
    return false;
  note_.clear();
  const bool served = settings_.static_files->serve(conn->pending, conn->framing->direct_reply_context(*conn),
                                                    conn->reply, note_);
  if (!note_.empty()) log_problem(conn, note_);
  if (served) settings_.slot->requests.fetch_add(1, std::memory_order_relaxed);
  return served;
}

// A dispatched request was handled: let the framing shape the reply, then start writing.
bool Worker::finish_reply(Connection* conn) {
  accounting_.finish(conn->pending, conn->reply, conn->started_ns, conn->reply.failed);
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
  conn->spool.reset();
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
    conn->reply.failed = true;
    common::log("worker {}: application failed: {}", self->settings_.id, error.what());
  }
  if (self->settings_.publish_busy) self->settings_.slot->busy_since_ms.store(0, std::memory_order_relaxed);
  self->settings_.slot->requests.fetch_add(1, std::memory_order_relaxed);
}

void Worker::on_application_finished() {
  for (Connection* conn : app_threads_.take_finished()) {
    if (conn == adopted_) adopted_ = nullptr;
    conn->in_application = false;
    --in_application_;
    conn->deadline_ms = monotonic_ms() + settings_.socket_timeout_s * 1000LL;
    if (!finish_reply(conn)) serve(conn);
  }
  update_accepting();
  check_handoffs_ = true;  // a thread freed: the shared queue's oldest request comes first
}

// A reply was fully sent (or there was none): close unless the client chose the persistent mode.
// Returns true when the connection was closed.
bool Worker::reply_done(Connection* conn) {
  const bool drained = conn->in.size() == 0;
  if (conn->linger && !conn->peer_closed) {
    start_draining(conn);
    return true;
  }
  if (conn->reply.close_after || (stopping_ && drained) || (conn->peer_closed && drained)) {
    close_connection(conn, true);
    return true;
  }
  conn->deadline_ms = monotonic_ms() + settings_.socket_timeout_s * 1000LL;
  return false;
}

// A reply after which the connection closes (every application reply to nginx's uwsgi_pass) is sent
// with MSG_MORE: its last partial segment stays queued until the close() or half-close that follows
// at once, and goes out with the FIN in one segment (tcp_send_fin tacks the FIN onto an unsent
// segment). One segment less, and one wake-up less for the client, which reads the reply and the
// end of it together. Every way out of a closing reply ends in close(), shutdown() or the failure
// close, each of which sends what is held.
bool Worker::write_reply(Connection* conn) {
  server::Reply& reply = conn->reply;
  const std::size_t total = reply.head.size() + reply.body.size();
  const int flags = MSG_NOSIGNAL | (reply.close_after ? MSG_MORE : 0);
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
    // One buffer (a memcached or cache reply): send, which skips the iovec copy.
    ssize_t n;
    if (count == 1) {
      n = ::send(conn->fd, iov[0].iov_base, iov[0].iov_len, flags);
    } else {
      struct msghdr message {};
      message.msg_iov = iov;
      message.msg_iovlen = static_cast<std::size_t>(count);
      n = ::sendmsg(conn->fd, &message, flags);
    }
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
  if (reply.file.open()) {
    const server::SendStatus sent = server::send_file_body(conn->fd, reply.file);
    if (sent == server::SendStatus::again) return true;  // still writing
    if (sent == server::SendStatus::failed) {
      log_problem(conn, fmt::format("sending a static file failed with {} byte(s) left: {}",
                                    reply.file.length, std::strerror(errno)));
      close_connection(conn, false);
      return false;
    }
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
  if (conn->draining) return drain(conn);
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) conn->socket_drained = false;
  conn->deadline_ms = monotonic_ms() + settings_.socket_timeout_s * 1000LL;
  serve(conn);
}

// Orderly close: half-close first so the peer reads our whole reply and an EOF, never a reset (close()
// answers bytes left unread with one). Not needed when the socket was read dry (or to EOF) and all of
// it consumed: close() alone then sends the same FIN, one syscall less on every request of a
// connection-per-request client such as nginx's uwsgi_pass. close() also takes the fd out of the epoll
// set (nothing else holds it). The Connection is released only after the current batch of events,
// one of which may still name it.
void Worker::close_connection(Connection* conn, bool orderly) {
  if (conn->fd < 0) return;
  if (conn->framing != nullptr) conn->framing->closed(*conn);
  conn->spool.reset();
  conn->linger = false;
  conn->draining = false;
  if (conn->cache_client) --cache_clients_;
  const bool read_all = conn->in.size() == 0 && (conn->socket_drained || conn->peer_closed);
  if (orderly && !read_all) ::shutdown(conn->fd, SHUT_WR);
  let_go(conn);
}

void Worker::let_go(Connection* conn) {
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

// A lingering close, as web servers do after an error reply: our side is shut (the client reads the
// reply and an EOF), what the client still sends is read and dropped, so the kernel never answers it
// with a reset that could destroy the reply in flight (nginx, sending a body to an upstream that
// refused it, would report a 502). Bounded: --socket-timeout of silence or kLingerMs in all.
void Worker::start_draining(Connection* conn) {
  ::shutdown(conn->fd, SHUT_WR);
  conn->draining = true;
  conn->drain_until_ms = monotonic_ms() + kLingerMs;
  conn->deadline_ms =
      std::min<std::int64_t>(monotonic_ms() + settings_.socket_timeout_s * 1000LL, conn->drain_until_ms);
  conn->in.reset_for_reuse();
  wait_for(conn, EPOLLIN);
}

void Worker::drain(Connection* conn) {
  char scratch[16 * 1024];
  for (std::size_t dropped = 0; dropped < kDrainBytesPerWake;) {
    const ssize_t n = ::read(conn->fd, scratch, sizeof scratch);
    if (n > 0) {
      dropped += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return close_connection(conn, false);  // EOF (the client read the refusal) or a reset
  }
  conn->deadline_ms =
      std::min<std::int64_t>(monotonic_ms() + settings_.socket_timeout_s * 1000LL, conn->drain_until_ms);
}

void Worker::release_closed() {
  for (Connection* conn : closed_) release(conn);
  closed_.clear();
}

void Worker::log_problem(Connection* conn, std::string_view what) {
  unsigned long long suppressed = 0;
  if (!problem_log_.allow(&suppressed)) return;
  common::log("worker {}: client {}: {}{}", settings_.id, peer_name(conn->fd), what,
              common::RateLimitedLog::suppressed_note(suppressed));
}

}  // namespace workers::loop
