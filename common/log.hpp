// One log line per event: "[2026-11-25 22:56:53] [pid 1234] message".
// Written with a single write(2) so lines from many processes never interleave.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace common {

enum class LogLevel { debug = 0, info = 1 };

// Lines below this level are dropped (set once at start-up from --log-debug / tests).
void set_log_level(LogLevel level);
bool log_enabled(LogLevel level);

void log_write(std::string_view message);
// Writes `line` (already ending in a newline) as it is, in one write(2): the request log's lines.
void log_write_raw(std::string_view line);

// uWSGI's --logto: stdout and stderr go to `path` (opened for appending) from now on, in this process
// and every process it forks; with `max_bytes` > 0 (--log-maxsize) the file is renamed once it
// reaches that size, to `backup` (--log-backupname) or to PATH.<unix time>, and a fresh one is
// opened. Whichever process notices first renames, under an flock, and the others follow it to the
// new file at their next line. False with `error` set when the file cannot be opened.
bool log_to_file(const std::string& path, std::uint64_t max_bytes, const std::string& backup,
                 std::string& error);
// uWSGI's --req-logger file:PATH: request lines (log_write_raw) go to PATH instead of the log.
bool log_requests_to_file(const std::string& path, std::string& error);
// --log-reopen: opens the --logto file again (after an outside rotation moved it). No-op without --logto.
void log_reopen();

template <typename... Args>
void log(fmt::format_string<Args...> format, Args&&... args) {
  log_write(fmt::format(format, std::forward<Args>(args)...));
}

template <typename... Args>
void log_debug(fmt::format_string<Args...> format, Args&&... args) {
  if (log_enabled(LogLevel::debug)) log_write(fmt::format(format, std::forward<Args>(args)...));
}

// At most `per_interval` lines per `interval_seconds` for one call site; the rest are counted
// and the count is reported with the next line that passes, as "(N similar messages suppressed)".
// Process-local; safe to share between threads.
class RateLimitedLog {
 public:
  RateLimitedLog(unsigned per_interval, unsigned interval_seconds)
      : per_interval_(per_interval), interval_seconds_(interval_seconds) {}
  // Returns true if the caller should log now; `suppressed` receives how many lines were dropped
  // since the last one that passed. For call sites that want to skip building the line.
  bool allow(unsigned long long* suppressed);
  // Logs the line if allowed, with the count of lines dropped before it.
  void log(std::string_view line);
  // " (N similar messages suppressed)", or "" for N = 0.
  static std::string suppressed_note(unsigned long long suppressed);

 private:
  std::mutex mutex_;
  unsigned per_interval_;
  unsigned interval_seconds_;
  long long window_start_ = 0;
  unsigned in_window_ = 0;
  unsigned long long dropped_ = 0;
};

}  // namespace common
