#include "master/stats_server.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/clock.hpp"
#include "common/log.hpp"

namespace master {

namespace {
constexpr std::size_t kMaxRequestBytes = 8192;  // an HTTP request head to the stats socket
constexpr int kPollMs = 250;                    // deadline checks
constexpr const char* kProcessName = "ucached-stats";
}  // namespace

struct StatsServer::Client {
  int fd = -1;
  std::int64_t deadline_ms = 0;
  std::string in;   // HTTP: the request head so far
  std::string out;  // the response
  std::size_t written = 0;
  bool responding = false;
  bool awaiting_snapshot = false;  // accepted by accept_all, answered once the batch is in
};

StatsServer::StatsServer(int fd, std::string unix_path, bool http, int timeout_ms,
                         std::shared_ptr<const workers::StatsContext> context)
    : listen_fd_(fd),
      unix_path_(std::move(unix_path)),
      http_(http),
      timeout_ms_(timeout_ms),
      context_(std::move(context)),
      clients_(new Client[kMaxClients]) {
  fcntl(listen_fd_, F_SETFL, fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
}

StatsServer::~StatsServer() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);  // it holds nothing worth a graceful stop
    waitpid(pid_, nullptr, 0);
  }
  ::close(listen_fd_);
  if (remove_file_ && !unix_path_.empty()) ::unlink(unix_path_.c_str());
}

bool StatsServer::start() {
  const pid_t master = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    common::log("stats server: fork: {}", std::strerror(errno));
    return false;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != master) _exit(0);
    prctl(PR_SET_NAME, kProcessName);  // what ps and the tests tell it from the workers by
    // A session of its own: with the kernel's autogroup scheduling (on by default) each session shares
    // the CPU as one group, and the workers busy starting during a reload kept this process waiting for
    // 50-60 ms in theirs. It still dies with the master (PR_SET_PDEATHSIG above).
    setsid();
    // Only its own socket: the application's listening sockets stay with the master and the workers
    // (a stats process outliving a master by a moment must not keep their ports bound).
    if (listen_fd_ > 3) close_range(3, static_cast<unsigned>(listen_fd_) - 1, 0);
    close_range(static_cast<unsigned>(listen_fd_) + 1, ~0U, 0);
    loop();
    _exit(0);
  }
  pid_ = pid;
  common::log("stats server process (pid {}) started", pid);
  return true;
}

bool StatsServer::on_exit(pid_t pid, bool restart) {
  if (pid != pid_) return false;
  pid_ = -1;  // reaped: never signalled again (its pid may be reused)
  if (restart) {
    common::log("stats server process (pid {}) exited: starting a fresh one", pid);
    start();
  }
  return true;
}

void StatsServer::close_inherited() noexcept { ::close(listen_fd_); }

void StatsServer::drop(Client& client) {
  if (client.fd < 0) return;
  ::close(client.fd);
  client.fd = -1;
  client.in.clear();
  client.out.clear();
  client.written = 0;
  client.responding = false;
}

void StatsServer::loop() {
  std::vector<pollfd> fds;
  std::vector<Client*> owners;
  for (;;) {
    json_built_ = metrics_built_ = false;
    fds.clear();
    owners.clear();
    fds.push_back({listen_fd_, POLLIN, 0});
    for (std::size_t i = 0; i < kMaxClients; ++i) {
      Client& client = clients_[i];
      if (client.fd < 0) continue;
      fds.push_back({client.fd, static_cast<short>(client.responding ? POLLOUT : POLLIN), 0});
      owners.push_back(&client);
    }
    const int n = ::poll(fds.data(), fds.size(), kPollMs);
    if (n < 0 && errno != EINTR) {
      common::log("stats server: poll: {}: stopping", std::strerror(errno));
      return;
    }
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents != 0) serve(*owners[i - 1], fds[i].revents);
    }
    const std::int64_t now = common::monotonic_ms();
    for (std::size_t i = 0; i < kMaxClients; ++i) {
      if (clients_[i].fd >= 0 && now >= clients_[i].deadline_ms) drop(clients_[i]);
    }
    if (fds[0].revents != 0) accept_all();
  }
}

