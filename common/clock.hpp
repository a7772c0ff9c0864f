// The one monotonic clock (CLOCK_MONOTONIC) of every room: the engine's LRU stamps, the workers'
// deadlines and the scoreboard's busy_since_ms, which the master reads against its own reading.
#pragma once

#include <time.h>

#include <cstdint>

namespace common {

inline std::int64_t monotonic_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

inline std::int64_t monotonic_ms() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace common
