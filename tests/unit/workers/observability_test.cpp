#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "common/log.hpp"
#include "common/log_format.hpp"
#include "workers/recycle.hpp"
#include "workers/request_log.hpp"
#include "workers/stats_report.hpp"

namespace {

std::string packet_vars(std::initializer_list<std::pair<std::string, std::string>> vars) {
  std::string out;
  for (const auto& [key, value] : vars) server::append_var(out, key, value);
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

TEST_CASE("parse_log_format splits literals and uWSGI's variables") {
  std::vector<common::LogFormatPiece> pieces;
  std::string error;
  REQUIRE(common::parse_log_format("%(addr) - \"%(method) %(uri)\" %(status)", pieces, error));
  REQUIRE(pieces.size() == 7);
  CHECK(pieces[0].variable);
  CHECK(pieces[0].text == "addr");
  CHECK_FALSE(pieces[1].variable);
  CHECK(pieces[1].text == " - \"");
  CHECK(pieces[6].text == "status");
}

TEST_CASE("parse_log_format names an unknown or unterminated variable and its byte") {
  std::vector<common::LogFormatPiece> pieces;
  std::string error;
  CHECK_FALSE(common::parse_log_format("ok %(nosuch) x", pieces, error));
  CHECK(error.find("%(nosuch) at byte 3") != std::string::npos);
  CHECK_FALSE(common::parse_log_format("%(addr", pieces, error));
  CHECK(error.find("unterminated %( at byte 0") != std::string::npos);
}

TEST_CASE("shape_of_response reads the status and the head's size") {
  const std::string head = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\n";
  const workers::ResponseShape apart = workers::shape_of_response(head, "nope");
  CHECK(apart.status == 404);
  CHECK(apart.headers == 2);
  CHECK(apart.header_bytes == head.size());
  CHECK(apart.body_bytes == 4);
  const workers::ResponseShape together = workers::shape_of_response("", head + "nope");
  CHECK(together.status == 404);
  CHECK(together.header_bytes == head.size());
  CHECK(together.body_bytes == 4);
  const workers::ResponseShape raw = workers::shape_of_response("", "no http here");
  CHECK(raw.status == 0);
  CHECK(raw.body_bytes == 12);
}

TEST_CASE("RequestAccounting counts into the scoreboard and writes uWSGI's line once per request") {
  workers::Scoreboard board = workers::Scoreboard::create(1, 2, 0);
  workers::WorkerSlot& slot = board.slot(0);
  workers::WorkerTotals& totals = board.totals(1);
  char path[] = "/tmp/ucached-reqlog-XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::string error;
  REQUIRE(common::log_requests_to_file(path, error));

  workers::RequestAccounting accounting(1, &slot, &totals, &board.header(), workers::RequestLogOptions{});
  const std::string vars = packet_vars({{"REQUEST_METHOD", "GET"},
                                        {"REQUEST_URI", "/a?b=1"},
                                        {"REMOTE_ADDR", "10.0.0.1"},
                                        {"SERVER_PROTOCOL", "HTTP/1.1"},
                                        {"HTTP_HOST", "example"}});
  server::Request request;
  request.header.modifier1 = server::kModifierApp;
  request.payload = vars;
  server::Reply reply;
  reply.body = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  const std::int64_t started = accounting.begin(request);
  CHECK(slot.in_request.load() == 1);
  accounting.finish(request, reply, started, false);
  CHECK(slot.in_request.load() == 0);
  CHECK(totals.requests.load() == 1);
  CHECK(board.header().total_requests.load() == 1);
  CHECK(totals.tx.load() == reply.body.size());
  CHECK(totals.exceptions.load() == 0);
  std::uint64_t in_histogram = 0;
  for (const auto& bucket : totals.durations[0].buckets) in_histogram += bucket.load();
  CHECK(in_histogram == 1);

  // A cache request: counted apart, timed under its command, not logged by default.
  server::Request cache_request;
  cache_request.header.modifier1 = server::kModifierCache;
  cache_request.header.modifier2 = 0;
  cache_request.payload = "key";
  accounting.finish(cache_request, server::Reply{}, accounting.begin(cache_request), false);
  CHECK(totals.cache_requests.load() == 1);
  CHECK(totals.requests.load() == 1);
  std::uint64_t gets = 0;
  for (const auto& bucket : totals.durations[static_cast<std::size_t>(workers::RequestKind::get)].buckets)
    gets += bucket.load();
  CHECK(gets == 1);

  CHECK(read_file(path).empty());  // buffered until the worker's pass ends
  accounting.flush();
  const std::string text = read_file(path);
  unlink(path);
  INFO(text);
  CHECK(std::count(text.begin(), text.end(), '\n') == 1);
  CHECK(text.rfind(fmt::format("[pid: {}|app: 0|req: 1/1] 10.0.0.1 () {{5 vars in {} bytes}} [", getpid(),
                               vars.size()),
                   0) == 0);
  CHECK(text.find("] GET /a?b=1 => generated 2 bytes in 0 msecs (HTTP/1.1 200) 1 headers in 38 bytes (1 "
                  "switches on core 0)\n") != std::string::npos);
}

TEST_CASE("the stats JSON escapes names and has uWSGI's top-level keys") {
  workers::Scoreboard board = workers::Scoreboard::create(2, 4, 1);
  cache::CacheSet caches;
  cache::Geometry geometry;
  geometry.name = "we\"ird\\name";
  geometry.items = 10;
  caches.add(cache::Cache::create(geometry));
  workers::StatsContext context;
  context.board = &board;
  context.caches = &caches;
  context.processes = 2;
  context.version = "test";
  const std::string json = workers::stats_json(context);
  CHECK(json.find("\"name\":\"we\\\"ird\\\\name\"") != std::string::npos);
  for (const char* key :
       {"\"version\"", "\"listen_queue\"", "\"locks\"", "\"caches\"", "\"sockets\"", "\"workers\""})
    CHECK(json.find(key) != std::string::npos);
  const std::string metrics = workers::prometheus_metrics(context);
  CHECK(metrics.find("ucached_cache_items{cache=\"we\\\"ird\\\\name\"} 0\n") != std::string::npos);
  CHECK(metrics.find("ucached_app_request_duration_seconds_bucket{app=\"0\",le=\"+Inf\"} 0\n") !=
        std::string::npos);
}

TEST_CASE("resident_bytes: this process's RSS as /proc/self/status says it, from a kept descriptor") {
  // Touch 8 MiB so the RSS moves by more than the noise between the two readings.
  std::string ballast(8u << 20, 'x');
  const int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  const std::uint64_t first = workers::resident_bytes_from(fd);
  std::uint64_t status_kb = 0;
  {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("VmRSS:", 0) == 0) status_kb = std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  const std::uint64_t again = workers::resident_bytes_from(fd);  // the same descriptor reads anew
  close(fd);
  REQUIRE(status_kb > 8192);
  CHECK(first >= (8u << 20));
  CHECK(first / 1024 <= status_kb + 1024);
  CHECK(status_kb <= again / 1024 + 1024);
  CHECK(workers::resident_bytes(0) >= (8u << 20));
  CHECK(workers::resident_bytes(getpid()) >= (8u << 20));
  CHECK(workers::resident_bytes_from(-1) == 0);
  CHECK(ballast[12345] == 'x');
}
