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

// modifier2 values of modifier1 111.
enum class CacheCommand : std::uint8_t {
  get = 0,           // raw key → [111, vallen, 0] + value
  set = 1,           // array [key, value] → never replies
  del = 2,           // raw key → never replies
  dict_get = 3,      // vars key/get → raw value (or the 404 page for `get`)
  dict_get_alt = 4,  // same as 3
  stream_get = 5,    // raw key → [111,0,0,1] + value, or [111,0,0,0]
  dump = 6,          // raw cache name → [111, L, 7] + vars + image
  dump_reply = 7,    // modifier2 of the dump reply
  magic = 17,        // vars cmd/key/cache/size/expires (+ body) → [111, L, 17] + vars (+ value)
};

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
