#include "common/log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace common {

namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::info)};

// --logto and its rotation. Set once at start-up, before any thread or fork.
struct LogFile {
  std::string path;
  std::string backup;
  std::uint64_t max_bytes = 0;
  std::mutex mutex;  // one rotation at a time within a process (a POSIX lock orders the processes)
};
LogFile g_file;
int g_request_fd = -1;  // --req-logger file:PATH; -1 = request lines go to the log

void write_all(int fd, const char* data, size_t left) {
  while (left > 0) {
    ssize_t n = ::write(fd, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report a failing log
    }
    data += n;
    left -= static_cast<size_t>(n);
  }
}

// Points stdout and stderr at a freshly opened `path`.
bool open_onto_stdio(const std::string& path, std::string& error) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    error = fmt::format("cannot open the log file {}: {}", path, std::strerror(errno));
    return false;
  }
  dup2(fd, STDOUT_FILENO);
  dup2(fd, STDERR_FILENO);
  ::close(fd);
  return true;
}

// Whole-file POSIX lock on the log the process writes to. Not flock: the master and the workers it
// forked share one open file description of the log, and flock locks belong to that description, so
// two of them would both "hold" it and rotate the same file at once (one renaming the other's fresh
// file over the rotated one: its lines lost). POSIX locks belong to the process.
bool lock_log_file(short type) {
  struct flock whole {};
  whole.l_type = type;
  whole.l_whence = SEEK_SET;
  while (fcntl(STDERR_FILENO, F_SETLKW, &whole) != 0) {
    if (errno != EINTR) return false;
  }
  return true;
}

// A name beside `path` for files in the making: hidden, so that no glob of `path.*` (a log shipper's, a
// test's) takes it for a rotated file.
std::string scratch_name(const std::string& path, const char* what) {
  const std::size_t slash = path.rfind('/');
  const std::size_t base = slash == std::string::npos ? 0 : slash + 1;
  return fmt::format("{}.{}.{}-{}", path.substr(0, base), path.substr(base), what, getpid());
}

// Gives the current log (still named `path`) the rotated name too: a hard link, so that `path` is never
// missing for a reader. uWSGI's FILE.<unix time>, and a second rotation within the same second gets .1,
// .2 ... instead of replacing the first (its lines would be lost); --log-backupname is one file, replaced
// each time. False when the file system has no hard links.
bool link_rotated_name(const std::string& path) {
  if (!g_file.backup.empty()) {
    const std::string scratch = scratch_name(path, "rotated");
    ::unlink(scratch.c_str());
    if (::link(path.c_str(), scratch.c_str()) != 0) return false;
    if (::rename(scratch.c_str(), g_file.backup.c_str()) == 0) return true;
    ::unlink(scratch.c_str());
    return false;
  }
  const std::string stem = fmt::format("{}.{}", path, time(nullptr));
  std::string target = stem;
  for (int n = 1; n < 10000; ++n) {
    if (::link(path.c_str(), target.c_str()) == 0) return true;
    if (errno != EEXIST) return false;
    target = fmt::format("{}.{}", stem, n);
  }
  return false;
}

// The old way, where hard links fail: rename, then the next open creates `path` (missing meanwhile).
void rename_rotated(const std::string& path) {
  std::string target = g_file.backup;
  if (target.empty()) {
    const std::string stem = fmt::format("{}.{}", path, time(nullptr));
    target = stem;
    struct stat taken {};
    for (int n = 1; n < 10000 && ::stat(target.c_str(), &taken) == 0; ++n)
      target = fmt::format("{}.{}", stem, n);
  }
  ::rename(path.c_str(), target.c_str());
}

// After a line: the file reached --log-maxsize, or another process rotated it already.
void rotate_if_due() {
  struct stat mine {};
  if (fstat(STDERR_FILENO, &mine) != 0 || static_cast<std::uint64_t>(mine.st_size) < g_file.max_bytes) return;
  std::lock_guard<std::mutex> lock(g_file.mutex);
  if (!lock_log_file(F_WRLCK)) return;
  struct stat named {};
  const bool same =
      ::stat(g_file.path.c_str(), &named) == 0 && named.st_ino == mine.st_ino && named.st_dev == mine.st_dev;
  int fresh = -1;
  if (same) {
    // The fresh file replaces `path` in one rename, after the old one got its rotated name: a reader
    // (tail -F, a shipper, a test) finds `path` at every moment, the old file or the new one.
    const std::string scratch = scratch_name(g_file.path, "fresh");
    fresh = ::open(scratch.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    const bool linked = fresh >= 0 && link_rotated_name(g_file.path);
    if (!linked || ::rename(scratch.c_str(), g_file.path.c_str()) != 0) {
      if (fresh >= 0) {
        ::unlink(scratch.c_str());
        ::close(fresh);
        fresh = -1;
      }
      if (linked)
        ::unlink(g_file.path.c_str());  // the old file keeps its rotated name; the open below makes `path`
      else
        rename_rotated(g_file.path);
    }
  }
  lock_log_file(F_UNLCK);
  if (fresh >= 0) {
    dup2(fresh, STDOUT_FILENO);
    dup2(fresh, STDERR_FILENO);
    ::close(fresh);
    return;
  }
  std::string error;
  open_onto_stdio(g_file.path, error);  // failing, the lines keep going to the renamed file
}

void emit(const char* data, size_t size) {
  write_all(STDERR_FILENO, data, size);
  if (g_file.max_bytes != 0) rotate_if_due();
}
}  // namespace

bool log_to_file(const std::string& path, std::uint64_t max_bytes, const std::string& backup,
                 std::string& error) {
  if (!open_onto_stdio(path, error)) return false;
  g_file.path = path;
  g_file.max_bytes = max_bytes;
  g_file.backup = backup;
  return true;
}

void log_reopen() {
  if (g_file.path.empty()) return;
  std::lock_guard<std::mutex> lock(g_file.mutex);
  std::string error;
  if (!open_onto_stdio(g_file.path, error)) log_write(error);
}

bool log_requests_to_file(const std::string& path, std::string& error) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    error = fmt::format("cannot open the request log {}: {}", path, std::strerror(errno));
    return false;
  }
  g_request_fd = fd;
  return true;
}

void log_write_raw(std::string_view line) {
  if (g_request_fd >= 0) return write_all(g_request_fd, line.data(), line.size());
  emit(line.data(), line.size());
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
  emit(line.data(), line.size());
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
