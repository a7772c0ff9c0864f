// The master's side of the observability options: where log lines go (--daemonize, --logto,
// --logto2, --req-logger), what the workers' request log does, and the stats server (--stats).
#pragma once

#include <memory>
#include <vector>

#include "cache/cache.hpp"
#include "config/config.hpp"
#include "master/listeners.hpp"
#include "master/stats_server.hpp"
#include "workers/request_log.hpp"
#include "workers/stats_report.hpp"

namespace master {

workers::RequestLogOptions request_log_options(const config::Config& config);

// Before anything else runs: --daemonize (the caller's process exits here, its child goes on),
// --logto and --req-logger. Throws std::runtime_error when a file cannot be opened.
void start_logging(const config::Config& config);
// After the privileges drop: --logto2.
void start_logging_as_user(const config::Config& config);

// What the stats reports read, for the life of the server.
std::shared_ptr<const workers::StatsContext> stats_context(const config::Config& config,
                                                           const workers::Scoreboard& board,
                                                           const cache::CacheSet& caches,
                                                           const std::vector<Listener>& listeners);

// Binds --stats (nullptr when not configured). Throws std::runtime_error naming the address.
std::unique_ptr<StatsServer> make_stats_server(const config::Config& config,
                                               std::shared_ptr<const workers::StatsContext> context);

}  // namespace master
