// The workers' shared queue of ready application requests (workers/handoff.hpp): what goes in comes out
// whole, once, in order, with a working descriptor; a full queue says so; a malformed message is dropped
// with its descriptors closed.
#include "workers/handoff.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <string>

namespace {

struct Pair {
  int fds[2] = {-1, -1};
  Pair() { REQUIRE(workers::make_handoff_pair(fds)); }
  ~Pair() {
    for (int fd : fds) ::close(fd);
  }
};

// A connected socket pair standing for a client connection: {ours, the client's}.
struct Client {
  int fds[2] = {-1, -1};
  Client() { REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0); }
  ~Client() {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
};

// Receives into a connection's buffer of `room` bytes and the scratch `overflow`, as a worker does, and
// returns the request's bytes in order.
std::string take(const workers::HandoffChannel& channel, std::size_t room,
                 workers::HandoffChannel::Taken* taken, workers::HandoffChannel::Received& got,
                 const char** error) {
  std::string into(room, '\0');
  auto overflow = std::make_unique<char[]>(workers::kHandoffMaxBytes);
  *taken = channel.receive(into.data(), room, overflow.get(), got, error);
  if (*taken != workers::HandoffChannel::Taken::request) return {};
  if (got.bytes <= room) return into.substr(0, got.bytes);
  return into + std::string(overflow.get(), got.bytes - room);
}

}  // namespace

TEST_CASE("a handed-off request arrives whole, once, in order, with its socket") {
  Pair pair;
  workers::HandoffChannel channel(pair.fds[0], pair.fds[1]);
  REQUIRE(channel.enabled());
  const char* error = nullptr;
  workers::HandoffChannel::Received got;
  workers::HandoffChannel::Taken taken;
  CHECK(!channel.queued());
  CHECK(take(channel, 4096, &taken, got, &error).empty());
  CHECK(taken == workers::HandoffChannel::Taken::empty);
  CHECK(error == nullptr);

  Client first, second;
  const std::string big(workers::kHandoffMaxBytes, 'x');
  REQUIRE(channel.send(first.fds[0], 3, "GET / HTTP/1.1\r\n\r\n") == workers::HandoffChannel::Sent::sent);
  REQUIRE(channel.send(second.fds[0], 0, big) == workers::HandoffChannel::Sent::sent);
  // The sender's copies go; the queued ones keep the connections open.
  ::close(first.fds[0]);
  ::close(second.fds[0]);
  first.fds[0] = second.fds[0] = -1;
  CHECK(channel.queued());

  // Within the connection's buffer.
  CHECK(take(channel, 4096, &taken, got, &error) == "GET / HTTP/1.1\r\n\r\n");
  REQUIRE(taken == workers::HandoffChannel::Taken::request);
  CHECK(got.listener == 3);
  CHECK((fcntl(got.fd, F_GETFD) & FD_CLOEXEC) != 0);
  REQUIRE(::write(got.fd, "hi", 2) == 2);  // the received descriptor is the client's connection
  char reply[2];
  CHECK(::read(first.fds[1], reply, 2) == 2);
  CHECK(std::string(reply, 2) == "hi");
  ::close(got.fd);

  // Larger than the connection's buffer: the rest comes through the scratch buffer, in order.
  CHECK(take(channel, 4096, &taken, got, &error) == big);
  REQUIRE(taken == workers::HandoffChannel::Taken::request);
  CHECK(got.listener == 0);
  ::close(got.fd);
  CHECK(take(channel, 4096, &taken, got, &error).empty());
  CHECK(taken == workers::HandoffChannel::Taken::empty);
  CHECK(!channel.queued());
}

TEST_CASE("a hand-off message over kHandoffMaxBytes is dropped, however large the connection's buffer") {
  Pair pair;
  workers::HandoffChannel channel(pair.fds[0], pair.fds[1]);
  Client client;
  const std::string oversized(workers::kHandoffMaxBytes + 1, 'o');
  REQUIRE(channel.send(client.fds[0], 0, oversized) == workers::HandoffChannel::Sent::sent);
  const char* error = nullptr;
  workers::HandoffChannel::Received got;
  workers::HandoffChannel::Taken taken;
  CHECK(take(channel, 2 * workers::kHandoffMaxBytes, &taken, got, &error).empty());
  CHECK(taken == workers::HandoffChannel::Taken::dropped);
  CHECK(error != nullptr);
}

TEST_CASE("a full hand-off queue says so instead of blocking") {
  Pair pair;
  workers::HandoffChannel channel(pair.fds[0], pair.fds[1]);
  Client client;
  const std::string request(workers::kHandoffMaxBytes, 'r');
  int sent = 0;
  workers::HandoffChannel::Sent status = workers::HandoffChannel::Sent::sent;
  while (sent < 100000 &&
         (status = channel.send(client.fds[0], 0, request)) == workers::HandoffChannel::Sent::sent)
    ++sent;
  CHECK(status == workers::HandoffChannel::Sent::full);
  CHECK(sent > 0);
}

TEST_CASE("a malformed hand-off message is dropped with its descriptors closed") {
  Pair pair;
  workers::HandoffChannel channel(pair.fds[0], pair.fds[1]);
  Client client;
  // Not our layout: a short message carrying two descriptors.
  const int passed = dup(client.fds[0]);
  REQUIRE(passed >= 0);
  const int fds[2] = {passed, passed};
  char junk[3] = {'a', 'b', 'c'};
  const iovec iov{junk, sizeof junk};
  REQUIRE(workers::send_with_descriptors(pair.fds[0], &iov, 1, fds, 2) == static_cast<long>(sizeof junk));
  ::close(passed);

  const char* error = nullptr;
  workers::HandoffChannel::Received got;
  workers::HandoffChannel::Taken taken;
  take(channel, 4096, &taken, got, &error);
  CHECK(taken == workers::HandoffChannel::Taken::dropped);
  CHECK(error != nullptr);
  CHECK(!channel.queued());
  // Every copy of the client's end is closed but ours: closing ours makes its peer read EOF.
  ::close(client.fds[0]);
  client.fds[0] = -1;
  REQUIRE(fcntl(client.fds[1], F_SETFL, O_NONBLOCK) == 0);  // a copy left open would read EAGAIN, not hang
  char byte;
  CHECK(::read(client.fds[1], &byte, 1) == 0);
}
