// --cache-sync ADDR / sync=ADDR;ADDR...: at start, fill a cache from the dump (modifier2 6) of another
// node, ours or uWSGI 2.0, as uWSGI's cache-sync does. Ours is item based: the two caches need not have
// the same geometry; an item that does not fit this cache is skipped and counted, never truncated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cache/cache.hpp"

namespace server {

struct SyncResult {
  bool ok = false;
  std::string node;           // the node the items came from
  std::uint64_t loaded = 0;   // items stored
  std::uint64_t expired = 0;  // items already expired: not stored
  std::uint64_t skipped = 0;  // items that do not fit this cache (key or value too long, cache full)
  std::string error;          // when !ok: why every node failed
};

// Asks each node in order for the dump of the cache named like `cache` and loads the first readable
// one. Logs uWSGI's [cache-sync] lines. Nodes: "host:port" or a UNIX socket path.
SyncResult sync_cache_from_nodes(cache::Cache& cache, const std::vector<std::string>& nodes, int timeout_ms);

}  // namespace server
