// What one request/reply exchange costs in system calls on this kernel, whatever the server does
// around it: a TCP loopback pair, one side writes a small message, the other reads it, N times, with
// each pair of calls a server could use (ours: recv + send; before: read + writev; memcached 1.6:
// read + sendmsg). The variants run in alternating blocks so the neighbours' load hits them alike;
// prints this thread's CPU µs per write+read pair (the receiver's softirq work runs in the writer's
// call on loopback, so the pair is the whole kernel path of one message).
//
//   syscall_pair [pairs-per-block=20000] [blocks=10] [message-bytes=80]
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

double thread_cpu_s() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

enum Variant { kReadWritev, kRecvSend, kReadSendmsg, kVariants };
const char* const kNames[kVariants] = {"read + writev", "recv + send", "read + sendmsg"};

// One message from `from` to `to` with the variant's calls; false on any failure.
bool exchange(Variant v, int from, int to, const std::string& msg, char* buf, std::size_t cap) {
  iovec io{const_cast<char*>(msg.data()), msg.size()};
  ssize_t sent = 0;
  if (v == kRecvSend) {
    sent = send(from, msg.data(), msg.size(), MSG_NOSIGNAL);
  } else if (v == kReadWritev) {
    sent = writev(from, &io, 1);
  } else {
    msghdr m{};
    m.msg_iov = &io;
    m.msg_iovlen = 1;
    sent = sendmsg(from, &m, MSG_NOSIGNAL);
  }
  if (sent != static_cast<ssize_t>(msg.size())) return false;
  for (std::size_t got = 0; got < msg.size();) {  // loopback delivers it whole, but do not assume so
    const ssize_t n = v == kRecvSend ? recv(to, buf, cap, 0) : read(to, buf, cap);
    if (n <= 0) return false;
    got += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const long pairs = argc > 1 ? std::atol(argv[1]) : 20000;
  const long blocks = argc > 2 ? std::atol(argv[2]) : 10;
  const long bytes = argc > 3 ? std::atol(argv[3]) : 80;
  if (pairs < 1 || pairs > 10000000 || blocks < 1 || blocks > 1000 || bytes < 1 || bytes > 65536) {
    std::fprintf(stderr, "syscall_pair: pairs 1-1e7, blocks 1-1000, message bytes 1-65536\n");
    return 2;
  }
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0 || listen(listener, 1) != 0) {
    std::perror("syscall_pair: listen");
    return 1;
  }
  const int client = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::perror("syscall_pair: connect");
    return 1;
  }
  const int server = accept(listener, nullptr, nullptr);
  int one = 1;
  setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const std::string msg(static_cast<std::size_t>(bytes), 'x');
  static char buf[1 << 16];
  double cpu[kVariants] = {};
  for (long b = 0; b < blocks; ++b) {
    for (int v = 0; v < kVariants; ++v) {
      const double t0 = thread_cpu_s();
      for (long i = 0; i < pairs; ++i) {
        if (!exchange(static_cast<Variant>(v), client, server, msg, buf, sizeof buf)) {
          std::perror("syscall_pair: exchange");
          return 1;
        }
      }
      cpu[v] += thread_cpu_s() - t0;
    }
  }
  const double n = static_cast<double>(pairs * blocks);
  for (int v = 0; v < kVariants; ++v)
    std::printf("%-16s %.3f µs CPU per write+read pair (%.3f of read + writev)\n", kNames[v],
                cpu[v] * 1e6 / n, cpu[v] / cpu[kReadWritev]);
  close(client);
  close(server);
  close(listener);
  return 0;
}
