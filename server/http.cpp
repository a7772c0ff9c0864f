#include "server/http.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

namespace server {

namespace {

// Cursor phases (HttpFrame::Cursor::phase).
enum Phase : std::uint8_t { kHead, kFixedBody, kChunkSize, kChunkData, kChunkCrlf, kTrailers, kDone };

inline constexpr std::size_t kMaxVar = 65535;  // u16 length fields of the uwsgi packet

bool is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return c != 0 && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// A header value byte: HTAB, SP, VCHAR, obs-text. Everything else (CR, LF, NUL, DEL, ...) would let a
// value smuggle a line break or confuse the application.
bool is_field_byte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

bool is_ows(char c) { return c == ' ' || c == '\t'; }

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Case-insensitive equality against a lowercase literal.
bool ieq(std::string_view text, std::string_view lower_literal) {
  if (text.size() != lower_literal.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (lower(text[i]) != lower_literal[i]) return false;
  }
  return true;
}

bool istarts_with(std::string_view text, std::string_view lower_literal) {
  return text.size() >= lower_literal.size() && ieq(text.substr(0, lower_literal.size()), lower_literal);
}

std::string_view trim_ows(std::string_view text) {
  while (!text.empty() && is_ows(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_ows(text.back())) text.remove_suffix(1);
  return text;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Calls visit(token) for each non-empty element of a comma-separated list (RFC 9110 §5.6.1).
template <typename Visit>
void for_each_token(std::string_view list, Visit visit) {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    const std::string_view token = trim_ows(list.substr(0, comma));
    if (!token.empty()) visit(token);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

struct Failure {
  int status = 0;
  std::string error;
};

HttpFrame invalid(HttpFrame frame, int status, std::string error) {
  frame.status = FrameStatus::invalid;
  frame.error_status = status;
  frame.error = std::move(error);
  return frame;
}

// ---- request target ----

// Percent-decodes `raw` (a path starting with '/') into `out` and resolves "." and ".." segments on
// the decoded bytes, as nginx does for $document_uri ("/%2e%2e/" is ".." too). Rejects a bad escape,
// an escaped NUL, and ".." above the root (nginx answers 400 to all three).
bool decode_path(std::string_view raw, std::size_t offset, std::string& out, std::string& error) {
  out.clear();
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '%') {
      out.push_back(raw[i]);
      continue;
    }
    if (raw.size() - i < 3 || hex_value(raw[i + 1]) < 0 || hex_value(raw[i + 2]) < 0) {
      error = fmt::format("invalid percent-escape {} at offset {} of the request target",
                          printable(raw.substr(i, 3)), offset + i);
      return false;
    }
    const char decoded = static_cast<char>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2]));
    if (decoded == '\0') {
      error = fmt::format("escaped NUL (%00) at offset {} of the request target", offset + i);
      return false;
    }
    out.push_back(decoded);
    i += 2;
  }
  // Remove dot segments in place: the write position never passes the read position.
  std::size_t write = 0;
  std::size_t read = 0;
  const std::size_t size = out.size();
  while (read < size) {
    const std::size_t segment_start = read + 1;  // out[read] == '/'
    std::size_t segment_end = out.find('/', segment_start);
    if (segment_end == std::string::npos) segment_end = size;
    const std::string_view segment(out.data() + segment_start, segment_end - segment_start);
    const bool last = segment_end == size;
    if (segment == ".") {
      if (last) out[write++] = '/';
    } else if (segment == "..") {
      if (write == 0) {
        error = fmt::format("request path {} climbs above the root", printable(raw));
        return false;
      }
      write = out.rfind('/', write - 1);
      if (last) out[write++] = '/';
    } else {
      out[write++] = '/';
      std::memmove(out.data() + write, segment.data(), segment.size());
      write += segment.size();
    }
    read = segment_end;
  }
  out.resize(write);
  return true;
}

struct Target {
  std::string_view uri;          // REQUEST_URI: origin-form as sent (the path and query of an absolute-form)
  bool uri_needs_slash = false;  // absolute-form with an empty path: REQUEST_URI is "/" + uri
  std::string_view path;         // raw path (before '?')
  std::string_view query;        // after the first '?', raw
  bool asterisk = false;         // "OPTIONS *"
};

