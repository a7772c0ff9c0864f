#include "workers/recycle.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <fstream>

namespace workers {

std::uint64_t max_requests_for(int id, std::uint64_t max_requests, std::uint64_t delta) {
  if (max_requests == 0) return 0;
  return max_requests + static_cast<std::uint64_t>(id - 1) * delta;
}

std::uint64_t resident_bytes(pid_t pid) {
  std::ifstream statm(pid == 0 ? std::string("/proc/self/statm") : fmt::format("/proc/{}/statm", pid));
  std::uint64_t size_pages = 0, resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

std::string Recycler::due(std::uint64_t requests, std::int64_t now_ms) {
  const bool served = requests != last_requests_;
  last_requests_ = requests;
  if (policy_.max_requests != 0 && requests >= policy_.max_requests)
    return fmt::format("max requests reached ({} >= {})", requests, policy_.max_requests);
  if (policy_.reload_on_rss_bytes != 0 && served) {
    const std::uint64_t rss = resident_bytes(0);
    if (rss >= policy_.reload_on_rss_bytes)
      return fmt::format("reload-on-rss reached ({} >= {})", rss, policy_.reload_on_rss_bytes);
  }
  if (policy_.max_lifetime_ms != 0 && now_ms - started_ms_ >= policy_.max_lifetime_ms)
    return fmt::format("lifetime reached, it was running for {} second(s)", (now_ms - started_ms_) / 1000);
  return {};
}

}  // namespace workers
