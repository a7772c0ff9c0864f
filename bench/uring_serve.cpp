// Is io_uring cheaper than epoll + recv/send for a server with one request in flight per connection?
// A one-thread server of the memcached text subset bench/mc_load sends (get KEY..., set KEY F E N),
// with a fixed value for every get, over loopback TCP, served by one of two loops:
//   epoll  -- as workers/ do today: level-triggered epoll_wait, one recv per readable socket, the
//             replies of that read in one send;
//   uring  -- io_uring: multishot accept, multishot recv into a provided-buffer ring, the replies of a
//             loop turn submitted as sends together with the wait for the next completion, in one
//             io_uring_enter per turn (SINGLE_ISSUER | DEFER_TASKRUN unless --no-defer).
// It counts its own system calls by kind; SIGUSR1 prints the counts so far and its CPU (getrusage) on
// stderr, so a script can take the difference around a load run (bench/uring_vs.sh).
//
//   uring_serve --mode epoll|uring --port P [--value BYTES=64] [--no-defer]
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "workers/uring_helpers.hpp"

namespace {

volatile sig_atomic_t g_report = 0;
volatile sig_atomic_t g_stop = 0;

struct Counts {
  // syscalls: every call into the kernel; recv/send/accept count the operations (calls for epoll,
  // completions for uring).
  unsigned long long requests = 0, syscalls = 0, epoll_wait = 0, recv = 0, send = 0, accept = 0, enter = 0;
};
Counts g_counts;

void report() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                     static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
  std::fprintf(stderr,
               "counts requests %llu syscalls %llu epoll_wait %llu recv %llu send %llu accept %llu "
               "io_uring_enter %llu "
               "cpu_s %.6f\n",
               g_counts.requests, g_counts.syscalls, g_counts.epoll_wait, g_counts.recv, g_counts.send,
               g_counts.accept, g_counts.enter, cpu);
}

// Parses every whole command at the front of `in` and appends the replies to `out`; returns the bytes
// consumed. The value of a get is `value` whatever the key (the store is not what is measured).
std::size_t serve(std::string_view in, std::string& out, const std::string& value) {
  std::size_t used = 0;
  for (;;) {
    const std::string_view rest = in.substr(used);
    const std::size_t eol = rest.find("\r\n");
    if (eol == std::string_view::npos) return used;
    const std::string_view line = rest.substr(0, eol);
    if (line.substr(0, 4) == "get ") {
      std::size_t p = 4;
      while (p < line.size()) {
        std::size_t sp = line.find(' ', p);
        if (sp == std::string_view::npos) sp = line.size();
        out.append("VALUE ").append(line.substr(p, sp - p)).append(" 0 ");
        out.append(std::to_string(value.size())).append("\r\n").append(value).append("\r\n");
        p = sp + 1;
      }
      out.append("END\r\n");
      used += eol + 2;
    } else if (line.substr(0, 4) == "set ") {
      const std::size_t last = line.rfind(' ');
      const std::size_t n = std::strtoull(std::string(line.substr(last + 1)).c_str(), nullptr, 10);
      if (rest.size() < eol + 2 + n + 2) return used;  // the data block is not all here yet
      out.append("STORED\r\n");
      used += eol + 2 + n + 2;
    } else {
      out.append("ERROR\r\n");
      used += eol + 2;
    }
    ++g_counts.requests;
  }
}

int listen_on(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 1024) != 0) {
    std::perror("uring_serve: listen");
    std::exit(1);
  }
  return fd;
}

void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

struct Conn {
  int fd = -1;
  std::string in;
  std::string out;     // replies not yet handed to the kernel
  std::string flight;  // the bytes of the send in flight (uring), stable until its completion
  std::size_t flight_done = 0;
  bool sending = false;  // a send is in flight (uring)
  bool reading = false;  // the multishot recv is armed (uring)
};

// epoll: what workers/connection_loop.cpp does for a memcached connection today.
struct EpollLoop {
  int ep = epoll_create1(0);
  int listener = -1;
  std::vector<Conn> conns = std::vector<Conn>(65536);
  std::vector<epoll_event> events = std::vector<epoll_event>(256);
  const std::string& value;

