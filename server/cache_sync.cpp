#include "server/cache_sync.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <ctime>
#include <string_view>
#include <utility>

#include "common/log.hpp"
#include "server/cache_dump.hpp"
#include "server/client.hpp"
#include "server/protocol.hpp"

namespace server {

namespace {

std::uint64_t number(const ReplyVars& vars, std::string_view name) {
  std::uint64_t value = 0;
  const std::string* text = find_var(vars, name);
  return text != nullptr && parse_decimal(*text, value) ? value : 0;
}

// Loads one node's dump into the cache. False with `error` when the reply cannot be read.
bool load_dump(cache::Cache& cache, const ReplyVars& vars, std::string_view image, SyncResult& result,
               std::string& error) {
  const auto now = static_cast<std::uint64_t>(std::time(nullptr));
  const auto store = [&](std::string_view key, std::string_view value, std::uint64_t expires) {
    if (expires != 0 && expires <= now) {
      ++result.expired;
      return;
    }
    const auto expires_in = static_cast<std::int64_t>(expires == 0 ? 0 : expires - now);
    if (cache.update(key, value, expires_in) == cache::Status::ok)
      ++result.loaded;
    else
      ++result.skipped;
  };
  const std::string* format = find_var(vars, "format");
  if (format != nullptr && *format == kDumpFormat) return parse_dump_image(image, store, &error);
  if (format != nullptr) {
    error = fmt::format("unknown dump format {}", printable(*format));
    return false;
  }
  return parse_uwsgi_dump_image(image, number(vars, "items"), number(vars, "blocksize"), store, &error);
}

}  // namespace

SyncResult sync_cache_from_nodes(cache::Cache& cache, const std::vector<std::string>& nodes, int timeout_ms) {
  SyncResult result;
  const std::string& name = cache.geometry().name;
  std::vector<std::string> failures;
  // A node's dump is held in memory while it loads: refuse one over 4 times what this cache can hold
  // (uWSGI's images carry a keysize slot per item, so a same-size cache's image is somewhat larger)
  // rather than let a misconfigured or hostile node exhaust memory.
  const cache::Geometry& g = cache.geometry();
  const std::uint64_t max_image = std::max<std::uint64_t>(
      std::uint64_t{64} << 20, 4 * (g.items * (kUwsgiItemHeader + g.keysize) + cache::value_capacity(g)));
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const std::string& node = nodes[i];
    common::log("[cache-sync] getting cache dump from {} ...", node);
    ClientOptions options;
    options.timeout_ms = timeout_ms;
    options.persistent = false;
    CacheClient client(node, options);
    ReplyVars vars;
    std::string image;
    const ClientStatus got = client.dump(name, vars, image, max_image);
    std::string error;
    if (got == ClientStatus::ok) {
      const std::uint64_t items = number(vars, "items"), blocksize = number(vars, "blocksize");
      SyncResult attempt;
      if (items != 0 &&
          image.size() > items * (kUwsgiItemHeader + 65536 + blocksize) + number(vars, "bytes")) {
        error = fmt::format("a dump of {} bytes is too large for {} items of {} bytes", image.size(), items,
                            blocksize);
      } else if (load_dump(cache, vars, image, attempt, error)) {
        attempt.ok = true;
        attempt.node = node;
        common::log(
            "[cache-sync] cache \"{}\": {} item(s) loaded from {} ({} expired, {} not fitting this cache)",
            name, attempt.loaded, node, attempt.expired, attempt.skipped);
        return attempt;
      }
      error = fmt::format("{}: {}", node, error);
    } else if (got == ClientStatus::miss) {
      error = fmt::format("{}: no cache named \"{}\" there", node, name);
    } else {
      if (client.last_error().find("bytes allowed") == std::string::npos)
        common::log("[cache-sync] unable to connect to the cache server");
      error = client.last_error();
      if (error.find("bytes allowed") != std::string::npos)
        error += " (4 times what this cache can hold: make it at least as large as the node's)";
    }
    common::log("[cache-sync] {}", error);
    failures.push_back(std::move(error));
    if (i + 1 < nodes.size()) common::log("[cache-sync] trying with the next sync node...");
  }
  result.error =
      fmt::format("cache \"{}\": no sync node gave a usable dump: {}", name, fmt::join(failures, "; "));
  return result;
}

}  // namespace server