bool split_target(std::string_view target, Target& out) {
  out = Target{};
  if (target == "*") {
    out.uri = target;
    out.path = target;
    out.asterisk = true;
    return true;
  }
  std::string_view rest = target;
  if (rest.front() != '/') {
    // absolute-form (RFC 9112 §3.2.2): a proxy-style request; the authority is not used (Host is).
    std::size_t scheme_end = 0;
    if (istarts_with(rest, "http://")) {
      scheme_end = 7;
    } else if (istarts_with(rest, "https://")) {
      scheme_end = 8;
    } else {
      return false;
    }
    rest.remove_prefix(scheme_end);
    const std::size_t authority_end = std::min(rest.find('/'), rest.find('?'));
    if (authority_end == 0) return false;
    rest = authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
    out.uri_needs_slash = rest.empty() || rest.front() == '?';
  }
  out.uri = rest;
  const std::size_t question = rest.find('?');
  out.path = rest.substr(0, question);
  if (question != std::string_view::npos) out.query = rest.substr(question + 1);
  return true;
}

struct RequestLine {
  std::string_view method;
  std::string_view target;
  int minor = 1;
};

// method SP request-target SP HTTP-version, strictly (single spaces, no HTTP/0.9).
// `line` excludes the CRLF; `offset` is its offset in the received bytes (for the error text).
bool parse_request_line(std::string_view line, std::size_t offset, RequestLine& out, std::string& decoded,
                        Failure& failure) {
  auto fail = [&](int status, std::string error) {
    failure.status = status;
    failure.error = std::move(error);
    return false;
  };
  std::size_t i = 0;
  while (i < line.size() && is_tchar(static_cast<unsigned char>(line[i]))) ++i;
  if (i == 0 || i == line.size() || line[i] != ' ') {
    return fail(400, fmt::format("bad request line at offset {}: {} (want METHOD SP TARGET SP HTTP/1.x)",
                                 offset, printable(line)));
  }
  out.method = line.substr(0, i);
  const std::size_t target_start = ++i;
  while (i < line.size() && line[i] != ' ') {
    const auto c = static_cast<unsigned char>(line[i]);
    if (c <= 0x20 || c == 0x7f) {
      return fail(400,
                  fmt::format("invalid byte 0x{:02x} in the request target at offset {}", c, offset + i));
    }
    ++i;
  }
  out.target = line.substr(target_start, i - target_start);
  if (out.target.empty() || i == line.size()) {
    return fail(400, fmt::format("bad request line at offset {}: {} (want METHOD SP TARGET SP HTTP/1.x)",
                                 offset, printable(line)));
  }
  const std::string_view version = line.substr(i + 1);
  const bool version_shape = version.size() == 8 && version.starts_with("HTTP/") && version[5] >= '0' &&
                             version[5] <= '9' && version[6] == '.' && version[7] >= '0' && version[7] <= '9';
  if (!version_shape) {
    return fail(400, fmt::format("bad HTTP version {} at offset {} (want HTTP/1.0 or HTTP/1.1)",
                                 printable(version), offset + i + 1));
  }
  if (version[5] != '1') {
    if (out.method == "PRI" && out.target == "*" && version == "HTTP/2.0") {
      return fail(505, "HTTP/2 connection preface: this socket speaks HTTP/1.x only");
    }
    return fail(505, fmt::format("HTTP version {} is not supported (HTTP/1.x only)", printable(version)));
  }
  out.minor = version[7] - '0';
  if (out.method == "CONNECT") return fail(501, "CONNECT is not supported (not a proxy)");
  Target target;
  if (!split_target(out.target, target) || (target.asterisk && out.method != "OPTIONS")) {
    return fail(400, fmt::format("request target {} at offset {} is neither a path, an http(s) URL, "
                                 "nor * (OPTIONS)",
                                 printable(out.target), offset + target_start));
  }
  if (!target.asterisk && !target.path.empty()) {
    const std::size_t path_offset = offset + target_start + (target.path.data() - out.target.data());
    std::string error;
    if (!decode_path(target.path, path_offset, decoded, error)) return fail(400, std::move(error));
  }
  return true;
}

