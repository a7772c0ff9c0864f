// Per-request accounting and the request log, at the one place a request is finished.
//
// The worker calls begin() when it hands a complete request to a handler and finish() when the
// handler's reply is ready (before any HTTP fix-up of the connection). finish() adds to the worker's
// scoreboard records (requests, tx, running time, exceptions, status classes, the duration histogram)
// and, when uWSGI's rules say so, writes one log line: uWSGI's default line or a --log-format
// template, built in a reused buffer and written with a single write(2).
#pragma once

#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/log_format.hpp"
#include "server/protocol.hpp"
#include "workers/scoreboard.hpp"

namespace workers {

struct RequestLogOptions {
  bool enabled = true;     // off with --disable-logging
  bool log_cache = false;  // --log-cache: modifier1 111 requests get a line too
  bool log_4xx = false;    // uWSGI: these log a request even when logging is disabled
  bool log_5xx = false;
  std::uint64_t slow_ms = 0;   // --log-slow: requests at least this slow (0 = off)
  bool memory_report = false;  // --memory-report: the {address space usage} {rss usage} prefix
  std::string format;          // --log-format: uWSGI's %(var) template; "" = the default line
  std::string ftime_format;    // strftime format of %(ftime) ("" = as %(ltime))
};

// What the accounting needs to know of a reply it did not build.
struct ResponseShape {
  int status = 0;                  // HTTP status (0 = none found)
  std::uint32_t headers = 0;       // header lines, not counting the status line
  std::uint64_t header_bytes = 0;  // status line + headers + the blank line
  std::uint64_t body_bytes = 0;
};

// Reads the status and the head's size from raw HTTP response bytes (head then body, as the
// application hands them back).
ResponseShape shape_of_response(std::string_view head, std::string_view body);

class RequestAccounting {
 public:
  RequestAccounting(int worker_id, WorkerSlot* slot, WorkerTotals* totals, ScoreboardHeader* board,
                    const RequestLogOptions& options);

  // The request is handed to its handler now; returns the start stamp finish() takes.
  std::int64_t begin(const server::Request& request);
  // The request went to another worker (the shared queue) without being handled: it finishes there.
  void handed_off(const server::Request& request);
  // The request was handled; `reply` is what its handler produced, `exception` whether it failed.
  void finish(const server::Request& request, const server::Reply& reply, std::int64_t started_ns,
              bool exception);
  // Writes the lines finish() buffered, in one write(2). The worker calls it at the end of each pass
  // of its loop and before it exits; the destructor too.
  void flush();
  ~RequestAccounting() { flush(); }

 private:
  void write_line(const server::Request& request, const ResponseShape& shape, std::uint64_t micros,
                  std::int64_t started_ns, std::uint64_t worker_requests, std::uint64_t total_requests);

  int worker_id_;
  pid_t pid_;  // getpid() is a system call in today's glibc: once, in the worker
  WorkerSlot* slot_;
  WorkerTotals* totals_;
  ScoreboardHeader* board_;
  RequestLogOptions options_;
  std::vector<common::LogFormatPiece> pieces_;
  // The lines of the requests finished since the last flush(): the worker flushes once per pass of
  // its loop (one write(2) for every request that pass finished, nothing held while it sleeps), and
  // at kFlushBytes.
  std::string line_;
  static constexpr std::size_t kFlushBytes = 32 * 1024;
  time_t dates_second_ = -1;  // the second the two dates below show
  char ctime_[32] = "";       // uWSGI's default line: "Sun Dec  6 06:02:00 2026"
  std::size_t ctime_len_ = 0;
  char ltime_[40] = "";  // %(ltime): "06/Dec/2026:06:02:00 +0000"
  std::size_t ltime_len_ = 0;
  char ftime_[64] = "";  // %(ftime): in options_.ftime_format (uWSGI's 64-byte bound), else ltime
  std::size_t ftime_len_ = 0;
  std::int64_t wall_offset_ns_;  // realtime - monotonic, for the request's start date
};

}  // namespace workers
