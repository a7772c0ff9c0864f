// Binding the listening sockets (the master does it once; workers inherit the fds across fork and
// across reloads, so a reload never refuses a connection).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "master/privileges.hpp"

namespace master {

struct Listener {
  std::string spec;       // as the user wrote it
  std::string unix_path;  // a UNIX socket's file (removed at exit); "" for TCP and @abstract names
  bool is_unix = false;
  int fd = -1;
  // --socket, --persistent-socket, --http-socket, --memcached-socket
  enum class Kind { uwsgi, persistent, http, memcached };
  Kind kind = Kind::uwsgi;
  std::string describe() const;
};

struct ListenOptions {
  int backlog = 100;
  std::string chmod_socket;  // octal (config::parse_chmod_mode), "" = leave
  std::optional<Owner> chown_socket;
};

// Binds every spec (common/address.hpp: "host:port", ":port", "[v6]:port", a UNIX path or "@name"). Throws
// std::runtime_error naming the socket and the reason; already bound sockets are closed first.
std::vector<Listener> bind_listeners(const std::vector<std::string>& specs, const ListenOptions& options);

// remove_unix_files: --vacuum (and a start-up failure: the files were ours for a moment only).
void close_listeners(std::vector<Listener>& listeners, bool remove_unix_files);

}  // namespace master