  explicit EpollLoop(const std::string& v) : value(v) {}
  void watch(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ++g_counts.syscalls;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  void adopt(int fd) {    // a new client connection
    ++g_counts.syscalls;  // setsockopt
    nodelay(fd);
    conns[static_cast<std::size_t>(fd)] = Conn{};
    conns[static_cast<std::size_t>(fd)].fd = fd;
    watch(fd);
  }
  // One turn: wait for readiness (timeout -1 = until something), then one recv per ready socket and
  // the replies of that read in one send.
  void step(int timeout_ms) {
    static char buf[16384];
    ++g_counts.epoll_wait;
    ++g_counts.syscalls;
    const int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), timeout_ms);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listener) {
        ++g_counts.accept;
        ++g_counts.syscalls;
        const int c = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK);
        if (c >= 0) adopt(c);
        continue;
      }
      Conn& c = conns[static_cast<std::size_t>(fd)];
      ++g_counts.recv;
      ++g_counts.syscalls;
      const ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        ++g_counts.syscalls;
        close(fd);  // also leaves the epoll set
        c = Conn{};
        continue;
      }
      if (r < 0) continue;
      c.in.append(buf, static_cast<std::size_t>(r));
      c.in.erase(0, serve(c.in, c.out, value));
      while (!c.out.empty()) {  // the replies are small: a blocking-ish retry is enough for a bench
        ++g_counts.send;
        ++g_counts.syscalls;
        const ssize_t s = send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (s < 0 && errno != EAGAIN && errno != EINTR) break;
        if (s > 0) c.out.erase(0, static_cast<std::size_t>(s));
      }
    }
  }
};

// uring: the user_data of a completion says what it is for.
enum Op : std::uint64_t { kAccept = 1, kRecv = 2, kSend = 3 };
std::uint64_t tag(Op op, int fd) {
  return (static_cast<std::uint64_t>(op) << 32) | static_cast<std::uint32_t>(fd);
}

constexpr unsigned kBufs = 1024;  // provided buffers, a power of two
constexpr unsigned kBufSize = 4096;
constexpr int kGroup = 0;

struct UringLoop {
  io_uring ring{};
  io_uring_buf_ring* br = nullptr;
  std::vector<char> bufs;
  std::vector<Conn> conns = std::vector<Conn>(65536);
  std::vector<int> dirty;  // connections with replies to send after this turn's completions
  int listener = -1;
  const std::string& value;

