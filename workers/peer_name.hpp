// How log lines name a connection's client: "127.0.0.1:5678", "[::1]:5678", "unix", or "?" when the
// socket no longer says. Private to workers/.
#pragma once

#include <string>

namespace workers {

std::string peer_name(int fd);

}  // namespace workers
