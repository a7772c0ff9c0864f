// Deterministic kill points for the fork + SIGKILL tests: a child tells its parent, through a pipe,
// that it has reached the moment to be killed (usually inside a mutation, through the engine's
// mutation hook), and the parent kills it then. No timer decides where a kill lands, so every run on
// every build and machine speed kills writers inside mutations.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <new>

namespace cachetest {

// In a forked child: die with the parent, so that a failed test leaves no child waiting for a SIGKILL.
inline void die_with_parent(pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(99);  // the parent died before prctl
}

// In a child: one byte (its tag) to the parent, which kills it on reading it.
inline void ask_for_kill(int fd, unsigned char tag) {
  while (write(fd, &tag, 1) < 0 && errno == EINTR) {
  }
}

// Called by a child where it must be killed: asks for it, then waits. Inside a mutation hook it holds
// the shard lock, with the value half written, until the SIGKILL comes.
[[noreturn]] inline void signal_and_wait_for_kill(int fd, unsigned char tag = 1) {
  ask_for_kill(fd, tag);
  for (;;) pause();
}

// Bounds for the waits of these tests, never expected to be reached: a child reaches its kill point in
// milliseconds, and children that run until told to stop are told within seconds.
constexpr int kKillPointTimeoutMs = 30'000;
constexpr auto kChildRunLimit = std::chrono::seconds(50);

// Waits for one tag on fd; returns it, or -1 when nothing came within timeout_ms (a child that never
// reached its kill point: the caller fails) or the pipe has no writer left.
inline int wait_for_kill_point(int fd, int timeout_ms = kKillPointTimeoutMs) {
  pollfd p{fd, POLLIN, 0};
  int rc;
  while ((rc = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
  }
  unsigned char tag;
  if (rc != 1 || read(fd, &tag, 1) != 1) return -1;
  return tag;
}

// A flag in anonymous shared memory: the parent sets it, forked children see it.
class SharedFlag {
 public:
  SharedFlag() {
    void* p =
        mmap(nullptr, sizeof(std::atomic<bool>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    flag_ = new (p) std::atomic<bool>(false);
  }
  ~SharedFlag() { munmap(flag_, sizeof(std::atomic<bool>)); }
  SharedFlag(const SharedFlag&) = delete;
  SharedFlag& operator=(const SharedFlag&) = delete;
  void set() { flag_->store(true, std::memory_order_release); }
  bool is_set() const { return flag_->load(std::memory_order_acquire); }

 private:
  std::atomic<bool>* flag_ = nullptr;
};

}  // namespace cachetest
