// The HTTP/1.x side of --http-socket: frame a request from the bytes that arrived, turn it into the
// uwsgi modifier1 0 packet the application already understands, and make the application's raw
// response safe to send on a kept connection. Pure functions, no sockets: the worker owns the I/O.
//
// Worker contract (see docs/protocol.md, "HTTP socket"):
//   1. frame = frame_http_request(buffer, limits, std::move(frame)) after every read (resumes where the
//      previous call stopped: linear in the bytes received, even for a body of tiny chunks).
//   2. incomplete: if frame.head_end && frame.expect_continue and no 100 was sent yet for this request,
//      send kContinueResponse once; read on.
//   3. invalid: http_error_response(out, frame.error_status, frame.error), send, half-close, drain, close.
//   4. complete: http_to_uwsgi(...), run the application, finish_http_response(reply, info), send; keep
//      the connection iff it returned true; drop frame.total bytes from the buffer, reset the frame to
//      HttpFrame{} and frame what is left (pipelined requests).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "server/protocol.hpp"

namespace server {

inline constexpr std::size_t kHttpMaxHeaders = 100;     // header (and trailer) lines per request
inline constexpr std::size_t kHttpMaxChunkLine = 4096;  // chunk-size line, extensions included
inline constexpr std::string_view kContinueResponse = "HTTP/1.1 100 Continue\r\n\r\n";

struct HttpLimits {
  std::size_t max_header_bytes = 16384;  // the head (request line + headers), and the trailers
  std::uint64_t max_body = UINT64_MAX;   // a Content-Length body (--limit-post; large ones are spooled)
  // A chunked body, de-chunked: it is held in memory whole (only Content-Length bodies are spooled).
  std::uint64_t max_chunked_body = 16u << 20;
};

struct HttpFrame {
  FrameStatus status = FrameStatus::incomplete;
  // Bytes of the request (head + body as sent, chunked framing included) once complete.
  std::size_t total = 0;
  int error_status = 0;  // when invalid: 400, 413, 431, 501 (unsupported Transfer-Encoding), 505
  std::string error;     // when invalid: what is wrong, naming the byte offset or the limit

  // Known once the head arrived (head_end > 0), also while the body is still incomplete.
  std::size_t head_end = 0;       // offset of the first body byte
  bool chunked = false;           // Transfer-Encoding: chunked (else Content-Length or no body)
  bool expect_continue = false;   // HTTP/1.1 "Expect: 100-continue" on a request that announces a body
  std::uint64_t body_length = 0;  // Content-Length, or the chunk bytes seen so far
  // The worker took the Content-Length body out of the buffer (spooled it to a file) and completed the
  // frame itself: `total` covers the head only; http_to_uwsgi leaves `body` empty.
  bool body_elsewhere = false;

  // Where parsing stopped; opaque to callers. Passing the frame back resumes from here.
  struct Cursor {
    std::uint8_t phase = 0;
    bool request_line_checked = false;
    std::size_t offset = 0;            // first byte not consumed yet
    std::size_t request_line_end = 0;  // offset of the request line's LF
    std::uint64_t chunk_left = 0;
    std::size_t trailer_lines = 0;
    std::size_t trailer_start = 0;
  } cursor;
};

// Decides whether one whole HTTP/1.x request arrived: request line, headers (bounded), body by
// Content-Length or chunked (extensions and trailers allowed, bounded; trailers are discarded).
// Never reads past `received`. Rejects (status): bad request line, bad header line, header folding,
// bare LF, missing/duplicate Host on HTTP/1.1, invalid or conflicting Content-Length, Content-Length
// with Transfer-Encoding, Transfer-Encoding on HTTP/1.0, bad chunk framing (400); oversize body (413);
// oversize head, more than kHttpMaxHeaders lines, oversize trailers (431); a transfer coding other
// than chunked, CONNECT (501); HTTP/2 preface or any major version but 1 (505).
HttpFrame frame_http_request(std::string_view received, const HttpLimits& limits);
// The same, resuming from `previous` (returned by an earlier call on a prefix of the same buffer).
// A complete or invalid `previous` is returned unchanged.
HttpFrame frame_http_request(std::string_view received, const HttpLimits& limits, HttpFrame previous);

struct HttpConnectionInfo {
  std::string_view remote_addr, remote_port, server_name, server_port;
  std::string_view scheme = "http";
};

struct HttpRequestInfo {
  bool keep_alive = false;       // HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with keep-alive
  bool head = false;             // method HEAD: the response goes out without its body
  bool expect_continue = false;  // as HttpFrame::expect_continue
  std::string_view protocol;     // "HTTP/1.1" or "HTTP/1.0" (static storage; HTTP/1.x, x > 1, is 1.1)
};

// Turns one complete request (the first frame.total bytes of `request`) into a uwsgi modifier1 0
// packet: `packet` receives the 4-byte header + the vars in nginx's uwsgi_params order (QUERY_STRING
// raw, REQUEST_METHOD, CONTENT_TYPE, CONTENT_LENGTH (the de-chunked length; empty without a body),
// REQUEST_URI, PATH_INFO (percent-decoded, dot segments resolved), DOCUMENT_ROOT (empty),
// SERVER_PROTOCOL, REQUEST_SCHEME, HTTPS (only "on" for https), REMOTE_ADDR, REMOTE_PORT, SERVER_PORT,
// SERVER_NAME (info.server_name, else the Host without its port)), then each header as HTTP_<NAME>
// (uppercase, '-' → '_'; repeats joined with ", ", Cookie with "; "), except Content-Type,
// Content-Length, Transfer-Encoding (the body is de-chunked), Proxy (httpoxy) and names containing
// '_' (nginx's default: they would alias a '-' name). `body` receives the (de-chunked) body. Both
// buffers are cleared first and keep their capacity. Returns false with an error when a var or the
// vars block exceeds the uwsgi 65535-byte limit (answer 431) or the frame is not a complete one.
bool http_to_uwsgi(std::string_view request, const HttpFrame& frame, const HttpConnectionInfo& info,
                   std::string& packet, std::string& body, HttpRequestInfo& out, std::string& error);

// Makes the application's raw response safe to send on a kept connection: parses its status line and
// headers (a CGI-style response — headers with an optional "Status: 200 OK", no status line — gets a
// status line), adds Content-Length when the app gave neither Content-Length nor Transfer-Encoding,
// truncates a body longer than its Content-Length, replaces the app's Connection headers with
// "Connection: close" when not keeping the connection (or "Connection: keep-alive" on an HTTP/1.0
// response that is kept), strips the body for HEAD, 204 and 304. Not kept: !request.keep_alive, the
// app said "Connection: close", or the response cannot be delimited (short body, Transfer-Encoding that
// is not a well-formed chunked body, both Content-Length and Transfer-Encoding). An empty or unparsable
// app response (or a 1xx as the final answer) becomes a 502 Bad Gateway with a short body.
// Returns the keep-alive decision; `note` (if given) receives why a 502 was made or why the connection
// cannot be kept despite request.keep_alive (empty otherwise), for the log.
bool finish_http_response(std::string& response, const HttpRequestInfo& request, std::string* note = nullptr);

// A complete error response for an invalid frame: "HTTP/1.1 <status> <reason>", Connection: close,
// text/plain body `reason_text` + "\n" (sanitized to printable ASCII). Replaces `out`.
void http_error_response(std::string& out, int status, std::string_view reason_text);

// The standard reason phrase ("Bad Request"), or "Unknown" for a status it does not know.
std::string_view http_reason_phrase(int status);

}  // namespace server
