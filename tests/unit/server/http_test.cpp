// --http-socket's protocol part: the HTTP/1.x framer, the request → uwsgi packet conversion and the
// response fixing, without sockets.
#include "server/http.hpp"

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "wire.hpp"

using namespace server;
using Catch::Matchers::Contains;
using Catch::Matchers::Equals;
using wire::hex;

namespace {

// Frames a heap copy of exactly `length` bytes, so a read past what arrived is caught by ASan.
HttpFrame frame_prefix(std::string_view data, std::size_t length, const HttpLimits& limits = {},
                       HttpFrame previous = {}) {
  std::unique_ptr<char[]> copy(new char[length == 0 ? 1 : length]);
  std::copy(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(length), copy.get());
  return frame_http_request(std::string_view(copy.get(), length), limits, std::move(previous));
}

// Feeds `data` byte by byte, both from scratch at every length and resuming the previous frame, and
// checks both agree: incomplete on every proper prefix, then the final frame on the whole.
HttpFrame frame_bytewise(std::string_view data, const HttpLimits& limits = {}) {
  HttpFrame resumed;
  for (std::size_t length = 0; length < data.size(); ++length) {
    const HttpFrame fresh = frame_prefix(data, length, limits);
    resumed = frame_prefix(data, length, limits, std::move(resumed));
    INFO("prefix of " << length << " bytes: " << printable(data.substr(0, length), 200));
    REQUIRE(fresh.status == FrameStatus::incomplete);
    REQUIRE(resumed.status == FrameStatus::incomplete);
  }
  const HttpFrame fresh = frame_prefix(data, data.size(), limits);
  resumed = frame_prefix(data, data.size(), limits, std::move(resumed));
  CHECK(resumed.status == fresh.status);
  CHECK(resumed.total == fresh.total);
  CHECK(resumed.error_status == fresh.error_status);
  return fresh;
}

// Frames `data` whole and byte by byte (resuming); both must reject it with `status`. Returns the error.
std::string rejected(std::string_view data, int status, const HttpLimits& limits = {}) {
  const HttpFrame whole = frame_http_request(data, limits);
  INFO("request: " << printable(data, 300) << "\nerror: " << whole.error);
  REQUIRE(whole.status == FrameStatus::invalid);
  CHECK(whole.error_status == status);
  HttpFrame resumed;
  for (std::size_t length = 0; length <= data.size() && resumed.status == FrameStatus::incomplete; ++length) {
    resumed = frame_prefix(data, length, limits, std::move(resumed));
  }
  CHECK(resumed.status == FrameStatus::invalid);
  CHECK(resumed.error_status == status);
  return whole.error;
}

std::vector<std::pair<std::string, std::string>> vars_of(std::string_view packet) {
  std::vector<std::pair<std::string, std::string>> out;
  REQUIRE(packet.size() >= kHeaderSize);
  const PacketHeader header = decode_header(packet.data());
  CHECK(header.modifier1 == 0);
  CHECK(header.modifier2 == 0);
  CHECK(header.datasize == packet.size() - kHeaderSize);
  std::string error;
  CHECK(parse_vars(
      packet.substr(kHeaderSize), [&](std::string_view k, std::string_view v) { out.emplace_back(k, v); },
      &error));
  return out;
}

struct Converted {
  bool ok = false;
  std::string packet, body, error;
  HttpRequestInfo info;
  std::vector<std::pair<std::string, std::string>> vars;
  std::string var(std::string_view key) const {
    for (const auto& [k, v] : vars) {
      if (k == key) return v;
    }
    return "<absent>";
  }
};

Converted convert(std::string_view request,
                  const HttpConnectionInfo& connection = {"127.0.0.1", "50000", "", "8080"},
                  const HttpLimits& limits = {}) {
  Converted out;
  const HttpFrame frame = frame_http_request(request, limits);
  INFO("request: " << printable(request, 300) << " error: " << frame.error);
  REQUIRE(frame.status == FrameStatus::complete);
  out.ok = http_to_uwsgi(request, frame, connection, out.packet, out.body, out.info, out.error);
  if (out.ok) out.vars = vars_of(out.packet);
  return out;
}

struct Finished {
  std::string response;
  bool keep = false;
  std::string note;
};

Finished finish(std::string response, bool keep_alive = true, bool head = false,
                std::string_view protocol = "HTTP/1.1") {
  Finished out;
  HttpRequestInfo request;
  request.keep_alive = keep_alive;
  request.head = head;
  request.protocol = protocol;
  out.response = std::move(response);
  out.keep = finish_http_response(out.response, request, &out.note);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// framing

TEST_CASE("a GET without a body is complete at the blank line", "[http][frame]") {
  const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  const HttpFrame frame = frame_bytewise(request);
  REQUIRE(frame.status == FrameStatus::complete);
  CHECK(frame.total == request.size());
  CHECK(frame.head_end == request.size());
  CHECK(frame.body_length == 0);
  CHECK_FALSE(frame.chunked);
}

TEST_CASE("pipelined requests: total says where the first ends", "[http][frame]") {
  const std::string first = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
  const std::string second = "GET /b HTTP/1.1\r\nHost: a\r\n\r\n";
  const std::string both = first + second + "GET /c HTT";
  HttpFrame frame = frame_http_request(both, {});
  REQUIRE(frame.status == FrameStatus::complete);
  CHECK(frame.total == first.size());
  frame = frame_http_request(std::string_view(both).substr(first.size()), {});
  REQUIRE(frame.status == FrameStatus::complete);
  CHECK(frame.total == second.size());
  CHECK(frame_http_request(std::string_view(both).substr(first.size() + second.size()), {}).status ==
        FrameStatus::incomplete);
}

TEST_CASE("a body by Content-Length, byte by byte, binary-safe", "[http][frame]") {
  const std::string body("a\0b\r\n\r\n\xff", 8);
  const std::string request = "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n" + body;
  const HttpFrame frame = frame_bytewise(request);
  REQUIRE(frame.status == FrameStatus::complete);
  CHECK(frame.total == request.size());
  CHECK(frame.body_length == 8);
  CHECK(frame.head_end == request.size() - 8);
  // Extra bytes after the body (the next request) change nothing.
  CHECK(frame_http_request(request + "GARBAGE", {}).total == request.size());
}

TEST_CASE("a chunked body with extensions and trailers, byte by byte", "[http][frame]") {
  const std::string request =
      "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;name=value;flag\r\nhello\r\n"
      "0000A ; q=\"x\"\r\n0123456789\r\n"
      "0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n";
  const HttpFrame frame = frame_bytewise(request);
  REQUIRE(frame.status == FrameStatus::complete);
  CHECK(frame.total == request.size());
  CHECK(frame.chunked);
  CHECK(frame.body_length == 15);
  CHECK(frame_http_request(request + "GET / HTTP/1.1\r\n", {}).total == request.size());
}

TEST_CASE("transfer codings and Content-Length are case-insensitive lists", "[http][frame]") {
  CHECK(frame_http_request("POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n", {})
            .status == FrameStatus::complete);
  const HttpFrame same = frame_http_request(
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n"
      "content-length: 2\r\n\r\nok",
      {});
  REQUIRE(same.status == FrameStatus::complete);
  CHECK(same.body_length == 2);
}

TEST_CASE("leading empty lines are skipped; HTTP/1.0 needs no Host", "[http][frame]") {
  const std::string request = "\r\n\r\nGET / HTTP/1.0\r\n\r\n";
  const HttpFrame frame = frame_bytewise(request);
  REQUIRE(frame.status == FrameStatus::complete);
  CHECK(frame.total == request.size());
}

TEST_CASE("Expect: 100-continue is known as soon as the head is there", "[http][frame]") {
  const std::string head = "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
  HttpFrame frame = frame_http_request(head, {});
  CHECK(frame.status == FrameStatus::incomplete);
  CHECK(frame.head_end == head.size());
  CHECK(frame.expect_continue);
  frame = frame_http_request(head + "abc", {}, std::move(frame));
  CHECK(frame.status == FrameStatus::complete);
  // Not for HTTP/1.0, not without a body.
  CHECK_FALSE(frame_http_request("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", {})
                  .expect_continue);
  CHECK_FALSE(
      frame_http_request("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", {}).expect_continue);
}

TEST_CASE("request-line errors", "[http][frame][errors]") {
  CHECK_THAT(rejected("GET\r\n\r\n", 400), Contains("bad request line at offset 0"));
  CHECK_THAT(rejected("GET /\r\n\r\n", 400), Contains("bad request line"));  // HTTP/0.9
  CHECK_THAT(rejected("GET  / HTTP/1.1\r\n", 400), Contains("bad request line"));
  CHECK_THAT(rejected("GET / HTTP/1.1 \r\n", 400), Contains("bad HTTP version"));
  CHECK_THAT(rejected("GET / FOO/1.1\r\n", 400), Contains("bad HTTP version"));
  CHECK_THAT(rejected("G(T / HTTP/1.1\r\n", 400), Contains("bad request line"));
  CHECK_THAT(rejected(std::string("GET /a\x01 HTTP/1.1\r\n"), 400),
             Contains("0x01 in the request target at offset 6"));
  CHECK_THAT(rejected("GET /a%zz HTTP/1.1\r\n", 400), Contains("percent-escape \"%zz\" at offset 6"));
  CHECK_THAT(rejected("GET /a%4 HTTP/1.1\r\n", 400), Contains("percent-escape"));
  CHECK_THAT(rejected("GET /a%00b HTTP/1.1\r\n", 400), Contains("NUL"));
  CHECK_THAT(rejected("GET /a/../../etc/passwd HTTP/1.1\r\n", 400), Contains("above the root"));
  CHECK_THAT(rejected("GET /%2e%2e/x HTTP/1.1\r\n", 400), Contains("above the root"));
  CHECK_THAT(rejected("GET foo HTTP/1.1\r\n", 400), Contains("neither a path"));
  CHECK_THAT(rejected("GET * HTTP/1.1\r\n", 400), Contains("neither a path"));
  CHECK_THAT(rejected("GET http:///x HTTP/1.1\r\n", 400), Contains("neither a path"));
  CHECK_THAT(rejected("CONNECT example.com:443 HTTP/1.1\r\n", 501), Contains("CONNECT"));
  CHECK_THAT(rejected("GET / HTTP/2.0\r\n", 505), Contains("HTTP/2.0"));
  CHECK_THAT(rejected("GET / HTTP/0.9\r\n", 505), Contains("HTTP/1.x only"));
  CHECK_THAT(rejected("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505), Contains("HTTP/2 connection preface"));
  // Refused as soon as the line is there, before the head ends.
  CHECK(frame_http_request("BAD\r\nHost: a\r\n", {}).status == FrameStatus::invalid);
}

TEST_CASE("header-line errors", "[http][frame][errors]") {
  CHECK_THAT(rejected("GET / HTTP/1.1\nHost: a\n\n", 400),
             Contains("bare LF (no CR before it) at offset 14"));
  CHECK_THAT(rejected("GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", 400), Contains("bare LF"));
  CHECK_THAT(rejected("\n", 400), Contains("bare LF"));
  CHECK_THAT(rejected("GET / HTTP/1.1\r\nHost: a\r\nX-Long: 1\r\n  continued\r\n\r\n", 400),
             Contains("obsolete header folding (a line starting with whitespace) at offset 36"));
  CHECK_THAT(rejected("GET / HTTP/1.1\r\nHost: a\r\n\tfolded\r\n\r\n", 400), Contains("folding"));
  CHECK_THAT(rejected("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
             Contains("0x20 in a header name at offset 20"));
  CHECK_THAT(rejected("GET / HTTP/1.1\r\nHost a\r\n\r\n", 400), Contains("0x20 in a header name"));
  CHECK_THAT(rejected("GET / HTTP/1.1\r\nHosta\r\n\r\n", 400),
             Contains("header line without ':' at offset 16"));
  CHECK_THAT(rejected("GET / HTTP/1.1\r\n: a\r\n\r\n", 400), Contains("empty header name"));
  CHECK_THAT(rejected(std::string("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", 29), 400),
             Contains("0x00 in the value of header \"Host\" at offset 23"));
  CHECK_THAT(rejected("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400), Contains("0x0d in the value"));
  CHECK_THAT(rejected("GET / HTTP/1.1\r\n\r\n", 400), Contains("without a Host"));
  CHECK_THAT(rejected("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400), Contains("more than one Host"));
  CHECK_THAT(rejected("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400), Contains("more than one Host"));
}

TEST_CASE("body framing errors", "[http][frame][errors]") {
  const std::string h = "POST / HTTP/1.1\r\nHost: a\r\n";
  CHECK_THAT(rejected(h + "Content-Length: abc\r\n\r\n", 400), Contains("Content-Length \"abc\""));
  CHECK_THAT(rejected(h + "Content-Length: -1\r\n\r\n", 400),
             Contains("invalid or conflicting Content-Length"));
  CHECK_THAT(rejected(h + "Content-Length: +1\r\n\r\n", 400), Contains("Content-Length"));
  CHECK_THAT(rejected(h + "Content-Length:\r\n\r\n", 400), Contains("Content-Length"));
  CHECK_THAT(rejected(h + "Content-Length: 99999999999999999999999\r\n\r\n", 400),
             Contains("Content-Length"));
  CHECK_THAT(rejected(h + "Content-Length: 1\r\nContent-Length: 2\r\n\r\n", 400), Contains("conflicting"));
  CHECK_THAT(rejected(h + "Content-Length: 1, 2\r\n\r\n", 400), Contains("conflicting"));
  CHECK_THAT(rejected(h + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
             Contains("both Content-Length and Transfer-Encoding"));
  CHECK_THAT(rejected(h + "Transfer-Encoding: gzip\r\n\r\n", 501), Contains("unsupported Transfer-Encoding"));
  CHECK_THAT(rejected(h + "Transfer-Encoding: ,\r\n\r\n", 400), Contains("end with exactly one"));
  CHECK_THAT(rejected(h + "Transfer-Encoding: chunked, gzip\r\n\r\n", 400), Contains("end with exactly one"));
  CHECK_THAT(rejected(h + "Transfer-Encoding: chunked, chunked\r\n\r\n", 400), Contains("exactly one"));
  CHECK_THAT(rejected(h + "Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
             Contains("unsupported Transfer-Encoding"));
  CHECK_THAT(rejected(h + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
             Contains("unsupported"));
  CHECK_THAT(rejected("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
             Contains("HTTP/1.0"));
  const std::string c = h + "Transfer-Encoding: chunked\r\n\r\n";
  CHECK_THAT(rejected(c + "zz\r\n", 400), Contains("not hexadecimal"));
  CHECK_THAT(rejected(c + "\r\n", 400), Contains("not hexadecimal"));
  CHECK_THAT(rejected(c + "5 x\r\n", 400), Contains("after the chunk size"));
  CHECK_THAT(rejected(c + "5;a\x01\r\n", 400), Contains("chunk extension"));
  CHECK_THAT(rejected(c + "5\n", 400), Contains("bare LF"));
  CHECK_THAT(rejected(c + "3\r\nabcX\r\n", 400),
             Contains("not followed by CRLF at offset " + std::to_string(c.size() + 6)));
  CHECK_THAT(rejected(c + "3\r\nabc\rX", 400), Contains("not followed by CRLF"));
  CHECK_THAT(rejected(c + "1;" + std::string(kHttpMaxChunkLine, 'x'), 400), Contains("chunk-size line"));
  CHECK_THAT(rejected(c + "0\r\nX-T a\r\n\r\n", 400), Contains("trailer name"));
  CHECK_THAT(rejected(c + "0\r\nX-T: a\r\n b\r\n\r\n", 400), Contains("trailer folding"));
}

TEST_CASE("limits: 413 body, 431 head, headers, trailers", "[http][frame][errors]") {
  HttpLimits limits;
  limits.max_body = 100;
  limits.max_header_bytes = 200;
  const std::string h = "POST / HTTP/1.1\r\nHost: a\r\n";
  // --limit-post: refused from the head, before any body byte, with uWSGI's log words.
  CHECK_THAT(rejected(h + "Content-Length: 101\r\n\r\n", 413, limits),
             Equals("Invalid (too big) CONTENT_LENGTH. skip. (Content-Length 101 is over limit-post 100)"));
  CHECK(frame_http_request(h + "Content-Length: 100\r\n\r\n" + std::string(100, 'x'), limits).status ==
        FrameStatus::complete);
  const std::string c = h + "Transfer-Encoding: chunked\r\n\r\n";
  CHECK_THAT(rejected(c + "32\r\n" + std::string(50, 'x') + "\r\n33\r\n", 413, limits),
             Contains("limit-post"));
  CHECK(
      frame_http_request(
          c + "32\r\n" + std::string(50, 'x') + "\r\n32\r\n" + std::string(50, 'x') + "\r\n0\r\n\r\n", limits)
          .status == FrameStatus::complete);
  // A chunk size that would overflow 64 bits is a 413, not a wrap-around.
  CHECK_THAT(rejected(c + "10000000000000001\r\n", 413), Contains("send a Content-Length"));
  CHECK_THAT(rejected(c + "fffffffffffffffffffffff\r\n", 413), Contains("send a Content-Length"));
  // Without --limit-post a Content-Length body has no limit (the worker spools it); a chunked one is
  // held in memory, so it has one.
  const HttpLimits defaults;
  CHECK(frame_http_request(h + "Content-Length: 100000000000\r\n\r\n", defaults).status ==
        FrameStatus::incomplete);
  HttpLimits small_chunks;
  small_chunks.max_chunked_body = 60;
  CHECK_THAT(rejected(c + "32\r\n" + std::string(50, 'x') + "\r\n33\r\n", 413, small_chunks),
             Contains("over 60 bytes (a chunked body is held in memory: send a Content-Length)"));
  // A head over the limit, with or without its end.
  CHECK_THAT(rejected(h + "X: " + std::string(200, 'x') + "\r\n\r\n", 431, limits),
             Contains("longer than 200 bytes (max-header-bytes)"));
  CHECK_THAT(rejected("GET /" + std::string(300, 'a'), 431, limits), Contains("max-header-bytes"));
  const std::string exact = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(200 - 32, 'x') + "\r\n\r\n";
  REQUIRE(exact.size() == 200);
  CHECK(frame_http_request(exact, limits).status == FrameStatus::complete);
  CHECK(frame_http_request(exact.substr(0, 199) + "x\r\n", limits).status == FrameStatus::invalid);
  CHECK_THAT(rejected(std::string(400, '\r') + "\n", 400), Contains("bad request line"));
  std::string crlfs;
  for (int i = 0; i < 101; ++i) crlfs += "\r\n";
  CHECK_THAT(rejected(crlfs + "GET / HTTP/1.0\r\n\r\n", 431, limits), Contains("empty lines"));
  // Header count: 100 is fine, 101 is not.
  std::string many = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 1; i < 100; ++i) many += "X: " + std::to_string(i) + "\r\n";
  CHECK(frame_http_request(many + "\r\n", {}).status == FrameStatus::complete);
  CHECK_THAT(rejected(many + "X: 100\r\n\r\n", 431), Contains("more than 100 header lines"));
  // Trailers: bytes and lines are bounded too.
  CHECK_THAT(rejected(c + "0\r\nX: " + std::string(300, 'y') + "\r\n\r\n", 431, limits),
             Contains("trailers longer"));
  std::string trailers = c + "0\r\n";
  for (int i = 0; i < 101; ++i) trailers += "T: 1\r\n";
  CHECK_THAT(rejected(trailers + "\r\n", 431), Contains("more than 100 trailer lines"));
}

TEST_CASE("a resumed frame that already finished is returned as is", "[http][frame]") {
  const HttpFrame bad = frame_http_request("BAD\r\n", {});
  REQUIRE(bad.status == FrameStatus::invalid);
  CHECK(frame_http_request("GET / HTTP/1.1\r\nHost: a\r\n\r\n", {}, bad).status == FrameStatus::invalid);
}

// ---------------------------------------------------------------------------------------------------
// conversion to the uwsgi packet

TEST_CASE("a curl POST becomes exactly nginx's vars", "[http][uwsgi]") {
  const std::string request =
      "POST /api/caf%C3%A9/./x/../items?q=a%20b&x=1 HTTP/1.1\r\n"
      "Host: example.com:8080\r\n"
      "User-Agent: curl/7.88.1\r\n"
      "Accept: */*\r\n"
      "Content-Type: application/json\r\n"
      "Content-Length: 10\r\n"
      "X-Forwarded-For: 1.2.3.4\r\n"
      "x-forwarded-for: 5.6.7.8\r\n"
      "Cookie: a=1\r\n"
      "Cookie: b=2\r\n"
      "X_Alias: dropped\r\n"
      "Proxy: http://evil\r\n"
      "\r\n"
      "{\"k\": \"v\"}";
  const Converted c = convert(request, {"10.0.0.7", "51234", "myhost", "8080"});
  REQUIRE(c.ok);
  const std::string expected_vars = wire::vars({
      {"QUERY_STRING", "q=a%20b&x=1"},
      {"REQUEST_METHOD", "POST"},
      {"CONTENT_TYPE", "application/json"},
      {"CONTENT_LENGTH", "10"},
      {"REQUEST_URI", "/api/caf%C3%A9/./x/../items?q=a%20b&x=1"},
      {"PATH_INFO", "/api/caf\xc3\xa9/items"},
      {"DOCUMENT_ROOT", ""},
      {"SERVER_PROTOCOL", "HTTP/1.1"},
      {"REQUEST_SCHEME", "http"},
      {"REMOTE_ADDR", "10.0.0.7"},
      {"REMOTE_PORT", "51234"},
      {"SERVER_PORT", "8080"},
      {"SERVER_NAME", "myhost"},
      {"HTTP_HOST", "example.com:8080"},
      {"HTTP_USER_AGENT", "curl/7.88.1"},
      {"HTTP_ACCEPT", "*/*"},
      {"HTTP_X_FORWARDED_FOR", "1.2.3.4, 5.6.7.8"},
      {"HTTP_COOKIE", "a=1; b=2"},
  });
  std::string expected;
  encode_header(expected, 0, static_cast<std::uint16_t>(expected_vars.size()), 0);
  expected += expected_vars;
  CHECK(hex(c.packet) == hex(expected));
  CHECK(c.body == "{\"k\": \"v\"}");
  CHECK(c.info.keep_alive);
  CHECK_FALSE(c.info.head);
  CHECK(c.info.protocol == "HTTP/1.1");
}

TEST_CASE("a browser GET: no body, empty CONTENT_*, headers in order, HTTPS", "[http][uwsgi]") {
  const std::string request =
      "GET /index.html HTTP/1.1\r\n"
      "Host: [::1]:8443\r\n"
      "Connection: keep-alive\r\n"
      "Accept: text/html,application/xhtml+xml\r\n"
      "Accept-Encoding: gzip, deflate, br\r\n"
      "Accept-Language: en-US,en;q=0.9\r\n"
      "\r\n";
  const Converted c = convert(request, {"::1", "40000", "", "8443", "https"});
  REQUIRE(c.ok);
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"QUERY_STRING", ""},
      {"REQUEST_METHOD", "GET"},
      {"CONTENT_TYPE", ""},
      {"CONTENT_LENGTH", ""},
      {"REQUEST_URI", "/index.html"},
      {"PATH_INFO", "/index.html"},
      {"DOCUMENT_ROOT", ""},
      {"SERVER_PROTOCOL", "HTTP/1.1"},
      {"REQUEST_SCHEME", "https"},
      {"HTTPS", "on"},
      {"REMOTE_ADDR", "::1"},
      {"REMOTE_PORT", "40000"},
      {"SERVER_PORT", "8443"},
      {"SERVER_NAME", "[::1]"},  // from Host, without the port, when the worker gives no name
      {"HTTP_HOST", "[::1]:8443"},
      {"HTTP_CONNECTION", "keep-alive"},
      {"HTTP_ACCEPT", "text/html,application/xhtml+xml"},
      {"HTTP_ACCEPT_ENCODING", "gzip, deflate, br"},
      {"HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.9"},
  };
  CHECK(c.vars == expected);
  CHECK(c.body.empty());
  CHECK(c.info.keep_alive);
}

TEST_CASE("a chunked body is de-chunked, CONTENT_LENGTH is its length, framing headers are dropped",
          "[http][uwsgi]") {
  const std::string request =
      "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
      "3;x=y\r\na" +
      std::string(1, '\0') + "b\r\n6\r\n\r\n\xff\xfe\r\n\r\n0\r\nX-Trailer: t\r\n\r\n";
  const Converted c = convert(request);
  REQUIRE(c.ok);
  CHECK(hex(c.body) == hex(std::string_view("a\0b\r\n\xff\xfe\r\n", 9)));
  CHECK(c.var("CONTENT_LENGTH") == "9");
  CHECK(c.var("HTTP_TRANSFER_ENCODING") == "<absent>");
  CHECK(c.var("HTTP_X_TRAILER") == "<absent>");  // trailers are not passed on
  CHECK(c.var("HTTP_EXPECT") == "100-continue");
  CHECK(c.info.expect_continue);
}

TEST_CASE("keep-alive, HEAD, HTTP/1.0 and odd targets", "[http][uwsgi]") {
  CHECK_FALSE(convert("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\n\r\n").info.keep_alive);
  CHECK_FALSE(convert("GET / HTTP/1.0\r\n\r\n").info.keep_alive);
  const Converted ten = convert("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
  CHECK(ten.info.keep_alive);
  CHECK(ten.info.protocol == "HTTP/1.0");
  CHECK(ten.var("SERVER_PROTOCOL") == "HTTP/1.0");
  CHECK(ten.var("SERVER_NAME") == "");
  CHECK(convert("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").info.head);
  // HTTP/1.x for x > 1 is answered as 1.1.
  CHECK(convert("GET / HTTP/1.9\r\nHost: a\r\n\r\n").var("SERVER_PROTOCOL") == "HTTP/1.1");
  const Converted absolute =
      convert("GET http://example.com:81/p%20q?x=%41 HTTP/1.1\r\nHost: example.com:81\r\n\r\n");
  CHECK(absolute.var("REQUEST_URI") == "/p%20q?x=%41");
  CHECK(absolute.var("PATH_INFO") == "/p q");
  CHECK(absolute.var("QUERY_STRING") == "x=%41");
  const Converted bare = convert("GET https://example.com?x HTTP/1.1\r\nHost: example.com\r\n\r\n");
  CHECK(bare.var("REQUEST_URI") == "/?x");
  CHECK(bare.var("PATH_INFO") == "/");
  const Converted star = convert("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(star.var("REQUEST_URI") == "*");
  CHECK(star.var("PATH_INFO") == "*");
  CHECK(convert("GET /a/b/.. HTTP/1.1\r\nHost: a\r\n\r\n").var("PATH_INFO") == "/a/");
  CHECK(convert("GET /a//b/./ HTTP/1.1\r\nHost: a\r\n\r\n").var("PATH_INFO") == "/a//b/");
  CHECK(convert("GET /a+b%2Fc HTTP/1.1\r\nHost: a\r\n\r\n").var("PATH_INFO") == "/a+b/c");
  CHECK(convert("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").var("CONTENT_LENGTH") == "0");
}

TEST_CASE("vars over the uwsgi 65535-byte limit are refused", "[http][uwsgi]") {
  HttpLimits limits;
  limits.max_header_bytes = 1 << 20;
  const Converted one = convert("GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(70000, 'x') + "\r\n\r\n",
                                {"127.0.0.1", "1", "", "2"}, limits);
  CHECK_FALSE(one.ok);
  CHECK_THAT(one.error, Contains("\"X-Big\" is 70000 bytes long, over the uwsgi limit of 65535"));
  const Converted many =
      convert("GET / HTTP/1.1\r\nHost: a\r\nX-A: " + std::string(30000, 'x') +
                  "\r\nX-B: " + std::string(30000, 'x') + "\r\nX-C: " + std::string(30000, 'x') + "\r\n\r\n",
              {"127.0.0.1", "1", "", "2"}, limits);
  CHECK_FALSE(many.ok);
  CHECK_THAT(many.error, Contains("over the uwsgi limit of 65535"));
  CHECK(many.packet.empty());
  // A frame that is not complete is refused, not read past.
  std::string packet, body, error;
  HttpRequestInfo info;
  CHECK_FALSE(http_to_uwsgi("GET / HTTP/1.1\r\n", frame_http_request("GET / HTTP/1.1\r\n", {}), {}, packet,
                            body, info, error));
}

// ---------------------------------------------------------------------------------------------------
// responses

TEST_CASE("an app response without Content-Length gets one and stays kept", "[http][response]") {
  const Finished f = finish("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello");
  CHECK(f.keep);
  CHECK(f.response == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
  CHECK(finish("HTTP/1.1 200 OK\r\n\r\n").response == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  const std::string binary("\0\r\n\r\n\xff", 6);
  CHECK(finish("HTTP/1.1 200 OK\r\n\r\n" + binary).response ==
        "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n" + binary);
}

TEST_CASE("Connection: close when not kept; keep-alive for an HTTP/1.0 response", "[http][response]") {
  Finished f = finish("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", false);
  CHECK_FALSE(f.keep);
  CHECK(f.response == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
  f = finish("HTTP/1.1 200 OK\r\nconnection: Close\r\n\r\nok");
  CHECK_FALSE(f.keep);
  CHECK(f.note == "the application asked for Connection: close");
  CHECK(f.response == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
  f = finish("HTTP/1.0 200 OK\r\n\r\nok", true, false, "HTTP/1.0");
  CHECK(f.keep);
  CHECK(f.response == "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok");
}

TEST_CASE("HEAD: the body goes, the length stays", "[http][response]") {
  Finished f = finish("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", true, true);
  CHECK(f.keep);
  CHECK(f.response == "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
  f = finish("HTTP/1.1 200 OK\r\nX: 1\r\n\r\nhello", true, true);  // the app ignored HEAD
  CHECK(f.response == "HTTP/1.1 200 OK\r\nX: 1\r\nContent-Length: 5\r\n\r\n");
  f = finish("HTTP/1.1 200 OK\r\nX: 1\r\n\r\n", true, true);  // unknown length: none invented
  CHECK(f.keep);
  CHECK(f.response == "HTTP/1.1 200 OK\r\nX: 1\r\n\r\n");
}

TEST_CASE("CGI-style responses get a status line", "[http][response]") {
  Finished f = finish("Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope");
  CHECK(f.keep);
  CHECK(f.response == "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nnope");
  CHECK(finish("Content-Type: text/plain\r\n\r\nhi").response ==
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi");
  CHECK(finish("Status: 302\r\nLocation: /x\r\n\r\n", true, false, "HTTP/1.0").response ==
        "HTTP/1.0 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");
}

TEST_CASE("204 and 304 carry no body and get no Content-Length", "[http][response]") {
  Finished f = finish("HTTP/1.1 204 No Content\r\nX: 1\r\n\r\nstray");
  CHECK(f.keep);
  CHECK(f.response == "HTTP/1.1 204 No Content\r\nX: 1\r\n\r\n");
  f = finish("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n");
  CHECK(f.keep);
  CHECK(f.response == "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n");
}

TEST_CASE("chunked app responses are left alone when well-formed", "[http][response]") {
  const std::string chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
  Finished f = finish(chunked);
  CHECK(f.keep);
  CHECK(f.response == chunked);
  f = finish("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
  CHECK_FALSE(f.keep);
  CHECK_THAT(f.note, Contains("chunked body is malformed or incomplete"));
  CHECK(f.response == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhel");
  CHECK_FALSE(finish("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx").keep);
  CHECK_FALSE(
      finish("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n").keep);
  CHECK_FALSE(
      finish("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true, false, "HTTP/1.0").keep);
}

TEST_CASE("a body that disagrees with its Content-Length", "[http][response]") {
  Finished f = finish("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA");
  CHECK(f.keep);
  CHECK(f.response == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  f = finish("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
  CHECK_FALSE(f.keep);
  CHECK_THAT(f.note, Contains("5 body bytes for a Content-Length of 10"));
  CHECK(f.response == "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort");
  // A list of equal values or a repeated header goes out as one plain Content-Length (found by fuzz_http).
  f = finish("Content-Length: 2, 2\r\ncontent-length: 2\r\n\r\nok");
  CHECK(f.keep);
  CHECK(f.response == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
}

TEST_CASE("empty or unparsable app responses become 502", "[http][response]") {
  const std::string bad_gateway =
      "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n";
  for (const std::string& response :
       {std::string(), std::string("hello"), std::string("HTTP/1.1 200 OK\r\nX: 1\r\n"),
        std::string("\r\n\r\nbody"), std::string("HTTP/1.1 abc\r\n\r\n"),
        std::string("HTTP/1.1 2000 OK\r\n\r\n"), std::string("HTTP/0.0 200 OK\r\n\r\nbody"),
        std::string("HTTP/2.0 200 OK\r\n\r\n"), std::string("HTTP/1.1 200 OK\r\nno colon\r\n\r\n"),
        std::string("HTTP/1.1 200 OK\r\nX: a\nb\r\n\r\n"), std::string("HTTP/1.1 100 Continue\r\n\r\n"),
        std::string("Status: nope\r\n\r\n"), std::string("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")}) {
    INFO(printable(response));
    Finished f = finish(response);
    CHECK(f.keep);
    CHECK(f.response == bad_gateway + "Bad Gateway\n");
    CHECK_FALSE(f.note.empty());
  }
  Finished f = finish("", false, true);
  CHECK_FALSE(f.keep);
  CHECK(f.response ==
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
        "Connection: close\r\n\r\n");
  CHECK(f.note == "the application sent an empty response");
}

TEST_CASE("error responses", "[http][response]") {
  std::string out = "old";
  http_error_response(out, 431, "request head longer than 16384 bytes");
  CHECK(out ==
        "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Type: text/plain\r\n"
        "Content-Length: 37\r\n\r\nrequest head longer than 16384 bytes\n");
  http_error_response(out, 400, std::string_view("a\r\nb\0", 5));
  CHECK(out == std::string("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                           "Content-Length: 6\r\n\r\na??b?\n"));
  for (int status : {400, 413, 431, 501, 505}) CHECK(http_reason_phrase(status) != "Unknown");
  // A frame's own error text makes a valid response.
  const HttpFrame frame = frame_http_request("GET / HTTP/2.0\r\n", {});
  http_error_response(out, frame.error_status, frame.error);
  CHECK(out.starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\nConnection: close\r\n"));
}
