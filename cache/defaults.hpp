// A cache's default geometry (uWSGI's): the engine's Geometry, config/'s CacheSpec and --cache-* options,
// and the help texts take them from here. Header only, no dependencies: config/ includes it too.
#pragma once

#include <cstdint>

namespace cache {

inline constexpr std::uint64_t kDefaultBlocksize = 65536;  // largest value, bytes
inline constexpr std::uint32_t kDefaultKeysize = 2048;     // longest key, bytes
// The largest value any cache stores (blocksize, or blocksize x blocks in bitmap mode, is at most this):
// what a reply's size var may announce, and the bound of the blocksize option.
inline constexpr std::uint64_t kMaxValueBytes = std::uint64_t{1} << 30;

}  // namespace cache
