// The master process: creates the caches, binds the sockets, forks and watches the workers, reads the
// signal table's signals, and runs the 1-second cycle with the cache's background jobs.
#pragma once

#include "config/config.hpp"

namespace master {

// The signals of the signal table are blocked by a constructor that runs before main(), so a signal
// that arrives before the master loop runs is queued, not lost (only the dynamic loader's few
// milliseconds remain). The command-line client mode lets them in again.
void unblock_master_signals();

// Runs the server until it stops; returns the process exit status. Throws std::runtime_error for a
// start-up failure (cache geometry, a socket that cannot be bound) before any worker exists.
int run_master(const config::Config& config);

}  // namespace master
