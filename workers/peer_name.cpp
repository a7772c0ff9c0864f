#include "workers/peer_name.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

namespace workers {

std::string peer_name(int fd) {
  struct sockaddr_storage addr {};
  socklen_t len = sizeof addr;
  if (fd < 0 || getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  char host[64] = "";
  if (addr.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return fmt::format("{}:{}", host, ntohs(in->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return fmt::format("[{}]:{}", host, ntohs(in6->sin6_port));
  }
  return "unix";
}

bool accept_should_pause(int error) {
  return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}

std::string accept_pause_note(int worker_id, int error, long long pause_ms, std::size_t open) {
  return fmt::format(
      "worker {}: accept: {}: pausing accepts for {} ms with {} connection(s) open (raise the file "
      "limit: ulimit -n)",
      worker_id, std::strerror(error), pause_ms, open);
}

}  // namespace workers
