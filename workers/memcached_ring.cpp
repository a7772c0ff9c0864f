// The memcached connections' io_uring loop (memcached_ring.hpp). One turn: one io_uring_enter that
// submits what the last turn queued (replies, re-armed receives) and waits for at least one
// completion; then every completion: multishot accepts, multishot receives into a ring of provided
// buffers (the kernel picks a buffer when data comes: no buffer per idle connection), sends, the
// worker's stop requests (an eventfd read) and the timeout tick.
#include "workers/memcached_ring.hpp"

#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <future>
#include <optional>
#include <string_view>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "workers/memcached_framing.hpp"
#include "workers/peer_name.hpp"
#include "workers/uring_helpers.hpp"

namespace workers {

namespace {

constexpr unsigned kQueueEntries = 256;  // submissions of one turn; a full queue is submitted early
constexpr unsigned kCompletionEntries = 4096;
constexpr unsigned kBuffers = 512;  // provided receive buffers (a power of two), kBufferBytes each
constexpr unsigned kBufferBytes = 4096;
constexpr int kBufferGroup = 0;
constexpr long long kTickNs = 250'000'000;                  // timeout checks, as the epoll loop's tick
constexpr std::uint64_t kStopGracefully = 1, kStopNow = 2;  // what the worker writes to the eventfd

// A completion's user_data: what it is for, and for whom (a connection's slot or a listener's index).
enum class Op : std::uint64_t { accept = 1, receive, send, wake, tick, cancel };
std::uint64_t tag(Op op, std::uint32_t who) { return (static_cast<std::uint64_t>(op) << 32) | who; }

struct RingConn {
  int fd = -1;
  std::optional<server::memcached::Session> protocol;
  std::string in;      // commands not run yet: the start of an incomplete one, or those held (below)
  std::string out;     // replies not yet handed to the kernel
  std::string flight;  // the bytes of the send in flight, stable until its completion
  std::size_t flight_done = 0;
  bool receiving = false;    // the multishot receive is armed
  bool sending = false;      // a send is in flight
  bool peer_closed = false;  // the receive ended (EOF or an error)
  bool close_after = false;  // quit, or an input memcached closes on: close once `out` is sent
  bool closing = false;      // shut down: closed once the receive and the send have ended
  bool held = false;  // the reply budget is reached: receive cancelled, commands wait in `in` until sent
  std::int64_t waiting_since_ms = 0;  // when `in` or the send started waiting (socket timeout)
};

}  // namespace

struct MemcachedRing::Loop {
  MemcachedRingSettings s;
  server::memcached::Counters counters;
  io_uring ring{};
  io_uring_buf_ring* buffer_ring = nullptr;
  std::vector<char> buffers;
  std::vector<RingConn> conns;
  std::vector<std::uint32_t> free_slots;
  std::vector<std::uint32_t> dirty;  // connections with replies to send at the end of this turn
  std::size_t open = 0;
  std::int64_t now_ms = 0;  // read once a turn
  int wake_fd = -1;
  std::uint64_t wake_value = 0;  // the eventfd read's buffer
  __kernel_timespec tick{0, kTickNs};
  bool stopping = false;
  bool stop_now = false;
  common::RateLimitedLog problem_log{20, 1};
  common::RateLimitedLog resource_log{1, 10};  // as the epoll loop's
  std::vector<bool> accept_paused;             // per listener: re-armed at the next tick

  bool setup(std::string& error);
  void run();
  void teardown();

