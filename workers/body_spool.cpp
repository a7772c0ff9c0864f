#include "workers/body_spool.hpp"

#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace workers {

bool BodySpool::start(std::uint64_t length, std::size_t head_bytes) {
  reset();
  const char* env = std::getenv("TMPDIR");
  const std::string dir = env != nullptr && *env != '\0' ? env : "/tmp";
  // O_TMPFILE: the file never has a name, so nothing is left behind whatever kills the worker.
  fd_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd_ < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    std::string name = dir + "/ucached-body-XXXXXX";  // a file system without O_TMPFILE
    fd_ = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd_ >= 0) ::unlink(name.c_str());
  }
  if (fd_ < 0) {
    failure_ = fmt::format("cannot create a file in {} for a request body of {} bytes (post-buffering): {}",
                           dir, length, std::strerror(errno));
    return false;
  }
  length_ = length;
  written_ = 0;
  head_bytes_ = head_bytes;
  return true;
}

bool BodySpool::take(std::string_view data, std::size_t* taken) {
  const std::size_t wanted =
      static_cast<std::size_t>(std::min<std::uint64_t>(length_ - written_, data.size()));
  std::size_t done = 0;
  while (done < wanted) {
    const ssize_t n = ::write(fd_, data.data() + done, wanted - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      failure_ =
          fmt::format("cannot write a request body to its file after {} of {} bytes (post-buffering): {}",
                      written_ + done, length_, n < 0 ? std::strerror(errno) : "no progress");
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  written_ += done;
  *taken = done;
  return true;
}

void BodySpool::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  failure_.clear();
  length_ = written_ = 0;
  head_bytes_ = 0;
}

}  // namespace workers
