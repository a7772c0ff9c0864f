#include "workers/memcached_framing.hpp"

#include <fmt/format.h>
#include <time.h>

#include <algorithm>
#include <utility>

namespace workers {

MemcachedFraming::MemcachedFraming(const server::memcached::Settings& settings) : settings_(settings) {
  settings_.counters = &counters_;
  counters_.started_at = static_cast<std::int64_t>(time(nullptr));
}

void MemcachedFraming::attach(Connection& conn, int listen_fd) {
  (void)listen_fd;
  Session& session = attach_session<Session>(conn);
  session.protocol.emplace(settings_);
  session.out.clear();
  session.progress = {};
  ++counters_.curr_connections;
  ++counters_.total_connections;
}

// Framing a memcached stream is running it: a command is complete only once its line and data block
// are in, and the session applies nothing of an incomplete one. So the commands run here, their
// replies kept until take_request() hands them to the loop.
server::FrameStatus MemcachedFraming::frame(Connection& conn, std::size_t* want) {
  Session& session = this->session<Session>(conn);
  session.out.clear();
  session.progress = session.protocol->execute(conn.in.view(), session.out);
  const server::memcached::Progress& p = session.progress;
  *want = std::max(p.want, conn.in.size() + kInitialBuffer);
  return p.consumed > 0 || p.close ? server::FrameStatus::complete : server::FrameStatus::incomplete;
}

bool MemcachedFraming::truncated(Connection& conn, std::string& note) {
  note = memcached_truncated_note(conn.in.size());
  return false;  // a client may drop a connection at any point; memcached does not count it either
}

Take MemcachedFraming::take_request(Connection& conn, std::string& note) {
  (void)note;
  Session& session = this->session<Session>(conn);
  std::swap(conn.reply.body, session.out);  // both buffers stay allocated for the next commands
  conn.request_bytes = session.progress.consumed;
  conn.reply.close_after = session.progress.close;
  return Take::replied;
}

std::string memcached_truncated_note(std::size_t bytes) {
  return fmt::format("memcached client closed the connection after {} byte(s) of an incomplete command",
                     bytes);
}

void MemcachedFraming::closed(Connection& conn) {
  (void)conn;
  --counters_.curr_connections;
}

}  // namespace workers