struct HeaderLine {
  std::string_view name;
  std::string_view value;
};

// field-name ":" OWS field-value OWS; no whitespace before the colon, no obs-fold (RFC 9112 §5).
bool parse_header_line(std::string_view line, std::size_t offset, HeaderLine& out, Failure& failure,
                       std::string_view what = "header") {
  auto fail = [&](std::string error) {
    failure.status = 400;
    failure.error = std::move(error);
    return false;
  };
  if (!line.empty() && is_ows(line.front())) {
    return fail(
        fmt::format("obsolete {} folding (a line starting with whitespace) at offset {}", what, offset));
  }
  std::size_t i = 0;
  while (i < line.size() && line[i] != ':') {
    const auto c = static_cast<unsigned char>(line[i]);
    if (!is_tchar(c)) {
      return fail(fmt::format("invalid byte 0x{:02x} in a {} name at offset {}: {}", c, what, offset + i,
                              printable(line)));
    }
    ++i;
  }
  if (i == line.size())
    return fail(fmt::format("{} line without ':' at offset {}: {}", what, offset, printable(line)));
  if (i == 0) return fail(fmt::format("empty {} name at offset {}", what, offset));
  out.name = line.substr(0, i);
  for (std::size_t j = i + 1; j < line.size(); ++j) {
    const auto c = static_cast<unsigned char>(line[j]);
    if (!is_field_byte(c)) {
      return fail(fmt::format("invalid byte 0x{:02x} in the value of {} {} at offset {}", c, what,
                              printable(out.name), offset + j));
    }
  }
  out.value = trim_ows(line.substr(i + 1));
  return true;
}

