// The worker's side of the memcached io_uring thread (memcached_ring.hpp): started at set-up when the
// master chose it, stopped with the worker.
#include "workers/worker_loop.hpp"

namespace workers::loop {

bool Worker::start_memcached_ring() {
  if (!settings_.memcached_io_uring || settings_.memcached_fds.empty()) return false;
  uv_async_init(&loop_, &memcached_ring_stopped_, [](uv_async_t*) {});  // a wake-up: drive() looks again
  MemcachedRingSettings ring;
  ring.worker_id = settings_.id;
  ring.listen_fds = settings_.memcached_fds;
  ring.protocol = {settings_.memcached_cache, settings_.memcached_keysize, nullptr};
  ring.slot = settings_.slot;
  ring.socket_timeout_s = settings_.socket_timeout_s;
  ring.on_done = [this] { uv_async_send(&memcached_ring_stopped_); };
  std::string error;
  if (memcached_ring_.start(std::move(ring), error)) return true;
  // The master's probe passed, so this is rare (a limit on locked memory, say): this worker serves
  // them on its epoll loop.
  common::log("worker {}: io_uring: {}: memcached connections on the epoll loop", settings_.id, error);
  uv_close(reinterpret_cast<uv_handle_t*>(&memcached_ring_stopped_), nullptr);
  return false;
}

bool Worker::memcached_ring_busy() const { return memcached_ring_.running() && !memcached_ring_.done(); }

}  // namespace workers::loop
