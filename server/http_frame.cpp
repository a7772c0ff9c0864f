// HTTP/1.x request framing (frame_http_request): resumable, linear in the bytes received.
#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "server/http.hpp"
#include "server/http_syntax.hpp"

namespace server {

using namespace http_detail;

namespace {

// Cursor phases (HttpFrame::Cursor::phase).
enum Phase : std::uint8_t { kHead, kFixedBody, kChunkSize, kChunkData, kChunkCrlf, kTrailers, kDone };

HttpFrame invalid(HttpFrame frame, int status, std::string error) {
  frame.status = FrameStatus::invalid;
  frame.error_status = status;
  frame.error = std::move(error);
  return frame;
}

// Everything between the request line and the end of the head is complete and CRLF-terminated here.
void finish_head(std::string_view r, std::size_t start, std::size_t line_end, const HttpLimits& limits,
                 HttpFrame& f) {
  RequestLine request_line;
  Failure failure;
  thread_local std::string decoded;
  if (!parse_request_line(r.substr(start, line_end - 1 - start), start, request_line, decoded, failure)) {
    f = invalid(std::move(f), failure.status, std::move(failure.error));
    return;
  }
  std::size_t headers = 0;
  std::size_t hosts = 0;
  bool has_length = false;
  std::uint64_t length = 0;
  bool has_te = false;
  bool expect_continue = false;
  std::string_view last_coding;
  std::size_t codings = 0;
  std::size_t chunked_codings = 0;
  std::size_t pos = line_end + 1;
  while (pos < f.head_end - 2) {
    const std::size_t nl = r.find('\n', pos);
    HeaderLine header;
    if (!parse_header_line(r.substr(pos, nl - 1 - pos), pos, header, failure)) {
      f = invalid(std::move(f), failure.status, std::move(failure.error));
      return;
    }
    if (++headers > kHttpMaxHeaders) {
      f = invalid(std::move(f), 431, fmt::format("more than {} header lines", kHttpMaxHeaders));
      return;
    }
    if (ieq(header.name, "content-length")) {
      // Repeats are allowed when they all say the same number ("5, 5" too), per RFC 9110 §8.6.
      bool bad = false;
      std::size_t values = 0;
      for_each_token(header.value, [&](std::string_view token) {
        std::uint64_t value = 0;
        ++values;
        if (!parse_decimal(token, value) || (has_length && value != length)) bad = true;
        has_length = true;
        length = value;
      });
      if (bad || values == 0) {
        f = invalid(std::move(f), 400,
                    fmt::format("invalid or conflicting Content-Length {} at offset {}",
                                printable(header.value), pos));
        return;
      }
    } else if (ieq(header.name, "transfer-encoding")) {
      has_te = true;
      for_each_token(header.value, [&](std::string_view token) {
        ++codings;
        if (ieq(token, "chunked")) ++chunked_codings;
        last_coding = token;
      });
    } else if (ieq(header.name, "host")) {
      ++hosts;
    } else if (ieq(header.name, "expect")) {
      expect_continue = ieq(header.value, "100-continue");
    }
    pos = nl + 1;
  }
  if (request_line.minor >= 1 && hosts != 1) {
    f = invalid(std::move(f), 400,
                hosts == 0 ? "HTTP/1.1 request without a Host header" : "more than one Host header");
    return;
  }
  if (hosts > 1) {
    f = invalid(std::move(f), 400, "more than one Host header");
    return;
  }
  if (has_te) {
    // Transfer-Encoding with Content-Length is the classic request-smuggling vector: refuse both.
    if (has_length) {
      f = invalid(std::move(f), 400, "both Content-Length and Transfer-Encoding");
      return;
    }
    if (request_line.minor == 0) {
      f = invalid(std::move(f), 400, "Transfer-Encoding in an HTTP/1.0 request");
      return;
    }
    if (codings == 0 || (chunked_codings > 0 && !ieq(last_coding, "chunked")) || chunked_codings > 1) {
      f = invalid(std::move(f), 400, "Transfer-Encoding must end with exactly one \"chunked\"");
      return;
    }
    if (codings != 1 || chunked_codings == 0) {
      f = invalid(std::move(f), 501, "unsupported Transfer-Encoding: only \"chunked\" is accepted");
      return;
    }
    f.chunked = true;
    f.cursor.phase = kChunkSize;
  } else {
    if (length > limits.max_body) {
      f = invalid(std::move(f), 413,
                  fmt::format("{} (Content-Length {} is over limit-post {})", kTooBigBodyLine, length,
                              limits.max_body));
      return;
    }
    f.body_length = length;
    f.cursor.phase = kFixedBody;
  }
  // HTTP/1.0 clients do not wait for a 100 (RFC 9110 §10.1.1); nothing to wait for without a body.
  f.expect_continue = expect_continue && request_line.minor >= 1 && (f.chunked || f.body_length > 0);
  f.cursor.offset = f.head_end;
}

void frame_head(std::string_view r, const HttpLimits& limits, HttpFrame& f) {
  const std::size_t n = r.size();
  const std::size_t start = skip_empty_lines(r);
  if (start > limits.max_header_bytes) {
    f = invalid(
        std::move(f), 431,
        fmt::format("more than {} bytes of empty lines before the request line", limits.max_header_bytes));
    return;
  }
  // Bytes before cursor.offset were scanned already: every LF there is part of a CRLF and no head
  // ended there. A LF at offset i is only judged once it arrived, so resuming at any byte is safe.
  const std::size_t limit_end = start + std::min(limits.max_header_bytes, n - start);
  for (std::size_t i = std::max(f.cursor.offset, start); i < limit_end; ++i) {
    if (r[i] != '\n') continue;
    if (i == 0 || r[i - 1] != '\r') {
      f = invalid(std::move(f), 400, fmt::format("bare LF (no CR before it) at offset {} of the head", i));
      return;
    }
    if (!f.cursor.request_line_checked) {
      // Judge the request line as soon as it is there: garbage and HTTP/2 are refused early.
      RequestLine line;
      Failure failure;
      thread_local std::string decoded;
      if (!parse_request_line(r.substr(start, i - 1 - start), start, line, decoded, failure)) {
        f = invalid(std::move(f), failure.status, std::move(failure.error));
        return;
      }
      f.cursor.request_line_checked = true;
      f.cursor.request_line_end = i;
      continue;
    }
    if (r[i - 2] == '\n') {  // r[i-1] is '\r': an empty line ends the head
      f.head_end = i + 1;
      finish_head(r, start, f.cursor.request_line_end, limits, f);
      return;
    }
  }
  if (n - start >= limits.max_header_bytes) {
    f = invalid(std::move(f), 431,
                fmt::format("request head longer than {} bytes (max-header-bytes) without its end",
                            limits.max_header_bytes));
    return;
  }
  f.cursor.offset = n;
}

// The body phases. Offsets are into `r`; the head (if any) ends at f.head_end.
void frame_body(std::string_view r, const HttpLimits& limits, HttpFrame& f) {
  HttpFrame::Cursor& c = f.cursor;
  const std::size_t n = r.size();
  for (;;) {
    switch (c.phase) {
      case kFixedBody:
        if (n - f.head_end < f.body_length) return;
        f.total = f.head_end + static_cast<std::size_t>(f.body_length);
        c.phase = kDone;
        f.status = FrameStatus::complete;
        return;
      case kChunkSize: {
        const std::size_t search_end = c.offset + std::min(kHttpMaxChunkLine, n - c.offset);
        const char* nl_ptr =
            static_cast<const char*>(std::memchr(r.data() + c.offset, '\n', search_end - c.offset));
        if (nl_ptr == nullptr) {
          if (n - c.offset >= kHttpMaxChunkLine) {
            f = invalid(std::move(f), 400,
                        fmt::format("chunk-size line at offset {} longer than {} bytes", c.offset,
                                    kHttpMaxChunkLine));
          }
          return;
        }
        const std::size_t nl = static_cast<std::size_t>(nl_ptr - r.data());
        if (nl == c.offset || r[nl - 1] != '\r') {
          f = invalid(std::move(f), 400,
                      fmt::format("bare LF (no CR before it) at offset {} in the chunked body", nl));
          return;
        }
        const std::string_view line = r.substr(c.offset, nl - 1 - c.offset);
        const std::uint64_t max_chunked = std::min(limits.max_body, limits.max_chunked_body);
        const std::uint64_t room = max_chunked - f.body_length;  // body_length <= max_chunked always
        std::uint64_t size = 0;
        std::size_t i = 0;
        for (; i < line.size() && hex_value(line[i]) >= 0; ++i) {
          const auto digit = static_cast<std::uint64_t>(hex_value(line[i]));
          if (size > (std::numeric_limits<std::uint64_t>::max() - digit) / 16 || size * 16 + digit > room) {
            f = invalid(std::move(f), 413,
                        fmt::format("chunk size {} at offset {} takes the body over {} bytes ({})",
                                    printable(line.substr(0, 20)), c.offset, max_chunked,
                                    max_chunked == limits.max_body
                                        ? "limit-post"
                                        : "a chunked body is held in memory: send a Content-Length"));
            return;
          }
          size = size * 16 + digit;
        }
        if (i == 0) {
          f = invalid(
              std::move(f), 400,
              fmt::format("chunk size at offset {} is not hexadecimal: {}", c.offset, printable(line)));
          return;
        }
        std::string_view rest = line.substr(i);
        while (!rest.empty() && is_ows(rest.front())) rest.remove_prefix(1);
        if (!rest.empty() && rest.front() != ';') {
          f = invalid(std::move(f), 400,
                      fmt::format("unexpected {} after the chunk size at offset {}", printable(rest),
                                  c.offset + (rest.data() - line.data())));
          return;
        }
        for (std::size_t j = 0; j < rest.size(); ++j) {  // chunk extensions: ignored, but no control bytes
          if (!is_field_byte(static_cast<unsigned char>(rest[j]))) {
            f = invalid(
                std::move(f), 400,
                fmt::format("invalid byte 0x{:02x} in a chunk extension at offset {}",
                            static_cast<unsigned char>(rest[j]), c.offset + (rest.data() - line.data()) + j));
            return;
          }
        }
        c.offset = nl + 1;
        if (size == 0) {
          c.phase = kTrailers;
          c.trailer_start = c.offset;
          c.trailer_lines = 0;
        } else {
          c.chunk_left = size;
          f.body_length += size;
          c.phase = kChunkData;
        }
        break;
      }
      case kChunkData: {
        const std::uint64_t take = std::min<std::uint64_t>(c.chunk_left, n - c.offset);
        c.offset += static_cast<std::size_t>(take);
        c.chunk_left -= take;
        if (c.chunk_left > 0) return;
        c.phase = kChunkCrlf;
        break;
      }
      case kChunkCrlf:
        if ((n - c.offset >= 1 && r[c.offset] != '\r') || (n - c.offset >= 2 && r[c.offset + 1] != '\n')) {
          f = invalid(std::move(f), 400,
                      fmt::format("chunk data is not followed by CRLF at offset {} (got {})", c.offset,
                                  printable(r.substr(c.offset, 2))));
          return;
        }
        if (n - c.offset < 2) return;
        c.offset += 2;
        c.phase = kChunkSize;
        break;
      case kTrailers: {
        const std::size_t bound = c.trailer_start + limits.max_header_bytes;
        const std::size_t search_end = std::min(n, bound);
        const char* nl_ptr =
            search_end > c.offset
                ? static_cast<const char*>(std::memchr(r.data() + c.offset, '\n', search_end - c.offset))
                : nullptr;
        if (nl_ptr == nullptr) {
          if (n >= bound) {
            f = invalid(
                std::move(f), 431,
                fmt::format("trailers longer than {} bytes (max-header-bytes)", limits.max_header_bytes));
          }
          return;
        }
        const std::size_t nl = static_cast<std::size_t>(nl_ptr - r.data());
        if (nl == c.offset || r[nl - 1] != '\r') {
          f = invalid(std::move(f), 400,
                      fmt::format("bare LF (no CR before it) at offset {} in the trailers", nl));
          return;
        }
        const std::string_view line = r.substr(c.offset, nl - 1 - c.offset);
        if (line.empty()) {
          f.total = nl + 1;
          c.offset = f.total;
          c.phase = kDone;
          f.status = FrameStatus::complete;
          return;
        }
        HeaderLine trailer;
        Failure failure;
        if (!parse_header_line(line, c.offset, trailer, failure, "trailer")) {
          f = invalid(std::move(f), failure.status, std::move(failure.error));
          return;
        }
        if (++c.trailer_lines > kHttpMaxHeaders) {
          f = invalid(std::move(f), 431, fmt::format("more than {} trailer lines", kHttpMaxHeaders));
          return;
        }
        c.offset = nl + 1;
        break;
      }
      default:
        return;
    }
  }
}

}  // namespace

namespace http_detail {

// True when `body` is exactly one complete, well-formed chunked body.
bool is_chunked_body(std::string_view body) {
  HttpFrame f;
  f.chunked = true;
  f.cursor.phase = kChunkSize;
  HttpLimits limits;
  limits.max_body = std::numeric_limits<std::uint64_t>::max();
  limits.max_chunked_body = limits.max_body;
  limits.max_header_bytes = 65536;
  frame_body(body, limits, f);
  return f.status == FrameStatus::complete && f.total == body.size();
}

}  // namespace http_detail

HttpFrame frame_http_request(std::string_view received, const HttpLimits& limits) {
  return frame_http_request(received, limits, HttpFrame{});
}

HttpFrame frame_http_request(std::string_view received, const HttpLimits& limits, HttpFrame previous) {
  HttpFrame f = std::move(previous);
  if (f.status != FrameStatus::incomplete) return f;
  if (f.cursor.phase == kHead) {
    frame_head(received, limits, f);
    if (f.status == FrameStatus::invalid || f.head_end == 0) return f;
  }
  frame_body(received, limits, f);
  return f;
}

}  // namespace server
