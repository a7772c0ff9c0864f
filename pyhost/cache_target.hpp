// The `cache` argument of the uwsgi module's cache functions ("magic identifier"), taken apart.
// Pure C++ (no Python) so its rules are easy to read and to test.
#pragma once

#include <string_view>

namespace pyhost {

struct CacheTarget {
  bool remote = false;
  std::string_view name;     // local cache name, or the cache on the remote server ("" = default)
  std::string_view address;  // remote only: "host:port", ":port" or a UNIX socket path
};

// ""                   -> the local default cache
// "name"               -> the local cache `name`
// "name@host:port"     -> cache `name` on that server (mod2 17); "@host:port" -> its default cache;
//                         a path after '@' (no ':' or containing '/') is a UNIX socket
// "host:port", "/path" -> that server's default cache: the old docs' `cache_server` form. uWSGI 2.0
//                         looks such a string up as a local cache name (and finds none); a cache
//                         name never contains ':' or '/', so we read it as an address instead.
CacheTarget parse_cache_target(std::string_view spec);

}  // namespace pyhost
