#include "master/test_hooks.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "common/log.hpp"

namespace master {

namespace {

// The byte waiting in the FIFO, 0 when there is none (or the FIFO cannot be opened).
char take_request(const char* fifo) {
  const int fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return 0;
  char byte = 0;
  if (read(fd, &byte, 1) != 1) byte = 0;
  close(fd);
  return byte;
}

// Blocks until the test writes again or closes its end (a test that dies releases the server).
void hold(const char* fifo) {
  const int fd = open(fifo, O_RDONLY | O_CLOEXEC);  // the test holds a writer: does not block
  if (fd < 0) return;
  char byte = 0;
  while (read(fd, &byte, 1) < 0 && errno == EINTR) {
  }
  close(fd);
}

}  // namespace

void store_sync_test_hook(std::string_view cache, SyncPoint point) {
  static const char* const fifo = std::getenv(kHoldStoreSyncEnv);
  if (fifo == nullptr) return;
  static char asked = 0;  // this sync's request, read at its first point
  if (point == SyncPoint::before_msync) asked = take_request(fifo);
  if (asked != static_cast<char>(point)) return;
  common::log("store sync: cache \"{}\": held {} the msync (test hook)", cache,
              point == SyncPoint::before_msync ? "before" : "after");
  hold(fifo);
}

}  // namespace master
