#include "workers/http_framing.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

namespace workers {

namespace {

// Numeric host and port of a socket's peer (or of the socket itself), for CGI's REMOTE_ADDR and
// SERVER_PORT. A UNIX socket has neither: both stay empty.
void describe_address(const sockaddr_storage& addr, std::string& host, std::string& port) {
  char text[INET6_ADDRSTRLEN] = "";
  if (addr.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    host = text;
    port = std::to_string(ntohs(in->sin_port));
  } else if (addr.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    host = text;
    port = std::to_string(ntohs(in6->sin6_port));
  } else {
    host.clear();
    port.clear();
  }
}

void describe_peer(int fd, std::string& host, std::string& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) addr.ss_family = AF_UNSPEC;
  describe_address(addr, host, port);
}

void describe_local(int fd, std::string& host, std::string& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) addr.ss_family = AF_UNSPEC;
  describe_address(addr, host, port);
}

}  // namespace

HttpFraming::HttpFraming(const server::HttpLimits& limits, const std::vector<int>& listen_fds)
    : limits_(limits) {
  for (int fd : listen_fds) {
    std::string host, port;
    describe_local(fd, host, port);
    ports_.emplace_back(fd, port);
  }
}

void HttpFraming::attach(Connection& conn, int listen_fd) {
  Session& s = attach_session<Session>(conn);
  s.frame = server::HttpFrame{};
  s.sent_continue = false;
  s.server_port = {};
  for (const auto& [fd, port] : ports_) {
    if (fd == listen_fd) s.server_port = port;
  }
  describe_peer(conn.fd, s.peer_host, s.peer_port);
}

server::FrameStatus HttpFraming::frame(Connection& conn, std::size_t* want) {
  Session& s = session<Session>(conn);
  s.frame = server::frame_http_request(conn.in.view(), limits_, std::move(s.frame));
  *want = conn.in.size() + kInitialBuffer;
  if (s.frame.head_end != 0 && !s.frame.chunked) {
    *want = std::max<std::size_t>(*want, s.frame.head_end + s.frame.body_length);
  }
  return s.frame.status;
}

void HttpFraming::waiting(Connection& conn) {
  Session& s = session<Session>(conn);
  if (s.frame.head_end != 0 && s.frame.expect_continue && !s.sent_continue) {
    s.sent_continue = true;  // a short write is harmless: the client sends its body after 1 s anyway
    [[maybe_unused]] ssize_t n =
        ::write(conn.fd, server::kContinueResponse.data(), server::kContinueResponse.size());
  }
}

bool HttpFraming::truncated(Connection& conn, std::string& note) {
  note = fmt::format("client closed the connection after {} byte(s) of an incomplete HTTP request",
                     conn.in.size());
  return false;
}

Take HttpFraming::take_request(Connection& conn, std::string& note) {
  Session& s = session<Session>(conn);
  server::HttpFrame& frame = s.frame;
  if (frame.status == server::FrameStatus::complete) {
    const server::HttpConnectionInfo info{.remote_addr = s.peer_host,
                                          .remote_port = s.peer_port,
                                          .server_name = {},
                                          .server_port = s.server_port};
    std::string error;
    if (server::http_to_uwsgi(conn.in.view(), frame, info, s.packet, s.body, s.info, error)) {
      conn.pending = server::Request{};
      conn.pending.header = server::decode_header(s.packet.data());
      conn.pending.payload = std::string_view(s.packet).substr(server::kHeaderSize);
      conn.pending.body = s.body;
      conn.request_bytes = frame.total;
      return Take::dispatch;
    }
    frame.error_status = 431;
    frame.error = error;
  }
  note = fmt::format("HTTP {}: {}", frame.error_status, frame.error);
  server::http_error_response(conn.reply.body, frame.error_status, frame.error);
  conn.reply.close_after = true;
  conn.request_bytes = conn.in.size();
  return Take::rejected;
}

server::StaticConnection HttpFraming::direct_reply_context(const Connection& conn) const {
  const auto& s = static_cast<const Session&>(*conn.session);
  return {.http = true, .keep_alive = s.info.keep_alive};
}

bool HttpFraming::fixed_body(const Connection& conn, std::size_t* start, std::uint64_t* length) const {
  const server::HttpFrame& frame = static_cast<const Session&>(*conn.session).frame;
  // A chunked body's length is unknown until its end: it stays in memory (HttpLimits::max_chunked_body).
  if (frame.status != server::FrameStatus::incomplete || frame.head_end == 0 || frame.chunked) return false;
  *start = frame.head_end;
  *length = frame.body_length;
  return true;
}

void HttpFraming::body_spooled(Connection& conn) {
  server::HttpFrame& frame = session<Session>(conn).frame;
  frame.status = server::FrameStatus::complete;
  frame.total = frame.head_end;
  frame.body_elsewhere = true;
}

void HttpFraming::finish(Connection& conn, std::string& note) {
  Session& s = session<Session>(conn);
  server::Reply& reply = conn.reply;
  if (reply.http_ready) {  // a static file's head is already fit for this connection
    s.frame = server::HttpFrame{};
    s.sent_continue = false;
    return;
  }
  if (!reply.head.empty()) {  // an application may hand back its status and headers apart
    reply.head.append(reply.body);
    reply.body.swap(reply.head);
    reply.head.clear();
  }
  reply.close_after = !server::finish_http_response(reply.body, s.info, &note);
  s.frame = server::HttpFrame{};
  s.sent_continue = false;
}

}  // namespace workers
