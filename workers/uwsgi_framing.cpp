#include "workers/uwsgi_framing.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace workers {

void UwsgiFraming::attach(Connection& conn, int listen_fd) {
  (void)listen_fd;
  attach_session<Session>(conn).frame = server::Frame{};
}

server::FrameStatus UwsgiFraming::frame(Connection& conn, std::size_t* want) {
  server::Frame& frame = session<Session>(conn).frame;
  frame = server::frame_request(conn.in.view(), limits_);
  // Grow to what the request announced (known once the header is in), else by a page.
  *want = std::max<std::size_t>(frame.total, frame.payload_end);
  if (*want <= conn.in.size()) *want = conn.in.size() + kInitialBuffer;
  return frame.status;
}

bool UwsgiFraming::truncated(Connection& conn, std::string& note) {
  note =
      fmt::format("client closed the connection after {} byte(s) of an incomplete request", conn.in.size());
  return true;
}

Take UwsgiFraming::take_request(Connection& conn, std::string& note) {
  const server::Frame& frame = session<Session>(conn).frame;
  if (frame.status == server::FrameStatus::invalid) {
    note = frame.error;
    return Take::rejected;  // no reply: uwsgi has no way to say what was wrong
  }
  const std::string_view bytes = conn.in.view();
  server::Request& request = conn.pending;
  request.header = frame.header;
  request.payload = bytes.substr(server::kHeaderSize, frame.payload_end - server::kHeaderSize);
  request.body = bytes.substr(frame.payload_end, frame.total - frame.payload_end);
  request.persistent = persistent_;
  conn.request_bytes = frame.total;
  return Take::dispatch;
}

}  // namespace workers
