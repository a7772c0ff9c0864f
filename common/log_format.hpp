// uWSGI's --log-format templates: "%(addr) - %(method) %(uri) %(status)". The parser and the list of
// variables this server fills live here so that config/ (validation at start) and workers/ (the
// request log) share them.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace common {

// uWSGI's names for the common request-log variables (docs/operations.md says what each holds).
inline constexpr std::array<std::string_view, 30> kLogFormatVariables = {
    "addr", "method", "uri",   "status", "size",    "rsize",   "hsize",    "msecs",   "micros", "pid",
    "wid",  "ltime",  "ftime", "ctime",  "time",    "epoch",   "tmsecs",   "tmicros", "uagent", "referer",
    "host", "proto",  "user",  "vars",   "pktsize", "headers", "switches", "core",    "rss",    "vsz"};

// One piece of a template: literal text, or a variable.
struct LogFormatPiece {
  bool variable = false;
  std::string text;  // literal text, or the variable's name
};

// Splits a template. False with `error` set for an unknown %(var) (named, with its byte offset) or
// an unterminated one.
bool parse_log_format(std::string_view format, std::vector<LogFormatPiece>& out, std::string& error);

}  // namespace common
