#include "master/listeners.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "common/address.hpp"
#include "config/config.hpp"

namespace master {

namespace {

// Seconds the kernel holds a connection that has sent nothing before handing it to accept(): a
// worker wakes only for connections that carry their request (nginx and uwsgi clients write at once).
constexpr int kDeferAcceptSeconds = 1;

[[noreturn]] void fail(const std::string& spec, const std::string& what) {
  throw std::runtime_error(fmt::format("cannot listen on --socket {}: {}", spec, what));
}

int bind_unix(const std::string& spec, const common::Address& address, const ListenOptions& options) {
  sockaddr_un addr{};
  socklen_t length = 0;
  if (std::string error; !common::unix_sockaddr(address, addr, length, error)) fail(spec, error);
  // A socket file left by a previous run is stale (we are about to own the name); anything else is not
  // ours. An abstract name has no file: the kernel frees it with its last descriptor.
  struct stat st {};
  if (!address.is_abstract && lstat(spec.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) fail(spec, "the path exists and is not a socket; refusing to replace it");
    // Replace only a dead socket: if something accepts on it, another server owns the name.
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool alive = probe >= 0 && connect(probe, reinterpret_cast<sockaddr*>(&addr), length) == 0;
    if (probe >= 0) close(probe);
    if (alive) fail(spec, "another process is listening on this socket (stop it first)");
    unlink(spec.c_str());
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(spec, std::strerror(errno));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), length) != 0) {
    int err = errno;
    close(fd);
    fail(spec, std::strerror(err));
  }
  // config/ validated the mode; an abstract socket has no file mode to set.
  const auto mode = config::parse_chmod_mode(options.chmod_socket);
  if (mode && !address.is_abstract && chmod(spec.c_str(), static_cast<mode_t>(*mode)) != 0) {
    int err = errno;
    close(fd);
    fail(spec, fmt::format("chmod {}: {}", options.chmod_socket, std::strerror(err)));
  }
  if (options.chown_socket && !address.is_abstract &&
      chown(spec.c_str(), options.chown_socket->uid, options.chown_socket->gid) != 0) {
    int err = errno;
    close(fd);
    fail(spec, fmt::format("chown-socket: {}", std::strerror(err)));
  }
  return fd;
}

int bind_tcp(const std::string& spec, const common::Address& address) {
  std::vector<common::Endpoint> endpoints;
  if (std::string error; !common::resolve_address(address, SOCK_STREAM, true, endpoints, error))
    fail(spec, error);
  std::string last_error = "no address";
  int fd = -1;
  for (const common::Endpoint& endpoint : endpoints) {
    fd = socket(endpoint.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int defer = kDeferAcceptSeconds;
    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof defer);
    if (bind(fd, reinterpret_cast<const sockaddr*>(&endpoint.address), endpoint.length) == 0) break;
    last_error = std::strerror(errno);
    close(fd);
    fd = -1;
  }
  if (fd < 0) fail(spec, last_error);
  return fd;
}

}  // namespace

std::string Listener::describe() const {
  const char* protocol = kind == Kind::http         ? ", http"
                         : kind == Kind::persistent ? ", persistent"
                         : kind == Kind::memcached  ? ", memcached"
                                                    : "";
  return fmt::format("{} ({}{}, fd {})", spec, is_unix ? "unix" : "tcp", protocol, fd);
}

std::vector<Listener> bind_listeners(const std::vector<std::string>& specs, const ListenOptions& options) {
  std::vector<Listener> bound;
  try {
    for (const std::string& spec : specs) {
      Listener listener;
      listener.spec = spec;
      std::string error;
      const auto address = common::parse_address(spec, common::kListenAnyHost, error);
      if (!address) fail(spec, error);
      if (address->is_unix) {
        listener.fd = bind_unix(spec, *address, options);
        listener.is_unix = true;
        if (!address->is_abstract) listener.unix_path = spec;
      } else {
        listener.fd = bind_tcp(spec, *address);
      }
      bound.push_back(listener);
      if (listen(listener.fd, options.backlog) != 0)
        fail(spec, fmt::format("listen: {}", std::strerror(errno)));
    }
  } catch (...) {
    close_listeners(bound, true);
    throw;
  }
  return bound;
}

void close_listeners(std::vector<Listener>& listeners, bool remove_unix_files) {
  for (Listener& listener : listeners) {
    if (listener.fd >= 0) close(listener.fd);
    listener.fd = -1;
    if (remove_unix_files && !listener.unix_path.empty()) unlink(listener.unix_path.c_str());
  }
}

}  // namespace master
