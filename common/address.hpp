// The one parser of socket addresses, for every place that takes one: --socket and friends (config/,
// master/listeners), --cache-server and cache-sync nodes (server/client), UDP sync nodes (server/udp_sync).
//   host:port, [v6]:port, :port      TCP/UDP (":port": the caller's default host)
//   /path, ./path, name-without-colon  a UNIX socket file
//   @name                            a Linux abstract UNIX socket (no file; sun_path[0] = 0), as uWSGI has it
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace common {

// The host ":port" means for a listener (config/ and master/ share it).
inline constexpr std::string_view kListenAnyHost = "0.0.0.0";

struct Address {
  bool is_unix = false;
  bool is_abstract = false;  // "@name": a UNIX socket with no file (is_unix is true too)
  std::string host;          // brackets of "[::1]:port" removed; the default host for ":port"
  std::uint16_t port = 0;
  std::string path;  // UNIX: as written ("@name" keeps its @)
};

// Takes `text` apart; `default_host` stands for an omitted host (":port"). nullopt with `error` set
// (e.g. `invalid port "x"`) when the form is invalid.
std::optional<Address> parse_address(std::string_view text, std::string_view default_host,
                                     std::string& error);

// The sockaddr of a UNIX address (abstract: sun_path[0] = 0; the length counts the NUL after the name).
// False with `error` set when the path does not fit.
bool unix_sockaddr(const Address& address, sockaddr_un& out, socklen_t& length, std::string& error);

// One resolved endpoint of a host:port address.
struct Endpoint {
  sockaddr_storage address{};
  socklen_t length = 0;
  int family = AF_UNSPEC;
};

// getaddrinfo for a host:port Address (numeric port; an empty host lets getaddrinfo choose: the
// loopback, or the wildcard when `passive`). False with `error` set when nothing resolves.
bool resolve_address(const Address& address, int socktype, bool passive, std::vector<Endpoint>& out,
                     std::string& error);

}  // namespace common
