// The uwsgi protocol's framing for the connection loop: one packet (header, vars, body) per request.
// The persistent mode (--persistent-socket) is the same framing with its replies framed and the
// connection kept (server::Request::persistent).
#pragma once

#include "server/protocol.hpp"
#include "workers/connection.hpp"

namespace workers {

class UwsgiFraming final : public Framing {
 public:
  UwsgiFraming(const server::FrameLimits& limits, bool persistent)
      : limits_(limits), persistent_(persistent) {}

  void attach(Connection& conn, int listen_fd) override;
  server::FrameStatus frame(Connection& conn, std::size_t* want) override;
  bool truncated(Connection& conn, std::string& note) override;
  Take take_request(Connection& conn, std::string& note) override;
  bool fixed_body(const Connection& conn, std::size_t* start, std::uint64_t* length) const override;
  void body_spooled(Connection& conn) override;

 private:
  struct Session : FramingSession {
    server::Frame frame;  // of what the connection's buffer holds
  };

  server::FrameLimits limits_;
  bool persistent_;
};

}  // namespace workers
