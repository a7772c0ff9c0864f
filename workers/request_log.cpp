#include "workers/request_log.hpp"

#include <fmt/format.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/log_format.hpp"
#include "workers/stats_report.hpp"

namespace workers {

namespace {

// The request variables a line can show, from one pass over the packet's vars.
struct RequestFacts {
  std::string_view method, uri, path_info, query, addr, user, proto, uagent, referer, host;
  std::uint32_t vars = 0;
};

RequestFacts facts_of(const server::Request& request) {
  RequestFacts facts;
  server::parse_vars(request.payload, [&facts](std::string_view key, std::string_view value) {
    ++facts.vars;
    if (key.size() < 9 || key.size() > 15) return;  // none of the names below
    if (key == "HTTP_HOST")
      facts.host = value;
    else if (key == "REQUEST_METHOD")
      facts.method = value;
    else if (key == "REQUEST_URI")
      facts.uri = value;
    else if (key == "PATH_INFO")
      facts.path_info = value;
    else if (key == "QUERY_STRING")
      facts.query = value;
    else if (key == "REMOTE_ADDR")
      facts.addr = value;
    else if (key == "REMOTE_USER")
      facts.user = value;
    else if (key == "SERVER_PROTOCOL")
      facts.proto = value;
    else if (key == "HTTP_USER_AGENT")
      facts.uagent = value;
    else if (key == "HTTP_REFERER")
      facts.referer = value;
  });
  return facts;
}

// uWSGI's --log-format writes "-" for an empty user, referer or user agent (Apache's convention).
std::string_view or_dash(std::string_view value) { return value.empty() ? std::string_view("-") : value; }

std::int64_t realtime_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

}  // namespace

ResponseShape shape_of_response(std::string_view head, std::string_view body) {
  ResponseShape shape;
  // The application hands back head and body apart, or everything in `body`.
  std::string_view bytes = head.empty() ? body : head;
  const std::size_t end = bytes.find("\r\n\r\n");
  if (bytes.size() >= 12 && bytes.substr(0, 5) == "HTTP/") {
    const std::size_t space = bytes.find(' ');
    if (space != std::string_view::npos && space + 4 <= bytes.size()) {
      int status = 0;
      for (std::size_t i = space + 1; i < space + 4; ++i) {
        const char c = bytes[i];
        if (c < '0' || c > '9') {
          status = 0;
          break;
        }
        status = status * 10 + (c - '0');
      }
      shape.status = status;
    }
  }
  if (end == std::string_view::npos) {
    shape.body_bytes = head.size() + body.size();
    return shape;
  }
  shape.header_bytes = end + 4;
  for (std::size_t at = bytes.find("\r\n"); at < end; at = bytes.find("\r\n", at + 2)) ++shape.headers;
  shape.body_bytes = head.size() + body.size() - shape.header_bytes;
  return shape;
}

RequestAccounting::RequestAccounting(int worker_id, WorkerSlot* slot, WorkerTotals* totals,
                                     ScoreboardHeader* board, const RequestLogOptions& options)
    : worker_id_(worker_id),
      pid_(getpid()),
      slot_(slot),
      totals_(totals),
      board_(board),
      options_(options),
      wall_offset_ns_(realtime_ns() - common::monotonic_ns()) {
  std::string error;
  // config/ validated the template: a failure here cannot happen, and would only mean the default line.
  if (!options_.format.empty() && !common::parse_log_format(options_.format, pieces_, error)) pieces_.clear();
  line_.reserve(512);
}

void RequestAccounting::flush() {
  if (line_.empty()) return;
  common::log_write_raw(line_);
  line_.clear();
}

std::int64_t RequestAccounting::begin(const server::Request& request) {
  if (request.header.modifier1 == server::kModifierApp && slot_ != nullptr)
    slot_->in_request.fetch_add(1, std::memory_order_relaxed);
  return common::monotonic_ns();
}

void RequestAccounting::handed_off(const server::Request& request) {
  if (request.header.modifier1 == server::kModifierApp && slot_ != nullptr)
    slot_->in_request.fetch_sub(1, std::memory_order_relaxed);
}

void RequestAccounting::finish(const server::Request& request, const server::Reply& reply,
                               std::int64_t started_ns, bool exception) {
  const std::uint64_t micros =
      static_cast<std::uint64_t>(std::max<std::int64_t>(0, common::monotonic_ns() - started_ns)) / 1000;
  const bool app = request.header.modifier1 == server::kModifierApp;
  const std::uint64_t tx = reply.head.size() + reply.body.size();
  if (app && slot_ != nullptr) slot_->in_request.fetch_sub(1, std::memory_order_relaxed);
  if (totals_ == nullptr || board_ == nullptr) return;
  totals_->tx.fetch_add(tx, std::memory_order_relaxed);
  if (!app) {
    totals_->cache_requests.fetch_add(1, std::memory_order_relaxed);
    totals_->durations[static_cast<std::size_t>(cache_request_kind(request.header.modifier2))].observe(
        micros);
    if (!options_.log_cache) return;
    ResponseShape shape;
    shape.body_bytes = tx;
    write_line(request, shape, micros, started_ns, slot_->requests.load(std::memory_order_relaxed),
               board_->total_requests.load(std::memory_order_relaxed));
    return;
  }
  const std::uint64_t worker_requests = totals_->requests.fetch_add(1, std::memory_order_relaxed) + 1;
  const std::uint64_t total = board_->total_requests.fetch_add(1, std::memory_order_relaxed) + 1;
  totals_->running_time_us.fetch_add(micros, std::memory_order_relaxed);
  totals_->durations[static_cast<std::size_t>(RequestKind::app)].observe(micros);
  const ResponseShape shape = shape_of_response(reply.head, reply.body);
  const bool failed = exception || (reply.head.empty() && reply.body.empty());
  if (failed) totals_->exceptions.fetch_add(1, std::memory_order_relaxed);
  if (shape.status >= 400 && shape.status <= 499) totals_->status_4xx.fetch_add(1, std::memory_order_relaxed);
  if (shape.status >= 500 && shape.status <= 599) totals_->status_5xx.fetch_add(1, std::memory_order_relaxed);
  // uWSGI's rule: everything when logging is on; else only what a condition picks.
  const bool log_it = options_.enabled || (options_.slow_ms != 0 && micros / 1000 >= options_.slow_ms) ||
                      (options_.log_4xx && shape.status >= 400 && shape.status <= 499) ||
                      (options_.log_5xx && shape.status >= 500 && shape.status <= 599);
  if (log_it) write_line(request, shape, micros, started_ns, worker_requests, total);
}

void RequestAccounting::write_line(const server::Request& request, const ResponseShape& shape,
                                   std::uint64_t micros, std::int64_t started_ns,
                                   std::uint64_t worker_requests, std::uint64_t total_requests) {
  const RequestFacts facts = facts_of(request);
  const bool app = request.header.modifier1 == server::kModifierApp;
  std::string uri_buffer;
  std::string_view uri = facts.uri;
  std::string_view method = facts.method;
  if (!app) {  // a cache request: its command and key stand for method and URI
    method = kRequestKindNames[static_cast<std::size_t>(cache_request_kind(request.header.modifier2))];
    if (uri.empty()) uri = request.payload.substr(0, std::min<std::size_t>(request.payload.size(), 256));
  } else if (uri.empty()) {
    uri_buffer.append(facts.path_info);
    if (!facts.query.empty()) uri_buffer.append("?").append(facts.query);
    uri = uri_buffer;
  }
  const std::int64_t wall_ns = started_ns + wall_offset_ns_;
  const time_t wall = static_cast<time_t>(wall_ns / 1000000000LL);
  if (wall != dates_second_) {  // the dates change once a second: format them then, not per request
    dates_second_ = wall;
    struct tm local {};
    localtime_r(&wall, &local);
    ctime_len_ = strftime(ctime_, sizeof ctime_, "%a %b %e %H:%M:%S %Y", &local);
    ltime_len_ = strftime(ltime_, sizeof ltime_, "%d/%b/%Y:%H:%M:%S %z", &local);
    ftime_len_ = options_.ftime_format.empty()
                     ? 0
                     : strftime(ftime_, sizeof ftime_, options_.ftime_format.c_str(), &local);
  }
  std::uint64_t vsz = 0, rss = 0;
  if (options_.memory_report) process_memory(pid_, rss, vsz);

  auto out = std::back_inserter(line_);
  if (pieces_.empty()) {
    // uWSGI's default line, field for field (docs/operations.md).
    if (options_.memory_report)
      fmt::format_to(out, "{{address space usage: {} bytes/{}MB}} {{rss usage: {} bytes/{}MB}} ", vsz,
                     vsz >> 20, rss, rss >> 20);
    fmt::format_to(out,
                   "[pid: {}|app: {}|req: {}/{}] {} ({}) {{{} vars in {} bytes}} [{}] {} {} => generated {} "
                   "bytes in {} msecs ({} {}) {} headers in {} bytes (1 switches on core 0)\n",
                   pid_, app ? 0 : -1, worker_requests, total_requests, facts.addr, facts.user, facts.vars,
                   request.payload.size(), std::string_view(ctime_, ctime_len_), method, uri,
                   shape.body_bytes, micros / 1000, app ? facts.proto : std::string_view("uwsgi"),
                   app ? shape.status : static_cast<int>(request.header.modifier1), shape.headers,
                   shape.header_bytes);
  } else {
    for (const common::LogFormatPiece& piece : pieces_) {
      if (!piece.variable) {
        line_.append(piece.text);
        continue;
      }
      const std::string_view v = piece.text;
      if (v == "addr")
        line_.append(facts.addr);
      else if (v == "method")
        line_.append(method);
      else if (v == "uri")
        line_.append(uri);
      else if (v == "status")
        fmt::format_to(out, "{}", shape.status);
      else if (v == "size")
        fmt::format_to(out, "{}", shape.header_bytes + shape.body_bytes);
      else if (v == "rsize")
        fmt::format_to(out, "{}", shape.body_bytes);
      else if (v == "hsize")
        fmt::format_to(out, "{}", shape.header_bytes);
      else if (v == "msecs")
        fmt::format_to(out, "{}", micros / 1000);
      else if (v == "micros")
        fmt::format_to(out, "{}", micros);
      else if (v == "pid")
        fmt::format_to(out, "{}", getpid());
      else if (v == "wid")
        fmt::format_to(out, "{}", worker_id_);
      else if (v == "ltime") {
        line_.append(ltime_, ltime_len_);
      } else if (v == "ftime") {
        if (options_.ftime_format.empty())
          line_.append(ltime_, ltime_len_);
        else
          line_.append(ftime_, ftime_len_);  // empty when the result overflowed, as uWSGI's
      } else if (v == "ctime") {
        line_.append(ctime_, ctime_len_);
      } else if (v == "time" || v == "epoch")
        fmt::format_to(out, "{}", static_cast<long long>(wall));
      else if (v == "tmsecs")
        fmt::format_to(out, "{}", wall_ns / 1000000);
      else if (v == "tmicros")
        fmt::format_to(out, "{}", wall_ns / 1000);
      else if (v == "uagent")
        line_.append(or_dash(facts.uagent));
      else if (v == "referer")
        line_.append(or_dash(facts.referer));
      else if (v == "host")
        line_.append(facts.host);
      else if (v == "proto")
        line_.append(facts.proto);
      else if (v == "user")
        line_.append(or_dash(facts.user));
      else if (v == "vars")
        fmt::format_to(out, "{}", facts.vars);
      else if (v == "pktsize")
        fmt::format_to(out, "{}", request.payload.size());
      else if (v == "headers")
        fmt::format_to(out, "{}", shape.headers);
      else if (v == "switches")
        line_.append("1");
      else if (v == "core")
        line_.append("0");
      else if (v == "rss" || v == "vsz") {
        if (!options_.memory_report) process_memory(pid_, rss, vsz);
        fmt::format_to(out, "{}", v == "rss" ? rss : vsz);
      }
    }
    line_.push_back('\n');
  }
  if (line_.size() >= kFlushBytes) flush();
  totals_->logged_lines.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace workers
