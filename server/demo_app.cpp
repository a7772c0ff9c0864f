// The built-in application for modifier1 0: enough to see the server answer through nginx and to read
// the default cache, until the Python host is configured.
#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <thread>

#include "server/dispatcher.hpp"

namespace server {

namespace {

inline constexpr std::string_view kCachePrefix = "/cache/";
inline constexpr std::string_view kSleepPrefix = "/sleep/";
inline constexpr unsigned kMaxSleepMs = 60000;

class DemoApplication final : public Application {
 public:
  explicit DemoApplication(cache::CacheSet& caches) : caches_(caches) {}

  void handle(const Request& request, Reply& reply) override {
    std::string_view method;
    std::string_view path;
    std::string_view protocol = "HTTP/1.0";  // uWSGI's default when SERVER_PROTOCOL is absent
    VarsReader reader(request.payload);
    std::string_view key;
    std::string_view value;
    while (reader.next(key, value)) {
      if (key == "REQUEST_METHOD") {
        method = value;
      } else if (key == "PATH_INFO") {
        path = value;
      } else if (key == "SERVER_PROTOCOL" && !value.empty()) {
        protocol = value;
      }
    }
    const bool head_only = method == "HEAD";
    if (method != "GET" && !head_only)
      return respond(reply, protocol, "404 Not Found", "text/plain", "Not Found\n", false);
    if (path == "/")
      return respond(reply, protocol, "200 OK", "text/plain; charset=utf-8", home_page(), head_only);
    if (path.starts_with(kSleepPrefix)) {
      // A deliberately slow request: shows what --harakiri and graceful stops do with a stuck worker
      // (the demo app runs on the worker's loop, so the whole worker is stuck while it sleeps).
      std::string_view digits = path.substr(kSleepPrefix.size());
      unsigned ms = 0;
      auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), ms);
      if (error != std::errc() || end != digits.data() + digits.size() || ms > kMaxSleepMs) {
        return respond(reply, protocol, "400 Bad Request", "text/plain",
                       fmt::format("expected /sleep/<milliseconds up to {}>\n", kMaxSleepMs), head_only);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      return respond(reply, protocol, "200 OK", "text/plain", fmt::format("slept {} ms\n", ms), head_only);
    }
    if (path.starts_with(kCachePrefix) && path.size() > kCachePrefix.size()) {
      cache::Cache* cache = caches_.default_cache();
      std::string stored;  // per call: the worker may run the application on several threads at once
      if (cache != nullptr && cache->get(path.substr(kCachePrefix.size()), stored) == cache::Status::ok) {
        return respond(reply, protocol, "200 OK", "application/octet-stream", stored, head_only);
      }
    }
    respond(reply, protocol, "404 Not Found", "text/plain", "Not Found\n", head_only);
  }

 private:
  static void respond(Reply& reply, std::string_view protocol, std::string_view status,
                      std::string_view content_type, std::string_view body, bool head_only) {
    fmt::format_to(std::back_inserter(reply.body), "{} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
                   protocol, status, content_type, body.size());
    if (!head_only) reply.body.append(body);
  }

  std::string home_page() const {
    std::string page =
        "ucached: a preforking application server with a shared-memory cache, speaking uWSGI's protocol.\n"
        "This is the built-in demo application (modifier1 0); no Python application is configured.\n\n";
    if (caches_.empty()) {
      page += "No cache is configured (try --cache2 name=default,items=100).\n";
    } else {
      for (const auto& cache : caches_.all()) {
        const cache::Stats stats = cache->stats();
        fmt::format_to(
            std::back_inserter(page),
            "cache \"{}\"{}: {} of {} items, {} hits, {} misses, {} full, {} evictions, {} expired\n",
            cache->geometry().name, cache.get() == caches_.all().front().get() ? " (default)" : "",
            stats.items, stats.capacity, stats.hits, stats.misses, stats.full, stats.evictions,
            stats.expirations);
      }
    }
    page +=
        "\nTry:\n"
        "  GET /cache/<key>   the value of <key> in the default cache (404 if absent)\n"
        "  GET /sleep/<ms>    answer after sleeping (the worker is stuck meanwhile: try --harakiri)\n"
        "  store one from the uWSGI Python API (uwsgi.cache_set) or with a modifier1 111 modifier2 17 set:\n"
        "  printf "
        "'\\x6f\\x1c\\x00\\x11\\x03\\x00cmd\\x03\\x00set\\x03\\x00key\\x02\\x00m1\\x04\\x00size\\x01\\x005hel"
        "lo'"
        " | nc -q1 <host> <port>\n";
    return page;
  }

  cache::CacheSet& caches_;  // read-only here: find/default_cache/all do not mutate the set
};

}  // namespace

std::unique_ptr<Application> make_demo_application(cache::CacheSet& caches) {
  return std::make_unique<DemoApplication>(caches);
}

}  // namespace server
