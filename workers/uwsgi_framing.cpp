#include "workers/uwsgi_framing.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "server/http.hpp"

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
    if (frame.body_too_large) {
      // --limit-post: uWSGI closes without a word (nginx then answers 502); a 413 tells the client
      // what happened (the reply to a uwsgi request is HTTP: nginx passes it on).
      server::http_error_response(conn.reply.body, 413, "Request Entity Too Large");
      conn.reply.close_after = true;
      conn.request_bytes = conn.in.size();
    }
    return Take::rejected;  // otherwise no reply: uwsgi has no way to say what was wrong
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

bool UwsgiFraming::fixed_body(const Connection& conn, std::size_t* start, std::uint64_t* length) const {
  const server::Frame& frame = static_cast<const Session&>(*conn.session).frame;
  // Known once the vars are in (total > 0); only an application's body may go to a file.
  if (frame.status != server::FrameStatus::incomplete || frame.total == 0 ||
      frame.header.modifier1 != server::kModifierApp) {
    return false;
  }
  *start = frame.payload_end;
  *length = frame.total - frame.payload_end;
  return true;
}

void UwsgiFraming::body_spooled(Connection& conn) {
  server::Frame& frame = session<Session>(conn).frame;
  frame.total = frame.payload_end;
  frame.status = server::FrameStatus::complete;
}

}  // namespace workers
