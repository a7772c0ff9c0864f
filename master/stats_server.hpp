// The stats server (--stats): uWSGI's stats JSON for uwsgitop and exporters, and with --stats-http
// the same over HTTP plus the Prometheus metrics at /metrics.
//
// It runs in a process of its own, a child of the master, never in the master's signal loop: uWSGI
// writes the JSON from its master loop, so a slow reader delays its respawns and reloads. Not a thread
// of the master either: each fork of a worker holds the master's whole address space locked while it
// copies its page tables, and a thread of that process stalls on its next page fault (measured: 449 ms
// on a busy 2-core machine during a reload). Here every socket is
// non-blocking and polled by this thread alone; a reply that does not fit the socket buffer waits for
// writability, a client that neither reads nor sends is closed at its deadline, and when the client
// table is full the client closest to its deadline makes room. Everything it reports comes from
// shared memory (the scoreboard, the caches), so it takes no lock of the master's.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "workers/stats_report.hpp"

namespace master {

class StatsServer {
 public:
  // Takes over the bound, listening `fd` (non-blocking). `timeout_ms` bounds a client's life.
  StatsServer(int fd, std::string unix_path, bool http, int timeout_ms,
              std::shared_ptr<const workers::StatsContext> context);
  ~StatsServer();  // stops the thread, closes every socket (and removes a UNIX socket file if asked)
  StatsServer(const StatsServer&) = delete;
  StatsServer& operator=(const StatsServer&) = delete;

  // Forks the stats process (it dies with the master: PR_SET_PDEATHSIG). False when fork fails.
  bool start();
  // The master reaped `pid`: true when it was the stats process (started again when `restart`).
  bool on_exit(pid_t pid, bool restart);
  void remove_file_on_close(bool remove) { remove_file_ = remove; }
  // In a freshly forked worker: closes its inherited copy of the listening socket.
  void close_inherited() noexcept;

  static constexpr std::size_t kMaxClients = 256;

 private:
  struct Client;
  void loop();
  void accept_all();
  void serve(Client& client, short revents);
  void respond(Client& client);
  bool flush(Client& client);  // false when the client is done (closed)
  void drop(Client& client);
  // The reports, built at most once per round of the loop and once more per batch of accepts: the
  // clients of a burst share one snapshot instead of one build each, and none gets a snapshot built
  // before it connected.
  const std::string& json();
  const std::string& metrics();

  std::string json_, metrics_;
  bool json_built_ = false, metrics_built_ = false;

  int listen_fd_;
  std::string unix_path_;
  bool remove_file_ = false;
  const bool http_;
  const int timeout_ms_;
  std::shared_ptr<const workers::StatsContext> context_;
  pid_t pid_ = -1;  // the stats process
  std::unique_ptr<Client[]> clients_;
};

}  // namespace master
