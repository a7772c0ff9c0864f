#include "workers/handoff.hpp"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace workers {

namespace {

constexpr std::uint32_t kHandoffMagic = 0x55484f31;  // "UHO1": a message of this layout
// Room the queue asks for: a few hundred typical requests (a message costs its bytes plus about 1 KiB
// of kernel bookkeeping). The kernel caps it at net.core.wmem_max; a full queue keeps requests local.
constexpr int kHandoffQueueBytes = 4 << 20;

struct MessageHead {
  std::uint32_t magic;
  std::uint16_t listener;
  std::uint16_t reserved;
};

// Ancillary room for one descriptor; more in a message is malformed (and closed).
constexpr std::size_t kControlBytes = CMSG_SPACE(sizeof(int) * 4);

void close_passed(msghdr& msg) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      ::close(fd);
    }
  }
}

}  // namespace

bool make_handoff_pair(int fds[2]) {
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) return false;
  const int bytes = kHandoffQueueBytes;
  setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);  // best effort: capped by the kernel
  return true;
}

long send_with_descriptors(int socket, const iovec* iov, int iov_count, const int* fds, int fd_count) {
  alignas(cmsghdr) char control[kControlBytes] = {};
  if (fd_count < 0 || CMSG_SPACE(sizeof(int) * static_cast<std::size_t>(fd_count)) > sizeof control) {
    errno = EINVAL;
    return -1;
  }
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<std::size_t>(iov_count);
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * static_cast<std::size_t>(fd_count));
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * static_cast<std::size_t>(fd_count));
  std::memcpy(CMSG_DATA(c), fds, sizeof(int) * static_cast<std::size_t>(fd_count));
  ssize_t n;
  do {
    n = ::sendmsg(socket, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

HandoffChannel::Sent HandoffChannel::send(int fd, std::uint16_t listener, std::string_view bytes) const {
  MessageHead head{kHandoffMagic, listener, 0};
  const iovec iov[2] = {{&head, sizeof head}, {const_cast<char*>(bytes.data()), bytes.size()}};
  if (send_with_descriptors(send_fd_, iov, bytes.empty() ? 1 : 2, &fd, 1) >= 0) return Sent::sent;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS ? Sent::full : Sent::failed;
}

HandoffChannel::Taken HandoffChannel::receive(char* into, std::size_t room, char* overflow, Received& out,
                                              const char** error) const {
  MessageHead head{};
  room = std::min(room, kHandoffMaxBytes);  // a message never carries more: larger ones are truncated
  iovec iov[3] = {{&head, sizeof head}, {into, room}, {overflow, kHandoffMaxBytes - room}};
  alignas(cmsghdr) char control[kControlBytes];
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = 3;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(receive_fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) *error = std::strerror(errno);
    return Taken::empty;
  }
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  const bool one_fd = c != nullptr && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
                      c->cmsg_len == CMSG_LEN(sizeof(int)) && CMSG_NXTHDR(&msg, c) == nullptr;
  if (static_cast<std::size_t>(n) < sizeof head || head.magic != kHandoffMagic || !one_fd ||
      (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    close_passed(msg);
    *error = "malformed hand-off message dropped";
    return Taken::dropped;
  }
  std::memcpy(&out.fd, CMSG_DATA(c), sizeof out.fd);
  out.listener = head.listener;
  out.bytes = static_cast<std::size_t>(n) - sizeof head;
  return Taken::request;
}

bool HandoffChannel::queued() const {
  MessageHead head;
  ssize_t n;
  do {
    n = ::recv(receive_fd_, &head, sizeof head, MSG_DONTWAIT | MSG_PEEK);
  } while (n < 0 && errno == EINTR);
  return n > 0;
}

}  // namespace workers
