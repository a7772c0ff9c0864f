// The two reports built from the scoreboard and the caches: uWSGI's stats JSON (what uwsgitop and
// uwsgi_exporter read, keys and nesting as uWSGI 2.0.21 writes them, ours added under new keys) and
// the Prometheus text exposition format. Read-only: safe from the master's stats thread and from a
// worker (--metrics) alike, since everything they read is shared memory or the process's own.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cache/cache.hpp"
#include "server/application.hpp"
#include "workers/scoreboard.hpp"

namespace workers {

struct StatsSocket {
  std::string name;         // as configured
  std::string proto;        // uwsgi | http | persistent
  std::uint64_t inode = 0;  // the listening socket's (socket_inode): its queue is read live by it
  bool is_unix = false;
  int backlog = 100;
};

struct StatsContext {
  const Scoreboard* board = nullptr;
  const cache::CacheSet* caches = nullptr;
  std::vector<StatsSocket> sockets;
  int processes = 1;
  int threads = 1;
  pid_t master_pid = 0;
  std::string version;
  std::string cwd;
  std::string mountpoint;  // the application's (uWSGI's apps[].mountpoint)
  std::string chdir;
};

// Connections waiting in a listening socket's accept queue, read live from the kernel by the socket's
// inode (listen_queue.cpp: sock_diag, TCP and UNIX alike; 0 when the kernel cannot say). Needs no fd:
// the stats process has closed the listening sockets.
std::uint32_t listen_queue_of(const StatsSocket& socket);
// The inode of the socket behind `fd` (0 when fstat fails), what StatsSocket::inode holds.
std::uint64_t socket_inode(int fd);

// Resident and virtual size of a process in bytes, from /proc/PID/statm (0 when unreadable).
void process_memory(pid_t pid, std::uint64_t& rss, std::uint64_t& vsz);

std::string stats_json(const StatsContext& context);
std::string prometheus_metrics(const StatsContext& context);

// The Prometheus content type of prometheus_metrics()'s text.
inline constexpr std::string_view kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

// --metrics: answers GET /metrics itself and hands everything else to `inner`.
std::unique_ptr<server::Application> with_metrics_endpoint(std::unique_ptr<server::Application> inner,
                                                           std::shared_ptr<const StatsContext> context);

}  // namespace workers
