// HTTP/1.x requests turned into uwsgi packets, and the application's responses made safe for a kept
// connection. Framing is in http_frame.cpp, the shared syntax in http_syntax.{hpp,cpp}.
#include "server/http.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "server/http_syntax.hpp"

namespace server {

using namespace http_detail;

namespace {

inline constexpr std::size_t kMaxVar = 65535;  // u16 length fields of the uwsgi packet

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

  if (frame.body_elsewhere) {
    // The body is in the worker's spool file: only its length goes into the vars.
  } else if (frame.chunked) {
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
  const auto length = fmt::format_int(frame.body_elsewhere ? frame.body_length : body.size());
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
