// The workers' shared queue of ready application requests (docs/architecture.md, "Scheduling
// application requests"): when every worker's application threads are busy, a saturated worker keeps
// accepting, answers cache requests itself and sends each complete application request (its socket,
// passed with SCM_RIGHTS, and the bytes already read from it) into this queue; a worker with a free
// thread takes the oldest. One AF_UNIX SOCK_SEQPACKET socket pair per generation of workers, made by
// the master before forking: every worker sends on one end and receives on the other, and the kernel
// hands each message to exactly one receiver, so the socket's queue is the FIFO itself, with no
// coordinator. A message is one whole request (seqpacket keeps boundaries); a request too large for one
// stays with the worker that read it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

struct iovec;

namespace workers {

// Request bytes one message carries at most (a message must fit the socket's send buffer whole); a
// larger request waits for the threads of the worker that read it.
inline constexpr std::size_t kHandoffMaxBytes = 64 * 1024;

// One message on a UNIX socket: the bytes of `iov` and the descriptors `fds` (SCM_RIGHTS), without
// blocking. Returns sendmsg's result (errno set on -1).
long send_with_descriptors(int socket, const struct iovec* iov, int iov_count, const int* fds, int fd_count);

// The master's half: a new pair for the next generation of workers (fds[0] sends, fds[1] receives;
// both non-blocking and close-on-exec). False with errno set.
bool make_handoff_pair(int fds[2]);

class HandoffChannel {
 public:
  enum class Sent { sent, full, failed };
  struct Received {
    int fd = -1;                 // the client's socket, now this process's
    std::uint16_t listener = 0;  // index of the listener it was accepted on (the workers' common order)
    std::size_t bytes = 0;       // request bytes written where receive() was asked to put them
  };

  HandoffChannel() = default;
  HandoffChannel(int send_fd, int receive_fd) : send_fd_(send_fd), receive_fd_(receive_fd) {}
  bool enabled() const { return send_fd_ >= 0 && receive_fd_ >= 0; }
  int receive_fd() const { return receive_fd_; }

  // Queues a request: `fd` (the caller still closes its own copy after `sent`), the listener's index,
  // the bytes read so far (at most kHandoffMaxBytes). `full`: the queue holds as much as it can now.
  Sent send(int fd, std::uint16_t listener, std::string_view bytes) const;
  enum class Taken { request, empty, dropped };
  // Takes the oldest request: its first `room` bytes into `into`, the rest into `overflow` (room for
  // kHandoffMaxBytes), so a typical request lands in the connection's own buffer with no copy.
  // `empty`: nothing queued (or the socket failed: *error set). `dropped`: a malformed message, its
  // descriptors closed (*error says so); the next may be fine.
  Taken receive(char* into, std::size_t room, char* overflow, Received& out, const char** error) const;
  // Whether a request is waiting (without taking it).
  bool queued() const;

 private:
  int send_fd_ = -1;
  int receive_fd_ = -1;
};

}  // namespace workers
