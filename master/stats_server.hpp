// The stats server (--stats): uWSGI's stats JSON for uwsgitop and exporters, and with --stats-http
// the same over HTTP plus the Prometheus metrics at /metrics.
//
// It runs in a thread of its own in the master, never in the master's signal loop: uWSGI writes the
// JSON from its master loop, so a slow reader delays its respawns and reloads. Here every socket is
// non-blocking and polled by this thread alone; a reply that does not fit the socket buffer waits for
// writability, a client that neither reads nor sends is closed at its deadline, and when the client
// table is full the client closest to its deadline makes room. Everything it reports comes from
// shared memory (the scoreboard, the caches), so it takes no lock of the master's.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <thread>

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

  void start();
  void remove_file_on_close(bool remove) { remove_file_ = remove; }
  // In a freshly forked worker: closes the inherited copies of the listening socket and of every
  // client connection, so a client sees EOF as soon as this server is done with it. Reads only
  // atomics (the thread that owned the table does not exist in the child).
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
  // The reports, built at most once per round of the loop: every client served in one round (a
  // burst of connections) gets the same snapshot instead of one build each.
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
  int wake_[2] = {-1, -1};
  std::thread thread_;
  std::unique_ptr<Client[]> clients_;
  std::array<std::atomic<int>, kMaxClients> client_fds_;  // mirror of clients_[i].fd, for close_inherited
};

}  // namespace master
