// The HTTP/1.x syntax shared by the request framer (http_frame.cpp) and the request/response
// translation (http.cpp): character classes, the request line, header lines, the request target.
// Private to server/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "server/http.hpp"

namespace server::http_detail {

inline bool is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return c != 0 && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// A header value byte: HTAB, SP, VCHAR, obs-text. Everything else (CR, LF, NUL, DEL, ...) would let a
// value smuggle a line break or confuse the application.
inline bool is_field_byte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

inline bool is_ows(char c) { return c == ' ' || c == '\t'; }

inline char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Case-insensitive equality against a lowercase literal.
inline bool ieq(std::string_view text, std::string_view lower_literal) {
  if (text.size() != lower_literal.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (lower(text[i]) != lower_literal[i]) return false;
  }
  return true;
}

inline bool istarts_with(std::string_view text, std::string_view lower_literal) {
  return text.size() >= lower_literal.size() && ieq(text.substr(0, lower_literal.size()), lower_literal);
}

inline std::string_view trim_ows(std::string_view text) {
  while (!text.empty() && is_ows(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_ows(text.back())) text.remove_suffix(1);
  return text;
}

inline int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Calls visit(token) for each non-empty element of a comma-separated list (RFC 9110 §5.6.1).
template <typename Visit>
inline void for_each_token(std::string_view list, Visit visit) {
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

// Percent-decodes `raw` (a path starting with '/') into `out` and resolves "." and ".." segments on
// the decoded bytes, as nginx does for $document_uri ("/%2e%2e/" is ".." too). Rejects a bad escape,
// an escaped NUL, and ".." above the root (nginx answers 400 to all three).
bool decode_path(std::string_view raw, std::size_t offset, std::string& out, std::string& error);

struct Target {
  std::string_view uri;          // REQUEST_URI: origin-form as sent (the path and query of an absolute-form)
  bool uri_needs_slash = false;  // absolute-form with an empty path: REQUEST_URI is "/" + uri
  std::string_view path;         // raw path (before '?')
  std::string_view query;        // after the first '?', raw
  bool asterisk = false;         // "OPTIONS *"
};

bool split_target(std::string_view target, Target& out);

struct RequestLine {
  std::string_view method;
  std::string_view target;
  int minor = 1;
};

// method SP request-target SP HTTP-version, strictly (single spaces, no HTTP/0.9).
// `line` excludes the CRLF; `offset` is its offset in the received bytes (for the error text).
bool parse_request_line(std::string_view line, std::size_t offset, RequestLine& out, std::string& decoded,
                        Failure& failure);

struct HeaderLine {
  std::string_view name;
  std::string_view value;
};

// field-name ":" OWS field-value OWS; no whitespace before the colon, no obs-fold (RFC 9112 §5).
bool parse_header_line(std::string_view line, std::size_t offset, HeaderLine& out, Failure& failure,
                       std::string_view what = "header");

// Leading empty lines before the request line are ignored (RFC 9112 §2.2): clients send a stray CRLF
// after a POST body.
std::size_t skip_empty_lines(std::string_view r);

// True when `body` is exactly one complete, well-formed chunked body (http_frame.cpp).
bool is_chunked_body(std::string_view body);

}  // namespace server::http_detail
