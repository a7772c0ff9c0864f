// What every fuzz target shares: a property check that stops the run with the reason (libFuzzer then
// saves the input as a crash artifact), whatever the build type (NDEBUG does not disable it).
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace fuzz {

// The process's stderr as it was at start: targets whose code logs run with -close_fd_mask=2, and a
// violated property must still be reported.
inline const int report_fd = dup(STDERR_FILENO);

// True when `part` lies inside `whole` (a view the parser returned points into the input, never
// elsewhere).
inline bool within(std::string_view whole, std::string_view part) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

}  // namespace fuzz

#define FUZZ_CHECK(condition)                                                                     \
  do {                                                                                            \
    if (!(condition)) {                                                                           \
      dprintf(fuzz::report_fd, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                               \
    }                                                                                             \
  } while (0)
