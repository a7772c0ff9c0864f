// What an io_uring loop needs beyond liburing 2.3 (Debian 12's): a ring of provided buffers (it has no
// io_uring_setup_buf_ring) and the handling of a turn's completions. Header-only: the memcached
// connections' loop (memcached_ring.cpp) and bench/uring_serve.cpp share it.
#pragma once

#include <errno.h>
#include <liburing.h>
#include <sys/mman.h>

#include <cstdint>

namespace workers {

// Maps and registers a ring of `entries` (a power of two) buffer slots as group `group`, empty (the
// caller adds its buffers). Returns nullptr with -errno in *error when it cannot.
inline io_uring_buf_ring* map_buffer_ring(io_uring* ring, unsigned entries, int group, int* error) {
  const std::size_t bytes = entries * sizeof(io_uring_buf);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED) {
    *error = -errno;
    return nullptr;
  }
  auto* buffers = static_cast<io_uring_buf_ring*>(mem);
  io_uring_buf_ring_init(buffers);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uint64_t>(mem);
  reg.ring_entries = entries;
  reg.bgid = static_cast<std::uint16_t>(group);
  if (const int e = io_uring_register_buf_ring(ring, &reg, 0); e < 0) {
    munmap(mem, bytes);
    *error = e;
    return nullptr;
  }
  return buffers;
}

inline void unmap_buffer_ring(io_uring_buf_ring* buffers, unsigned entries) {
  munmap(buffers, entries * sizeof(io_uring_buf));
}

// Calls `handle` for every completion posted so far, then marks them all seen.
template <typename Handle>
void for_each_completion(io_uring* ring, Handle&& handle) {
  io_uring_cqe* cqe = nullptr;
  unsigned head = 0, seen = 0;
  io_uring_for_each_cqe(ring, head, cqe) {
    ++seen;
    handle(*cqe);
  }
  io_uring_cq_advance(ring, seen);
}

}  // namespace workers
