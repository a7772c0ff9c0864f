// HTTP/1.1 (--http-socket) for the connection loop: requests framed by server/http.hpp, turned into
// the modifier1 0 packet the application understands, kept alive; the application's raw response is
// made safe for a kept connection before it goes out.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "server/http.hpp"
#include "workers/connection.hpp"

namespace workers {

class HttpFraming final : public Framing {
 public:
  // `listen_fds`: the --http-socket listeners (their ports are SERVER_PORT).
  HttpFraming(const server::HttpLimits& limits, const std::vector<int>& listen_fds);

  void attach(Connection& conn, int listen_fd) override;
  server::FrameStatus frame(Connection& conn, std::size_t* want) override;
  void waiting(Connection& conn) override;
  bool truncated(Connection& conn, std::string& note) override;
  Take take_request(Connection& conn, std::string& note) override;
  void finish(Connection& conn, std::string& note) override;
  server::StaticConnection direct_reply_context(const Connection& conn) const override;
  bool fixed_body(const Connection& conn, std::size_t* start, std::uint64_t* length) const override;
  void body_spooled(Connection& conn) override;

 private:
  struct Session : FramingSession {
    server::HttpFrame frame;  // resumable: each read frames only the new bytes
    server::HttpRequestInfo info;
    std::string packet;  // the request as a uwsgi packet (conn.pending's views point here)
    std::string body;    // its de-chunked body
    std::string peer_host;
    std::string peer_port;
    std::string_view server_port;  // of the listener (ports_ outlives connections)
    bool sent_continue = false;
  };

  server::HttpLimits limits_;
  std::vector<std::pair<int, std::string>> ports_;  // listening fd → its port
};

}  // namespace workers
