// The signal table: what each signal means to the master and to a worker. The master's loop and
// docs/architecture.md's table both come from here. No handler runs code: the master blocks these
// signals from its first instruction and reads them from a signalfd in its loop (so a signal sent
// while workers are still starting is queued, never lost); workers get them through libuv.
#pragma once

#include <signal.h>

#include <array>
#include <string_view>

namespace master {

enum class SignalAction { graceful_stop, immediate_stop, graceful_reload, log_stats, child_exited };

struct SignalSpec {
  int signum;
  std::string_view name;
  SignalAction action;
  std::string_view master_does;
  std::string_view worker_does;
};

inline constexpr std::array<SignalSpec, 6> kSignalTable{{
    {SIGTERM, "SIGTERM", SignalAction::graceful_stop,
     "graceful stop: workers stop accepting and finish in-flight requests (bounded by --reload-mercy), "
     "stores are flushed, exit 0 (uWSGI 2.0 reloads on SIGTERM unless --die-on-term; we stop, as containers "
     "expect)",
     "stop accepting, finish in-flight requests, exit 0"},
    {SIGINT, "SIGINT", SignalAction::immediate_stop,
     "immediate stop: in-flight requests are cut, stores flushed, exit 0, no process left behind",
     "exit at once"},
    {SIGQUIT, "SIGQUIT", SignalAction::immediate_stop, "immediate stop, as SIGINT", "exit at once"},
    {SIGHUP, "SIGHUP", SignalAction::graceful_reload,
     "graceful reload, worker by worker: a new worker starts, then the old one finishes its requests and "
     "exits; listening sockets and caches are untouched, no connection is refused or reset",
     "as SIGTERM (the master sends SIGTERM to the worker being replaced)"},
    {SIGUSR1, "SIGUSR1", SignalAction::log_stats, "log one stats line per worker and per cache", "ignored"},
    {SIGCHLD, "SIGCHLD", SignalAction::child_exited,
     "reap the worker, log its pid and exit status or signal, respawn it within 1 s (throttled when it keeps "
     "dying at start)",
     "-"},
}};

}  // namespace master
