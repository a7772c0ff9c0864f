#include "master/observability.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "common/log.hpp"

#ifndef UCACHED_VERSION
#define UCACHED_VERSION "unknown"
#endif

namespace master {

namespace {
constexpr int kStatsBacklog = 1024;
}

workers::RequestLogOptions request_log_options(const config::Config& config) {
  workers::RequestLogOptions options;
  options.enabled = !config.disable_logging;
  options.log_cache = config.log_cache;
  options.log_4xx = config.log_4xx;
  options.log_5xx = config.log_5xx;
  options.slow_ms = config.log_slow;
  options.memory_report = config.memory_report;
  options.format = config.log_format;
  // uWSGI: %(ftime) takes --log-date's FORMAT only with --logformat-strftime; a bare log-date = true is a
  // flag.
  const std::string& date = config.log_date;
  const bool is_format = !date.empty() && date != "true" && date != "1" && date != "yes" && date != "on";
  if (config.logformat_strftime && is_format) options.ftime_format = date;
  return options;
}

namespace {
void open_log(const config::Config& config, const std::string& path, const char* option) {
  std::string error;
  if (!common::log_to_file(path, config.log_maxsize, config.log_backupname, error))
    throw std::runtime_error(fmt::format("--{}: {}", option, error));
}
}  // namespace

// --logger: uWSGI's loggers reduced to what one destination means here (each line is written once, by
// the process that has it): stdio leaves the log on stderr, file:PATH is --logto PATH, fd:N sends it to
// an inherited descriptor. Values were checked by config/.
void start_loggers(const config::Config& config) {
  std::string destination;  // plugin:arg, the same for every logger
  for (const std::string& value : config.loggers) {
    const config::LoggerSpec spec = config::parse_logger(value);
    const std::string here = spec.arg.empty() ? spec.plugin : spec.plugin + ":" + spec.arg;
    if (!destination.empty() && destination != here)
      throw std::runtime_error(
          fmt::format("--logger: {} and {}: each log line goes to one destination here; keep one logger",
                      destination, here));
    destination = here;
  }
  if (destination.empty() || destination == "stdio") return;
  if (!config.logto.empty() || !config.daemonize.empty())
    throw std::runtime_error(fmt::format("--logger {} and --{}: both say where the log goes; keep one",
                                         destination, config.logto.empty() ? "daemonize" : "logto"));
  const config::LoggerSpec spec = config::parse_logger(destination);
  if (spec.plugin == "file") return open_log(config, spec.arg, "logger");
  const int fd = std::atoi(spec.arg.c_str());
  if (fcntl(fd, F_GETFD) < 0)
    throw std::runtime_error(
        fmt::format("--logger fd:{}: descriptor {} is not open: {}", fd, fd, std::strerror(errno)));
  if (fd != STDERR_FILENO) dup2(fd, STDERR_FILENO);
  if (fd != STDOUT_FILENO) dup2(fd, STDOUT_FILENO);
}

void start_logging(const config::Config& config) {
  if (!config.daemonize.empty()) {
    // uWSGI's --daemonize: the master goes to the background, in a session of its own, and logs to
    // the file. The log is opened first so a bad path fails in the foreground.
    open_log(config, config.daemonize, "daemonize");
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error(fmt::format("--daemonize: fork: {}", std::strerror(errno)));
    if (pid > 0) _exit(0);
    setsid();
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null >= 0) {
      dup2(null, STDIN_FILENO);
      ::close(null);
    }
  }
  if (!config.logto.empty()) open_log(config, config.logto, "logto");
  start_loggers(config);
  if (!config.req_logger.empty()) {
    std::string error;
    if (!common::log_requests_to_file(config.req_logger.substr(5), error))  // after "file:" (config/ checked)
      throw std::runtime_error(fmt::format("--req-logger: {}", error));
  }
}

void start_logging_as_user(const config::Config& config) {
  if (!config.logto2.empty()) open_log(config, config.logto2, "logto2");
}

std::shared_ptr<const workers::StatsContext> stats_context(const config::Config& config,
                                                           const workers::Scoreboard& board,
                                                           const cache::CacheSet& caches,
                                                           const std::vector<Listener>& listeners) {
  auto context = std::make_shared<workers::StatsContext>();
  context->board = &board;
  context->caches = &caches;
  for (const Listener& listener : listeners) {
    workers::StatsSocket socket;
    socket.name = listener.spec;
    socket.proto = listener.kind == Listener::Kind::http         ? "http"
                   : listener.kind == Listener::Kind::persistent ? "persistent"
                   : listener.kind == Listener::Kind::memcached  ? "memcached"
                                                                 : "uwsgi";
    socket.inode = workers::socket_inode(listener.fd);
    socket.is_unix = listener.is_unix;
    socket.backlog = config.listen_backlog;
    context->sockets.push_back(socket);
  }
  context->processes = config.processes;
  context->threads = config.threads;
  context->master_pid = getpid();
  context->version = "ucached-" UCACHED_VERSION;
  std::error_code ignored;
  context->cwd = std::filesystem::current_path(ignored).string();
  context->chdir = config.chdir;
  return context;
}

std::unique_ptr<StatsServer> make_stats_server(const config::Config& config,
                                               std::shared_ptr<const workers::StatsContext> context) {
  if (config.stats.empty()) return nullptr;
  ListenOptions options;
  // Stats clients come in bursts (a dashboard of many servers, a monitoring fleet): a full accept
  // queue drops SYNs, which the client retries only after a second.
  options.backlog = std::max(config.listen_backlog, kStatsBacklog);
  std::vector<Listener> bound;
  try {
    bound = bind_listeners({config.stats}, options);
  } catch (const std::runtime_error& error) {
    std::string message = error.what();
    if (const auto at = message.find("--socket"); at != std::string::npos) message.replace(at, 8, "--stats");
    throw std::runtime_error(message);
  }
  const Listener& listener = bound.front();
  // The plain stats socket speaks first: a connection must reach accept() before its client writes.
  int off = 0;
  if (!listener.is_unix) setsockopt(listener.fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &off, sizeof off);
  auto server = std::make_unique<StatsServer>(listener.fd, listener.unix_path, config.stats_http,
                                              config.socket_timeout * 1000, std::move(context));
  server->remove_file_on_close(config.vacuum);
  // uWSGI's wording, which its users grep for.
  common::log("*** Stats server enabled on {} fd: {} ***{}", config.stats, listener.fd,
              config.stats_http ? " (HTTP, Prometheus metrics at /metrics)" : "");
  return server;
}

}  // namespace master
