// A request body on its way to a file instead of memory (--post-buffering): the loop moves each body
// byte it reads into an unlinked temporary file, so a worker's memory does not grow with what clients
// upload, and the application reads the file once the body is whole (server::Request::body_fd).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace workers {

// Bodies this large and larger go to a file when --post-buffering is not given (smaller ones stay in
// the connection's buffer): a worker holds at most this much of one request in memory.
inline constexpr std::uint64_t kDefaultPostBuffering = std::uint64_t{16} << 20;

class BodySpool {
 public:
  BodySpool() = default;
  BodySpool(const BodySpool&) = delete;
  BodySpool& operator=(const BodySpool&) = delete;
  ~BodySpool() { reset(); }

  bool active() const { return fd_ >= 0; }
  bool complete() const { return active() && written_ == length_; }
  // Why the body could not be spooled (the request is then refused); empty while all is well.
  const std::string& failure() const { return failure_; }
  int fd() const { return fd_; }
  std::size_t head_bytes() const { return head_bytes_; }

  // Opens an unlinked file for a body of `length` bytes that follows the first `head_bytes` bytes of
  // the connection's buffer: in $TMPDIR (else /tmp), as uWSGI does. False with failure() set.
  bool start(std::uint64_t length, std::size_t head_bytes);
  // Appends what the body still lacks from `data`; *taken says how much of it was body. False with
  // failure() set when the file cannot take it (disk full).
  bool take(std::string_view data, std::size_t* taken);
  // The body was handled (or the connection closed): closes the file, which the kernel then frees.
  void reset();

 private:
  int fd_ = -1;
  std::uint64_t length_ = 0;
  std::uint64_t written_ = 0;
  std::size_t head_bytes_ = 0;
  std::string failure_;
};

}  // namespace workers
