#include "workers/recycle.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>

namespace workers {

std::uint64_t max_requests_for(int id, std::uint64_t max_requests, std::uint64_t delta) {
  if (max_requests == 0) return 0;
  return max_requests + static_cast<std::uint64_t>(id - 1) * delta;
}

std::uint64_t resident_bytes_from(int statm_fd) {
  char text[128];
  const ssize_t n = statm_fd < 0 ? -1 : pread(statm_fd, text, sizeof text - 1, 0);
  if (n <= 0) return 0;
  text[n] = '\0';
  char* end = nullptr;
  std::strtoull(text, &end, 10);  // size, then the resident pages
  if (end == text) return 0;
  const char* resident = end;
  const std::uint64_t pages = std::strtoull(resident, &end, 10);
  if (end == resident) return 0;
  return pages * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

std::uint64_t resident_bytes(pid_t pid) {
  const std::string path = pid == 0 ? std::string("/proc/self/statm") : fmt::format("/proc/{}/statm", pid);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  const std::uint64_t bytes = resident_bytes_from(fd);
  close(fd);
  return bytes;
}

Recycler::~Recycler() {
  if (statm_fd_ >= 0) close(statm_fd_);
}

std::string Recycler::due(std::uint64_t requests, std::int64_t now_ms) {
  const bool served = requests != last_requests_;
  last_requests_ = requests;
  if (policy_.max_requests != 0 && requests >= policy_.max_requests)
    return fmt::format("max requests reached ({} >= {})", requests, policy_.max_requests);
  if (policy_.reload_on_rss_bytes != 0 && served) {
    if (statm_fd_ < 0) statm_fd_ = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    const std::uint64_t rss = resident_bytes_from(statm_fd_);
    if (rss >= policy_.reload_on_rss_bytes)
      return fmt::format("reload-on-rss reached ({} >= {})", rss, policy_.reload_on_rss_bytes);
  }
  if (policy_.max_lifetime_ms != 0 && now_ms - started_ms_ >= policy_.max_lifetime_ms)
    return fmt::format("lifetime reached, it was running for {} second(s)", (now_ms - started_ms_) / 1000);
  return {};
}

}  // namespace workers
