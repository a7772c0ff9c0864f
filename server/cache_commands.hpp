// The modifier1 111 cache commands, one function per modifier2 (spec §2). Each fills `reply` (left
// empty for "close without a reply") and, on a failure or an oddity, `note` with a one-line reason;
// misses leave the note empty because they are normal.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cache/cache.hpp"
#include "server/protocol.hpp"

namespace server {

// Buffers reused across requests so a hit does not allocate once they have grown.
struct CacheScratch {
  std::string value;
  std::string vars;
  std::vector<std::string> keys;
};

// The 404 page uWSGI writes for a dictionary `get` miss (modifier2 3/4), byte for byte.
inline constexpr std::string_view kDictGetNotFound =
    "HTTP/1.0 404 Not Found\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\nNot Found";

// Handles one modifier1 111 request. reply must be cleared by the caller.
void handle_cache_request(cache::CacheSet& caches, const Request& request, Reply& reply,
                          CacheScratch& scratch, std::string& note);

}  // namespace server