// Leading empty lines before the request line are ignored (RFC 9112 §2.2): clients send a stray CRLF
// after a POST body.
std::size_t skip_empty_lines(std::string_view r) {
  std::size_t start = 0;
  while (r.size() - start >= 2 && r[start] == '\r' && r[start + 1] == '\n') start += 2;
  return start;
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
      f = invalid(
          std::move(f), 413,
          fmt::format("Content-Length {} is over the limit of {} bytes (max-body)", length, limits.max_body));
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
        const std::uint64_t room = limits.max_body - f.body_length;  // body_length <= max_body always
        std::uint64_t size = 0;
        std::size_t i = 0;
        for (; i < line.size() && hex_value(line[i]) >= 0; ++i) {
          const auto digit = static_cast<std::uint64_t>(hex_value(line[i]));
          if (size > (std::numeric_limits<std::uint64_t>::max() - digit) / 16 || size * 16 + digit > room) {
            f = invalid(std::move(f), 413,
                        fmt::format("chunk size {} at offset {} takes the body over {} bytes (max-body)",
                                    printable(line.substr(0, 20)), c.offset, limits.max_body));
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

// ---- vars ----

// Appends one var whose value is `prefix` + the values of headers[i] for every i in the group of
// headers[first] (same name, case-insensitively), joined by `separator`.
bool append_group(std::string& packet, std::string_view key_prefix, std::string_view key_name, bool transform,
                  const std::vector<HeaderLine>& headers, std::size_t first, std::string_view separator,
                  std::string& error) {
  const std::size_t key_size = key_prefix.size() + key_name.size();
  std::size_t value_size = 0;
  std::size_t count = 0;
  auto same = [&](std::size_t i) {
    if (headers[i].name.size() != headers[first].name.size()) return false;
    for (std::size_t k = 0; k < headers[i].name.size(); ++k) {
      if (lower(headers[i].name[k]) != lower(headers[first].name[k])) return false;
    }
    return true;
  };
  for (std::size_t i = first; i < headers.size(); ++i) {
    if (!same(i)) continue;
    value_size += headers[i].value.size() + (count > 0 ? separator.size() : 0);
    ++count;
  }
  if (key_size > kMaxVar || value_size > kMaxVar) {
    error = fmt::format("header {} is {} bytes long, over the uwsgi limit of {} for one var",
                        printable(headers[first].name), value_size, kMaxVar);
    return false;
  }
  append_u16le(packet, static_cast<std::uint16_t>(key_size));
  packet.append(key_prefix);
  for (const char ch : key_name) {
    packet.push_back(!transform                 ? ch
                     : ch == '-'                ? '_'
                     : (ch >= 'a' && ch <= 'z') ? static_cast<char>(ch - 32)
                                                : ch);
  }
  append_u16le(packet, static_cast<std::uint16_t>(value_size));
  count = 0;
  for (std::size_t i = first; i < headers.size(); ++i) {
    if (!same(i)) continue;
    if (count++ > 0) packet.append(separator);
    packet.append(headers[i].value);
  }
  return true;
}

// Appends prefix + value as one var (the caller keeps keys short).
bool append_checked(std::string& packet, std::string_view key, std::string_view value, std::string& error,
                    std::string_view value_prefix = {}) {
  if (value_prefix.size() + value.size() > kMaxVar) {
    error = fmt::format("{} is {} bytes long, over the uwsgi limit of {} for one var", key,
                        value_prefix.size() + value.size(), kMaxVar);
    return false;
  }
  append_u16le(packet, static_cast<std::uint16_t>(key.size()));
  packet.append(key);
  append_u16le(packet, static_cast<std::uint16_t>(value_prefix.size() + value.size()));
  packet.append(value_prefix);
  packet.append(value);
  return true;
}

// Copies the data of a chunked body that frame_body accepted.
void dechunk(std::string_view wire, std::string& out) {
  std::size_t pos = 0;
  while (pos < wire.size()) {
    std::uint64_t size = 0;
    while (pos < wire.size() && hex_value(wire[pos]) >= 0)
      size = size * 16 + static_cast<std::uint64_t>(hex_value(wire[pos++]));
    const std::size_t nl = wire.find('\n', pos);
    if (nl == std::string_view::npos || size == 0) return;
    pos = nl + 1;
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(size, wire.size() - pos));
    out.append(wire.substr(pos, take));
    pos += take + 2;
  }
}

// ---- responses ----

void append_connection(std::string& out, bool keep, std::string_view version) {
  if (!keep) {
    out += "Connection: close\r\n";
  } else if (version == "HTTP/1.0") {
    out += "Connection: keep-alive\r\n";  // an HTTP/1.0 response is closed unless it says so
  }
}

bool bad_gateway(std::string& response, const HttpRequestInfo& request, std::string* note, std::string why) {
  const std::string_view version = request.protocol.empty() ? "HTTP/1.1" : request.protocol;
  constexpr std::string_view kBody = "Bad Gateway\n";
  response.clear();
  fmt::format_to(std::back_inserter(response),
                 "{} 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n", version,
                 kBody.size());
  append_connection(response, request.keep_alive, version);
  response += "\r\n";
  if (!request.head) response += kBody;
  if (note != nullptr) *note = std::move(why);
  return request.keep_alive;
}

// "NNN[ reason]" with 100 <= NNN <= 599.
bool parse_status(std::string_view text, int& code, std::string_view& reason) {
  if (text.size() < 3 || (text.size() > 3 && text[3] != ' ')) return false;
  for (std::size_t i = 0; i < 3; ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
  }
  code = (text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0');
  reason = text.size() > 3 ? trim_ows(text.substr(4)) : std::string_view();
  return code >= 100 && code <= 599;
}

// True when `body` is exactly one complete, well-formed chunked body.
bool is_chunked_body(std::string_view body) {
  HttpFrame f;
  f.chunked = true;
  f.cursor.phase = kChunkSize;
  HttpLimits limits;
  limits.max_body = std::numeric_limits<std::uint64_t>::max();
  limits.max_header_bytes = 65536;
  frame_body(body, limits, f);
  return f.status == FrameStatus::complete && f.total == body.size();
}

}  // namespace

std::string_view http_reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 203:
      return "Non-Authoritative Information";
    case 204:
      return "No Content";
    case 205:
      return "Reset Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 416:
      return "Range Not Satisfiable";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 426:
      return "Upgrade Required";
    case 428:
      return "Precondition Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

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

bool http_to_uwsgi(std::string_view request, const HttpFrame& frame, const HttpConnectionInfo& info,
                   std::string& packet, std::string& body, HttpRequestInfo& out, std::string& error) {
  packet.clear();
  body.clear();
  out = HttpRequestInfo{};
  if (frame.status != FrameStatus::complete || frame.total > request.size() || frame.head_end < 4) {
    error = "http_to_uwsgi: the frame is not a complete request of these bytes";
    return false;
  }
  const std::size_t start = skip_empty_lines(request);
  const std::size_t line_end = request.find('\n', start);
  RequestLine line;
  Failure failure;
  thread_local std::string decoded;
  decoded.clear();
  if (line_end == std::string_view::npos || line_end >= frame.head_end ||
      !parse_request_line(request.substr(start, line_end - 1 - start), start, line, decoded, failure)) {
    error = "http_to_uwsgi: the request line does not parse: " + failure.error;
    return false;
  }
  thread_local std::vector<HeaderLine> headers;
  headers.clear();
  for (std::size_t pos = line_end + 1; pos < frame.head_end - 2;) {
    const std::size_t nl = request.find('\n', pos);
    HeaderLine header;
    if (!parse_header_line(request.substr(pos, nl - 1 - pos), pos, header, failure)) {
      error = "http_to_uwsgi: " + failure.error;
      return false;
    }
    headers.push_back(header);
    pos = nl + 1;
  }

  out.protocol = line.minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
  out.head = line.method == "HEAD";
  out.expect_continue = frame.expect_continue;
  bool close = false;
  bool keep_alive_token = false;
  std::string_view host;
  std::size_t content_type = headers.size();
  for (std::size_t i = 0; i < headers.size(); ++i) {
    const HeaderLine& h = headers[i];
    if (ieq(h.name, "connection")) {
      for_each_token(h.value, [&](std::string_view token) {
        if (ieq(token, "close")) close = true;
        if (ieq(token, "keep-alive")) keep_alive_token = true;
      });
    } else if (ieq(h.name, "host")) {
      host = h.value;
    } else if (ieq(h.name, "content-type") && content_type == headers.size()) {
      content_type = i;
    }
  }
  out.keep_alive = !close && (line.minor >= 1 || keep_alive_token);

  if (frame.chunked) {
    dechunk(request.substr(frame.head_end, frame.total - frame.head_end), body);
  } else {
    body.assign(request.substr(frame.head_end, static_cast<std::size_t>(frame.body_length)));
  }
  bool has_body_header = frame.chunked;
  for (const HeaderLine& h : headers) has_body_header = has_body_header || ieq(h.name, "content-length");

  Target target;
  split_target(line.target, target);
  std::string_view server_name = info.server_name;
  if (server_name.empty()) {
    // The Host without its port ("[::1]:8080" → "[::1]").
    const std::size_t colon = host.rfind(':');
    const std::size_t bracket = host.rfind(']');
    server_name = colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket)
                      ? host.substr(0, colon)
                      : host;
  }

  packet.resize(kHeaderSize);  // patched once the vars are there
  const auto length = fmt::format_int(body.size());
  bool ok =
      append_checked(packet, "QUERY_STRING", target.query, error) &&
      append_checked(packet, "REQUEST_METHOD", line.method, error) &&
      (content_type < headers.size()
           ? append_group(packet, "", "CONTENT_TYPE", false, headers, content_type, ", ", error)
           : append_checked(packet, "CONTENT_TYPE", "", error)) &&
      append_checked(packet, "CONTENT_LENGTH",
                     has_body_header ? std::string_view(length.data(), length.size()) : std::string_view(),
                     error) &&
      append_checked(packet, "REQUEST_URI", target.uri, error, target.uri_needs_slash ? "/" : "") &&
      append_checked(packet, "PATH_INFO", target.asterisk ? target.path : std::string_view(decoded), error,
                     !target.asterisk && target.path.empty() ? "/" : "") &&
      append_checked(packet, "DOCUMENT_ROOT", "", error) &&
      append_checked(packet, "SERVER_PROTOCOL", out.protocol, error) &&
      append_checked(packet, "REQUEST_SCHEME", info.scheme, error) &&
      (info.scheme != "https" || append_checked(packet, "HTTPS", "on", error)) &&
      append_checked(packet, "REMOTE_ADDR", info.remote_addr, error) &&
      append_checked(packet, "REMOTE_PORT", info.remote_port, error) &&
      append_checked(packet, "SERVER_PORT", info.server_port, error) &&
      append_checked(packet, "SERVER_NAME", server_name, error);
  for (std::size_t i = 0; ok && i < headers.size(); ++i) {
    const std::string_view name = headers[i].name;
    // Framing headers describe the wire, not the (de-chunked) body the application gets; Proxy is
    // httpoxy (CVE-2016-5385); a '_' name would alias a '-' one (nginx drops them by default too).
    if (ieq(name, "content-type") || ieq(name, "content-length") || ieq(name, "transfer-encoding") ||
        ieq(name, "proxy") || name.find('_') != std::string_view::npos) {
      continue;
    }
    bool repeat = false;  // the group was written at its first member
    for (std::size_t j = 0; j < i && !repeat; ++j) {
      repeat = headers[j].name.size() == name.size() &&
               std::equal(name.begin(), name.end(), headers[j].name.begin(),
                          [](char a, char b) { return lower(a) == lower(b); });
    }
    if (repeat) continue;
    ok = append_group(packet, "HTTP_", name, true, headers, i, ieq(name, "cookie") ? "; " : ", ", error);
  }
  if (!ok) return false;
  const std::size_t datasize = packet.size() - kHeaderSize;
  if (datasize > kMaxVar) {
    error = fmt::format("the request's vars take {} bytes, over the uwsgi limit of {}", datasize, kMaxVar);
    packet.clear();
    return false;
  }
  packet[0] = static_cast<char>(kModifierApp);
  packet[1] = static_cast<char>(datasize & 0xff);
  packet[2] = static_cast<char>(datasize >> 8);
  packet[3] = 0;
  return true;
}

bool finish_http_response(std::string& response, const HttpRequestInfo& request, std::string* note) {
  if (note != nullptr) note->clear();
  const std::string_view proto = request.protocol.empty() ? "HTTP/1.1" : request.protocol;
  const std::size_t head_size = response.find("\r\n\r\n");
  if (response.empty()) return bad_gateway(response, request, note, "the application sent an empty response");
  if (head_size == std::string::npos || head_size == 0) {
    return bad_gateway(
        response, request, note,
        fmt::format("the application's response has no complete header block: {}", printable(response)));
  }
  const std::string_view head(response.data(), head_size);
  const std::size_t body_start = head_size + 4;

  // The status line, or CGI style: headers only, "Status: NNN reason" (nginx's default 200).
  const bool cgi = !head.starts_with("HTTP/");
  int code = 200;
  std::string_view reason;
  std::string_view version = proto;
  std::size_t pos = 0;
  if (!cgi) {
    const std::size_t eol = head.find("\r\n");
    const std::string_view line = head.substr(0, eol);
    // HTTP/1.x only: the version goes to the client as it is, on a connection kept by HTTP/1.x rules.
    const bool shape = line.size() >= 12 && line[5] == '1' && line[6] == '.' && line[7] >= '0' &&
                       line[7] <= '9' && line[8] == ' ';
    if (!shape || !parse_status(line.substr(9), code, reason)) {
      return bad_gateway(response, request, note,
                         fmt::format("the application's status line is malformed: {}", printable(line)));
    }
    version = line.substr(0, 8);
    pos = eol == std::string_view::npos ? head.size() : eol + 2;
  }

  bool app_close = false;
  bool has_length = false;
  bool length_bad = false;
  std::uint64_t length = 0;
  bool has_te = false;
  std::string_view last_coding;
  thread_local std::string out;
  out.clear();
  thread_local std::string lines;  // the header lines we keep, CRLF-terminated
  lines.clear();
  while (pos < head.size()) {
    std::size_t eol = head.find("\r\n", pos);
    if (eol == std::string_view::npos) eol = head.size();
    const std::string_view line = head.substr(pos, eol - pos);
    HeaderLine header;
    Failure failure;
    if (!parse_header_line(line, pos, header, failure)) {
      return bad_gateway(response, request, note, "the application's response: " + failure.error);
    }
    bool keep_line = true;
    if (ieq(header.name, "connection")) {
      // Replaced by ours; the app may still ask to close.
      for_each_token(header.value,
                     [&](std::string_view token) { app_close = app_close || ieq(token, "close"); });
      keep_line = false;
    } else if (cgi && ieq(header.name, "status")) {
      if (!parse_status(header.value, code, reason)) {
        return bad_gateway(
            response, request, note,
            fmt::format("the application's Status header is malformed: {}", printable(header.value)));
      }
      keep_line = false;
    } else if (ieq(header.name, "content-length")) {
      const bool first = !has_length;
      for_each_token(header.value, [&](std::string_view token) {
        std::uint64_t value = 0;
        if (!parse_decimal(token, value) || (has_length && value != length)) length_bad = true;
        has_length = true;
        length = value;
      });
      if (!has_length) length_bad = true;
      // One line with one number goes out: a list ("2, 2") or a repeated header, even of equal values,
      // is not a valid Content-Length to forward (RFC 9110 §8.6); conflicting ones make a 502 (below).
      keep_line = false;
      if (first && !length_bad) fmt::format_to(std::back_inserter(lines), "{}: {}\r\n", header.name, length);
    } else if (ieq(header.name, "transfer-encoding")) {
      has_te = true;
      for_each_token(header.value, [&](std::string_view token) { last_coding = token; });
    }
    if (keep_line) {
      lines.append(line);
      lines.append("\r\n");
    }
    pos = eol + 2;
  }
  if (code < 200) {
    return bad_gateway(
        response, request, note,
        fmt::format("the application answered {} (an interim status) as its final response", code));
  }
  if (length_bad) {
    return bad_gateway(response, request, note, "the application's Content-Length is invalid or conflicting");
  }

  const std::size_t body_size = response.size() - body_start;
  std::size_t keep_body = body_size;
  bool delimited = true;
  bool add_length = false;
  std::string why;
  if (request.head || code == 204 || code == 304) {
    // No body on the wire whatever the app produced. HEAD: the length the GET would have, if known.
    keep_body = 0;
    add_length = request.head && !has_length && !has_te && body_size > 0;
  } else if (has_te) {
    const std::string_view body(response.data() + body_start, body_size);
    if (has_length) {
      delimited = false;
      why = "the application sent both Content-Length and Transfer-Encoding";
    } else if (!ieq(last_coding, "chunked") || proto == "HTTP/1.0") {
      delimited = false;
      why = "the application's Transfer-Encoding does not end with chunked (or the client is HTTP/1.0)";
    } else if (!is_chunked_body(body)) {
      delimited = false;
      why = "the application's chunked body is malformed or incomplete";
    }
  } else if (has_length) {
    if (body_size > length) {
      keep_body = static_cast<std::size_t>(length);  // the bytes past it would desync the connection
    } else if (body_size < length) {
      delimited = false;
      why = fmt::format("the application sent {} body bytes for a Content-Length of {}", body_size, length);
    }
  } else {
    add_length = true;
  }
  const bool keep = request.keep_alive && !app_close && delimited;
  if (note != nullptr && request.keep_alive && !keep) {
    *note = app_close ? "the application asked for Connection: close" : why;
  }

  if (cgi) {
    fmt::format_to(std::back_inserter(out), "{} {} {}\r\n", proto, code,
                   reason.empty() ? http_reason_phrase(code) : reason);
  } else {
    out.append(head.substr(0, head.find("\r\n")));
    out.append("\r\n");
  }
  out.append(lines);
  if (add_length) fmt::format_to(std::back_inserter(out), "Content-Length: {}\r\n", body_size);
  append_connection(out, keep, version);
  out.append("\r\n");
  response.replace(0, body_start, out);
  response.resize(out.size() + keep_body);
  return keep;
}

void http_error_response(std::string& out, int status, std::string_view reason_text) {
  out.clear();
  fmt::format_to(
      std::back_inserter(out),
      "HTTP/1.1 {} {}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", status,
      http_reason_phrase(status), reason_text.size() + 1);
  for (const char c : reason_text) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  out.push_back('\n');
}

}  // namespace server
