// A cache's default geometry (uWSGI's): the engine's Geometry, config/'s CacheSpec and --cache-* options,
// and the help texts take them from here. Header only, no dependencies: config/ includes it too.
#pragma once

#include <cstdint>

namespace cache {

inline constexpr std::uint64_t kDefaultBlocksize = 65536;  // largest value, bytes
inline constexpr std::uint32_t kDefaultKeysize = 2048;     // longest key, bytes

}  // namespace cache
