// The memcached protocol's client connections on io_uring (--memcached-socket): a thread of the worker
// owns a ring and the worker's memcached listeners, and serves their connections with one
// io_uring_enter per loop turn (the turn's replies submitted together with the wait for the next
// completions) instead of a recv and a send per request: on this kernel a system call costs ~1 µs, a
// third of what a request costs the server (docs/benchmarks.md, the memcached section).
//
// The protocol is server/memcached.hpp's Session, as on the epoll loop (workers/memcached_framing.hpp);
// the cache engine is shared across threads and processes. The `stats` counters of these connections
// are the thread's own (the epoll loop serves no memcached connection while the ring runs). Where the
// kernel refuses io_uring (seccomp in containers, io_uring_disabled, old kernels) the worker keeps the
// listeners on its epoll loop.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "server/memcached.hpp"
#include "workers/scoreboard.hpp"

namespace workers {

// Whether this process may set up a ring as MemcachedRing does; `why` says what failed when not.
// The master asks once at start-up (one log line), the workers then use it or not.
bool memcached_ring_usable(std::string& why);

struct MemcachedRingSettings {
  int worker_id = 1;
  std::vector<int> listen_fds;           // the --memcached-socket listeners (shared by every worker)
  server::memcached::Settings protocol;  // .counters is set by the ring (its own)
  WorkerSlot* slot = nullptr;            // accepted connections are counted here
  int socket_timeout_s = 4;              // an incomplete command older than this closes
  std::function<void()> on_done;         // called on the ring's thread once it has stopped
};

class MemcachedRing {
 public:
  MemcachedRing();
  ~MemcachedRing();
  MemcachedRing(const MemcachedRing&) = delete;
  MemcachedRing& operator=(const MemcachedRing&) = delete;

  // Starts the thread and waits for its ring: false, with `error` set, when it could not be set up
  // (nothing is left running then).
  bool start(MemcachedRingSettings settings, std::string& error);
  bool running() const { return thread_.joinable(); }
  // A graceful stop: no more accepts; each connection closes once it has no command half-read or
  // reply half-sent. on_done is called when the last one is closed.
  void stop_gracefully();
  // Every connection closed now, the thread joined.
  void stop_now();
  // True once the thread has nothing left to serve (after a stop).
  bool done() const { return done_.load(std::memory_order_acquire); }

  struct Loop;  // memcached_ring.cpp

 private:
  void wake(std::uint64_t what);

  std::thread thread_;
  int wake_fd_ = -1;         // an eventfd: the ring reads it, the worker writes the stop requests
  std::uint64_t asked_ = 0;  // the requests written so far (each once: the eventfd adds them up)
  std::atomic<bool> done_{false};
};

}  // namespace workers