  io_uring_sqe* sqe();
  void arm_accept(std::uint32_t listener);
  void arm_receive(std::uint32_t slot);
  void arm_wake();
  void arm_tick();
  void give_back(unsigned buffer);
  void complete(const io_uring_cqe& cqe);
  void accepted(int fd);
  void received(std::uint32_t slot, const io_uring_cqe& cqe);
  void sent(std::uint32_t slot, int result);
  void send_pending(std::uint32_t slot);
  void settle(std::uint32_t slot);  // closes, or starts closing, a connection with nothing left to do
  void shut(std::uint32_t slot);
  void hold(std::uint32_t slot);
  void resume(std::uint32_t slot);
  void check_timeouts();
  void begin_stop();
  void problem(const RingConn& conn, std::string_view what);
};

bool MemcachedRing::Loop::setup(std::string& error) {
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  params.cq_entries = kCompletionEntries;
  if (const int e = io_uring_queue_init_params(kQueueEntries, &ring, &params); e < 0) {
    error = fmt::format("io_uring_setup: {}", std::strerror(-e));
    return false;
  }
  // The turn's io_uring_enter then names the ring by its registered index: no file lookup per call.
  // Optional (Linux 5.18): without it liburing passes the descriptor.
  io_uring_register_ring_fd(&ring);
  int e = 0;
  buffer_ring = map_buffer_ring(&ring, kBuffers, kBufferGroup, &e);
  if (buffer_ring == nullptr) {
    error = fmt::format("provided buffers: {}", std::strerror(-e));
    io_uring_queue_exit(&ring);
    return false;
  }
  buffers.resize(std::size_t{kBuffers} * kBufferBytes);
  for (unsigned b = 0; b < kBuffers; ++b) give_back(b);
  counters.started_at = static_cast<std::int64_t>(time(nullptr));
  s.protocol.counters = &counters;
  accept_paused.assign(s.listen_fds.size(), false);
  for (std::uint32_t i = 0; i < s.listen_fds.size(); ++i) arm_accept(i);
  arm_wake();
  arm_tick();
  return true;
}

void MemcachedRing::Loop::teardown() {
  for (RingConn& conn : conns) {
    if (conn.fd >= 0) ::close(conn.fd);
  }
  io_uring_queue_exit(&ring);  // ends what is still armed
  unmap_buffer_ring(buffer_ring, kBuffers);
}

io_uring_sqe* MemcachedRing::Loop::sqe() {
  io_uring_sqe* entry = io_uring_get_sqe(&ring);
  if (entry == nullptr) {  // the queue is full: hand it over now
    io_uring_submit(&ring);
    entry = io_uring_get_sqe(&ring);
  }
  return entry;
}

void MemcachedRing::Loop::arm_accept(std::uint32_t listener) {
  io_uring_sqe* entry = sqe();
  io_uring_prep_multishot_accept(entry, s.listen_fds[listener], nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(entry, tag(Op::accept, listener));
}

void MemcachedRing::Loop::arm_receive(std::uint32_t slot) {
  io_uring_sqe* entry = sqe();
  io_uring_prep_recv_multishot(entry, conns[slot].fd, nullptr, 0, 0);
  entry->flags |= IOSQE_BUFFER_SELECT;
  entry->buf_group = kBufferGroup;
  io_uring_sqe_set_data64(entry, tag(Op::receive, slot));
  conns[slot].receiving = true;
}

void MemcachedRing::Loop::arm_wake() {
  io_uring_sqe* entry = sqe();
  io_uring_prep_read(entry, wake_fd, &wake_value, sizeof wake_value, 0);
  io_uring_sqe_set_data64(entry, tag(Op::wake, 0));
}

void MemcachedRing::Loop::arm_tick() {
  io_uring_sqe* entry = sqe();
  io_uring_prep_timeout(entry, &tick, 0, 0);
  io_uring_sqe_set_data64(entry, tag(Op::tick, 0));
}

void MemcachedRing::Loop::give_back(unsigned buffer) {
  io_uring_buf_ring_add(buffer_ring, buffers.data() + std::size_t{buffer} * kBufferBytes, kBufferBytes,
                        static_cast<unsigned short>(buffer), io_uring_buf_ring_mask(kBuffers), 0);
  io_uring_buf_ring_advance(buffer_ring, 1);
}

void MemcachedRing::Loop::run() {
  while (!stop_now && !(stopping && open == 0)) {
    const int e = io_uring_submit_and_wait(&ring, 1);
    if (e < 0 && e != -EINTR && e != -EAGAIN && e != -EBUSY && e != -ETIME) {
      common::log("worker {}: memcached connections: io_uring_enter: {}; closing them", s.worker_id,
                  std::strerror(-e));
      return;
    }
    now_ms = common::monotonic_ms();
    for_each_completion(&ring, [this](const io_uring_cqe& cqe) { complete(cqe); });
    for (std::uint32_t slot : dirty) send_pending(slot);
    dirty.clear();
  }
}

void MemcachedRing::Loop::complete(const io_uring_cqe& cqe) {
  const auto op = static_cast<Op>(cqe.user_data >> 32);
  const auto who = static_cast<std::uint32_t>(cqe.user_data & 0xffffffffu);
  const bool more = (cqe.flags & IORING_CQE_F_MORE) != 0;
  switch (op) {
    case Op::accept:
      if (cqe.res >= 0) {
        accepted(cqe.res);
      } else if (accept_should_pause(-cqe.res)) {
        // Out of descriptors: re-armed now it would fail at once again, so at the next tick (connections
        // wait in the kernel's queue meanwhile), as the epoll loop pauses.
        accept_paused[who] = true;
        unsigned long long suppressed = 0;
        if (resource_log.allow(&suppressed))
          common::log("{}{}", accept_pause_note(s.worker_id, -cqe.res, kTickNs / 1'000'000, open),
                      common::RateLimitedLog::suppressed_note(suppressed));
        return;
      } else if (cqe.res != -ECANCELED && cqe.res != -EAGAIN && cqe.res != -EINTR) {
        common::log("worker {}: memcached accept: {}", s.worker_id, std::strerror(-cqe.res));
      }
      if (!more && !stopping) arm_accept(who);  // ended: armed again, as epoll would retry
      return;
    case Op::receive:
      return received(who, cqe);
    case Op::send:
      return sent(who, cqe.res);
    case Op::wake:
      if (cqe.res == sizeof wake_value) {
        if (wake_value & kStopNow) stop_now = true;
        if (wake_value & kStopGracefully) begin_stop();
      }
      if (!stop_now) arm_wake();
      return;
    case Op::tick:
      for (std::uint32_t i = 0; i < accept_paused.size(); ++i) {
        if (accept_paused[i] && !stopping) arm_accept(i);
        accept_paused[i] = false;
      }
      check_timeouts();
      arm_tick();
      return;
    case Op::cancel:
      return;
  }
}

void MemcachedRing::Loop::accepted(int fd) {
  s.slot->accepted.fetch_add(1, std::memory_order_relaxed);
  if (stopping) {  // accepted just before the cancel took effect: the client retries elsewhere
    ::close(fd);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails harmlessly on UNIX sockets
  std::uint32_t slot;
  if (!free_slots.empty()) {
    slot = free_slots.back();
    free_slots.pop_back();
  } else {
    slot = static_cast<std::uint32_t>(conns.size());
    conns.emplace_back();
  }
  RingConn& conn = conns[slot];
  conn.fd = fd;
  conn.protocol.emplace(s.protocol);
  ++open;
  ++counters.curr_connections;
  ++counters.total_connections;
  arm_receive(slot);
}

void MemcachedRing::Loop::received(std::uint32_t slot, const io_uring_cqe& cqe) {
  RingConn& conn = conns[slot];
  if (cqe.res > 0) {
    const unsigned buffer = cqe.flags >> IORING_CQE_BUFFER_SHIFT;
    const std::string_view data(buffers.data() + std::size_t{buffer} * kBufferBytes,
                                static_cast<std::size_t>(cqe.res));
    if (conn.held) {
      conn.in.append(data);  // arrived before the cancel took effect: runs once the replies are sent
    } else if (!conn.close_after && !conn.closing) {
      const bool was_waiting = !conn.in.empty();
      server::memcached::Progress p;
      if (!was_waiting) {  // the usual case: whole commands, run from the buffer itself
        p = conn.protocol->execute(data, conn.out);
        conn.in.assign(data.substr(p.consumed));
      } else {
        conn.in.append(data);
        p = conn.protocol->execute(conn.in, conn.out);
        conn.in.erase(0, p.consumed);
      }
      if (p.close) {
        conn.close_after = true;
        conn.in.clear();
      } else if (p.more) {
        hold(slot);
      }
      conn.waiting_since_ms = now_ms;  // the socket timeout counts silence, as on the epoll loop
      if (!conn.out.empty())
        dirty.push_back(slot);
      else if (conn.close_after)
        settle(slot);  // nothing to send first (a line over the limit): the receive is shut down
    }
    give_back(buffer);
  }
  if ((cqe.flags & IORING_CQE_F_MORE) != 0) return;
  conn.receiving = false;
  if (conn.held && cqe.res == -ECANCELED) return;  // hold()'s cancel: resume() receives again
  if (cqe.res == -ENOBUFS && !conn.closing) {      // out of buffers for a moment
    if (!conn.held) arm_receive(slot);
    return;
  }
  if (cqe.res < 0 && cqe.res != -ECONNRESET && cqe.res != -ECANCELED && !conn.closing)
    problem(conn, fmt::format("read failed: {}", std::strerror(-cqe.res)));
  conn.peer_closed = true;
  if (conn.held) return;  // the commands that wait run once the replies before them are sent
  if (!conn.in.empty() && !conn.closing) problem(conn, memcached_truncated_note(conn.in.size()));
  conn.in.clear();
  settle(slot);
}

// The replies reached the budget: stop receiving (the client's further commands wait in its socket,
// and TCP's window slows it) until they are sent, as the epoll loop reads nothing while a reply waits.
void MemcachedRing::Loop::hold(std::uint32_t slot) {
  RingConn& conn = conns[slot];
  conn.held = true;
  if (!conn.receiving) return;
  // The slot cannot be reused before the cancel lands: a connection closes only once its receive ended.
  io_uring_sqe* entry = sqe();
  io_uring_prep_cancel64(entry, tag(Op::receive, slot), 0);
  io_uring_sqe_set_data64(entry, tag(Op::cancel, slot));
}

// Every reply is sent: run the commands that waited, and receive again unless the budget is reached anew.
void MemcachedRing::Loop::resume(std::uint32_t slot) {
  RingConn& conn = conns[slot];
  conn.held = false;
  if (!conn.in.empty() && !conn.close_after && !conn.closing) {
    const server::memcached::Progress p = conn.protocol->execute(conn.in, conn.out);
    conn.in.erase(0, p.consumed);
    if (p.close) {
      conn.close_after = true;
      conn.in.clear();
    } else if (p.more) {
      conn.held = true;  // the receive is still cancelled
      return;
    }
  }
  if (conn.peer_closed) {
    if (!conn.in.empty() && !conn.closing) problem(conn, memcached_truncated_note(conn.in.size()));
    conn.in.clear();
    return;
  }
  if (!conn.receiving && !conn.close_after && !conn.closing) arm_receive(slot);
}

void MemcachedRing::Loop::send_pending(std::uint32_t slot) {
  RingConn& conn = conns[slot];
  if (conn.sending || conn.out.empty() || conn.closing) return;
  conn.flight.swap(conn.out);
  conn.out.clear();
  conn.flight_done = 0;
  conn.sending = true;
  conn.waiting_since_ms = now_ms;
  io_uring_sqe* entry = sqe();
  io_uring_prep_send(entry, conn.fd, conn.flight.data(), conn.flight.size(), MSG_NOSIGNAL);
  io_uring_sqe_set_data64(entry, tag(Op::send, slot));
}

void MemcachedRing::Loop::sent(std::uint32_t slot, int result) {
  RingConn& conn = conns[slot];
  conn.sending = false;
  if (result < 0) {
    if (!conn.closing && result != -EPIPE && result != -ECONNRESET)
      problem(conn, fmt::format("write failed after {} of {} byte(s): {}", conn.flight_done,
                                conn.flight.size(), std::strerror(-result)));
    conn.out.clear();
    conn.close_after = true;
    return settle(slot);
  }
  conn.flight_done += static_cast<std::size_t>(result);
  if (conn.flight_done < conn.flight.size()) {  // a short send: the rest goes before newer replies
    conn.out.insert(0, conn.flight, conn.flight_done);
    return send_pending(slot);
  }
  if (!conn.out.empty()) return send_pending(slot);
  if (conn.held) resume(slot);
  if (!conn.out.empty()) return send_pending(slot);
  conn.waiting_since_ms = now_ms;
  settle(slot);
}

// Nothing in flight, nothing to send: close if the client is gone, asked for it, or the worker stops
// and the connection has no command half-read.
void MemcachedRing::Loop::settle(std::uint32_t slot) {
  RingConn& conn = conns[slot];
  if (conn.fd < 0 || conn.sending || !conn.out.empty()) return;
  const bool idle_at_stop = stopping && conn.in.empty();
  if (!conn.peer_closed && !conn.close_after && !conn.closing && !idle_at_stop) return;
  if (conn.receiving) return shut(slot);  // the receive ends with the shutdown, then settle again
  ::close(conn.fd);
  conn = RingConn{};
  free_slots.push_back(slot);
  --open;
  --counters.curr_connections;
}

// Ends the connection's receive: the shutdown wakes it with an end of stream. Half-closing first is
// also the orderly close (the client reads every reply, then an EOF).
void MemcachedRing::Loop::shut(std::uint32_t slot) {
  RingConn& conn = conns[slot];
  if (conn.closing) return;
  conn.closing = true;
  ::shutdown(conn.fd, SHUT_RDWR);
}

void MemcachedRing::Loop::check_timeouts() {
  const std::int64_t now = now_ms;
  const std::int64_t limit = s.socket_timeout_s * 1000LL;
  for (std::uint32_t slot = 0; slot < conns.size(); ++slot) {
    RingConn& conn = conns[slot];
    if (conn.fd < 0 || conn.closing || (conn.in.empty() && !conn.sending)) continue;
    if (now - conn.waiting_since_ms < limit) continue;
    s.slot->bad_requests.fetch_add(1, std::memory_order_relaxed);
    problem(conn,
            fmt::format("socket timeout ({} s) {} with {} byte(s) received", s.socket_timeout_s,
                        conn.sending ? "writing the reply" : "waiting for the request", conn.in.size()));
    conn.out.clear();
    shut(slot);
    settle(slot);
  }
}

// The worker stops: no more accepts, idle connections close now, the others once their command is
// answered. The listeners are the ring's (the worker leaves them open for it): closed once their
// accepts are cancelled (an accept in flight holds its own reference to the socket), and never armed
// again (`stopping`).
void MemcachedRing::Loop::begin_stop() {
  if (stopping) return;
  stopping = true;
  for (std::uint32_t i = 0; i < s.listen_fds.size(); ++i) {
    io_uring_sqe* entry = sqe();
    io_uring_prep_cancel64(entry, tag(Op::accept, i), 0);
    io_uring_sqe_set_data64(entry, tag(Op::cancel, i));
  }
  io_uring_submit(&ring);  // no accept still queued to resolve a listener's number after the close
  for (int fd : s.listen_fds) ::close(fd);
  for (std::uint32_t slot = 0; slot < conns.size(); ++slot) settle(slot);
}

void MemcachedRing::Loop::problem(const RingConn& conn, std::string_view what) {
  unsigned long long suppressed = 0;
  if (!problem_log.allow(&suppressed)) return;
  common::log("worker {}: client {}: {}{}", s.worker_id, peer_name(conn.fd), what,
              common::RateLimitedLog::suppressed_note(suppressed));
}

bool memcached_ring_usable(std::string& why) {
  io_uring ring{};
  io_uring_params params{};
  params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (const int e = io_uring_queue_init_params(4, &ring, &params); e < 0) {
    why = fmt::format("io_uring_setup: {}", std::strerror(-e));
    return false;
  }
  // Multishot receives with provided buffers (Linux 6.0) are what the loop needs beyond the setup.
  io_uring_probe* probe = io_uring_get_probe_ring(&ring);
  const bool ok = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_RECV) &&
                  io_uring_opcode_supported(probe, IORING_OP_ACCEPT) &&
                  io_uring_opcode_supported(probe, IORING_OP_SEND);
  if (probe != nullptr) io_uring_free_probe(probe);
  io_uring_queue_exit(&ring);
  if (!ok) why = "the kernel lacks io_uring's accept, recv or send";
  return ok;
}

MemcachedRing::MemcachedRing() = default;

MemcachedRing::~MemcachedRing() { stop_now(); }

bool MemcachedRing::start(MemcachedRingSettings settings, std::string& error) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    error = fmt::format("eventfd: {}", std::strerror(errno));
    return false;
  }
  std::promise<std::string> ready;
  std::future<std::string> result = ready.get_future();
  thread_ = std::thread([this, settings = std::move(settings), &ready]() mutable {
    // The ring is made on its own thread: with SINGLE_ISSUER only the thread that made it submits.
    auto loop = std::make_unique<Loop>();
    loop->s = std::move(settings);
    loop->wake_fd = wake_fd_;
    std::string failure;
    if (!loop->setup(failure)) {
      ready.set_value(failure);
      return;
    }
    ready.set_value("");
    loop->run();
    loop->teardown();
    done_.store(true, std::memory_order_release);
    if (loop->s.on_done) loop->s.on_done();
  });
  error = result.get();
  if (error.empty()) return true;
  thread_.join();
  ::close(wake_fd_);
  wake_fd_ = -1;
  return false;
}

void MemcachedRing::wake(std::uint64_t what) {
  if (wake_fd_ < 0 || (asked_ & what) != 0) return;
  asked_ |= what;
  [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &what, sizeof what);
}

void MemcachedRing::stop_gracefully() { wake(kStopGracefully); }

void MemcachedRing::stop_now() {
  if (!thread_.joinable()) return;
  wake(kStopNow);
  thread_.join();
  ::close(wake_fd_);
  wake_fd_ = -1;
}

}  // namespace workers