void StatsServer::accept_all() {
  // Everything pending is accepted first and answered after, from a snapshot built after the last
  // accept: a snapshot built earlier in this round (for a client before) may predate a connection
  // accepted now, and a client that acted on the server and then connected must see its own acts
  // (seen: a set and a get answered, then a plain stats read saying cache_requests 0, when the stats
  // process was slow to reach its accept loop and had built its snapshot for the ready probe).
  std::vector<Client*> fresh;
  for (;;) {
    // A free entry, or the one closest to its deadline (a client that never reads nor sends), but
    // never one accepted in this batch and not yet answered: those wait in the backlog instead.
    Client* slot = nullptr;
    for (std::size_t i = 0; i < kMaxClients; ++i) {
      Client& candidate = clients_[i];
      if (candidate.fd < 0) {
        slot = &candidate;
        break;
      }
      if (candidate.awaiting_snapshot) continue;
      if (slot == nullptr || candidate.deadline_ms < slot->deadline_ms) slot = &candidate;
    }
    if (slot == nullptr) break;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) break;  // EAGAIN, or a transient error: the next poll retries
    drop(*slot);
    slot->fd = fd;
    slot->deadline_ms = common::monotonic_ms() + timeout_ms_;
    if (!http_) {  // uWSGI's plain stats socket: the JSON at once, then close
      slot->awaiting_snapshot = true;
      fresh.push_back(slot);
    }
  }
  if (fresh.empty()) return;
  json_built_ = metrics_built_ = false;
  for (Client* client : fresh) {
    client->awaiting_snapshot = false;
    respond(*client);
  }
}

void StatsServer::serve(Client& client, short revents) {
  if (client.responding) {
    flush(client);
    return;
  }
  char buffer[2048];
  for (;;) {
    const ssize_t n = ::read(client.fd, buffer, sizeof buffer);
    if (n > 0) {
      client.in.append(buffer, static_cast<std::size_t>(n));
      if (client.in.find("\r\n\r\n") != std::string::npos) return respond(client);
      if (client.in.size() > kMaxRequestBytes) return drop(client);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && (revents & (POLLHUP | POLLERR)) == 0) return;
    return drop(client);  // EOF before a complete head, or an error
  }
}

const std::string& StatsServer::json() {
  if (!json_built_) json_ = workers::stats_json(*context_);
  json_built_ = true;
  return json_;
}

const std::string& StatsServer::metrics() {
  if (!metrics_built_) metrics_ = workers::prometheus_metrics(*context_);
  metrics_built_ = true;
  return metrics_;
}

void StatsServer::respond(Client& client) {
  if (!http_) {
    client.out = json();
  } else {
    // GET /metrics: Prometheus; any other GET: the JSON (uwsgitop asks for "/").
    const std::size_t line_end = client.in.find("\r\n");
    const std::string_view line = std::string_view(client.in).substr(0, line_end);
    const std::size_t first = line.find(' ');
    const std::size_t second = line.find(' ', first + 1);
    const std::string_view method = line.substr(0, first);
    std::string_view path =
        first == std::string_view::npos ? std::string_view() : line.substr(first + 1, second - first - 1);
    path = path.substr(0, path.find('?'));
    std::string body;
    std::string_view status = "200 OK";
    std::string_view type = "application/json";
    if (method != "GET" && method != "HEAD") {
      status = "405 Method Not Allowed";
      type = "text/plain";
      body = "only GET and HEAD here\n";
    } else if (path == "/metrics") {
      body = metrics();
      type = workers::kPrometheusContentType;
    } else {
      body = json();
    }
    client.out =
        fmt::format("HTTP/1.0 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    status, type, body.size());
    if (method != "HEAD") client.out.append(body);
  }
  client.responding = true;
  client.written = 0;
  flush(client);
}

bool StatsServer::flush(Client& client) {
  while (client.written < client.out.size()) {
    const ssize_t n = ::send(client.fd, client.out.data() + client.written,
                             client.out.size() - client.written, MSG_NOSIGNAL);
    if (n > 0) {
      client.written += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;  // poll says when to go on
    drop(client);
    return false;
  }
  // All handed to the kernel: closing now frees everything here (the kernel still delivers the bytes).
  ::shutdown(client.fd, SHUT_WR);
  drop(client);
  return false;
}

}  // namespace master
