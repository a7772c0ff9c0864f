#include "common/log.hpp"

#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace common {

namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::info)};
}

void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }

bool log_enabled(LogLevel level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void log_write(std::string_view message) {
  struct timeval now {};
  gettimeofday(&now, nullptr);
  struct tm local {};
  localtime_r(&now.tv_sec, &local);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &local);
  std::string line = fmt::format("[{}] [pid {}] {}\n", stamp, getpid(), message);
  const char* data = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report a failing log
    }
    data += n;
    left -= static_cast<size_t>(n);
  }
}

bool RateLimitedLog::allow(unsigned long long* suppressed) {
  std::lock_guard<std::mutex> lock(mutex_);
  long long now = static_cast<long long>(time(nullptr));
  if (now - window_start_ >= static_cast<long long>(interval_seconds_)) {
    window_start_ = now;
    in_window_ = 0;
  }
  if (in_window_ < per_interval_) {
    ++in_window_;
    *suppressed = dropped_;
    dropped_ = 0;
    return true;
  }
  ++dropped_;
  return false;
}

void RateLimitedLog::log(std::string_view line) {
  unsigned long long suppressed = 0;
  if (allow(&suppressed)) log_write(std::string(line) + suppressed_note(suppressed));
}

std::string RateLimitedLog::suppressed_note(unsigned long long suppressed) {
  return suppressed == 0 ? std::string() : fmt::format(" ({} similar messages suppressed)", suppressed);
}

}  // namespace common
