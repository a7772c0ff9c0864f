// The HTTP/1.x side of --http-socket (server/http.*): request line, headers, Content-Length and
// chunked bodies, pipelined requests, the uwsgi packet made from a request, and the fixing of the
// application's response. The input is what a client sent on one connection (and, read as an
// application's raw response, what finish_http_response is given). Properties, besides no crash:
//   - framing resumed after every read (the input arriving in pieces) ends exactly as framing the whole
//     input at once: same status, total, error status and body length;
//   - a complete request lies inside the input, and framing only its first `total` bytes agrees;
//   - its uwsgi packet frames as a complete modifier1 0 request whose vars parse, whose
//     CONTENT_LENGTH says the body's length, and whose body is the request's (de-chunked) body;
//   - pipelined requests are framed one after the other until the input runs out or one is invalid;
//   - a response the server keeps the connection after says where it ends (Content-Length = body).
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "server/http.hpp"
#include "server/protocol.hpp"
#include "tests/fuzz/check.hpp"

namespace {

using server::FrameStatus;
using server::HttpFrame;

constexpr server::HttpLimits kLimits{.max_header_bytes = 2048, .max_body = 1 << 14};

bool same_outcome(const HttpFrame& a, const HttpFrame& b) {
  if (a.status != b.status) return false;
  // The error text may differ: it quotes the offending bytes, as many of them as had arrived.
  if (a.status == FrameStatus::invalid) return a.error_status == b.error_status && !b.error.empty();
  if (a.status == FrameStatus::complete)
    return a.total == b.total && a.head_end == b.head_end && a.chunked == b.chunked &&
           a.body_length == b.body_length;
  return true;
}

// The input arriving in pieces whose sizes come from the input itself.
HttpFrame frame_in_pieces(std::string_view received) {
  HttpFrame frame;
  std::size_t have = 0;
  std::size_t step = 1;
  while (have < received.size()) {
    have = std::min(received.size(), have + step);
    frame = server::frame_http_request(received.substr(0, have), kLimits, std::move(frame));
    if (frame.status != FrameStatus::incomplete) return frame;
    step = 1 + static_cast<unsigned char>(received[have - 1]) % 13;
  }
  return server::frame_http_request(received, kLimits, std::move(frame));
}

std::string var_value(std::string_view vars, std::string_view name, bool& found) {
  server::VarsReader reader(vars);
  std::string_view key, value;
  std::string out;
  found = false;
  while (reader.next(key, value)) {
    if (key == name) {
      out = value;
      found = true;
    }
  }
  FUZZ_CHECK(!reader.failed());
  return out;
}

void check_request(std::string_view request, const HttpFrame& frame) {
  const server::HttpConnectionInfo info{"127.0.0.1", "50000", "", "8080"};
  std::string packet, body, error;
  server::HttpRequestInfo out;
  if (!server::http_to_uwsgi(request, frame, info, packet, body, out, error)) {
    FUZZ_CHECK(!error.empty());
    return;
  }
  FUZZ_CHECK(body.size() == frame.body_length);
  if (!frame.chunked) FUZZ_CHECK(body == request.substr(frame.head_end, frame.body_length));
  const std::string whole = packet + body;
  const server::Frame uwsgi = server::frame_request(whole, {.buffer_size = 65535, .max_body = 1 << 20});
  FUZZ_CHECK(uwsgi.status == FrameStatus::complete && uwsgi.total == whole.size());
  FUZZ_CHECK(uwsgi.header.modifier1 == server::kModifierApp);
  bool found = false;
  const std::string length =
      var_value(std::string_view(packet).substr(server::kHeaderSize), "CONTENT_LENGTH", found);
  FUZZ_CHECK(found &&
             (body.empty() ? length.empty() || length == "0" : length == std::to_string(body.size())));
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

void check_response(std::string_view raw) {
  std::string response(raw);
  std::string note;
  const server::HttpRequestInfo request{.keep_alive = true, .protocol = "HTTP/1.1"};
  const bool keep = server::finish_http_response(response, request, &note);
  FUZZ_CHECK(response.starts_with("HTTP/1."));
  const std::size_t head_end = response.find("\r\n\r\n");
  FUZZ_CHECK(head_end != std::string::npos);
  if (!keep) return;
  // A kept response must be delimited: chunked, or a Content-Length equal to the body sent.
  const std::string head = lower(std::string_view(response).substr(0, head_end + 2));
  if (head.find("\r\ntransfer-encoding:") != std::string::npos) return;
  const std::string_view status = std::string_view(response).substr(9, 3);
  if (status == "204" || status == "304") {
    FUZZ_CHECK(response.size() == head_end + 4);
    return;
  }
  const std::size_t field = head.find("\r\ncontent-length:");
  FUZZ_CHECK(field != std::string::npos);
  std::size_t at = field + 17;
  while (at < head.size() && (head[at] == ' ' || head[at] == '\t')) ++at;
  const std::size_t end = head.find("\r\n", at);
  std::string_view value = std::string_view(head).substr(at, end - at);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  FUZZ_CHECK(value == std::to_string(response.size() - head_end - 4));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view received(reinterpret_cast<const char*>(data), size);
  std::string_view rest = received;
  for (int request = 0; request < 64 && !rest.empty(); ++request) {  // pipelined requests
    const HttpFrame frame = server::frame_http_request(rest, kLimits);
    FUZZ_CHECK(same_outcome(frame, frame_in_pieces(rest)));
    if (frame.status == FrameStatus::invalid) {
      FUZZ_CHECK(!frame.error.empty() && frame.error_status >= 400 && frame.error_status <= 505);
      std::string out;
      server::http_error_response(out, frame.error_status, frame.error);
      FUZZ_CHECK(out.starts_with("HTTP/1.1 " + std::to_string(frame.error_status) + " "));
      break;
    }
    if (frame.status == FrameStatus::incomplete) break;
    FUZZ_CHECK(frame.head_end > 0 && frame.head_end <= frame.total && frame.total <= rest.size());
    FUZZ_CHECK(same_outcome(frame, server::frame_http_request(rest.substr(0, frame.total), kLimits)));
    check_request(rest.substr(0, frame.total), frame);
    rest.remove_prefix(frame.total);
  }
  check_response(received);
  return 0;
}
