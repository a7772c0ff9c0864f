#include "master/listeners.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace master {

namespace {

// Seconds the kernel holds a connection that has sent nothing before handing it to accept(): a
// worker wakes only for connections that carry their request (nginx and uwsgi clients write at once).
constexpr int kDeferAcceptSeconds = 1;

bool is_unix_spec(const std::string& spec) {
  return spec.find(':') == std::string::npos || spec.front() == '/' || spec.front() == '.';
}

[[noreturn]] void fail(const std::string& spec, const std::string& what) {
  throw std::runtime_error(fmt::format("cannot listen on --socket {}: {}", spec, what));
}

int bind_unix(const std::string& spec, const ListenOptions& options) {
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (spec.size() >= sizeof addr.sun_path) {
    fail(spec,
         fmt::format("UNIX socket path is {} bytes, the limit is {}", spec.size(), sizeof addr.sun_path - 1));
  }
  std::memcpy(addr.sun_path, spec.data(), spec.size());
  // A socket file left by a previous run is stale (we are about to own the name); anything else is not ours.
  struct stat st {};
  if (lstat(spec.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) fail(spec, "the path exists and is not a socket; refusing to replace it");
    // Replace only a dead socket: if something accepts on it, another server owns the name.
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool alive = probe >= 0 && connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (probe >= 0) close(probe);
    if (alive) fail(spec, "another process is listening on this socket (stop it first)");
    unlink(spec.c_str());
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(spec, std::strerror(errno));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    close(fd);
    fail(spec, std::strerror(err));
  }
  if (!options.chmod_socket.empty()) {
    mode_t mode = static_cast<mode_t>(std::strtoul(options.chmod_socket.c_str(), nullptr, 8));
    if (chmod(spec.c_str(), mode) != 0) {
      int err = errno;
      close(fd);
      fail(spec, fmt::format("chmod {}: {}", options.chmod_socket, std::strerror(err)));
    }
  }
  if (options.chown_socket &&
      chown(spec.c_str(), options.chown_socket->uid, options.chown_socket->gid) != 0) {
    int err = errno;
    close(fd);
    fail(spec, fmt::format("chown-socket: {}", std::strerror(err)));
  }
  return fd;
}

int bind_tcp(const std::string& spec) {
  std::size_t colon = spec.rfind(':');
  std::string host = spec.substr(0, colon);
  std::string port = spec.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  struct addrinfo hints {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  struct addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) fail(spec, gai_strerror(rc));
  std::string last_error = "no address";
  int fd = -1;
  for (struct addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int defer = kDeferAcceptSeconds;
    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof defer);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    last_error = std::strerror(errno);
    close(fd);
    fd = -1;
  }
  freeaddrinfo(found);
  if (fd < 0) fail(spec, last_error);
  return fd;
}

}  // namespace

std::string Listener::describe() const {
  const char* protocol = kind == Kind::http ? ", http" : kind == Kind::persistent ? ", persistent" : "";
  return fmt::format("{} ({}{}, fd {})", spec, unix_path.empty() ? "tcp" : "unix", protocol, fd);
}

std::vector<Listener> bind_listeners(const std::vector<std::string>& specs, const ListenOptions& options) {
  std::vector<Listener> bound;
  try {
    for (const std::string& spec : specs) {
      Listener listener;
      listener.spec = spec;
      if (is_unix_spec(spec)) {
        listener.fd = bind_unix(spec, options);
        listener.unix_path = spec;
      } else {
        listener.fd = bind_tcp(spec);
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
    if (remove_unix_files && !listener.unix_path.empty() && listener.unix_path.front() != '@')
      unlink(listener.unix_path.c_str());
  }
}

}  // namespace master
