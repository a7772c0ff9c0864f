// Log wording both connection loops (epoll and the memcached io_uring one) share. Private to workers/.
#pragma once

#include <cstddef>
#include <string>

namespace workers {

// How log lines name a connection's client: "127.0.0.1:5678", "[::1]:5678", "unix", or "?" when the
// socket no longer says.
std::string peer_name(int fd);

// True for the accept errors that mean "out of descriptors or memory": retrying at once fails again.
bool accept_should_pause(int error);

// The line a worker logs when it pauses its accepts for those.
std::string accept_pause_note(int worker_id, int error, long long pause_ms, std::size_t open);

}  // namespace workers
