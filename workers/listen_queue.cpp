// How many connections wait in a listening socket's accept queue, read live from the kernel's
// sock_diag netlink interface (what `ss -l` shows as Recv-Q), by the socket's inode. Not through the
// listening fd: the stats process closes its copies of the listening sockets (it must not keep their
// ports bound), and a number it reused for a client would report that client. uWSGI reads TCP from
// TCP_INFO in its master and UNIX sockets with an ioctl (SIOBKLGQ) only Unbit's patched kernel has, so
// a stock kernel's uWSGI reports 0 for them; sock_diag answers for both (docs/differences.md).
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <optional>

#include "workers/stats_report.hpp"

namespace workers {

namespace {

constexpr std::uint32_t kListenState = 10;  // TCP_LISTEN in the kernel's socket states (UNIX sockets too)

// Sends one sock_diag request and hands every answer message to `take` until it returns a value, the
// dump ends or the kernel errs (then nullopt).
template <typename Request, typename Take>
std::optional<std::uint32_t> ask(const Request& request, bool dump, Take take) {
  const int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return std::nullopt;
  struct {
    nlmsghdr header;
    Request request;
  } query{};
  query.header.nlmsg_len = sizeof query;
  query.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  query.header.nlmsg_flags = static_cast<std::uint16_t>(NLM_F_REQUEST | (dump ? NLM_F_DUMP : 0));
  query.request = request;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  std::optional<std::uint32_t> found;
  if (sendto(nl, &query, sizeof query, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) ==
      static_cast<ssize_t>(sizeof query)) {
    alignas(nlmsghdr) char answer[16384];
    bool done = false;
    while (!done && !found) {
      ssize_t got = recv(nl, answer, sizeof answer, 0);
      if (got <= 0) break;
      for (auto* message = reinterpret_cast<nlmsghdr*>(answer);
           NLMSG_OK(message, static_cast<std::size_t>(got)); message = NLMSG_NEXT(message, got)) {
        if (message->nlmsg_type == NLMSG_DONE || message->nlmsg_type == NLMSG_ERROR) {
          done = true;
          break;
        }
        found = take(*message);
        if (found || !dump) {
          done = true;
          break;
        }
      }
    }
  }
  close(nl);
  return found;
}

// UNIX: an exact lookup by inode; a listening socket's receive queue holds its unaccepted connections.
std::uint32_t unix_listen_queue(std::uint64_t inode) {
  unix_diag_req request{};
  request.sdiag_family = AF_UNIX;
  request.udiag_states = 1U << kListenState;
  request.udiag_ino = static_cast<std::uint32_t>(inode);
  request.udiag_show = UDIAG_SHOW_RQLEN;
  request.udiag_cookie[0] = request.udiag_cookie[1] = INET_DIAG_NOCOOKIE;
  return ask(request, false,
             [](const nlmsghdr& message) -> std::optional<std::uint32_t> {
               const auto* diag = static_cast<const unix_diag_msg*>(NLMSG_DATA(&message));
               int left = static_cast<int>(message.nlmsg_len) - static_cast<int>(NLMSG_LENGTH(sizeof *diag));
               for (auto* attr = reinterpret_cast<const rtattr*>(diag + 1); RTA_OK(attr, left);
                    attr = RTA_NEXT(attr, left)) {
                 if (attr->rta_type != UNIX_DIAG_RQLEN || RTA_PAYLOAD(attr) < sizeof(unix_diag_rqlen))
                   continue;
                 unix_diag_rqlen lengths{};
                 std::memcpy(&lengths, RTA_DATA(attr), sizeof lengths);
                 return lengths.udiag_rqueue;
               }
               return std::nullopt;
             })
      .value_or(0);
}

// TCP: the listening sockets of both families, the one with this inode; for a listener the kernel's
// idiag_rqueue is its accept queue's length.
std::uint32_t tcp_listen_queue(std::uint64_t inode) {
  for (const std::uint8_t family : {AF_INET, AF_INET6}) {
    inet_diag_req_v2 request{};
    request.sdiag_family = family;
    request.sdiag_protocol = IPPROTO_TCP;
    request.idiag_states = 1U << kListenState;
    const auto queued = ask(request, true, [inode](const nlmsghdr& message) -> std::optional<std::uint32_t> {
      const auto* diag = static_cast<const inet_diag_msg*>(NLMSG_DATA(&message));
      if (diag->idiag_inode != inode) return std::nullopt;
      return diag->idiag_rqueue;
    });
    if (queued) return *queued;
  }
  return 0;
}

}  // namespace

std::uint64_t socket_inode(int fd) {
  struct stat st {};
  return fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_ino) : 0;
}

std::uint32_t listen_queue_of(const StatsSocket& socket) {
  if (socket.inode == 0) return 0;
  return socket.is_unix ? unix_listen_queue(socket.inode) : tcp_listen_queue(socket.inode);
}

}  // namespace workers
