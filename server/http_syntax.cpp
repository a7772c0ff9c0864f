#include "server/http_syntax.hpp"

#include <fmt/format.h>

#include <algorithm>

// The shared HTTP/1.x syntax (declared, with what each function accepts, in http_syntax.hpp).
namespace server::http_detail {

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

bool parse_header_line(std::string_view line, std::size_t offset, HeaderLine& out, Failure& failure,
                       std::string_view what) {
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

std::size_t skip_empty_lines(std::string_view r) {
  std::size_t start = 0;
  while (r.size() - start >= 2 && r[start] == '\r' && r[start + 1] == '\n') start += 2;
  return start;
}

}  // namespace server::http_detail