  explicit UringLoop(const std::string& v) : value(v) {}
  bool init(bool defer) {
    io_uring_params p{};
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = 4096;
    if (defer) p.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    if (const int e = io_uring_queue_init_params(256, &ring, &p); e < 0) {
      std::fprintf(stderr, "uring_serve: io_uring_queue_init: %s\n", std::strerror(-e));
      return false;
    }
    int e = 0;
    br = workers::map_buffer_ring(&ring, kBufs, kGroup, &e);
    if (br == nullptr) {
      std::fprintf(stderr, "uring_serve: provided buffers: %s\n", std::strerror(-e));
      return false;
    }
    bufs.resize(static_cast<std::size_t>(kBufs) * kBufSize);
    for (unsigned b = 0; b < kBufs; ++b) give_back(b);
    return true;
  }
  io_uring_sqe* sqe() {
    io_uring_sqe* s = io_uring_get_sqe(&ring);
    if (s == nullptr) {  // the submission queue is full: hand it over now (rare)
      ++g_counts.enter;
      ++g_counts.syscalls;
      io_uring_submit(&ring);
      s = io_uring_get_sqe(&ring);
    }
    return s;
  }
  void arm_accept() {
    io_uring_sqe* s = sqe();
    io_uring_prep_multishot_accept(s, listener, nullptr, nullptr, 0);
    io_uring_sqe_set_data64(s, tag(kAccept, listener));
  }
  void arm_recv(int fd) {
    io_uring_sqe* s = sqe();
    io_uring_prep_recv_multishot(s, fd, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = kGroup;
    io_uring_sqe_set_data64(s, tag(kRecv, fd));
    conns[static_cast<std::size_t>(fd)].reading = true;
  }
  void adopt(int fd) {    // a new client connection
    ++g_counts.syscalls;  // setsockopt
    nodelay(fd);
    Conn& c = conns[static_cast<std::size_t>(fd)];
    c = Conn{};
    c.fd = fd;
    arm_recv(fd);
  }
  void give_back(unsigned bid) {
    io_uring_buf_ring_add(br, bufs.data() + static_cast<std::size_t>(bid) * kBufSize, kBufSize,
                          static_cast<unsigned short>(bid), io_uring_buf_ring_mask(kBufs), 0);
    io_uring_buf_ring_advance(br, 1);
  }
  void send_pending(Conn& c) {
    if (c.sending || c.out.empty()) return;
    c.flight.swap(c.out);
    c.out.clear();
    c.flight_done = 0;
    c.sending = true;
    io_uring_sqe* s = sqe();
    io_uring_prep_send(s, c.fd, c.flight.data(), c.flight.size(), MSG_NOSIGNAL);
    io_uring_sqe_set_data64(s, tag(kSend, c.fd));
  }
  void maybe_close(Conn& c) {
    if (c.reading || c.sending) return;
    ++g_counts.syscalls;
    close(c.fd);
    c = Conn{};
  }
  // Hands the kernel what is queued (the sends of the last turn) without waiting.
  void flush() {
    if (io_uring_sq_ready(&ring) == 0) return;
    ++g_counts.enter;
    ++g_counts.syscalls;
    io_uring_submit(&ring);
  }
  // One turn: one io_uring_enter that submits the last turn's sends and waits for `wait_nr`
  // completions, then every completion, then the sends they make (submitted by the next turn).
  bool step(unsigned wait_nr) {
    ++g_counts.enter;
    ++g_counts.syscalls;
    const int e = io_uring_submit_and_wait(&ring, wait_nr);
    if (e < 0 && e != -EINTR && e != -EAGAIN && e != -EBUSY) {
      std::fprintf(stderr, "uring_serve: io_uring_enter: %s\n", std::strerror(-e));
      return false;
    }
    workers::for_each_completion(&ring, [this](const io_uring_cqe& cqe) { complete(cqe); });
    for (int fd : dirty) send_pending(conns[static_cast<std::size_t>(fd)]);
    dirty.clear();
    return true;
  }
  void complete(const io_uring_cqe& cqe) {
    const Op op = static_cast<Op>(cqe.user_data >> 32);
    const int fd = static_cast<int>(cqe.user_data & 0xffffffffu);
    const bool more = (cqe.flags & IORING_CQE_F_MORE) != 0;
    if (op == kAccept) {
      ++g_counts.accept;
      if (cqe.res >= 0) adopt(cqe.res);
      if (!more) arm_accept();  // the multishot accept ended (an error): arm it again
      return;
    }
    Conn& c = conns[static_cast<std::size_t>(fd)];
    if (op == kRecv) {
      ++g_counts.recv;
      if (cqe.res > 0) {
        const unsigned bid = cqe.flags >> IORING_CQE_BUFFER_SHIFT;
        const char* data = bufs.data() + static_cast<std::size_t>(bid) * kBufSize;
        const auto len = static_cast<std::size_t>(cqe.res);
        if (c.in.empty()) {  // the usual case: a whole request in one buffer, parsed in place
          const std::size_t used = serve(std::string_view(data, len), c.out, value);
          c.in.assign(data + used, len - used);
        } else {
          c.in.append(data, len);
          c.in.erase(0, serve(c.in, c.out, value));
        }
        give_back(bid);
        if (!c.out.empty()) dirty.push_back(fd);  // send_pending skips one already in flight
      }
      if (!more) {
        c.reading = false;
        if (cqe.res == -ENOBUFS)
          arm_recv(fd);  // ran out of provided buffers: arm it again
        else
          maybe_close(c);  // end of stream or an error: close once no send is in flight
      }
    } else if (op == kSend) {
      ++g_counts.send;
      c.sending = false;
      if (cqe.res > 0) c.flight_done += static_cast<std::size_t>(cqe.res);
      if (cqe.res <= 0 || !c.reading) {
        c.out.clear();
        maybe_close(c);
      } else if (c.flight_done < c.flight.size()) {  // a short send: the rest goes first
        c.out.insert(0, c.flight, c.flight_done);
        dirty.push_back(fd);
      } else if (!c.out.empty()) {
        dirty.push_back(fd);
      }
    }
  }
};

void report_if_asked() {
  if (!g_report) return;
  g_report = 0;
  report();
}

int serve_epoll(int listener, const std::string& value) {
  EpollLoop loop(value);
  loop.listener = listener;
  loop.watch(listener);
  while (!g_stop) {
    report_if_asked();
    loop.step(-1);
  }
  return 0;
}

int serve_uring(int listener, const std::string& value, bool defer) {
  UringLoop loop(value);
  if (!loop.init(defer)) return 1;
  loop.listener = listener;
  loop.arm_accept();
  while (!g_stop) {
    report_if_asked();
    if (!loop.step(1)) return 1;
  }
  return 0;
}

double thread_cpu_s() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

// The saturated server without a second process: `conns` loopback pairs in this one thread. Each
// round the client side sends a get on every connection, the server side serves them all (a loaded
// server finds that many requests waiting when it wakes), then the client side reads every reply.
// Only the server side's CPU is counted (on loopback a send also runs the receiver's TCP input, so
// the server's sends carry the client's receive path, as they do across two processes). The loops
// alternate in blocks; prints CPU µs and system calls per request for each, and their ratio.
int self_test(int conns, long rounds, long blocks, const std::string& value, bool defer) {
  const int listener = listen_on(0);
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  struct Side {
    std::vector<int> clients, servers;
  } side[2];
  for (auto& sd : side) {
    for (int i = 0; i < conns; ++i) {
      const int c = socket(AF_INET, SOCK_STREAM, 0);
      if (connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return 1;
      nodelay(c);
      sd.clients.push_back(c);
      sd.servers.push_back(accept4(listener, nullptr, nullptr, SOCK_NONBLOCK));
    }
  }
  EpollLoop ep(value);
  for (int fd : side[0].servers) ep.adopt(fd);
  UringLoop ur(value);
  if (!ur.init(defer)) return 1;
  for (int fd : side[1].servers) ur.adopt(fd);
  ur.flush();
  const std::string reply_end = "END\r\n";
  static char buf[1 << 16];
  double cpu[2] = {}, whole[2] = {};
  unsigned long long calls[2] = {}, served[2] = {};
  for (long b = 0; b < blocks; ++b) {
    for (int which = 0; which < 2; ++which) {
      Side& sd = side[which];
      const double w0 = thread_cpu_s();
      for (long r = 0; r < rounds; ++r) {
        for (int i = 0; i < conns; ++i) {
          const std::string req = "get key:" + std::to_string(i) + "\r\n";
          if (send(sd.clients[static_cast<std::size_t>(i)], req.data(), req.size(), 0) <= 0) return 1;
        }
        const unsigned long long want = g_counts.requests + static_cast<unsigned long long>(conns);
        const unsigned long long sys0 = g_counts.syscalls;
        const double t0 = thread_cpu_s();
        while (g_counts.requests < want) {
          if (which == 0)
            ep.step(0);
          else if (!ur.step(1))
            return 1;
        }
        if (which == 1) ur.flush();  // the replies' sends (a running loop's next turn submits them)
        cpu[which] += thread_cpu_s() - t0;
        calls[which] += g_counts.syscalls - sys0;
        served[which] += static_cast<unsigned long long>(conns);
        for (int c : sd.clients) {
          std::string got;
          while (got.size() < reply_end.size() || got.compare(got.size() - 5, 5, reply_end) != 0) {
            const ssize_t n = recv(c, buf, sizeof buf, 0);
            if (n <= 0) return 1;
            got.append(buf, static_cast<std::size_t>(n));
          }
        }
      }
      whole[which] += thread_cpu_s() - w0;
    }
  }
  const char* names[2] = {"epoll + recv/send", defer ? "io_uring" : "io_uring (no defer)"};
  for (int w = 0; w < 2; ++w)
    std::printf(
        "%-20s %d conns: server %.3f µs CPU per request, %.3f system calls per request (%.3f of epoll's "
        "CPU); "
        "client and server %.3f µs\n",
        names[w], conns, cpu[w] * 1e6 / static_cast<double>(served[w]),
        static_cast<double>(calls[w]) / static_cast<double>(served[w]), cpu[w] / cpu[0],
        whole[w] * 1e6 / static_cast<double>(served[w]));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode;
  int port = 0, self_conns = 0;
  long rounds = 2000, blocks = 10;
  std::size_t value_bytes = 64;
  bool defer = true;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const bool has = i + 1 < argc;
    if (a == "--mode" && has)
      mode = argv[++i];
    else if (a == "--port" && has)
      port = std::atoi(argv[++i]);
    else if (a == "--value" && has)
      value_bytes = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--self" && has)
      self_conns = std::atoi(argv[++i]);
    else if (a == "--rounds" && has)
      rounds = std::atol(argv[++i]);
    else if (a == "--blocks" && has)
      blocks = std::atol(argv[++i]);
    else if (a == "--no-defer")
      defer = false;
    else {
      std::fprintf(
          stderr,
          "usage: uring_serve --mode epoll|uring --port P [--value BYTES] [--no-defer]\n"
          "       uring_serve --self CONNS [--rounds N] [--blocks B] [--value BYTES] [--no-defer]\n");
      return 2;
    }
  }
  const std::string value(std::min<std::size_t>(value_bytes, 1000000), 'x');
  if (self_conns != 0) {
    if (self_conns < 1 || self_conns > 256 || rounds < 1 || rounds > 1000000 || blocks < 1 || blocks > 1000) {
      std::fprintf(stderr, "uring_serve: --self 1-256, --rounds 1-1e6, --blocks 1-1000\n");
      return 2;
    }
    return self_test(self_conns, rounds, blocks, value, defer);
  }
  if ((mode != "epoll" && mode != "uring") || port <= 0 || port > 65535 || value_bytes > 1000000) {
    std::fprintf(stderr, "uring_serve: --mode epoll|uring, --port 1-65535, --value up to 1000000\n");
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = [](int sig) {
    if (sig == SIGUSR1)
      g_report = 1;
    else
      g_stop = 1;
  };
  sigaction(SIGUSR1, &sa, nullptr);  // no SA_RESTART: the wait returns EINTR and the loop reports
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  const int listener = listen_on(port);
  std::fprintf(stderr, "uring_serve: %s on 127.0.0.1:%d\n", mode.c_str(), port);
  const int rc = mode == "epoll" ? serve_epoll(listener, value) : serve_uring(listener, value, defer);
  report();
  return rc;
}
