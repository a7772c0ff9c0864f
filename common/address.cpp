#include "common/address.hpp"

#include <fmt/format.h>
#include <netdb.h>

#include <cstddef>
#include <cstring>

namespace common {

std::optional<Address> parse_address(std::string_view text, std::string_view default_host,
                                     std::string& error) {
  if (text.empty()) {
    error = "empty address";
    return std::nullopt;
  }
  Address parsed;
  const auto colon = text.rfind(':');
  if (text.starts_with('/') || text.starts_with('.') || text.starts_with('@') ||
      colon == std::string_view::npos) {
    parsed.is_unix = true;
    parsed.is_abstract = text.starts_with('@');
    parsed.path = std::string(text);
    return parsed;
  }
  std::string_view host = text.substr(0, colon);
  const std::string_view port = text.substr(colon + 1);
  if (host.starts_with('[') && host.ends_with(']')) host = host.substr(1, host.size() - 2);
  if (host.find_first_of(" \t[]") != std::string_view::npos) {
    error = fmt::format("invalid host \"{}\"", host);
    return std::nullopt;
  }
  unsigned number = 0;
  const bool digits =
      !port.empty() && port.size() <= 5 && port.find_first_not_of("0123456789") == std::string_view::npos;
  for (const char digit : digits ? port : std::string_view{})
    number = number * 10 + static_cast<unsigned>(digit - '0');
  if (!digits || number < 1 || number > 65535) {
    error = fmt::format("invalid port \"{}\"", port);
    return std::nullopt;
  }
  parsed.host = std::string(host.empty() ? default_host : host);
  parsed.port = static_cast<std::uint16_t>(number);
  return parsed;
}

bool unix_sockaddr(const Address& address, sockaddr_un& out, socklen_t& length, std::string& error) {
  out = sockaddr_un{};
  out.sun_family = AF_UNIX;
  const std::string& path = address.path;
  if (path.size() >= sizeof out.sun_path) {
    error =
        fmt::format("UNIX socket path is {} bytes, the limit is {}", path.size(), sizeof out.sun_path - 1);
    return false;
  }
  std::memcpy(out.sun_path, path.data(), path.size());
  // "@name" is abstract: sun_path[0] = 0 and no file. The length counts the terminating NUL in both
  // cases, as uWSGI's bind and connect do, so "@name" is the bytes "\0name\0" (/proc/net/unix shows
  // "@name@"): the same socket for uWSGI's clients and servers as for ours.
  if (address.is_abstract) out.sun_path[0] = '\0';
  length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return true;
}

bool resolve_address(const Address& address, int socktype, bool passive, std::vector<Endpoint>& out,
                     std::string& error) {
  out.clear();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* found = nullptr;
  const std::string port = std::to_string(address.port);
  const int rc =
      getaddrinfo(address.host.empty() ? nullptr : address.host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    error = fmt::format("cannot resolve host \"{}\": {}", address.host, gai_strerror(rc));
    return false;
  }
  for (const addrinfo* info = found; info != nullptr; info = info->ai_next) {
    if (info->ai_addrlen > sizeof(sockaddr_storage)) continue;
    Endpoint endpoint;
    std::memcpy(&endpoint.address, info->ai_addr, info->ai_addrlen);
    endpoint.length = info->ai_addrlen;
    endpoint.family = info->ai_family;
    out.push_back(endpoint);
  }
  freeaddrinfo(found);
  if (out.empty()) {
    error = fmt::format("host \"{}\" has no usable address", address.host);
    return false;
  }
  return true;
}

}  // namespace common
