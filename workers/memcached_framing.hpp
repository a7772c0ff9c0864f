// The memcached protocol (--memcached-socket) for the connection loop. A memcached client pipelines:
// every complete command the buffer holds runs at once (server/memcached.hpp's Session parses and
// executes), and their replies go out in one write. Commands never reach an application thread, and
// idle connections stay open as memcached keeps them (clients pool them for good).
#pragma once

#include <optional>
#include <string>

#include "server/memcached.hpp"
#include "workers/connection.hpp"

namespace workers {

// The log line's text when a client closes in the middle of a command (either loop's).
std::string memcached_truncated_note(std::size_t bytes);

class MemcachedFraming final : public Framing {
 public:
  explicit MemcachedFraming(const server::memcached::Settings& settings);

  void attach(Connection& conn, int listen_fd) override;
  server::FrameStatus frame(Connection& conn, std::size_t* want) override;
  bool truncated(Connection& conn, std::string& note) override;
  Take take_request(Connection& conn, std::string& note) override;
  bool keeps_idle_connections() const override { return true; }
  void closed(Connection& conn) override;

 private:
  struct Session : FramingSession {
    std::optional<server::memcached::Session> protocol;
    std::string out;  // replies of the commands frame() ran, moved to conn.reply by take_request()
    server::memcached::Progress progress;
  };

  server::memcached::Counters counters_;  // this worker's `stats` figures
  server::memcached::Settings settings_;  // .counters points at counters_
};

}  // namespace workers
